"""The op interface, declared once: the fused ops every backend module implements.

Each backend module (:mod:`~fastgame.ops.reference`, :mod:`~fastgame.ops._ext`,
:mod:`~fastgame.ops._triton`) defines the functions named in :data:`OPS`. Their signatures,
docstrings and numbers are those of the pure-torch twins in :mod:`fastgame.ops.reference`;
the kernel modules only bind the names (:func:`op`).
"""
from __future__ import annotations

import inspect
from typing import Callable

from . import reference

OPS = ("precondition", "cg_matvec", "cg_step_", "cg_direction_")
"""The fused ops, by the name of their function in every backend module."""


def op(name: str, call: Callable) -> Callable:
    """``call`` presented as the op ``name``: its twin's name, signature and docstring."""
    if name not in OPS:
        raise ValueError(f"{name!r} is not a fused op; the ops are {OPS}")
    twin = getattr(reference, name)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = twin.__doc__
    call.__signature__ = inspect.signature(twin)
    return call
