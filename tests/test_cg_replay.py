"""Graph-replayed CG iterations (graph_cg, fastgame.linalg.captured), tested on the CPU up to
the capture: a stand-in records the iteration at "capture" and runs it at each "replay", which
is what a CUDA graph does with the kernels. The CUDA capture itself is tested in
tests/test_gpu_graphs.py (bench/gpu_check.sh)."""
import copy
import warnings

import pytest
import torch

import fastgame
from bench.models import gan_loss, mlp_gan, ring_data
from fastgame.linalg import captured
from fastgame.linalg.cg_drivers import cg_driver
from fastgame.optim.cgd import CompetitiveGradient
from tests.helpers import flat


class RecordedReplay(captured.IterationReplay):
    """A CUDA graph's semantics without CUDA: capture runs nothing, each replay runs the body."""

    def _capture(self, body):
        self._body = body

    def _replay(self):
        self._body()


class FailingReplay(captured.IterationReplay):
    def _capture(self, body):
        raise RuntimeError("operation not permitted when stream is capturing")


def _with_replay(monkeypatch, kind):
    """Make every solve after the first step use ``kind`` (as CUDA would)."""
    made = []

    def replay(self):
        if not self.graph_cg or self._graph_cg_failed or self.state["game"]["step"] == 0:
            self.graph_cg_reason = self._graph_cg_failed or "the first step runs eagerly"
            return None
        self.graph_cg_reason = None
        made.append(kind(self.players[0].device))
        return made[-1]

    monkeypatch.setattr(CompetitiveGradient, "_iteration_replay", replay)
    return made


def _train(cls, steps=8, **kw):
    torch.manual_seed(0)
    G, D = mlp_gan(width=32, depth=2, latent=2)
    opt = cls(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2, tol=1e-10, **kw)
    gen = torch.Generator().manual_seed(3)
    infos = []
    for _ in range(steps):
        real, z = ring_data(64, gen), torch.randn(64, 2, generator=gen)
        opt.step(lambda: gan_loss(G, D, real, z))
        infos.append(dict(opt.info))
    return flat(G, D), opt, infos


@pytest.mark.parametrize("cg_start", ["warm", "zero"])
@pytest.mark.parametrize("check_every", [1, 3])
@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD])
def test_replayed_iterations_equal_eager(monkeypatch, cls, cg_start, check_every):
    ref, _, ref_info = _train(cls, cg_start=cg_start, check_every=check_every)
    made = _with_replay(monkeypatch, RecordedReplay)
    got, opt, info = _train(cls, cg_start=cg_start, check_every=check_every)
    assert torch.equal(got, ref)  # the same kernels in the same order: bit for bit
    assert len(made) == 7 and all(r.failure is None for r in made)
    # each iteration is one replay, and with check_every > 1 so are the no-ops up to the next check
    replays = [r.replays for r in made]
    iters = [i["iter_num"] for i in info[1:]]
    assert replays == iters if check_every == 1 else all(i <= n < i + check_every for n, i in zip(replays, iters))
    assert [int(a["iter_num"]) for a in info] == [int(b["iter_num"]) for b in ref_info]
    assert all(isinstance(a["iter_num"], int) for a in info[1:])  # read on the host anyway
    assert [i["cg_graphed"] for i in info] == [False] + [True] * 7
    assert all(i["cg_capture_s"] >= 0 for i in info[1:]) and "cg_capture_s" not in info[0]
    if check_every == 1:
        assert [i["hvp_passes"] for i in info] == [i["hvp_passes"] for i in ref_info]


def test_failed_capture_runs_eagerly_once_and_says_why(monkeypatch):
    ref, _, _ = _train(fastgame.ACGD)
    made = _with_replay(monkeypatch, FailingReplay)
    with pytest.warns(UserWarning, match="capturing a CG iteration failed.*not permitted"):
        got, opt, info = _train(fastgame.ACGD)
    assert torch.equal(got, ref)
    assert len(made) == 1  # not tried again after the failure
    assert "capturing a CG iteration failed" in opt.graph_cg_reason
    assert not any(i["cg_graphed"] for i in info)


def test_graph_cg_off_and_reasons_on_cpu():
    _, opt, info = _train(fastgame.ACGD, steps=2)
    assert opt.graph_cg and opt.graph_cg_reason == "not a CUDA device" and not info[-1]["cg_graphed"]
    _, opt, _ = _train(fastgame.ACGD, steps=2, graph_cg=False)
    assert opt.graph_cg_reason == "graph_cg=False"
    assert copy.deepcopy(opt).graph_cg is False
    assert captured.why_not(torch.device("cpu")) == "not a CUDA device"
    with pytest.raises(ValueError, match="graph_cg"):
        fastgame.ACGD([torch.zeros(2, requires_grad=True)], [torch.zeros(2, requires_grad=True)], graph_cg="yes")


def test_replay_needs_host_checks():
    with pytest.raises(ValueError, match="check_every"):
        cg_driver(None, replay=RecordedReplay(torch.device("cpu")))


def test_closure_step_stays_on_cpu_streams():
    """On the CPU the side-stream context is a no-op: no CUDA call is made."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _train(fastgame.ACGD, steps=2)
