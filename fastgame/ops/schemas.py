"""The fused ops, declared once: one :class:`OpSchema` per op, with its torch schema and its
fake (meta) kernel.

Every backend's op table is built from :data:`SCHEMAS` (:func:`fastgame.ops.interface.table`):
the pure-torch twins (:mod:`fastgame.ops.reference`, which define the numbers, signatures and
docstrings), the compiled ops (``torch.ops.fastgame.<op>``, whose schemas :func:`define`
registers here and whose C++/CUDA kernels ``csrc/`` registers with ``TORCH_LIBRARY_IMPL``) and
the Triton kernels (``torch.ops.fastgame.triton_<op>``, registered by
:mod:`fastgame.ops._triton` from the launchers in ``triton_kernels/<op>.py``).

Adding an op: its twin in ``reference.py``, its entry here, its kernels (``csrc/cpu/ops.cpp``
with the loop in ``csrc/cpu/kernels.h``, ``csrc/cuda/ops.cu``, ``triton_kernels/<op>.py``, the
argument checks in ``csrc/fastgame.h``) and its test.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

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


def _precondition_fake(grad, square_avg, lr, step, beta, eps):
    return tuple(torch.empty_like(grad) for _ in range(4))


def _cg_matvec_fake(p, sqrt_eta, t):
    return torch.empty_like(p), p.new_empty(())


def _cg_step_fake(w, u, r, p, q, ap, rr, pap):
    return r.new_empty(())


def _cg_direction_fake(p, r, rr_new, rr, sqrt_eta):
    return torch.empty_like(p)


SCHEMAS: tuple[OpSchema, ...] = (
    # (square_avg_new, eta, sqrt_eta, eta * grad); square_avg is only read.
    OpSchema("precondition", "precondition(Tensor grad, Tensor square_avg, Tensor lr, Tensor step, float beta, "
             "float eps) -> (Tensor, Tensor, Tensor, Tensor)", _precondition_fake),
    # (A p = p + sqrt_eta * t, p . A p)
    OpSchema("cg_matvec", "cg_matvec(Tensor p, Tensor sqrt_eta, Tensor t) -> (Tensor, Tensor)", _cg_matvec_fake),
    # alpha = rr / pAp; w += alpha p; u += alpha q; r -= alpha A p; returns r . r
    OpSchema("cg_step_", "cg_step(Tensor(a!) w, Tensor(b!) u, Tensor(c!) r, Tensor p, Tensor q, Tensor ap, "
             "Tensor rr, Tensor pap) -> Tensor", _cg_step_fake),
    # beta = rr_new / rr; p = r + beta p; returns sqrt_eta * p
    OpSchema("cg_direction_", "cg_direction(Tensor(a!) p, Tensor r, Tensor rr_new, Tensor rr, Tensor sqrt_eta) -> Tensor",
             _cg_direction_fake),
)

_library: Optional[torch.library.Library] = None  # kept alive: dropping it would unregister the schemas


def _defined_schema(op: OpSchema) -> Optional[str]:
    """The schema already registered under the op's name (by an earlier build of ``fastgame._C``
    that still defined them in C++), or None."""
    try:
        return str(getattr(getattr(torch.ops, NAMESPACE), op.registered).default._schema)
    except (AttributeError, RuntimeError):
        return None


def define() -> None:
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
    for op in SCHEMAS:
        existing = _defined_schema(op)
        if existing is None:
            library.define(op.schema)
        elif existing != f"{NAMESPACE}::{op.schema}":
            raise RuntimeError(f"a stale build defines {existing!r}, not {op.schema!r}: rebuild the extension "
                               "(python setup.py build_ext --inplace, or pip install .)")
        torch.library.register_fake(f"{NAMESPACE}::{op.registered}", op.fake, lib=library)
    _library = library
