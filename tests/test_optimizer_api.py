"""Behaviour of ACGD/BCGD as torch optimizers: pass schedule, closures, unused parameters,
state round-trips (also into a new process) and every bad input."""
import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastgame
from bench.models import gan_loss
from tests.helpers import NanInDoubleBackward, make_case, state_equal

CGDs = pytest.importorskip("CGDs")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIMIZERS = [fastgame.ACGD, fastgame.BCGD]


def params(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


def same(a, b):
    return all(torch.equal(u, v) for u, v in zip(a, b))


# ---- the 2 + 2k pass schedule -----------------------------------------------------------
@pytest.mark.parametrize("cg_start", ["warm", "zero"])
def test_pass_count_is_2_plus_2k(float64, monkeypatch, cg_start):
    """CGDs' warm start: 2 + 2k passes (1 + 2k on the first step); the default zero start 1 + 2k."""
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ref = CGDs.ACGD(max_params=D2.parameters(), min_params=G2.parameters(), lr_max=1e-2, lr_min=1e-2,
                    tol=1e-14, collect_info=True)
    opt = fastgame.ACGD(max_params=D.parameters(), min_params=G.parameters(), lr_max=1e-2, lr_min=1e-2, tol=1e-14,
                        **({"cg_start": cg_start} if cg_start == "warm" else {}))  # zero: the default
    calls = []
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls.append(kwargs.get("create_graph", False))
        return real_grad(*args, **kwargs)

    for t, (real, z) in enumerate(batches[:4]):
        ref.step(gan_loss(G2, D2, real, z))
        calls.clear()
        monkeypatch.setattr(torch.autograd, "grad", counting_grad)
        opt.step(gan_loss(G, D, real, z))
        monkeypatch.setattr(torch.autograd, "grad", real_grad)
        k = ref.info["iter_num"]
        assert k >= 2 and (opt.info["iter_num"] == k or cg_start == "zero")
        k = opt.info["iter_num"]
        assert calls.count(True) == 1  # one create_graph backward for both players
        assert calls.count(False) == (1 if t == 0 or cg_start == "zero" else 2) + 2 * k
        assert opt.info["hvp_passes"] == calls.count(False)


# ---- closures, unused parameters, schedulers ----------------------------------------------
@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_closure_equals_loss(cls):
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    a = cls(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2)
    b = cls(D2.parameters(), G2.parameters(), lr_max=1e-2, lr_min=1e-2)
    for real, z in batches[:3]:
        a.step(gan_loss(G, D, real, z))
        returned = b.step(lambda: gan_loss(G2, D2, real, z))
        assert isinstance(returned, torch.Tensor) and returned.dim() == 0
    assert same(params(D, G), params(D2, G2))


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_unused_parameter_gets_zero_update(cls):
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    unused_max = torch.nn.Parameter(torch.randn(4))
    unused_min = torch.nn.Parameter(torch.randn(2, 3))
    before = (unused_max.detach().clone(), unused_min.detach().clone())
    a = cls(list(D.parameters()) + [unused_max], [unused_min] + list(G.parameters()), lr_max=1e-2, lr_min=1e-2)
    b = cls(D2.parameters(), G2.parameters(), lr_max=1e-2, lr_min=1e-2)
    for real, z in batches[:3]:
        a.step(gan_loss(G, D, real, z))
        b.step(gan_loss(G2, D2, real, z))
    assert torch.equal(unused_max, before[0]) and torch.equal(unused_min, before[1])
    for p, q in zip(params(D, G), params(D2, G2)):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_players_that_do_not_interact():
    """f = x² - y² has zero mixed blocks: ACGD reduces to RMSProp-scaled GDA."""
    x = torch.tensor([1.0], requires_grad=True)
    y = torch.tensor([2.0], requires_grad=True)
    opt = fastgame.BCGD([x], [y], lr_max=0.1, lr_min=0.1)
    opt.step(-(x ** 2).sum() + (y ** 2).sum())  # max player wants large -x², i.e. x -> 0
    torch.testing.assert_close(x.detach(), torch.tensor([1.0 - 0.1 * 2.0]))
    torch.testing.assert_close(y.detach(), torch.tensor([2.0 - 0.1 * 4.0]))


def test_param_groups_and_lr_scheduler():
    G, D, batches = make_case()
    opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=0.1, lr_min=0.2)
    assert [g["player"] for g in opt.param_groups] == ["max", "min"]
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    for real, z in batches[:2]:
        opt.step(gan_loss(G, D, real, z))
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.05)


def test_reflattens_after_module_cast():
    """Re-binding parameter storage (module.double()) is noticed; state follows the cast."""
    G, D, batches = make_case()
    opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2)
    opt.step(gan_loss(G, D, *batches[0]))
    G.double(), D.double()
    real, z = batches[1]
    before = params(D, G)
    opt.step(gan_loss(G, D, real.double(), z.double()))
    assert opt.state["max"]["square_avg"].dtype == torch.float64
    assert not same(before, params(D, G))


# ---- state ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_state_dict_is_a_copy_and_round_trips(cls):
    G, D, batches = make_case()
    kw = {"momentum": 0.5} if cls is fastgame.BCGD else {}  # so both keep per-player state (BCGD: its buffer)
    opt = cls(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2, **kw)
    for real, z in batches[:3]:
        opt.step(gan_loss(G, D, real, z))
    sd = opt.state_dict()
    assert sd["state"]["game"] == {"step": 3, "solve_x": True}
    assert sd["state"]["max"]
    for t in sd["state"]["max"].values():
        t.add_(1.0)  # mutating the copy must not touch the optimizer
    assert not state_equal(sd["state"], opt.state_dict()["state"])

    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    opt_copy = cls(D2.parameters(), G2.parameters(), lr_max=1.0, lr_min=1.0)
    opt_copy.load_state_dict(opt.state_dict())
    assert opt_copy.param_groups[0]["lr"] == 1e-2 and opt_copy.param_groups[0].get("momentum") == kw.get("momentum")
    for real, z in batches[3:6]:
        opt.step(gan_loss(G, D, real, z))
        opt_copy.step(gan_loss(G2, D2, real, z))
    assert same(params(D, G), params(D2, G2))


CHILD = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    import fastgame
    from tests.test_optimizer_api import make_case
    from bench.models import gan_loss
    G, D, batches = make_case()
    ckpt = torch.load({path!r}, weights_only=False)
    G.load_state_dict(ckpt["G"]); D.load_state_dict(ckpt["D"])
    opt = fastgame.{cls}(D.parameters(), G.parameters())
    opt.load_state_dict(ckpt["opt"])
    for real, z in batches[3:8]:
        opt.step(gan_loss(G, D, real, z))
    torch.save([p.detach() for m in (D, G) for p in m.parameters()], {out!r})
""")


@pytest.mark.parametrize("cls", ["ACGD", "BCGD"])
def test_state_survives_a_new_process_bit_for_bit(tmp_path, cls):
    G, D, batches = make_case()
    opt = getattr(fastgame, cls)(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=2e-2)
    for real, z in batches[:3]:
        opt.step(gan_loss(G, D, real, z))
    path, out = str(tmp_path / "ckpt.pt"), str(tmp_path / "out.pt")
    torch.save({"G": G.state_dict(), "D": D.state_dict(), "opt": opt.state_dict()}, path)
    for real, z in batches[3:8]:  # both solve phases after the checkpoint
        opt.step(gan_loss(G, D, real, z))
    code = CHILD.format(root=ROOT, path=path, out=out, cls=cls)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert same(params(D, G), torch.load(out))


def test_load_state_dict_rejects_mismatch_and_changes_nothing():
    G, D, batches = make_case()
    opt = fastgame.ACGD(D.parameters(), G.parameters())
    opt.step(gan_loss(G, D, *batches[0]))
    before = opt.state_dict()
    bad = opt.state_dict()
    bad["state"]["max"]["square_avg"] = torch.zeros(3)
    with pytest.raises(ValueError, match="max.square_avg"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="state_dict"):
        opt.load_state_dict({"nonsense": 1})
    other = fastgame.ACGD([torch.nn.Parameter(torch.ones(2))], G.parameters())
    with pytest.raises(ValueError, match="number of parameters"):
        opt.load_state_dict(other.state_dict())
    assert state_equal(before, opt.state_dict())


# ---- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_construction_errors(cls):
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="both"):
        cls([a, b], [b])
    with pytest.raises(ValueError, match="empty"):
        cls([], [a])
    with pytest.raises(ValueError, match="empty"):
        cls([a], iter([]))
    with pytest.raises(ValueError, match="more than once"):
        cls([a, a], [b])
    with pytest.raises(ValueError, match="require grad"):
        cls([torch.ones(2)], [b])
    with pytest.raises(ValueError, match="single Tensor"):
        cls(a, [b])
    with pytest.raises(ValueError, match="lr_max"):
        cls([a], [b], lr_max=-1.0)
    with pytest.raises(ValueError, match="tol"):
        cls([a], [b], tol=float("nan"))
    with pytest.raises(ValueError, match="max_iter"):
        cls([a], [b], max_iter=-2)
    with pytest.raises(ValueError, match="mixes dtypes"):
        cls([a, torch.nn.Parameter(torch.ones(2, dtype=torch.float64))], [b])


def test_hyperparameter_errors():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="beta"):
        fastgame.ACGD([a], [b], beta=1.0)
    with pytest.raises(ValueError, match="eps"):
        fastgame.ACGD([a], [b], eps=-1e-8)
    with pytest.raises(ValueError, match="update_max"):
        fastgame.BCGD([a], [b], update_max="yes")


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_step_input_errors_change_nothing(cls):
    G, D, batches = make_case()
    opt = cls(D.parameters(), G.parameters())
    opt.step(gan_loss(G, D, *batches[0]))
    state, ps = opt.state_dict(), params(D, G)
    real, z = batches[1]
    with pytest.raises(ValueError, match="scalar"):
        opt.step(D(real))
    with pytest.raises(ValueError, match="no autograd graph"):
        opt.step(gan_loss(G, D, real, z).detach())
    with pytest.raises(ValueError, match="scalar Tensor"):
        opt.step(3.0)
    with torch.no_grad():
        with pytest.raises(ValueError, match="no autograd graph"):
            opt.step(gan_loss(G, D, real, z))
    assert state_equal(state, opt.state_dict()) and same(ps, params(D, G))


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("stage", ["loss", "gradient", "hvp"])
def test_non_finite_step_raises_and_changes_nothing(cls, stage):
    torch.manual_seed(0)
    x = torch.nn.Parameter(torch.randn(3))
    y = torch.nn.Parameter(torch.randn(2))
    A = torch.randn(3, 2)

    def loss():
        if stage == "loss":
            return x @ A @ y * float("nan")
        if stage == "gradient":  # d/dx sqrt(x² - x²) at 0 is inf·0 = nan; the loss is 0
            return x @ A @ y + torch.sqrt((x * x - x.detach() ** 2).sum())
        return x @ A @ NanInDoubleBackward.apply(y)

    opt = cls([x], [y], lr_max=0.1, lr_min=0.1)
    opt.step(x @ A @ y)
    state, ps = opt.state_dict(), [x.detach().clone(), y.detach().clone()]
    match = {"loss": "loss", "gradient": "gradient of the max player", "hvp": "HVP"}[stage]
    with pytest.raises(FloatingPointError, match=match):
        opt.step(loss())
    assert state_equal(state, opt.state_dict())
    assert same(ps, [x.detach(), y.detach()])
    opt.step(x @ A @ y)  # and it still works
    assert opt.state_dict()["state"]["game"]["step"] == 2


# ---- per-optimizer backend --------------------------------------------------------------
@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD, fastgame.GACGD])
def test_backend_per_optimizer(cls, monkeypatch):
    """backend= picks the fused ops for one optimizer (like fused= in torch.optim), without
    the process-wide setting; the torch twins then run, and the numbers agree with auto."""
    from fastgame.ops import reference
    calls = []
    for name in ("precondition", "cg_step_"):
        real = getattr(reference, name)
        monkeypatch.setattr(reference, name, lambda *a, _real=real, _n=name, **k: calls.append(_n) or _real(*a, **k))
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    lrs = dict(lr_x=1e-2, lr_y=1e-2) if cls is fastgame.GACGD else dict(lr_max=1e-2, lr_min=1e-2)
    twin = cls(D2.parameters(), G2.parameters(), **lrs, backend="torch")
    opt = cls(D.parameters(), G.parameters(), **lrs)
    compiled = fastgame.backends()["cpp"].available  # else auto falls back to the torch twins too
    for real, z in batches[:3]:
        for o, g, d in ((opt, G, D), (twin, G2, D2)):
            loss = gan_loss(g, d, real, z)
            before = len(calls)
            o.step(loss, -loss) if cls is fastgame.GACGD else o.step(loss)
            if o is twin:
                assert len(calls) > before  # the twin ran the torch twins of the fused ops
            elif compiled:
                assert len(calls) == before  # the auto optimizer did not
    assert fastgame.get_backend() == "auto"
    torch.testing.assert_close(params(D2, G2), params(D, G), rtol=1e-4, atol=1e-6)
    copied = copy.deepcopy(twin)
    assert copied.backend == "torch"
    with pytest.raises(ValueError, match="nope"):
        cls(D.parameters(), G.parameters(), backend="nope")


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_zero_start_solves_the_same_system(cls, float64):
    """cg_start="zero" starts CG from zero (one pass fewer); at a tight tolerance the steps
    equal CGDs' warm-started ones to what the tolerance implies."""
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ref = getattr(CGDs, cls.__name__)(max_params=D2.parameters(), min_params=G2.parameters(),
                                      lr_max=1e-2, lr_min=1e-2, tol=1e-20)
    opt = cls(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2, tol=1e-20, cg_start="zero")
    for real, z in batches[:4]:
        opt.step(gan_loss(G, D, real, z))
        ref.step(gan_loss(G2, D2, real, z))
        # collect_info (BCGD's default, as CGDs') adds the one pass of CGDs' hvp_x/hvp_y the solve lacks
        assert opt.info["hvp_passes"] == 1 + 2 * opt.info["iter_num"] + int(opt.collect_info)
    torch.testing.assert_close(params(D, G), params(D2, G2), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("older, expected", [({}, "warm"), ({"warm_start": True}, "warm"),
                                              ({"warm_start": False}, "zero")])
def test_state_dict_of_an_older_version_loads(older, expected):
    """A dict saved before cg_start existed resumes with the start it was saved with: warm (the
    only one then, CGDs'), or what the short-lived bool ``warm_start`` hyperparameter said;
    whatever the loading optimizer was built with."""
    G, D, batches = make_case()
    for own in ("zero", "recycle", "warm"):
        # older versions kept the warm starts in the state whatever they started from
        saver = fastgame.ACGD(D.parameters(), G.parameters(), cg_start="warm")
        saver.step(gan_loss(G, D, *batches[0]))
        sd = saver.state_dict()
        for g in sd["param_groups"]:
            del g["cg_start"]
            g.update(older)
        opt = fastgame.ACGD(D.parameters(), G.parameters(), cg_start=own)
        opt.load_state_dict(sd)
        assert [g["cg_start"] for g in opt.param_groups] == [expected, expected]
        opt.step(gan_loss(G, D, *batches[1]))
        assert opt.info["hvp_passes"] == (2 if expected == "warm" else 1) + 2 * opt.info["iter_num"]


def test_recycled_deflation_solves_the_same_system():
    """cg_start="recycle": deflated CG from recycled Ritz vectors (mapped to the other player)
    gives the plain CG solution to tolerance with fewer iterations on a system with outlying
    eigenvalues, in float32 too (the residual is kept orthogonal to the deflation space)."""
    from fastgame.linalg.cg import Preconditioner, solve_cgd
    from fastgame.linalg.recycle import solve_cgd_recycled
    for dtype, rtol in ((torch.float64, 1e-6), (torch.float32, 1e-4)):
        g = torch.Generator().manual_seed(0)
        D = torch.randn(120, 90, generator=g, dtype=dtype) / 10
        D[:, :3] *= 30  # three outlying singular values

        class Products:  # the mixed blocks of a bilinear game: D_xy = D, D_yx = Dᵀ
            passes = 0

            def __call__(self, to, v):
                return D @ v if to == 0 else D.T @ v

            def batched(self, to, V):
                return V @ D.T if to == 0 else V @ D
        ga, gb = torch.randn(120, generator=g, dtype=dtype), torch.randn(90, generator=g, dtype=dtype)
        eta = torch.tensor(0.5, dtype=dtype)
        pre = [Preconditioner(eta, eta.sqrt(), eta * ga), Preconditioner(eta, eta.sqrt(), eta * gb)]
        _, keep, _ = solve_cgd_recycled(Products(), 0, (ga, gb), pre, None, 1e-20, 0.0)
        assert keep.shape == (3, 90)  # the outliers, as the other player's vectors
        sol, _, products = solve_cgd_recycled(Products(), 1, (ga, gb), pre, keep, 1e-12, 0.0)
        ref = solve_cgd(Products(), 1, (ga, gb), pre, None, 1e-12, 0.0)
        assert sol.iterations < ref.iterations - 3
        assert products == 1 + 2 * 3 + 2 * sol.iterations
        for d, r in zip(sol.delta, ref.delta):
            torch.testing.assert_close(d, r, rtol=rtol, atol=rtol * r.abs().max().item())


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_recycle_trains_and_round_trips(cls, tmp_path):
    """The recycled vectors live in the state: a state_dict round trip continues bit for bit."""
    G, D, batches = make_case()
    # rates at which each method's system has Ritz values above 10 (BCGD's scalar step needs more)
    lr = 5e-2 if cls is fastgame.ACGD else 5.0
    opt = cls(D.parameters(), G.parameters(), lr_max=lr, lr_min=lr, cg_start="recycle")
    for real, z in batches[:3]:
        opt.step(gan_loss(G, D, real, z))
    assert "hvp_products" in opt.info and "deflated" in opt.info
    assert sum(opt.state[n]["ritz"].shape[0] for n in ("max", "min")) > 0  # there are vectors to round-trip
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    twin = cls(D2.parameters(), G2.parameters(), cg_start="recycle")
    torch.save(opt.state_dict(), tmp_path / "sd.pt")
    twin.load_state_dict(torch.load(tmp_path / "sd.pt"))
    for real, z in batches[3:6]:
        opt.step(gan_loss(G, D, real, z))
        twin.step(gan_loss(G2, D2, real, z))
    assert same(params(D, G), params(D2, G2))
    with pytest.raises(ValueError, match="not capturable"):
        cls(D.parameters(), G.parameters(), cg_start="recycle", capturable=True, max_iter=4)
    with pytest.raises(ValueError, match="cg_start"):
        cls(D.parameters(), G.parameters(), cg_start="cold")


@pytest.mark.parametrize("cg_start", ["zero", "warm", "recycle"])
@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD])
def test_zero_gradient_with_zero_tolerances_takes_no_iteration(cls, cg_start):
    """At a stationary point with tol = atol = 0 the residual is exactly 0: CG stops at once
    (0/0 in its direction update would otherwise poison the step with NaN)."""
    x = torch.zeros(3, requires_grad=True)
    y = torch.zeros(2, requires_grad=True)
    A = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    opt = cls([x], [y], tol=0.0, atol=0.0, cg_start=cg_start)
    for _ in range(2):
        opt.step(lambda: x @ A @ y)
    assert opt.get_info()["iter_num"] == 0
    assert torch.equal(x, torch.zeros(3)) and torch.equal(y, torch.zeros(2))
