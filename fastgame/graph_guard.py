"""A graphed step that is trusted only once it has given an eager step's numbers.

CUDA graphs replay kernels at the addresses they were captured with; a capture that raises, or a
replay that reads a stale or wrong buffer on some GPU, driver or model nobody tested, would end a
user's run or, worse, train it on wrong numbers. :class:`VerifiedStep` wraps a
:class:`~fastgame.graphs.GraphedStep` (whole-step or piecewise) and checks the first replayed step
of each phase: it saves the parameters, the optimizer state and any extra tensors (BatchNorm
buffers), lets the graphed step run, restores the saved values in place (the graphs keep their
addresses), takes the same step eagerly and compares. On a capture that failed, a replay that
raised, or a difference larger than :func:`step_rtol`, it keeps the eager result, reports the cause
once (``on_fallback``) and steps eagerly from then on. Otherwise it keeps the eager result too (the
two agree) and replays that phase from then on.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Hashable, Iterable, Optional

import torch
from torch import Tensor

from .graphs import GraphedStep


def step_rtol(opt: Any) -> float:
    """How far a correct replayed step may be from an eager step taken from the same state,
    relative to the eager step's size: ``max(sqrt(tol), 64 eps)``, at most 1e-2.

    Why: both run the same CG; CG stops once ``|r|^2 < tol |b|^2`` (A >= I), so a solve that
    stopped one iteration apart, or rounded in another order, moves the solution by about
    ``sqrt(tol)`` of its size; 64 machine epsilons cover the rounding of the fused ops where
    ``tol`` is tighter than the dtype. A replay reading a wrong buffer is off by O(1)."""
    tol = max(float(g["tol"]) for g in opt.param_groups)
    eps = torch.finfo(opt.players[0].dtype).eps
    return min(max(math.sqrt(tol), 64 * eps), 1e-2)


def _copy(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value


def _restore(target: dict, saved: dict) -> None:
    """Put ``saved`` back into ``target``, copying into its tensors where they are still there (a
    captured graph reads them at their addresses)."""
    for key in [k for k in target if k not in saved]:
        del target[key]
    for key, value in saved.items():
        old = target.get(key)
        if isinstance(value, Tensor) and isinstance(old, Tensor) and old.shape == value.shape \
                and old.dtype == value.dtype and old.device == value.device:
            with torch.no_grad():
                old.copy_(value)
        elif isinstance(value, dict) and isinstance(old, dict):
            _restore(old, value)
        else:
            target[key] = _copy(value)


def _float_tensors(value: Any) -> list[Tensor]:
    """The floating-point tensors in a nested state, in order."""
    if isinstance(value, Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, dict):
        return [t for k in value for t in _float_tensors(value[k])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _float_tensors(v)]
    return []


class Snapshot:
    """Copies of an optimizer's flat parameters, its state and ``buffers``, to restore in place."""

    def __init__(self, opt: Any, buffers: Iterable[Tensor] = ()) -> None:
        self.opt = opt
        self.tensors = [p.flat for p in opt.players] + list(buffers)
        self.values = [t.detach().clone() for t in self.tensors]
        self.state = _copy(dict(opt.state))

    def restore(self) -> None:
        with torch.no_grad():
            for t, v in zip(self.tensors, self.values):
                t.copy_(v)
        _restore(self.opt.state, self.state)

    def outcome(self) -> list[Tensor]:
        """The step taken since the snapshot: each player's update, then the state's float tensors."""
        updates = [p.flat.detach() - v for p, v in zip(self.opt.players, self.values)]
        return updates + [t.detach().clone() for t in _float_tensors(dict(self.opt.state))]


def difference(graphed: list[Tensor], eager: list[Tensor]) -> float:
    """The largest ``|a - b| / |b|`` (2-norms) over the pairs of tensors; inf where ``b`` is 0 and
    ``a`` is not (or either is not finite)."""
    worst = 0.0
    for a, b in zip(graphed, eager):
        if a.shape != b.shape:
            return math.inf
        err = (a.double() - b.double()).norm().item()
        size = b.double().norm().item()
        rel = err / size if size > 0 else (0.0 if err == 0 else math.inf)
        worst = max(worst, rel if math.isfinite(rel) else math.inf)
    return worst


class VerifiedStep:
    """``step(*inputs) -> loss``: ``graphed``, each phase's first replayed step checked against an
    eager step from the same state (see the module doc).

    Args:
        graphed: the :class:`~fastgame.graphs.GraphedStep` to check (``make_graphed_step``).
        buffers: tensors the loss changes besides the parameters (BatchNorm running statistics),
            restored with them before the eager step.
        on_fallback: called once with the cause when the step falls back to eager steps
            (default: ``warnings.warn``).

    Attributes:
        fallback: the cause, once it fell back (None while the graphs serve or are still unchecked).
        verified: the phases whose replay matched an eager step.
        last_difference: the relative difference of the last check (None before one).
    """

    def __init__(self, graphed: GraphedStep, buffers: Iterable[Tensor] = (),
                 on_fallback: Optional[Callable[[str], None]] = None) -> None:
        self.graphed, self.opt = graphed, graphed.opt
        self.buffers = list(buffers)
        self.on_fallback = on_fallback if on_fallback is not None else _warn
        self.fallback: Optional[str] = None
        self.verified: set[Hashable] = set()
        self.last_difference: Optional[float] = None

    @property
    def graphs(self) -> dict:
        """The graphs serving the steps (empty when the steps run eagerly)."""
        return {} if self.path != "graphs" else self.graphed.graphs

    @property
    def path(self) -> str:
        """``"graphs"`` (the graphed step: its warm-ups, checks and replays) or ``"eager"`` (fallen
        back, or the graphs could never run here: see :attr:`reason`)."""
        return "eager" if self.reason is not None else "graphs"

    @property
    def reason(self) -> Optional[str]:
        """Why the steps run eagerly (None: they do not)."""
        return self.fallback or self.graphed.eager_reason

    def load_state_dict(self, state_dict: dict) -> None:
        """See :meth:`fastgame.graphs.GraphedStep.load_state_dict`."""
        self.graphed.load_state_dict(state_dict)

    def __call__(self, *inputs: Tensor) -> Tensor:
        graphed = self.graphed
        if self.reason is not None:
            return graphed.eager_step(*inputs)
        phase = self.opt.graph_phase()
        if phase in self.verified or graphed.calls < graphed.warmup:
            return graphed(*inputs)
        return self._checked(phase, inputs)

    def _checked(self, phase: Hashable, inputs: tuple[Tensor, ...]) -> Tensor:
        """A step that may capture this phase: run it graphed, then eagerly from the same state."""
        graphed = self.graphed
        before = Snapshot(self.opt, self.buffers)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            error: Optional[Exception] = None
            try:
                loss = graphed(*inputs)
            except Exception as exc:  # noqa: BLE001  (the eager step below decides whose fault it is)
                error = exc
        for w in caught:  # the graphed step's own capture-failure warning becomes this step's one line
            if graphed.eager_reason is None or graphed.eager_reason not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if graphed.eager_reason is not None:  # the capture failed and the step ran eagerly: done
            self._fall_back(graphed.eager_reason)
            if error is not None:
                raise error
            return loss
        failure = None if error is None else \
            f"the first replayed step raised {type(error).__name__}: {str(error).strip()[:300]}"
        if failure is None and phase not in graphed.graphs:
            return loss  # not captured (e.g. a short batch's shapes ran eagerly): nothing to check
        replayed = before.outcome() if failure is None else None
        before.restore()
        loss = graphed.eager_step(*inputs)  # raises, changing nothing, if the step itself is bad
        if failure is None:
            self.last_difference = difference(replayed, before.outcome())
            rtol = step_rtol(self.opt)
            if not self.last_difference <= rtol:
                failure = (f"the first replayed step differs from an eager step from the same state by "
                           f"{self.last_difference:.3g} (relative; more than the solver's tolerance allows, "
                           f"{rtol:.3g})")
        if failure is not None:
            self._fall_back(failure)
        else:
            self.verified.add(phase)
        return loss

    def _fall_back(self, cause: str) -> None:
        self.fallback = cause
        self.on_fallback(cause)


def _warn(cause: str) -> None:
    warnings.warn(f"graphed step: {cause}; continuing with eager steps", RuntimeWarning, stacklevel=4)


__all__ = ["VerifiedStep", "Snapshot", "difference", "step_rtol"]
