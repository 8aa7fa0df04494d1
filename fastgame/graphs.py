"""A whole capturable game-optimizer step (forward, create_graph backward, solve, update)
captured as CUDA graphs and replayed, for models too small to keep a GPU busy between
launches. It drives the optimizer only through its public graph interface: ``capturable``,
``graph_phase()``, ``refresh_device_hyperparameters()``, ``verdict``, ``replayed()`` and
``raise_if_nonfinite()`` (see :class:`~fastgame.optim.GameOptimizer`)."""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from .linalg.captured import CaptureResources, CudaPieces, LiveCG, StepPieces, cg_host_loop, on_side_stream
from .optim.base import GameOptimizer
from .optim.cgd import CompetitiveGradient
from .optim.checks import boolean


class GraphedStep:
    """Callable returned by :func:`make_graphed_step`: ``step(*inputs) -> loss``.

    Each call copies ``inputs`` into the static input tensors and runs one optimizer step.
    The first ``warmup`` calls run eagerly on a side stream (cuDNN autotuning, allocator
    warm-up); then each solve phase (max player, min player) is captured once into its own
    graph, sharing one memory pool, and replayed from then on. Learning rates are read from
    the param groups before every replay, so schedulers keep working. Other hyperparameters
    and the parameters' storage are fixed once captured.

    Where a graph cannot serve a call, the step runs eagerly on that call's inputs instead,
    with a warning saying why (``eager_reason`` keeps it when it holds for every call): no
    CUDA, inputs of other shapes than the static ones (warned once per shape), or a capture
    that failed (e.g. ``loss_fn`` reads a value on the host; the failed capture changed
    nothing, and every later call runs eagerly).
    """

    def __init__(self, opt: GameOptimizer, loss_fn: Callable[..., Tensor], static_inputs: tuple[Tensor, ...],
                 warmup: int, check_finite: bool, eager_reason: Optional[str] = None) -> None:
        self.opt, self.loss_fn, self.static_inputs = opt, loss_fn, static_inputs
        self.warmup, self.check_finite = warmup, check_finite
        self.eager_reason = eager_reason
        self.calls = 0
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, tuple[Tensor, dict, tuple]] = {}  # per phase: loss, info, checks
        self._pool = None  # the graphs' memory pool, made at the first capture
        self._streams = CaptureResources()  # the side stream warm-ups and captures run on
        self._warned_shapes: set[tuple] = set()

    def __call__(self, *inputs: Tensor) -> Tensor:
        if len(inputs) != len(self.static_inputs):
            raise ValueError(f"expected {len(self.static_inputs)} inputs, got {len(inputs)}")
        for t in inputs:
            if not isinstance(t, Tensor):
                raise ValueError(f"inputs must be tensors, got {type(t).__name__}")
        if self.eager_reason is not None:
            return self.eager_step(*inputs)
        shapes = tuple(tuple(t.shape) for t in inputs)
        static_shapes = tuple(tuple(t.shape) for t in self.static_inputs)
        if shapes != static_shapes:
            if shapes not in self._warned_shapes:
                self._warned_shapes.add(shapes)
                warnings.warn(f"make_graphed_step: input shapes {shapes} differ from the captured {static_shapes}; "
                              "CUDA graphs need static shapes, so steps on these inputs run eagerly", stacklevel=2)
            return self.eager_step(*inputs)
        for static, new in zip(self.static_inputs, inputs):
            static.copy_(new, non_blocking=True)
        opt = self.opt
        opt.refresh_device_hyperparameters()  # e.g. learning rates a scheduler changed
        phase = opt.graph_phase()
        self.calls += 1
        if self.calls <= self.warmup:
            loss = self._warmup_step()
        elif phase not in self.graphs:
            loss = self._capture(phase)
            if loss is None:  # capture failed: this and every later step run eagerly
                return self.eager_step(*inputs)
        else:
            loss = self._replay(phase)
        if self.check_finite:
            opt.raise_if_nonfinite()
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """Load an optimizer state saved by any path (eager, whole-step or piecewise graphs) into
        ``opt``, keeping how this step runs (:func:`with_run_settings`). Before the first capture
        only: the graphs read the state's tensors at the addresses they had when captured."""
        if self.graphs:
            raise ValueError("load the optimizer state before the first captured step: the captured graphs "
                             "read the state tensors where they were")
        self.opt.load_state_dict(with_run_settings(self.opt, state_dict))

    def _replay(self, phase: int) -> Tensor:
        self.graphs[phase].replay()
        loss, info, verdict = self.outputs[phase]
        self.opt.replayed(info, verdict)  # the host half of the step
        return loss

    def _closure(self) -> Tensor:
        return self.loss_fn(*self.static_inputs)

    def _step(self, closure: Callable[[], Tensor]) -> Tensor:
        """One eager step (warm-ups and fallbacks)."""
        return self.opt.step(closure)

    def eager_step(self, *inputs: Tensor) -> Tensor:
        """One step on ``inputs`` without graphs, with the numbers a replay gives (the piecewise
        step's host loop, the whole step's masked iterations); raises as a replayed step does."""
        loss = self._step(lambda: self.loss_fn(*inputs))
        if self.check_finite:
            self.opt.raise_if_nonfinite()
        return loss

    def _warmup_step(self) -> Tensor:
        device = self.opt.players[0].device
        if device.type != "cuda":  # a test's fake graphs on the CPU
            return self._step(self._closure)
        with self._streams.on_side_stream(device):
            return self._step(self._closure)

    def _capture(self, phase: int) -> Optional[Tensor]:
        """Capture this phase's step and replay it once (that is the step); None if the capture
        failed, after undoing what it changed on the host."""
        opt = self.opt
        game = dict(opt.state["game"])  # host values (which player is solved next) a capture changes
        try:
            graph, loss = self._record()
        except Exception as exc:  # noqa: BLE001  (whatever made capture impossible: fall back, saying why)
            opt.state["game"].update(game)  # the recorded kernels never ran
            self.eager_reason = f"capturing the step failed ({type(exc).__name__}: {str(exc).strip()[:300]})"
            warnings.warn(f"make_graphed_step: {self.eager_reason}; this and all later steps run eagerly",
                          stacklevel=3)
            return None
        self.graphs[phase] = graph
        self.outputs[phase] = (loss, dict(opt.info), opt.verdict)
        return self._run_captured(phase, game)

    def _run_captured(self, phase: int, game: dict) -> Tensor:
        """The step just captured: its host half ran at the capture (``game``: the host values before)."""
        self.graphs[phase].replay()
        return self.outputs[phase][0]

    def _record(self) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        """Record one step into a new graph (in the shared pool); nothing runs on the device."""
        device = self.opt.players[0].device
        current = torch.cuda.current_stream()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        try:
            with torch.cuda.graph(graph, pool=self._pool, stream=self._streams.side_stream(device)):
                loss = self.opt.step(self._closure)  # host effects happen once, here
        except BaseException:
            # If capture_end raised, graph.__exit__ left the capture stream current, and the
            # allocator may still route that stream's allocations to the failed graph's pool:
            # restore the stream and retire it for later captures.
            torch.cuda.set_stream(current)
            self._streams.retire_side_stream(device)
            raise
        return graph, loss


class PiecewiseGraphedStep(GraphedStep):
    """A :class:`GraphedStep` whose CG runs exactly the iterations each step needs.

    Each phase is captured once into three graphs sharing one memory pool (the pattern of
    ``torch.cuda.make_graphed_callables``): the head (forward, create_graph backward, the
    right-hand side), one masked CG iteration (its two mixed-HVP passes and fused vector ops,
    over the tensors the head wrote, which stay at their addresses for every later step) and
    the tail (back-substitution, the finiteness verdict, the masked commit). A step replays the
    head, the iteration until the residual test passes (:func:`~fastgame.linalg.captured.cg_host_loop`:
    ``active`` read every ``check_every`` iterations, at most ``max_iter``), then the tail.
    Warm-ups and eager fallbacks run the same host loop. ``graphs[phase]`` is the phase's
    :class:`~fastgame.linalg.captured.StepPieces`; ``info["cg_replays"]`` the iterations replayed.

    ``pieces``: what records a step into pieces (default CUDA graphs; a test injects a fake
    with the same ``record(run_step, device) -> (StepPieces, loss)``).

    CUDA graph conditional nodes would move the loop onto the device. torch 2.13 has IF nodes
    only (``torch._C._CUDAGraph.begin_capture_to_if_node``, private, used by ``torch.cond`` under
    CUDA-graph trees), no WHILE node: the device-side form would be ``max_iter`` IF-guarded copies
    of the iteration in one graph, each skipped once ``active`` is False. It likely cannot hold
    an iteration: an IF body is captured from a child stream, while autograd runs each backward
    node of an HVP pass on the stream its forward ran on (the parent's). Unmeasured (no GPU in
    this version); ``bench/gpu_diag.py`` section F tries it and times it against this loop.
    """

    def __init__(self, *args: object, pieces: object = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.pieces = pieces if pieces is not None else CudaPieces(self._streams)

    def _step(self, closure: Callable[[], Tensor]) -> Tensor:
        with self.opt.cg_pieces(LiveCG()):
            return self.opt.step(closure)

    def _record(self) -> tuple[StepPieces, Tensor]:
        def run_step(split: object) -> Tensor:
            with self.opt.cg_pieces(split):
                return self.opt.step(self._closure)  # host effects happen once, here
        return self.pieces.record(run_step, self.opt.players[0].device)

    def _run_captured(self, phase: int, game: dict) -> Tensor:
        self.graphs[phase].outputs = self.outputs[phase]
        self.opt.state["game"].update(game)  # every step, this one too, takes its host half in replayed()
        return self._replay(phase)

    def _replay(self, phase: int) -> Tensor:
        pieces = self.graphs[phase]
        pieces.head.replay()
        n = cg_host_loop(pieces.iteration.replay, pieces.active, pieces.max_iter, pieces.check_every)
        pieces.tail.replay()
        loss, info, verdict = pieces.outputs
        info = {**info, "cg_replays": n, "hvp_passes": info["hvp_passes"] + pieces.iteration_passes * (n - 1)}
        if pieces.check_every == 1:  # then the host count is exact, as an eager step's
            info["iter_num"] = n
        self.opt.replayed(info, verdict)
        return loss


RUN_SETTINGS = ("capturable", "max_iter")
"""The hyperparameters that say how a step runs rather than what it computes: a capturable step
(and the ``max_iter`` it was built with) gives the numbers of an eager one."""


def with_run_settings(opt: GameOptimizer, state_dict: dict) -> dict:
    """``state_dict`` with ``opt``'s own ``capturable`` and, where the saved ``capturable`` differs,
    ``max_iter``, so that a state saved by an eager step resumes a graphed one and the other way
    round (a capturable ``max_iter`` is a bound for its graphs, not the eager run's setting)."""
    groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
    if not isinstance(groups, (list, tuple)) or len(groups) != len(opt.param_groups):
        return state_dict  # load_state_dict says what is wrong with it
    kept = []
    for saved, own in zip(groups, opt.param_groups):
        if not isinstance(saved, dict):
            return state_dict
        keys = RUN_SETTINGS if bool(saved.get("capturable", False)) != bool(own.get("capturable", False)) \
            else RUN_SETTINGS[:1]
        kept.append({**saved, **{k: own[k] for k in keys if k in own}})
    return {**state_dict, "param_groups": kept}


def make_graphed_step(opt: GameOptimizer, loss_fn: Callable[..., Tensor], *static_inputs: Tensor,
                      warmup: int = 3, check_finite: bool = True, exact_cg: bool = False) -> Callable[..., Tensor]:
    """Capture whole steps of a capturable game optimizer (ACGD, BCGD) as CUDA graphs.

    Args:
        opt: an :class:`~fastgame.ACGD` or :class:`~fastgame.BCGD` built with
            ``capturable=True`` and a ``max_iter`` (CG then runs exactly that many
            iterations, those after convergence being no-ops; with ``exact_cg``, at most
            that many).
        loss_fn: ``loss_fn(*static_inputs)`` returns the game's scalar loss.
        static_inputs: tensors the loss reads (e.g. a real batch and a latent batch);
            each call's inputs are copied into them (inputs of other shapes, e.g. a
            short last batch, are stepped eagerly).
        warmup: eager steps before capture.
        check_finite: after each step, read whether it was finite and raise
            ``FloatingPointError`` if not (one host sync per step; the non-finite step
            itself was skipped on the device). False: no sync, see ``opt.info["finite"]``.
        exact_cg: capture each step in three graphs instead (:class:`PiecewiseGraphedStep`):
            forward + backward + right-hand side, one CG iteration, and back-substitution +
            update; the host replays the iteration until the residual test passes, reading
            it every ``check_every`` iterations (the optimizer's setting; one small copy to
            the host each time). The same numbers as the whole-step graph, with the CG
            iterations the step needs instead of ``max_iter``.

    Returns:
        a :class:`GraphedStep`, ``step(*inputs) -> loss``. Without CUDA (or with CPU
        tensors) it warns and steps eagerly; it also steps eagerly, with a warning, on
        inputs whose shapes differ from the static ones and after a capture that failed.
    """
    if not isinstance(opt, GameOptimizer):
        raise ValueError(f"make_graphed_step needs a fastgame game optimizer, got {type(opt).__name__}")
    if not opt.capturable:
        raise ValueError("make_graphed_step needs an optimizer built with capturable=True and max_iter (ACGD, "
                         "BCGD; GACGD's GMRES reads the host every iteration, so it cannot be captured)")
    boolean("exact_cg", exact_cg)
    if not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"warmup must be an int >= 1, got {warmup!r}")
    for t in static_inputs:
        if not isinstance(t, Tensor):
            raise ValueError(f"static inputs must be tensors, got {type(t).__name__}")
    on_cuda = opt.players[0].device.type == "cuda" and all(t.device.type == "cuda" for t in static_inputs)
    reason = None
    if not (on_cuda and torch.cuda.is_available()):
        reason = "CUDA graphs need CUDA parameters and inputs"
        warnings.warn(f"make_graphed_step: {reason}; running the step eagerly", stacklevel=2)
    if exact_cg and not isinstance(opt, CompetitiveGradient):
        raise ValueError(f"exact_cg needs ACGD or BCGD (a CG solve to split at), not {type(opt).__name__}")
    cls = PiecewiseGraphedStep if exact_cg else GraphedStep
    return cls(opt, loss_fn, tuple(static_inputs), warmup, check_finite, eager_reason=reason)


def cuda_stream(device: Union[torch.device, str, None] = None) -> contextlib.AbstractContextManager:
    """``with fastgame.cuda_stream(): <training loop>``: run the block on fastgame's side stream of
    ``device`` (default: the current CUDA device), ordered after the current stream's work on entry,
    the current stream waiting for the block's work on exit. A loss computed inside it is off the
    legacy default stream, so ``opt.step(loss)`` can replay each solve's CG iterations from a CUDA
    graph (``graph_cg``) as a closure does; on the default stream they run eagerly. Without CUDA
    (or for a CPU ``device``) it does nothing. Whether it pays on a GPU is unmeasured in this version."""
    if not torch.cuda.is_available():
        return contextlib.nullcontext()
    device = torch.device("cuda") if device is None else torch.device(device)
    return on_side_stream(device) if device.type == "cuda" else contextlib.nullcontext()


graphed_step = make_graphed_step  # the shorter name; the long one follows torch.cuda.make_graphed_callables

__all__ = ["make_graphed_step", "graphed_step", "GraphedStep", "PiecewiseGraphedStep", "with_run_settings",
           "cuda_stream"]
