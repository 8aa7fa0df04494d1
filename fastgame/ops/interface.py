"""The op interface: the fused ops every backend implements, as declared in
:data:`fastgame.ops.schemas.SCHEMAS`.

Each backend module (:mod:`~fastgame.ops.reference`, :mod:`~fastgame.ops._ext`,
:mod:`~fastgame.ops._triton`) defines the functions named in :data:`OPS`. Their signatures,
docstrings and numbers are those of the pure-torch twins in :mod:`fastgame.ops.reference`;
the kernel modules build theirs with :func:`table`, one entry per schema.
"""
from __future__ import annotations

import inspect
from typing import Callable

from . import reference
from .schemas import SCHEMAS, OpSchema

OPS = tuple(s.name for s in SCHEMAS)
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


def table(make: Callable[[OpSchema], Callable]) -> dict[str, Callable]:
    """A backend's op table: ``{name: op(name, make(schema))}`` for every schema, for a module's
    ``globals().update(...)``."""
    return {s.name: op(s.name, make(s)) for s in SCHEMAS}
