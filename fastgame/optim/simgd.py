"""Simultaneous gradient descent-ascent (SimGD) and its Adam form, the usual GAN baseline."""
from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor

from ..linalg.hvp import MixedHVP
from .base import Proposal
from .dynamics import RuleDynamics


class SimGD(RuleDynamics):
    r"""Simultaneous gradient play: both players step from the same point,

        x ← x + η_x ∇ₓf,   y ← y − η_y ∇ᵧf   (zero-sum; general-sum: each descends its own loss),

    each through its own update rule (``optimizer="sgd"`` as above, ``"adam"`` the usual GAN
    baseline; two-timescale rates through ``lr_max`` ≠ ``lr_min``). The classical dynamics of
    Goodfellow et al., "Generative Adversarial Nets" (NeurIPS 2014); Heusel et al., "GANs
    Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium" (NeurIPS
    2017) for separate rates.

    Cost per step: 1 gradient evaluation, 0 HVP passes. Capturable.
    See :class:`~fastgame.optim.dynamics.RuleDynamics` for the arguments.
    """

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float = 1e-3,
                 lr_min: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min, **kwargs)

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: MixedHVP, step: Tensor) -> Proposal:
        updates, state = self.rule_updates(self.directions(grads), step)
        return Proposal(updates, state)


class SimAdam(SimGD):
    """:class:`SimGD` with Adam for both players (``optimizer="adam"``)."""

    default_rule = "adam"
