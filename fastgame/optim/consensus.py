"""Consensus optimization (Mescheder, Nowozin & Geiger, NeurIPS 2017)."""
from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor

from .base import Proposal
from .checks import nonnegative
from .dynamics import RuleDynamics
from ..linalg.game_hvp import GameHVP


class ConsensusOptimization(RuleDynamics):
    r"""Consensus optimization: every player also descends the squared norm of the game's
    vector field v = (−∇ₓf, ∇ᵧf) (zero-sum; each player's own gradient in general),

        z ← z − η (v + γ ∇H),   H = ½‖v‖²,   ∇H = Jᵀv (one Hessian-vector product),

    with each player's update rule in place of −η· (the paper uses RMSProp; ``"adam"``
    here). Mescheder, Nowozin & Geiger, "The Numerics of GANs" (NeurIPS 2017).

    Args:
        gamma: the consensus weight γ (per player).

    Cost per step: 1 gradient evaluation, 1 HVP pass (over both players). Capturable.
    """

    hyperparameters = {**RuleDynamics.hyperparameters, "gamma": nonnegative}
    second_order = True

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float = 1e-3,
                 lr_min: float = 1e-3, gamma: float = 1.0, **kwargs: Any) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min, gamma=gamma, **kwargs)

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: GameHVP, step: Tensor) -> Proposal:
        v = self.directions(grads)
        grad_h = hvp.jacobian_transpose(v)
        directions = [d + group["gamma"] * h for d, h, group in zip(v, grad_h, self.param_groups)]
        updates, state = self.rule_updates(directions, step)
        return Proposal(updates, state, self._player_checks("∇H", "HVP", grad_h))
