"""The fused vector ops of a CGD step, behind one dispatch point.

Every op has a pure-torch twin in :mod:`fastgame.ops.reference`, which defines its numbers.
Three other backends implement the same ops, registered as torch ops (``torch.ops.fastgame``):

* ``"cpp"``    C++ CPU kernels (``fastgame._C``, OpenMP), for CPU tensors;
* ``"cuda"``   CUDA kernels (``fastgame._cuda``), for CUDA tensors;
* ``"triton"`` Triton kernels (``fastgame.triton_kernels``), for CUDA tensors, or CPU tensors
  under the Triton interpreter (``TRITON_INTERPRET=1``; slow, for tests).

:func:`set_backend` (or the ``FASTGAME_BACKEND`` environment variable) picks one; ``"auto"``
(the default) takes, per device, the C++ ops on the CPU and the faster of CUDA/Triton on a
GPU (timed once per device), and the torch twins where no kernel applies. The kernels cover
float32 and float64; other dtypes always use the torch twins. Forcing a backend that cannot
serve a tensor's device raises an error that says why.

Applying the final update needs no kernel: each player's parameters are views into one flat
buffer (:mod:`fastgame._params`), so it is a single ``add_``.
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Optional

import torch
from torch import Tensor

from . import _ext, _triton, reference

__all__ = ["backends", "set_backend", "get_backend", "precondition", "cg_matvec", "cg_step_",
           "cg_direction_"]

_CHOICES = ("auto", "triton", "cuda", "cpp", "torch")
_KERNEL_DTYPES = (torch.float32, torch.float64)
_backend = "auto"
_impls: dict = {}        # (device, dtype) -> module with the four op functions
_fastest: dict = {}      # CUDA device -> backend measured fastest there ("auto")

_ext.load()


def _unavailable(name: str, device: Optional[torch.device] = None) -> Optional[str]:
    """Why backend ``name`` cannot run (on ``device`` if given), or None if it can."""
    cuda_ok = torch.cuda.is_available()
    if name == "torch":
        return None
    if name == "cpp":
        if _ext.CPP_ERROR:
            return _ext.CPP_ERROR
        if device is not None and device.type != "cpu":
            return f"the C++ ops run on CPU tensors, not {device.type}"
        return None
    if name == "cuda":
        if _ext.CUDA_ERROR:
            return _ext.CUDA_ERROR
        if not cuda_ok:
            return "no GPU (torch.cuda.is_available() is False)"
        if device is not None and device.type != "cuda":
            return f"the CUDA ops run on CUDA tensors, not {device.type}"
        return None
    if name == "triton":
        why = _triton.error()
        if why:
            return why
        if _triton.interpreter():
            if device is not None and device.type != "cpu":
                return "TRITON_INTERPRET=1 runs the Triton kernels on CPU tensors only"
            return None
        if not cuda_ok:
            return "no GPU (and TRITON_INTERPRET is not set)"
        if device is not None and device.type != "cuda":
            return f"the Triton ops run on CUDA tensors, not {device.type}"
        return None
    raise ValueError(f"unknown fastgame backend {name!r}; choose one of {_CHOICES}")


def backends() -> dict[str, str]:
    """Each backend and whether it is usable on this machine: ``"available"`` (with the
    device it serves) or ``"unavailable: <why>"`` (not built, no GPU, no Triton, ...)."""
    where = {"torch": "any device", "cpp": "CPU", "cuda": "CUDA",
             "triton": "CPU, interpreter" if _triton.interpreter() else "CUDA"}
    out = {}
    for name in ("torch", "cpp", "cuda", "triton"):
        why = _unavailable(name)
        out[name] = f"available ({where[name]})" if why is None else f"unavailable: {why}"
    return out


def set_backend(name: str) -> None:
    """Force the backend of the fused ops: ``"auto"``, ``"triton"``, ``"cuda"``, ``"cpp"``
    or ``"torch"``. Raises ``ValueError`` for an unknown name and ``RuntimeError`` (saying
    why) for a backend that cannot run on this machine."""
    _set(name, check=True)


def _set(name: str, check: bool) -> None:
    global _backend
    if name not in _CHOICES:
        raise ValueError(f"unknown fastgame backend {name!r}; choose one of {_CHOICES}")
    if check and name != "auto":
        why = _unavailable(name)
        if why:
            raise RuntimeError(f"fastgame backend {name!r} is unavailable: {why}")
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

_MODULES = {"torch": reference, "cpp": _ext, "cuda": _ext, "triton": _triton}


def _resolve(device: torch.device, dtype: torch.dtype) -> ModuleType:
    if dtype not in _KERNEL_DTYPES:
        return reference
    name = _backend
    if name == "auto":
        if device.type == "cpu":
            name = "cpp" if _unavailable("cpp", device) is None else "torch"
        elif device.type == "cuda":
            name = _fastest_on(device)
        else:
            name = "torch"
    else:
        why = _unavailable(name, device)
        if why:
            raise RuntimeError(f"fastgame backend {name!r} cannot run on {device}: {why}")
    return _MODULES[name]


def _impl(x: Tensor) -> ModuleType:
    key = (x.device, x.dtype)
    impl = _impls.get(key)
    if impl is None:
        impl = _impls[key] = _resolve(*key)
    return impl


def _fastest_on(device: torch.device) -> str:
    """The fastest available GPU backend on ``device``, timed once (cg_step and
    precondition at 2^20 float32 elements); "cuda" without timing while a graph is captured."""
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device in _fastest:
        return _fastest[device]
    candidates = [b for b in ("cuda", "triton") if _unavailable(b, device) is None]
    if len(candidates) <= 1 or torch.cuda.is_current_stream_capturing():
        return candidates[0] if candidates else "torch"
    times = {b: _time_backend(_MODULES[b], device) for b in candidates}
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


def precondition(grad: Tensor, square_avg: Tensor, lr: Tensor, step: Tensor,
                 beta: float, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _impl(grad).precondition(grad, square_avg, lr, step, beta, eps)


def cg_matvec(p: Tensor, sqrt_eta: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return _impl(p).cg_matvec(p, sqrt_eta, t)


def cg_step_(w: Tensor, u: Tensor, r: Tensor, p: Tensor, q: Tensor, ap: Tensor,
             rr: Tensor, pap: Tensor) -> Tensor:
    return _impl(w).cg_step_(w, u, r, p, q, ap, rr, pap)


def cg_direction_(p: Tensor, r: Tensor, rr_new: Tensor, rr: Tensor, sqrt_eta: Tensor) -> Tensor:
    return _impl(p).cg_direction_(p, r, rr_new, rr, sqrt_eta)


precondition.__doc__ = reference.precondition.__doc__
cg_matvec.__doc__ = reference.cg_matvec.__doc__
cg_step_.__doc__ = reference.cg_step_.__doc__
cg_direction_.__doc__ = reference.cg_direction_.__doc__
