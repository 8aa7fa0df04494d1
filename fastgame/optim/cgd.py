"""The step shared by the zero-sum CGD family (ACGD, BCGD): gradients, step sizes, the
CG solve of :mod:`fastgame.solver`, one finiteness check, then an all-or-nothing commit."""
from __future__ import annotations

import time
from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from ..hvp import MixedHVP, all_reduce_mean
from ..solver import CGDSolution, Preconditioner, solve_cgd
from .base import GameOptimizer, LossOrClosure, autocast_off, check_max_iter, check_nonnegative, resolve_loss


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

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float, lr_min: float,
                 tol: float, atol: float, solve_x: bool, collect_info: bool, max_iter: Optional[int],
                 check_every: int = 1, capturable: bool = False, **defaults: Any) -> None:
        check_nonnegative(tol=tol, atol=atol)
        check_max_iter(max_iter)
        if not (isinstance(check_every, int) and check_every >= 1):
            raise ValueError(f"invalid check_every: {check_every!r} (must be an int >= 1)")
        if capturable and max_iter is None:
            raise ValueError("capturable=True needs max_iter: a captured CG runs a fixed number of iterations")
        super().__init__(max_params, min_params, lr_max, lr_min,
                         dict(tol=tol, atol=atol, max_iter=max_iter, check_every=check_every,
                              capturable=bool(capturable), **defaults),
                         ("max_params", "min_params"), ("lr_max", "lr_min"))
        self.collect_info = collect_info
        self.state["game"] = {"step": 0, "solve_x": bool(solve_x)}
        self._finite_stages: list[str] = []

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
        t = self.__dict__.setdefault("_step_t", torch.zeros((), dtype=torch.float64, device=self.players[0].device))
        return t.fill_(count + 1)

    def step(self, loss: LossOrClosure, trigger: Any = None) -> Tensor:
        """One competitive step on ``loss`` (x maximises it, y minimises it).

        ``loss`` is the scalar loss tensor (with its graph) or a closure returning it; no
        ``backward()`` is needed. ``trigger`` is accepted for compatibility with CGDs and
        ignored (gradients are all-reduced explicitly under torch.distributed).
        Returns the loss. Raises ``ValueError`` on bad input and ``FloatingPointError`` on
        a non-finite loss, gradient or HVP, leaving parameters and state unchanged
        (capturable: the step is skipped on the device instead, see the class doc).
        """
        loss = resolve_loss(loss)
        with autocast_off(self.players[0].device):
            return self._step(loss)

    def _step(self, loss: Tensor) -> Tensor:
        self._ensure_flat()
        group = self.param_groups[0]  # tol/atol/max_iter/... are game-wide; group 0 holds them
        capturable = self.capturable
        if capturable:
            self._prepare_capturable()
        timer = time.perf_counter()
        step = self._step_tensor()
        gx, gy = self._grads(loss)
        with torch.no_grad():
            grads = (all_reduce_mean(self.players[0].gather(gx)), all_reduce_mean(self.players[1].gather(gy)))
            pre, pending = self._step_sizes(grads, step)
            hvp = MixedHVP(self.players, (gx, gy))
            a = self._solved_player()
            names = [p.name for p in self.players]
            w0 = self.state[names[a]].get("warm_start")
            sol = solve_cgd(hvp, a, grads, pre, w0, group["tol"], group["atol"], group["max_iter"],
                            check_every=None if capturable else group["check_every"])
            deltas, pending_updates = self._updates(sol, step)
            for i, name in enumerate(names):
                pending.setdefault(name, {}).update(pending_updates.get(name, {}))
                pending[name]["warm_start"] = sol.warm_start[i]
            checks = [
                ("loss (stage: forward)", loss.detach()),
                (f"gradient of the {names[0]} player (stage: gradient)", grads[0]),
                (f"gradient of the {names[1]} player (stage: gradient)", grads[1]),
                (f"CG solution for the {names[a]} player (stage: mixed HVP / CG solve)", sol.warm_start[a]),
                (f"update of the {names[1 - a]} player (stage: mixed HVP back-substitution)", sol.delta[1 - a]),
            ]
            if capturable:
                finite = self._commit_masked(checks, deltas, pending)
            else:
                self._check_finite(checks)
                finite = None
                # Commit: nothing above has touched parameters or state.
                self._apply(deltas)
                for name in names:
                    self.state[name].update(pending[name])
                self.state["game"]["step"] += 1
        self._after_step()
        self._record_info(sol, hvp.passes, a, grads, deltas, time.perf_counter() - timer, finite)
        return loss.detach()

    def _commit_masked(self, checks, deltas, pending) -> Tensor:
        """Apply the step in place only if every check is finite, without a host read."""
        flags = torch.stack([torch.isfinite(t).all() for _, t in checks])
        ok = flags.all()
        for player, d in zip(self.players, deltas):
            if d is not None:
                player.flat.add_(torch.where(ok, d, 0.0))
        for player in self.players:
            for k, new in pending[player.name].items():
                old = self.state[player.name][k]
                old.copy_(torch.where(ok, new, old))
        self.state["game"]["step"].add_(ok.to(torch.float64))
        self._finite_stages = [what for what, _ in checks]
        self._finite_flags = flags
        return ok

    def raise_if_nonfinite(self) -> None:
        """After a capturable step: raise FloatingPointError naming the stage if it was
        skipped as non-finite (one host read)."""
        flags = self.__dict__.get("_finite_flags")
        if flags is None:
            return
        for what, ok in zip(self._finite_stages, flags.tolist()):
            if not ok:
                raise FloatingPointError(f"{type(self).__name__}: non-finite {what}; the step was skipped "
                                         "(parameters and optimizer state are unchanged)")

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
