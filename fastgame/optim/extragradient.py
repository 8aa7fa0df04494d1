"""Extragradient and Extra-Adam (Gidel et al., ICLR 2019)."""
from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor

from ..linalg.hvp import MixedHVP
from .base import Proposal
from .dynamics import RuleDynamics


class Extragradient(RuleDynamics):
    r"""Extragradient: step to an extrapolated point, then step from the original point with
    the gradients taken there,

        z_½ = z − η v(z),   z ← z − η v(z_½),   v = (−∇ₓf, ∇ᵧf) (zero-sum; each player's own gradient),

    with each player's update rule in place of −η v (``optimizer="adam"``: Extra-Adam, whose
    moment estimates advance at both evaluations, Algorithm 4 of the paper). From Gidel,
    Berard, Vignoud, Vincent & Lacoste-Julien, "A Variational Inequality Perspective on
    Generative Adversarial Networks" (ICLR 2019), after Korpelevich (1976). ``step`` needs a
    closure (evaluated at both points).

    Cost per step: 2 gradient evaluations, 0 HVP passes. Capturable (if the closure is).
    """

    needs_closure = True
    grad_evals = 2

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float = 1e-3,
                 lr_min: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min, **kwargs)

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: MixedHVP, step: Tensor) -> Proposal:
        # The rule's state advances twice per step, so its step count runs 2t-1, 2t.
        extrapolation, half_state = self.rule_updates(self.directions(grads), 2 * step - 1)
        losses, grads_half = self._gradients_at(extrapolation)
        updates, state = self.rule_updates(self.directions(grads_half), 2 * step, half_state)
        checks = self._extrapolated_checks(losses, grads_half, "at the extrapolated point")
        return Proposal(updates, state, checks)


class ExtraAdam(Extragradient):
    """:class:`Extragradient` with Adam for both players: Extra-Adam of Gidel et al. (2019)."""

    default_rule = "adam"
