"""The op interface: the fused ops every backend implements, as declared with their twins in
:mod:`fastgame.ops.reference`.

The pure-torch twins define each op's parameters, docstring and numbers. The dispatch point
(:class:`fastgame.ops.Ops`) writes the ops out, marked with :func:`op`, which checks them
against the twins; a kernel backend is an :class:`OpTable`, built from :data:`SCHEMAS`, whose
ops call that backend's registered torch ops.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from . import reference
from .schemas import OpSchema

SCHEMAS: tuple[OpSchema, ...] = tuple(
    fn.op_schema for fn in vars(reference).values() if isinstance(getattr(fn, "op_schema", None), OpSchema))
"""The fused ops, in the order of their twins in :mod:`fastgame.ops.reference`."""

OPS = tuple(s.name for s in SCHEMAS)
"""The fused ops, by the name of their function in every backend."""


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


class OpTable:
    """A kernel backend's ops: one attribute per op of :data:`SCHEMAS`, with its twin's signature
    and docstring, that calls ``resolve(schema)`` — the backend's registered torch op, looked up
    at the op's first call (the kernels are registered only when the backend is first picked).

    Args:
        backend: the backend's name, for ``repr``.
        resolve: the callable that runs an op on this backend, given its schema.
    """

    def __init__(self, backend: str, resolve: Callable[[OpSchema], Callable]) -> None:
        self.backend = backend
        for schema in SCHEMAS:
            setattr(self, schema.name, _bound(schema, resolve))

    def __repr__(self) -> str:
        return f"<fastgame {self.backend} ops: {', '.join(OPS)}>"


def _bound(schema: OpSchema, resolve: Callable[[OpSchema], Callable]) -> Callable:
    target: list[Callable] = []  # the resolved op, once found

    @functools.wraps(getattr(reference, schema.name))  # its signature and docstring
    def run(*args: Any, **kwargs: Any) -> Any:
        if not target:
            target.append(resolve(schema))
        return target[0](*args, **kwargs)
    return run
