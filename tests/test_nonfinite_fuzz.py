"""A non-finite value injected at every stage of a step — the loss, each player's gradient,
each mixed HVP call in turn (right-hand side, warm-start pair, every CG/GMRES iteration) —
must raise FloatingPointError (eager) or skip the step on the device (capturable), with no
parameter and no optimizer state changed, and the optimizer must go on exactly as a twin
that never saw the bad step. For ACGD, BCGD and GACGD, both solve phases, cold and warm
starts."""
import contextlib
import copy

import pytest
import torch

import fastgame
from fastgame.linalg.hvp import MixedHVP
from tests.helpers import NanGradient, snapshot, state_equal

BAD = [float("nan"), float("inf")]


@contextlib.contextmanager
def corrupt_hvp(k, value):
    """Make the k-th mixed-HVP call of the block (counting from 0; batched calls count once)
    return ``value`` in one element; yields the list whose [0] counts the calls made."""
    calls = [0]
    saved = MixedHVP.__call__, MixedHVP.batched

    def wrap(orig):
        def product(self, *args):
            out = orig(self, *args)
            if calls[0] == k:
                out = out.clone()
                out.view(-1)[-1] = value
            calls[0] += 1
            return out
        return product

    MixedHVP.__call__, MixedHVP.batched = wrap(saved[0]), wrap(saved[1])
    try:
        yield calls
    finally:
        MixedHVP.__call__, MixedHVP.batched = saved


def game(nx, ny, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.Parameter(torch.randn(nx, generator=g, dtype=torch.float64))
    y = torch.nn.Parameter(torch.randn(ny, generator=g, dtype=torch.float64))
    A = torch.randn(nx, ny, generator=g, dtype=torch.float64)
    B = torch.randn(nx, ny, generator=g, dtype=torch.float64)

    def f(x, y, bad_grad=None):
        if bad_grad == "x":
            x = NanGradient.apply(x)
        if bad_grad == "y":
            y = NanGradient.apply(y)
        return x @ A @ y + torch.tanh(x) @ B @ torch.sin(y) + 0.1 * (x * x).sum() - 0.1 * (y * y).sum()
    return x, y, f


def make(cls, solve_x, capturable, warm_start, nx=3, ny=2, cg_start="warm"):
    x, y, f = game(nx, ny)
    if cls is fastgame.GACGD:
        opt = cls([x], [y], lr_x=0.1, lr_y=0.1, warm_start=warm_start)
    else:
        kw = dict(capturable=True, max_iter=8) if capturable else {}
        # lr 2: the mixed block's outliers exceed the recycling threshold, so "recycle" deflates
        lr = 2.0 if cg_start == "recycle" else 0.1
        opt = cls([x], [y], lr_max=lr, lr_min=lr, solve_x=solve_x, cg_start=cg_start, **kw)
    return x, y, f, opt


def do_step(opt, x, y, f, bad_loss=None, bad_grad=None):
    loss = f(x, y, bad_grad)
    if bad_loss is not None:
        loss = loss * bad_loss
    if isinstance(opt, fastgame.GACGD):
        return opt.step(loss, -f(x, y, bad_grad))
    return opt.step(loss)


def assert_unchanged(before, opt, x, y):
    """Parameters and the whole state_dict (state and param_groups) bit for bit as in ``before``."""
    sd, x0, y0 = before
    assert torch.equal(x.detach(), x0) and torch.equal(y.detach(), y0)
    assert state_equal(opt.state_dict(), sd)


def expect_refused(opt, x, y, f, match, **bad):
    """Take a bad step; check it raised (or was skipped) and changed nothing."""
    before = snapshot(opt, x, y)
    capturable = getattr(opt, "capturable", False)
    if capturable:
        do_step(opt, x, y, f, **bad)
        assert not bool(opt.info["finite"])
        with pytest.raises(FloatingPointError, match=match):
            opt.raise_if_nonfinite()
    else:
        with pytest.raises(FloatingPointError, match=match):
            do_step(opt, x, y, f, **bad)
    assert_unchanged(before, opt, x, y)


CONFIGS = [(cls, solve_x, capturable) for cls in (fastgame.ACGD, fastgame.BCGD)
           for solve_x in (False, True) for capturable in (False, True)]
CONFIG_IDS = [f"{c.__name__}-{'solve_min' if s else 'solve_max'}-{'capturable' if k else 'eager'}"
              for c, s, k in CONFIGS]


def warmed(cls, solve_x, capturable, start, warm_start=False, nx=3, ny=2, cg_start="warm"):
    """An optimizer about to take a cold (first) or warm (third) step."""
    x, y, f, opt = make(cls, solve_x, capturable, warm_start, nx, ny, cg_start)
    if start == "warm":
        do_step(opt, x, y, f)
        do_step(opt, x, y, f)  # the same phase as the first step comes next
    return x, y, f, opt


def check_then_continue(opt, x, y, f, twin):
    """After a refused step the optimizer steps exactly as its twin that never saw it."""
    tx, ty, topt = twin
    do_step(opt, x, y, f)
    do_step(topt, tx, ty, f)
    assert torch.equal(x.detach(), tx.detach()) and torch.equal(y.detach(), ty.detach())


@pytest.mark.parametrize("cg_start", ["warm", "zero", "recycle"])
@pytest.mark.parametrize("start", ["cold", "warm"])
@pytest.mark.parametrize("cls,solve_x,capturable", CONFIGS, ids=CONFIG_IDS)
def test_cgd_every_hvp_call(cls, solve_x, capturable, start, cg_start):
    if capturable and cg_start == "recycle":
        pytest.skip("cg_start='recycle' is not capturable")
    x, y, f, opt = warmed(cls, solve_x, capturable, start, cg_start=cg_start)
    if cg_start == "recycle" and start == "warm":
        assert opt.state_dict()["state"][opt.players[int(solve_x)].name]["ritz"].shape[0] > 0
    twin = copy.deepcopy((x, y, opt))
    with corrupt_hvp(-1, 0.0) as calls:  # count the calls of a clean step
        probe_x, probe_y, probe = copy.deepcopy((x, y, opt))
        do_step(probe, probe_x, probe_y, f)
    n_calls = calls[0]
    assert n_calls >= 3  # right-hand side (or warm-start pair) and at least one CG iteration
    for k in range(n_calls):
        for value in BAD:
            with corrupt_hvp(k, value):
                expect_refused(opt, x, y, f, "HVP")
    check_then_continue(opt, x, y, f, twin)


@pytest.mark.parametrize("start", ["cold", "warm"])
@pytest.mark.parametrize("cls,solve_x,capturable", CONFIGS, ids=CONFIG_IDS)
def test_cgd_loss_and_gradients(cls, solve_x, capturable, start):
    x, y, f, opt = warmed(cls, solve_x, capturable, start)
    twin = copy.deepcopy((x, y, opt))
    for value in BAD:
        expect_refused(opt, x, y, f, "loss", bad_loss=value)
    expect_refused(opt, x, y, f, "gradient of the max player", bad_grad="x")
    expect_refused(opt, x, y, f, "gradient of the min player", bad_grad="y")
    check_then_continue(opt, x, y, f, twin)


@pytest.mark.parametrize("warm_start", [False, True])
@pytest.mark.parametrize("sizes", [(3, 2), (2, 3)], ids=["schur_on_y", "schur_on_x"])
@pytest.mark.parametrize("start", ["cold", "warm"])
def test_gacgd_every_stage(sizes, warm_start, start):
    x, y, f, opt = warmed(fastgame.GACGD, False, False, start, warm_start, *sizes)
    twin = copy.deepcopy((x, y, opt))
    probe_x, probe_y, probe = copy.deepcopy((x, y, opt))
    with corrupt_hvp(-1, 0.0) as calls:
        do_step(probe, probe_x, probe_y, f)
    n_calls = calls[0]
    assert n_calls >= 3
    for k in range(n_calls):
        for value in BAD:
            with corrupt_hvp(k, value):
                expect_refused(opt, x, y, f, "HVP")
    for value in BAD:
        expect_refused(opt, x, y, f, "loss_x", bad_loss=value)
    expect_refused(opt, x, y, f, "gradient of player x", bad_grad="x")
    expect_refused(opt, x, y, f, "gradient of player y", bad_grad="y")
    check_then_continue(opt, x, y, f, twin)


@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD])
def test_natural_nan_in_mixed_hvp_only(cls):
    """A NaN that arises naturally only in the mixed HVP: at x = y = 0 the loss
    x·y + Σx − Σy + ‖x − y‖ and its gradients are finite (autograd's norm subgradient at 0),
    but the second derivative of ‖x − y‖ there is 0/0. The step must raise and change nothing."""
    for solve_x in (False, True):
        x = torch.zeros(3, requires_grad=True)
        y = torch.zeros(3, requires_grad=True)
        opt = cls([x], [y], lr_max=.1, lr_min=.1, solve_x=solve_x)
        with pytest.raises(FloatingPointError, match="HVP"):
            opt.step(x @ y + x.sum() - y.sum() + torch.linalg.vector_norm(x - y))
        assert not x.any() and not y.any() and opt.state_dict()["state"]["game"]["step"] == 0


def test_natural_nan_in_mixed_hvp_only_gacgd():
    x = torch.zeros(3, requires_grad=True)
    y = torch.zeros(3, requires_grad=True)
    opt = fastgame.GACGD([x], [y], lr_x=.1, lr_y=.1)
    f = x @ y + x.sum() - y.sum() + torch.linalg.vector_norm(x - y)
    with pytest.raises(FloatingPointError, match="HVP"):
        opt.step(f, -f)
    assert not x.any() and not y.any()


@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD])
@pytest.mark.parametrize("how", ["eps0", "huge_lr", "nan_lr_group"])
def test_non_finite_update_is_refused(cls, how):
    """The update and step sizes are checked before the commit (eps=0 with a zero
    gradient entry, an lr that overflows); an invalid lr set through param_groups is a
    ValueError at the next step."""
    x = torch.ones(2, requires_grad=True)
    y = torch.ones(2, requires_grad=True)
    kw = dict(lr_max=.1, lr_min=.1)
    if how == "eps0":
        if cls is fastgame.BCGD:
            pytest.skip("BCGD has no eps")
        kw["eps"] = 0.0
    if how == "huge_lr":
        kw["lr_max"] = 1e300
    opt = cls([x], [y], **kw)
    if how == "nan_lr_group":
        opt.param_groups[0]["lr"] = float("nan")
        with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\]"):
            opt.step(x[0] * y.sum())
    else:
        with pytest.raises(FloatingPointError, match="step sizes|update"):
            opt.step(x[0] * y.sum())
    assert torch.equal(x.detach(), torch.ones(2)) and torch.equal(y.detach(), torch.ones(2))
    assert opt.state_dict()["state"]["game"]["step"] == 0
