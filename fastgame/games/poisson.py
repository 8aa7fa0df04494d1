r"""The competitive physics-informed Poisson problem of CPINN ("Competitive Physics Informed
Networks", Zeng, Kothari, Bryngelson & Schäfer, ICLR 2023).

On the square −2 ≤ x, y ≤ 2, find u with

    −Δu = f,   f = 2 sin x cos y,   u = sin x cos y on the boundary,

whose exact solution is u = sin x cos y. A PINN (2-50-50-50-1, tanh) is the min player; a
discriminator (2-50-50-50-50-2, ReLU) is the max player. Its two outputs weigh the PINN's
residuals pointwise, the first at the interior collocation points, the second on the boundary:

    L = mean(D₁(x_i) · r(x_i)) + mean(D₂(x_b) · (u(x_b) − u_b)),   r = −Δu − f,

which the PINN minimises and the discriminator maximises. The plain PINN loss (for Adam) is
the mean squared residual plus the mean squared boundary error. Every mixed second-derivative
product of L is a third-order autograd pass through the Laplacian.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .base import Game, PlayerLosses

LOWER, UPPER = -2.0, 2.0


def exact_solution(xy: Tensor) -> Tensor:
    """u(x, y) = sin x cos y at the rows of ``xy`` (n, 2), shape (n, 1)."""
    return torch.sin(xy[:, :1]) * torch.cos(xy[:, 1:])


def source_term(xy: Tensor) -> Tensor:
    """f = −Δu = 2 sin x cos y at the rows of ``xy`` (n, 2), shape (n, 1)."""
    return 2 * exact_solution(xy)


def mlp(widths: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    """Fully connected layers ``widths[0] → … → widths[-1]`` with ``activation`` between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def collocation_points(interior: int, per_edge: int, generator: torch.Generator,
                       dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """``interior`` points by Latin hypercube sampling of the square (as CPINN) and
    ``per_edge`` uniform points on each of its 4 edges: ``(xy_interior, xy_boundary)``."""
    width = UPPER - LOWER
    # Latin hypercube: one point in each of `interior` equal strata per coordinate, strata shuffled.
    strata = torch.stack([torch.randperm(interior, generator=generator) for _ in range(2)], dim=1)
    inside = LOWER + width * (strata + torch.rand(interior, 2, generator=generator)) / interior
    t = LOWER + width * torch.rand(4, per_edge, generator=generator)
    lo, hi = torch.full((per_edge,), LOWER), torch.full((per_edge,), UPPER)
    edges = [torch.stack(pair, dim=1) for pair in ((lo, t[0]), (hi, t[1]), (t[2], lo), (t[3], hi))]
    return inside.to(dtype), torch.cat(edges).to(dtype)


def evaluation_grid(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """An n × n grid of the closed square, as rows (n², 2) (x varying fastest)."""
    s = torch.linspace(LOWER, UPPER, n, dtype=dtype)
    y, x = torch.meshgrid(s, s, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


class CompetitivePoisson(Game):
    """CPINN's Poisson game: ``max_params`` the discriminator's, ``min_params`` the PINN's.

    Args:
        interior, per_edge: collocation points inside and on each edge (CPINN: 5000 and 50).
        seed: seeds the points and both networks' initialisation (PyTorch's default for
            ``nn.Linear``), so every optimizer can start from the same game.
        pinn_widths, disc_widths: layer widths (CPINN: 2-50-50-50-1 tanh, 2-50-50-50-50-2 ReLU).
        dtype: float64 as CPINN.
    """

    def __init__(self, interior: int = 5000, per_edge: int = 50, seed: int = 0,
                 pinn_widths: Sequence[int] = (2, 50, 50, 50, 1), disc_widths: Sequence[int] = (2, 50, 50, 50, 50, 2),
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if not (isinstance(interior, int) and interior >= 1 and isinstance(per_edge, int) and per_edge >= 1):
            raise ValueError(f"interior and per_edge must be ints >= 1, got {interior!r} and {per_edge!r}")
        if pinn_widths[0] != 2 or pinn_widths[-1] != 1 or disc_widths[0] != 2 or disc_widths[-1] != 2:
            raise ValueError(f"the PINN maps 2 -> 1 and the discriminator 2 -> 2, got widths "
                             f"{tuple(pinn_widths)} and {tuple(disc_widths)}")
        gen = torch.Generator().manual_seed(seed)
        inside, boundary = collocation_points(interior, per_edge, gen, dtype)
        self.register_buffer("xy_interior", inside)
        self.register_buffer("xy_boundary", boundary)
        self.register_buffer("f_interior", source_term(inside))
        self.register_buffer("u_boundary", exact_solution(boundary))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.pinn = mlp(pinn_widths, nn.Tanh).to(dtype)
            self.disc = mlp(disc_widths, nn.ReLU).to(dtype)

    @property
    def max_params(self) -> list[nn.Parameter]:
        return list(self.disc.parameters())

    @property
    def min_params(self) -> list[nn.Parameter]:
        return list(self.pinn.parameters())

    def residual(self) -> Tensor:
        """r = −Δu − f at the interior points (n, 1), with the graph for further derivatives."""
        xy = self.xy_interior.detach().requires_grad_(True)
        u = self.pinn(xy)
        (du,) = torch.autograd.grad(u.sum(), xy, create_graph=True)
        (dux,) = torch.autograd.grad(du[:, 0].sum(), xy, create_graph=True)
        (duy,) = torch.autograd.grad(du[:, 1].sum(), xy, create_graph=True)
        return -(dux[:, :1] + duy[:, 1:]) - self.f_interior

    def boundary_error(self) -> Tensor:
        """u − u_b at the boundary points (m, 1)."""
        return self.pinn(self.xy_boundary) - self.u_boundary

    def losses(self) -> PlayerLosses:
        """(−L, L): the discriminator minimises −L, the PINN minimises L (zero-sum)."""
        weight_int = self.disc(self.xy_interior)[:, :1]
        weight_bc = self.disc(self.xy_boundary)[:, 1:]
        game = (weight_int * self.residual()).mean() + (weight_bc * self.boundary_error()).mean()
        return PlayerLosses(-game, game)

    def pinn_loss(self) -> Tensor:
        """The plain PINN loss: mean squared residual + mean squared boundary error."""
        return self.residual().square().mean() + self.boundary_error().square().mean()

    @torch.no_grad()
    def relative_l2(self, xy: Tensor) -> float:
        """‖u_PINN − u‖₂ / ‖u‖₂ at the rows of ``xy`` (e.g. :func:`evaluation_grid`)."""
        xy = xy.to(self.xy_interior)
        u = exact_solution(xy)
        return float((self.pinn(xy) - u).norm() / u.norm())

    def solution(self, xy: Tensor) -> Tensor:
        """The PINN's u at the rows of ``xy`` (n, 1), detached."""
        with torch.no_grad():
            return self.pinn(xy.to(self.xy_interior))


__all__ = ["CompetitivePoisson", "collocation_points", "exact_solution", "source_term", "evaluation_grid"]
