"""fastgame.diagnostics against closed forms: Jacobians, Arnoldi, update maps, the
Stackelberg gradient, and the ICR and proximal probes (docs/design.md §7)."""
import math
from functools import partial

import pytest
import torch

import fastgame
from fastgame import diagnostics
from fastgame.games import GAN, AltGD, Bilinear, DiracGAN, GaussianMixture, ICRQuadratic, SimGD


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def quadratic_game(seed=0):
    A, P, Q = rand(3, 2, seed=seed), rand(3, 3, seed=seed + 1), rand(2, 2, seed=seed + 2)
    return Bilinear(A, P=P + P.T, Q=Q @ Q.T + torch.eye(2), x0=rand(3, seed=seed + 3), y0=rand(2, seed=seed + 4))


class GeneralSum(Bilinear):
    """The same game, declared general-sum, so diagnostics take the two-loss code path."""

    is_zero_sum = False


# ---- Jacobians ------------------------------------------------------------------------------
def test_jacobian_of_a_quadratic_game_is_its_closed_form(float64):
    game = quadratic_game()
    torch.testing.assert_close(diagnostics.jacobian(game), game.jacobian())
    # the vector field at z is J z (the field is linear)
    torch.testing.assert_close(diagnostics.vector_field(game), game.jacobian() @ game.point())


def test_zero_sum_and_general_sum_code_paths_agree(float64):
    game, twin = quadratic_game(1), GeneralSum(**{k: getattr(quadratic_game(1), k) for k in ("A", "P", "Q")},
                                               x0=quadratic_game(1).x.detach(), y0=quadratic_game(1).y.detach())
    torch.testing.assert_close(diagnostics.jacobian(twin), diagnostics.jacobian(game))
    torch.testing.assert_close(diagnostics.vector_field(twin), diagnostics.vector_field(game))


def test_general_sum_jacobian_matches_finite_differences(float64):
    game = DiracGAN("non_saturating", penalty="r1", penalty_weight=0.7, noise_std=0.5, theta=0.4, psi=-0.3)
    z, h = game.point(), 1e-6
    fd = torch.stack([(diagnostics.vector_field(game, z + h * e) - diagnostics.vector_field(game, z - h * e)) / (2 * h)
                      for e in torch.eye(2, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(diagnostics.jacobian(game), fd, atol=1e-8, rtol=1e-7)
    # and the field is each player's own negative gradient
    loss_max, loss_min = game.losses()
    expect = -torch.cat([torch.autograd.grad(loss_max, game.psi, retain_graph=True)[0],
                         torch.autograd.grad(loss_min, game.theta)[0]])
    torch.testing.assert_close(diagnostics.vector_field(game), expect)


def test_diagnostics_leave_the_game_where_it_was(float64):
    game = quadratic_game()
    z = game.point()
    diagnostics.jacobian(game, point=torch.zeros(5))
    diagnostics.spectral_radius(game, partial(SimGD, lr_max=0.1, lr_min=0.1), point=torch.ones(5))
    assert torch.equal(game.point(), z)


# ---- Arnoldi --------------------------------------------------------------------------------
def sort_lm(values):
    return values[torch.argsort(values.abs(), descending=True)]


def test_arnoldi_with_a_full_krylov_space_is_exact():
    M = rand(12, 12, seed=5)
    ritz = diagnostics.arnoldi_eigenvalues(lambda v: M @ v, 12, k=12, num_iters=12)
    exact = sort_lm(torch.linalg.eigvals(M))
    torch.testing.assert_close(ritz.abs(), exact.abs())
    # every Ritz value is an eigenvalue
    assert all(float((exact - r).abs().min()) < 1e-8 for r in ritz)


def test_arnoldi_finds_well_separated_extreme_eigenvalues_early():
    # 200×200 with eigenvalues 10, −7, 4 ± 3i and the rest in the unit disc, non-normal.
    n = 200
    lam = torch.cat([torch.tensor([10.0, -7.0]), 0.9 * torch.rand(n - 4, generator=torch.Generator().manual_seed(1))])
    D = torch.block_diag(torch.diag(lam.double()), torch.tensor([[4.0, 3.0], [-3.0, 4.0]], dtype=torch.float64))
    V = torch.eye(n, dtype=torch.float64) + 0.1 * rand(n, n, seed=2) / math.sqrt(n)
    M = V @ D @ torch.linalg.inv(V)
    ritz = diagnostics.arnoldi_eigenvalues(lambda v: M @ v, n, k=4, num_iters=40)
    expect = torch.tensor([10.0, -7.0, 4 + 3j, 4 - 3j], dtype=torch.complex128)
    for r in expect:
        assert float((ritz - r).abs().min()) < 1e-8
    lr = diagnostics.arnoldi_eigenvalues(lambda v: M @ v, n, k=1, num_iters=40, which="LR")
    sr = diagnostics.arnoldi_eigenvalues(lambda v: M @ v, n, k=1, num_iters=40, which="SR")
    assert abs(complex(lr[0]) - 10) < 1e-8 and abs(complex(sr[0]) + 7) < 1e-8


def test_arnoldi_on_a_symmetric_operator_is_lanczos():
    B = rand(50, 50, seed=3)
    S = B @ B.T
    top = diagnostics.arnoldi_eigenvalues(lambda v: S @ v, 50, k=1, num_iters=50, which="LR")
    assert float(top.imag.abs()) < 1e-10
    assert float(top.real) == pytest.approx(float(torch.linalg.eigvalsh(S)[-1]), rel=1e-10)


def test_arnoldi_stops_on_an_invariant_subspace():
    d = torch.zeros(10, dtype=torch.float64)
    d[:2] = torch.tensor([3.0, -2.0])
    start = torch.zeros(10, dtype=torch.float64)
    start[:2] = 1.0
    ritz = diagnostics.arnoldi_eigenvalues(lambda v: d * v, 10, k=5, num_iters=10, start=start)
    torch.testing.assert_close(ritz, torch.tensor([3.0, -2.0], dtype=torch.complex128))


@pytest.mark.parametrize("kw", [dict(which="LI"), dict(k=0), dict(num_iters=0),
                                dict(start=torch.zeros(4, dtype=torch.float64)), dict(start=torch.ones(3))])
def test_arnoldi_rejects_bad_arguments(kw):
    with pytest.raises(ValueError):
        diagnostics.arnoldi_eigenvalues(lambda v: v, 4, **kw)


def test_jacobian_eigenvalues_of_a_network_game_match_the_dense_jacobian(float64):
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    D = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    game = GAN(G, D, GaussianMixture.ring().to(torch.float64).sample, latent_dim=2, batch_size=32)
    n = sum(game.num_params)
    torch.manual_seed(1)  # the same batch for both
    dense = sort_lm(torch.linalg.eigvals(diagnostics.jacobian(game)))
    torch.manual_seed(1)
    ritz = diagnostics.jacobian_eigenvalues(game, k=5, num_iters=n)
    torch.testing.assert_close(ritz.abs(), dense[:5].abs())
    for r in ritz:
        assert float((dense - r).abs().min()) < 1e-8


# ---- update maps ----------------------------------------------------------------------------
def test_simgd_and_altgd_update_maps_in_closed_form(float64):
    game = quadratic_game(2)
    J, n_max = game.jacobian(), 2
    eta = torch.tensor([0.1, 0.1, 0.05, 0.05, 0.05], dtype=torch.float64)  # (y: lr_max, x: lr_min)
    simgd = diagnostics.update_jacobian(game, partial(SimGD, lr_max=0.1, lr_min=0.05))
    torch.testing.assert_close(simgd, torch.eye(5) + torch.diag(eta) @ J)
    # AltGD, max player first: z ← (I + η P_min J)(I + η P_max J) z for this linear field.
    P_max = torch.diag(torch.tensor([1.0] * n_max + [0.0] * 3))
    P_min = torch.eye(5) - P_max
    altgd = diagnostics.update_jacobian(game, partial(AltGD, lr_max=0.1, lr_min=0.05))
    expect = (torch.eye(5) + torch.diag(eta) @ P_min @ J) @ (torch.eye(5) + torch.diag(eta) @ P_max @ J)
    torch.testing.assert_close(altgd, expect)


def test_update_jacobian_rejects_a_bad_delta(float64):
    with pytest.raises(ValueError):
        diagnostics.update_jacobian(quadratic_game(), partial(SimGD, lr_max=0.1, lr_min=0.1), delta=0.0)


# ---- Stackelberg gradient -------------------------------------------------------------------
def test_stackelberg_gradient_of_a_quadratic_game(float64):
    # y (max) best-responds y*(x) = Q⁻¹Aᵀx, so x's total gradient is (P + AQ⁻¹Aᵀ)x at any y.
    game = quadratic_game(3)
    expect = (game.P + game.A @ torch.linalg.solve(game.Q, game.A.T)) @ game.x.detach()
    torch.testing.assert_close(diagnostics.stackelberg_gradient(game), expect)


# ---- ICR probe (Schäfer et al. 2020) ---------------------------------------------------------
X0, Y0, ETA_X, ETA_Y, N = 0.2, 0.1, 0.09, 0.01, 100


def f(x, y):
    return x * x + 10 * x * y + y * y


def test_icr_probe_on_the_quadratic_game_in_closed_form(float64):
    game = ICRQuadratic(x0=X0, y0=Y0)
    probe = diagnostics.icr_probe(game, lr_max=ETA_Y, lr_min=ETA_X, steps=N, counter_steps=N)
    assert torch.equal(game.point(), torch.tensor([Y0, X0]))  # the checkpoint is restored

    # Discriminator (y) alone: y + 5x grows by 1.02 a step.
    t = torch.arange(N + 1, dtype=torch.float64)
    y = (Y0 + 5 * X0) * 1.02 ** t - 5 * X0
    run = probe.discriminator_only
    torch.testing.assert_close(run.output_change, (y - Y0).abs())
    torch.testing.assert_close(run.discriminator_loss, -f(X0, y))
    torch.testing.assert_close(run.generator_grad_norm, (2 * X0 + 10 * y).abs())
    # Counterattack: x ← 0.82x − 0.9y_N against the frozen y_N, x → −5y_N, and the
    # discriminator's loss −f rises to 24·y_N².
    yN = float(y[-1])
    x = -5 * yN + (X0 + 5 * yN) * 0.82 ** t
    torch.testing.assert_close(run.counterattack_loss, -f(x, yN))
    torch.testing.assert_close(run.counterattack_grad_norm, (2 * x + 10 * yN).abs())

    # Both players: the linear map of SimGD.
    M = torch.tensor([[1 + 2 * ETA_Y, 10 * ETA_Y], [-10 * ETA_X, 1 - 2 * ETA_X]], dtype=torch.float64)
    z = [torch.tensor([Y0, X0], dtype=torch.float64)]
    for _ in range(N):
        z.append(M @ z[-1])
    z = torch.stack(z)
    torch.testing.assert_close(probe.both.output_change, (z[:, 0] - Y0).abs())
    torch.testing.assert_close(probe.both.discriminator_loss, -f(z[:, 1], z[:, 0]))

    # The ICR paper's observations: alone the discriminator runs off, its loss drops and the
    # generator's gradient grows; trained together it barely moves; and the counterattack
    # on the lone discriminator raises its loss far more.
    alone, both = probe.discriminator_only, probe.both
    assert alone.output_change[-1] > 50 * both.output_change[-1]
    assert alone.discriminator_loss[-1] < alone.discriminator_loss[0] - 50
    assert alone.generator_grad_norm[-1] > 20 * alone.generator_grad_norm[0]
    assert float(alone.counterattack_loss[-1]) == pytest.approx(24 * yN ** 2, rel=1e-6)
    rise = lambda r: float(r.counterattack_loss[-1] - r.counterattack_loss[0])  # noqa: E731
    assert rise(alone) > 1e3 * rise(both) > 0


def test_icr_probe_takes_any_optimizer_and_outputs(float64):
    game = ICRQuadratic(x0=X0, y0=Y0)
    simgd = diagnostics.icr_probe(game, lr_max=ETA_Y, lr_min=ETA_X, steps=20, counter_steps=20)
    # BCGD with the generator's rate 0 is plain gradient ascent for the discriminator.
    bcgd = diagnostics.icr_probe(game, lr_max=ETA_Y, lr_min=ETA_X, steps=20, counter_steps=20,
                                 optimizer=fastgame.BCGD, outputs=lambda: 3 * game.y)
    torch.testing.assert_close(bcgd.discriminator_only.discriminator_loss, simgd.discriminator_only.discriminator_loss)
    torch.testing.assert_close(bcgd.discriminator_only.output_change, 3 * simgd.discriminator_only.output_change)
    torch.testing.assert_close(bcgd.discriminator_only.counterattack_loss,
                               simgd.discriminator_only.counterattack_loss)


def test_icr_probe_on_a_network_gan():
    torch.manual_seed(0)
    mix = GaussianMixture.ring()
    G = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    D = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    game = GAN(G, D, mix.sample, latent_dim=2, batch_size=64)
    state = {k: v.clone() for k, v in game.state_dict().items()}
    probe_x = torch.cat([mix.sample(50), game.sample(50)])
    out = diagnostics.icr_probe(game, lr_max=0.05, lr_min=0.05, steps=15, counter_steps=5,
                                outputs=lambda: D(probe_x))
    for run in (out.discriminator_only, out.both):
        assert run.discriminator_loss.shape == run.output_change.shape == run.generator_grad_norm.shape == (16,)
        assert run.counterattack_loss.shape == run.counterattack_grad_norm.shape == (6,)
        assert run.output_change[0] == 0
        assert torch.isfinite(torch.stack([run.discriminator_loss, run.generator_grad_norm])).all()
    assert out.discriminator_only.discriminator_loss[-1] < out.discriminator_only.discriminator_loss[0]
    assert all(torch.equal(v, state[k]) for k, v in game.state_dict().items())


# ---- proximal probe (Farnia & Ozdaglar 2020) -------------------------------------------------
THETA0, PSI0 = 0.5, 0.8


def test_nash_gap_with_a_fixed_discriminator(float64):
    # WGAN Dirac-GAN, ψ fixed: L_G = −ψ₀θ, so each SGD step gains lr·ψ₀².
    game = DiracGAN("wgan", theta=THETA0, psi=PSI0)
    probe = diagnostics.proximal_probe(game, lr=0.1, steps=30)
    t = torch.arange(31, dtype=torch.float64)
    torch.testing.assert_close(probe.values, -PSI0 * (THETA0 + t * 0.1 * PSI0))
    assert probe.gap == pytest.approx(30 * 0.1 * PSI0 ** 2, rel=1e-12)
    assert torch.equal(game.point(), torch.tensor([PSI0, THETA0])) and game.theta.grad is None


def test_proximal_gap_in_closed_form(float64):
    # V_λ(θ) = max_ψ̃ −ψ̃θ − λ(ψ̃ − ψ₀)² = −ψ₀θ + θ²/4λ, minimised at θ = 2λψ₀:
    # gap (θ₀ − 2λψ₀)²/4λ.
    lam = 1.0
    game = DiracGAN("wgan", theta=THETA0, psi=PSI0)
    probe = diagnostics.proximal_probe(game, lr=1.0, steps=60, lam=lam)
    assert float(probe.values[0]) == pytest.approx(-PSI0 * THETA0 + THETA0 ** 2 / (4 * lam), rel=1e-12)
    assert probe.gap == pytest.approx((THETA0 - 2 * lam * PSI0) ** 2 / (4 * lam), rel=1e-10)


@pytest.mark.parametrize("lam", [math.inf, 0.5])
def test_no_gap_at_an_equilibrium(float64, lam):
    game = DiracGAN("standard", penalty="r1", penalty_weight=1.0, theta=0.0, psi=0.0)
    assert diagnostics.proximal_probe(game, lr=0.1, steps=20, lam=lam).gap == pytest.approx(0.0, abs=1e-14)


# ---- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda g: diagnostics.jacobian(torch.nn.Linear(2, 2)),
    lambda g: diagnostics.vector_field(g, point=torch.zeros(3)),
    lambda g: diagnostics.icr_probe(g, 0.1, 0.1, steps=-1),
    lambda g: diagnostics.proximal_probe(g, lr=0.1, lam=0.0),
    lambda g: diagnostics.proximal_probe(g, lr=0.1, lam=1.0, inner_lr=-1.0),
    lambda g: diagnostics.proximal_probe(g, lr=0.1, steps=1.5),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call(ICRQuadratic())
