"""The game dynamics CGD is compared with (fastgame.optim.DYNAMICS): one step equals its
formula on a bilinear game, who converges where, capturable steps read nothing from the
device, state_dict continues bit-for-bit in a new process, and the pipeline's promise (bad
input: ValueError; non-finite: FloatingPointError naming player and stage; nothing changed)."""
import contextlib
import copy
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

import fastgame
from fastgame.games import Bilinear, DiracGAN, GaussianLocationGame, ICRQuadratic
from tests.helpers import NanInDoubleBackward, NoHostReads, state_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_ORDER = ["simgd", "simadam", "altgd", "altadam", "extragradient", "extra-adam", "ogda", "optimistic-adam"]
SECOND_ORDER = ["consensus", "sga", "hamiltonian", "lead", "manifold"]
METHODS = FIRST_ORDER + SECOND_ORDER + ["proximal"]


def quadratic_game(seed=0, m=3, n=2):
    """f = xᵀAy + ½xᵀPx − ½yᵀQy with random A and small symmetric P, Q (float64)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=torch.float64)
    P = torch.randn(m, m, generator=g, dtype=torch.float64)
    Q = torch.randn(n, n, generator=g, dtype=torch.float64)
    return Bilinear(A, 0.3 * (P + P.T), 0.3 * (Q + Q.T), x0=torch.randn(m, generator=g, dtype=torch.float64),
                    y0=torch.randn(n, generator=g, dtype=torch.float64))


def build(name, game, lr=0.1, **kw):
    return fastgame.DYNAMICS[name](game.max_params, game.min_params, lr_max=lr, lr_min=lr, **kw)


# ---- one step equals its formula ------------------------------------------------------------
# On the quadratic game the vector field ξ = (−∇_y f, ∇_x f) (players' own gradients, order
# (y, x): y is the max player) is linear, ξ(z) = Jz with J = −game.jacobian(); every method's
# step is a closed form in J.
def field(game):
    J = -game.jacobian()
    return J, lambda z: J @ z


def lead_reference(J, z0, lr, beta, alpha, n_y, steps):
    off = J.clone()
    off[:n_y, :n_y] = 0
    off[n_y:, n_y:] = 0
    z, prev = z0.clone(), torch.zeros_like(z0)
    for _ in range(steps):
        prev = beta * prev - lr * (J @ z) - alpha * off @ prev
        z = z + prev
    return z


@pytest.mark.parametrize("general_sum", [False, True])
def test_one_step_equals_the_formula(general_sum):
    lr, gamma, lam = 0.1, 0.7, 0.4
    for name, kw, formula in [
        ("simgd", {}, lambda J, v, z, n: z - lr * v(z)),
        ("extragradient", {}, lambda J, v, z, n: z - lr * v(z - lr * v(z))),
        ("consensus", {"gamma": gamma}, lambda J, v, z, n: z - lr * (v(z) + gamma * J.T @ v(z))),
        ("hamiltonian", {}, lambda J, v, z, n: z - lr * J.T @ v(z)),
        ("sga", {"lam": lam, "align": False}, lambda J, v, z, n: z - lr * (v(z) + lam * 0.5 * (J.T - J) @ v(z))),
    ]:
        game = quadratic_game()
        J, v = field(game)
        z0 = game.point().clone()
        opt = build(name, game, lr, general_sum=general_sum, **kw)
        opt.step(game.losses if general_sum else game.loss)
        torch.testing.assert_close(game.point(), formula(J, v, z0, 2), rtol=1e-12, atol=1e-12, msg=name)


def test_altgd_moves_the_second_player_after_the_first():
    for max_first in (True, False):
        game = quadratic_game()
        J, v = field(game)
        z = game.point().clone()
        first = slice(0, 2) if max_first else slice(2, 5)  # y is (0, 1), x is (2, 3, 4)
        second = slice(2, 5) if max_first else slice(0, 2)
        z[first] -= 0.1 * v(z)[first]
        z[second] -= 0.1 * v(z)[second]
        build("altgd", game, max_first=max_first).step(game.loss)
        torch.testing.assert_close(game.point(), z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["simgd", "altgd"])
@pytest.mark.parametrize("loss", ["standard", "non_saturating"])
def test_gradient_play_equals_the_toolkits_plain_version(name, loss):
    """The pipeline's SimGD/AltGD take the same steps as fastgame.games' plain torch.optim
    versions (the toolkit's reference, which also picks zero- or general-sum per step)."""
    from fastgame import games
    paths = []
    for pipeline in (True, False):
        game = DiracGAN(loss=loss, penalty="r1", penalty_weight=0.3, theta=0.8, psi=-0.6).double()
        if pipeline:
            opt = build(name, game, 0.2, general_sum=not game.is_zero_sum)
        else:
            cls = games.SimGD if name == "simgd" else games.AltGD
            opt = cls(game.max_params, game.min_params, lr_max=0.2, lr_min=0.2)
        closure = game.loss if game.is_zero_sum else game.losses
        path = []
        for _ in range(25):
            opt.step(closure)
            path.append(game.point().clone())
        paths.append(torch.stack(path))
    torch.testing.assert_close(paths[0], paths[1], rtol=1e-12, atol=1e-12)


def test_ogda_extrapolates_from_the_last_gradient():
    game = quadratic_game()
    J, v = field(game)
    z0 = game.point().clone()
    z1 = z0 - 0.1 * v(z0)  # the first step is a plain gradient step
    z2 = z1 - 2 * 0.1 * v(z1) + 0.1 * v(z0)
    opt = build("ogda", game)
    opt.step(game.loss)
    opt.step(game.loss)
    torch.testing.assert_close(game.point(), z2, rtol=1e-12, atol=1e-12)


def test_sga_alignment_sign():
    """λ = λ₀·sign(⟨ξ, ∇H⟩⟨Aᵀξ, ∇H⟩/d + ε), ∇H = Jᵀξ."""
    for seed in range(6):
        game = quadratic_game(seed)
        J, v = field(game)
        z = game.point().clone()
        xi = v(z)
        antisym = 0.5 * (J.T - J) @ xi
        grad_h = J.T @ xi
        lam = 1.0 if (xi @ grad_h) * (antisym @ grad_h) / 5 + 0.1 >= 0 else -1.0
        build("sga", game, lam=1.0).step(game.loss)
        torch.testing.assert_close(game.point(), z - 0.1 * (xi + lam * antisym), rtol=1e-12, atol=1e-12)


def test_proximal_training_formula():
    """k warm-started ascent steps on V(G, D̃) − λ‖D − D̃‖², then G descends ∇_G V(G, D̃_k) and D
    ascends 2λ(D̃_k − D) (the quadratic game's max player y is D, x is G)."""
    lam, k, inner_lr, lr = 0.5, 3, 0.2, 0.1
    game = quadratic_game()
    J, v = field(game)
    z = game.point().clone()
    offset = torch.zeros(2, dtype=torch.float64)
    for _ in range(k):
        moved = torch.cat([z[:2] + offset, z[2:]])
        offset = offset + inner_lr * (-v(moved)[:2] - 2 * lam * offset)  # ∇_y V = −ξ_y
    moved = torch.cat([z[:2] + offset, z[2:]])
    expected = torch.cat([z[:2] + lr * 2 * lam * offset, z[2:] - lr * v(moved)[2:]])
    opt = build("proximal", game, lr, prox=lam, inner_steps=k, inner_lr=inner_lr)
    opt.step(game.loss)
    torch.testing.assert_close(game.point(), expected, rtol=1e-12, atol=1e-12)
    assert opt.get_info()["grad_evals"] == k + 1


def test_manifold_step_follows_the_best_response():
    """On f = xᵀAy + ½xᵀPx − ½yᵀQy the manifold {∇_y ℓ_y = 0} is linear: with enough CG
    iterations the tangent step is the exact projection of ∇ℓ_G (G = x, D = y) onto
    null(M), M = the D rows of J, and the retraction is plain gradient steps on ℓ_D."""
    game = quadratic_game(m=3, n=2)
    J, v = field(game)
    z = game.point().clone()
    M = J[:2]  # D = y is the max player: rows of ξ_y
    grad_g = torch.cat([game.A.T @ z[2:] - game.Q @ z[:2], game.A @ z[:2] + game.P @ z[2:]])  # ∇f = ∇ℓ_G
    tangent = grad_g - M.T @ torch.linalg.solve(M @ M.T, M @ grad_g)
    moved = z - 0.1 * tangent
    for _ in range(2):
        moved[:2] -= 0.3 * v(moved)[:2]
    opt = build("manifold", game, lr=0.1, ls_iters=10, retraction_steps=2)
    opt.param_groups[0]["lr"] = 0.3  # the discriminator's retraction step
    opt.step(game.loss)
    torch.testing.assert_close(game.point(), moved, rtol=1e-10, atol=1e-10)


def test_manifold_training_finds_the_wgan_gp_spurious_equilibrium():
    """Started on WGAN-GP's spurious critic branch, best-response-manifold training converges
    to the spurious equilibrium (ψ, θ) = (½, λ), at a distance from the data set by λ alone."""
    game = GaussianLocationGame("wgan_gp", 1.0, theta=torch.tensor([0.5], dtype=torch.float64),
                                psi=torch.tensor([0.75], dtype=torch.float64))
    assert torch.allclose(game.psi.detach(), game.spurious_critic())
    opt = fastgame.BestResponseManifold(game.max_params, game.min_params, lr_max=0.2, lr_min=0.05,
                                        general_sum=True, ls_iters=3)
    for _ in range(400):
        opt.step(game.losses)
    torch.testing.assert_close(game.point(), game.spurious_equilibrium(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("penalty", ["wgan_gp", "relu_gp"])
def test_proximal_training_and_the_relu_penalty(penalty):
    """Proximal training from the same spurious start: with WGAN-GP the generator stalls where
    the spurious branch ends (θ = 2λ, ψ = 0); the one-sided ReLU penalty removes the branch and
    the generator reaches the data (θ ≈ 0)."""
    game = GaussianLocationGame(penalty, 1.0, theta=torch.tensor([0.5], dtype=torch.float64),
                                psi=torch.tensor([0.75], dtype=torch.float64))
    opt = fastgame.ProximalTraining(game.max_params, game.min_params, lr_max=0.1, lr_min=0.05, prox=1.0,
                                    inner_steps=10, inner_lr=0.1)
    for _ in range(400):
        opt.step(game.loss)
    psi, theta = game.point().tolist()
    if penalty == "wgan_gp":
        assert abs(theta - 2.0) < 1e-3 and abs(psi) < 1e-3
    else:
        assert abs(theta) < 0.05


def test_lead_formula():
    game = quadratic_game()
    J, _ = field(game)
    z = lead_reference(J, game.point().clone(), 0.1, 0.5, 0.3, 2, 3)
    opt = build("lead", game, momentum=0.5, coupling=0.3)
    for _ in range(3):
        opt.step(game.loss)
    torch.testing.assert_close(game.point(), z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(optimizer="adam", betas=(0.5, 0.9), eps=1e-6), dict(momentum=0.9)])
def test_rules_match_torch_optim(kw):
    """SimGD's per-player rules are torch.optim.Adam's and SGD's, two-timescale rates included."""
    game, ref = quadratic_game(), quadratic_game()
    opt = fastgame.SimGD(game.max_params, game.min_params, lr_max=0.1, lr_min=0.03, **kw)
    rule = {k: v for k, v in kw.items() if k != "optimizer"}
    cls = torch.optim.Adam if kw.get("optimizer") == "adam" else torch.optim.SGD
    torch_opts = [cls([ref.y], lr=0.1, **rule), cls([ref.x], lr=0.03, **rule)]
    for _ in range(4):
        opt.step(game.loss)
        loss_y, loss_x = ref.losses()
        ref.y.grad, = torch.autograd.grad(loss_y, [ref.y], retain_graph=True)
        ref.x.grad, = torch.autograd.grad(loss_x, [ref.x])
        for o in torch_opts:
            o.step()
    torch.testing.assert_close(game.point(), ref.point(), rtol=1e-12, atol=1e-12)


def test_adam_forms_are_the_methods_with_adam():
    for adam_name, name in [("simadam", "simgd"), ("altadam", "altgd"), ("extra-adam", "extragradient"),
                            ("optimistic-adam", "ogda")]:
        a, b = quadratic_game(), quadratic_game()
        oa, ob = build(adam_name, a), build(name, b, optimizer="adam")
        for _ in range(3):
            oa.step(a.loss)
            ob.step(b.loss)
        assert torch.equal(a.point(), b.point()), adam_name
        assert oa.param_groups[1]["optimizer"] == "adam"


def test_info_reports_the_cost():
    expected = {"simgd": (1, 0), "altgd": (2, 0), "extragradient": (2, 0), "ogda": (1, 0), "consensus": (1, 1),
                "sga": (1, 3), "hamiltonian": (1, 1), "lead": (1, 2),
                "manifold": (1 + 5, 2 * 10 + 1)}  # from w = 0: no passes for Mᵀw and MMᵀw
    for name, (grads, passes) in expected.items():
        game = quadratic_game()
        opt = build(name, game)
        opt.step(game.loss)
        info = opt.get_info()
        assert (info["grad_evals"], info["hvp_passes"]) == (grads, passes), name
        assert info["time"] > 0
        if name == "manifold":  # warm-started from the saved w: two passes for MMᵀw
            opt.step(game.loss)
            assert opt.get_info()["hvp_passes"] == 2 * 10 + 3


# ---- who converges where ----------------------------------------------------------------------
def steps_to(game, opt, tol=1e-6, budget=3000):
    for t in range(1, budget + 1):
        opt.step(game.loss)
        if (game.point() - game.equilibrium()).norm() < tol:
            return t
    return None


@pytest.mark.parametrize("name, lr, kw", [("extragradient", 1.0, {}), ("ogda", 1.0, {}), ("consensus", 0.5, {}),
                                          ("sga", 0.5, {}), ("hamiltonian", 0.5, {}), ("lead", 0.5, {}),
                                          ("proximal", 0.3, dict(prox=0.5, inner_lr=0.3)), ("bcgd", 1.0, {}),
                                          ("acgd", 0.1, {})])
def test_dirac_gan_converges(float64, name, lr, kw):
    game = DiracGAN()
    opt = fastgame.DYNAMICS[name](game.max_params, game.min_params, lr_max=lr, lr_min=lr, **kw)
    assert steps_to(game, opt, budget=800) is not None


@pytest.mark.parametrize("name", ["simgd", "altgd"])
def test_dirac_gan_gradient_play_does_not_converge(float64, name):
    game = DiracGAN()
    opt = build(name, game, lr=0.3)
    for _ in range(2000):
        opt.step(game.loss)
    assert (game.point() - game.equilibrium()).norm() > 1.0  # SimGD spirals out, AltGD circles


def test_icr_quadratic(float64):
    """Equal rates 0.05: SimGD diverges; extragradient, OGDA, consensus and CGD converge. SGA
    with alignment does not: (0, 0) is no local Nash equilibrium (y's own loss is concave)."""
    for name, converges in [("extragradient", True), ("ogda", True), ("bcgd", True), ("simgd", False),
                            ("sga", False)]:
        game = ICRQuadratic()
        opt = fastgame.DYNAMICS[name](game.max_params, game.min_params, lr_max=0.05, lr_min=0.05)
        try:
            t = steps_to(game, opt, budget=1000)
        except FloatingPointError:  # diverged to inf
            t = None
        assert (t is not None) == converges, name
    game = ICRQuadratic()
    assert steps_to(game, build("consensus", game, lr=0.01)) is not None


def ill_conditioned_bilinear():
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    return Bilinear(U @ torch.diag(torch.logspace(0, -2, 10, dtype=torch.float64)) @ V.T)


def test_ill_conditioned_bilinear_cgd_converges_where_first_order_stalls():
    game = ill_conditioned_bilinear()
    assert steps_to(game, fastgame.BCGD(game.max_params, game.min_params, lr_max=100.0, lr_min=100.0),
                    budget=100) is not None
    for name, lr in [("extragradient", 0.9), ("ogda", 0.45), ("consensus", 0.5), ("sga", 0.5)]:
        game = ill_conditioned_bilinear()
        start = (game.point() - game.equilibrium()).norm()
        opt = build(name, game, lr)
        for _ in range(300):
            opt.step(game.loss)
        assert (game.point() - game.equilibrium()).norm() > 0.3 * start, name


# ---- capturable ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_capturable_step_reads_nothing_and_matches_eager(name):
    games = [quadratic_game(), quadratic_game()]
    opts = [build(name, games[0], capturable=True), build(name, games[1])]
    for t in range(4):
        with NoHostReads() if t else contextlib.nullcontext():  # the first step, outside, as a warm-up
            opts[0].step(games[0].loss)
        opts[1].step(games[1].loss)
    torch.testing.assert_close(games[0].point(), games[1].point(), rtol=1e-12, atol=1e-14)
    assert bool(opts[0].get_info()["finite"])


@pytest.mark.parametrize("name", ["simadam", "extragradient", "lead"])
def test_capturable_non_finite_step_is_skipped(name):
    game = quadratic_game()
    opt = build(name, game, capturable=True)
    opt.step(game.loss)
    before, point = opt.state_dict(), game.point().clone()
    opt.step(lambda: game.loss() * float("nan"))
    assert torch.equal(game.point(), point)
    with pytest.raises(FloatingPointError, match="loss"):
        opt.raise_if_nonfinite()
    assert state_equal(before, opt.state_dict())


# ---- state ---------------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    import fastgame
    from tests.test_dynamics import quadratic_game, KW
    out = {{}}
    for name, ckpt in torch.load({path!r}, weights_only=False).items():
        game = quadratic_game(1)
        game.load_state_dict(ckpt["game"])
        opt = fastgame.DYNAMICS[name](game.max_params, game.min_params, **KW.get(name, {{}}))
        opt.load_state_dict(ckpt["opt"])
        for _ in range(3):
            opt.step(game.loss)
        out[name] = game.point()
    torch.save(out, {out!r})
""")
KW = {"simgd": dict(momentum=0.5), "consensus": dict(optimizer="adam")}


def test_state_survives_a_new_process_bit_for_bit(tmp_path):
    ckpts, expected = {}, {}
    for name in METHODS:
        game = quadratic_game(1)
        opt = build(name, game, **KW.get(name, {}))
        for _ in range(2):
            opt.step(game.loss)
        ckpts[name] = {"game": copy.deepcopy(game.state_dict()), "opt": opt.state_dict()}
        for _ in range(3):
            opt.step(game.loss)
        expected[name] = game.point()
    path, out = str(tmp_path / "ckpt.pt"), str(tmp_path / "out.pt")
    torch.save(ckpts, path)
    subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, path=path, out=out)], check=True, cwd=ROOT)
    got = torch.load(out)
    for name in METHODS:
        assert torch.equal(got[name], expected[name]), name


@pytest.mark.parametrize("name", ["simadam", "ogda", "lead"])
def test_copies_keep_the_configuration(name):
    game = quadratic_game()
    opt = build(name, game, general_sum=True)
    opt.step(game.losses)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.player_names == ("x", "y") and clone.loss_names == ("loss_x", "loss_y")
        assert set(clone.state_dict()["state"]) == {"x", "y", "game"}


# ---- the pipeline's promise --------------------------------------------------------------------
def bad_loss(stage, game):
    x, y, A = game.x, game.y, game.A
    if stage == "loss":
        return x @ A @ y * float("nan")
    if stage == "gradient":  # d/dx sqrt(x² − x²) at 0 is inf·0 = nan; the loss is finite
        return x @ A @ y + torch.sqrt((x * x - x.detach() ** 2).sum())
    return x @ A @ NanInDoubleBackward.apply(y)


@pytest.mark.parametrize("name, stage", [(name, stage) for name in METHODS for stage in ("loss", "gradient", "hvp")
                                         if stage != "hvp" or name in SECOND_ORDER])
def test_non_finite_step_raises_and_changes_nothing(name, stage):
    game = quadratic_game()
    opt = build(name, game)
    opt.step(game.loss)
    before, point = opt.state_dict(), game.point().clone()
    match = {"loss": "loss", "gradient": "gradient of the min player", "hvp": "HVP"}[stage]
    with pytest.raises(FloatingPointError, match=match):
        opt.step(lambda: bad_loss(stage, game))
    assert torch.equal(game.point(), point) and state_equal(before, opt.state_dict())
    opt.step(game.loss)  # and it still works
    assert opt.state_dict()["state"]["game"]["step"] == 2


@pytest.mark.parametrize("name", ["altgd", "extragradient", "extra-adam", "proximal"])
def test_non_finite_at_the_extrapolated_point_restores_the_parameters(name):
    game = quadratic_game()
    opt = build(name, game)
    opt.step(game.loss)
    before, point = opt.state_dict(), game.point().clone()
    calls = []

    def closure():
        calls.append(1)
        return game.loss() if len(calls) == 1 else bad_loss("gradient", game)
    with pytest.raises(FloatingPointError, match="gradient of the min player (after|at)"):
        opt.step(closure)
    assert torch.equal(game.point(), point) and state_equal(before, opt.state_dict())


@pytest.mark.parametrize("name", METHODS)
def test_bad_input_raises_value_error_and_changes_nothing(name):
    game = quadratic_game()
    opt = build(name, game)
    bad = [lambda: opt.step(game.loss().detach()), lambda: opt.step(torch.ones(2, requires_grad=True)),
           lambda: opt.step("loss"), lambda: opt.step(lambda: game.loss().detach())]
    if opt.needs_closure:
        opt.step(game.loss)
    else:
        used = game.loss()
        opt.step(used)
        bad.append(lambda: opt.step(used))  # its graph holds the parameters of before that step
    before, point = opt.state_dict(), game.point().clone()
    for call in bad:
        with pytest.raises(ValueError):
            call()
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step(game.loss)
    opt.param_groups[0]["lr"] = 0.1
    assert torch.equal(game.point(), point) and state_equal(before, opt.state_dict())


def test_closure_methods_refuse_a_loss_tensor():
    for name in ["altgd", "extragradient", "proximal"]:
        game = quadratic_game()
        with pytest.raises(ValueError, match="closure"):
            build(name, game).step(game.loss())


@pytest.mark.parametrize("kw", [dict(optimizer="rmsprop"), dict(optimizer=("sgd",)), dict(betas=(0.9, 1.0)),
                                dict(momentum=-0.1), dict(eps=float("nan")), dict(gamma=-1.0), dict(lam="1"),
                                dict(general_sum=1), dict(prox=-1.0), dict(prox=0.0), dict(inner_steps=0)])
def test_construction_errors(kw):
    game = quadratic_game()
    name = ("consensus" if "gamma" in kw else "sga" if "lam" in kw else
            "proximal" if {"prox", "inner_steps"} & set(kw) else "simgd")
    with pytest.raises(ValueError):
        build(name, game, **kw)


def test_state_dict_of_another_method_is_refused():
    game = quadratic_game()
    lead, simgd = build("lead", game), build("simgd", game)
    lead.step(game.loss)
    with pytest.raises(ValueError, match="lacks"):
        simgd.load_state_dict(lead.state_dict())


@pytest.mark.parametrize("name", ["simadam", "extra-adam", "optimistic-adam", "consensus"])
def test_negative_second_moment_is_refused(name):
    """Adam's exp_avg_sq is >= 0: a state_dict with a negative one (√v would be NaN at every
    step) is refused with ValueError and changes nothing."""
    game = quadratic_game()
    kw = {"optimizer": "adam"} if name == "consensus" else {}
    opt = build(name, game, **kw)
    opt.step(game.loss)
    bad = opt.state_dict()
    bad["state"]["min"]["exp_avg_sq"][0] = -1.0
    before, point = opt.state_dict(), game.point().clone()
    with pytest.raises(ValueError, match="exp_avg_sq has negative values"):
        opt.load_state_dict(bad)
    assert torch.equal(game.point(), point) and state_equal(before, opt.state_dict())
    opt.step(game.loss)  # still steps
    assert torch.isfinite(game.point()).all()


def passes_taken(opt, closure, monkeypatch):
    """The double-backward passes of one step: autograd.grad calls that differentiate gradients
    against vectors (grad_outputs given; a loss's own gradient takes none)."""
    calls, real_grad = [], torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls.append(kwargs.get("grad_outputs") is None)
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    try:
        opt.step(closure)
    finally:
        monkeypatch.setattr(torch.autograd, "grad", real_grad)
    return calls.count(False)


@pytest.mark.parametrize("name, kw, passes", [
    ("sga", dict(align=False), (1, 1)), ("sga", dict(align=True), (2, 2)), ("consensus", {}, (1, 1)),
    ("hamiltonian", {}, (1, 1)), ("lead", {}, (1, 1)),
    # Mv and MMᵀp per CG iteration (Mᵀp differentiates ∇ₓℓ_x: none); warm-started, MMᵀw too
    ("manifold", dict(ls_iters=3, retraction_steps=1), (1 + 3, 1 + 3 + 1))])
@pytest.mark.parametrize("general_sum", [False, True])
def test_hvp_passes_count_only_the_passes_taken(monkeypatch, name, kw, passes, general_sum):
    """f = Σx + Σy²: ∇ₓf has no graph, so every product through it is zero and takes no pass
    (e.g. SGA's Aᵀξ: only its x half differentiates ∇ᵧf); hvp_passes counts the passes taken."""
    x = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64, requires_grad=True)

    def closure():
        f = x.sum() + (y ** 2).sum()
        return (-f, f) if general_sum else f

    opt = fastgame.DYNAMICS[name]([x], [y], lr_max=0.1, lr_min=0.1, general_sum=general_sum, **kw)
    for expected in passes:
        assert passes_taken(opt, closure, monkeypatch) == opt.get_info()["hvp_passes"] == expected, name


@pytest.mark.parametrize("name", METHODS)
def test_grad_evals_attribute_is_what_info_reports(name):
    game = quadratic_game()
    kw = dict(inner_steps=3) if name == "proximal" else dict(retraction_steps=2) if name == "manifold" else {}
    opt = build(name, game, **kw)
    opt.step(game.loss)
    expected = {"proximal": 3 + 1, "manifold": 1 + 2, "altgd": 2, "altadam": 2, "extragradient": 2,
                "extra-adam": 2}.get(name, 1)
    assert opt.grad_evals == opt.get_info()["grad_evals"] == expected


@pytest.mark.parametrize("name", ["simgd", "altgd", "ogda", "sga", "proximal"])
def test_learning_rates_are_read_once_per_step(monkeypatch, name):
    """A step reads the param groups' lr (float(lr) of both) once, not once per player."""
    game = quadratic_game()
    opt = build(name, game)
    reads, real = [], opt._lr_tensors
    monkeypatch.setattr(opt, "_lr_tensors", lambda: reads.append(1) or real())
    opt.step(game.loss)
    assert len(reads) == 1


def test_registry_names_every_method():
    assert set(METHODS) | {"acgd", "bcgd", "gacgd"} == set(fastgame.DYNAMICS)
    assert all(issubclass(cls, fastgame.GameOptimizer) for cls in fastgame.DYNAMICS.values())


@pytest.mark.parametrize("name", ["extragradient", "sga"])
def test_make_graphed_step_takes_the_dynamics(name):
    """make_graphed_step drives any capturable GameOptimizer (eagerly on CPU, with a warning)."""
    games = [quadratic_game(), quadratic_game()]
    opt, ref = build(name, games[0], capturable=True), build(name, games[1], capturable=True)
    scale = torch.ones((), dtype=torch.float64)
    with pytest.warns(UserWarning, match="eagerly"):
        step = fastgame.make_graphed_step(opt, lambda s: s * games[0].loss(), scale.clone())
    for _ in range(3):
        step(scale)
        ref.step(games[1].loss)
    assert torch.equal(games[0].point(), games[1].point())
