r"""Quadratic games with closed-form answers: the bilinear game and the ICR quadratic game."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .base import Game, PlayerLosses, as_tensor


class Bilinear(Game):
    r"""f(x, y) = xᵀAy + ½xᵀPx − ½yᵀQy; x minimises f, y maximises it (min_x max_y f).

    With ``P = Q = 0`` (the default) this is the bilinear game, whose only equilibrium is
    0 when A has full rank and on which simultaneous gradient descent-ascent diverges for
    every step size while CGD converges. Positive semi-definite P and Q make the game convex-
    concave (x's and y's own terms pull them to 0); indefinite ones make it harder.

    The max player is y: ``max_params = [y]``, ``min_params = [x]``.

    Args:
        A: the (m, n) interaction matrix.
        P: (m, m) symmetric matrix of x's own quadratic term (default 0).
        Q: (n, n) symmetric matrix of y's own term, with the sign that makes a positive
            definite Q *stabilise* y (default 0).
        x0, y0: starting point (default all ones).
    """

    def __init__(self, A: Tensor, P: Optional[Tensor] = None, Q: Optional[Tensor] = None,
                 x0: Optional[Tensor] = None, y0: Optional[Tensor] = None) -> None:
        super().__init__()
        A = as_tensor(A, "A", dim=2)
        m, n = A.shape
        if m == 0 or n == 0:
            raise ValueError(f"A must be non-empty, got shape {(m, n)}")
        P = torch.zeros(m, m, dtype=A.dtype) if P is None else as_tensor(P, "P", shape=(m, m)).to(A.dtype)
        Q = torch.zeros(n, n, dtype=A.dtype) if Q is None else as_tensor(Q, "Q", shape=(n, n)).to(A.dtype)
        for name, M in (("P", P), ("Q", Q)):
            if not torch.allclose(M, M.T):
                raise ValueError(f"{name} must be symmetric")
        self.register_buffer("A", A)
        self.register_buffer("P", P)
        self.register_buffer("Q", Q)
        x0 = torch.ones(m, dtype=A.dtype) if x0 is None else as_tensor(x0, "x0", shape=(m,)).to(A.dtype)
        y0 = torch.ones(n, dtype=A.dtype) if y0 is None else as_tensor(y0, "y0", shape=(n,)).to(A.dtype)
        self.x = nn.Parameter(x0)
        self.y = nn.Parameter(y0)

    @property
    def max_params(self) -> list[nn.Parameter]:
        return [self.y]

    @property
    def min_params(self) -> list[nn.Parameter]:
        return [self.x]

    def value(self) -> Tensor:
        """f(x, y) at the current parameters."""
        x, y = self.x, self.y
        return x @ self.A @ y + 0.5 * x @ self.P @ x - 0.5 * y @ self.Q @ y

    def losses(self) -> PlayerLosses:
        """(−f, f): y minimises −f, x minimises f."""
        f = self.value()
        return PlayerLosses(-f, f)

    def loss(self) -> Tensor:
        """f(x, y): y (max player) maximises it, x minimises it."""
        return self.value()

    def equilibrium(self) -> Tensor:
        """The stationary point 0 (the unique one when [[P, A], [Aᵀ, −Q]] is invertible)."""
        return torch.zeros_like(self.point())

    def jacobian(self) -> Tensor:
        r"""Closed-form Jacobian of the vector field v = (∇_y f, −∇ₓf), order (y, x):
        [[−Q, Aᵀ], [−A, −P]]."""
        return torch.cat([torch.cat([-self.Q, self.A.T], 1), torch.cat([-self.A, -self.P], 1)], 0)


class ICRQuadratic(Bilinear):
    r"""The quadratic game of the ICR paper and its blog post (docs/design.md §7):
    f(x, y) = x² + 10xy + y².

    x minimises f, y maximises it. For every fixed x, y's best move is to run off to
    infinity, yet simultaneous gradient descent-ascent with η_x = 0.09, η_y = 0.01 converges
    to the only stationary point (0, 0) — implicit competitive regularization — while equal
    step sizes (0.05) diverge and CGD converges with equal step sizes.
    """

    def __init__(self, x0: float = 1.0, y0: float = 1.0) -> None:
        # x² = ½·2·x², and +y² = −½·(−2)·y²: y's own term destabilises it (Q = −2).
        super().__init__(A=[[10.0]], P=[[2.0]], Q=[[-2.0]], x0=[float(x0)], y0=[float(y0)])
