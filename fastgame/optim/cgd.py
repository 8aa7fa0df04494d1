"""The step shared by the zero-sum CGD family (ACGD, BCGD): gradients, step sizes, the
CG solve of :mod:`fastgame.solver`, one finiteness check of everything the step computed,
then an all-or-nothing commit."""
from __future__ import annotations

import time
from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from ..hvp import MixedHVP, all_reduce_mean
from ..solver import CGDSolution, Preconditioner, solve_cgd
from .base import (GameOptimizer, LossOrClosure, autocast_off, boolean, mark_stepped, nonnegative, optional_count,
                   positive_int, resolve_loss, step_count)


class CompetitiveGradient(GameOptimizer):
    """Base of ACGD and BCGD. Player x (group 0) maximises the loss, y (group 1) minimises it.

    Subclasses say how step sizes are formed (:meth:`_step_sizes`), which player is solved
    (:meth:`_solved_player`), how the solution becomes updates (:meth:`_updates`) and
    which state a capturable step preallocates (:meth:`_initial_state`).

    ``capturable=True`` makes :meth:`step` read nothing from the device, so it can be
    captured in a CUDA graph (:func:`fastgame.make_graphed_step`): CG runs exactly
    ``max_iter`` iterations (those after convergence are no-ops), state is updated in
    place, the step count lives on the device, and a non-finite step is skipped on the
    device instead of raising (``info["finite"]`` tells; :meth:`raise_if_nonfinite` raises).
    """

    hyperparameters = {"lr": nonnegative, "tol": nonnegative, "atol": nonnegative, "max_iter": optional_count,
                       "check_every": positive_int, "capturable": boolean}
    game_wide = frozenset({"tol", "atol", "max_iter", "check_every", "capturable"})
    state_keys = frozenset({"warm_start"})
    game_state = {"step": step_count, "solve_x": boolean}

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float, lr_min: float,
                 tol: float, atol: float, solve_x: bool, collect_info: bool, max_iter: Optional[int],
                 check_every: int = 1, capturable: bool = False, **defaults: Any) -> None:
        self._check_combination({"capturable": capturable, "max_iter": max_iter}, "__init__")
        super().__init__(max_params, min_params, lr_max, lr_min,
                         dict(tol=tol, atol=atol, max_iter=max_iter, check_every=check_every,
                              capturable=bool(capturable), **defaults),
                         ("max_params", "min_params"), ("lr_max", "lr_min"))
        self.collect_info = collect_info
        self.state["game"] = {"step": 0, "solve_x": bool(solve_x)}
        if self.capturable:  # allocate now, so that even a skipped first step changes no state
            self._prepare_capturable()

    def _config_attrs(self) -> tuple[str, ...]:
        return ("collect_info",)

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._flipped = False  # whether the last step flipped the solved player (undone if skipped)

    def _check_combination(self, group: dict[str, Any], where: str) -> None:
        if group["capturable"] and group["max_iter"] is None:
            raise ValueError("capturable=True needs max_iter: a captured CG runs a fixed number of iterations")

    # ---- hooks ------------------------------------------------------------------------
    def _step_sizes(self, grads: tuple[Tensor, Tensor], step: Tensor) -> tuple[list[Preconditioner], dict]:
        """Per-player step sizes and the state entries to commit if the step succeeds."""
        raise NotImplementedError

    def _initial_state(self, player: Any) -> dict[str, Tensor]:
        """Zero-initialised per-player state a capturable step updates in place."""
        return {"warm_start": torch.zeros_like(player.flat)}

    def _solved_player(self) -> int:
        """0 to solve for the max player this step, 1 for the min player."""
        return 1 if self.state["game"]["solve_x"] else 0

    def _updates(self, sol: CGDSolution, step: Tensor) -> tuple[list[Optional[Tensor]], dict]:
        """The updates to add to (x, y) (None: leave the player alone) and state to commit."""
        return list(sol.delta), {}

    def _after_step(self) -> None:
        game = self.state["game"]
        game["solve_x"] = not game["solve_x"]
        self._flipped = True

    @property
    def verdict(self) -> Optional[tuple[list[str], Tensor]]:
        """The last capturable step's checks: their names and a device bool tensor of flags."""
        return None if self._verdict is None else self._verdict[:2]

    def replayed(self, info: dict[str, Any], verdict: tuple[list[str], Tensor]) -> None:
        """The host half of a step whose device half a CUDA graph just replayed: its info,
        its (unread) verdict, and the move to the next solve phase."""
        self.info = dict(info)
        self._verdict = (*verdict, None)
        self._flipped = False
        self._after_step()

    def _undo_host_step(self) -> None:
        if self._flipped:  # the skipped step's player is solved again next
            game = self.state["game"]
            game["solve_x"] = not game["solve_x"]
            self._flipped = False

    # ---- the step ---------------------------------------------------------------------
    @property
    def capturable(self) -> bool:
        return bool(self.param_groups[0]["capturable"])

    def _prepare_capturable(self) -> None:
        game = self.state["game"]
        if not isinstance(game["step"], Tensor):
            game["step"] = torch.tensor(float(game["step"]), dtype=torch.float64, device=self.players[0].device)
        for player in self.players:
            for k, v in self._initial_state(player).items():
                self.state[player.name].setdefault(k, v)

    def _step_tensor(self) -> Tensor:
        """This step's count (from 1) as a 0-dim float64 device tensor."""
        count = self.state["game"]["step"]
        if isinstance(count, Tensor):
            return count + 1
        device = self.players[0].device
        if self._step_t is None or self._step_t.device != device:
            self._step_t = torch.zeros((), dtype=torch.float64, device=device)
        return self._step_t.fill_(count + 1)

    def step(self, loss: LossOrClosure, trigger: Any = None) -> Tensor:
        """One competitive step on ``loss`` (x maximises it, y minimises it).

        ``loss`` is the scalar loss tensor (with its graph) or a closure returning it; no
        ``backward()`` is needed, and grad mode is on inside the step even if the caller
        disabled it. ``trigger`` is accepted for compatibility with CGDs and ignored
        (gradients are all-reduced explicitly under torch.distributed).
        Returns the loss. Raises ``ValueError`` on bad input (including a loss a previous
        step already used, and invalid values set through ``param_groups``) and
        ``FloatingPointError`` on a non-finite value anywhere in the step, leaving
        parameters and state unchanged (capturable: the step is skipped on the device
        instead, see the class doc).
        """
        with torch.enable_grad():
            loss = resolve_loss(loss)
            self._begin_step()
            with autocast_off(self.players[0].device):
                return self._step(loss)

    def _step(self, loss: Tensor) -> Tensor:
        group = self.param_groups[0]  # tol/atol/max_iter/... are game-wide: the same in both groups
        capturable = self.capturable
        if capturable:
            self._prepare_capturable()
        timer = time.perf_counter()
        self._flipped = False
        step = self._step_tensor()
        gx, gy = self._grads(loss)
        with torch.no_grad():
            grads = (all_reduce_mean(self.players[0].gather(gx)), all_reduce_mean(self.players[1].gather(gy)))
            pre, pending = self._step_sizes(grads, step)
            hvp = MixedHVP(self.players, (gx, gy))
            a = self._solved_player()
            names = [p.name for p in self.players]
            w0 = self.state.get(names[a], {}).get("warm_start")
            sol = solve_cgd(hvp, a, grads, pre, w0, group["tol"], group["atol"], group["max_iter"],
                            check_every=None if capturable else group["check_every"])
            deltas, pending_updates = self._updates(sol, step)
            for i, name in enumerate(names):
                pending.setdefault(name, {}).update(pending_updates.get(name, {}))
                pending[name]["warm_start"] = sol.warm_start[i]
            checks = self._checks(loss, grads, pre, sol, deltas, pending, a)
            if capturable:
                finite = self._commit_masked(checks, deltas, pending)
                self.state["game"]["step"].add_(finite.to(torch.float64))
            else:
                self._check_finite(checks)
                finite = None
                # Commit: nothing above has touched parameters or state.
                self._apply(deltas)
                for name in names:
                    self.state[name].update(pending[name])
                self.state["game"]["step"] += 1
        self._after_step()
        mark_stepped(loss)
        self._record_info(sol, hvp.passes, a, grads, deltas, time.perf_counter() - timer, finite)
        return loss.detach().reshape(())

    def _checks(self, loss: Tensor, grads, pre: list[Preconditioner], sol: CGDSolution, deltas, pending,
                a: int) -> list[tuple[str, Tensor]]:
        """Every value the step computed, in the order a non-finite value propagates, so the
        first failing check names where it arose. Each mixed HVP result reaches the
        right-hand side, the CG residual, the solution or the back-substituted update, so
        these cover them all (a NaN residual stops CG early but is still caught here)."""
        names = [p.name for p in self.players]
        b = 1 - a
        checks = [("loss (stage: forward)", loss.detach())]
        checks += [(f"gradient of the {n} player (stage: gradient)", g) for n, g in zip(names, grads)]
        checks += [(f"step sizes of the {n} player (stage: step sizes; check lr and eps)", p.eta)
                   for n, p in zip(names, pre)]
        checks += [
            (f"CG right-hand side for the {names[a]} player (stage: mixed HVP)", sol.rhs_sq),
            (f"CG residual for the {names[a]} player (stage: mixed HVP / CG solve)", sol.residual_sq),
            (f"CG solution for the {names[a]} player (stage: mixed HVP / CG solve)", sol.warm_start[a]),
            (f"update of the {names[b]} player (stage: mixed HVP back-substitution)", sol.delta[b]),
        ]
        checks += [(f"update of the {n} player (stage: update)", d) for n, d in zip(names, deltas) if d is not None]
        checks += [(f"new {k} of the {n} player (stage: optimizer state)", t)
                   for n in names for k, t in pending[n].items()]
        return checks

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        game = self.state["game"]
        if isinstance(game["step"], Tensor):  # saved by a capturable optimizer
            game["step"] = (game["step"].to(device=self.players[0].device, dtype=torch.float64)
                            if self.capturable else int(game["step"].item()))

    def _record_info(self, sol: CGDSolution, passes: int, a: int, grads, deltas, seconds: float,
                     finite: Optional[Tensor]) -> None:
        self.info = {"iter_num": sol.iterations, "hvp_passes": passes, "solved": self.players[a].name,
                     "residual_sq": sol.residual_sq, "rhs_sq": sol.rhs_sq, "time": seconds}
        if finite is not None:
            self.info["finite"] = finite
        if self.collect_info:  # norms as in the reference: host floats, device tensors if capturable
            zero = torch.zeros((), device=grads[0].device)
            norms = {"grad_x": grads[0].norm(), "grad_y": grads[1].norm(),
                     "cg_x": deltas[0].norm() if deltas[0] is not None else zero,
                     "cg_y": deltas[1].norm() if deltas[1] is not None else zero}
            self.info.update(norms if finite is not None else {k: v.item() for k, v in norms.items()})
