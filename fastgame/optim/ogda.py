"""Optimistic gradient descent-ascent (OGDA) and Optimistic Adam."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

from ..linalg.hvp import MixedHVP
from .base import Proposal
from .dynamics import RuleDynamics


class OGDA(RuleDynamics):
    r"""Optimistic gradient descent-ascent: each player's update u_t (by its rule; SGD:
    u_t = −η v(z_t)) is extrapolated from the last one,

        z_{t+1} = z_t + 2u_t − u_{t−1}   (SGD: z_t − 2η v(z_t) + η v(z_{t−1})),

    with u_0 = u_1, so the first step is the rule's plain step. ``optimizer="adam"`` gives
    Optimistic Adam. Gidel, Berard, Vignoud, Vincent & Lacoste-Julien, "A Variational
    Inequality Perspective on Generative Adversarial Networks" (ICLR 2019: extrapolation from
    the past); Daskalakis, Ilyas, Syrgkanis & Zeng, "Training GANs with Optimism" (ICLR 2018).

    Cost per step: 1 gradient evaluation, 0 HVP passes. Capturable.
    """

    state_keys = RuleDynamics.state_keys | {"prev_update"}

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float = 1e-3,
                 lr_min: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min, **kwargs)

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return (*super()._state_names(group), "prev_update")

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: MixedHVP, step: Tensor) -> Proposal:
        updates, state = self.rule_updates(self.directions(grads), step)
        deltas = []
        for player, u in zip(self.players, updates):
            prev = self.state.get(player.name, {}).get("prev_update")
            # On the device, not by a host branch: a capturable step's zeroed state reads as u.
            prev = u if prev is None else torch.where(step == 1, u, prev)
            deltas.append(2 * u - prev)
            state[player.name]["prev_update"] = u
        return Proposal(deltas, state)


class OptimisticAdam(OGDA):
    """:class:`OGDA` with Adam for both players: Optimistic Adam (Daskalakis et al. 2018)."""

    default_rule = "adam"
