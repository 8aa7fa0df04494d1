"""The piecewise-graphed step (make_graphed_step(exact_cg=True)) on the CPU, up to the capture.

The CUDA graphs are replaced by a fake with the same interface (:class:`ThreadPieces`): recording
runs nothing; replaying the head runs the recorded step in a worker thread up to its CG loop, each
replay of the iteration re-runs the recorded iteration callable, and replaying the tail lets the step
finish. So the host loop (k, the residual-check cadence), the pass counts, the finiteness verdict,
the phases and the state are those of the real path, and are compared with eager ``opt.step(closure)``.
"""
import copy
import threading
import warnings

import pytest
import torch
from torch import nn

import fastgame
from bench.models import gan_loss
from fastgame.graphs import PiecewiseGraphedStep
from fastgame.linalg import captured
from fastgame.linalg.captured import StepPieces
from tests.helpers import flat, make_case, state_equal


class _Call:
    def __init__(self, fn):
        self.fn, self.replays = fn, 0

    def replay(self):
        self.replays += 1
        self.fn()


class _FakeStep:
    """One recorded phase: the recorded step, replayed piece by piece (see the module doc)."""

    def __init__(self, opt, run_step):
        self.opt, self.run_step = opt, run_step
        self.pieces = StepPieces(_Call(self._head), _Call(self._iteration), _Call(self._tail),
                                 active=None, count=None, max_iter=0, check_every=1, iteration_passes=0)

    def iterate(self, body, hvp, active, count, max_iter, check_every):  # in the worker thread, at the split
        self.body, self.hvp = body, hvp
        p = self.pieces
        p.active, p.count, p.max_iter, p.check_every = active, count, max_iter, check_every
        self.at_split.set()
        self.resume.wait()
        return None  # the iterations run later: the solve's count is the device tensor

    def _head(self):
        self.game = dict(self.opt.state["game"])
        self.at_split, self.resume, self.error = threading.Event(), threading.Event(), None

        def work():
            try:
                self.result = self.run_step(self)
            except BaseException as exc:  # noqa: BLE001
                self.error = exc
            finally:
                self.at_split.set()
        self.thread = threading.Thread(target=work)
        self.thread.start()
        self.at_split.wait()
        if self.error is not None:
            self.thread.join()
            raise self.error

    def _iteration(self):
        with torch.no_grad():
            self.pieces.iteration_passes = self.hvp.uncounted(self.body)  # a replay's passes, as a graph's

    def _tail(self):
        self.resume.set()
        self.thread.join()
        if self.error is not None:
            raise self.error
        info = dict(self.opt.info)
        info["hvp_passes"] += self.pieces.iteration_passes  # as captured: head, one iteration, tail
        self.pieces.outputs = (self.result, info, self.opt.verdict)
        self.opt.state["game"].update(self.game)  # a replayed graph runs no host effect


class ThreadPieces:
    """Fake of :class:`fastgame.linalg.captured.CudaPieces`."""

    def __init__(self, opt):
        self.opt, self.records = opt, 0

    def record(self, run_step, device):
        self.records += 1
        return _FakeStep(self.opt, run_step).pieces, None


def piecewise(opt, loss_fn, *inputs, warmup=2, check_finite=True):
    return PiecewiseGraphedStep(opt, loss_fn, tuple(i.clone() for i in inputs), warmup, check_finite,
                                pieces=ThreadPieces(opt))


class Toy(nn.Module):
    """A small bilinear-plus-quadratic game f(x, y) = s·xᵀAy + ½|x|² − ½|y|², x the max player here."""

    def __init__(self, dtype):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.A = torch.randn(5, 4, generator=g, dtype=dtype)
        self.x = nn.Parameter(torch.randn(5, generator=g, dtype=dtype))
        self.y = nn.Parameter(torch.randn(4, generator=g, dtype=dtype))

    def loss(self, s):
        return s * (self.x @ self.A @ self.y) - 0.5 * self.x.square().sum() + 0.5 * self.y.square().sum()


def _pair(cls, max_params, min_params, max2, min2, **kw):
    eager = cls(max_params, min_params, lr_max=1e-2, lr_min=1e-2, **kw)
    graphed = cls(max2, min2, lr_max=1e-2, lr_min=1e-2, capturable=True,
                  **{"max_iter": 10_000, **kw})  # a bound only: the host loop stops at convergence
    return eager, graphed


CASES = [(cls, start, dtype) for cls in (fastgame.ACGD, fastgame.BCGD) for start in ("zero", "warm")
         for dtype in (torch.float64, torch.float32)]


@pytest.mark.parametrize("cls,cg_start,dtype", CASES)
def test_mlp_gan_equals_eager_closure_step(cls, cg_start, dtype):
    G, D, batches = make_case(steps=8)
    G, D = G.to(dtype), D.to(dtype)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    tol = 1e-10 if dtype == torch.float64 else 1e-6
    eager, opt = _pair(cls, D.parameters(), G.parameters(), D2.parameters(), G2.parameters(), tol=tol,
                       cg_start=cg_start)
    real0, z0 = batches[0]
    step = piecewise(opt, lambda real, z: gan_loss(G2, D2, real, z), real0.to(dtype), z0.to(dtype))
    for n, (real, z) in enumerate(batches):
        real, z = real.to(dtype), z.to(dtype)
        loss_e = eager.step(lambda: gan_loss(G, D, real, z))
        loss_p = step(real, z)
        assert torch.equal(loss_p, loss_e)
        assert opt.info["iter_num"] == eager.info["iter_num"]  # exactly k, a host int (check_every 1)
        if n == 0 and cg_start == "warm":
            # Any capturable optimizer keeps its warm start allocated from the start, so its first
            # solve starts from a stored zero: one pass more than eager's zero start, and other
            # rounding. From the eager step's state on, the steps are equal bit for bit.
            assert opt.info["hvp_passes"] == eager.info["hvp_passes"] + 1
            torch.testing.assert_close(flat(D2, G2), flat(D, G))
            with torch.no_grad():
                for p, q in zip([*D2.parameters(), *G2.parameters()], [*D.parameters(), *G.parameters()]):
                    p.copy_(q)
            step.load_state_dict(eager.state_dict())  # keeps capturable and max_iter
            assert opt.capturable and opt.param_groups[0]["max_iter"] == 10_000
            continue
        assert opt.info["hvp_passes"] == eager.info["hvp_passes"]
        if n >= 2:
            assert opt.info["cg_replays"] == eager.info["iter_num"]
        assert torch.equal(flat(D2, G2), flat(D, G)), f"step {n}"
    assert step.pieces.records == 2  # one capture per phase (solved player), replays after
    assert {p: (s.head.replays, s.tail.replays) for p, s in step.graphs.items()} == {0: (3, 3), 1: (3, 3)}
    sd_e, sd_p = eager.state_dict(), opt.state_dict()
    assert state_equal(sd_p["state"]["max"], sd_e["state"]["max"])
    assert state_equal(sd_p["state"]["min"], sd_e["state"]["min"])
    assert int(sd_p["state"]["game"]["step"]) == sd_e["state"]["game"]["step"] == len(batches)
    assert sd_p["state"]["game"]["solve_x"] == sd_e["state"]["game"]["solve_x"]


@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_toy_game_equals_eager_closure_step(cls, dtype):
    a, b = Toy(dtype), Toy(dtype)
    eager, opt = _pair(cls, [a.x], [a.y], [b.x], [b.y], tol=1e-12 if dtype == torch.float64 else 1e-6)
    s = torch.ones((), dtype=dtype)
    step = piecewise(opt, b.loss, s)
    for n in range(7):
        s_n = s * (1 + 0.1 * n)
        eager.step(lambda: a.loss(s_n))
        step(s_n)
        assert opt.info["iter_num"] == eager.info["iter_num"]
        assert torch.equal(b.x, a.x) and torch.equal(b.y, a.y)


def test_unconverged_solve_stops_at_the_system_size_as_eager():
    """tol = atol = 0: CG never passes its test, so an eager solve runs the system size; the
    piecewise loop, bounded by max_iter = 10000, stops there too."""
    a, b = Toy(torch.float64), Toy(torch.float64)
    eager, opt = _pair(fastgame.ACGD, [a.x], [a.y], [b.x], [b.y], tol=0.0, atol=0.0)
    s = torch.ones((), dtype=torch.float64)
    step = piecewise(opt, b.loss, s)
    for n in range(5):
        eager.step(lambda: a.loss(s))
        step(s)
        assert opt.info["iter_num"] == eager.info["iter_num"] == (5 if n % 2 == 0 else 4)
        assert torch.equal(b.x, a.x) and torch.equal(b.y, a.y)


@pytest.mark.parametrize("check_every", [1, 3])
def test_residual_read_every_check_every_iterations(check_every, monkeypatch):
    """The host loop reads the residual test before iterations 0, c, 2c, ... and no other value; the
    count is exact (device tensor when c > 1, as an eager masked step's)."""
    G, D, batches = make_case(steps=5)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    eager, opt = _pair(fastgame.ACGD, D.parameters(), G.parameters(), D2.parameters(), G2.parameters(),
                       check_every=check_every)
    step = piecewise(opt, lambda real, z: gan_loss(G2, D2, real, z), *batches[0])
    reads = []
    loop = captured.cg_host_loop

    def counting(iterate, active, max_iter, every):
        class Active:  # records each read of the flag
            def __bool__(self):
                reads.append(done[0])
                return bool(active)
        done = [0]

        def body():
            iterate()
            done[0] += 1
        return loop(body, Active(), max_iter, every)
    monkeypatch.setattr(fastgame.graphs, "cg_host_loop", counting)
    for n, (real, z) in enumerate(batches):
        reads.clear()
        eager.step(lambda: gan_loss(G, D, real, z))
        step(real, z)
        k = int(eager.info["iter_num"])
        assert int(opt.info["iter_num"]) == k
        if n >= 2:  # replayed: the loop read the flag at 0, c, 2c, ... up to the first multiple of c >= k
            last = -(-k // check_every) * check_every
            assert reads == list(range(0, last + 1, check_every))
            assert opt.info["cg_replays"] == last
            assert isinstance(opt.info["iter_num"], int) == (check_every == 1)
    assert torch.equal(flat(D2, G2), flat(D, G))


def _four_steps_both_ways(steps: int):
    """An MLP GAN and its copy after 4 steps of eager ACGD and of its piecewise twin."""
    G, D, batches = make_case(steps=steps)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    eager, opt = _pair(fastgame.ACGD, D.parameters(), G.parameters(), D2.parameters(), G2.parameters())
    step = piecewise(opt, lambda real, z: gan_loss(G2, D2, real, z), *batches[0])
    for real, z in batches[:4]:
        eager.step(lambda: gan_loss(G, D, real, z))
        step(real, z)
    return G, D, G2, D2, eager, opt, step, batches


def test_state_dict_round_trip_and_resume_into_eager():
    """A piecewise run saved halfway and resumed (piecewise again, or eager) ends where an eager run ends."""
    G, D, G2, D2, eager, opt, step, batches = _four_steps_both_ways(8)
    sd = opt.state_dict()
    G3, D3 = copy.deepcopy(G2), copy.deepcopy(D2)
    resumed = fastgame.ACGD(D3.parameters(), G3.parameters(), lr_max=1e-2, lr_min=1e-2, capturable=True,
                            max_iter=10_000)
    resumed.load_state_dict(sd)
    step3 = piecewise(resumed, lambda real, z: gan_loss(G3, D3, real, z), *batches[0])
    G4, D4 = copy.deepcopy(G2), copy.deepcopy(D2)
    as_eager = fastgame.ACGD(D4.parameters(), G4.parameters(), lr_max=1e-2, lr_min=1e-2, capturable=True,
                             max_iter=10_000)
    as_eager.load_state_dict(sd)
    for real, z in batches[4:]:
        eager.step(lambda: gan_loss(G, D, real, z))
        step(real, z)
        step3(real, z)
        with as_eager.cg_pieces(captured.LiveCG()):
            as_eager.step(lambda: gan_loss(G4, D4, real, z))
    for other in (flat(D2, G2), flat(D3, G3), flat(D4, G4)):
        assert torch.equal(other, flat(D, G))
    assert state_equal(opt.state_dict(), resumed.state_dict())


def test_non_finite_step_changes_nothing():
    """A replayed step whose loss is NaN raises FloatingPointError (check_finite) and leaves the
    parameters and state as they were; the next finite step goes on as the eager run does."""
    G, D, G2, D2, eager, opt, step, batches = _four_steps_both_ways(7)
    before, sd = flat(D2, G2), opt.state_dict()
    bad = batches[4][0].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        step(bad, batches[4][1])
    assert torch.equal(flat(D2, G2), before)
    assert state_equal(opt.state_dict(), sd)
    for real, z in batches[5:]:
        eager.step(lambda: gan_loss(G, D, real, z))
        step(real, z)
        assert torch.equal(flat(D2, G2), flat(D, G))


def test_make_graphed_step_exact_cg_validates_and_falls_back_on_cpu():
    G, D, batches = make_case(steps=3)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    eager, opt = _pair(fastgame.ACGD, D.parameters(), G.parameters(), D2.parameters(), G2.parameters())
    with pytest.raises(ValueError, match="exact_cg"):
        fastgame.make_graphed_step(opt, lambda r, z: gan_loss(G2, D2, r, z), *batches[0], exact_cg="yes")
    with pytest.warns(UserWarning, match="CUDA graphs need CUDA"):
        step = fastgame.make_graphed_step(opt, lambda r, z: gan_loss(G2, D2, r, z), *batches[0], exact_cg=True)
    assert isinstance(step, PiecewiseGraphedStep)
    for real, z in batches:
        eager.step(lambda: gan_loss(G, D, real, z))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            step(real, z)
        assert opt.info["iter_num"] == eager.info["iter_num"]  # the eager fallback runs the exact-k loop too
    assert torch.equal(flat(D2, G2), flat(D, G))


def test_cg_pieces_needs_a_capturable_optimizer():
    G, D, _ = make_case(steps=1)
    opt = fastgame.ACGD(D.parameters(), G.parameters())
    with pytest.raises(ValueError, match="capturable=True"):
        with opt.cg_pieces(captured.LiveCG()):
            pass


# ---- the trainer's stepper ---------------------------------------------------------------------
from fastgame.trainer import steppers  # noqa: E402
from fastgame.trainer.batches import Batch  # noqa: E402
from fastgame.trainer.config import ConfigError, TrainConfig, check  # noqa: E402
from fastgame.trainer.methods import make_stepper  # noqa: E402


def _stepper(G, D, **kw):
    losses = steppers.GameLosses(G, D, "standard", None, 10.0)
    example = Batch(torch.zeros(32, 2), torch.zeros(32, 3), torch.zeros(32))
    return make_stepper("acgd", G, D, losses, 1e-2, 1e-2, example=example, **kw)


def test_trainer_on_cpu_steps_eagerly_as_before():
    G, D, _ = make_case(steps=1)
    stepper = _stepper(G, D)
    assert stepper._graphed is None and not stepper.opt.capturable
    assert stepper.opt.param_groups[0]["max_iter"] is None


def test_trainer_piecewise_stepper_equals_eager_and_resumes_either_way(monkeypatch):
    """The default CUDA path's stepper (forced here, with fake graphs): the eager stepper's numbers
    bit for bit, and checkpoints of either resume the other."""
    G, D, batches = make_case(steps=8)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    eager = _stepper(G, D)
    monkeypatch.setattr(steppers, "_piecewise_possible", lambda example, settings: True)
    with pytest.warns(UserWarning, match="CUDA graphs need CUDA"):
        graphed = _stepper(G2, D2)
    inner = graphed._graphed.graphed  # inside the first-replay check (tests/test_graph_guard.py)
    assert isinstance(inner, PiecewiseGraphedStep) and graphed.opt.capturable
    assert graphed.opt.param_groups[0]["max_iter"] == max(sum(p.numel() for p in m.parameters()) for m in (D, G))
    inner.eager_reason, inner.pieces = None, ThreadPieces(graphed.opt)
    t = torch.full((32,), 0.5)
    for real, z in batches[:4]:
        out_e, out_g = eager.step([Batch(real, z, t)]), graphed.step([Batch(real, z, t)])
        assert out_g[2] == out_e[2] and out_g[3] == out_e[3]  # CG iterations, HVP passes
    assert torch.equal(flat(D2, G2), flat(D, G)) and graphed._graphed.graphs
    assert graphed._graphed.verified == set(graphed._graphed.graphs)  # 3 warm-ups, then one checked capture
    assert graphed.path.startswith("piecewise CUDA graphs") and not graphed.notices
    # the eager stepper resumes from the piecewise one's checkpoint and the other way round
    sd_e, sd_g = eager.state_dict(), graphed.state_dict()
    G3, D3, G4, D4 = (copy.deepcopy(m) for m in (G, D, G, D))
    monkeypatch.undo()
    eager2 = _stepper(G3, D3)
    eager2.load_state_dict(sd_g)
    assert not eager2.opt.capturable and eager2.opt.param_groups[0]["max_iter"] is None
    monkeypatch.setattr(steppers, "_piecewise_possible", lambda example, settings: True)
    with pytest.warns(UserWarning):
        graphed2 = _stepper(G4, D4)
    graphed2.load_state_dict(sd_e)
    assert graphed2.opt.capturable
    for real, z in batches[4:]:
        eager.step([Batch(real, z, t)]), eager2.step([Batch(real, z, t)]), graphed2.step([Batch(real, z, t)])
    assert torch.equal(flat(D3, G3), flat(D, G)) and torch.equal(flat(D4, G4), flat(D, G))


def test_eager_and_graphed_options_exclude_each_other():
    with pytest.raises(ConfigError, match="--graphed and --eager"):
        check(TrainConfig(optimizer="acgd", graphed=True, eager=True, max_iter=4))
    check(TrainConfig(optimizer="acgd", eager=True))


def test_cli_eager_option_reaches_the_config():
    from fastgame.trainer.cli import _settings, build_parser
    assert TrainConfig(**_settings(build_parser().parse_args(["train", "--eager"]))).eager is True
    assert TrainConfig(**_settings(build_parser().parse_args(["train"]))).eager is False


def test_split_capture_cuts_the_step_at_its_cg_loop():
    """SplitCapture (what CudaPieces records with) ends the head's graph at the CG loop, records one
    iteration into its own graph, and opens the tail's; with a fake recorder on the CPU the recorded
    ops run, so only the order and the bookkeeping are checked here."""
    events = []

    class Recorder:
        def begin(self):
            events.append("begin")

        def end(self):
            events.append("end")
            return f"graph{events.count('end')}"
    split = captured.SplitCapture(Recorder())
    G, D, batches = make_case(steps=1)
    opt = fastgame.ACGD(D.parameters(), G.parameters(), capturable=True, max_iter=50, check_every=2)
    real, z = batches[0]
    with opt.cg_pieces(split):
        opt.step(lambda: gan_loss(G, D, real, z))
    pieces = split.pieces("tail")
    assert events == ["end", "begin", "end", "begin"]
    assert (pieces.head, pieces.iteration, pieces.tail) == ("graph1", "graph2", "tail")
    assert (pieces.iteration_passes, pieces.check_every, pieces.max_iter) == (2, 2, 50)
    assert opt.info["hvp_passes"] == 1  # the head's pass: each replayed iteration's are counted by the owner
    assert isinstance(opt.info["iter_num"], torch.Tensor)  # counted on the device, replayed later
    with pytest.raises(RuntimeError, match="no CG solve"):
        captured.SplitCapture(Recorder()).pieces("tail")
