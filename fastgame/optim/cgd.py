"""The step shared by the zero-sum CGD family (ACGD, BCGD): gradients, step sizes, the
CG solve of :mod:`fastgame.solver`, one finiteness check, then an all-or-nothing commit."""
from __future__ import annotations

import time
from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from ..hvp import MixedHVP, all_reduce_mean
from ..solver import CGDSolution, Preconditioner, solve_cgd
from .base import GameOptimizer, LossOrClosure, check_max_iter, check_nonnegative, resolve_loss


class CompetitiveGradient(GameOptimizer):
    """Base of ACGD and BCGD. Player x (group 0) maximises the loss, y (group 1) minimises it.

    Subclasses say how step sizes are formed (:meth:`_step_sizes`), which player is solved
    (:meth:`_solved_player`) and how the solution becomes updates (:meth:`_updates`).
    """

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float, lr_min: float,
                 tol: float, atol: float, solve_x: bool, collect_info: bool, max_iter: Optional[int],
                 **defaults: Any) -> None:
        check_nonnegative(tol=tol, atol=atol)
        check_max_iter(max_iter)
        super().__init__(max_params, min_params, lr_max, lr_min,
                         dict(tol=tol, atol=atol, max_iter=max_iter, **defaults), ("max_params", "min_params"), ("lr_max", "lr_min"))
        self.collect_info = collect_info
        self.state["game"] = {"step": 0, "solve_x": bool(solve_x)}

    # ---- hooks ------------------------------------------------------------------------
    def _step_sizes(self, grads: tuple[Tensor, Tensor], step: int) -> tuple[list[Preconditioner], dict]:
        """Per-player step sizes and the state entries to commit if the step succeeds."""
        raise NotImplementedError

    def _solved_player(self) -> int:
        """0 to solve for the max player this step, 1 for the min player."""
        return 1 if self.state["game"]["solve_x"] else 0

    def _updates(self, sol: CGDSolution, step: int) -> tuple[list[Optional[Tensor]], dict]:
        """The updates to add to (x, y) (None: leave the player alone) and state to commit."""
        return list(sol.delta), {}

    def _after_step(self) -> None:
        game = self.state["game"]
        game["solve_x"] = not game["solve_x"]

    # ---- the step ---------------------------------------------------------------------
    def step(self, loss: LossOrClosure, trigger: Any = None) -> Tensor:
        """One competitive step on ``loss`` (x maximises it, y minimises it).

        ``loss`` is the scalar loss tensor (with its graph) or a closure returning it; no
        ``backward()`` is needed. ``trigger`` is accepted for compatibility with CGDs and
        ignored (gradients are all-reduced explicitly under torch.distributed).
        Returns the loss. Raises ``ValueError`` on bad input and ``FloatingPointError`` on
        a non-finite loss, gradient or HVP, leaving parameters and state unchanged.
        """
        loss = resolve_loss(loss)
        self._ensure_flat()
        timer = time.perf_counter()
        step = self.state["game"]["step"] + 1
        x, y = self.players
        gx, gy = self._grads(loss)
        with torch.no_grad():
            grads = (all_reduce_mean(x.gather(gx)), all_reduce_mean(y.gather(gy)))
            pre, pending = self._step_sizes(grads, step)
            hvp = MixedHVP(self.players, (gx, gy))
            a = self._solved_player()
            w0 = self.state[self.players[a].name].get("warm_start")
            group = self.param_groups[0]  # tol/atol/max_iter are game-wide; group 0 holds them
            sol = solve_cgd(hvp, a, grads, pre, w0, group["tol"], group["atol"], group["max_iter"])
            deltas, pending_updates = self._updates(sol, step)
            names = [p.name for p in self.players]
            self._check_finite([
                ("loss (stage: forward)", loss.detach()),
                (f"gradient of the {names[0]} player (stage: gradient)", grads[0]),
                (f"gradient of the {names[1]} player (stage: gradient)", grads[1]),
                (f"CG solution for the {names[a]} player (stage: mixed HVP / CG solve)", sol.warm_start[a]),
                (f"update of the {names[1 - a]} player (stage: mixed HVP back-substitution)", sol.delta[1 - a]),
            ])
            # Commit: nothing above has touched parameters or state.
            self._apply(deltas)
            for name in names:
                self.state[name].update(pending.get(name, {}))
                self.state[name].update(pending_updates.get(name, {}))
            for i, name in enumerate(names):
                self.state[name]["warm_start"] = sol.warm_start[i]
        self.state["game"]["step"] = step
        self._after_step()
        self._record_info(sol, hvp.passes, a, grads, deltas, time.perf_counter() - timer)
        return loss.detach()

    def _record_info(self, sol: CGDSolution, passes: int, a: int, grads, deltas, seconds: float) -> None:
        self.info = {"iter_num": sol.iterations, "hvp_passes": passes, "solved": self.players[a].name,
                     "residual_sq": sol.residual_sq, "rhs_sq": sol.rhs_sq, "time": seconds}
        if self.collect_info:  # norms cost host syncs: only on request, as the reference
            zero = torch.zeros(())
            self.info.update({
                "grad_x": grads[0].norm().item(), "grad_y": grads[1].norm().item(),
                "cg_x": (deltas[0].norm() if deltas[0] is not None else zero).item(),
                "cg_y": (deltas[1].norm() if deltas[1] is not None else zero).item(),
            })
