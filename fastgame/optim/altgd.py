"""Alternating gradient descent-ascent (AltGD) and its Adam form."""
from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor

from ..linalg.hvp import MixedHVP
from .base import Proposal
from .checks import boolean
from .dynamics import RuleDynamics


class AltGD(RuleDynamics):
    r"""Alternating gradient play: one player steps, then the other from the new point,

        x ← x + η_x ∇ₓf(x, y),   y ← y − η_y ∇ᵧf(x⁺, y)   (``max_first=True``, zero-sum),

    each through its own update rule (``optimizer``: ``"sgd"`` or ``"adam"``). The usual
    GAN training loop (Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014);
    Gidel et al., "Negative Momentum for Improved Game Dynamics" (AISTATS 2019) analyse it.
    ``step`` needs a closure, since the second player's gradient is taken after the first
    moved. ``max_first=False`` moves the min player (general-sum: y) first.

    Cost per step: 2 gradient evaluations (the closure is evaluated twice), 0 HVP passes.
    Capturable (if the closure is).
    """

    hyperparameters = {**RuleDynamics.hyperparameters, "max_first": boolean}
    game_wide = RuleDynamics.game_wide | {"max_first"}
    needs_closure = True
    grad_evals = 2

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float = 1e-3,
                 lr_min: float = 1e-3, max_first: bool = True, **kwargs: Any) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min, max_first=max_first, **kwargs)

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: MixedHVP, step: Tensor) -> Proposal:
        first = 0 if self.param_groups[0]["max_first"] else 1
        second = 1 - first
        updates, state = [None, None], {}
        lrs = self._lr_tensors()
        updates[first], state[self.players[first].name] = self.rule_update(
            first, self.directions(grads)[first], step, lr=lrs[first])
        moved = [u if i == first else None for i, u in enumerate(updates)]
        losses, grads_after = self._gradients_at(moved)
        updates[second], state[self.players[second].name] = self.rule_update(
            second, self.directions(grads_after)[second], step, lr=lrs[second])
        seen = [g if i == second else None for i, g in enumerate(grads_after)]
        checks = self._extrapolated_checks(losses, seen, "after the first player moved")
        return Proposal(updates, state, checks)


class AltAdam(AltGD):
    """:class:`AltGD` with Adam for both players (``optimizer="adam"``)."""

    default_rule = "adam"
