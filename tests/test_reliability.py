"""Everyday operations a hostile user tries: copies, pickles, stale losses, invalid values
set through param_groups or a state_dict, a skipped capturable step, shared storage, shape
changes. Each either works as with torch.optim or raises a clear error with nothing changed."""
import copy
import io
import pickle

import pytest
import torch

import fastgame
from tests.helpers import snapshot, state_equal

ALL = [fastgame.ACGD, fastgame.BCGD, fastgame.GACGD]


def make(cls, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.Parameter(torch.randn(3, generator=g))
    y = torch.nn.Parameter(torch.randn(2, generator=g))
    A = torch.randn(3, 2, generator=g)
    lrs = dict(lr_x=0.1, lr_y=0.1) if cls is fastgame.GACGD else dict(lr_max=0.1, lr_min=0.1)
    return x, y, A, cls([x], [y], **lrs, **kw)


def loss_of(opt, x, y, A):
    f = x @ A @ y + 0.1 * torch.tanh(x).sum() * y.sum()
    return (f, -f) if isinstance(opt, fastgame.GACGD) else (f,)


def step(opt, x, y, A):
    return opt.step(*loss_of(opt, x, y, A))


def unchanged(opt, x, y, before):
    sd, x0, y0 = before
    return (torch.equal(x.detach(), x0) and torch.equal(y.detach(), y0)
            and state_equal(sd, opt.state_dict()))


# ---- copies -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_work_and_are_independent(cls, how):
    x, y, A, opt = make(cls)
    step(opt, x, y, A)
    if how == "deepcopy":
        cx, cy, copied = copy.deepcopy((x, y, opt))
    elif how == "pickle":
        cx, cy, copied = pickle.loads(pickle.dumps((x, y, opt)))
    else:
        buf = io.BytesIO()
        torch.save((x, y, opt), buf)
        buf.seek(0)
        cx, cy, copied = torch.load(buf, weights_only=False)
    assert copied.param_groups[0]["params"][0] is cx
    x_before = x.detach().clone()
    for _ in range(3):
        step(copied, cx, cy, A)  # the copy optimises the copied parameters ...
    assert torch.equal(x.detach(), x_before)  # ... and leaves the original alone
    for _ in range(3):
        step(opt, x, y, A)
    assert torch.equal(cx.detach(), x.detach()) and torch.equal(cy.detach(), y.detach())
    assert state_equal(copied.state_dict(), opt.state_dict())


# ---- stale losses, closures under no_grad ---------------------------------------------------
@pytest.mark.parametrize("cls", ALL)
def test_stale_loss_is_refused(cls):
    x, y, A, opt = make(cls)
    losses = loss_of(opt, x, y, A)
    opt.step(*losses)
    before = snapshot(opt, x, y)
    with pytest.raises(ValueError, match="already used by a previous step"):
        opt.step(*losses)
    assert unchanged(opt, x, y, before)
    step(opt, x, y, A)  # a fresh loss works


def test_loss_of_a_failed_step_may_be_retried():
    """A step refused for bad input changed nothing, so its loss is not stale."""
    x, y, A, opt = make(fastgame.ACGD)
    loss = loss_of(opt, x, y, A)[0]
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step(loss)
    opt.param_groups[1]["lr"] = 0.1
    opt.step(loss)


@pytest.mark.parametrize("cls", ALL)
def test_closure_under_no_grad(cls):
    x, y, A, opt = make(cls)
    x2, y2, _, twin = make(cls)
    with torch.no_grad():
        opt.step(lambda: loss_of(opt, x, y, A) if cls is fastgame.GACGD else loss_of(opt, x, y, A)[0])
    step(twin, x2, y2, A)
    assert torch.equal(x.detach(), x2.detach()) and torch.equal(y.detach(), y2.detach())


# ---- hyperparameters through param_groups ---------------------------------------------------
@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("key,value", [("lr", float("nan")), ("lr", -1.0), ("lr", float("inf")),
                                       ("tol", -1.0), ("max_iter", -3), ("beta", 1.0), ("eps", -1.0),
                                       ("momentum", 1.0), ("restart", 0)])
def test_invalid_group_values_are_refused_at_the_next_step(cls, key, value):
    x, y, A, opt = make(cls)
    if key not in opt.param_groups[0]:
        pytest.skip(f"{cls.__name__} has no {key}")
    step(opt, x, y, A)
    before = snapshot(opt, x, y)
    for g in opt.param_groups if key in ("tol", "max_iter", "restart") else opt.param_groups[:1]:
        g[key] = value
    with pytest.raises(ValueError, match=key):
        step(opt, x, y, A)
    for g in opt.param_groups:
        g[key] = before[0]["param_groups"][0][key]
    assert unchanged(opt, x, y, before)
    step(opt, x, y, A)


@pytest.mark.parametrize("cls", ALL)
def test_game_wide_values_must_agree(cls):
    x, y, A, opt = make(cls)
    opt.param_groups[1]["tol"] = 1e-3
    with pytest.raises(ValueError, match="'tol' is game-wide"):
        step(opt, x, y, A)


def test_per_player_eps_and_beta_are_used():
    """ACGD's eps/beta may differ per player: each player's step sizes use its own group."""
    x, y, A, opt = make(fastgame.ACGD, beta=0.9)
    opt.param_groups[1]["beta"] = 0.5
    step(opt, x, y, A)
    sd = opt.state_dict()["state"]
    x2, y2, _, ref = make(fastgame.ACGD, beta=0.9)
    loss = loss_of(ref, x2, y2, A)[0]
    gx, gy = torch.autograd.grad(loss, [x2, y2])
    torch.testing.assert_close(sd["max"]["square_avg"], 0.1 * gx * gx)
    torch.testing.assert_close(sd["min"]["square_avg"], 0.5 * gy * gy)


@pytest.mark.parametrize("cls", ALL)
def test_add_param_group_is_refused(cls):
    x, y, A, opt = make(cls)
    with pytest.raises(ValueError, match="add_param_group is not supported"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))]})
    assert len(opt.param_groups) == 2


# ---- load_state_dict ----------------------------------------------------------------------
def _bad_dicts(cls, good):
    p0 = "max" if cls is not fastgame.GACGD else "x"
    out = []

    def edit(label, fn):
        sd = copy.deepcopy(good)
        fn(sd)
        out.append((label, sd))

    edit("no game entry", lambda sd: sd["state"].pop("game"))
    edit("lr nan", lambda sd: sd["param_groups"][0].update(lr=float("nan")))
    edit("tol -1", lambda sd: [g.update(tol=-1.0) for g in sd["param_groups"]])
    edit("negative step", lambda sd: sd["state"]["game"].update(step=-2))
    edit("float step", lambda sd: sd["state"]["game"].update(step=1.5))
    edit("int tensor", lambda sd: sd["state"][p0].update(warm_start=sd["state"][p0]["warm_start"].long()))
    edit("wrong shape", lambda sd: sd["state"][p0].update(warm_start=sd["state"][p0]["warm_start"].view(3, 1)))
    edit("nan in state", lambda sd: sd["state"][p0]["warm_start"].fill_(float("nan")))
    edit("unknown state", lambda sd: sd["state"][p0].update(exp_avg=torch.zeros(3)))
    edit("unknown entry", lambda sd: sd["state"].update(extra={}))
    if cls is not fastgame.BCGD:
        edit("negative square_avg", lambda sd: sd["state"][p0]["square_avg"].fill_(-1.0))
    else:
        edit("momentum 1", lambda sd: sd["param_groups"][0].update(momentum=1.0))
    if cls is not fastgame.GACGD:
        edit("solve_x not bool", lambda sd: sd["state"]["game"].update(solve_x="yes"))
    return out


@pytest.mark.parametrize("cls", ALL)
def test_load_state_dict_validates_everything_first(cls):
    warm = {"warm_start": True} if cls is fastgame.GACGD else {"cg_start": "warm"}  # so the state holds warm starts to corrupt
    x, y, A, opt = make(cls, **warm)
    for _ in range(2):
        step(opt, x, y, A)
    good = opt.state_dict()
    x2, y2, _, target = make(cls, seed=1, **warm)
    step(target, x2, y2, A)
    for label, bad in _bad_dicts(cls, good):
        before = snapshot(target, x2, y2)
        with pytest.raises(ValueError):
            target.load_state_dict(bad)
        assert unchanged(target, x2, y2, before), label
    step(target, x2, y2, A)  # still works
    target.load_state_dict(good)  # and the good dict loads


@pytest.mark.parametrize("src,dst", [(fastgame.BCGD, fastgame.ACGD), (fastgame.ACGD, fastgame.BCGD),
                                     (fastgame.ACGD, fastgame.GACGD), (fastgame.GACGD, fastgame.ACGD)])
def test_another_optimizers_state_dict_is_refused(src, dst):
    x, y, A, opt = make(src)
    step(opt, x, y, A)
    x2, y2, _, target = make(dst)
    before = snapshot(target, x2, y2)
    with pytest.raises(ValueError, match="another optimizer|lacks|keeps"):
        target.load_state_dict(opt.state_dict())
    assert unchanged(target, x2, y2, before)
    step(target, x2, y2, A)


# ---- capturable: a skipped step changes nothing on the host either ---------------------------
@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD])
def test_skipped_capturable_step_keeps_the_solve_phase(cls):
    x, y, A, opt = make(cls, capturable=True, max_iter=6)
    x2, y2, _, eager = make(cls)
    step(opt, x, y, A)
    step(eager, x2, y2, A)
    phase = opt.state_dict()["state"]["game"]["solve_x"]
    opt.step(loss_of(opt, x, y, A)[0] * float("nan"))  # skipped on the device
    assert opt.state_dict()["state"]["game"]["solve_x"] == phase  # state_dict reads the verdict
    with pytest.raises(FloatingPointError, match="loss"):
        opt.raise_if_nonfinite()
    for _ in range(3):  # and the phases go on as the eager optimizer's, which raised
        step(opt, x, y, A)
        step(eager, x2, y2, A)
        assert opt.info["solved"] == eager.info["solved"]
    torch.testing.assert_close(x.detach(), x2.detach(), rtol=1e-5, atol=1e-6)


def test_replayed_step_that_was_skipped_keeps_the_phase():
    """The host half of a graph replay (what make_graphed_step calls on a GPU): the phase
    moves on optimistically and moves back when the verdict shows the step was skipped."""
    x, y, A, opt = make(fastgame.ACGD, capturable=True, max_iter=6)
    step(opt, x, y, A)  # stands for the capture
    names, flags = opt.verdict
    phase = opt.graph_phase()
    opt.replayed(dict(opt.info), (names, flags))
    assert opt.graph_phase() != phase
    flags[0] = False  # as if the replayed step's loss was non-finite
    with pytest.raises(FloatingPointError, match="skipped"):
        opt.raise_if_nonfinite()
    assert opt.graph_phase() == phase


# ---- parameters: dtypes, shared storage, shape changes ------------------------------------
@pytest.mark.parametrize("cls", ALL)
def test_players_of_different_dtypes_are_refused(cls):
    a = torch.nn.Parameter(torch.ones(2))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="players differ in dtype"):
        cls([a], [b])


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("where", ["same player", "across players"])
def test_parameters_sharing_storage_are_refused(cls, where):
    base = torch.zeros(6)
    a = torch.nn.Parameter(base[:3])
    b = torch.nn.Parameter(base[2:5])  # overlaps a in one element
    c = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="share memory"):
        cls([a, b], [c]) if where == "same player" else cls([a], [b])
    cls([torch.nn.Parameter(base[:3])], [torch.nn.Parameter(base[3:])])  # adjacent is fine


@pytest.mark.parametrize("cls", ALL)
def test_shape_change_is_refused_and_changes_nothing(cls):
    x, y, A, opt = make(cls)
    step(opt, x, y, A)
    x.data = torch.zeros(5)
    before = snapshot(opt, x, y)
    f = x.sum() * y.sum()
    with pytest.raises(ValueError, match="changed shape from"):
        opt.step(f, -f) if cls is fastgame.GACGD else opt.step(f)
    assert unchanged(opt, x, y, before)
    assert x.shape == (5,)


def test_momentum_error_names_momentum():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="momentum"):
        fastgame.BCGD([a], [b], momentum=1.0)


def test_get_info_before_any_step_is_the_references_and_silent(capsys):
    """Before a step, info holds CGDs 0.4.5's initial entries (CGDs' get_info also prints a warning)."""
    x, y, A, opt = make(fastgame.ACGD)
    assert opt.get_info() == {"grad_x": None, "grad_y": None, "hvp_x": None, "hvp_y": None, "cg_x": None,
                              "cg_y": None, "time": 0, "iter_num": 0}
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("cls", ALL)
def test_loss_whose_graph_was_freed_is_a_value_error(cls):
    x, y, A, opt = make(cls)
    losses = loss_of(opt, x, y, A)
    losses[0].backward()
    before = snapshot(opt, x, y)
    with pytest.raises(ValueError, match="graph was already freed"):
        opt.step(*losses)
    assert unchanged(opt, x, y, before)


@pytest.mark.parametrize("cls", ALL)
def test_empty_parameters_are_fine(cls):
    x, y, A, _ = make(cls)
    empty = torch.nn.Parameter(torch.empty(0, 4))
    lrs = dict(lr_x=0.1, lr_y=0.1) if cls is fastgame.GACGD else dict(lr_max=0.1, lr_min=0.1)
    opt = cls([x, empty], [y], **lrs)
    for _ in range(2):
        step(opt, x, y, A)
    assert empty.shape == (0, 4) and torch.isfinite(x).all()
