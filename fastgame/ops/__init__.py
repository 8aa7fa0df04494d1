"""The fused vector ops of a CGD step, behind one dispatch point.

Every op has a pure-torch twin in :mod:`fastgame.ops.reference`, which defines its numbers.
Three other backends implement the same ops, registered as torch ops (``torch.ops.fastgame``):

* ``"cpp"``    C++ CPU kernels (``fastgame._C``, OpenMP), for CPU tensors;
* ``"cuda"``   CUDA kernels (``fastgame._cuda``), for CUDA tensors;
* ``"triton"`` Triton kernels (``fastgame.triton_kernels``), for CUDA tensors, or CPU tensors
  under the Triton interpreter (``TRITON_INTERPRET=1``; slow, for tests).

:func:`backends` returns the backend table (:mod:`fastgame.ops.backends`: one record per
backend, with the device types it serves and why it is unavailable). The ops are declared
once, each twin with its schema and fake kernel, in :mod:`fastgame.ops.reference`; every
kernel backend's op table is built from that list (:mod:`fastgame.ops.interface`), and
:class:`Ops` writes them out at the dispatch point. :func:`set_backend` (or the
``FASTGAME_BACKEND`` environment variable, read when first needed: the first op call or
:func:`get_backend`) picks one backend for the process, and :func:`dispatch` gives the ops
under a choice of their own (``dispatch("cpp").cg_step_(...)``). Importing the package loads
no extension and reads no environment variable.
``"auto"`` (the default) takes, per device, the first kernel backend of the table that serves
it — the C++ ops on the CPU, the faster of CUDA/Triton on a GPU (timed once per device) — and
the torch twins where no kernel applies. The kernels cover float32 and float64; other dtypes
always use the torch twins. Forcing a backend that cannot serve a tensor's device raises an
error that says why.

Applying the final update needs no kernel: each player's parameters are views into one flat
buffer (:mod:`fastgame.linalg.params`), so it is a single ``add_``.
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Optional, Union

import torch
from torch import Tensor

from . import reference
from .interface import OPS, OpTable, op
from .backends import Backend, record, records

__all__ = ["Backend", "OPS", "Ops", "backends", "set_backend", "get_backend", "dispatch", *OPS]

_KERNEL_DTYPES = (torch.float32, torch.float64)


def _check_choice(name: str, check: bool) -> None:
    """``ValueError`` for an unknown name; with ``check``, ``RuntimeError`` for an unusable backend."""
    if name == "auto":
        return
    backend = record(name)
    if check and not backend.available:
        raise RuntimeError(f"fastgame backend {name!r} is unavailable: {backend.reason}")


class _Dispatch:
    """The process-wide backend setting and what it resolved to, in one object. The setting
    starts from ``FASTGAME_BACKEND``, read at first use (not at import)."""

    def __init__(self) -> None:
        self._backend: Optional[str] = None  # None: FASTGAME_BACKEND not read yet
        self.impls: dict = {}                # (choice, device, dtype) -> what runs the ops there
        self.fastest: dict = {}              # CUDA device -> backend measured fastest there ("auto")
        self.dispatchers: dict = {}          # backend choice -> its Ops

    @property
    def backend(self) -> str:
        if self._backend is None:
            # The environment may force a backend; one that cannot run raises at the first op call.
            name = os.environ.get("FASTGAME_BACKEND", "auto").strip().lower() or "auto"
            try:
                self.set(name, check=False)
            except ValueError as exc:  # a typo in the environment must not break fastgame
                warnings.warn(f"FASTGAME_BACKEND ignored: {exc}", stacklevel=3)
                self.set("auto", check=False)
        return self._backend

    def set(self, name: str, check: bool) -> None:
        _check_choice(name, check)
        self._backend = name
        self.impls.clear()

    def impl(self, x: Tensor, choice: Optional[str] = None) -> Union[ModuleType, OpTable]:
        """What runs the ops on ``x`` (``choice`` None: the process-wide setting)."""
        key = (choice or self.backend, x.device, x.dtype)
        impl = self.impls.get(key)
        if impl is None:
            impl = self.impls[key] = self.resolve(*key)
        return impl

    def resolve(self, choice: str, device: torch.device, dtype: torch.dtype) -> Union[ModuleType, OpTable]:
        """What runs the ops on ``device``/``dtype`` under the backend choice ``choice``."""
        if dtype not in _KERNEL_DTYPES:
            return reference
        if choice != "auto":
            backend = record(choice)
            why = backend.serves(device)
            if why:
                raise RuntimeError(f"fastgame backend {choice!r} cannot run on {device}: {why}")
            return backend.ops
        table = records()
        kernels = [b.name for b in table.values() if b.name != "torch" and b.auto and b.serves(device) is None]
        if device.type == "cuda":
            return table[self.fastest_on(device, kernels)].ops
        return table[kernels[0] if kernels else "torch"].ops

    def fastest_on(self, device: torch.device, candidates: list[str]) -> str:
        """The fastest of the GPU backends ``candidates`` on ``device``, timed once (cg_step and
        precondition at 2^20 float32 elements); the first without timing while a graph is captured."""
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device in self.fastest:
            return self.fastest[device]
        if len(candidates) <= 1 or torch.cuda.is_current_stream_capturing():
            return candidates[0] if candidates else "torch"
        times = {b: _time_backend(record(b).ops, device) for b in candidates}
        self.fastest[device] = min(times, key=times.get)
        return self.fastest[device]


_state = _Dispatch()


def backends() -> dict[str, Backend]:
    """The backend table: each backend's :class:`~fastgame.ops.backends.Backend` record (name,
    the device types it serves, whether it is usable here and why not, what runs its ops).
    ``str(record)`` reads ``"available (CPU)"`` or ``"unavailable: <why>"``."""
    return records()


def set_backend(name: str) -> None:
    """Force the backend of the fused ops: ``"auto"``, ``"triton"``, ``"cuda"``, ``"cpp"``
    or ``"torch"``. Raises ``ValueError`` for an unknown name and ``RuntimeError`` (saying
    why) for a backend that cannot run on this machine."""
    _state.set(name, check=True)


def get_backend() -> str:
    """The backend setting in force (``"auto"`` unless forced)."""
    return _state.backend


def _set(name: str, check: bool) -> None:
    _state.set(name, check)


def _impl(x: Tensor, choice: Optional[str] = None) -> Union[ModuleType, OpTable]:
    return _state.impl(x, choice)


def _time_backend(impl: Union[ModuleType, OpTable], device: torch.device, n: int = 1 << 20, reps: int = 20) -> float:
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


class Ops:
    """The fused ops under one backend choice (``backend``; None: the process-wide setting), each
    run by the backend that choice picks for the device and dtype of the op's first tensor; see
    :func:`dispatch`."""

    def __init__(self, backend: Optional[str]) -> None:
        self.backend = backend

    @op
    def precondition(self, grad: Tensor, square_avg: Tensor, lr: Tensor, step: Tensor,
                     beta: float, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return _state.impl(grad, self.backend).precondition(grad, square_avg, lr, step, beta, eps)

    @op
    def cg_matvec(self, p: Tensor, sqrt_eta: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return _state.impl(p, self.backend).cg_matvec(p, sqrt_eta, t)

    @op
    def cg_step_(self, w: Tensor, u: Tensor, r: Tensor, p: Tensor, q: Tensor, ap: Tensor, rr: Tensor,
                 pap: Tensor) -> Tensor:
        return _state.impl(w, self.backend).cg_step_(w, u, r, p, q, ap, rr, pap)

    @op
    def cg_direction_(self, p: Tensor, r: Tensor, rr_new: Tensor, rr: Tensor, sqrt_eta: Tensor) -> Tensor:
        return _state.impl(p, self.backend).cg_direction_(p, r, rr_new, rr, sqrt_eta)

    def __repr__(self) -> str:
        return f"fastgame.ops.dispatch({self.backend!r})"


# The ops under the process-wide setting (``fastgame.ops.cg_step_(...)``).
_state.dispatchers[None] = _process = Ops(None)
precondition = _process.precondition
cg_matvec = _process.cg_matvec
cg_step_ = _process.cg_step_
cg_direction_ = _process.cg_direction_


def dispatch(backend: Optional[str] = None) -> Ops:
    """The fused ops (attributes named as in :data:`OPS`) under the backend choice ``backend``,
    independent of :func:`set_backend`: ``"auto"`` or a backend name, per device as the
    process-wide setting; None follows the process-wide setting (as the module's functions do).

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` (saying why) for a backend
    that cannot run on this machine, as :func:`set_backend` does.
    """
    if backend not in _state.dispatchers:
        if backend is not None:
            _check_choice(backend, check=True)
        _state.dispatchers[backend] = Ops(backend)
    return _state.dispatchers[backend]

