"""The Dirac-GAN (Mescheder et al. 2018): the Jacobian's eigenvalues at the
equilibrium against the paper's formulas, and which dynamics converge."""
import cmath
from functools import partial

import pytest
import torch

from fastgame import diagnostics
from fastgame.games import AltGD, DiracGAN, SimGD, gaussian_points

# f'(0) of Mescheder's f for each loss; f''(0) is −1/4 for the classifier losses, 0 for WGAN.
F1 = {"standard": 0.5, "non_saturating": 0.5, "wgan": 1.0}
F2 = {"standard": -0.25, "non_saturating": -0.25, "wgan": 0.0}
LOSSES = list(F1)


def sorted_eigs(values):
    values = [complex(v) for v in values]
    return sorted(values, key=lambda z: (round(z.real, 9), round(z.imag, 9)))


def assert_eigs(actual, expected, tol=1e-9):
    for a, e in zip(sorted_eigs(actual), sorted_eigs(expected)):
        assert abs(a - e) < tol, (sorted_eigs(actual), sorted_eigs(expected))


@pytest.mark.parametrize("loss", LOSSES)
def test_unregularised_eigenvalues_are_purely_imaginary(float64, loss):
    game = DiracGAN(loss)
    J = diagnostics.jacobian(game, point=game.equilibrium())
    assert_eigs(torch.linalg.eigvals(J), [F1[loss] * 1j, -F1[loss] * 1j])


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("penalty", ["r1", "r2"])
@pytest.mark.parametrize("gamma", [0.3, 1.0, 3.0])
def test_gradient_penalty_eigenvalues(float64, loss, penalty, gamma):
    # Mescheder et al. 2018, Lemma 3.3: −γ/2 ± √(γ²/4 − f′(0)²); real (no rotation) once γ ≥ 2f′(0).
    game = DiracGAN(loss, penalty=penalty, penalty_weight=gamma)
    root = cmath.sqrt(gamma ** 2 / 4 - F1[loss] ** 2)
    expected = [-gamma / 2 + root, -gamma / 2 - root]
    assert_eigs(torch.linalg.eigvals(diagnostics.jacobian(game, point=game.equilibrium())), expected)
    assert_eigs(game.equilibrium_eigenvalues(), expected)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("sigma", [0.5, 2.5])
def test_instance_noise_eigenvalues(float64, loss, sigma):
    # Mescheder et al. 2018, Lemma 3.2: f″(0)σ² ± √(f″(0)²σ⁴ − f′(0)²): damping only where f″(0) ≠ 0.
    game = DiracGAN(loss, noise_std=sigma)
    a = F2[loss] * sigma ** 2
    root = cmath.sqrt(a * a - F1[loss] ** 2)
    expected = [a + root, a - root]
    assert_eigs(torch.linalg.eigvals(diagnostics.jacobian(game, point=game.equilibrium())), expected)
    assert_eigs(game.equilibrium_eigenvalues(), expected)


@pytest.mark.parametrize("loss", LOSSES)
def test_noise_and_penalty_add_their_damping(float64, loss):
    # Jacobian [[2σ²f″(0) − γ, −f′(0)], [f′(0), 0]]: eigenvalues τ/2 ± √(τ²/4 − f′(0)²).
    sigma, gamma = 1.5, 0.4
    game = DiracGAN(loss, penalty="r1", penalty_weight=gamma, noise_std=sigma)
    tau = 2 * sigma ** 2 * F2[loss] - gamma
    root = cmath.sqrt(tau * tau / 4 - F1[loss] ** 2)
    expected = [tau / 2 + root, tau / 2 - root]
    assert_eigs(torch.linalg.eigvals(diagnostics.jacobian(game, point=game.equilibrium())), expected)
    assert_eigs(game.equilibrium_eigenvalues(), expected)


def test_arnoldi_finds_the_same_eigenvalues(float64):
    game = DiracGAN("standard", penalty="r1", penalty_weight=0.3, noise_std=0.4)
    assert_eigs(diagnostics.jacobian_eigenvalues(game, k=2, point=game.equilibrium()), game.equilibrium_eigenvalues())


@pytest.mark.parametrize("kwargs", [dict(), dict(penalty="r1", penalty_weight=1.0), dict(noise_std=1.0),
                                    dict(penalty="r2", penalty_weight=0.5, noise_std=0.3)])
@pytest.mark.parametrize("loss", LOSSES)
def test_equilibrium_is_stationary(float64, loss, kwargs):
    game = DiracGAN(loss, **kwargs)
    assert diagnostics.vector_field(game, point=game.equilibrium()).abs().max() < 1e-15


LR, STEPS = 0.2, 300


def run(game, algorithm):
    opt = algorithm(game.max_params, game.min_params, lr_max=LR, lr_min=LR)
    closure = game.loss if game.is_zero_sum else game.losses
    d = [game.distance_to_equilibrium()]
    for _ in range(STEPS):
        opt.step(closure)
        d.append(game.distance_to_equilibrium())
    return torch.tensor(d)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("algorithm", [SimGD, AltGD])
def test_unregularised_training_does_not_converge(float64, loss, algorithm):
    game = DiracGAN(loss, theta=0.5, psi=0.5)
    d = run(game, algorithm)
    # The iterates spiral out (SimGD), circle (AltGD) or, for the non-saturating loss, settle
    # on a limit cycle (SimGD) or creep in sublinearly, ~t^(-1/2) (AltGD): no linear rate.
    floor = 0.25 if (loss, algorithm) == ("non_saturating", AltGD) else 0.5
    assert d.min() > floor * d[0]
    # Locally: SimGD's update map I + ηJ has radius √(1 + η²f′(0)²) > 1, AltGD's exactly 1.
    rho = diagnostics.spectral_radius(game, partial(algorithm, lr_max=LR, lr_min=LR), point=game.equilibrium())
    assert rho == pytest.approx((1 + LR ** 2 * F1[loss] ** 2) ** 0.5 if algorithm is SimGD else 1.0, rel=1e-8)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("algorithm", [SimGD, AltGD])
def test_r1_makes_training_converge(float64, loss, algorithm):
    game = DiracGAN(loss, penalty="r1", penalty_weight=1.0, theta=0.5, psi=0.5)
    d = run(game, algorithm)
    assert d[-1] < 1e-6 * d[0]
    rho = diagnostics.spectral_radius(game, partial(algorithm, lr_max=LR, lr_min=LR), point=game.equilibrium())
    assert rho < 1


@pytest.mark.parametrize("loss", ["standard", "non_saturating"])
@pytest.mark.parametrize("algorithm", [SimGD, AltGD])
def test_instance_noise_makes_training_converge(float64, loss, algorithm):
    game = DiracGAN(loss, noise_std=1.0, theta=0.5, psi=0.5)
    d = run(game, algorithm)
    assert d[-1] < 1e-4 * d[0]


def test_instance_noise_does_not_help_wgan(float64):
    # f″(0) = 0: the noise averages out of the linear WGAN loss, the eigenvalues stay ±i.
    game = DiracGAN("wgan", noise_std=1.0, theta=0.5, psi=0.5)
    d = run(game, SimGD)
    assert d[-1] > d[0]


def test_gaussian_points_match_the_first_moments(float64):
    z = gaussian_points(16, 0.7)
    assert abs(float(z.mean())) < 1e-15
    assert float(z.pow(2).mean()) == pytest.approx(0.49, rel=1e-12)
    torch.testing.assert_close(z, -z.flip(0))
    with pytest.raises(ValueError):
        gaussian_points(1, 1.0)


@pytest.mark.parametrize("kwargs", [
    dict(loss="hinge"), dict(penalty="r3"), dict(penalty="r1", penalty_weight=-1.0),
    dict(penalty_weight=1.0), dict(noise_std=float("inf")), dict(noise_std=1.0, noise_points=1),
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        DiracGAN(**kwargs)


def test_interpolating_penalties_have_no_jacobian_at_the_equilibrium():
    with pytest.raises(ValueError):
        DiracGAN("wgan", penalty="wgan_gp", penalty_weight=1.0).equilibrium_eigenvalues()


def test_players_and_zero_sum_flag():
    game = DiracGAN("non_saturating")
    assert game.max_params == [game.psi] and game.min_params == [game.theta]
    assert not game.is_zero_sum and DiracGAN("standard").is_zero_sum and DiracGAN("wgan").is_zero_sum
