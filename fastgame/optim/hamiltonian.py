"""Hamiltonian gradient descent (Balduzzi et al. 2018; Abernethy, Lai & Wibisono 2019;
Loizou et al. 2020)."""
from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor

from .base import Proposal
from .dynamics import RuleDynamics
from ..linalg.game_hvp import GameHVP


class HamiltonianGradient(RuleDynamics):
    r"""Hamiltonian gradient descent: descend H = ½‖v‖², the squared norm of the game's vector
    field v = (−∇ₓf, ∇ᵧf) (zero-sum; each player's own gradient in general),

        z ← z − η ∇H,   ∇H = Jᵀv (one Hessian-vector product),

    through each player's update rule. Its fixed points are all stationary points of the
    game; on bilinear and "sufficiently bilinear" games it converges linearly. Abernethy, Lai
    & Wibisono, "Last-Iterate Convergence Rates for Min-Max Optimization" (2019); Loizou,
    Berard, Jolicoeur-Martineau, Vincent, Lacoste-Julien & Mitliagkas, "Stochastic
    Hamiltonian Gradient Methods for Smooth Games" (ICML 2020).

    Cost per step: 1 gradient evaluation, 1 HVP pass (over both players). Capturable.
    """

    second_order = True

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float = 1e-3,
                 lr_min: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min, **kwargs)

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: GameHVP, step: Tensor) -> Proposal:
        grad_h = hvp.jacobian_transpose(self.directions(grads))
        updates, state = self.rule_updates(grad_h, step)
        return Proposal(updates, state, self._player_checks("∇H", "HVP", grad_h))
