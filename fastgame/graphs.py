"""A whole ACGD/BCGD step (forward, create_graph backward, CG solve, update) captured as
CUDA graphs and replayed, for models too small to keep a GPU busy between launches."""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor

from .optim.cgd import CompetitiveGradient


_SIDE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """One warm-up/capture stream per device, shared by all graphed steps: cuBLAS keeps a
    workspace per stream it has seen, so a new stream per step would cost memory each time."""
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return _SIDE_STREAMS[device]


class GraphedStep:
    """Callable returned by :func:`make_graphed_step`: ``step(*inputs) -> loss``.

    Each call copies ``inputs`` into the static input tensors and runs one optimizer step.
    The first ``warmup`` calls run eagerly on a side stream (cuDNN autotuning, allocator
    warm-up); then each solve phase (max player, min player) is captured once into its own
    graph, sharing one memory pool, and replayed from then on. Learning rates are read from
    the param groups before every replay, so schedulers keep working. Other hyperparameters
    and the parameters' storage are fixed once captured.
    """

    def __init__(self, opt: CompetitiveGradient, loss_fn: Callable[..., Tensor], static_inputs: tuple[Tensor, ...],
                 warmup: int, check_finite: bool) -> None:
        self.opt, self.loss_fn, self.static_inputs = opt, loss_fn, static_inputs
        self.warmup, self.check_finite = warmup, check_finite
        self.calls = 0
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, tuple[Tensor, dict]] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.stream = _side_stream(opt.players[0].device)

    def _closure(self) -> Tensor:
        return self.loss_fn(*self.static_inputs)

    def __call__(self, *inputs: Tensor) -> Tensor:
        if len(inputs) != len(self.static_inputs):
            raise ValueError(f"expected {len(self.static_inputs)} inputs, got {len(inputs)}")
        for static, new in zip(self.static_inputs, inputs):
            if new.shape != static.shape:
                raise ValueError(f"input shape {tuple(new.shape)} differs from the captured {tuple(static.shape)}; "
                                 "CUDA graphs need static shapes")
        for static, new in zip(self.static_inputs, inputs):
            static.copy_(new, non_blocking=True)
        opt = self.opt
        opt._lr_tensors()  # refresh the device learning rates the graphs read
        phase = opt._solved_player()
        self.calls += 1
        if self.calls <= self.warmup:
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                loss = opt.step(self._closure)
            torch.cuda.current_stream().wait_stream(self.stream)
        elif phase not in self.graphs:
            graph = torch.cuda.CUDAGraph()
            torch.cuda.synchronize()
            with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
                loss = opt.step(self._closure)  # recorded, not run: host effects happen once here
            self.graphs[phase] = graph
            self.outputs[phase] = (loss, dict(opt.info))
            graph.replay()
        else:
            self.graphs[phase].replay()
            loss, info = self.outputs[phase]
            opt.info = dict(info)
            opt._after_step()  # the host half of a step: which player is solved next
        if self.check_finite:
            opt.raise_if_nonfinite()
        return loss


def make_graphed_step(opt: CompetitiveGradient, loss_fn: Callable[..., Tensor], *static_inputs: Tensor,
                      warmup: int = 3, check_finite: bool = True) -> Callable[..., Tensor]:
    """Capture whole ACGD/BCGD steps as CUDA graphs.

    Args:
        opt: an :class:`~fastgame.ACGD` or :class:`~fastgame.BCGD` built with
            ``capturable=True`` and a ``max_iter`` (CG then runs exactly that many
            iterations, those after convergence being no-ops).
        loss_fn: ``loss_fn(*static_inputs)`` returns the game's scalar loss.
        static_inputs: tensors the loss reads (e.g. a real batch and a latent batch);
            each call's inputs are copied into them, so shapes must not change.
        warmup: eager steps before capture.
        check_finite: after each step, read whether it was finite and raise
            ``FloatingPointError`` if not (one host sync per step; the non-finite step
            itself was skipped on the device). False: no sync, see ``opt.info["finite"]``.

    Returns:
        ``step(*inputs) -> loss``. Without CUDA (or with CPU tensors) this warns and
        returns an eager equivalent.
    """
    if not isinstance(opt, CompetitiveGradient):
        raise ValueError(f"make_graphed_step needs an ACGD or BCGD optimizer, got {type(opt).__name__}")
    if not opt.capturable:
        raise ValueError("make_graphed_step needs an optimizer built with capturable=True and max_iter")
    if not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"warmup must be an int >= 1, got {warmup!r}")
    for t in static_inputs:
        if not isinstance(t, Tensor):
            raise ValueError(f"static inputs must be tensors, got {type(t).__name__}")
    on_cuda = opt.players[0].device.type == "cuda" and all(t.device.type == "cuda" for t in static_inputs)
    if not (on_cuda and torch.cuda.is_available()):
        warnings.warn("make_graphed_step: CUDA graphs need CUDA parameters and inputs; running the step eagerly",
                      stacklevel=2)
        return _EagerStep(opt, loss_fn, static_inputs, check_finite)
    return GraphedStep(opt, loss_fn, tuple(static_inputs), warmup, check_finite)


class _EagerStep:
    """The same interface as :class:`GraphedStep`, stepping eagerly (no CUDA)."""

    def __init__(self, opt: CompetitiveGradient, loss_fn: Callable[..., Tensor], static_inputs, check_finite: bool):
        self.opt, self.loss_fn, self.n_inputs, self.check_finite = opt, loss_fn, len(static_inputs), check_finite

    def __call__(self, *inputs: Tensor) -> Tensor:
        if len(inputs) != self.n_inputs:
            raise ValueError(f"expected {self.n_inputs} inputs, got {len(inputs)}")
        loss = self.opt.step(lambda: self.loss_fn(*inputs))
        if self.check_finite:
            self.opt.raise_if_nonfinite()
        return loss


__all__ = ["make_graphed_step", "GraphedStep"]
