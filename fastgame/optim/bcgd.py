"""Basic Competitive Gradient Descent (CGD with scalar step sizes), drop-in for ``CGDs.BCGD``."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import Tensor

from ..linalg.cg import CGDSolution, Preconditioner
from ..linalg.hvp import MixedHVP
from .checks import optional_bool, unit_interval
from .cgd import CompetitiveGradient


class BCGD(CompetitiveGradient):
    r"""Competitive Gradient Descent (Schäfer & Anandkumar, NeurIPS 2019) with scalar step sizes.

    Solves ``(I + lr_max lr_min D_xy D_yx) Δ = ...`` by CG for one player and
    back-substitutes the other, alternating every step. Same keywords, defaults and numbers
    (to solver tolerance) as ``CGDs.BCGD`` 0.4.5, except that CG starts from zero by default
    (``cg_start="warm"`` is CGDs' start; see :class:`ACGD`).

    Args:
        max_params, min_params: the maximising and the minimising player's parameters.
        lr_max, lr_min: learning rates (param groups 0 and 1).
        update_max: None updates both players; True only the max player (solving for it);
            False only the min player.
        tol, atol: CG stops when ||r||^2 < tol ||b||^2 or ||r||^2 < atol.
        momentum: exponential moving average of the updates with bias correction (0: off;
            may differ between the param groups, i.e. per player).
            Unlike CGDs 0.4.5, whose buffer never accumulates, the average is real; the first
            step is identical.
        device: accepted for compatibility; the parameters' device is used.
        solve_x: False to solve for the max player at the first step (then alternate).
        collect_info: record gradient and update norms (host syncs); default True as CGDs.
        max_iter: cap on CG iterations per step, >= 1 (None: the system size).
        check_every, capturable, backend, cg_start, graph_cg: as for :class:`ACGD` (``cg_start``
            default "zero"; "warm" for CGDs' exact start).
    """

    cgds_class = "BCGD"
    hyperparameters = {**CompetitiveGradient.hyperparameters, "momentum": unit_interval,
                       "update_max": optional_bool}
    game_wide = CompetitiveGradient.game_wide | {"update_max"}
    state_keys = CompetitiveGradient.state_keys | {"momentum_buffer"}

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor],
                 lr_max: float = 1e-3, lr_min: float = 1e-3, update_max: Optional[bool] = None,
                 tol: float = 1e-12, atol: float = 1e-20, momentum: float = 0.0, device: Any = None,
                 solve_x: bool = False, collect_info: bool = True, max_iter: Optional[int] = None,
                 check_every: int = 1, capturable: bool = False, *, backend: Optional[str] = None,
                 cg_start: str = "zero", graph_cg: bool = True) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min, tol, atol, solve_x, collect_info, max_iter,
                         check_every, capturable, backend, cg_start, graph_cg, momentum=momentum, update_max=update_max)

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return (*super()._state_names(group), *(("momentum_buffer",) if group["momentum"] != 0 else ()))

    def _step_sizes(self, grads: tuple[Tensor, Tensor], step: Tensor) -> tuple[list[Preconditioner], dict]:
        pre = []
        for g, lr in zip(grads, self._lr_tensors()):
            eta = lr.to(g.dtype)
            pre.append(Preconditioner(eta, eta.sqrt(), eta * g))
        return pre, {}

    def _solved_player(self) -> int:
        update_max = self.param_groups[0]["update_max"]
        if update_max is None:
            return super()._solved_player()
        return 0 if update_max else 1

    def _updates(self, sol: CGDSolution, step: Tensor) -> tuple[list[Optional[Tensor]], dict]:
        group = self.param_groups[0]
        deltas = list(sol.delta)
        if group["update_max"] is not None:  # one player only
            deltas[1 if group["update_max"] else 0] = None
        pending = {}
        for i, player in enumerate(self.players):
            m = self.param_groups[i]["momentum"]
            if deltas[i] is None or m == 0:
                continue
            buf = self.state.get(player.name, {}).get("momentum_buffer")
            buf = deltas[i] * (1 - m) if buf is None else buf * m + deltas[i] * (1 - m)
            pending[player.name] = {"momentum_buffer": buf}
            deltas[i] = buf / (1 - m ** step)
        return deltas, pending

    def _cg_vectors(self, deltas: Sequence[Optional[Tensor]]) -> list[Optional[Tensor]]:
        """CGDs' BCGD reports its CG vectors, the updates over lr (0 where lr is 0)."""
        lrs = [float(g["lr"]) for g in self.param_groups]
        return [None if d is None else d / lr if lr > 0 else torch.zeros_like(d) for d, lr in zip(deltas, lrs)]

    def _reports_couplings(self) -> bool:
        return self.param_groups[0]["update_max"] is None  # CGDs' one-player steps record no info

    def _coupling_norms(self, hvp: MixedHVP, grads: tuple[Tensor, Tensor], pre: list[Preconditioner],
                        sol: CGDSolution, a: int) -> Tensor:
        """CGDs' BCGD reports the products of the plain gradients, ‖D_xy g_y‖ and ‖D_yx g_x‖: those
        of the scaled ones divided by the scalar step sizes, or taken afresh where one is 0."""
        if all(float(g["lr"]) > 0 for g in self.param_groups):
            return super()._coupling_norms(hvp, grads, pre, sol, a) / torch.stack([pre[1].eta, pre[0].eta])
        return torch.stack([hvp(0, grads[1]).norm(), hvp(1, grads[0]).norm()])

    def _next_solved_player(self, a: int) -> int:
        return a if self.param_groups[0]["update_max"] is not None else 1 - a

    def _after_step(self) -> Optional[Callable[[], None]]:
        if self.param_groups[0]["update_max"] is None:  # alternating: the phase flips
            return super()._after_step()
        return None
