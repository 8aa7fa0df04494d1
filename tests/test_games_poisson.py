"""CPINN's Poisson game: collocation points, the Laplacian residual against the exact solution."""
import pytest
import torch

from fastgame.games.poisson import CompetitivePoisson, collocation_points, exact_solution, evaluation_grid


class Exact(torch.nn.Module):
    """u = sin x cos y, the problem's solution, as a 'PINN'."""

    def forward(self, xy):
        return exact_solution(xy)


def test_points_fill_the_square_and_its_edges():
    inside, edges = collocation_points(400, 25, torch.Generator().manual_seed(0))
    assert inside.shape == (400, 2) and edges.shape == (100, 2) and inside.dtype == torch.float64
    assert bool(((inside > -2) & (inside < 2)).all())
    for d in range(2):  # Latin hypercube: one point in each of the 400 strata per coordinate
        strata = torch.floor((inside[:, d] + 2) / 4 * 400).long()
        assert sorted(strata.tolist()) == list(range(400))
    assert bool(((edges.abs() == 2).any(dim=1)).all()) and bool((edges.abs() <= 2).all())


def test_residual_vanishes_for_the_exact_solution():
    game = CompetitivePoisson(interior=300, per_edge=10)
    game.pinn = Exact()
    torch.testing.assert_close(game.residual(), torch.zeros(300, 1, dtype=torch.float64), atol=1e-12, rtol=0)
    assert float(game.boundary_error().abs().max()) == 0.0
    assert game.pinn_loss().item() < 1e-24
    assert game.relative_l2(evaluation_grid(32)) == 0.0


def test_zero_sum_losses_and_players():
    game = CompetitivePoisson(interior=50, per_edge=5, seed=3)
    loss_d, loss_pinn = game.losses()
    assert torch.equal(loss_d, -loss_pinn) and torch.equal(game.loss(), loss_pinn)
    assert sum(p.numel() for p in game.max_params) == 2 * 50 + 50 + 3 * 2550 + 102  # 2-50-50-50-50-2
    assert sum(p.numel() for p in game.min_params) == 150 + 2 * 2550 + 51  # 2-50-50-50-1
    same = CompetitivePoisson(interior=50, per_edge=5, seed=3)
    assert torch.equal(game.point(), same.point()) and torch.equal(game.xy_interior, same.xy_interior)
    with pytest.raises(ValueError, match="interior and per_edge"):
        CompetitivePoisson(interior=0)
