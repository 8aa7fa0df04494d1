"""LEAD (Hemmat, Mitra, Lajoie & Mitliagkas, TMLR 2023)."""
from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor

from ..linalg.params import Player
from .base import Proposal
from .checks import nonnegative, unit_interval
from .dynamics import GameDynamics
from ..linalg.game_hvp import GameHVP


class LEAD(GameDynamics):
    r"""Least-Action Dynamics: gradient play with momentum β and a coupling term α that lets
    each player react to the other's last move through the mixed second derivative,

        Δx_t = β Δx_{t−1} − η_x ∇ₓℓ_x − α D_xy ℓ_x Δy_{t−1},
        Δy_t = β Δy_{t−1} − η_y ∇ᵧℓ_y − α D_yx ℓ_y Δx_{t−1},

    ℓ the players' own losses (zero-sum: ℓ_x = −f for the max player x, ℓ_y = f), Δ_0 = 0.
    Hemmat, Mitra, Lajoie & Mitliagkas, "LEAD: Min-Max Optimization from a Physical
    Perspective" (TMLR 2023).

    Args:
        momentum: β (per player). coupling: α (per player).

    Cost per step: 1 gradient evaluation, 2 mixed HVP passes. Capturable.
    """

    hyperparameters = {**GameDynamics.hyperparameters, "momentum": unit_interval, "coupling": nonnegative}
    state_keys = frozenset({"prev_delta"})
    second_order = True

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float = 1e-3,
                 lr_min: float = 1e-3, momentum: float = 0.0, coupling: float = 0.5, **kwargs: Any) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min, momentum=momentum, coupling=coupling, **kwargs)

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("prev_delta",)

    def _prev(self, player: Player, like: Tensor) -> Tensor:
        prev = self.state.get(player.name, {}).get("prev_delta")
        return like.new_zeros(like.shape) if prev is None else prev

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: GameHVP, step: Tensor) -> Proposal:
        prev = [self._prev(p, g) for p, g in zip(self.players, grads)]
        # D_xy ℓ_x = σ_x hvp(0, ·) and D_yx ℓ_y = σ_y hvp(1, ·) (σ: the signs of the own losses).
        coupled = [s * hvp(i, prev[1 - i]) for i, s in enumerate(self.signs)]
        deltas = [group["momentum"] * p - lr * d - group["coupling"] * c
                  for group, p, lr, d, c in zip(self.param_groups, prev, self._lr_tensors(),
                                                self.directions(grads), coupled)]
        state = {p.name: {"prev_delta": d} for p, d in zip(self.players, deltas)}
        return Proposal(deltas, state, self._player_checks("coupling term", "mixed HVP", coupled))
