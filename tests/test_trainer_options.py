"""The trainer's options are declared once (fastgame.trainer.options) and everything else is read
from the records; the pieces Run was split into (batches, recorder, lock, stale probe files)."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from fastgame.trainer import compare, config, options, recorder
from fastgame.trainer.batches import Batch, BatchSource
from fastgame.trainer.checkpoint import LOCK_FILE, CheckpointError, RunLock
from fastgame.trainer.cli import build_parser, main
from fastgame.trainer.config import ConfigError, TrainConfig
from fastgame.trainer.data import load_dataset
from fastgame.trainer.methods import METHODS, describe_run

TINY = ["--batch", "16", "--width", "8", "--eval-samples", "64", "-q"]


def test_trainconfig_fields_are_the_records():
    fields = dataclasses.fields(TrainConfig)
    assert [f.name for f in fields] == [o.name for o in options.OPTIONS] + ["extra"]
    assert all(f.default == o.default for f, o in zip(fields, options.OPTIONS))
    assert config.FREE == ("steps", "threads", "out", "extra") and config.RESUMABLE == ("steps", "threads")
    assert config.ADDED_LATER == {"d_steps": 1, "discriminators": 1, "d_batchnorm": None, "betas": None,
                                  "eps": None, "batchnorm": "native"}
    assert config.OPTIMIZER_SETTINGS == ("tol", "max_iter", "cg_start", "betas", "eps")
    assert set(compare.PER_METHOD) == {"lr_d", "lr_g", "tol", "max_iter", "cg_start", "betas", "d_steps", "penalty",
                                       "penalty_weight", "eps"}


def test_every_option_has_its_flag_and_argparse_keeps_no_default():
    parser = build_parser()
    args = parser.parse_args(["train"])
    assert not any(hasattr(args, o.name) for o in options.OPTIONS)  # TrainConfig holds the defaults
    train_help = parser._subparsers._group_actions[0].choices["train"].format_help()
    for o in options.OPTIONS:
        assert o.flag in train_help, o.name
    args = parser.parse_args(["train", "--batch", "32", "--betas", "0.5", "0.9", "--eager"])
    assert (args.batch, args.betas, args.eager) == (32, [0.5, 0.9], True)


@pytest.mark.parametrize("bad", [[0.5, 1.5], [-0.1, 0.9]])
def test_one_betas_check_everywhere(bad, capsys):
    """The record's check answers on the command line, in compare's specs and in resolve."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--betas"] + [str(b) for b in bad])
    assert "must be two numbers in [0, 1)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"betas must be two numbers in \[0, 1\)"):
        compare.parse_optimizer("adam:betas=" + ",".join(map(str, bad)))
    with pytest.raises(ConfigError, match=r"--betas must be two numbers in \[0, 1\)"):
        config.check(TrainConfig(optimizer="adam", betas=bad))


def test_record_checks_in_resolve():
    for cfg, message in ((dict(steps=0), "--steps must be a whole number >= 1"),
                         (dict(penalty_weight=-1.0), "--penalty-weight must be >= 0"),
                         (dict(device="tpu"), "--device must be one of auto, cpu, cuda, got 'tpu'"),
                         (dict(lr_d="x"), "--lr-d must be > 0, got 'x'")):
        with pytest.raises(ConfigError, match=message):
            config.check(TrainConfig(**cfg))


def test_methods_say_whether_they_solve():
    solving = {m.name for m in METHODS.values() if m.solves}
    assert solving == {"acgd", "bcgd", "gacgd", "pcgd", "apcgd"}
    assert not METHODS["adam-alt"].solves and METHODS["adam-alt"].stepper.critic_steps


def test_one_name_for_a_run():
    gp = {"optimizer": "adam-alt", "penalty": "wgan_gp", "penalty_weight": 10.0, "d_steps": 5, "betas": [0.5, 0.9]}
    assert describe_run(gp) == "Adam + WGAN-GP (λ 10, 5 critic steps, betas 0.5, 0.9)"
    assert describe_run({"optimizer": "adam", "penalty": "none"}) == "Adam (simultaneous)"


def test_batch_source_draws_k_batches_and_the_generators():
    """k critic batches, then the generator's (the last real batch, fresh codes), drawn in the
    order the trainer always drew them: codes and weights of each critic batch, then the codes."""
    data = load_dataset("ring8")
    src = BatchSource(data, 8, 3, seed=4, rank=0, world=1, device=torch.device("cpu"), dtype=torch.float32)
    batches = src.next(3)
    assert len(batches) == 4 and batches[-1].t is None and batches[-1].real is batches[2].real
    noise = torch.Generator().manual_seed(5)
    for b in batches[:3]:
        assert torch.equal(b.z, torch.randn(8, 3, generator=noise)) and torch.equal(b.t, torch.rand(8, generator=noise))
    assert torch.equal(batches[3].z, torch.randn(8, 3, generator=noise))
    assert len(src.next()) == 1 and isinstance(src.next()[0], Batch)


def test_lock_file_removed_after_release_and_taken_again(tmp_path):
    lock = RunLock(str(tmp_path))
    assert open(tmp_path / LOCK_FILE).read().strip() == str(os.getpid())
    with pytest.raises(CheckpointError, match="in use"):
        RunLock(str(tmp_path))
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
    RunLock(str(tmp_path)).release()


def test_lock_of_a_removed_file_is_not_kept(tmp_path, monkeypatch):
    """A process that locked the file its holder removed meanwhile locks the new file instead."""
    calls = []
    real_stat = os.stat

    def stat(path, *a, **k):  # the first check sees another file at the path (the old one was replaced)
        calls.append(path)
        st = real_stat(path, *a, **k)
        return os.stat_result((st.st_mode, st.st_ino + 1) + tuple(st)[2:]) if len(calls) == 1 else st

    monkeypatch.setattr(os, "stat", stat)
    lock = RunLock(str(tmp_path))
    assert len(calls) == 2 and lock._fd is not None
    lock.release()


def test_finished_run_leaves_no_lock_and_marks_an_old_probe(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "ring8", "--steps", "2", "--eval-every", "2", "--out", str(out)] + TINY) == 0
    assert not (out / LOCK_FILE).exists()
    assert main(["probe", str(out), "--steps", "2"]) == 0
    said = capsys.readouterr().out
    assert "fastgame probe: D alone, step 0/2" in said and "both players, step 2/2" in said
    assert main(["train", "--resume", str(out), "--steps", "4", "-q"]) == 0
    assert not (out / "probe.csv").exists() and not (out / "probe.png").exists()
    assert (out / "probe-step2.csv").exists() and (out / "probe-step2.png").exists()
    assert main(["train", "--resume", str(out), "--steps", "4", "-q"]) == 0  # finished: nothing renamed
    assert (out / "probe-step2.csv").exists()


def test_progress_bar_shows_this_evaluations_metrics(tmp_path, monkeypatch):
    from fastgame.trainer.train import prepare

    shown = []

    class Bar:
        n = 0

        def __init__(self, *a, **k):
            pass

        def set_postfix(self, **kw):
            shown.append(kw)

        def update(self, k):
            self.n += k

        def close(self):
            pass

    import tqdm.auto
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    run = prepare(TrainConfig(data="ring8", steps=4, batch=16, width=8, eval_every=2, eval_samples=64,
                              out=str(tmp_path / "r")))
    run.train()
    step2, step4 = (r for r in run.rows if r["step"] in (2, 4))
    assert shown[0]["modes_covered"] == str(step2["modes_covered"])
    assert shown[-1]["high_quality"] == f"{step4['high_quality']:.4g}"


def test_tensorboard_missing_said_once(tmp_path, monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import fails as without tensorboard
    monkeypatch.setattr(recorder, "_told", set())
    for name in ("a", "b"):
        assert main(["train", "--data", "ring8", "--steps", "1", "--out", str(tmp_path / name)] + TINY) == 0
    said = capsys.readouterr().out
    assert said.count("tensorboard is not installed") == 1 and "fastgame[tensorboard]" in said
    assert not (tmp_path / "a" / "tensorboard").exists()
