"""How a fused op is declared: its :class:`OpSchema` (torch schema and fake kernel), attached to
its pure-torch twin with :func:`declare`, and registered with torch by :func:`define`.

Each op is declared once, in :mod:`fastgame.ops.reference`: the twin (which defines the numbers,
the signature and the docstring) carries its schema and fake right above it, and
:data:`fastgame.ops.interface.SCHEMAS` collects them in that file's order. Every backend is
built from that list: the compiled ops (``torch.ops.fastgame.<op>``, whose schemas
:func:`define` registers and whose C++/CUDA kernels ``csrc/`` registers with
``TORCH_LIBRARY_IMPL``) and the Triton kernels (``torch.ops.fastgame.triton_<op>``, registered by
:mod:`fastgame.ops._triton` from the launchers in ``triton_kernels/<op>.py``).
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

NAMESPACE = "fastgame"


@dataclass(frozen=True)
class OpSchema:
    """One fused op.

    Attributes:
        name: the op's function name in every backend table (in-place ops end in ``_``).
        schema: its torch schema; mutated tensors are annotated ``(a!)``. The registered name
            drops the trailing underscore (the dispatcher reserves that for ops returning self).
        fake: the shapes and dtypes of its outputs, for FakeTensor / torch.compile / opcheck.
    """
    name: str
    schema: str
    fake: Callable

    @property
    def registered(self) -> str:
        """The name under ``torch.ops.fastgame`` (and of the Triton launcher, after ``triton_``)."""
        return self.name.rstrip("_")

    @property
    def mutates(self) -> tuple[str, ...]:
        """The arguments the op writes in place, read from the schema's ``(x!)`` annotations."""
        return tuple(re.findall(r"Tensor\(\w!\) (\w+)", self.schema))

    @property
    def arguments(self) -> tuple[str, ...]:
        """The argument names, in the schema's order."""
        inside = self.schema[self.schema.index("(") + 1:self.schema.rindex(") ->")]
        return tuple(arg.split()[-1] for arg in inside.split(","))


def declare(schema: str, fake: Callable) -> Callable[[Callable], Callable]:
    """Decorator for a pure-torch twin: the fused op of the twin's name has this torch ``schema``
    and ``fake`` kernel (kept as the twin's ``op_schema``). ``ValueError`` at import when the
    schema's name or arguments are not the twin's."""
    def mark(twin: Callable) -> Callable:
        op = OpSchema(twin.__name__, schema, fake)
        if not schema.startswith(op.registered + "("):
            raise ValueError(f"the schema of {op.name} must be named {op.registered!r}: {schema!r}")
        params = tuple(inspect.signature(twin).parameters)
        if op.arguments != params or tuple(inspect.signature(fake).parameters) != params:
            raise ValueError(f"{op.name}{params}: its schema takes {op.arguments}, its fake "
                             f"{tuple(inspect.signature(fake).parameters)}")
        twin.op_schema = op
        return twin
    return mark


_library: Optional[torch.library.Library] = None  # kept alive: dropping it would unregister the schemas


def _defined_schema(op: OpSchema) -> Optional[str]:
    """The schema already registered under the op's name (by an earlier build of ``fastgame._C``
    that still defined them in C++), or None."""
    try:
        return str(getattr(getattr(torch.ops, NAMESPACE), op.registered).default._schema)
    except (AttributeError, RuntimeError):
        return None


def define(ops: Sequence[OpSchema]) -> None:
    """Register the compiled ops' schemas and fakes under ``torch.ops.fastgame``, once.

    Called after ``fastgame._C``/``fastgame._cuda`` are loaded: the dispatcher joins their
    ``TORCH_LIBRARY_IMPL`` kernels to these schemas in either order, and a library built before
    the schemas moved here (which defines them itself) is used as it is when its schemas are
    these. ``RuntimeError`` when they differ: the build is stale.
    """
    global _library
    if _library is not None:
        return
    library = torch.library.Library(NAMESPACE, "FRAGMENT")
    for op in ops:
        existing = _defined_schema(op)
        if existing is None:
            library.define(op.schema)
        elif existing != f"{NAMESPACE}::{op.schema}":
            raise RuntimeError(f"a stale build defines {existing!r}, not {op.schema!r}: rebuild the extension "
                               "(python setup.py build_ext --inplace, or pip install .)")
        torch.library.register_fake(f"{NAMESPACE}::{op.registered}", op.fake, lib=library)
    _library = library
