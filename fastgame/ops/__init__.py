"""The fused vector ops of a CGD step, behind one dispatch point.

Every op has a pure-torch twin in :mod:`fastgame.ops.reference`, which defines its numbers.
Three other backends implement the same ops, registered as torch ops (``torch.ops.fastgame``):

* ``"cpp"``    C++ CPU kernels (``fastgame._C``, OpenMP), for CPU tensors;
* ``"cuda"``   CUDA kernels (``fastgame._cuda``), for CUDA tensors;
* ``"triton"`` Triton kernels (``fastgame.triton_kernels``), for CUDA tensors, or CPU tensors
  under the Triton interpreter (``TRITON_INTERPRET=1``; slow, for tests).

:func:`backends` returns the backend table (:mod:`fastgame.ops.registry`: one record per
backend, with the device types it serves and why it is unavailable); the op interface is
declared once in :mod:`fastgame.ops.interface`. :func:`set_backend` (or the
``FASTGAME_BACKEND`` environment variable) picks one backend for the process, and
:func:`dispatch` gives the ops under a choice of their own (``dispatch("cpp").cg_step_(...)``).
``"auto"`` (the default) takes, per device, the first kernel backend of the table that serves
it — the C++ ops on the CPU, the faster of CUDA/Triton on a GPU (timed once per device) — and
the torch twins where no kernel applies. The kernels cover float32 and float64; other dtypes
always use the torch twins. Forcing a backend that cannot serve a tensor's device raises an
error that says why.

Applying the final update needs no kernel: each player's parameters are views into one flat
buffer (:mod:`fastgame.linalg.params`), so it is a single ``add_``.
"""
from __future__ import annotations

import inspect
import os
import warnings
from types import ModuleType
from typing import Callable, Optional

import torch
from torch import Tensor

from . import _ext, reference
from .interface import OPS, op
from .registry import Backend, record, records

__all__ = ["Backend", "OPS", "Ops", "backends", "set_backend", "get_backend", "dispatch", "precondition",
           "cg_matvec", "cg_step_", "cg_direction_"]

_KERNEL_DTYPES = (torch.float32, torch.float64)
_backend = "auto"
_impls: dict = {}        # (choice, device, dtype) -> module implementing the ops
_fastest: dict = {}      # CUDA device -> backend measured fastest there ("auto")
_dispatchers: dict = {}  # backend choice -> its Ops

_ext.load()


def backends() -> dict[str, Backend]:
    """The backend table: each backend's :class:`~fastgame.ops.registry.Backend` record (name,
    the device types it serves, whether it is usable here and why not, its module).
    ``str(record)`` reads ``"available (CPU)"`` or ``"unavailable: <why>"``."""
    return records()


def set_backend(name: str) -> None:
    """Force the backend of the fused ops: ``"auto"``, ``"triton"``, ``"cuda"``, ``"cpp"``
    or ``"torch"``. Raises ``ValueError`` for an unknown name and ``RuntimeError`` (saying
    why) for a backend that cannot run on this machine."""
    _set(name, check=True)


def _check_choice(name: str, check: bool) -> None:
    """``ValueError`` for an unknown name; with ``check``, ``RuntimeError`` for an unusable backend."""
    if name == "auto":
        return
    backend = record(name)
    if check and not backend.available:
        raise RuntimeError(f"fastgame backend {name!r} is unavailable: {backend.reason}")


def _set(name: str, check: bool) -> None:
    global _backend
    _check_choice(name, check)
    _backend = name
    _impls.clear()


def get_backend() -> str:
    """The backend setting in force (``"auto"`` unless forced)."""
    return _backend


# The environment may force a backend; one that cannot run raises at the first op call.
try:
    _set(os.environ.get("FASTGAME_BACKEND", "auto").strip().lower() or "auto", check=False)
except ValueError as _exc:  # a typo in the environment must not break `import fastgame`
    warnings.warn(f"FASTGAME_BACKEND ignored: {_exc}", stacklevel=1)


def _resolve(choice: str, device: torch.device, dtype: torch.dtype) -> ModuleType:
    """The module that runs the ops on ``device``/``dtype`` under the backend choice ``choice``."""
    if dtype not in _KERNEL_DTYPES:
        return reference
    if choice != "auto":
        backend = record(choice)
        why = backend.serves(device)
        if why:
            raise RuntimeError(f"fastgame backend {choice!r} cannot run on {device}: {why}")
        return backend.module
    table = records()
    kernels = [b.name for b in table.values() if b.name != "torch" and b.auto and b.serves(device) is None]
    if device.type == "cuda":
        return table[_fastest_on(device, kernels)].module
    return table[kernels[0] if kernels else "torch"].module


def _impl(x: Tensor, choice: Optional[str] = None) -> ModuleType:
    """The module that runs the ops on ``x`` (``choice`` None: the process-wide setting)."""
    key = (choice or _backend, x.device, x.dtype)
    impl = _impls.get(key)
    if impl is None:
        impl = _impls[key] = _resolve(*key)
    return impl


def _fastest_on(device: torch.device, candidates: list[str]) -> str:
    """The fastest of the GPU backends ``candidates`` on ``device``, timed once (cg_step and
    precondition at 2^20 float32 elements); the first without timing while a graph is captured."""
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device in _fastest:
        return _fastest[device]
    if len(candidates) <= 1 or torch.cuda.is_current_stream_capturing():
        return candidates[0] if candidates else "torch"
    times = {b: _time_backend(record(b).module, device) for b in candidates}
    _fastest[device] = min(times, key=times.get)
    return _fastest[device]


def _time_backend(impl: ModuleType, device: torch.device, n: int = 1 << 20, reps: int = 20) -> float:
    with torch.cuda.device(device):
        g = torch.randn(n, device=device)
        w, u, r, p, q, ap = (torch.randn(n, device=device) for _ in range(6))
        lr = torch.tensor(1e-3, dtype=torch.float64, device=device)
        step = torch.tensor(1.0, dtype=torch.float64, device=device)
        rr, pap = torch.tensor(1.0, device=device), torch.tensor(2.0, device=device)

        def run():
            impl.precondition(g, g, lr, step, 0.99, 1e-5)
            impl.cg_step_(w, u, r, p, q, ap, rr, pap)

        for _ in range(3):
            run()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)


def _dispatching(name: str, choice: Optional[str] = None) -> Callable:
    """Op ``name``, run by the module that ``choice`` (None: the process-wide setting) picks
    for the device and dtype of the op's first tensor."""
    first = next(iter(inspect.signature(getattr(reference, name)).parameters))

    def call(*args, **kwargs):
        return getattr(_impl(args[0] if args else kwargs[first], choice), name)(*args, **kwargs)
    return op(name, call)


class Ops:
    """The fused ops under one backend choice; see :func:`dispatch`."""

    def __init__(self, backend: Optional[str]) -> None:
        self.backend = backend
        for name in OPS:
            setattr(self, name, _dispatching(name, backend))

    def __repr__(self) -> str:
        return f"fastgame.ops.dispatch({self.backend!r})"


def dispatch(backend: Optional[str] = None) -> Ops:
    """The fused ops (attributes named as in :data:`OPS`) under the backend choice ``backend``,
    independent of :func:`set_backend`: ``"auto"`` or a backend name, per device as the
    process-wide setting; None follows the process-wide setting (as the module's functions do).

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` (saying why) for a backend
    that cannot run on this machine, as :func:`set_backend` does.
    """
    if backend not in _dispatchers:
        if backend is not None:
            _check_choice(backend, check=True)
        _dispatchers[backend] = Ops(backend)
    return _dispatchers[backend]


precondition, cg_matvec, cg_step_, cg_direction_ = map(_dispatching, OPS)
