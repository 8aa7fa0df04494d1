"""n-player games with known answers: on the cyclic bilinear game and on a monotone quadratic
game with a unique Nash equilibrium, simultaneous gradient descent spirals out at the stated
step sizes and PCGD converges, each at the rate its closed-form map predicts."""
import pytest
import torch

import fastgame
from fastgame.games import CyclicBilinear, PolymatrixGame, monotone_quadratic

F64 = torch.float64


def spectral_radius(M):
    return float(torch.linalg.eigvals(M).abs().max())


def simgd(game, lr, steps):
    """x ← x − η ξ(x) for every player at once; the distances to the equilibrium after each step."""
    out = []
    for _ in range(steps):
        game.set_point(game.point() - lr * game.vector_field())
        out.append(game.distance_to_equilibrium())
    return out


def pcgd(game, lr, steps):
    opt = fastgame.PCGD(game.players, lr=lr, tol=1e-13, atol=0.0)
    out = []
    for _ in range(steps):
        opt.step(game.losses)
        out.append(game.distance_to_equilibrium())
    return out


def cyclic(seed=0, sizes=(2, 2, 2)):
    g = torch.Generator().manual_seed(seed)
    n = len(sizes)
    return CyclicBilinear([torch.randn(sizes[i], sizes[(i + 1) % n], generator=g, dtype=F64) for i in range(n)])


def test_cyclic_bilinear_losses_gradients_and_zero_sum():
    game = cyclic(seed=1)
    fs = game.losses()
    assert abs(float(sum(fs).detach())) < 1e-12  # what one player wins another loses
    grads = torch.cat([torch.autograd.grad(f, x)[0] for f, x in zip(fs, game.xs)])
    torch.testing.assert_close(grads, game.vector_field())
    torch.testing.assert_close(game.J, -game.J.T)  # J = H_o, antisymmetric
    torch.testing.assert_close(game.interaction(), game.J)


@pytest.mark.parametrize("lr", [0.2, 1.0])
def test_cyclic_bilinear_simgd_diverges_and_pcgd_converges(lr):
    """Step sizes 0.2 and 1.0 for every player; 3 players of size 2 (J invertible)."""
    game = cyclic(seed=0)
    sigma = torch.linalg.svdvals(game.J)
    assert float(sigma.min()) > 1e-3  # the equilibrium 0 is unique
    start = game.distance_to_equilibrium()
    steps = 60
    # SimGD: ‖(I − ηJ)ᵏx‖ ≥ (1 + η²σ_min²)^{k/2}‖x‖ (I − ηJ is normal, |1 − iησ| ≥ that).
    grow = (1 + lr ** 2 * float(sigma.min()) ** 2) ** 0.5
    dist = simgd(game, lr, steps)
    assert dist[-1] >= start * grow ** steps * (1 - 1e-9) and dist[-1] > 1.5 * start
    # PCGD: its map (I + ηJ)⁻¹ has spectral norm ρ = 1/√(1 + η²σ_min²); ‖x_k‖ ≤ ρᵏ‖x_0‖.
    game.set_point(torch.ones_like(game.point()))
    rho = spectral_radius(game.pcgd_map(lr))
    assert rho == pytest.approx(1 / grow, rel=1e-9)
    dist = pcgd(game, lr, steps)
    assert all(d <= start * rho ** (k + 1) * (1 + 1e-6) for k, d in enumerate(dist))
    assert dist[-1] < start * rho ** steps * (1 + 1e-6) < start


def test_monotone_quadratic_has_the_unique_nash_equilibrium():
    game = monotone_quadratic([2, 3, 1, 2], mu=0.1, seed=3)
    eq = game.equilibrium()
    game.set_point(eq)
    assert float(game.vector_field().norm()) < 1e-10
    at_eq = [float(f.detach()) for f in game.losses()]
    g = torch.Generator().manual_seed(0)
    offsets = [0, 2, 5, 6, 8]
    for i in range(4):  # no player gains by moving alone: a Nash equilibrium
        for _ in range(5):
            moved = eq.clone()
            moved[offsets[i]:offsets[i + 1]] += torch.randn(offsets[i + 1] - offsets[i], generator=g, dtype=F64)
            game.set_point(moved)
            assert float(game.losses()[i].detach()) > at_eq[i]


@pytest.mark.parametrize("lr", [0.5, 2.0])
def test_monotone_quadratic_simgd_diverges_and_pcgd_converges(lr):
    """μ = 0.1, coupling 1, players of sizes 2, 3, 1, 2; step sizes 0.5 and 2.0 for every
    player. SimGD would need η < 2μ/(μ² + σ_max²), far below both."""
    mu = 0.1
    game = monotone_quadratic([2, 3, 1, 2], mu=mu, seed=3)
    K = game.J - mu * torch.eye(game.J.shape[0], dtype=F64)
    sigma = torch.linalg.svdvals(K)
    assert lr > 2 * mu / (mu ** 2 + float(sigma.max()) ** 2)
    assert spectral_radius(game.simgd_map(lr)) > 1
    start = game.distance_to_equilibrium()
    assert simgd(game, lr, 40)[-1] > 10 * start
    # PCGD's map is (1 − ημ)(I + ηK)⁻¹: spectral norm (1 − ημ)/√(1 + η²σ_min²) < 1.
    rho = (1 - lr * mu) / (1 + lr ** 2 * float(sigma.min()) ** 2) ** 0.5
    assert spectral_radius(game.pcgd_map(lr)) == pytest.approx(rho, rel=1e-8)
    game.set_point(torch.ones_like(game.point()))
    start = game.distance_to_equilibrium()
    dist = pcgd(game, lr, 40)
    assert all(d <= start * rho ** (k + 1) * (1 + 1e-6) for k, d in enumerate(dist))
    assert dist[-1] < 0.5 * start


def test_bad_games_are_refused():
    with pytest.raises(ValueError, match="at least two players"):
        PolymatrixGame(torch.eye(2), [2])
    with pytest.raises(ValueError, match="diagonal block 1"):
        PolymatrixGame(torch.tensor([[1.0, 0, 0], [0, 1, 2], [0, 0, 1]]), [1, 2])
    with pytest.raises(ValueError, match="shape"):
        PolymatrixGame(torch.eye(3), [1, 1])
    with pytest.raises(ValueError, match="at least three players"):
        CyclicBilinear([torch.eye(2), torch.eye(2)])
    with pytest.raises(ValueError, match="couples player 1"):
        CyclicBilinear([torch.ones(2, 2), torch.ones(2, 3), torch.ones(2, 2)])
