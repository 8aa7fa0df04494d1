"""The bilinear game and the ICR quadratic game (docs/design.md §7): the known behaviour of SimGD,
AltGD, BCGD and ACGD, with the spectral radii of their update maps in closed form."""
from functools import partial

import pytest
import torch

import fastgame
from fastgame import diagnostics
from fastgame.games import AltGD, Bilinear, ICRQuadratic, SimGD

SINGULAR_VALUES = (1.0, 1.5, 2.0)


@pytest.fixture
def A(float64):
    """A 3×3 matrix with singular values 1, 1.5, 2."""
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    V, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    return U @ torch.diag(torch.tensor(SINGULAR_VALUES)) @ V.T


def play(game, opt, steps):
    """Distances to the equilibrium, the start included."""
    out = [game.distance_to_equilibrium()]
    for _ in range(steps):
        opt.step(game.loss)
        out.append(game.distance_to_equilibrium())
    return torch.tensor(out)


# ---- bilinear -----------------------------------------------------------------------------
@pytest.mark.parametrize("lr", [0.01, 0.1, 1.0])
def test_bilinear_simgd_diverges_for_every_step_size(A, lr):
    game = Bilinear(A)
    # The field is orthogonal to z, so every SimGD step strictly increases ‖z‖ ...
    d = play(game, SimGD(game.max_params, game.min_params, lr_max=lr, lr_min=lr), 50)
    assert bool((d[1:] > d[:-1]).all())
    # ... and the update map I + ηJ has spectral radius √(1 + η²σ_max²) > 1.
    rho = diagnostics.spectral_radius(game, partial(SimGD, lr_max=lr, lr_min=lr), point=game.equilibrium())
    assert rho == pytest.approx((1 + lr ** 2 * max(SINGULAR_VALUES) ** 2) ** 0.5, rel=1e-8)


@pytest.mark.parametrize("lr", [0.2, 0.5, 1.0, 3.0])
def test_bilinear_bcgd_converges_for_every_step_size(A, lr):
    game = Bilinear(A)
    # CGD's update map on xᵀAy has spectral radius 1/√(1 + η²σ_min²) < 1 ...
    rho = diagnostics.spectral_radius(game, partial(fastgame.BCGD, lr_max=lr, lr_min=lr), point=game.equilibrium())
    expect = (1 + lr ** 2 * min(SINGULAR_VALUES) ** 2) ** -0.5
    assert rho == pytest.approx(expect, rel=1e-7)
    # ... and the iterates shrink at that rate.
    steps = 60
    d = play(game, fastgame.BCGD(game.max_params, game.min_params, lr_max=lr, lr_min=lr), steps)
    assert d[-1] < max(10 * expect ** steps, 1e-9) * d[0]


@pytest.mark.parametrize("lr", [0.3, 1.0, 3.0])
def test_bilinear_acgd_converges_for_a_range_of_step_sizes(A, lr):
    game = Bilinear(A)
    d = play(game, fastgame.ACGD(game.max_params, game.min_params, lr_max=lr, lr_min=lr), 80)
    assert d[-1] < 1e-6 * d[0]


def test_bilinear_altgd_circles(A):
    # AltGD's update map has determinant 1 and, for η·σ_max < 2, all eigenvalues on the unit
    # circle: it neither converges nor diverges.
    game = Bilinear(A)
    rho = diagnostics.spectral_radius(game, partial(AltGD, lr_max=0.3, lr_min=0.3), point=game.equilibrium())
    assert rho == pytest.approx(1.0, abs=1e-8)
    d = play(game, AltGD(game.max_params, game.min_params, lr_max=0.3, lr_min=0.3), 200)
    assert 0.3 * d[0] < d.min() and d.max() < 3 * d[0]


def test_bilinear_with_own_terms_is_convex_concave_and_simgd_converges(float64):
    # P, Q ≻ 0 pull each player back: SimGD converges for small steps (ρ < 1).
    game = Bilinear(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), P=torch.eye(2), Q=2 * torch.eye(2))
    opt = partial(SimGD, lr_max=0.1, lr_min=0.1)
    J = game.jacobian()
    expect = float(torch.linalg.eigvals(torch.eye(4) + 0.1 * J).abs().max())
    assert diagnostics.spectral_radius(game, opt) == pytest.approx(expect, rel=1e-8) and expect < 1
    assert play(game, opt(game.max_params, game.min_params), 300)[-1] < 1e-6


@pytest.mark.parametrize("kwargs", [
    dict(A=torch.ones(3)), dict(A=torch.ones(2, 0)), dict(A=[[1.0, float("nan")]]),
    dict(A=torch.ones(2, 3), P=torch.ones(3, 3)), dict(A=torch.ones(2, 2), Q=torch.tensor([[1.0, 2.0], [0.0, 1.0]])),
    dict(A=torch.ones(2, 3), x0=torch.ones(3)),
])
def test_bilinear_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        Bilinear(**kwargs)


def test_bilinear_players_and_losses(float64):
    game = Bilinear(torch.tensor([[2.0]]), x0=[3.0], y0=[-1.0])
    assert game.max_params == [game.y] and game.min_params == [game.x]
    loss_max, loss_min = game.losses()
    assert float(game.loss().detach()) == float(loss_min.detach()) == -float(loss_max.detach()) == -6.0
    with pytest.raises(ValueError):
        game.set_point(torch.zeros(3))


# ---- the ICR quadratic game (docs/design.md §7) -----------------------------------------------
def test_icr_simgd_with_a_slow_maximiser_converges(float64):
    game = ICRQuadratic()  # f = x² + 10xy + y², x minimises with η_x = 0.09, y maximises with η_y = 0.01
    opt = partial(SimGD, lr_max=0.01, lr_min=0.09)
    # The update map [[1.02, 0.1], [−0.9, 0.82]] (order y, x) has |λ|² = det = 0.9264.
    J = diagnostics.update_jacobian(game, opt)
    torch.testing.assert_close(J, torch.tensor([[1.02, 0.1], [-0.9, 0.82]]), rtol=0, atol=1e-9)
    assert diagnostics.spectral_radius(game, opt) == pytest.approx(0.9264 ** 0.5, rel=1e-8)
    d = play(game, opt(game.max_params, game.min_params), 500)
    assert d[-1] < 1e-6


def test_icr_maximiser_alone_diverges(float64):
    # x fixed: y ← y + 0.01(10x + 2y), so y + 5x grows by 1.02 each step.
    game = ICRQuadratic(x0=0.3, y0=1.0)
    opt = SimGD(game.max_params, game.min_params, lr_max=0.01, lr_min=0.0)
    for _ in range(300):
        opt.step(game.loss)
    assert float(game.x.detach()) == 0.3
    assert float(game.y.detach()) == pytest.approx((1.0 + 5 * 0.3) * 1.02 ** 300 - 5 * 0.3, rel=1e-10)
    assert float(game.y.detach()) > 900


def test_icr_equal_step_sizes_diverge_but_bcgd_converges(float64):
    game = ICRQuadratic()
    simgd = partial(SimGD, lr_max=0.05, lr_min=0.05)
    assert diagnostics.spectral_radius(game, simgd) == pytest.approx(1.24 ** 0.5, rel=1e-8)  # det of I + 0.05J
    assert play(game, simgd(game.max_params, game.min_params), 100)[-1] > 1e3

    game = ICRQuadratic()
    bcgd = partial(fastgame.BCGD, lr_max=0.05, lr_min=0.05)
    assert diagnostics.spectral_radius(game, bcgd, point=game.equilibrium()) < 0.9
    assert play(game, bcgd(game.max_params, game.min_params), 200)[-1] < 1e-8


# ---- the dynamics themselves ----------------------------------------------------------------
def test_simgd_on_both_losses_equals_simgd_on_the_zero_sum_loss(float64):
    a, b = ICRQuadratic(), ICRQuadratic()
    opt_a = SimGD(a.max_params, a.min_params, lr_max=0.01, lr_min=0.09)
    opt_b = SimGD(b.max_params, b.min_params, lr_max=0.01, lr_min=0.09)
    for _ in range(5):
        opt_a.step(a.loss())
        opt_b.step(b.losses)
    torch.testing.assert_close(a.point(), b.point())
    # one step by hand: y ascends f, x descends it
    x, y = 1.0, 1.0
    c = ICRQuadratic()
    SimGD(c.max_params, c.min_params, lr_max=0.01, lr_min=0.09).step(c.loss)
    torch.testing.assert_close(c.point(), torch.tensor([y + 0.01 * (10 * x + 2 * y), x - 0.09 * (2 * x + 10 * y)]))


def test_altgd_moves_the_second_player_from_the_new_point(float64):
    c = ICRQuadratic()
    AltGD(c.max_params, c.min_params, lr_max=0.01, lr_min=0.09).step(c.loss)  # y first
    y = 1.0 + 0.01 * (10 + 2)
    torch.testing.assert_close(c.point(), torch.tensor([y, 1.0 - 0.09 * (2 + 10 * y)]))
    c = ICRQuadratic()
    AltGD(c.max_params, c.min_params, lr_max=0.01, lr_min=0.09, max_first=False).step(c.loss)
    x = 1.0 - 0.09 * (2 + 10)
    torch.testing.assert_close(c.point(), torch.tensor([1.0 + 0.01 * (10 * x + 2), x]))


@pytest.mark.parametrize("bad", [
    lambda g: SimGD(g.max_params, g.min_params, lr_max=-0.1),
    lambda g: SimGD(g.max_params, g.max_params),
    lambda g: SimGD([], g.min_params),
    lambda g: SimGD(g.y, g.min_params),
    lambda g: AltGD(g.max_params, g.min_params).step(g.loss()),
    lambda g: SimGD(g.max_params, g.min_params).step(torch.ones(2, requires_grad=True)),
    lambda g: SimGD(g.max_params, g.min_params).step(lambda: (g.loss(),)),
])
def test_dynamics_reject_bad_input(bad):
    with pytest.raises(ValueError):
        bad(ICRQuadratic())
