"""What code written against CGDs 0.4.5 reads and saves: ``info``/``get_info()`` under CGDs'
conditions, and its ``state_dict()`` checkpoints, loaded by fastgame and handed back."""
import contextlib
import copy
import io

import numpy as np
import pytest
import torch

import fastgame
from bench.models import gan_loss
from tests.helpers import flat, make_case, state_equal
from tests.test_gacgd import ns_losses

CGDs = pytest.importorskip("CGDs")
ZERO_SUM = {"ACGD": dict(lr_max=1e-2, lr_min=1e-2, tol=1e-20), "BCGD": dict(lr_max=1e-2, lr_min=1e-2, tol=1e-20)}
GENERAL = dict(lr_x=1e-2, lr_y=1e-2, tol=1e-12, atol=1e-20)


def build(lib, cls, G, D, **kw):
    """``lib.cls`` (CGDs or fastgame) on the case's players: D maximises (zero-sum); for GACGD
    G is x and D is y, each minimising its own loss."""
    if cls == "GACGD":
        return getattr(lib, cls)(G.parameters(), D.parameters(), **{**GENERAL, **kw})
    return getattr(lib, cls)(D.parameters(), G.parameters(), **{**ZERO_SUM[cls], **kw})


def step(cls, opt, G, D, batch):
    if cls == "GACGD":
        opt.step(*ns_losses(G, D, *batch))
    else:
        opt.step(gan_loss(G, D, *batch))


def quiet(fn, *args):
    """CGDs' load_state_dict prints the whole state."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def saved(obj, tmp_path, name):
    """``obj`` through torch.save to a file and torch.load back."""
    path = tmp_path / name
    torch.save(obj, path)
    return torch.load(path, weights_only=False)


# ---- info ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["ACGD", "BCGD"])
def test_zero_sum_info_has_the_references_entries(float64, cls):
    """With collect_info, every entry of CGDs' info, its type and value (to solver tolerance);
    without it, CGDs' entries stay None as in CGDs. fastgame's own entries come alongside."""
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ref, ours = build(CGDs, cls, G, D, collect_info=True), build(fastgame, cls, G2, D2, collect_info=True,
                                                                   cg_start="warm")
    assert ours.get_info() == ref.info
    for batch in batches[:4]:
        step(cls, ref, G, D, batch)
        step(cls, ours, G2, D2, batch)
        r, o = ref.get_info(), ours.get_info()
        assert set(r) <= set(o) and {"hvp_passes", "solved"} <= set(o)
        for key in ("grad_x", "grad_y", "hvp_x", "hvp_y", "cg_x", "cg_y"):
            assert type(o[key]) is float and o[key] == pytest.approx(r[key], rel=1e-8), key
        assert type(o["time"]) is float and type(o["iter_num"]) is int
        # CG iterations: the same system to 1e-20; rounding decides the last one
        assert abs(o["iter_num"] - r["iter_num"]) <= 1
    plain = build(fastgame, cls, G2, D2, collect_info=False)
    step(cls, plain, G2, D2, batches[5])
    assert all(plain.info[k] is None for k in ("grad_x", "grad_y", "hvp_x", "hvp_y", "cg_x", "cg_y"))
    assert plain.info["hvp_passes"] == 1 + 2 * plain.info["iter_num"]  # nothing computed for them


def test_gacgd_info_under_track_cond(float64):
    """track_cond(loss_x, step) is called as CGDs calls it; a tracked step sets ada_lr_x/y (numpy,
    equal to CGDs'), num_iter (iterations - 1) and errors (relative residuals, start first), kept
    through untracked steps. fastgame's GMRES iteration gains about two of CGDs' (see GACGD), so
    num_iter and errors differ in length; both end below the tolerance."""
    calls = {"ref": [], "ours": []}

    def track(name):
        def cond(loss_x, t):
            assert isinstance(loss_x, torch.Tensor) and loss_x.requires_grad
            calls[name].append(t)
            return t != 2
        return cond

    G, D, batches = make_case(latent=4)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ref, ours = build(CGDs, "GACGD", G, D, track_cond=track("ref")), build(fastgame, "GACGD", G2, D2,
                                                                          track_cond=track("ours"))
    assert ours.info == ref.info
    for t, batch in enumerate(batches[:3], start=1):
        step("GACGD", ref, G, D, batch)
        step("GACGD", ours, G2, D2, batch)
        r, o = ref.info, ours.info
        assert set(r) <= set(o)
        for key in ("ada_lr_x", "ada_lr_y"):
            assert isinstance(o[key], np.ndarray) and o[key].dtype == r[key].dtype
            np.testing.assert_allclose(o[key], r[key], rtol=1e-9)
        assert type(o["num_iter"]) is int and type(o["errors"]) is list
        assert len(o["errors"]) == o["num_iter"] + 2 and all(type(e) is float for e in o["errors"])
        assert o["errors"][-1] < GENERAL["tol"] and r["errors"][-1] < GENERAL["tol"]
        assert o["num_iter"] == o["iter_num"] - 1
        assert (r["num_iter"] + 1) / 2 - 1 <= o["num_iter"] + 1 <= r["num_iter"] + 1  # about half the iterations
        if t == 2:  # untracked: the entries of step 1 stay, as in CGDs
            assert o["errors"] == first_errors and r["errors"] == first_ref
        first_errors, first_ref = o["errors"], r["errors"]
    assert calls["ours"] == calls["ref"] == [1, 2, 3]


def test_gacgd_info_when_the_solve_is_skipped(float64):
    """CGDs skips GMRES when ‖b‖ < 1e-8 and reports num_iter 0 and errors 0; so does fastgame."""
    G, D, batches = make_case(latent=4)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ref = build(CGDs, "GACGD", G, D, lr_x=1e-10, lr_y=1e-10, track_cond=lambda x, y: True)
    ours = build(fastgame, "GACGD", G2, D2, lr_x=1e-10, lr_y=1e-10, track_cond=lambda x, y: True)
    step("GACGD", ref, G, D, batches[0])
    step("GACGD", ours, G2, D2, batches[0])
    assert (ours.info["num_iter"], ours.info["errors"]) == (ref.info["num_iter"], ref.info["errors"]) == (0, 0)


def test_track_cond_survives_copies():
    G, D, batches = make_case(latent=4)
    ours = fastgame.GACGD(G.parameters(), D.parameters(), track_cond=lambda x, y: True)
    twin = copy.deepcopy(ours)
    assert twin.track_cond is ours.track_cond


# ---- checkpoints ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["ACGD", "BCGD", "GACGD"])
def test_a_cgds_checkpoint_resumes_in_fastgame_and_back(float64, cls, tmp_path):
    """CGDs runs 3 steps and saves (torch.save to a file); fastgame loads and continues 3 steps,
    as CGDs continuing from the same file does; then fastgame saves in CGDs' format and CGDs
    continues from it as fastgame does. (CGDs' start of CG, so the runs agree to rounding.)"""
    latent = 4 if cls == "GACGD" else 3
    G, D, batches = make_case(latent=latent)
    own = {} if cls == "GACGD" else {"cg_start": "warm"}
    ref = build(CGDs, cls, G, D)
    for batch in batches[:3]:
        step(cls, ref, G, D, batch)
    ckpt = saved({"opt": ref.state_dict(), "G": G.state_dict(), "D": D.state_dict()}, tmp_path, "cgds.pt")
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ours = build(fastgame, cls, G2, D2, **own)
    ours.load_state_dict(ckpt["opt"])
    assert ours.state["game"]["step"] == 3
    quiet(ref.load_state_dict, ckpt["opt"])
    for batch in batches[3:6]:
        step(cls, ref, G, D, batch)
        step(cls, ours, G2, D2, batch)
    assert ((flat(G, D) - flat(G2, D2)).norm() / flat(G, D).norm()).item() < 1e-12

    back = saved(ours.state_dict(format="cgds"), tmp_path, "fastgame.pt")
    assert set(back) == set(ref.state_dict())
    G3, D3 = copy.deepcopy(G2), copy.deepcopy(D2)
    ref3 = build(CGDs, cls, G3, D3)
    quiet(ref3.load_state_dict, back)
    for batch in batches[6:9]:
        step(cls, ref3, G3, D3, batch)
        step(cls, ours, G2, D2, batch)
    assert ((flat(G3, D3) - flat(G2, D2)).norm() / flat(G3, D3).norm()).item() < 1e-12


@pytest.mark.parametrize("cls", ["ACGD", "BCGD"])
def test_a_cgds_checkpoint_with_fastgames_default_start(float64, cls, tmp_path):
    """With cg_start="zero" (the default) CGDs' warm starts are not kept: the run continues from
    CGDs' second moments and counters, its steps within the solver tolerance of CGDs'."""
    G, D, batches = make_case()
    ref = build(CGDs, cls, G, D, tol=1e-18)
    for batch in batches[:3]:
        step(cls, ref, G, D, batch)
    ckpt = saved(ref.state_dict(), tmp_path, "cgds.pt")
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ours = build(fastgame, cls, G2, D2, tol=1e-18)
    ours.load_state_dict(ckpt)
    assert all("warm_start" not in ours.state[n] for n in ("max", "min"))
    quiet(ref.load_state_dict, ckpt)
    for batch in batches[3:6]:
        step(cls, ref, G, D, batch)
        step(cls, ours, G2, D2, batch)
    assert ((flat(G, D) - flat(G2, D2)).norm() / flat(G, D).norm()).item() < 1e-8


def _cgds_dict(cls, G, D, steps=1):
    opt = build(CGDs, cls, G, D, tol=1e-6)
    for batch in make_case(latent=4 if cls == "GACGD" else 3)[2][:steps]:
        step(cls, opt, G, D, batch)
    return copy.deepcopy(opt.state_dict())


@pytest.mark.parametrize("cls", ["ACGD", "BCGD", "GACGD"])
def test_a_cgds_dict_of_another_class_or_size_is_refused_changing_nothing(cls):
    latent = 4 if cls == "GACGD" else 3
    G, D, batches = make_case(latent=latent)
    ours = build(fastgame, cls, G, D)
    step(cls, ours, G, D, batches[0])
    sd, params = ours.state_dict(), [p.detach().clone() for p in flat(G, D)]
    others = [c for c in ("ACGD", "BCGD", "GACGD") if c != cls]
    for other in others:
        Go, Do = make_case(latent=4 if other == "GACGD" else 3)[:2]
        with pytest.raises(ValueError, match=f"a CGDs.{other} state_dict cannot be loaded into {cls}"):
            ours.load_state_dict(_cgds_dict(other, Go, Do))
    Gs, Ds, _ = make_case(latent=latent, width=8)  # other sizes
    with pytest.raises(ValueError, match="CGDs state_dict entry .* has shape .* parameters"):
        ours.load_state_dict(_cgds_dict(cls, Gs, Ds))
    broken = _cgds_dict(cls, *make_case(latent=latent)[:2])
    del broken["step"]
    with pytest.raises(ValueError, match="not a CGDs 0.4.5 state_dict.*lacks \\['step'\\]"):
        ours.load_state_dict(broken)
    assert state_equal(ours.state_dict(), sd) and torch.equal(flat(G, D), torch.stack(params))


def test_state_dict_in_cgds_format_refuses_what_cgds_cannot_hold():
    G, D, _ = make_case()
    opt = fastgame.ACGD(D.parameters(), G.parameters())
    opt.param_groups[1]["eps"] = 1e-3
    with pytest.raises(ValueError, match="CGDs.ACGD has one eps for both players"):
        opt.state_dict(format="cgds")
    with pytest.raises(ValueError, match="invalid format"):
        opt.state_dict(format="jax")
    with pytest.raises(ValueError, match="no CGDs counterpart"):
        fastgame.SimGD(D.parameters(), G.parameters()).state_dict(format="cgds")
