"""VerifiedStep (fastgame/graph_guard.py) on the CPU, over the fake graph replay of
tests/test_piecewise_graph.py: a correct replay is trusted after one check per phase; a capture
that raises, a replay that raises and a replay that gives wrong numbers each fall back to eager
steps, once, naming the cause, with the eager run's numbers bit for bit."""
import copy
import warnings

import pytest
import torch
from torch import nn

import fastgame
from bench.models import gan_loss
from fastgame.graph_guard import Snapshot, VerifiedStep, difference, step_rtol
from tests.helpers import flat, make_case, state_equal
from tests.test_piecewise_graph import ThreadPieces, _pair, piecewise


class _Replay:
    def __init__(self, fn):
        self.fn = fn

    def replay(self):
        self.fn()


class FailingCapture(ThreadPieces):
    def record(self, run_step, device):
        self.records += 1
        raise RuntimeError("operation not permitted when stream is capturing")


class WrongTail(ThreadPieces):
    """Replays whose tail also moves the max player by 1e-3: a graph reading a wrong buffer."""

    def record(self, run_step, device):
        pieces, loss = super().record(run_step, device)
        tail = pieces.tail

        def wrong():
            tail.replay()
            with torch.no_grad():
                self.opt.players[0].flat.add_(1e-3)
        pieces.tail = _Replay(wrong)
        return pieces, loss


class RaisingIteration(ThreadPieces):
    """Replays whose CG iteration raises, as a CUDA error at replay would, after the device wrote
    whatever it wrote (here: the fake's recorded step runs to its end first)."""

    def record(self, run_step, device):
        pieces, loss = super().record(run_step, device)
        tail = pieces.tail

        def boom():
            tail.replay()
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        pieces.iteration = _Replay(boom)
        return pieces, loss


def _run(pieces_cls, steps=8):
    """An eager ACGD run and a VerifiedStep over the piecewise step with ``pieces_cls`` fakes, on the
    same batches; returns both and the causes reported."""
    G, D, batches = make_case(steps=steps)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    eager, opt = _pair(fastgame.ACGD, D.parameters(), G.parameters(), D2.parameters(), G2.parameters())
    inner = piecewise(opt, lambda real, z: gan_loss(G2, D2, real, z), *batches[0])
    inner.pieces = pieces_cls(opt)
    causes = []
    step = VerifiedStep(inner, on_fallback=causes.append)
    for n, (real, z) in enumerate(batches):
        loss_e = eager.step(lambda: gan_loss(G, D, real, z))
        loss_v = step(real, z)
        assert torch.equal(loss_v, loss_e), f"step {n}"
        assert torch.equal(flat(D2, G2), flat(D, G)), f"step {n}"
    sd_v, sd_e = opt.state_dict()["state"], eager.state_dict()["state"]
    assert state_equal(sd_v["max"], sd_e["max"]) and state_equal(sd_v["min"], sd_e["min"])
    assert int(sd_v["game"]["step"]) == sd_e["game"]["step"] and sd_v["game"]["solve_x"] == sd_e["game"]["solve_x"]
    return step, causes


def test_correct_replay_is_checked_once_per_phase_then_trusted():
    step, causes = _run(ThreadPieces)
    assert causes == [] and step.fallback is None and step.path == "graphs"
    assert step.verified == {0, 1} and step.last_difference == 0.0
    assert step.graphed.pieces.records == 2
    assert {p: s.head.replays for p, s in step.graphs.items()} == {0: 3, 1: 3}  # checked, then 2 trusted replays


def test_capture_that_raises_falls_back_once_naming_it():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the graphed step's own warning is not shown: one line, the cause's
        step, causes = _run(FailingCapture)
    assert len(causes) == 1 and causes[0].startswith("capturing the step failed (RuntimeError: operation not permitted")
    assert step.path == "eager" and step.reason == causes[0] and step.graphs == {}
    assert step.graphed.pieces.records == 1  # never tried again


def test_replay_with_wrong_numbers_falls_back_keeping_the_eager_step():
    step, causes = _run(WrongTail)
    assert len(causes) == 1 and "differs from an eager step from the same state by" in causes[0]
    assert step.last_difference > step_rtol(step.opt) and step.path == "eager"
    assert step.graphed.pieces.records == 1


def test_replay_that_raises_falls_back():
    step, causes = _run(RaisingIteration)
    assert causes == ["the first replayed step raised RuntimeError: CUDA error: an illegal memory access was "
                      "encountered"]
    assert step.path == "eager"


def test_default_fallback_is_one_runtime_warning():
    G, D, batches = make_case(steps=4)
    opt = fastgame.ACGD(D.parameters(), G.parameters(), capturable=True, max_iter=10_000)
    inner = piecewise(opt, lambda real, z: gan_loss(G, D, real, z), *batches[0])
    inner.pieces = FailingCapture(opt)
    step = VerifiedStep(inner)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for real, z in batches:
            step(real, z)
    assert [str(w.message) for w in caught] == [
        f"graphed step: {step.fallback}; continuing with eager steps"]
    assert caught[0].category is RuntimeWarning


def test_non_finite_step_under_check_changes_nothing_and_is_no_fallback():
    G, D, batches = make_case(steps=6)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    eager, opt = _pair(fastgame.ACGD, D.parameters(), G.parameters(), D2.parameters(), G2.parameters())
    inner = piecewise(opt, lambda real, z: gan_loss(G2, D2, real, z), *batches[0])
    causes = []
    step = VerifiedStep(inner, on_fallback=causes.append)
    for real, z in batches[:2]:  # the warm-ups
        eager.step(lambda: gan_loss(G, D, real, z))
        step(real, z)
    before, sd = flat(D2, G2), opt.state_dict()
    bad = batches[2][0].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        step(bad, batches[2][1])  # would capture and be checked: the eager step raises too
    assert torch.equal(flat(D2, G2), before) and state_equal(opt.state_dict(), sd)
    assert causes == [] and step.verified == set()
    for real, z in batches[3:]:
        eager.step(lambda: gan_loss(G, D, real, z))
        step(real, z)
        assert torch.equal(flat(D2, G2), flat(D, G))
    assert causes == [] and step.verified == {0, 1}


def test_snapshot_restores_parameters_state_and_buffers_in_place():
    G, D, batches = make_case(steps=1)
    bn = nn.BatchNorm1d(3)
    opt = fastgame.ACGD(D.parameters(), G.parameters(), capturable=True, max_iter=100)
    real, z = batches[0]
    opt.step(lambda: gan_loss(G, D, real, z))
    tensors = [opt.players[0].flat, opt.state["max"]["square_avg"], bn.running_mean]
    values = [t.clone() for t in tensors]
    game = dict(opt.state["game"])
    snap = Snapshot(opt, bn.buffers())
    opt.step(lambda: gan_loss(G, D, real, z))
    bn(torch.randn(8, 3))
    assert not torch.equal(tensors[0], values[0]) and not torch.equal(bn.running_mean, values[2])
    snap.restore()
    assert tensors[0] is opt.players[0].flat and tensors[1] is opt.state["max"]["square_avg"]
    assert all(torch.equal(t, v) for t, v in zip(tensors, values))
    assert state_equal(dict(opt.state["game"]), game)


def test_step_rtol_and_difference():
    G, D, _ = make_case(steps=1)
    assert step_rtol(fastgame.ACGD(D.parameters(), G.parameters(), tol=1e-10)) == pytest.approx(1e-5)
    assert step_rtol(fastgame.ACGD(D.parameters(), G.parameters(), tol=1e-30)) == 64 * torch.finfo(torch.float32).eps
    assert step_rtol(fastgame.ACGD(D.parameters(), G.parameters(), tol=0.5)) == 1e-2
    a = torch.ones(4)
    assert difference([a], [a]) == 0.0 and difference([a * 1.5], [a]) == pytest.approx(0.5)
    assert difference([a], [torch.zeros(4)]) == float("inf")
    assert difference([a * float("nan")], [a]) == float("inf")


# ---- the trainer's default CUDA path (forced here on the CPU, with fake graphs) ---------------
@pytest.mark.parametrize("pieces_cls, cause", [(FailingCapture, "capturing the step failed (RuntimeError"),
                                                (WrongTail, "differs from an eager step from the same state"),
                                                (ThreadPieces, None)])
def test_trainer_warns_once_and_records_the_path_in_config_json(pieces_cls, cause, monkeypatch, tmp_path, capsys):
    import json

    from fastgame.trainer import steppers
    from fastgame.trainer.cli import main
    real_make = steppers.make_graphed_step

    def fake_graphs(opt, *args, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CUDA graphs need CUDA": replaced by the fake below
            step = real_make(opt, *args, **kw)
        step.eager_reason, step.pieces = None, pieces_cls(opt)
        return step
    monkeypatch.setattr(steppers, "_piecewise_possible", lambda example, settings: True)
    monkeypatch.setattr(steppers, "make_graphed_step", fake_graphs)
    args = ["--data", "ring8", "--steps", "8", "--batch", "16", "--width", "8", "--eval-samples", "64",
            "--eval-every", "4", "-q"]
    assert main(["train", "--out", str(tmp_path / "run")] + args) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("fastgame: warning: piecewise CUDA graphs:")]
    path = json.loads((tmp_path / "run" / "config.json").read_text())["extra"]["step_path"]
    if cause is None:
        assert warned == [] and path.startswith("piecewise CUDA graphs (each phase's first replay checked")
    else:
        assert len(warned) == 1 and cause in warned[0]
        assert warned[0].endswith("continuing with eager steps (the same numbers; --eager skips the graphs)")
        assert path.startswith("eager (") and cause in path
        assert path.endswith(" from step 4")  # 3 warm-ups, then the checked step
