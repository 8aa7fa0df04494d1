"""The zero-sum CGD family's method (ACGD, BCGD) on the step pipeline: step sizes, the CG
solve of :mod:`fastgame.linalg.cg` for one player and back-substitution for the other,
alternating the solved player every step."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch import Tensor

from ..linalg.hvp import MixedHVP
from ..linalg import captured
from ..linalg.cg import CGDSolution, Preconditioner, solve_cgd
from ..linalg.cg_drivers import cg_driver
from .base import GameOptimizer, Proposal
from .cg_starts import STARTS, CGStart
from .checks import (LossOrClosure, boolean, nonnegative, one_of, optional_positive_int, positive_int, step_arguments,
                     step_count)

CG_STARTS = tuple(STARTS)  # the names cg_start takes ("warm", "zero", "recycle")

# CGDs' ACGD/BCGD.info before the first step; the norms stay None without collect_info.
CGDS_INFO = {"grad_x": None, "grad_y": None, "hvp_x": None, "hvp_y": None, "cg_x": None, "cg_y": None,
             "time": 0, "iter_num": 0}


@dataclass(frozen=True)
class CGMode:
    """How a step's CG runs, decided from the four settings that interact (capturable,
    graph_cg, cg_start, check_every) in one place, :func:`cg_mode`."""
    start: CGStart
    check_every: Optional[int]  # None: no host read at all (a capturable step)
    replay_off: Optional[str]   # why the iterations are never graph-replayed (None: they may be)


def cg_mode(group: dict[str, Any], graph_cg: bool) -> CGMode:
    """The CG of a step with the game-wide settings ``group`` (validated by :func:`check_cg_settings`)."""
    start = STARTS[group["cg_start"]]
    if group["capturable"]:  # no host read: a fixed max_iter masked iterations; the whole step is graphed
        return CGMode(start, None, "graph_cg=False" if not graph_cg else "capturable (the whole step is graphed)")
    check_every = 1 if start.host_checked else group["check_every"]
    if not graph_cg:
        return CGMode(start, check_every, "graph_cg=False")
    if start.host_checked:
        return CGMode(start, check_every, f"cg_start={start.name!r} reads the host every iteration")
    return CGMode(start, check_every, None)


def check_cg_settings(group: dict[str, Any], where: str) -> None:
    """The rules between the CG settings: a capturable step needs max_iter and a capturable start."""
    if group["capturable"] and group["max_iter"] is None:
        raise ValueError(f"{where}: capturable=True needs max_iter: a captured CG runs a fixed number of iterations")
    start = STARTS[group["cg_start"]]
    if group["capturable"] and not start.capturable:
        capturable = " or ".join(repr(n) for n, s in STARTS.items() if s.capturable)
        raise ValueError(f"{where}: cg_start={start.name!r} is not capturable (its Ritz extraction reads the host); "
                         f"use {capturable} with capturable=True")


class CompetitiveGradient(GameOptimizer):
    """Base of ACGD and BCGD. Player x (group 0) maximises the loss, y (group 1) minimises it.

    Subclasses say how step sizes are formed (:meth:`_step_sizes`), which player is solved
    (:meth:`_solved_player`), how the solution becomes updates (:meth:`_updates`) and
    which state a capturable step preallocates (:meth:`_state_names`).

    ``capturable=True`` makes :meth:`step` read nothing from the device, so it can be
    captured in a CUDA graph (:func:`fastgame.make_graphed_step`): CG runs exactly
    ``max_iter`` iterations (those after convergence are no-ops), state is updated in
    place, the step count lives on the device, and a non-finite step is skipped on the
    device instead of raising (``info["finite"]`` tells; :meth:`raise_if_nonfinite` raises).

    ``graph_cg=True`` (eager CUDA steps): each solve captures its first CG iteration in a
    CUDA graph and replays it for the rest (:mod:`fastgame.linalg.captured`), with the same
    iterates. It needs the step's autograd graph off the default stream: pass a closure (it
    runs on the optimizer's side stream) or step on a stream of your own. ``info["cg_graphed"]``
    says whether a step used it, and :attr:`graph_cg_reason` why not.
    """

    # max_iter 0 is refused: no CG iteration would leave the solved player where CG starts (it
    # would not move from a zero start); None is the system size.
    hyperparameters = {"lr": nonnegative, "tol": nonnegative, "atol": nonnegative, "max_iter": optional_positive_int,
                       "check_every": positive_int, "capturable": boolean, "cg_start": one_of(*CG_STARTS)}
    game_wide = frozenset({"tol", "atol", "max_iter", "check_every", "capturable", "cg_start"})
    # A dict from before cg_start: CG started warm (CGDs' start), or as its bool warm_start said.
    added_later = {"cg_start": lambda g: "zero" if g.get("warm_start") is False else "warm"}
    state_keys = frozenset().union(*(s.state_keys for s in STARTS.values()))  # what the CG starts keep
    row_state_keys = frozenset().union(*(s.row_state_keys for s in STARTS.values()))
    game_state = {"step": step_count, "solve_x": boolean}

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float, lr_min: float,
                 tol: float, atol: float, solve_x: bool, collect_info: bool, max_iter: Optional[int],
                 check_every: int = 1, capturable: bool = False, backend: Optional[str] = None,
                 cg_start: str = "zero", graph_cg: bool = True, **defaults: Any) -> None:
        boolean("graph_cg", graph_cg)
        boolean("solve_x", solve_x)
        super().__init__(max_params, min_params, lr_max, lr_min,
                         dict(tol=tol, atol=atol, max_iter=max_iter, check_every=check_every,
                              capturable=capturable, cg_start=cg_start, **defaults),
                         ("max_params", "min_params"), ("lr_max", "lr_min"), backend)
        self.collect_info = collect_info
        self.graph_cg = graph_cg
        self.state["game"] = {"step": 0, "solve_x": solve_x}
        if self.capturable:  # allocate now, so that even a skipped first step changes no state
            self._prepare_capturable()

    def _config_attrs(self) -> tuple[str, ...]:
        return (*super()._config_attrs(), "collect_info", "graph_cg")

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self.graph_cg_reason: Optional[str] = None  # why the last step's CG was not graph-replayed
        self._graph_cg_failed: Optional[str] = None  # a failed capture: not tried again
        self._cg_capture = captured.CaptureResources()  # the side stream and graph pool of graph_cg
        self._cg_pieces: Optional[captured.CGPieces] = None  # see cg_pieces()
        self.info = dict(CGDS_INFO)

    def _check_combination(self, group: dict[str, Any], where: str) -> None:
        check_cg_settings(group, where)

    # ---- hooks ------------------------------------------------------------------------
    def _step_sizes(self, grads: tuple[Tensor, Tensor], step: Tensor) -> tuple[list[Preconditioner], dict]:
        """Per-player step sizes and the state entries to commit if the step succeeds."""
        raise NotImplementedError

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        start = STARTS[group["cg_start"]]  # a start's state is kept only where it is read
        return tuple(sorted(start.state_keys - start.row_state_keys))

    def _solved_player(self) -> int:
        """0 to solve for the max player this step, 1 for the min player."""
        return 1 if self.state["game"]["solve_x"] else 0

    def _updates(self, sol: CGDSolution, step: Tensor) -> tuple[list[Optional[Tensor]], dict]:
        """The updates to add to (x, y) (None: leave the player alone) and state to commit."""
        return list(sol.delta), {}

    def _after_step(self) -> Optional[Callable[[], None]]:
        self._flip_solved_player()
        return self._flip_solved_player  # a skipped step's player is solved again next

    def _flip_solved_player(self) -> None:
        game = self.state["game"]
        game["solve_x"] = not game["solve_x"]

    def _next_solved_player(self, a: int) -> int:
        """The player the step after this one solves for (this step solves for ``a``)."""
        return 1 - a

    def graph_phase(self) -> int:
        return self._solved_player()

    @contextlib.contextmanager
    def cg_pieces(self, pieces: captured.CGPieces) -> Iterator[None]:
        """Within the block, a capturable step hands its masked CG iterations to ``pieces``
        (:mod:`fastgame.linalg.captured`), which runs them with the host loop reading the residual
        test every ``check_every`` iterations (at most ``max_iter``), or records one for a
        piecewise-graphed step, instead of running exactly ``max_iter`` of them. The same numbers."""
        if not self.capturable:
            raise ValueError("cg_pieces needs an optimizer built with capturable=True")
        self._cg_pieces = pieces
        try:
            yield
        finally:
            self._cg_pieces = None

    # ---- the step ---------------------------------------------------------------------
    def step(self, loss: Optional[LossOrClosure] = None, trigger: Any = None, *,
             closure: Optional[Callable[[], Tensor]] = None) -> Tensor:
        """One competitive step on ``loss`` (x maximises it, y minimises it).

        ``loss`` is the scalar loss tensor (with its graph) or a closure returning it, also
        as ``closure=`` (torch.optim's keyword); the closure must return the loss without
        calling ``backward()``: no ``backward()`` is needed, and grad mode is on inside the
        step even if the caller disabled it. ``trigger`` is accepted for compatibility with
        CGDs and ignored (gradients are all-reduced explicitly under torch.distributed).
        Returns the loss. Raises ``ValueError`` on bad input (including a loss a previous
        step already used, and invalid values set through ``param_groups``) and
        ``FloatingPointError`` on a non-finite value anywhere in the step, leaving
        parameters and state unchanged (capturable: the step is skipped on the device
        instead, see the class doc).
        """
        return self._run_step(*step_arguments(type(self).__name__, self.loss_names, (loss,), closure))

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: MixedHVP, step: Tensor) -> Proposal:
        group = self.param_groups[0]  # tol/atol/max_iter/... are game-wide: the same in both groups
        mode = cg_mode(group, self.graph_cg)
        pre, state = self._step_sizes(grads, step)
        a, names = self._solved_player(), [p.name for p in self.players]
        w0, deflation = mode.start.begin(hvp, a, pre, self.state, names)
        replay = self._iteration_replay()
        pieces = self._cg_pieces if self.capturable else None  # a piecewise step reads the host between pieces
        driver = cg_driver(group["check_every"] if pieces is not None else mode.check_every, replay, pieces)
        sol = solve_cgd(hvp, a, grads, pre, w0, group["tol"], group["atol"], group["max_iter"], driver,
                        fused=self.ops, deflation=deflation)
        info = {"iter_num": sol.iterations, "solved": names[a], "residual_sq": sol.residual_sq, "rhs_sq": sol.rhs_sq,
                **self._replay_info(replay)}
        deltas, updated = self._updates(sol, step)
        for name in names:
            state.setdefault(name, {}).update(updated.get(name, {}))
        info.update(mode.start.after(sol, deflation, self._next_solved_player(a), state, names))
        checks = self._solve_checks(names, a, pre, sol)
        if self.collect_info and self._reports_couplings():
            couplings = self._coupling_norms(hvp, grads, pre, sol, a)
            info["hvp_x"], info["hvp_y"] = couplings.unbind()
            checks.append(("mixed HVP norms hvp_x, hvp_y (stage: mixed HVP for collect_info)", couplings))
        return Proposal(deltas, state, checks, info)

    def _cg_vectors(self, deltas: Sequence[Optional[Tensor]]) -> Sequence[Optional[Tensor]]:
        """What CGDs reports as ``cg_x``/``cg_y`` (with collect_info): ACGD's are the updates."""
        return deltas

    def _reports_couplings(self) -> bool:
        """Whether a step with collect_info reports CGDs' ``hvp_x``/``hvp_y``."""
        return True

    def _coupling_norms(self, hvp: MixedHVP, grads: tuple[Tensor, Tensor], pre: list[Preconditioner],
                        sol: CGDSolution, a: int) -> Tensor:
        """CGDs' ``hvp_x``, ``hvp_y`` (with collect_info): ‖D_xy η_y g_y‖ and ‖D_yx η_x g_x‖, the
        mixed products of its two right-hand sides. The solved player's is the solve's own; the
        other's, which the step does not need, costs one pass."""
        norms = [sol.coupling.norm(), hvp(1 - a, pre[a].eta_grad).norm()]
        return torch.stack(norms if a == 0 else norms[::-1])

    @staticmethod
    def _solve_checks(names: list[str], a: int, pre: list[Preconditioner], sol: CGDSolution) -> list[tuple[str, Tensor]]:
        """The solve's values to check. Each mixed HVP result reaches the right-hand side, the
        CG residual, the solution or the back-substituted update, so these cover them all (a
        NaN residual stops CG early, which is why the residual itself is checked)."""
        checks = [(f"step sizes of the {n} player (stage: step sizes; check lr and eps)", p.eta)
                  for n, p in zip(names, pre)]
        return checks + [
            (f"CG right-hand side for the {names[a]} player (stage: mixed HVP)", sol.rhs_sq),
            (f"CG residual for the {names[a]} player (stage: mixed HVP / CG solve)", sol.residual_sq),
            (f"CG solution for the {names[a]} player (stage: mixed HVP / CG solve)", sol.warm_start[a]),
            (f"update of the {names[1 - a]} player (stage: mixed HVP back-substitution)", sol.delta[1 - a]),
        ]

    def _iteration_replay(self) -> Optional[captured.IterationReplay]:
        """A graph replay for this solve's CG iterations, or None (and ``graph_cg_reason``)."""
        device = self.players[0].device
        off = cg_mode(self.param_groups[0], self.graph_cg).replay_off
        self.graph_cg_reason = off or (None if device.type == "cuda" else "not a CUDA device")
        if self.graph_cg_reason is not None:
            return None
        self.graph_cg_reason = self._graph_cg_failed or captured.why_not(device)
        if self.graph_cg_reason is None and self.state["game"]["step"] == 0:  # kernels load and autotune eagerly first
            self.graph_cg_reason = "the first step runs eagerly"
        return captured.IterationReplay(device, self._cg_capture) if self.graph_cg_reason is None else None

    def _replay_info(self, replay: Optional[captured.IterationReplay]) -> dict[str, Any]:
        """The step's info on graph-replayed iterations; a failed capture is said once and not tried again."""
        info: dict[str, Any] = {"cg_graphed": replay is not None and replay.failure is None}
        if info["cg_graphed"]:
            info["cg_capture_s"] = replay.capture_seconds
        if replay is not None and replay.failure is not None:
            self._graph_cg_failed = self.graph_cg_reason = f"capturing a CG iteration failed ({replay.failure})"
            warnings.warn(f"{type(self).__name__}: {self.graph_cg_reason}; CG iterations run eagerly from now on "
                          "(graph_cg=False silences this)", stacklevel=6)
        return info

    def _step_stream(self, closure: Optional[Callable[[], Any]]) -> contextlib.AbstractContextManager:
        """A closure's step runs on the side stream when CG iterations are to be graph-replayed
        from the default stream (autograd then runs its nodes there, where they can be captured)."""
        device = self.players[0].device
        if (closure is None or cg_mode(self.param_groups[0], self.graph_cg).replay_off is not None
                or self._graph_cg_failed or captured.why_not(device, stream=False) is not None
                or torch.cuda.current_stream(device) != torch.cuda.default_stream(device)):
            return contextlib.nullcontext()
        return self._cg_capture.on_side_stream(device)

    def _extend_info(self, grads: tuple[Tensor, Tensor], deltas, capturable: bool) -> None:
        if self.collect_info:  # norms as in the reference: host floats, device tensors if capturable
            names = ["grad_x", "grad_y", "cg_x", "cg_y"]
            norms = [t.norm() if t is not None else grads[0].new_zeros(()) for t in (*grads, *self._cg_vectors(deltas))]
            names += [k for k in ("hvp_x", "hvp_y") if k in self.info]
            norms += [self.info[k].to(norms[0].dtype) for k in names[4:]]
            stacked = torch.stack(norms)
            values = stacked.unbind() if capturable else stacked.tolist()  # one host read, not six
            self.info.update(zip(names, values))
        self.info = {**{k: v for k, v in CGDS_INFO.items() if v is None}, **self.info}
