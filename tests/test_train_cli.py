"""`fastgame train` / `fastgame compare` end to end on tiny settings (seconds each)."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
import torch

from fastgame.trainer import train as train_mod
from fastgame.trainer.cli import main
from fastgame.trainer import config as config_mod
from fastgame.trainer.methods import METHODS
from fastgame.trainer.models import build_models

TINY = ["--steps", "4", "--batch", "16", "--width", "8", "--eval-samples", "64", "--eval-every", "2",
        "--checkpoint-every", "2", "-q"]


@pytest.fixture(scope="module", autouse=True)
def cache(fastgame_cache):
    """The digit classifier is trained once into the session's temporary cache."""
    return fastgame_cache


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    g = torch.Generator().manual_seed(0)
    np.save(d / "points.npy", torch.randn(100, 2, generator=g).numpy())
    torch.save((torch.rand(40, 16, 16, generator=g) * 255).to(torch.uint8), d / "images.pt")
    from PIL import Image
    folder = d / "folder"
    folder.mkdir()
    for i in range(6):
        arr = (torch.rand(20, 20, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i}.png")
    (d / "notes.txt").write_text("not data\n")
    np.save(d / "bad_shape.npy", np.zeros((10, 5)))
    return d


@pytest.mark.parametrize("data,optimizer,extra,metric", [
    ("ring8", "acgd", [], "modes_covered"),
    ("grid25", "bcgd", ["--loss", "wgan", "--penalty", "wgan_gp"], "mode_jsd"),
    ("digits", "gacgd", ["--loss", "non_saturating"], "fcd"),
    ("digits", "acgd", ["--bf16", "--loss", "wgan"], "fcd"),
    ("ring8", "bcgd", ["--graphed", "--max-iter", "4", "--loss", "rsgan"], "modes_covered"),
    ("digits", "adam-alt", ["--image-size", "16", "--penalty", "r1"], "classes_covered"),
    ("points.npy", "adam", ["--loss", "hinge"], None),
    ("images.pt", "acgd", ["--loss", "least_squares"], None),
    ("folder", "adam", ["--model", "wgan_gp_dcgan", "--loss", "wgan", "--penalty", "relu_gp"], None),
])
def test_train_each_source_and_family(tmp_path, user_files, data, optimizer, extra, metric):
    source = data if data in ("ring8", "grid25", "digits") else str(user_files / data)
    out = tmp_path / "run"
    assert main(["train", "--data", source, "--optimizer", optimizer, "--out", str(out)] + TINY + extra) == 0
    for name in ("config.json", "metrics.csv", "metrics.json", "checkpoint.pt", "samples.png", "curves.png"):
        assert (out / name).is_file(), name
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == [2, 4]
    if metric is not None:
        assert metric in rows[0]
    cfg = json.load(open(out / "config.json"))
    assert cfg["optimizer"] == optimizer and cfg["steps"] == 4 and cfg["model"] != "auto"
    assert all(np.isfinite(float(r["loss_d"])) for r in rows)


def _json_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return {r["step"]: r for r in json.load(f)}


def _assert_same_rows(full, part):
    """Every evaluation of ``full`` is in ``part`` with the same values (the clock aside)."""
    a, b = _json_rows(full), _json_rows(part)
    for step, row in a.items():
        assert {k: v for k, v in b[step].items() if k != "wall_s"} == {k: v for k, v in row.items()
                                                                       if k != "wall_s"}, step


def _state(run_dir):
    return torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)


def _assert_same_state(a, b):
    for k in ("G", "D"):
        assert a[k].keys() == b[k].keys()
        for name in a[k]:
            assert torch.equal(a[k][name], b[k][name]), (k, name)
    flat_a, flat_b = [], []
    torch.utils._pytree.tree_map(lambda t: flat_a.append(t), a["optimizer"])
    torch.utils._pytree.tree_map(lambda t: flat_b.append(t), b["optimizer"])
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b):
        assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
    assert a["step"] == b["step"]


@pytest.mark.parametrize("data,optimizer", [("ring8", "acgd"), ("digits", "adam"), ("ring8", "gacgd"),
                                            ("ring8", "extra-adam")])
def test_resume_equals_uninterrupted(tmp_path, data, optimizer):
    args = ["--data", data, "--optimizer", optimizer, "--batch", "16", "--width", "8", "--eval-samples", "64",
            "--eval-every", "2", "--checkpoint-every", "3", "-q"]
    assert main(["train", "--out", str(tmp_path / "full"), "--steps", "6"] + args) == 0
    assert main(["train", "--out", str(tmp_path / "part"), "--steps", "3"] + args) == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--steps", "6", "-q"]) == 0
    _assert_same_state(_state(tmp_path / "full"), _state(tmp_path / "part"))
    # The 3-step run's last evaluation (step 3) stays; the resumed part adds 4 and 6.
    assert [int(r["step"]) for r in _rows(tmp_path / "part")] == [2, 3, 4, 6]
    # ...with the values of the uninterrupted run: the row at step 4 averages steps 3 and 4 in
    # both (the window of steps since the last multiple of --eval-every is in the checkpoint).
    _assert_same_rows(tmp_path / "full", tmp_path / "part")


def test_interrupted_run_resumes_bit_exact(tmp_path, monkeypatch):
    """A run killed between checkpoints resumes from the last one and ends where the
    uninterrupted run ends; the metric rows past the checkpoint are recomputed, not duplicated."""
    args = ["--data", "ring8", "--batch", "16", "--width", "8", "--eval-samples", "64", "--eval-every", "1",
            "--checkpoint-every", "3", "--steps", "7", "-q"]
    assert main(["train", "--out", str(tmp_path / "full")] + args) == 0
    real_evaluate = train_mod.Run._evaluate

    def crash_at_5(self):
        if self.step == 5:
            raise KeyboardInterrupt
        return real_evaluate(self)

    monkeypatch.setattr(train_mod.Run, "_evaluate", crash_at_5)
    assert main(["train", "--out", str(tmp_path / "cut")] + args) == 130
    assert _state(tmp_path / "cut")["step"] == 3
    monkeypatch.setattr(train_mod.Run, "_evaluate", real_evaluate)
    assert main(["train", "--resume", str(tmp_path / "cut"), "-q"]) == 0
    _assert_same_state(_state(tmp_path / "full"), _state(tmp_path / "cut"))
    assert [int(r["step"]) for r in _rows(tmp_path / "cut")] == list(range(1, 8))
    _assert_same_rows(tmp_path / "full", tmp_path / "cut")


def test_killed_run_resumes_its_metrics_window(tmp_path, monkeypatch):
    """Killed between checkpoints in the middle of an evaluation window (evaluations every 4
    steps, checkpoints every 3: the checkpoint at step 6 holds steps 5-6 of the window of 5-8),
    the resumed run writes the uninterrupted run's rows."""
    args = ["--data", "ring8", "--batch", "16", "--width", "8", "--eval-samples", "64", "--eval-every", "4",
            "--checkpoint-every", "3", "--steps", "8", "-q"]
    assert main(["train", "--out", str(tmp_path / "full")] + args) == 0
    from fastgame.trainer.batches import BatchSource
    real_next, drawn = BatchSource.next, []

    def crash_at_7(self, d_steps=1):  # while drawing the batch of the step after step 7
        drawn.append(1)
        if len(drawn) == 8:
            raise KeyboardInterrupt
        return real_next(self, d_steps)

    monkeypatch.setattr(BatchSource, "next", crash_at_7)
    assert main(["train", "--out", str(tmp_path / "cut")] + args) == 130
    assert _state(tmp_path / "cut")["step"] == 6
    monkeypatch.setattr(BatchSource, "next", real_next)
    assert main(["train", "--resume", str(tmp_path / "cut"), "-q"]) == 0
    assert sorted(_json_rows(tmp_path / "cut")) == [4, 8]
    _assert_same_rows(tmp_path / "full", tmp_path / "cut")


def test_compare_two_seeds(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--data", "ring8", "--optimizers", "acgd", "adam:lr_d=4e-4,lr_g=1e-4", "--seeds", "0", "1",
            "--out", str(out)] + TINY
    assert main(argv) == 0
    for name in ("compare.md", "compare.csv", "compare.png", "samples-acgd-seed0.png"):
        assert (out / name).is_file(), name
    with open(out / "compare.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["optimizer"] for r in table] == ["acgd", "adam:lr_d=4e-4,lr_g=1e-4"]
    assert all(r["seeds"] == "2" for r in table)
    cfg = json.load(open(out / "adam_lr_d=4e-4_lr_g=1e-4-seed1" / "config.json"))
    assert (cfg["lr_d"], cfg["lr_g"], cfg["seed"]) == (4e-4, 1e-4, 1)
    # Seeds differ: different runs, not copies.
    a, b = _state(out / "acgd-seed0"), _state(out / "acgd-seed1")
    assert not torch.equal(a["G"]["0.weight"], b["G"]["0.weight"])
    capsys.readouterr()
    assert main(argv) == 0  # finished runs are reused
    assert capsys.readouterr().out.count("reusing") == 4
    # ...but only for the same setting.
    assert main(argv[:-len(TINY)] + TINY + ["--lr-d", "0.01"]) == 2
    assert "other settings (lr_d)" in capsys.readouterr().err


def test_compare_more_steps_extends_the_runs(tmp_path, capsys):
    """The same compare command with a larger --steps resumes its runs, whose evaluation and
    checkpoint periods default to a share of the steps they were created with (10 steps:
    checkpoints every 2; 20 would give 4); run again, the extended runs are reused."""
    argv = ["compare", "--data", "ring8", "--optimizers", "acgd", "adam", "--seeds", "0", "--batch", "16",
            "--width", "8", "--eval-samples", "64", "-q", "--out", str(tmp_path / "cmp")]
    assert main(argv + ["--steps", "10"]) == 0
    capsys.readouterr()
    assert main(argv + ["--steps", "20"]) == 0, capsys.readouterr().err
    for folder in ("acgd-seed0", "adam-seed0"):
        assert _state(tmp_path / "cmp" / folder)["step"] == 20
        assert json.load(open(tmp_path / "cmp" / folder / "config.json"))["checkpoint_every"] == 2
        assert [int(r["step"]) for r in _rows(tmp_path / "cmp" / folder)] == list(range(1, 21))
    capsys.readouterr()
    assert main(argv + ["--steps", "20"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.count("reusing") == 2
    # A period given explicitly is still compared.
    assert main(argv + ["--steps", "20", "--checkpoint-every", "4"]) == 2
    assert "other settings (checkpoint_every)" in capsys.readouterr().err


def test_compare_spec_cg_start_and_hvp_passes(tmp_path):
    """`acgd:cg_start=zero,tol=1e-6` reaches the optimizer; the table counts mixed-HVP passes
    as the optimizer reports them: 2 + 2k per step from the warm start, 1 + 2k from zero."""
    from fastgame.trainer.compare import parse_optimizer
    assert parse_optimizer("acgd:cg_start=zero,tol=1e-6") == ("acgd", {"cg_start": "zero", "tol": 1e-6})
    assert parse_optimizer("bcgd:cg_start=recycle") == ("bcgd", {"cg_start": "recycle"})
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "ring8", "--optimizers", "acgd", "acgd:cg_start=warm",
                 "acgd:cg_start=zero,tol=1e-6", "adam", "--seeds", "0", "--out", str(out)] + TINY) == 0
    cfg = json.load(open(out / "acgd_cg_start=zero_tol=1e-6-seed0" / "config.json"))
    assert (cfg["cg_start"], cfg["tol"]) == ("zero", 1e-6)
    assert json.load(open(out / "acgd-seed0" / "config.json"))["cg_start"] is None  # the optimizer's own (zero)
    # The warm start's first step has no previous solution and starts from zero (1 + 2k), so the
    # first window (steps 1-2) averages 1.5 + 2k; later windows 2 + 2k.
    for folder, firsts in (("acgd_cg_start=warm-seed0", (1.5, 2)), ("acgd_cg_start=zero_tol=1e-6-seed0", (1, 1)),
                           ("acgd-seed0", (1, 1))):
        for i, r in enumerate(_rows(out / folder)):
            assert float(r["hvp_passes"]) == pytest.approx(firsts[min(i, 1)] + 2 * float(r["cg_iters"])), folder
    assert all(float(r["hvp_passes"]) == 0 for r in _rows(out / "adam-seed0"))
    with open(out / "compare.csv") as f:
        table = {r["optimizer"]: r for r in csv.DictReader(f)}
    assert float(table["acgd:cg_start=zero,tol=1e-6"]["hvp_passes_mean"]) > 1
    md = open(out / "compare.md").read()
    assert "HVP passes/step" in md and "mixed double-backward" in md


@pytest.mark.parametrize("spec,message", [
    ("acgd:cg_start=cold", "cg_start must be one of warm, zero, recycle, got 'cold'"),
    ("adam:cg_start=zero", "cg_start sets the CG solve of acgd and bcgd, not adam"),
    ("acgd:tol=x", "tol must be a number"),
    ("acgd:start=zero", "key one of penalty, penalty_weight, d_steps, lr_d, lr_g, tol, max_iter, cg_start, betas"),
    ("extragradient:tol=1e-6", "tol sets the CG/GMRES solve of acgd, bcgd, gacgd, pcgd and apcgd, not extragradient"),
    ("adam:max_iter=4", "max_iter sets the CG/GMRES solve of acgd, bcgd, gacgd, pcgd and apcgd, not adam"),
])
def test_compare_bad_spec_one_line_error(tmp_path, capsys, spec, message):
    new = tmp_path / "new"
    assert main(["compare", "--optimizers", spec, "acgd", "--out", str(new)] + TINY) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not new.exists()


def _written_before(run_dir, setting):
    """Make ``run_dir`` look saved before ``setting`` existed (gone from config.json and the
    checkpoint's config); returns the config without it."""
    cfg = json.load(open(run_dir / "config.json"))
    del cfg[setting]
    json.dump(cfg, open(run_dir / "config.json", "w"))
    st = _state(run_dir)
    del st["config"][setting]
    torch.save(st, run_dir / "checkpoint.pt")
    return cfg


def test_train_cg_start_and_old_checkpoint(tmp_path, capsys):
    """`fastgame train --cg-start` reaches the optimizer, is refused for Adam, and a run folder
    written before the setting existed (no cg_start in its config) still resumes."""
    out = tmp_path / "run"
    assert main(["train", "--data", "ring8", "--cg-start", "zero", "--out", str(out)] + TINY) == 0
    assert all(float(r["hvp_passes"]) == pytest.approx(1 + 2 * float(r["cg_iters"])) for r in _rows(out))
    assert main(["train", "--data", "ring8", "--optimizer", "adam", "--cg-start", "zero",
                 "--out", str(tmp_path / "adam")]) == 2
    assert "--cg-start sets the CG solve of acgd and bcgd, not adam" in capsys.readouterr().err
    old = tmp_path / "old"
    assert main(["train", "--data", "ring8", "--out", str(old)] + TINY) == 0
    _written_before(old, "cg_start")
    assert main(["train", "--resume", str(old), "--steps", "6", "-q"]) == 0
    assert [int(r["step"]) for r in _rows(old)] == [2, 4, 6]


def test_run_folder_older_than_batchnorm_resumes_with_native_layers(tmp_path):
    """A folder saved before the `batchnorm` setting existed trained torch's BatchNorm: resuming
    it (train --resume, and compare reusing it) keeps those layers, not today's default."""
    from fastgame.trainer.compare import _check_same_setting
    from fastgame.trainer.data import load_dataset
    from fastgame.nn import BatchNorm

    old = tmp_path / "old"
    assert main(["train", "--data", "digits", "--image-size", "16", "--batchnorm", "native", "--out", str(old)]
                + TINY) == 0
    cfg = _written_before(old, "batchnorm")
    run = train_mod.prepare(config_mod.TrainConfig(), resume=str(old), steps=6)
    norms = [m for m in run.G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(isinstance(m, BatchNorm) for m in run.G.modules())
    want = {k: v for k, v in cfg.items() if k not in ("out", "extra")}
    data = load_dataset("digits", 16)
    _check_same_setting(str(old), config_mod.TrainConfig(**{**want, "batchnorm": "native"}), data)
    with pytest.raises(config_mod.ConfigError, match=r"other settings \(batchnorm\)"):
        _check_same_setting(str(old), config_mod.TrainConfig(**want), data)
    assert main(["train", "--resume", str(old), "--steps", "6", "-q"]) == 0
    assert [int(r["step"]) for r in _rows(old)] == [2, 4, 6]


def _tree_hash(folder):
    h = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            h[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return h


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--data", "ring8", "--out", str(out)] + TINY) == 0
    return out


@pytest.mark.parametrize("case", ["missing path", "wrong format", "bad array shape", "unknown optimizer",
                                  "unknown loss", "zero steps", "negative batch", "out exists", "corrupt checkpoint",
                                  "mismatched checkpoint", "resume missing folder", "repeated optimizer",
                                  "resume with other settings", "tol without a solve", "max-iter without a solve",
                                  "compare tol without a solve"])
def test_bad_input_one_line_error_nothing_changed(tmp_path, user_files, finished_run, capsys, case):
    other = tmp_path / "other"
    if case == "mismatched checkpoint":
        assert main(["train", "--data", "ring8", "--seed", "1", "--out", str(other)] + TINY) == 0
        with open(other / "checkpoint.pt", "rb") as f:
            foreign = f.read()
    work = tmp_path / "victim"
    import shutil
    shutil.copytree(finished_run, work)
    if case == "corrupt checkpoint":
        with open(work / "checkpoint.pt", "r+b") as f:
            f.seek(100)
            f.write(b"garbage" * 20)
    if case == "mismatched checkpoint":
        with open(work / "checkpoint.pt", "wb") as f:
            f.write(foreign)
    before = _tree_hash(work)
    new = str(tmp_path / "new")
    argv = {
        "missing path": ["train", "--data", str(tmp_path / "nope.npy"), "--out", new],
        "wrong format": ["train", "--data", str(user_files / "notes.txt"), "--out", new],
        "bad array shape": ["train", "--data", str(user_files / "bad_shape.npy"), "--out", new],
        "unknown optimizer": ["train", "--optimizer", "sgd", "--out", new],
        "unknown loss": ["train", "--loss", "wasserstein2", "--out", new],
        "zero steps": ["train", "--steps", "0", "--out", new],
        "negative batch": ["train", "--batch", "-4", "--out", new],
        "out exists": ["train", "--data", "ring8", "--out", str(work)],
        "corrupt checkpoint": ["train", "--resume", str(work), "--steps", "8"],
        "mismatched checkpoint": ["train", "--resume", str(work), "--steps", "8"],
        "resume missing folder": ["train", "--resume", str(tmp_path / "absent")],
        "resume with other settings": ["train", "--resume", str(work), "--steps", "8", "--lr-d", "0.1"],
        "repeated optimizer": ["compare", "--optimizers", "acgd", "acgd", "--out", new],
        "tol without a solve": ["train", "--optimizer", "extragradient", "--tol", "1e-6", "--steps", "2",
                                "--out", new],
        "max-iter without a solve": ["train", "--optimizer", "adam", "--max-iter", "4", "--steps", "2", "--out", new],
        "compare tol without a solve": ["compare", "--optimizers", "acgd", "adam", "--tol", "1e-6", "--steps", "2",
                                        "--out", new],
    }[case]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "error" in err, err
    assert _tree_hash(work) == before
    assert not os.path.exists(new)
    if case in ("missing path", "wrong format", "bad array shape"):
        assert os.path.basename(argv[2]) in err
    if case.endswith("without a solve"):
        flag = "--tol" if "tol" in case else "--max-iter"
        assert f"{flag} sets the CG/GMRES solve of acgd, bcgd, gacgd, pcgd and apcgd, not " in err, err


@pytest.mark.parametrize("optimizer", [n for n in METHODS if n not in ("acgd", "bcgd", "gacgd", "adam", "adam-alt")])
def test_train_every_game_dynamics(tmp_path, optimizer):
    """`fastgame train --optimizer NAME` takes every method of fastgame.optim.DYNAMICS."""
    out = tmp_path / "run"
    assert main(["train", "--data", "ring8", "--optimizer", optimizer, "--out", str(out)] + TINY) == 0
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(np.isfinite(float(r["loss_d"])) for r in rows)



@pytest.mark.parametrize("batchnorm", ["fastgame", "native"])
def test_image_models_batchnorm(batchnorm):
    """The image models' BatchNorm layers are fastgame.nn.BatchNorm by default (cheaper mixed-HVP
    passes, the same function: same parameters, buffers and outputs), torch's with --batchnorm native."""
    from fastgame.trainer.data import load_dataset
    from fastgame.nn import BatchNorm

    cfg = config_mod.resolve(config_mod.TrainConfig(data="digits", optimizer="acgd", steps=1, batch=8, out="x",
                                                  batchnorm=batchnorm), load_dataset("digits"))
    G, D = build_models(cfg, load_dataset("digits"))
    kinds = {type(m) for m in list(G.modules()) + list(D.modules()) if "BatchNorm" in type(m).__name__}
    assert kinds == ({BatchNorm} if batchnorm == "fastgame" else {torch.nn.BatchNorm2d})
    if batchnorm == "fastgame":  # the same models as torch's layers give (native against itself proves nothing)
        native = build_models(dataclasses.replace(cfg, batchnorm="native"), load_dataset("digits"))
        assert [k for k, _ in G.state_dict().items()] == [k for k, _ in native[0].state_dict().items()]
        z = torch.randn(8, cfg.latent)
        torch.testing.assert_close(G(z), native[0](z))


@pytest.mark.parametrize("data,folder", [("mnist:/d/tv", "mnist-acgd-seed0"), ("cifar10:/d/tv", "cifar10-acgd-seed0"),
                                         ("fashion-mnist:/d/tv/", "fashion-mnist-acgd-seed0"),
                                         ("/d/x/points.npy", "points.npy-acgd-seed0"),
                                         ("/d/x/folder/", "folder-acgd-seed0"), ("ring8", "ring8-acgd-seed0")])
def test_default_run_folder(data, folder):
    """The default run folder names an on-disk data set by its kind (mnist:/d/tv and
    cifar10:/d/tv do not share fastgame-runs/tv-...), a file or folder by its name."""
    assert config_mod.default_out(config_mod.TrainConfig(data=data)) == os.path.join("fastgame-runs", folder)
