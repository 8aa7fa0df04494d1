"""Issue 18's trainer defaults and options: CPU threads, the solve tolerance, the loss, model sizes,
critic steps, Adam's betas, the discriminator's BatchNorm, --threads on resume, and the probe command."""
from __future__ import annotations

import json
import os

import pytest
import torch

from fastgame.trainer.cli import main
from fastgame.trainer.config import CONV_THREADS, CPU_THREADS, TRAINER_TOL, ConfigError, TrainConfig, default_threads, resolve
from fastgame.trainer.data import load_dataset
from fastgame.trainer.train import prepare, train


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def test_defaults_resolved_and_recorded():
    ring, digits = load_dataset("ring8"), load_dataset("digits")
    cfg = resolve(TrainConfig(device="cpu"), ring)
    assert (cfg.threads, cfg.tol, cfg.loss, cfg.width, cfg.d_batchnorm) == (CPU_THREADS, TRAINER_TOL, "standard", 64, None)
    assert resolve(TrainConfig(device="cpu", optimizer="gacgd"), ring).tol == TRAINER_TOL
    assert resolve(TrainConfig(device="cpu", optimizer="adam"), ring).tol is None  # Adam solves nothing
    assert resolve(TrainConfig(device="cpu", tol=1e-10), ring).tol == 1e-10
    img = resolve(TrainConfig(data="digits", device="cpu"), digits)
    assert (img.model, img.width, img.loss, img.d_batchnorm) == ("dcgan", 16, "non_saturating", True)
    assert resolve(TrainConfig(data="digits", device="cpu", penalty="r1"), digits).d_batchnorm is False
    assert resolve(TrainConfig(data="digits", device="cpu", image_size=32),
                   load_dataset("digits", 32)).model == "dcgan"  # not the WGAN-GP DCGAN


def test_default_threads_by_model():
    """One thread for the MLP and 8-px images, two (at most the cores) for larger DCGANs, as measured."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert resolve(TrainConfig(data="digits", device="cpu"), load_dataset("digits")).threads == CPU_THREADS == 1
    for size in (16, 32):
        cfg = resolve(TrainConfig(data="digits", device="cpu"), load_dataset("digits", size))
        assert cfg.threads == min(CONV_THREADS, cores) == default_threads("dcgan", size)
    assert resolve(TrainConfig(data="digits", device="cpu", threads=3), load_dataset("digits", 16)).threads == 3


@pytest.mark.parametrize("cfg, message", [
    (dict(optimizer="adam", d_steps=5), "--d-steps 5 is for adam-alt"),
    (dict(optimizer="acgd", d_steps=2), "--d-steps 2 is for adam-alt"),
    (dict(data="digits", penalty="wgan_gp", d_batchnorm=True), "cannot be combined with --penalty wgan_gp"),
    (dict(d_batchnorm=False), "the mlp discriminator has no BatchNorm"),
    (dict(optimizer="adam", betas=[0.5, 1.5]), "--betas must be two numbers"),
    (dict(optimizer="acgd", betas=[0.5, 0.9]), "betas"),
])
def test_bad_options_one_line_errors(cfg, message):
    data = load_dataset(cfg.get("data", "ring8"))
    with pytest.raises(ConfigError, match=message):
        resolve(TrainConfig(**cfg), data)


def test_critic_steps_and_betas(tmp_path):
    cfg = TrainConfig(optimizer="adam-alt", d_steps=3, betas=[0.5, 0.9], penalty="wgan_gp", loss="wgan", steps=2,
                      batch=16, out=str(tmp_path / "gp"), eval_every=2, eval_samples=100)
    run = train(cfg, quiet=True)
    opt_d, opt_g = run.stepper.opt_d, run.stepper.opt_g
    assert opt_d.param_groups[0]["betas"] == (0.5, 0.9) == opt_g.param_groups[0]["betas"]
    d_steps = {int(s["step"]) for s in opt_d.state.values()}
    g_steps = {int(s["step"]) for s in opt_g.state.values()}
    assert d_steps == {6} and g_steps == {2}  # 3 critic steps per generator step
    saved = json.loads((tmp_path / "gp" / "config.json").read_text())
    assert (saved["d_steps"], saved["betas"], saved["threads"], saved["tol"]) == (3, [0.5, 0.9], 1, None)


def test_d_batchnorm_off_removes_it_without_a_penalty(tmp_path):
    run = prepare(TrainConfig(data="digits", d_batchnorm=False, steps=1, batch=8, out=str(tmp_path / "r")))
    assert not [m for m in run.D.modules() if "BatchNorm" in type(m).__name__]
    run = prepare(TrainConfig(data="digits", steps=1, batch=8, out=str(tmp_path / "s")))
    assert [m for m in run.D.modules() if "BatchNorm" in type(m).__name__]


def test_threads_on_resume_and_probe_command(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--data", "ring8", "--steps", "4", "--batch", "16", "--eval-every", "2", "--out", out,
                 "-q"]) == 0
    assert json.loads(open(os.path.join(out, "config.json")).read())["threads"] == CPU_THREADS
    assert torch.get_num_threads() == CPU_THREADS
    assert main(["train", "--resume", out, "--steps", "6", "--threads", "2", "-q"]) == 0
    assert torch.get_num_threads() == 2
    assert main(["train", "--resume", out, "--steps", "8", "--batch", "32"]) == 2  # still refused
    assert "only --steps, --threads and --quiet" in capsys.readouterr().err
    assert main(["probe", out, "--steps", "3"]) == 0
    assert os.path.getsize(os.path.join(out, "probe.png")) > 1000
    assert main(["probe", str(tmp_path / "nothing")]) == 2


def test_labelled_on_disk_set_gets_the_classifier_metric(tmp_path, fastgame_cache):
    from fastgame.trainer.evaluation import Evaluator
    from fastgame.trainer.data import load_digits, resize_images
    import numpy as np
    images, labels = load_digits()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    big = ((resize_images(images, 28) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    for name, magic, arr in (("train-images-idx3-ubyte", 2051, big), ("train-labels-idx1-ubyte", 2049,
                                                                       labels.numpy().astype(np.uint8))):
        head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        (raw / name).write_bytes(head + np.ascontiguousarray(arr).tobytes())
    data = load_dataset(f"mnist:{tmp_path}", 16)
    ev = Evaluator(data)
    assert ev.names[0] == "fcd"
    m = ev(data.tensor[:500])
    assert m["classes_covered"] == 10 and m["fcd"] < 0.2 * ev(torch.zeros(500, 1, 16, 16))["fcd"]


def test_unlabelled_images_get_a_note(tmp_path, monkeypatch):
    from fastgame.trainer.evaluation import Evaluator
    import numpy as np
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8), dtype=np.uint8))
    ev = Evaluator(load_dataset(str(tmp_path / "x.npy")))
    assert ev.names == [] and ev.note.startswith("no image metric")


def test_metrics_go_to_tensorboard_when_installed(tmp_path, monkeypatch):
    import sys
    import types
    written = []

    class Writer:  # stands in for torch.utils.tensorboard.SummaryWriter (tensorboard need not be installed)
        def __init__(self, folder):
            written.append(("open", folder))

        def add_scalar(self, key, value, step):
            written.append((key, value, step))

        def flush(self):
            pass

        def close(self):
            written.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    out = tmp_path / "tb"
    train(TrainConfig(steps=4, batch=16, eval_every=2, eval_samples=100, out=str(out)), quiet=True)
    assert written[0] == ("open", str(out / "tensorboard")) and written[-1] == ("close",)
    assert {(k, s) for k, _, s in (w for w in written if len(w) == 3)} >= {("modes_covered", 2), ("loss_d", 4)}
