r"""Games of n ≥ 2 players with closed-form answers, for :class:`fastgame.PCGD` and :class:`fastgame.APCGD`.

Player i minimises its own loss f_i(x_1, …, x_n). Every game here is quadratic,

    f_i(x) = ½ x_iᵀ J_ii x_i + Σ_{j≠i} x_iᵀ J_ij x_j + c_iᵀ x_i,

so the players' gradients form the affine field ξ(x) = J x + c with the block matrix J, and
every method's step is a linear map whose spectral radius decides convergence:

* simultaneous gradient descent: x⁺ = x − η ξ(x), the map I − ηJ;
* PCGD with step size η: x⁺ = x − (I + η H_o)⁻¹ η ξ(x), H_o = J with its diagonal blocks
  zeroed, the map I − (I + η H_o)⁻¹ η J (:meth:`PolymatrixGame.pcgd_map`).

A game is an ``nn.Module`` (``.double()``, ``.to()`` work); :attr:`players` lists each
player's parameters in order, as PCGD takes them: ``PCGD(game.players, lr=η)``,
``opt.step(game.losses)``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..linalg.flat import flatten
from .base import as_tensor


class PolymatrixGame(nn.Module):
    """The quadratic n-player game of the module docstring, from J, the players' sizes and c.

    Args:
        J: the (N, N) block matrix, N = sum(sizes); its diagonal blocks J_ii must be symmetric
            (they are player i's own Hessian).
        sizes: each player's number of parameters (at least two players, each ≥ 1).
        c: the linear terms (N,), default 0. x0: the start (N,), default all ones.
    """

    def __init__(self, J: Tensor, sizes: Sequence[int], c: Optional[Tensor] = None,
                 x0: Optional[Tensor] = None) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"a polymatrix game needs at least two players of size >= 1, got sizes {sizes}")
        n = sum(sizes)
        J = as_tensor(J, "J", shape=(n, n))
        c = torch.zeros(n, dtype=J.dtype) if c is None else as_tensor(c, "c", shape=(n,)).to(J.dtype)
        x0 = torch.ones(n, dtype=J.dtype) if x0 is None else as_tensor(x0, "x0", shape=(n,)).to(J.dtype)
        self.sizes = sizes
        self.register_buffer("J", J)
        self.register_buffer("c", c)
        for i, block in enumerate(self._blocks(J)):
            if not torch.allclose(block[i], block[i].T):
                raise ValueError(f"J's diagonal block {i} (player {i}'s own Hessian) must be symmetric")
        self.xs = nn.ParameterList([nn.Parameter(part.clone()) for part in torch.split(x0, sizes)])

    def _blocks(self, M: Tensor) -> list[list[Tensor]]:
        """M's (i, j) blocks by the players' sizes."""
        return [list(torch.split(row, self.sizes, dim=1)) for row in torch.split(M, self.sizes, dim=0)]

    @property
    def players(self) -> list[list[nn.Parameter]]:
        """Each player's parameters, in player order (what :class:`fastgame.PCGD` takes)."""
        return [[x] for x in self.xs]

    def losses(self) -> tuple[Tensor, ...]:
        """(f_1, …, f_n) at the current parameters, each minimised by its player."""
        x = torch.cat(list(self.xs))
        out = []
        for i, (row, ci, xi) in enumerate(zip(torch.split(self.J, self.sizes, dim=0),
                                               torch.split(self.c, self.sizes), self.xs)):
            own = torch.split(row, self.sizes, dim=1)[i]
            coupling = row @ x - own @ xi  # Σ_{j≠i} J_ij x_j
            out.append(0.5 * xi @ own @ xi + xi @ coupling + ci @ xi)
        return tuple(out)

    def point(self) -> Tensor:
        """The current parameters as one detached flat vector, players in order."""
        return flatten([x.detach() for x in self.xs])

    def set_point(self, point: Tensor) -> None:
        """Copy a flat vector into the parameters in place (optimizers' flat views stay valid)."""
        n = sum(self.sizes)
        if not isinstance(point, Tensor) or point.shape != (n,):
            raise ValueError(f"a point of this game is a flat tensor of shape ({n},)")
        with torch.no_grad():
            for x, part in zip(self.xs, torch.split(point, self.sizes)):
                x.copy_(part)

    def vector_field(self) -> Tensor:
        """ξ(x) = (∇_{x_1} f_1, …, ∇_{x_n} f_n) = J x + c at the current point."""
        return self.J @ self.point() + self.c

    def equilibrium(self) -> Tensor:
        """The stationary point −J⁻¹c (a Nash equilibrium when every J_ii is positive semi-definite;
        the unique one when J is also invertible)."""
        return -torch.linalg.solve(self.J, self.c)

    def distance_to_equilibrium(self) -> float:
        """Euclidean distance of the current point to :meth:`equilibrium`."""
        return float((self.point() - self.equilibrium()).norm())

    def interaction(self) -> Tensor:
        """H_o: J with its diagonal blocks zeroed ((H_o)_ij = D²_{x_i x_j} f_i for i ≠ j)."""
        H = self.J.clone()
        start = 0
        for s in self.sizes:
            H[start:start + s, start:start + s] = 0
            start += s
        return H

    def simgd_map(self, lr: float) -> Tensor:
        """I − ηJ: the error map of simultaneous gradient descent with step size η."""
        return torch.eye(self.J.shape[0], dtype=self.J.dtype) - lr * self.J

    def pcgd_map(self, lr: float) -> Tensor:
        """I − (I + ηH_o)⁻¹ηJ: the error map of PCGD with step size η for every player."""
        eye = torch.eye(self.J.shape[0], dtype=self.J.dtype)
        return eye - torch.linalg.solve(eye + lr * self.interaction(), lr * self.J)


class CyclicBilinear(PolymatrixGame):
    r"""n ≥ 3 players on a ring, each playing a zero-sum bilinear game with its neighbours:

        f_i = x_iᵀ A_i x_{i+1} − x_{i−1}ᵀ A_{i−1} x_i   (indices mod n),

    so what player i wins against i+1 that player loses (rock-paper-scissors among players;
    Σ_i f_i = 0). J = H_o is antisymmetric, its eigenvalues ±iσ_k, so for every step size
    η > 0 simultaneous gradient descent spirals out (|1 − iησ| = √(1 + η²σ²) > 1) and PCGD
    contracts (|1/(1 + iησ)| = 1/√(1 + η²σ²) < 1; its map (I + ηJ)⁻¹ is normal, so
    ‖x_k‖ ≤ ρᵏ‖x_0‖ exactly). The equilibrium 0 is unique when J is invertible (an even
    total size at least: an antisymmetric matrix of odd size is singular).

    Args:
        matrices: A_1, …, A_n, with A_i of shape (size_i, size_{i+1}) (A_n couples x_n and x_1).
        x0: the start (default all ones).
    """

    def __init__(self, matrices: Sequence[Tensor], x0: Optional[Tensor] = None) -> None:
        mats = [as_tensor(A, f"matrices[{i}]", dim=2) for i, A in enumerate(matrices)]
        n = len(mats)
        if n < 3:
            raise ValueError(f"a cyclic game needs at least three players, got {n} matrices")
        sizes = [A.shape[0] for A in mats]
        for i, A in enumerate(mats):
            if A.shape[1] != sizes[(i + 1) % n]:
                raise ValueError(f"matrices[{i}] has shape {tuple(A.shape)}; it couples player {i} (size {sizes[i]}) "
                                 f"with player {(i + 1) % n} (size {sizes[(i + 1) % n]})")
        offsets = [sum(sizes[:i]) for i in range(n)]
        J = torch.zeros(sum(sizes), sum(sizes), dtype=mats[0].dtype)
        for i, A in enumerate(mats):
            k = (i + 1) % n
            rows, cols = slice(offsets[i], offsets[i] + sizes[i]), slice(offsets[k], offsets[k] + sizes[k])
            J[rows, cols] += A.to(J.dtype)  # ∇_{x_i} of x_iᵀ A_i x_{i+1}
            J[cols, rows] -= A.to(J.dtype).T  # ∇_{x_{i+1}} of −x_iᵀ A_i x_{i+1}
        super().__init__(J, sizes, x0=x0)


def monotone_quadratic(sizes: Sequence[int], mu: float = 0.1, coupling: float = 1.0, seed: int = 0,
                       dtype: torch.dtype = torch.float64) -> PolymatrixGame:
    r"""An n-player quadratic game with a unique Nash equilibrium away from 0:
    J = μI + K with K antisymmetric (pairwise zero-sum interactions of scale ``coupling``),
    and c random (seeded).

    Each f_i is μ-strongly convex in x_i, so the stationary point −J⁻¹c is the unique Nash
    equilibrium. The eigenvalues of J are μ ± iσ_k: simultaneous gradient descent converges
    only for η < 2μ/(μ² + σ_max²) (tiny when the coupling dominates), while PCGD's map is
    (1 − ημ)(I + ηK)⁻¹, of spectral radius (1 − ημ)/√(1 + η²σ_min²) < 1 for 0 < η < 2/μ.
    """
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    B = torch.randn(n, n, generator=gen, dtype=dtype) * coupling
    K = B - B.T
    start = 0
    for s in sizes:  # the players' own blocks are μI only
        K[start:start + s, start:start + s] = 0
        start += s
    c = torch.randn(n, generator=gen, dtype=dtype)
    return PolymatrixGame(mu * torch.eye(n, dtype=dtype) + K, sizes, c=c)
