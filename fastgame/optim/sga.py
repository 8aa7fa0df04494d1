"""Symplectic gradient adjustment (Balduzzi et al., ICML 2018)."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

from .base import Proposal
from .checks import boolean, nonnegative
from .dynamics import RuleDynamics
from ..linalg.game_hvp import GameHVP


class SGA(RuleDynamics):
    r"""Symplectic gradient adjustment: follow the game's vector field ξ = (−∇ₓf, ∇ᵧf)
    (zero-sum; each player's own gradient in general) adjusted by its antisymmetric part,

        z ← z − η (ξ + λ Aᵀξ),   A = ½(J − Jᵀ),  J = ∂ξ/∂z,

    with the alignment sign λ = λ₀·sign(⟨ξ, ∇H⟩⟨Aᵀξ, ∇H⟩/d + ε), ∇H = Jᵀξ, d the number of
    parameters (``align=True``; False keeps λ = λ₀), through each player's update rule.
    Balduzzi, Racanière, Martens, Foerster, Tuyls & Graepel, "The Mechanics of n-Player
    Differentiable Games" (ICML 2018).

    Args:
        lam: λ₀ (game-wide). align: use the alignment sign. align_eps: ε of the sign.

    Cost per step: 1 gradient evaluation and 2 mixed HVP passes (Aᵀξ), plus 1 HVP pass over
    both players (∇H) with ``align``. Capturable (the sign is taken on the device).
    """

    hyperparameters = {**RuleDynamics.hyperparameters, "lam": nonnegative, "align": boolean, "align_eps": nonnegative}
    game_wide = RuleDynamics.game_wide | {"lam", "align", "align_eps"}
    second_order = True

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float = 1e-3,
                 lr_min: float = 1e-3, lam: float = 1.0, align: bool = True, align_eps: float = 0.1,
                 **kwargs: Any) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min, lam=lam, align=align, align_eps=align_eps, **kwargs)

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: GameHVP, step: Tensor) -> Proposal:
        group = self.param_groups[0]  # lam and align are game-wide
        xi = self.directions(grads)
        adjustment = hvp.antisymmetric_transpose(xi)
        checks = self._player_checks("Aᵀξ", "HVP", adjustment)
        lam = torch.full((), float(group["lam"]), dtype=xi[0].dtype, device=xi[0].device)
        if group["align"]:
            grad_h = hvp.jacobian_transpose(xi)
            checks += self._player_checks("∇H", "HVP", grad_h)
            d = sum(p.numel for p in self.players)
            dot = lambda a, b: sum((u * w).sum() for u, w in zip(a, b))  # noqa: E731
            alignment = dot(xi, grad_h) * dot(adjustment, grad_h) / d + group["align_eps"]
            lam = torch.where(alignment >= 0, lam, -lam)
        directions = [x + lam * a for x, a in zip(xi, adjustment)]
        updates, state = self.rule_updates(directions, step)
        return Proposal(updates, state, checks)
