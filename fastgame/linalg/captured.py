"""CG iterations replayed from a CUDA graph captured inside the solve, for eager users.

Why: on a GPU an eager CG iteration is two double-backward passes of hundreds of small
kernels, and launching them costs more than running them for the models GANs use. A whole
step captured once (:func:`fastgame.make_graphed_step`) removes that, but needs the loop
restructured around static inputs. Here the solver captures its first iteration of each
solve (the two HVP passes and the fused vector ops, writing into static buffers) and
replays the graph for every iteration, so an unchanged ``opt.step(...)`` loop launches one
graph per iteration. The graph cannot outlive the solve: the HVP passes read the tensors
autograd saved for this step's loss, which live at new addresses every step.

Capture has one precondition the solver cannot arrange: autograd runs each backward node on
the stream its forward ran on, and a capture records one stream, which cannot be the legacy
default stream. So the iterations are captured only when the step runs on a non-default
stream: the optimizer arranges that for closures (it evaluates the closure on its own side
stream); a loss tensor computed on the default stream is solved eagerly (:func:`why_not`).

A step whose tensors do stay at fixed addresses (a static-shape step captured whole, see
:class:`fastgame.graphs.PiecewiseGraphedStep`) can keep its iteration graph: the solver hands its
masked iterations to a :class:`CGPieces`, which either runs them now with the exact-k host loop
(:class:`LiveCG`) or, inside that step's capture, closes the graph of the step's head, records one
iteration into a graph of its own and opens the graph of the tail (:class:`SplitCapture`). The host
then replays head, the iteration until the residual test passes, and tail (:func:`cg_host_loop`).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Protocol

import torch
from torch import Tensor

from .distributed import is_data_parallel
from .hvp import MixedHVP


def capturing() -> bool:
    """Whether a CUDA graph is being captured on the current stream (nothing may be read)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def cuda_device(device: torch.device) -> torch.device:
    """``device`` with its index filled in (``cuda`` -> ``cuda:<current>``)."""
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


class CaptureResources:
    """What one owner's captures run on, per device: a side stream, and the pool its CG
    iteration graphs allocate from with the last graph captured.

    One stream per owner and device, not one per step: cuBLAS keeps a workspace per stream
    it has seen, so a new stream each time would cost memory each time. The last graph is kept
    until the next capture so that the pool always has a user: freed pool memory then stays
    in the pool for the next solve's capture instead of being allocated anew.
    """

    def __init__(self) -> None:
        self._streams: dict[torch.device, "torch.cuda.Stream"] = {}
        self._pools: dict[torch.device, list] = {}

    def side_stream(self, device: torch.device) -> "torch.cuda.Stream":
        device = cuda_device(device)
        if device not in self._streams:
            self._streams[device] = torch.cuda.Stream(device)
        return self._streams[device]

    def retire_side_stream(self, device: torch.device) -> None:
        """Stop using the device's side stream (after a failed capture left it unusable)."""
        self._streams.pop(cuda_device(device), None)

    @contextlib.contextmanager
    def on_side_stream(self, device: torch.device) -> Iterator[None]:
        """Run the block on the device's side stream, ordered after and before the current
        stream's work. Tensors the block allocates are safe to use and free afterwards: every
        later use of the side stream starts with this wait on the current stream."""
        current = torch.cuda.current_stream(device)
        stream = self.side_stream(device)
        stream.wait_stream(current)
        try:
            with torch.cuda.stream(stream):
                yield
        finally:
            current.wait_stream(stream)

    def graph_pool(self, device: torch.device) -> list:
        """[the pool handle, the last graph captured from it] of the device (made on first use)."""
        pool = self._pools.setdefault(cuda_device(device), [None, None])
        if pool[0] is None:
            pool[0] = torch.cuda.graph_pool_handle()
        return pool


# For callers that own no resources of their own (bench scripts): one set for the process.
_SHARED = CaptureResources()


def side_stream(device: torch.device) -> "torch.cuda.Stream":
    """The process-wide side stream of ``device`` (:class:`CaptureResources`)."""
    return _SHARED.side_stream(device)


def retire_side_stream(device: torch.device) -> None:
    """Stop using the process-wide side stream of ``device``."""
    _SHARED.retire_side_stream(device)


def on_side_stream(device: torch.device) -> contextlib.AbstractContextManager:
    """Run a block on the process-wide side stream of ``device`` (see :meth:`CaptureResources.on_side_stream`)."""
    return _SHARED.on_side_stream(device)


def why_not(device: torch.device, stream: bool = True) -> Optional[str]:
    """Why CG iterations on ``device`` cannot be captured now (None: they can); ``stream=False``
    leaves out the current stream (for deciding whether to move a step off the default one)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return "not a CUDA device"
    if torch.cuda.is_current_stream_capturing():
        return "the step itself is being captured"
    if is_data_parallel():
        return "data-parallel (the passes all-reduce across ranks)"
    if stream and torch.cuda.current_stream(device) == torch.cuda.default_stream(device):
        return ("the loss was computed on the default CUDA stream (autograd replays each node on its "
                "forward's stream, and the default stream cannot be captured); pass a closure to step()")
    return None


class IterationReplay:
    """Runs one solve's iteration body from a CUDA graph captured on the current stream.

    The first :meth:`run` captures ``body`` (nothing runs) and replays it; later calls replay
    it. ``body`` must work in place on buffers allocated before the capture. If the capture
    fails (nothing ran), ``failure`` keeps why and this and later calls run ``body`` eagerly,
    so the solve's numbers never depend on it. HVP passes are counted as eagerly: the capture's
    are not counted (they did not run), each replay counts the body's. ``capture_seconds``: the
    host time of recording and instantiating the graph. ``resources``: the owner's side stream
    and graph pool (default: the process-wide ones).
    """

    def __init__(self, device: torch.device, resources: Optional[CaptureResources] = None) -> None:
        self.device = cuda_device(device) if device.type == "cuda" else device
        self.resources = _SHARED if resources is None else resources
        self.failure: Optional[str] = None
        self.replays = 0
        self.capture_seconds = 0.0
        self._passes: Optional[int] = None  # the body's HVP passes, known after the capture

    def run(self, body: Callable[[], None], hvp: MixedHVP) -> None:
        if self.failure is not None:
            body()
            return
        if self._passes is None:
            start = time.perf_counter()
            try:
                self._passes = hvp.uncounted(lambda: self._capture(body))
            except Exception as exc:  # noqa: BLE001  (whatever made capture impossible: run eagerly, saying why)
                self.failure = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                if self.device.type == "cuda":  # as after a failed whole-step capture (graphs.py)
                    self.resources.retire_side_stream(self.device)
                body()
                return
            self.capture_seconds = time.perf_counter() - start
        self._replay()
        self.replays += 1
        hvp.count(self._passes)

    def _capture(self, body: Callable[[], None]) -> None:
        """Record ``body`` into a graph; raises what the capture raised, leaving none open."""
        pool = self.resources.graph_pool(self.device)
        # capture_begin/end directly (GraphRecorder): torch.cuda.graph() would also synchronize,
        # collect garbage and empty the allocator's cache, every solve.
        recorder = GraphRecorder(pool[0])
        recorder.begin()
        try:
            body()
        except BaseException:
            recorder.abort()  # close the capture; its own error would hide the body's
            raise
        graph = recorder.end()  # raises if the capture was invalidated
        self._graph = graph
        pool[1] = graph  # releases the previous solve's graph; its pool memory is reused

    def _replay(self) -> None:
        self._graph.replay()


# ---- piecewise graphs: a step's head, one CG iteration and its tail, each a graph --------------
def cg_host_loop(iterate: Callable[[], None], active: Tensor, max_iter: int, check_every: int) -> int:
    """Run masked CG iterations until the residual test passes: ``active`` (a device bool, False
    once converged) is read before iteration n whenever n % ``check_every`` == 0, one small
    device-to-host copy and no other sync; at most ``max_iter`` iterations. Returns how many ran
    (exactly the iterations CG needed when ``check_every`` is 1; the extra ones are no-ops)."""
    n = 0
    while n < max_iter:
        if n % check_every == 0 and not bool(active):
            break
        iterate()
        n += 1
    return n


class CGPieces(Protocol):
    """Where a solve's masked CG iterations go (:func:`fastgame.linalg.cg.run_cg`)."""

    def iterate(self, body: Callable[[], None], hvp: MixedHVP, active: Tensor, count: Tensor, max_iter: int,
                check_every: int) -> Optional[int]:
        """Run or record ``body`` (one masked iteration, in place); the iterations run now, or None
        if they run later (the solve's count is then the device tensor ``count``)."""


class LiveCG:
    """The iterations run now with :func:`cg_host_loop` (an eager step of the piecewise path: the
    same numbers as a replayed one)."""

    def iterate(self, body: Callable[[], None], hvp: MixedHVP, active: Tensor, count: Tensor, max_iter: int,
                check_every: int) -> Optional[int]:
        return cg_host_loop(body, active, max_iter, check_every)


class Recorder(Protocol):
    """Records consecutive graphs on the current stream (:class:`GraphRecorder`; tests inject fakes)."""

    def begin(self) -> None: ...

    def end(self) -> Any: ...  # the graph recorded since begin(): has replay()


class GraphRecorder:
    """Records consecutive CUDA graphs from one memory pool on the current stream."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self._open: Optional[torch.cuda.CUDAGraph] = None

    def begin(self) -> None:
        self._open = torch.cuda.CUDAGraph()
        # "thread_local": the user's other threads (a data loader pinning memory, say) may go on
        # calling CUDA during the capture; autograd's own worker thread only launches onto the
        # captured stream.
        self._open.capture_begin(pool=self.pool, capture_error_mode="thread_local")

    def end(self) -> torch.cuda.CUDAGraph:
        graph, self._open = self._open, None
        graph.capture_end()  # raises if the capture was invalidated
        return graph

    def abort(self) -> None:
        """Close an open capture after a failure (its own error would hide the first one)."""
        if self._open is not None:
            graph, self._open = self._open, None
            try:
                graph.capture_end()
            except Exception:  # noqa: BLE001
                pass


@dataclass
class StepPieces:
    """A captured step in three graphs: ``head`` (forward, backward, right-hand side), one CG
    ``iteration`` and ``tail`` (back-substitution, verdict, update), with what the host loop
    between them reads. ``outputs`` (loss, info, verdict) is filled in by the captured step's owner."""
    head: Any
    iteration: Any
    tail: Any
    active: Tensor
    count: Tensor
    max_iter: int
    check_every: int
    iteration_passes: int  # the mixed-HVP passes of one iteration (the capture counted one)
    keep: Any = None  # the iteration's closure: the iterates and autograd graph it reads stay allocated
    outputs: tuple = field(default_factory=tuple)


class SplitCapture:
    """The :class:`CGPieces` of a step being recorded by ``recorder``: at the CG loop it closes the
    head's graph, records one iteration into a graph of its own and opens the tail's."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.split: Optional[tuple] = None

    def iterate(self, body: Callable[[], None], hvp: MixedHVP, active: Tensor, count: Tensor, max_iter: int,
                check_every: int) -> Optional[int]:
        if self.split is not None:
            raise RuntimeError("a piecewise-captured step may run one CG solve")
        head = self.recorder.end()
        self.recorder.begin()
        passes = hvp.uncounted(body)  # recorded, not run: each replay's passes are counted by the owner
        iteration = self.recorder.end()
        self.recorder.begin()  # the tail: whatever the step does after its CG loop
        self.split = (head, iteration, active, count, max_iter, check_every, passes, body)
        return None

    def pieces(self, tail: Any) -> StepPieces:
        if self.split is None:
            raise RuntimeError("the step ran no CG solve to split at")
        head, iteration, active, count, max_iter, check_every, passes, body = self.split
        return StepPieces(head, iteration, tail, active, count, max_iter, check_every, passes, keep=body)


class CudaPieces:
    """Records a step as :class:`StepPieces` of CUDA graphs sharing one memory pool, on a side
    stream (a capture cannot record the legacy default stream)."""

    def __init__(self, resources: CaptureResources) -> None:
        self.resources = resources
        self.pool: Any = None

    def record(self, run_step: Callable[[CGPieces], Any], device: torch.device) -> tuple[StepPieces, Any]:
        """``run_step(pieces)`` runs the step with its CG handed to ``pieces``; nothing runs on the
        device. Returns the pieces and what ``run_step`` returned; raises what the capture raised."""
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        recorder = GraphRecorder(self.pool)
        split = SplitCapture(recorder)
        current = torch.cuda.current_stream(device)
        torch.cuda.synchronize(device)
        try:
            with torch.cuda.stream(self.resources.side_stream(device)):
                recorder.begin()
                result = run_step(split)
                tail = recorder.end()
        except BaseException:
            recorder.abort()
            torch.cuda.set_stream(current)  # as graphs.GraphedStep._record after a failed capture
            self.resources.retire_side_stream(device)
            raise
        return split.pieces(tail), result
