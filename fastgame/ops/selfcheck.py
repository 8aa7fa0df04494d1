"""Every fused op of a backend against its pure-torch twin, at the per-dtype tolerances.

The tolerance table (:data:`TOLERANCES`) is the one the kernel tests (``tests/test_ops.py``) and
``python -m fastgame.doctor`` both read. :func:`check_op` runs one op of a backend's ops on sample
operands (:func:`sample_args`) and its twin (:mod:`fastgame.ops.reference`) on copies of them, and
says what differs: every output and every argument the op writes in place (the ``(a!)`` arguments
of its schema, declared with its twin).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from torch import Tensor

from . import reference
from .interface import SCHEMAS
from .schemas import OpSchema


@dataclass(frozen=True)
class Tolerance:
    """How far a kernel may be from its twin in one dtype.

    Attributes:
        rtol: elementwise outputs: ``|a - b| <= rtol * max|b| + atol`` (relative to the vector's
            largest entry: fused multiply-adds round differently from the twin's separate ops).
        atol: the absolute floor of that bound.
        dot_rtol: reductions against the float64 value: ``|a - exact| <= dot_rtol * sum|x_i y_i|``
            (summation order differs between kernels).
    """
    rtol: float
    atol: float
    dot_rtol: float


TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float32: Tolerance(rtol=2e-6, atol=1e-30, dot_rtol=1e-5),
    torch.float64: Tolerance(rtol=1e-13, atol=1e-300, dot_rtol=1e-13),
}
"""The dtypes the kernels cover, with their tolerances."""


def vec_mismatch(actual: Tensor, expected: Tensor) -> Optional[str]:
    """Why ``actual`` is not ``expected`` to its dtype's tolerance (None: it is)."""
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return f"got {actual.dtype} {tuple(actual.shape)}, expected {expected.dtype} {tuple(expected.shape)}"
    tol = TOLERANCES[expected.dtype]
    scale = expected.abs().max().item() if expected.numel() else 0.0
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    bound = tol.rtol * scale + tol.atol
    if not err <= bound:  # NaN fails too
        return f"max |error| {err:.3g} > {bound:.3g} (rtol {tol.rtol:g} of max |expected| {scale:.3g})"
    return None


def dot_mismatch(actual: Tensor, exact: Tensor, scale: float) -> Optional[str]:
    """Why the reduction ``actual`` is not the float64 value ``exact`` to its dtype's tolerance,
    ``scale`` being ``sum |x_i y_i|`` of its terms (None: it is)."""
    if actual.dim() != 0:
        return f"got shape {tuple(actual.shape)}, expected a 0-dim tensor"
    err = abs(actual.double().item() - exact.double().item())
    rtol = TOLERANCES[actual.dtype].dot_rtol
    bound = rtol * scale + 1e-300
    if not err <= bound:
        return f"|error| {err:.3g} > {bound:.3g} (dot_rtol {rtol:g} of sum |terms| {scale:.3g})"
    return None


def sample_args(name: str, n: int, dtype: torch.dtype, device: Union[str, torch.device], seed: int = 0) -> tuple:
    """Operands of op ``name`` with vectors of ``n`` elements, from ``seed``. Chosen so that every
    reduction the op returns has non-negative terms (``t`` small against ``p``; ``r . r``): its value
    is then the scale of its rounding error."""
    gen = torch.Generator().manual_seed(seed + n)

    def vec(scale: float = 1.0) -> Tensor:
        return (scale * torch.randn(n, generator=gen, dtype=dtype)).to(device)

    def scalar(value: float, scalar_dtype: torch.dtype = dtype) -> Tensor:
        return torch.tensor(value, dtype=scalar_dtype, device=device)

    if name == "precondition":
        lr, step = scalar(2e-3, torch.float64), scalar(7.0, torch.float64)
        return vec(), vec().abs(), lr, step, 0.99, 1e-5
    if name == "cg_matvec":
        return vec(), vec().abs(), vec()
    if name == "cg_step_":
        w, u, r, p, q, ap = (vec() for _ in range(6))
        return w, u, r, p, q, ap, torch.dot(r, r), torch.dot(p, ap).abs() + 1
    if name == "cg_direction_":
        return vec(), vec(), scalar(0.5), scalar(2.0), vec().abs()
    raise ValueError(f"no sample operands for op {name!r}; the ops are {[s.name for s in SCHEMAS]}")


REDUCTIONS: dict[str, tuple[Union[str, int], Union[str, int]]] = {
    "cg_matvec": ("p", 0),  # p . A p, A p its first output
    "cg_step_": ("r", "r"),  # r . r of the updated r
}
"""The two vectors of each op's 0-dim output (an argument's name, after the op, or an output's index)."""


def _outputs(result: object) -> tuple[Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def _clone(args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, Tensor) else a for a in args)


def check_op(ops: Any, op: Union[str, OpSchema], n: int, dtype: torch.dtype,
             device: Union[str, torch.device]) -> Optional[str]:
    """Run op ``op`` of a backend's ``ops`` (its :attr:`~fastgame.ops.backends.Backend.ops`) on :func:`sample_args` and its twin on copies; None when
    every output and every argument it writes agree to :data:`TOLERANCES`, else what differs.
    Exceptions the kernel raises propagate (the caller reports them)."""
    schema = op if isinstance(op, OpSchema) else next((s for s in SCHEMAS if s.name == op), None)
    if schema is None:
        raise ValueError(f"unknown fused op {op!r}; the ops are {[s.name for s in SCHEMAS]}")
    args = sample_args(schema.name, n, dtype, device)
    names = list(inspect.signature(getattr(reference, schema.name)).parameters)
    mine, twin = _clone(args), _clone(args)
    got = _outputs(getattr(ops, schema.name)(*mine))
    want = _outputs(getattr(reference, schema.name)(*twin))
    if len(got) != len(want):
        return f"{schema.name}: {len(got)} outputs, expected {len(want)}"

    def operand(which: Union[str, int]) -> Tensor:  # the twin's values, after it ran
        return twin[names.index(which)] if isinstance(which, str) else want[which]
    for i, (a, b) in enumerate(zip(got, want)):
        if b.dim() == 0:
            x, y = (operand(w).double() for w in REDUCTIONS[schema.name])
            why = dot_mismatch(a, torch.dot(x, y), (x * y).abs().sum().item())
        else:
            why = vec_mismatch(a, b)
        if why:
            return f"{schema.name} output {i}: {why}"
    for arg in schema.mutates:
        k = names.index(arg)
        why = vec_mismatch(mine[k], twin[k])
        if why:
            return f"{schema.name} argument {arg} (written in place): {why}"
    return None
