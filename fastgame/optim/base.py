"""What every fastgame optimizer shares: two players as two param groups, validated
hyperparameters and state, closures, the finiteness verdict and all-or-nothing commit of a
step, a state_dict that is a real copy, and copies (``copy.deepcopy``, pickle) that work.

Per-player state lives under the string keys ``"max"``/``"min"`` (``"x"``/``"y"`` for
general-sum games) of ``self.state`` as flat tensors, and game-wide counters under
``"game"``; torch's Optimizer carries string keys through ``state_dict`` unchanged.

The promise every step keeps: a bad input raises ``ValueError``, a non-finite value
anywhere in the step (loss, gradients, step sizes, mixed HVPs, the solve, the updates, the
new state) raises ``FloatingPointError`` naming the player and stage, and a step that raises
changes no parameter and no optimizer state. To keep it, a step computes everything into
temporaries, checks them all with one host read (:meth:`GameOptimizer._check_finite`), and
only then commits.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import ops
from ..linalg.captured import capturing
from ..linalg.distributed import all_reduce_mean
from ..linalg.hvp import MixedHVP
from ..linalg.params import Player, as_param_list, check_players
from . import cgds_format, ranks, state_io
from .checks import (Validator, check_nonnegative, closure_of, is_negation, mark_stepped, nonnegative,
                     resolve_losses)
from .verdict import Verdict, apply, check_finite


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which fastgame's own arithmetic (step sizes, CG/GMRES vectors, updates)
    stays in the parameters' dtype even if ``step`` is called under ``torch.autocast``; the
    loss's graph, and so every HVP, keeps the precision it was built with."""
    available = getattr(torch.amp, "is_autocast_available", lambda t: t in ("cpu", "cuda"))
    return torch.autocast(device.type, enabled=False) if available(device.type) else contextlib.nullcontext()


@dataclass
class Proposal:
    """What a method proposes for one step. The pipeline checks all of it, then commits it."""
    deltas: list[Optional[Tensor]]  # added to (x, y); None leaves that player alone
    state: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # per-player entries to commit
    checks: list[tuple[str, Tensor]] = field(default_factory=list)  # intermediate values, in the
    # order a non-finite value propagates through them (the first failing one is reported)
    info: dict[str, Any] = field(default_factory=dict)  # the method's part of get_info()


class GameOptimizer(torch.optim.Optimizer):
    """Base of the two-player optimizers: param group 0 is player x, group 1 is player y,
    each with its own ``lr`` (so ``torch.optim.lr_scheduler`` works unchanged).

    Every method runs one step pipeline (:meth:`_run_step`): check the input → gradients
    (one create_graph backward per loss) → cross-rank averaging → the method's proposal
    (:meth:`_propose`: step sizes, solve, updates and new state) → one finiteness verdict
    over everything computed → commit (checked and all-or-nothing, or masked on the device
    when ``capturable``) → info. A method supplies only :meth:`_propose` and its declarations.

    A subclass declares its hyperparameters (``hyperparameters``: name -> validator), which
    of them are game-wide (``game_wide``: must be equal in both groups), the per-player state
    it keeps (``state_keys``) and the game-wide state entries (``game_state``: name ->
    validator). Every value is validated at construction, at every step (so values set
    through ``param_groups`` are checked too) and by :meth:`load_state_dict`.
    """

    player_names: tuple[str, str] = ("max", "min")
    player_label = "the {} player"  # how messages name a player
    loss_names: tuple[str, ...] = ("loss",)  # one zero-sum loss, or (loss_x, loss_y) minimised by x and y
    hyperparameters: dict[str, Validator] = {"lr": nonnegative}
    game_wide: frozenset[str] = frozenset()
    state_keys: frozenset[str] = frozenset()
    game_state: dict[str, Validator] = {}
    row_state_keys: frozenset[str] = frozenset()  # per-player state that is a (k, numel) matrix
    nonnegative_state_keys: frozenset[str] = frozenset()  # per-player state that must be >= 0 (second moments)
    # Hyperparameters a state_dict saved by an older version lacks -> the value that version
    # behaved as, given the saved group (so a resumed run keeps the behaviour it was saved with).
    added_later: dict[str, Callable[[dict[str, Any]], Any]] = {}
    second_order: bool = True  # whether the gradients keep their graph for HVPs (False: first-order methods)
    needs_closure: bool = False  # whether the method re-evaluates the loss at other points (see _gradients_at)
    cgds_class: Optional[str] = None  # the CGDs 0.4.5 class this one replaces (its state_dict format, cgds_format)

    def __init__(self, params_x: Iterable[Tensor], params_y: Iterable[Tensor], lr_x: float, lr_y: float,
                 defaults: dict[str, Any], arg_names: tuple[str, str], lr_names: tuple[str, str],
                 backend: Optional[str] = None) -> None:
        check_nonnegative(**{lr_names[0]: lr_x, lr_names[1]: lr_y})
        ops.dispatch(backend)  # an unknown or unusable backend fails here, before anything else
        self.backend = backend
        for key, value in defaults.items():
            self.hyperparameters[key](key, value)
        self._check_combination(defaults, "__init__")
        px = as_param_list(params_x, arg_names[0])
        py = as_param_list(params_y, arg_names[1])
        check_players((px, py), arg_names)
        groups = [{"params": px, "lr": lr_x, "player": self.player_names[0]},
                  {"params": py, "lr": lr_y, "player": self.player_names[1]}]
        super().__init__(groups, defaults)
        self._groups_fixed = True
        self._init_runtime()

    def _init_runtime(self) -> None:
        """The host-side objects derived from param_groups (rebuilt after a copy or unpickle)."""
        self.players = tuple(Player(g["params"], name) for g, name in zip(self.param_groups, self.player_names))
        self.info: dict[str, Any] = {}
        self.ops = ops.dispatch(self.backend)  # the fused ops under this optimizer's backend choice
        self._lr_t: list[Optional[Tensor]] = [None] * len(self.players)
        self._lr_host: list[Optional[float]] = [None] * len(self.players)  # the value each lr tensor holds
        self._step_t: Optional[Tensor] = None
        self._verdict = Verdict()  # the last capturable step's checks
        # One step at a time (steps from other threads wait); kept across load_state_dict, whose
        # torch half rebuilds the runtime while the lock is held.
        self._step_lock: threading.Lock = getattr(self, "_step_lock", None) or threading.Lock()
        self._stepping: Optional[int] = None  # the thread running a step
        self._ranks_agreed = False  # whether the hyperparameters were checked to agree across ranks
        self._closure: Optional[Callable[[], Any]] = None  # the running step's closure (see _gradients_at)

    # ---- copies: deepcopy / pickle / torch.save(opt) ------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update({k: v for k, v in self.__dict__.items() if k in self._config_attrs()})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._groups_fixed = True
        self._init_runtime()  # re-flattens the (copied) parameters, so the copy is independent

    def _config_attrs(self) -> tuple[str, ...]:
        """Plain attributes (besides defaults/state/param_groups) a copy must keep."""
        return ("backend",)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Refused after construction: a game optimizer has exactly one group per player."""
        if getattr(self, "_groups_fixed", False):
            raise ValueError(f"{type(self).__name__} has exactly one param group per player; "
                             "add_param_group is not supported: build a new optimizer with all the parameters")
        super().add_param_group(param_group)

    # ---- validation ---------------------------------------------------------------------
    def _validate_groups(self, groups: Sequence[dict[str, Any]], where: str) -> None:
        """Check every hyperparameter of both groups, and that game-wide ones agree."""
        state_io.validate_groups(self, groups, where, self._check_combination)

    def _check_combination(self, group: dict[str, Any], where: str) -> None:
        """Rules between game-wide hyperparameters (e.g. capturable needs max_iter)."""

    def _begin_step(self) -> None:
        """Host-side checks and preparation before a step computes anything."""
        self._validate_groups(self.param_groups, "step")
        for player in self.players:
            for i, p in enumerate(player.params):
                if not p.requires_grad:
                    raise ValueError(f"parameter {i} (shape {tuple(p.shape)}) of {self.player_label.format(player.name)} "
                                     "no longer requires grad (turned off after the optimizer was built); fastgame "
                                     "steps every parameter it was given: turn it back on, or build a new optimizer")
        self._ensure_flat()

    # ---- the step pipeline ----------------------------------------------------------------
    @property
    def capturable(self) -> bool:
        """Whether :meth:`step` reads nothing from the device (so a CUDA graph can capture it)."""
        return bool(self.param_groups[0].get("capturable", False))

    def _resolve_losses(self, losses: tuple[Any, ...]) -> tuple[Tensor, ...]:
        """The step's losses from what ``step`` was given: the loss tensors, or one closure
        returning them (called under grad mode)."""
        return resolve_losses(type(self).__name__, self.loss_names, losses, self._loss_count_hint())

    def _loss_count_hint(self) -> str:
        """Said after "takes N losses, got M" (e.g. how to step on one loss per player)."""
        return ""

    def _run_step(self, *losses: Any) -> Union[Tensor, tuple[Tensor, ...]]:
        """One step of the pipeline; see the class docstring. Steps of one optimizer run one
        at a time: a step called from another thread meanwhile waits for this one to finish,
        and a step called from inside a step (e.g. from its closure) raises."""
        closure = closure_of(losses)
        if self.needs_closure and closure is None:
            raise ValueError(f"{type(self).__name__}.step needs a closure returning "
                             f"({', '.join(self.loss_names)}): it evaluates the loss at more than one point")
        if self._stepping == threading.get_ident():
            raise RuntimeError(f"{type(self).__name__}.step was called from inside its own step (e.g. from the "
                               "closure); a step cannot start before the previous one has finished")
        with self._step_lock:
            self._stepping, self._closure = threading.get_ident(), closure
            try:
                losses = self._locked_step(losses, closure)
            finally:
                self._stepping = self._closure = None
        detached = tuple(t.detach().reshape(()) for t in losses)
        return detached[0] if len(detached) == 1 else detached

    def _locked_step(self, losses: tuple[Any, ...], closure: Optional[Callable[[], Any]]) -> tuple[Tensor, ...]:
        device = self.players[0].device
        with self._step_stream(closure), torch.enable_grad():  # the step differentiates, even if grad is off
            # Before the closure runs, so that a refused step runs no forward either.
            self._on_all_ranks("checking the step's input", self._begin_step)
            if not self._ranks_agreed and not capturing():
                ranks.check_ranks_agree(type(self).__name__, self.param_groups)
                self._ranks_agreed = True
            losses = self._on_all_ranks("the closure or the loss", lambda: self._resolve_losses(losses))
            with autocast_off(device):
                self._step_pipeline(losses)
        return losses

    def _on_all_ranks(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``; under torch.distributed every rank learns of a failure in it on any rank, and
        all raise (:func:`.ranks.on_all_ranks`). Not when capturable: agreeing reads the host."""
        if self.capturable:
            return fn()
        return ranks.on_all_ranks(type(self).__name__, what, fn, self.players[0].device)

    def _step_stream(self, closure: Optional[Callable[[], Any]]) -> contextlib.AbstractContextManager:
        """The CUDA stream context the step (and its closure) runs in: the caller's by default."""
        return contextlib.nullcontext()

    def _step_pipeline(self, losses: tuple[Tensor, ...]) -> None:
        timer = time.perf_counter()
        capturable = self.capturable
        if capturable:
            self._prepare_capturable()
        step = self._step_tensor()
        grads, hvp = self._gradients(losses)
        with torch.no_grad():
            proposal = self._propose(grads, hvp, step)
            checks = self._checks(losses, grads, proposal)
            if capturable:
                finite = self._verdict.commit_masked(self.players, self.state, checks, proposal.deltas, proposal.state)
                self.state["game"]["step"].add_(finite.to(torch.float64))
            else:
                check_finite(type(self).__name__, checks, self.players[0].device)
                finite = None
                # Commit: nothing above has touched parameters or state.
                apply(self.players, proposal.deltas)
                for name, entries in proposal.state.items():
                    self.state[name].update(entries)
                self.state["game"]["step"] += 1
        undo = self._after_step()
        if capturable:
            self._verdict.on_skip(undo)
        mark_stepped(*losses)
        self.info = {**proposal.info, "hvp_passes": hvp.passes, "time": time.perf_counter() - timer}
        if finite is not None:
            self.info["finite"] = finite
        self._extend_info(grads, proposal.deltas, finite is not None)

    def _gradients(self, losses: tuple[Tensor, ...], second_order: Optional[bool] = None
                   ) -> tuple[tuple[Tensor, Tensor], MixedHVP]:
        """The players' flat gradients (averaged across ranks) and the mixed HVPs of the game.

        Zero-sum (one loss f): ∇ₓf and ∇ᵧf from one backward, which the mixed blocks D_xy f
        and D_yx f differentiate again. General-sum (f for x, g for y): ∇ₓf and ∇ᵧg drive the
        step and D_xy f = ∂(∇ᵧf)/∂x, D_yx g = ∂(∇ₓg)/∂y couple it, from one backward per loss
        (one in all when one loss is the other's negation: see :meth:`_general_sum_grads`).
        """
        x, y = self.players
        graph = self.second_order if second_order is None else second_order  # for the HVPs
        if len(losses) == 1:
            gx, gy = self._grads(losses[0], graph)
            step_grads, cross = (gx, gy), (gx, gy)
        else:
            fx, fy, gx, gy = self._general_sum_grads(losses[0], losses[1], graph)
            step_grads, cross = (fx, gy), (gx, fy)
        with torch.no_grad():
            flat = (all_reduce_mean(x.gather(step_grads[0])), all_reduce_mean(y.gather(step_grads[1])))
        return flat, self._hvp(step_grads, cross)

    def _hvp(self, step_grads: tuple[list[Tensor], list[Tensor]],
             cross: tuple[list[Tensor], list[Tensor]]) -> MixedHVP:
        """The second-derivative products a method uses, from the per-parameter gradients
        (with graph): the mixed blocks by default."""
        return MixedHVP(self.players, cross)

    def _gradients_at(self, deltas: Sequence[Optional[Tensor]]) -> tuple[tuple[Tensor, ...], tuple[Tensor, Tensor]]:
        """The losses and flat step gradients at the point moved by ``deltas`` (None: that
        player stays), from the step's closure (``needs_closure``).

        The parameters are moved in place, the closure re-evaluated and differentiated, and
        the saved values copied back exactly (also when this raises), so nothing changes
        before the pipeline's commit. The original losses' graph must not be differentiated
        after this call (their parameters' version counters moved).
        """
        moved = [(player, player.flat.clone(), d) for player, d in zip(self.players, deltas) if d is not None]
        try:
            with torch.no_grad():
                for player, _, d in moved:
                    player.flat.add_(d)
            with torch.enable_grad():
                losses = self._on_all_ranks("the closure at a moved point",
                                            lambda: self._resolve_losses((self._closure,)))
                grads, _ = self._gradients(losses, second_order=False)  # no method differentiates again there
            mark_stepped(*losses)
        finally:
            with torch.no_grad():
                for player, saved, _ in moved:
                    player.flat.copy_(saved)
        return tuple(t.detach() for t in losses), grads

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: MixedHVP, step: Tensor) -> Proposal:
        """The method: from the flat gradients, the mixed HVPs and this step's count (a 0-dim
        float64 device tensor, from 1), the updates and new state, without changing anything."""
        raise NotImplementedError

    def _checks(self, losses: tuple[Tensor, ...], grads: tuple[Tensor, Tensor],
                proposal: Proposal) -> list[tuple[str, Tensor]]:
        """Every value the step computed, in the order a non-finite value propagates."""
        labels = [self.player_label.format(p.name) for p in self.players]
        checks = [(f"{name} (stage: forward)", t.detach()) for name, t in zip(self.loss_names, losses)]
        checks += [(f"gradient of {lab} (stage: gradient)", g) for lab, g in zip(labels, grads)]
        checks += proposal.checks
        checks += [(f"update of {lab} (stage: update)", d) for lab, d in zip(labels, proposal.deltas) if d is not None]
        checks += [(f"new {k} of {self.player_label.format(name)} (stage: optimizer state)", t)
                   for name, entries in proposal.state.items() for k, t in entries.items()]
        # A tensor listed twice (a method's own check, then as an update or state) is checked
        # once, under its first, more specific stage.
        unique, seen = [], set()
        for stage, t in checks:
            if id(t) not in seen:
                seen.add(id(t))
                unique.append((stage, t))
        return unique

    def _extend_info(self, grads: tuple[Tensor, Tensor], deltas: Sequence[Optional[Tensor]], capturable: bool) -> None:
        """Add optional diagnostics to ``self.info`` after the commit."""

    def _group(self, player: Player) -> dict[str, Any]:
        return self.param_groups[self.players.index(player)]

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The per-player state (flat vectors) kept with this group's settings: a capturable
        step allocates what is missing as zeros and then updates it in place."""
        return ()

    def _prepare_capturable(self) -> None:
        game = self.state["game"]
        if not isinstance(game["step"], Tensor):
            game["step"] = torch.tensor(float(game["step"]), dtype=torch.float64, device=self.players[0].device)
        for player in self.players:
            st = self.state[player.name]
            for k in self._state_names(self._group(player)):
                if k not in st:  # allocated once, not every step
                    st[k] = torch.zeros_like(player.flat)

    def _step_tensor(self) -> Tensor:
        """This step's count (from 1) as a 0-dim float64 device tensor."""
        count = self.state["game"]["step"]
        if isinstance(count, Tensor):
            return count + 1
        device = self.players[0].device
        if self._step_t is None or self._step_t.device != device:
            self._step_t = torch.zeros((), dtype=torch.float64, device=device)
        return self._step_t.fill_(count + 1)

    def _after_step(self) -> Optional[Callable[[], None]]:
        """The host half of a step, after the commit (e.g. which player is solved next);
        returns what undoes it for a capturable step the device skipped (None: nothing)."""
        return None

    # ---- the interface make_graphed_step uses -----------------------------------------
    def graph_phase(self) -> Hashable:
        """Which captured graph serves the next step: steps whose host-side branches differ
        (e.g. which player CG solves) need graphs of their own."""
        return 0

    def refresh_device_hyperparameters(self) -> None:
        """Copy the host hyperparameters a replayed graph reads (the learning rates) to the device."""
        self._lr_tensors()

    @property
    def verdict(self) -> Optional[tuple[list[str], Tensor]]:
        """The last capturable step's checks: their names and a device bool tensor of flags."""
        return self._verdict.pending

    def replayed(self, info: dict[str, Any], verdict: tuple[list[str], Tensor]) -> None:
        """The host half of a step whose device half a CUDA graph just replayed: its info,
        its (unread) verdict, and the host-side state that follows (e.g. the next phase)."""
        self.info = dict(info)
        self._verdict.set(*verdict)
        self._verdict.on_skip(self._after_step())

    # ---- players and per-player state -------------------------------------------------
    def _ensure_flat(self) -> None:
        moved = [p.needs_flatten() for p in self.players]
        if not any(moved):
            return
        # Validate both players before re-binding any storage, so a refusal changes nothing.
        check_players([p.params for p in self.players], [f"{p.name} player" for p in self.players],
                      shapes=[p.shapes for p in self.players])
        for player, m in zip(self.players, moved):
            if m:
                player.flatten()
                st = self.state.get(player.name, {})
                for k, v in st.items():  # moved or cast: bring the state along
                    if isinstance(v, Tensor):
                        st[k] = v.to(device=player.device, dtype=player.dtype)

    def _general_sum_grads(self, f: Tensor, g: Tensor, create_graph: bool) -> tuple[list[Tensor], ...]:
        """∇ₓf, ∇ᵧf, ∇ₓg, ∇ᵧg: one backward per loss, or a single one when one loss was computed
        as the other's negation (``loss_x = -loss_y``, the usual way to play a zero-sum game with
        GACGD). Then the other's gradients are the negated ones, bit for bit (IEEE rounding is
        symmetric in sign and every backward op is linear in its incoming gradient), and the step
        saves one of its two create_graph backward passes."""
        if is_negation(f, g):
            gx, gy = self._grads(g, create_graph)
            return [-t for t in gx], [-t for t in gy], gx, gy
        fx, fy = self._grads(f, create_graph)
        if is_negation(g, f):
            return fx, fy, [-t for t in fx], [-t for t in fy]
        gx, gy = self._grads(g, create_graph)
        return fx, fy, gx, gy

    def _grads(self, loss: Tensor, create_graph: bool = True) -> tuple[list[Tensor], list[Tensor]]:
        """Gradients of ``loss`` for both players in one backward (zeros for unused params)."""
        nx = len(self.players[0].params)
        try:  # retain_graph: a general-sum game's second loss may share the first one's graph
            g = torch.autograd.grad(loss, self.players[0].params + self.players[1].params,
                                    retain_graph=True, create_graph=create_graph, materialize_grads=True)
        except RuntimeError as exc:
            if "backward through the graph a second time" not in str(exc):
                raise
            raise ValueError("the loss's graph was already freed (by loss.backward() or another autograd call "
                             "without retain_graph=True); fastgame differentiates the loss itself: compute it "
                             "again and pass it to step() without calling backward()") from None
        return list(g[:nx]), list(g[nx:])

    def _lr_tensors(self) -> tuple[Tensor, ...]:
        """The groups' learning rates as 0-dim float64 device tensors (no host sync to use)."""
        for i, player in enumerate(self.players):
            if self._lr_t[i] is None or self._lr_t[i].device != player.device:
                self._lr_t[i] = torch.zeros((), dtype=torch.float64, device=player.device)
                self._lr_host[i] = None
            lr = float(self.param_groups[i]["lr"])
            # Filled only when the value changed (a kernel launch on CUDA, and methods ask
            # several times a step); not while capturing: a graph replays the lr tensors, and
            # the caller refreshes them.
            if lr != self._lr_host[i] and not capturing():
                self._lr_t[i].fill_(lr)
                self._lr_host[i] = lr
        return tuple(self._lr_t)

    def raise_if_nonfinite(self) -> None:
        """After a capturable step: raise FloatingPointError naming the stage if it was
        skipped as non-finite (one host read)."""
        self._verdict.raise_if_skipped(type(self).__name__)

    # ---- torch.optim.Optimizer API ----------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear ``.grad`` of both players (fastgame computes its gradients itself)."""
        super().zero_grad(set_to_none=set_to_none)

    def state_dict(self, format: str = "torch") -> dict[str, Any]:
        """A deep copy of the optimizer state (safe to keep, mutate or ``torch.save``).

        ``format="cgds"``: the state in the flat format of the CGDs 0.4.5 class this one
        replaces, for ``CGDs...load_state_dict`` to continue the run (:mod:`.cgds_format`)."""
        if format not in ("torch", "cgds"):
            raise ValueError(f"invalid format: {format!r} (must be 'torch' or 'cgds')")
        with self._between_steps(reading=True):
            if not capturing():
                self._verdict.read()  # a skipped capturable step must not show in the state
            sd = super().state_dict()
            sd = {"state": state_io.clone_tree(sd["state"]), "param_groups": state_io.clone_tree(sd["param_groups"])}
        return cgds_format.to_cgds(self, sd) if format == "cgds" else sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict`, onto the parameters' device and dtype; also a
        CGDs 0.4.5 ``state_dict()`` of the class this one replaces (:mod:`.cgds_format`).

        Validates everything first (structure, hyperparameters, counters, every tensor's
        dtype, shape and values): on a mismatch it raises ``ValueError`` and changes nothing.
        """
        with self._between_steps(reading=False):
            if cgds_format.is_cgds_state_dict(state_dict):
                state_dict = cgds_format.from_cgds(self, state_dict)
            validated = state_io.validated_state_dict(self, state_dict, self._check_combination)
            self._verdict.clear()  # a pending verdict belonged to the state replaced now
            super().load_state_dict(validated)

    @contextlib.contextmanager
    def _between_steps(self, reading: bool) -> Iterator[None]:
        """Hold the step lock (another thread's step finishes first). From inside this thread's
        own step (e.g. its closure) reading is allowed (nothing is committed before the step's
        end) and writing refused (it would break the step's all-or-nothing commit)."""
        if self._stepping == threading.get_ident():
            if not reading:
                raise RuntimeError(f"{type(self).__name__}.load_state_dict was called from inside a step "
                                   "(e.g. from the closure); load it between steps")
            yield
            return
        with self._step_lock:
            yield

    def get_info(self) -> dict[str, Any]:
        """Diagnostics of the last step (solver iterations, HVP passes, norms with collect_info);
        empty before the first step."""
        return dict(self.info)

    def set_lr(self, lr_x: float, lr_y: float) -> None:
        """Set both players' learning rates (reference-compatible; schedulers also work)."""
        check_nonnegative(lr_x=lr_x, lr_y=lr_y)
        self.param_groups[0]["lr"] = lr_x
        self.param_groups[1]["lr"] = lr_y
