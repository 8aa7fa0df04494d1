"""Launch geometry and the second stage of the reductions, shared by the op files."""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

BLOCK = 1024        # elements per program and loop trip: 8 per thread at 4 warps (2 x 16 B for fp32)
NUM_WARPS = 4
MAX_PARTIALS = 1024  # programs of a reduction (persistent grid); power of two for the finishing sum


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def elementwise_grid(n: int) -> tuple[int]:
    """One program per tile."""
    return (max(1, triton.cdiv(n, BLOCK)),)


def reduction_grid(n: int, device: torch.device) -> tuple[int]:
    """A persistent grid: a few programs per SM, each looping over tiles, so the partial
    sums stay few (one per program) and the second stage is a single small program."""
    cap = 4 * _sm_count(device.index or 0) if device.type == "cuda" else 4
    return (max(1, min(triton.cdiv(n, BLOCK), cap, MAX_PARTIALS)),)


@triton.jit
def _finish_sum_kernel(partials_ptr, out_ptr, count, MAX: tl.constexpr):
    # Adds the per-program partial sums (float64) in a fixed order and stores the result in
    # the dtype of out: the second stage of a deterministic two-stage reduction.
    offs = tl.arange(0, MAX)
    total = tl.sum(tl.load(partials_ptr + offs, mask=offs < count, other=0.0), axis=0)
    tl.store(out_ptr, total.to(out_ptr.dtype.element_ty))


def finish_sum(partials: torch.Tensor, out: torch.Tensor) -> None:
    """out (0-dim) = sum of partials, on the device."""
    from torch.library import wrap_triton
    wrap_triton(_finish_sum_kernel)[(1,)](partials, out, partials.numel(), MAX=MAX_PARTIALS)


# IEEE-rounded sqrt and division for both dtypes: tl.sqrt / `/` are approximate for float32,
# and tl.sqrt_rn / tl.div_rn accept float32 only (float64 sqrt and `/` are already exact).
@triton.jit
def sqrt_rn(x):
    if x.dtype == tl.float32:
        return tl.sqrt_rn(x)
    else:
        return tl.sqrt(x)


@triton.jit
def div_rn(x, y):
    if x.dtype == tl.float32:
        return tl.div_rn(x, y)
    else:
        return x / y
