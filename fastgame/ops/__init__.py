"""The fused vector ops of a CGD step, behind one dispatch point.

Every op has a pure-torch twin in :mod:`fastgame.ops.reference`; compiled or Triton
backends register the same ops and are chosen per device by :func:`set_backend`
(``"auto"`` by default, or the ``FASTGAME_BACKEND`` environment variable).
"""
from __future__ import annotations

import os

from torch import Tensor

from . import reference

__all__ = ["backends", "set_backend", "get_backend", "precondition", "cg_matvec", "cg_step_",
           "cg_direction_"]

_CHOICES = ("auto", "torch")
_backend = "auto"


def set_backend(name: str) -> None:
    """Force the backend of the fused ops: one of ``"auto"`` or ``"torch"``."""
    global _backend
    if name not in _CHOICES:
        raise ValueError(f"unknown fastgame backend {name!r}; choose one of {_CHOICES}")
    _backend = name


def get_backend() -> str:
    """The backend setting in force (``"auto"`` unless forced)."""
    return _backend


def backends() -> dict[str, str]:
    """Each backend and whether it is usable on this machine (and why not)."""
    return {"torch": "available"}


set_backend(os.environ.get("FASTGAME_BACKEND", "auto"))


def precondition(grad: Tensor, square_avg: Tensor, lr: Tensor, step: Tensor,
                 beta: float, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return reference.precondition(grad, square_avg, lr, step, beta, eps)


def cg_matvec(p: Tensor, sqrt_eta: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return reference.cg_matvec(p, sqrt_eta, t)


def cg_step_(w: Tensor, u: Tensor, r: Tensor, p: Tensor, q: Tensor, ap: Tensor,
             rr: Tensor, pap: Tensor) -> Tensor:
    return reference.cg_step_(w, u, r, p, q, ap, rr, pap)


def cg_direction_(p: Tensor, r: Tensor, rr_new: Tensor, rr: Tensor, sqrt_eta: Tensor) -> Tensor:
    return reference.cg_direction_(p, r, rr_new, rr, sqrt_eta)


precondition.__doc__ = reference.precondition.__doc__
cg_matvec.__doc__ = reference.cg_matvec.__doc__
cg_step_.__doc__ = reference.cg_step_.__doc__
cg_direction_.__doc__ = reference.cg_direction_.__doc__
