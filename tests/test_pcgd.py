"""PCGD and APCGD (polymatrix CGD, n >= 2 players): two players give GACGD's numbers, one step
on small n-player games equals the dense solve of x⁺ = x − (I + A H_o)⁻¹ A ξ built from the
Jacobian, a product with H_o takes n passes (n(n−1) pairwise), and the guarantees of the
other optimizers: bad input is one clear error, a failing step changes nothing, the state
continues bit for bit in a new process."""
import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import fastgame
from fastgame import losses as gan_losses
from tests.helpers import NanGradient, state_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F64 = torch.float64


# ---- a small smooth n-player game with non-quadratic couplings ------------------------------
def smooth_game(sizes, seed, coupled=lambda i, j: True):
    """Players x_i of the given sizes; f_i = quadratic couplings of the pairs ``coupled(i, j)``
    plus a non-quadratic one with a coupled neighbour, so the dense check covers more than
    constant Hessians."""
    g = torch.Generator().manual_seed(seed)
    n, N = len(sizes), sum(sizes)
    xs = [torch.randn(s, generator=g, dtype=F64).requires_grad_() for s in sizes]
    J = torch.randn(N, N, generator=g, dtype=F64)
    offsets = [sum(sizes[:i]) for i in range(n)]

    def block(i, j):
        return J[offsets[i]:offsets[i] + sizes[i], offsets[j]:offsets[j] + sizes[j]]

    def losses_at(points):
        out = []
        for i in range(n):
            own = block(i, i)
            f = 0.5 * points[i] @ (own @ own.T + torch.eye(sizes[i], dtype=F64)) @ points[i]
            partners = [j for j in range(n) if j != i and coupled(i, j)]
            for j in partners:
                f = f + points[i] @ block(i, j) @ points[j]
            nxt = points[partners[0]]
            out.append(f + 0.3 * torch.sin(points[i]).sum() * torch.tanh(nxt).square().sum())
        return tuple(out)
    return xs, losses_at


def dense_step(xs, losses_at, etas_of):
    """x − (I + A H_o)⁻¹ A ξ from the Jacobian of ξ = (∇_{x_i} f_i)_i, dense, in float64."""
    sizes = [x.numel() for x in xs]
    z0 = torch.cat([x.detach() for x in xs])

    def field(z):
        points = list(torch.split(z, sizes))
        fs = losses_at(points)
        return torch.cat([torch.autograd.grad(f, p, create_graph=True)[0] for f, p in zip(fs, points)])
    xi = field(z0.clone().requires_grad_()).detach()
    jac = torch.autograd.functional.jacobian(field, z0)
    start = 0
    for s in sizes:  # H_o: the off-diagonal blocks of the Jacobian
        jac[start:start + s, start:start + s] = 0
        start += s
    eta = etas_of(list(torch.split(xi, sizes)))
    rhs = eta * xi
    return z0 - torch.linalg.solve(torch.eye(len(z0), dtype=F64) + eta[:, None] * jac, rhs)


def flat(xs):
    return torch.cat([x.detach().reshape(-1) for x in xs])


@pytest.mark.parametrize("sizes", [[2, 3, 1], [3, 1, 4, 2], [1, 2, 2, 3]])
@pytest.mark.parametrize("product", ["per_player", "pairwise"])
def test_pcgd_step_equals_dense_solve(sizes, product):
    xs, losses_at = smooth_game(sizes, seed=len(sizes) + sum(sizes))
    lrs = [0.05 * (i + 1) for i in range(len(sizes))]  # a different step size per player
    expected = dense_step(xs, losses_at, lambda parts: torch.cat([torch.full_like(p, lr) for p, lr in zip(parts, lrs)]))
    opt = fastgame.PCGD([{"params": [x], "lr": lr} for x, lr in zip(xs, lrs)], tol=1e-13, atol=0.0, product=product)
    opt.step(lambda: losses_at(xs))
    torch.testing.assert_close(flat(xs), expected, rtol=1e-10, atol=1e-11)
    info = opt.get_info()
    n = len(sizes)
    per_product = n if product == "per_player" else n * (n - 1)
    assert info["converged"] and info["products"] == info["iter_num"] + info["restarts"] > 0
    assert info["solve"] == "block" and info["rhs_passes"] == 0  # every pair interacts: no two groups
    assert info["hvp_passes"] == per_product * info["products"]


STAR = lambda i, j: (i == 0) != (j == 0)  # player 0 against all others (one generator, K discriminators)
RING4 = lambda i, j: (j - i) % 4 in (1, 3)  # players on a ring of four: groups {0, 2} and {1, 3}


@pytest.mark.parametrize("sizes,coupled,small", [([5, 1, 2, 1], STAR, [1, 2, 3]), ([1, 2, 3], STAR, [0]),
                                                 ([2, 1, 3, 2], RING4, [0, 2])], ids=["star-big-0", "star", "ring4"])
@pytest.mark.parametrize("product", ["per_player", "pairwise"])
def test_pcgd_schur_step_on_two_groups_equals_dense_solve(sizes, coupled, small, product):
    xs, losses_at = smooth_game(sizes, seed=11 + sum(sizes), coupled=coupled)
    lrs = [0.1 * (i + 1) for i in range(len(sizes))]
    expected = dense_step(xs, losses_at, lambda parts: torch.cat([torch.full_like(p, lr) for p, lr in zip(parts, lrs)]))
    opt = fastgame.PCGD([{"params": [x], "lr": lr} for x, lr in zip(xs, lrs)], tol=1e-13, atol=0.0, product=product)
    opt.step(losses_at(xs))
    torch.testing.assert_close(flat(xs), expected, rtol=1e-10, atol=1e-11)
    info = opt.get_info()
    assert info["solve"] == "schur"
    # A Schur product: a pass per player of each group (pairwise: per interacting pair), plus
    # the right-hand side's passes for the smaller group ``small``.
    pairs = sum(coupled(i, j) for i in range(len(sizes)) for j in range(len(sizes)) if i != j)
    per_product = len(sizes) if product == "per_player" else pairs
    rhs = len(small) if product == "per_player" else sum(coupled(i, j) for i in small for j in range(len(sizes)))
    assert info["hvp_passes"] == per_product * info["products"] + rhs and info["rhs_passes"] == rhs
    xs2, _ = smooth_game(sizes, seed=11 + sum(sizes), coupled=coupled)
    block = fastgame.PCGD([{"params": [x], "lr": lr} for x, lr in zip(xs2, lrs)], tol=1e-13, atol=0.0, solve="block")
    block.step(losses_at(xs2))
    torch.testing.assert_close(flat(xs2), expected, rtol=1e-10, atol=1e-11)
    assert block.get_info()["solve"] == "block" and block.get_info()["iter_num"] > info["iter_num"]


@pytest.mark.parametrize("sizes", [[2, 3, 1], [3, 1, 4, 2]])
def test_apcgd_step_equals_dense_solve_with_rmsprop_step_sizes(sizes):
    xs, losses_at = smooth_game(sizes, seed=7 + len(sizes))
    lr, beta, eps = 0.1, 0.9, 1e-3
    # The first step's RMSProp sizes: v = (1 − β)ξ², η = lr·√(1 − β)/(√v + eps).
    etas = lambda parts: torch.cat([lr * (1 - beta) ** 0.5 / (((1 - beta) * p * p).sqrt() + eps) for p in parts])
    expected = dense_step(xs, losses_at, etas)
    opt = fastgame.APCGD([[x] for x in xs], lr=lr, beta=beta, eps=eps, tol=1e-13, atol=0.0)
    opt.step(closure=lambda: losses_at(xs))
    torch.testing.assert_close(flat(xs), expected, rtol=1e-10, atol=1e-11)


def test_pairwise_product_gives_the_same_steps():
    runs = []
    for product in ("per_player", "pairwise"):
        xs, losses_at = smooth_game([2, 2, 3], seed=3)
        opt = fastgame.APCGD([[x] for x in xs], lr=0.05, tol=1e-12, atol=0.0, product=product)
        for _ in range(3):
            opt.step(losses_at(xs))
        runs.append(flat(xs))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-10, atol=1e-12)


# ---- two players: GACGD's numbers -----------------------------------------------------------
def two_player_models(x_width, y_width, seed=0):
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(2, x_width), nn.Tanh(), nn.Linear(x_width, 2)).double()
    D = nn.Sequential(nn.Linear(2, y_width), nn.Tanh(), nn.Linear(y_width, 1)).double()
    return G, D


def ns_losses(G, D, real, z):
    out = gan_losses.non_saturating(D(real), D(G(z)))
    return out.generator, out.discriminator


@pytest.mark.parametrize("solve", ["auto", "block"])
@pytest.mark.parametrize("widths", [(3, 9), (9, 3)], ids=["x-smaller", "x-larger"])
def test_two_players_equal_gacgd(widths, solve):
    gen = torch.Generator().manual_seed(5)
    batches = [(torch.randn(16, 2, generator=gen, dtype=F64) + 1, torch.randn(16, 2, generator=gen, dtype=F64))
               for _ in range(4)]
    G1, D1 = two_player_models(*widths)
    G2, D2 = copy.deepcopy(G1), copy.deepcopy(D1)
    kw = dict(tol=1e-11, atol=0.0)
    ref = fastgame.GACGD(G1.parameters(), D1.parameters(), lr_x=0.05, lr_y=0.02, **kw)
    opt = fastgame.APCGD([{"params": G2.parameters(), "lr": 0.05}, {"params": D2.parameters(), "lr": 0.02}],
                         solve=solve, **kw)
    for real, z in batches:
        ref.step(*ns_losses(G1, D1, real, z))
        opt.step(*ns_losses(G2, D2, real, z))
        info = opt.get_info()
        if solve == "auto":  # GACGD's own solve: the Schur complement of the smaller player
            assert info["solve"] == "schur" and info["iter_num"] == ref.get_info()["iter_num"]
            assert info["hvp_passes"] == ref.get_info()["hvp_passes"] == 1 + 2 * info["products"]
        else:
            assert info["solve"] == "block" and info["hvp_passes"] == 2 * info["products"]
        a = torch.cat([p.detach().reshape(-1) for m in (G1, D1) for p in m.parameters()])
        b = torch.cat([p.detach().reshape(-1) for m in (G2, D2) for p in m.parameters()])
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-10)
    for name in ("0", "1"):
        torch.testing.assert_close(opt.state[name]["square_avg"], ref.state["xy"[int(name)]]["square_avg"])


# ---- one generator, K discriminators (the GAN of GMAN) --------------------------------------
def multi_gan(k, seed=0, dtype=F64):
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 2)).to(dtype)
    Ds = [nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).to(dtype) for _ in range(k)]
    return G, Ds


def multi_losses(G, Ds, real, z):
    fake = G(z)
    return gan_losses.multi_discriminator("standard", [D(real) for D in Ds], [D(fake) for D in Ds]).per_player()


def multi_batches(steps, seed=1, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    ring = fastgame.games.GaussianMixture.ring()
    return [(ring.sample(16, generator=gen).to(dtype), torch.randn(16, 2, generator=gen, dtype=dtype))
            for _ in range(steps)]


def params_of(G, Ds):
    return torch.cat([p.detach().reshape(-1) for m in (G, *Ds) for p in m.parameters()])


def test_generator_against_three_discriminators_trains_and_counts_passes():
    G, Ds = multi_gan(3)
    opt = fastgame.APCGD([G.parameters()] + [D.parameters() for D in Ds], lr=0.01)
    for real, z in multi_batches(3):
        out = opt.step(multi_losses(G, Ds, real, z))
        assert len(out) == 4 and all(t.dim() == 0 and not t.requires_grad for t in out)
        info = opt.get_info()
        # the generator (32 parameters) against three discriminators (63): the Schur complement
        # of the generator, 4 passes per product and 1 for the right-hand side
        assert info["solve"] == "schur" and info["hvp_passes"] == 4 * info["products"] + 1 and info["iter_num"] >= 1


def test_lr_scheduler_and_set_lr_change_each_player():
    G, Ds = multi_gan(2)
    opt = fastgame.PCGD([{"params": G.parameters(), "lr": 0.1}] + [D.parameters() for D in Ds], lr=0.2)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2, 0.2]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    real, z = multi_batches(1)[0]
    opt.step(multi_losses(G, Ds, real, z))
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.1, 0.1]
    opt.set_lr(1.0, 2.0, 3.0)
    assert [g["lr"] for g in opt.param_groups] == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="one learning rate per player"):
        opt.set_lr(1.0, 2.0)


# ---- bad input: one clear error, nothing changed ------------------------------------------
def snapshot(opt, G, Ds):
    return params_of(G, Ds), opt.state_dict()


def assert_unchanged(before, opt, G, Ds):
    assert torch.equal(before[0], params_of(G, Ds))
    assert state_equal(before[1], opt.state_dict())


def test_construction_refuses_bad_players():
    G, Ds = multi_gan(2)
    with pytest.raises(ValueError, match="at least two players"):
        fastgame.PCGD([G.parameters()])
    with pytest.raises(ValueError, match="appear in both players\\[0\\] and players\\[2\\]"):
        fastgame.PCGD([G.parameters(), Ds[0].parameters(), list(G.parameters())[:1]])
    with pytest.raises(ValueError, match="one entry per player"):
        fastgame.PCGD(G.parameters())
    with pytest.raises(ValueError, match="game-wide"):
        fastgame.PCGD([{"params": G.parameters(), "tol": 1e-3}, Ds[0].parameters()])
    with pytest.raises(ValueError, match="invalid lr"):
        fastgame.PCGD([G.parameters(), Ds[0].parameters()], lr=-1.0)
    with pytest.raises(ValueError, match="invalid product"):
        fastgame.PCGD([G.parameters(), Ds[0].parameters()], product="dense")
    with pytest.raises(ValueError, match="players\\[1\\] is empty"):
        fastgame.PCGD([G.parameters(), []])
    with pytest.raises(TypeError, match="eps"):
        fastgame.PCGD([G.parameters(), Ds[0].parameters()], eps=1e-3)  # APCGD's, not PCGD's


def test_bad_losses_are_refused_and_change_nothing():
    G, Ds = multi_gan(2)
    opt = fastgame.APCGD([G.parameters()] + [D.parameters() for D in Ds], lr=0.01)
    batches = multi_batches(3)
    opt.step(multi_losses(G, Ds, *batches[0]))
    before = snapshot(opt, G, Ds)
    real, z = batches[1]
    lg, l1, l2 = multi_losses(G, Ds, real, z)
    with pytest.raises(ValueError, match="takes 3 losses"):
        opt.step(lg, l1, l2, l2)
    with pytest.raises(ValueError, match="needs loss_2"):
        opt.step([lg, l1])
    with pytest.raises(ValueError, match="must return 3 losses"):
        opt.step(closure=lambda: (lg, l1))
    with pytest.raises(ValueError, match="not both"):
        opt.step(lg, closure=lambda: (lg, l1, l2))
    # loss_1 of discriminator 2's outputs only: it does not depend on player 1
    with pytest.raises(ValueError, match="loss_1 does not depend on the parameters of player 1"):
        opt.step(lg, Ds[1](real).mean() + Ds[1](G(z)).mean(), l2)
    assert_unchanged(before, opt, G, Ds)
    opt.step(lg, l1, l2)  # the refused calls left the step usable
    with pytest.raises(ValueError, match="already used"):
        opt.step(lg, l1, l2)


@pytest.mark.parametrize("where,stage", [("loss", "loss_2 \\(stage: forward\\)"),
                                          ("gradient", "gradient of player 1 \\(stage: gradient\\)")])
def test_non_finite_step_names_player_and_stage_and_changes_nothing(where, stage):
    G, Ds = multi_gan(2)
    opt = fastgame.APCGD([G.parameters()] + [D.parameters() for D in Ds], lr=0.01)
    batches = multi_batches(3)
    opt.step(multi_losses(G, Ds, *batches[0]))
    before = snapshot(opt, G, Ds)
    real, z = batches[1]
    fake = G(z)
    if where == "loss":
        losses = list(multi_losses(G, Ds, real, z))
        losses[2] = losses[2] + float("inf")
    else:  # player 1's own gradient is NaN (its loss stays finite)
        bad = torch.func.functional_call(Ds[0], {n: NanGradient.apply(p) for n, p in Ds[0].named_parameters()},
                                                 (real,))
        out = gan_losses.multi_discriminator("standard", [bad, Ds[1](real)], [Ds[0](fake), Ds[1](fake)])
        losses = out.per_player()
    with pytest.raises(FloatingPointError, match=stage):
        opt.step(losses)
    assert_unchanged(before, opt, G, Ds)


# ---- state: copies, load checks, a new process --------------------------------------------
def test_deepcopy_and_load_state_dict_checks():
    G, Ds = multi_gan(2)
    opt = fastgame.APCGD([G.parameters()] + [D.parameters() for D in Ds], lr=0.01)
    batches = multi_batches(4)
    opt.step(multi_losses(G, Ds, *batches[0]))
    before = snapshot(opt, G, Ds)
    two = fastgame.APCGD([G.parameters(), Ds[0].parameters()])
    with pytest.raises(ValueError, match="expected 3 param groups|number of parameters"):
        opt.load_state_dict(two.state_dict())
    bad = opt.state_dict()
    bad["state"]["1"]["square_avg"] = -bad["state"]["1"]["square_avg"] - 1
    with pytest.raises(ValueError, match="negative"):
        opt.load_state_dict(bad)
    plain = fastgame.PCGD([G.parameters()] + [D.parameters() for D in Ds])
    with pytest.raises(ValueError, match="lacks \\['beta', 'eps'\\]"):
        opt.load_state_dict(plain.state_dict())
    assert_unchanged(before, opt, G, Ds)
    G2, Ds2 = copy.deepcopy(G), copy.deepcopy(Ds)
    twin = fastgame.APCGD([G2.parameters()] + [D.parameters() for D in Ds2], lr=0.01)
    twin.load_state_dict(copy.deepcopy(opt).state_dict())
    for real, z in batches[1:]:
        opt.step(multi_losses(G, Ds, real, z))
        twin.step(multi_losses(G2, Ds2, real, z))
    assert torch.equal(params_of(G, Ds), params_of(G2, Ds2))


CHILD = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    import fastgame
    from tests.test_pcgd import multi_gan, multi_losses, multi_batches, params_of
    torch.set_num_threads(1)
    G, Ds = multi_gan(2, dtype=torch.float32)
    ckpt = torch.load({path!r}, weights_only=False)
    for m, sd in zip((G, *Ds), ckpt["models"]):
        m.load_state_dict(sd)
    opt = fastgame.{cls}([G.parameters()] + [D.parameters() for D in Ds], lr=1.0)
    opt.load_state_dict(ckpt["opt"])
    for real, z in multi_batches(6, dtype=torch.float32)[3:]:
        opt.step(multi_losses(G, Ds, real, z))
    torch.save(params_of(G, Ds), {out!r})
""")


@pytest.mark.parametrize("cls", ["PCGD", "APCGD"])
def test_state_survives_a_new_process_bit_for_bit(tmp_path, cls):
    torch.set_num_threads(1)
    G, Ds = multi_gan(2, dtype=torch.float32)
    opt = getattr(fastgame, cls)([{"params": G.parameters(), "lr": 0.02}] + [D.parameters() for D in Ds], lr=0.01)
    batches = multi_batches(6, dtype=torch.float32)
    for real, z in batches[:3]:
        opt.step(multi_losses(G, Ds, real, z))
    path, out = str(tmp_path / "ckpt.pt"), str(tmp_path / "out.pt")
    torch.save({"models": [m.state_dict() for m in (G, *Ds)], "opt": opt.state_dict()}, path)
    for real, z in batches[3:]:
        opt.step(multi_losses(G, Ds, real, z))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, path=path, out=out, cls=cls)],
                   check=True, cwd=ROOT, env=env)
    assert torch.equal(params_of(G, Ds), torch.load(out))
