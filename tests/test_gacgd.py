"""GACGD against CGDs.GACGD 0.4.5, against ACGD on zero-sum games, and as an optimizer."""
import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import fastgame
from tests.helpers import flat, make_case

CGDs = pytest.importorskip("CGDs")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gacgd_case(seed=0, batch=32, steps=10, width=16):
    """tests.helpers.make_case with a 4-dimensional latent (GACGD's tests were written with it)."""
    return make_case(seed, batch, steps, width, latent=4)


def ns_losses(G, D, real, z):
    """Non-saturating GAN: G minimises -log σ(D(G(z))), D minimises the usual cross-entropy."""
    fake = G(z)
    return F.softplus(-D(fake)).mean(), F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()


def run_pair(steps, warm_start=False, restart=None, **kw):
    """Step CGDs.GACGD and fastgame.GACGD side by side; per-step relative update differences."""
    G, D, batches = gacgd_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ref = CGDs.GACGD(x_params=G.parameters(), y_params=D.parameters(), **kw)
    extra = {} if restart is None else {"restart": restart}  # None: fastgame's default
    ours = fastgame.GACGD(G2.parameters(), D2.parameters(), warm_start=warm_start, **extra, **kw)
    errors = []
    for i, (real, z) in enumerate(batches[:steps]):
        b_ref, b_ours = flat(G, D), flat(G2, D2)
        ref.step(*ns_losses(G, D, real, z))
        ours.step(*ns_losses(G2, D2, real, z))
        d_ref, d_ours = flat(G, D) - b_ref, flat(G2, D2) - b_ours
        errors.append(((d_ref - d_ours).norm() / d_ref.norm()).item())
        info = ours.get_info()
        if info["iter_num"]:  # HVP passes: rhs, 2 per iteration and restart, 1 more from a warm start
            warm = 1 if warm_start and i > 0 else 0
            assert info["hvp_passes"] == 1 + 2 * (info["iter_num"] + info["restarts"]) + warm, info
    return errors, ours


@pytest.mark.parametrize("warm_start,restart", [(False, None), (True, None), (False, 6)])
def test_parity_float64(float64, warm_start, restart):
    errors, ours = run_pair(8, warm_start, restart, lr_x=1e-2, lr_y=1e-2, tol=1e-12, atol=1e-20)
    assert max(errors) <= 1e-10, errors
    if restart == 6:
        assert ours.get_info()["restarts"] > 0  # the restarted path was exercised


def test_parity_float32_default_tolerance():
    # measured 1.7e-5: the solver tolerance (1e-5), the same in float64; float32 adds little
    errors, _ = run_pair(8, lr_x=1e-2, lr_y=1e-2)
    assert max(errors) <= 1e-4, errors


def test_reference_rules_for_tiny_steps_and_max_iter_0(float64):
    """CGDs returns s = b when ||b|| < 1e-8 or max_iter == 0, and always takes one GMRES step
    (also when ||b|| < atol); fastgame keeps these rules, so it matches there too."""
    errors, ours = run_pair(3, lr_x=1e-10, lr_y=1e-10)  # ||b|| < 1e-8: s = b in both
    assert max(errors) <= 1e-13 and ours.get_info()["iter_num"] == 0
    errors, _ = run_pair(3, lr_x=1e-2, lr_y=1e-2, max_iter=0)
    assert max(errors) <= 1e-13
    # 1e-8 < ||b|| < atol: one step each. One step on the block system and one on the Schur
    # complement agree to O(||eta D||) ~ 1e-5 here; skipping the step would be 0.7 off.
    errors, ours = run_pair(3, lr_x=1e-8, lr_y=1e-8)
    assert max(errors) <= 1e-4 and ours.get_info()["iter_num"] == 1


@pytest.mark.parametrize("nx,ny,coupled", [(3, 5, True), (5, 3, True), (4, 4, False)])
def test_quadratic_game_against_a_dense_solve(float64, nx, ny, coupled):
    """f = x'Ay + |x-1|^2/2 (x minimises), g = x'By + |y+1|^2/2 (y minimises): the step is
    the dense solve of [[I, E_x A], [E_y B', I]] s = [E_x grad_x f; E_y grad_y g]. Both Schur
    orientations (x or y smaller), and a game whose players do not interact at all."""
    gen = torch.Generator().manual_seed(nx)
    A = torch.randn(nx, ny, generator=gen) if coupled else torch.zeros(nx, ny)
    B = torch.randn(nx, ny, generator=gen) if coupled else torch.zeros(nx, ny)
    x = torch.nn.Parameter(torch.randn(nx, generator=gen))
    y = torch.nn.Parameter(torch.randn(ny, generator=gen))
    lr_x, lr_y, beta, eps = 0.3, 0.2, 0.9, 1e-6
    opt = fastgame.GACGD([x], [y], lr_x=lr_x, lr_y=lr_y, beta=beta, eps=eps, tol=1e-14, atol=0.0)
    vx, vy = torch.zeros(nx), torch.zeros(ny)
    for t in range(1, 5):
        X, Y = x.detach().clone(), y.detach().clone()
        gx, gy = A @ Y + X - 1, B.T @ X + Y + 1
        vx, vy = beta * vx + (1 - beta) * gx ** 2, beta * vy + (1 - beta) * gy ** 2
        ex = lr_x * (1 - beta ** t) ** 0.5 / (vx.sqrt() + eps)
        ey = lr_y * (1 - beta ** t) ** 0.5 / (vy.sqrt() + eps)
        K = torch.cat([torch.cat([torch.eye(nx), ex[:, None] * A], 1), torch.cat([ey[:, None] * B.T, torch.eye(ny)], 1)])
        s = torch.linalg.solve(K, torch.cat([ex * gx, ey * gy]))
        f = x @ A @ y + 0.5 * ((x - 1) ** 2).sum() if coupled else 0.5 * ((x - 1) ** 2).sum()
        g = x @ B @ y + 0.5 * ((y + 1) ** 2).sum() if coupled else 0.5 * ((y + 1) ** 2).sum()
        opt.step(f, g)
        torch.testing.assert_close(torch.cat([x.detach(), y.detach()]), torch.cat([X, Y]) - s, rtol=1e-12, atol=1e-13)


def test_zero_sum_game_is_the_acgd_step(float64):
    """GACGD with loss_y = -loss_x (x = G minimises f, y = D maximises it) = ACGD."""
    G, D, batches = gacgd_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    kw = dict(eps=1e-6, beta=0.9)
    gacgd = fastgame.GACGD(G.parameters(), D.parameters(), lr_x=1e-2, lr_y=2e-2, tol=1e-14, atol=0.0, **kw)
    acgd = fastgame.ACGD(D2.parameters(), G2.parameters(), lr_max=2e-2, lr_min=1e-2, tol=1e-28, atol=0.0, **kw)

    def f(G, D, real, z):
        return -F.softplus(-D(real)).mean() - F.softplus(D(G(z))).mean()
    for real, z in batches[:6]:
        loss = f(G, D, real, z)
        gacgd.step(loss, -loss)
        acgd.step(f(G2, D2, real, z))
    torch.testing.assert_close(flat(G, D), flat(G2, D2), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("negated", ["loss_x", "loss_y"])
def test_negated_loss_takes_one_backward_and_the_same_step(float64, monkeypatch, negated):
    """loss_x = -loss_y (or the reverse) from one graph: one create_graph backward instead of
    two, and the same step as from two separately built graphs of the same losses."""
    G, D, batches = gacgd_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    kw = dict(lr_x=1e-2, lr_y=2e-2, tol=1e-10, atol=0.0)
    shared, separate = fastgame.GACGD(G.parameters(), D.parameters(), **kw), fastgame.GACGD(G2.parameters(), D2.parameters(), **kw)

    def f(G, D, real, z):
        return -F.softplus(-D(real)).mean() - F.softplus(D(G(z))).mean()
    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(k.get("create_graph", False)) or grad(*a, **k))
    for real, z in batches[:4]:
        calls.clear()
        loss = f(G, D, real, z)
        if negated == "loss_y":
            shared.step(loss, -loss)
        else:
            loss_y = -loss
            shared.step(-loss_y, loss_y)
        assert sum(calls) == 1
        calls.clear()
        separate.step(f(G2, D2, real, z), -f(G2, D2, real, z))
        assert sum(calls) == 2
        assert shared.info["iter_num"] == separate.info["iter_num"]
    assert torch.equal(flat(G, D), flat(G2, D2))  # negated gradients are exact: the same numbers


def test_closure_scheduler_and_unused_parameters():
    G, D, batches = gacgd_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    unused = torch.nn.Parameter(torch.randn(5))
    a = fastgame.GACGD(list(G.parameters()) + [unused], D.parameters(), lr_x=1e-2, lr_y=1e-2)
    b = fastgame.GACGD(G2.parameters(), D2.parameters(), lr_x=1e-2, lr_y=1e-2)
    sa = torch.optim.lr_scheduler.StepLR(a, 2, 0.5)
    sb = torch.optim.lr_scheduler.StepLR(b, 2, 0.5)
    before = unused.detach().clone()
    for real, z in batches[:4]:
        a.step(lambda: ns_losses(G, D, real, z))
        b.step(*ns_losses(G2, D2, real, z))
        sa.step(), sb.step()
    assert torch.equal(unused.detach(), before)
    torch.testing.assert_close(flat(G, D), flat(G2, D2), rtol=1e-5, atol=1e-6)
    assert a.param_groups[0]["lr"] == pytest.approx(2.5e-3)


CHILD = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    import fastgame
    from tests.test_gacgd import gacgd_case, ns_losses
    G, D, batches = gacgd_case()
    ckpt = torch.load({path!r}, weights_only=False)
    G.load_state_dict(ckpt["G"]); D.load_state_dict(ckpt["D"])
    opt = fastgame.GACGD(G.parameters(), D.parameters())
    opt.load_state_dict(ckpt["opt"])
    for real, z in batches[3:7]:
        opt.step(*ns_losses(G, D, real, z))
    torch.save([p.detach() for m in (G, D) for p in m.parameters()], {out!r})
""")


def test_state_survives_a_new_process_bit_for_bit(tmp_path):
    G, D, batches = gacgd_case()
    opt = fastgame.GACGD(G.parameters(), D.parameters(), lr_x=1e-2, lr_y=2e-2, restart=5)
    for real, z in batches[:3]:
        opt.step(*ns_losses(G, D, real, z))
    path, out = str(tmp_path / "ckpt.pt"), str(tmp_path / "out.pt")
    torch.save({"G": G.state_dict(), "D": D.state_dict(), "opt": opt.state_dict()}, path)
    for real, z in batches[3:7]:
        opt.step(*ns_losses(G, D, real, z))
    subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, path=path, out=out)], check=True, cwd=ROOT)
    theirs = torch.load(out)
    assert all(torch.equal(p.detach(), q) for p, q in zip(list(G.parameters()) + list(D.parameters()), theirs))


def test_bad_inputs_change_nothing():
    G, D, batches = gacgd_case()
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="both"):
        fastgame.GACGD([a, b], [b])
    with pytest.raises(ValueError, match="empty"):
        fastgame.GACGD([], [a])
    with pytest.raises(ValueError, match="restart"):
        fastgame.GACGD([a], [b], restart=0)
    with pytest.raises(ValueError, match="lr_y"):
        fastgame.GACGD([a], [b], lr_y=-1.0)
    opt = fastgame.GACGD(G.parameters(), D.parameters(), lr_x=1e-2, lr_y=1e-2)
    opt.step(*ns_losses(G, D, *batches[0]))
    state = opt.state_dict()
    before = flat(G, D)
    real, z = batches[1]
    lx, ly = ns_losses(G, D, real, z)
    with pytest.raises(ValueError, match="loss_y"):
        opt.step(lx)
    with pytest.raises(ValueError, match="scalar"):
        opt.step(D(real), ly)
    with pytest.raises(ValueError, match="no autograd graph"):
        opt.step(lx, ly.detach())
    with pytest.raises(ValueError, match="pair"):
        opt.step(lambda: lx)
    with pytest.raises(FloatingPointError, match="loss_y"):
        opt.step(lx, ly * float("nan"))
    with pytest.raises(FloatingPointError, match="gradient of player x"):
        opt.step(lx + torch.sqrt((G[0].weight ** 2 - G[0].weight.detach() ** 2).sum()), ly)
    assert torch.equal(before, flat(G, D))
    after = opt.state_dict()
    assert after["state"]["game"] == state["state"]["game"]
    for name in ("x", "y"):
        for k, v in state["state"][name].items():
            assert torch.equal(v, after["state"][name][k])


@pytest.mark.parametrize("warm", [False, True])
def test_warm_start_kept_only_when_read(warm):
    """The previous solution stays in the state (and state_dict) only when the next GMRES starts from it."""
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, dtype=torch.float64, requires_grad=True)
    A = torch.randn(3, 2, dtype=torch.float64)
    opt = fastgame.GACGD([x], [y], lr_x=0.1, lr_y=0.1, warm_start=warm)
    for _ in range(2):
        opt.step(lambda: (x @ A @ y + (x ** 2).sum(), -(x @ A @ y) + (y ** 2).sum()))
    for st in opt.state_dict()["state"].values():
        if "square_avg" in st:
            assert ("warm_start" in st) == warm
