"""The backend table of the fused ops: one record per backend.

A :class:`Backend` record names what runs the ops (the twins' module, or a kernel backend's
:class:`~fastgame.ops.interface.OpTable`), the device types it serves and, on this machine,
whether it can run and why not. Availability is read afresh by every call of :func:`records`
(``TRITON_INTERPRET`` may be set after import).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Optional, Union

import torch

from . import _ext, _triton, reference
from .interface import OpTable

ANY_DEVICE = "any"
"""The device entry of a backend that serves tensors on every device (the torch twins)."""


@dataclass(frozen=True)
class Backend:
    """One backend of the fused ops. ``str(record)`` reads ``"available (CPU)"`` or
    ``"unavailable: <why>"``.

    Attributes:
        name: what :func:`fastgame.set_backend` and ``FASTGAME_BACKEND`` take.
        devices: the device types whose tensors it serves (``("any",)``: every device).
        reason: why it cannot run on this machine; None when it can.
        ops: what runs the ops (:data:`fastgame.ops.interface.OPS`, as attributes): the twins'
            module :mod:`fastgame.ops.reference`, or the backend's op table.
        auto: whether ``"auto"`` may pick it (not the Triton interpreter: slow, for tests).
    """
    name: str
    devices: tuple[str, ...]
    reason: Optional[str]
    ops: Union[ModuleType, OpTable] = field(repr=False, compare=False)
    auto: bool = True

    @property
    def available(self) -> bool:
        """Whether it can run on this machine (on the device types in ``devices``)."""
        return self.reason is None

    def serves(self, device: torch.device) -> Optional[str]:
        """Why it cannot run on tensors of ``device``, or None if it can."""
        if self.reason is not None:
            return self.reason
        if ANY_DEVICE in self.devices or device.type in self.devices:
            return None
        how = "" if self.auto else " in the interpreter"
        return f"the {self.name} ops run{how} on {' or '.join(self.devices)} tensors, not {device.type}"

    def __str__(self) -> str:
        if self.reason is not None:
            return f"unavailable: {self.reason}"
        where = "any device" if ANY_DEVICE in self.devices else ", ".join(d.upper() for d in self.devices)
        return f"available ({where}{'' if self.auto else ', interpreter'})"


def _no_gpu() -> Optional[str]:
    return None if torch.cuda.is_available() else "no GPU (torch.cuda.is_available() is False)"


def _triton_record() -> Backend:
    if _triton.interpreter():  # the kernels run as Python on CPU tensors
        return Backend("triton", ("cpu",), _triton.error(), _triton.OPS, auto=False)
    reason = _triton.error() or (None if torch.cuda.is_available() else "no GPU (and TRITON_INTERPRET is not set)")
    return Backend("triton", ("cuda",), reason, _triton.OPS)


def records() -> dict[str, Backend]:
    """Every backend's record. ``"auto"`` takes the first kernel backend (after ``torch``) that
    serves a device (on a GPU the faster of those), else the torch twins."""
    table = [
        Backend("torch", (ANY_DEVICE,), None, reference),
        Backend("cpp", ("cpu",), _ext.CPP_ERROR, _ext.OPS),
        Backend("cuda", ("cuda",), _ext.CUDA_ERROR or _no_gpu(), _ext.OPS),
        _triton_record(),
    ]
    return {b.name: b for b in table}


NAMES = ("torch", "cpp", "cuda", "triton")
"""The backend names, for error messages and argument choices (as listed by :func:`records`,
which probes CUDA and Triton: not at import)."""


def record(name: str) -> Backend:
    """The record of backend ``name``; ``ValueError`` naming the choices for an unknown one."""
    table = records()
    if name not in table:
        raise ValueError(f"unknown fastgame backend {name!r}; choose one of {('auto',) + NAMES}")
    return table[name]
