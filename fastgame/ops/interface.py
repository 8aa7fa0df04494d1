"""The op interface: the fused ops every backend implements, as declared in
:data:`fastgame.ops.schemas.SCHEMAS`.

Each backend module (:mod:`~fastgame.ops.reference`, :mod:`~fastgame.ops._ext`,
:mod:`~fastgame.ops._triton`) defines the functions named in :data:`OPS`, written out. Their
parameters, docstrings and numbers are those of the pure-torch twins in
:mod:`fastgame.ops.reference`; the other modules mark theirs with :func:`op`, which checks the
parameters against the twin's and copies its docstring.
"""
from __future__ import annotations

import inspect
from typing import Callable

from . import reference
from .schemas import SCHEMAS

OPS = tuple(s.name for s in SCHEMAS)
"""The fused ops, by the name of their function in every backend module."""


def op(fn: Callable) -> Callable:
    """Decorator: ``fn`` as the op of its name, checked to have its twin's signature (after a
    method's ``self``) and given the twin's docstring. ``TypeError`` at import when they differ."""
    name = fn.__name__
    if name not in OPS:
        raise ValueError(f"{name!r} is not a fused op; the ops are {OPS}")
    twin = getattr(reference, name)
    sig = inspect.signature(fn)
    sig = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "self"])
    if sig != inspect.signature(twin):
        raise TypeError(f"{fn.__qualname__}{sig} differs from its twin {name}{inspect.signature(twin)}")
    fn.__doc__ = twin.__doc__
    return fn
