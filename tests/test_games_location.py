"""The Gaussian location game of Ehab's report (docs/design.md §1): WGAN-GP's spurious
equilibrium (θ, ψ) = (λ, ½) and the ReLU penalty, whose critic best response is the WGAN critic, with equilibrium θ = 0."""
import pytest
import torch

from fastgame import diagnostics
from fastgame.games import DiracGAN, GaussianLocationGame, SimGD


def at(game, psi, theta):
    game.set_point(torch.cat([torch.as_tensor(psi).reshape(-1), torch.as_tensor(theta).reshape(-1)]).double())
    return game


def critic_loss(game, psi, theta):
    return float(at(game, psi, theta).losses().max_player.detach())


def critic_grid(game, theta):
    """The critic's loss on a grid of ψ in [−4, 4] with step 1/40 (±1, ±½ lie on it exactly), θ fixed (1-D)."""
    grid = torch.arange(-160, 161, dtype=torch.float64) / 40
    return grid, torch.tensor([critic_loss(game, p, theta) for p in grid])


def local_minima(values):
    inner = (values[1:-1] < values[:-2]) & (values[1:-1] < values[2:])
    return torch.nonzero(inner).reshape(-1) + 1


# ---- WGAN-GP -------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0])
def test_wgan_gp_spurious_equilibrium_is_stationary_on_the_best_response_manifold(float64, lam):
    game = GaussianLocationGame("wgan_gp", weight=lam)
    point = game.spurious_equilibrium()
    torch.testing.assert_close(point, torch.tensor([0.5, lam]))
    v = diagnostics.vector_field(game, point)
    assert abs(float(v[0])) < 1e-12          # ∂L_D/∂ψ = 0: ψ = ½ is a stationary critic ...
    J = diagnostics.jacobian(game, point)
    assert float(J[0, 0]) == pytest.approx(-2 * lam)  # ... with ∂²L_D/∂ψ² = 2λ > 0: a local best response,
    # and the generator's total derivative along the critic's best response vanishes:
    assert abs(float(diagnostics.stackelberg_gradient(game, point))) < 1e-12
    # It is not a fixed point of simultaneous gradient play: ∂L_G/∂θ = −ψ = −½.
    assert float(v[1]) == pytest.approx(0.5)


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_wgan_gp_spurious_equilibrium_is_locally_stable(float64, lam):
    # On the branch ψ_s(θ) = 1 − θ/2λ the generator's loss is θ²/2λ − θ, so its total
    # derivative is θ/λ − 1: slope 1/λ > 0, a local minimum that descent returns to.
    game = GaussianLocationGame("wgan_gp", weight=lam)
    for theta in [0.3 * lam, 0.9 * lam, 1.2 * lam, 1.8 * lam]:
        psi = game.spurious_critic(torch.tensor([theta]))
        torch.testing.assert_close(psi, torch.tensor([1 - theta / (2 * lam)]))
        g = diagnostics.stackelberg_gradient(game, torch.cat([psi, torch.tensor([theta])]))
        assert float(g) == pytest.approx(theta / lam - 1, abs=1e-12)


def test_best_response_manifold_training_converges_to_the_spurious_equilibrium(float64):
    # The report's method: retract the critic to a local best response (gradient descent,
    # warm-started), then move the generator along the best response.
    lam = 1.0
    game = at(GaussianLocationGame("wgan_gp", weight=lam), 0.8, 0.4 * lam)
    critic = SimGD(game.max_params, game.min_params, lr_max=0.4 / lam, lr_min=0.0)
    for _ in range(20):
        for _ in range(10):
            critic.step(game.loss)
        with torch.no_grad():
            game.theta -= 0.5 * lam * diagnostics.stackelberg_gradient(game)
    torch.testing.assert_close(game.point(), torch.tensor([0.5, lam]), atol=1e-5, rtol=0)


def test_wgan_gp_critic_has_two_local_best_responses(float64):
    game = GaussianLocationGame("wgan_gp", weight=1.0)
    for theta in [-1.5, -0.5, 0.5, 1.5]:
        grid, values = critic_grid(game, theta)
        minima = grid[local_minima(values)]
        best = game.critic_best_response(torch.tensor([theta]))
        spurious = game.spurious_critic(torch.tensor([theta]))
        assert sorted(minima.tolist()) == pytest.approx(sorted([float(best), float(spurious)]), abs=1e-12)
        assert float(grid[values.argmin()]) == pytest.approx(float(best), abs=1e-12)  # the aligned critic


def test_simultaneous_training_stops_at_the_end_of_the_spurious_branch(float64):
    # Simultaneous play follows ∂L_G/∂θ = −ψ until ψ = 0, where the branch ends: θ = 2λ.
    game = at(GaussianLocationGame("wgan_gp", weight=1.0), 0.5, 0.5)
    opt = SimGD(game.max_params, game.min_params, lr_max=0.1, lr_min=0.1)
    for _ in range(600):
        opt.step(game.loss)
    torch.testing.assert_close(game.point(), torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)


def test_spurious_critic_is_a_saddle_in_two_dimensions(float64):
    # For d ≥ 2 the anti-aligned critic can rotate: its loss has curvature 2λ radially and
    # 2λ(a − 1)/a < 0 tangentially, a = 1 − ‖θ‖/2λ. Gradient-based critics leave it.
    lam, r = 1.0, 0.6
    game = GaussianLocationGame("wgan_gp", weight=lam, dim=2)
    theta = torch.tensor([r, 0.0])
    psi = game.spurious_critic(theta)
    hess = -diagnostics.jacobian(game, torch.cat([psi, theta]))[:2, :2]
    a = 1 - r / (2 * lam)
    torch.testing.assert_close(torch.linalg.eigvalsh(hess), torch.tensor([2 * lam * (a - 1) / a, 2 * lam]))


# ---- ReLU penalty ---------------------------------------------------------------------------
def test_relu_penalty_critic_best_response_is_the_wgan_critic(float64):
    game = GaussianLocationGame("relu_gp", weight=1.0)
    for theta in [-0.8, -0.3, 0.4, 0.9]:
        grid, values = critic_grid(game, theta)
        assert len(local_minima(values)) == 1  # no spurious best response
        assert float(grid[values.argmin()]) == -float(torch.sign(torch.tensor(theta)))  # f(x) = −sgn(θ)·x
        assert float(game.critic_best_response(torch.tensor([theta]))) == float(grid[values.argmin()])
        # the generator's loss at the best response is the Wasserstein distance |θ|
        psi = game.critic_best_response(torch.tensor([theta]))
        assert float(at(game, psi, theta).losses().min_player.detach()) == pytest.approx(abs(theta))


def test_relu_penalty_equilibrium_is_the_data(float64):
    game = GaussianLocationGame("relu_gp", weight=1.0)
    # (ψ, θ) = (0, 0) is stationary for both players ...
    assert diagnostics.vector_field(game, game.equilibrium()).abs().max() == 0
    # ... and best-response training (critic optimal, generator on its own gradient) goes there.
    at(game, 0.0, 0.8)
    eta = 0.05
    for _ in range(40):
        with torch.no_grad():
            game.psi.copy_(game.critic_best_response())
        theta_grad = -diagnostics.vector_field(game)[1]
        with torch.no_grad():
            game.theta -= eta * theta_grad
    assert abs(float(game.theta.detach())) <= eta + 1e-12


def test_wgan_gp_location_game_is_the_wgan_gp_dirac_gan(float64):
    # A linear critic only sees the means: with WGAN-GP both games have the same losses.
    lam = 1.3
    a = GaussianLocationGame("wgan_gp", weight=lam)
    b = DiracGAN("wgan", penalty="wgan_gp", penalty_weight=lam)
    for psi, theta in [(0.3, -0.7), (-1.2, 0.4), (2.0, 1.5)]:
        for la, lb in zip(at(a, psi, theta).losses(), at(b, psi, theta).losses()):
            torch.testing.assert_close(la, lb)


@pytest.mark.parametrize("make", [
    lambda: GaussianLocationGame("r1"), lambda: GaussianLocationGame("wgan_gp", weight=0.0),
    lambda: GaussianLocationGame(weight=-1.0), lambda: GaussianLocationGame(dim=0),
    lambda: GaussianLocationGame(dim=2, theta=torch.zeros(3)),
    lambda: GaussianLocationGame().critic_best_response(torch.zeros(1)),
    lambda: GaussianLocationGame("relu_gp", weight=0.5).critic_best_response(torch.ones(1)),
    lambda: GaussianLocationGame(None).critic_best_response(torch.ones(1)),
    lambda: GaussianLocationGame("relu_gp").spurious_critic(torch.ones(1)),
    lambda: GaussianLocationGame("wgan_gp", weight=0.5).spurious_critic(torch.ones(1)),
    lambda: GaussianLocationGame("relu_gp").spurious_equilibrium(),
])
def test_bad_arguments_raise(make):
    with pytest.raises(ValueError):
        make()
