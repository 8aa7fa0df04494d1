"""Sync-free stepping: masked CG iterations, capturable steps (what a CUDA graph replays)
and the graphed-step API's eager fallback — everything that runs without a GPU."""
import copy

import pytest
import torch

import fastgame
from bench.models import gan_loss, ring_data
from tests.helpers import NoHostReads, flat, make_case

OPTIMIZERS = [fastgame.ACGD, fastgame.BCGD]


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("check_every", [2, 5])
def test_masked_cg_equals_plain_cg(cls, check_every):
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    plain = cls(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2)
    masked = cls(D2.parameters(), G2.parameters(), lr_max=1e-2, lr_min=1e-2, check_every=check_every)
    for real, z in batches[:6]:
        plain.step(gan_loss(G, D, real, z))
        masked.step(gan_loss(G2, D2, real, z))
        assert int(masked.info["iter_num"]) == plain.info["iter_num"]
        assert masked.info["hvp_passes"] >= plain.info["hvp_passes"]
    assert torch.equal(flat(D, G), flat(D2, G2))


@pytest.mark.parametrize("cls,kw", [(fastgame.ACGD, {}), (fastgame.BCGD, {"momentum": 0.5}),
                                    (fastgame.BCGD, {"update_max": True})])
def test_capturable_matches_eager(cls, kw):
    """Fixed max_iter with masked iterations, in-place state, device step count: the same
    parameters as the eager optimizer over both solve phases (to float32 rounding)."""
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    eager = cls(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2, **kw)
    capt = cls(D2.parameters(), G2.parameters(), lr_max=1e-2, lr_min=1e-2, capturable=True, max_iter=50, **kw)
    sched = torch.optim.lr_scheduler.StepLR(capt, step_size=3, gamma=0.5)
    sched_eager = torch.optim.lr_scheduler.StepLR(eager, step_size=3, gamma=0.5)
    for real, z in batches[:10]:
        eager.step(gan_loss(G, D, real, z))
        capt.step(gan_loss(G2, D2, real, z))
        sched.step(), sched_eager.step()
        assert isinstance(capt.info["iter_num"], torch.Tensor)
        assert int(capt.info["iter_num"]) == eager.info["iter_num"]
    torch.testing.assert_close(flat(D2, G2), flat(D, G), rtol=1e-5, atol=1e-6)
    assert isinstance(capt.state["game"]["step"], torch.Tensor) and int(capt.state["game"]["step"]) == 10


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_capturable_step_reads_nothing_from_the_device(cls):
    G, D, batches = make_case()
    opt = cls(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2, capturable=True, max_iter=8)
    opt.step(gan_loss(G, D, *batches[0]))  # state allocation happens here, outside
    for real, z in batches[1:4]:
        loss = gan_loss(G, D, real, z)
        with NoHostReads():
            opt.step(loss)


def test_eager_step_has_one_host_read_per_cg_iteration():
    """The eager path reads the device only for the convergence test (and one finiteness
    check per step), never per HVP."""
    G, D, batches = make_case()
    opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2)
    opt.step(gan_loss(G, D, *batches[0]))
    reads = []
    saved = {n: getattr(torch.Tensor, n) for n in ("__bool__", "item", "tolist")}

    def counting(name):
        def fn(self, *a, **k):
            reads.append(name)
            return saved[name](self, *a, **k)
        return fn
    loss = gan_loss(G, D, *batches[1])
    try:
        for n in saved:
            setattr(torch.Tensor, n, counting(n))
        opt.step(loss)
    finally:
        for n, fn in saved.items():
            setattr(torch.Tensor, n, fn)
    assert len(reads) == opt.info["iter_num"] + 2  # k + 1 convergence tests + 1 finiteness check


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_capturable_non_finite_step_is_skipped_on_device(cls):
    x = torch.nn.Parameter(torch.randn(3))
    y = torch.nn.Parameter(torch.randn(2))
    A = torch.randn(3, 2)
    # the warm start: state for both players that the skipped step must leave alone
    opt = cls([x], [y], lr_max=0.1, lr_min=0.1, capturable=True, max_iter=5, cg_start="warm")
    opt.step(x @ A @ y)
    before = [x.detach().clone(), y.detach().clone()]
    state = opt.state_dict()
    opt.step(x @ A @ y * float("nan"))
    assert not bool(opt.info["finite"])
    assert torch.equal(x.detach(), before[0]) and torch.equal(y.detach(), before[1])
    after = opt.state_dict()
    for name in ("max", "min"):
        assert state["state"][name]
        for k, v in state["state"][name].items():
            assert torch.equal(v, after["state"][name][k])
    assert int(after["state"]["game"]["step"]) == 1
    with pytest.raises(FloatingPointError, match="loss"):
        opt.raise_if_nonfinite()


def test_capturable_needs_max_iter_and_validates():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="max_iter"):
        fastgame.ACGD([a], [b], capturable=True)
    with pytest.raises(ValueError, match="check_every"):
        fastgame.ACGD([a], [b], check_every=0)
    with pytest.raises(ValueError, match="capturable=True"):
        fastgame.make_graphed_step(fastgame.ACGD([a], [b]), lambda: (a.sum() * b.sum()))


def test_graphed_step_falls_back_to_eager_on_cpu():
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2, capturable=True, max_iter=50)
    ref = fastgame.ACGD(D2.parameters(), G2.parameters(), lr_max=1e-2, lr_min=1e-2, capturable=True, max_iter=50)
    real0, z0 = batches[0]
    with pytest.warns(UserWarning, match="eagerly"):
        step = fastgame.make_graphed_step(opt, lambda r, z: gan_loss(G, D, r, z), real0.clone(), z0.clone())
    for real, z in batches[:4]:
        loss = step(real, z)
        ref_loss = ref.step(gan_loss(G2, D2, real, z))
        assert torch.equal(loss, ref_loss)
    assert torch.equal(flat(D, G), flat(D2, G2))
    with pytest.raises(ValueError, match="inputs"):
        step(real0)


def _twin_steppers(static_batch=None, warmup=3):
    """A GraphedStep on CPU tensors (CUDA parts never reached in these tests) and an eager
    capturable twin on a copy of the models."""
    from fastgame.graphs import GraphedStep

    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    kw = dict(lr_max=1e-2, lr_min=1e-2, capturable=True, max_iter=50)
    opt, ref = fastgame.ACGD(D.parameters(), G.parameters(), **kw), fastgame.ACGD(D2.parameters(), G2.parameters(), **kw)
    real0, z0 = static_batch or batches[0]
    step = GraphedStep(opt, lambda r, z: gan_loss(G, D, r, z), (real0.clone(), z0.clone()), warmup, True)
    return step, lambda real, z: ref.step(gan_loss(G2, D2, real, z)), batches, (D, G), (D2, G2), opt, ref


def test_graphed_step_runs_other_shapes_eagerly_with_one_warning():
    gen = torch.Generator().manual_seed(5)
    static = (ring_data(8, gen), torch.randn(8, 3, generator=gen))  # the batches below have 32 rows
    step, ref_step, batches, models, ref_models, opt, ref = _twin_steppers(static)
    with pytest.warns(UserWarning, match=r"differ from the captured .*run eagerly") as record:
        for real, z in batches[:4]:
            assert torch.equal(step(real, z), ref_step(real, z))
    assert len([w for w in record if "differ from the captured" in str(w.message)]) == 1  # once per shape
    assert step.calls == 0 and not step.graphs  # nothing counted towards warm-up or captured
    assert torch.equal(flat(*models), flat(*ref_models))
    assert opt.state["game"]["solve_x"] == ref.state["game"]["solve_x"]
    with pytest.raises(ValueError, match="inputs must be tensors"):
        step(batches[0][0], 3.0)


def test_graphed_step_falls_back_to_eager_when_capture_fails(monkeypatch):
    from fastgame.graphs import GraphedStep

    step, ref_step, batches, models, ref_models, opt, ref = _twin_steppers(warmup=2)
    attempts = []

    def failing_record(self):  # what a capture that fails at capture_end leaves on the host
        attempts.append(1)
        self.opt.state["game"]["solve_x"] = not self.opt.state["game"]["solve_x"]
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(GraphedStep, "_warmup_step", lambda self: self.opt.step(self._closure))
    monkeypatch.setattr(GraphedStep, "_record", failing_record)
    with pytest.warns(UserWarning, match="capturing the step failed .*not permitted.* run eagerly"):
        for real, z in batches[:6]:  # 2 warm-up steps, a failed capture, then eager steps
            assert torch.equal(step(real, z), ref_step(real, z))
    assert len(attempts) == 1 and "RuntimeError" in step.eager_reason
    assert torch.equal(flat(*models), flat(*ref_models))
    for name in ("max", "min"):
        for k, v in ref.state[name].items():
            assert torch.equal(opt.state[name][k], v), (name, k)
    assert opt.state["game"]["solve_x"] == ref.state["game"]["solve_x"]
    assert int(opt.state["game"]["step"]) == int(ref.state["game"]["step"]) == 6


def test_capturable_state_round_trip_between_modes():
    G, D, batches = make_case()
    capt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2, capturable=True, max_iter=50)
    for real, z in batches[:3]:
        capt.step(gan_loss(G, D, real, z))
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    eager = fastgame.ACGD(D2.parameters(), G2.parameters())
    eager.load_state_dict(capt.state_dict())
    assert eager.state["game"]["step"] == 3
    for real, z in batches[3:6]:
        capt.step(gan_loss(G, D, real, z))
        eager.step(gan_loss(G2, D2, real, z))
    torch.testing.assert_close(flat(D2, G2), flat(D, G), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_bf16_autocast_hvps_stay_close_to_fp32(cls):
    """HVPs under CPU autocast (bf16 matmuls) with fp32 CG state: each step's update (from
    the same point, both solve phases) within bf16 accuracy of the fp32 one. ACGD's first
    steps are excluded: with second moments of one or two gradients, eta*g is nearly
    sign(g), which turns bf16 rounding of tiny gradient entries into O(1) changes.
    cg_start="warm" so that both optimizers keep per-player state tensors (the warm start;
    BCGD with the default zero start keeps none) whose dtype can be checked."""
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ref = cls(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2, cg_start="warm")
    mixed = cls(D2.parameters(), G2.parameters(), lr_max=1e-2, lr_min=1e-2, cg_start="warm")
    for t, (real, z) in enumerate(batches[:6]):
        start = flat(D, G).clone()
        ref.step(gan_loss(G, D, real, z))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = gan_loss(G2, D2, real, z)
        mixed.step(loss)
        for name in mixed.player_names:
            state = [v for v in mixed.state[name].values() if isinstance(v, torch.Tensor)]
            assert state and all(v.dtype == torch.float32 for v in state)
        d_ref, d_mixed = flat(D, G) - start, flat(D2, G2) - start
        if cls is fastgame.BCGD or t >= 2:
            assert ((d_ref - d_mixed).norm() / d_ref.norm()).item() < 3e-2
        with torch.no_grad():  # continue both from the fp32 trajectory
            for p, q in zip(list(D.parameters()) + list(G.parameters()), list(D2.parameters()) + list(G2.parameters())):
                q.copy_(p)
        mixed.load_state_dict(ref.state_dict())


@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD, fastgame.GACGD])
def test_step_under_autocast_keeps_solver_arithmetic_in_fp32(cls):
    """Calling step() inside torch.autocast changes nothing but the loss's own precision:
    CG/GMRES (whose Gram-Schmidt uses matmuls autocast would take to bf16) stay fp32.
    ACGD/BCGD use cg_start="warm" so that the warm-start state (which BCGD's default zero
    start does not keep) is there to be checked; GACGD always keeps its state."""
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    if cls is fastgame.GACGD:
        opts = [cls(list(D.parameters()), list(G.parameters()), lr_x=1e-2, lr_y=1e-2),
                cls(list(D2.parameters()), list(G2.parameters()), lr_x=1e-2, lr_y=1e-2)]
    else:
        opts = [cls(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2, cg_start="warm"),
                cls(D2.parameters(), G2.parameters(), lr_max=1e-2, lr_min=1e-2, cg_start="warm")]
    for real, z in batches[:4]:
        for opt, (g, d), inside in zip(opts, [(G, D), (G2, D2)], [False, True]):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = gan_loss(g, d, real, z)
                if inside:
                    opt.step(*((-loss, loss) if cls is fastgame.GACGD else (loss,)))
            if not inside:
                opt.step(*((-loss, loss) if cls is fastgame.GACGD else (loss,)))
    assert torch.equal(flat(D, G), flat(D2, G2))
    for name in opts[1].player_names:
        state = [v for v in opts[1].state[name].values() if isinstance(v, torch.Tensor)]
        assert state and all(v.dtype == torch.float32 for v in state)
