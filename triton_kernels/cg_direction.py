"""New CG search direction in one pass: p = r + beta p, and sqrt_eta * p for the next HVP."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from ._utils import BLOCK, NUM_WARPS, div_rn, elementwise_grid


@triton.jit
def _cg_direction_kernel(p_ptr, r_ptr, rr_new_ptr, rr_ptr, s_ptr, out_ptr, n,
                         SCALAR_ETA: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    # beta = rr_new / rr on the device, 0 after exact convergence (0 / 0).
    rr_new = tl.load(rr_new_ptr)
    rr = tl.load(rr_ptr)
    beta = tl.where(rr != 0, div_rn(rr_new, tl.where(rr != 0, rr, 1.0)), 0.0)
    p = tl.load(p_ptr + offs, mask=mask, other=0.0)
    r = tl.load(r_ptr + offs, mask=mask, other=0.0)
    if SCALAR_ETA:
        s = tl.load(s_ptr)
    else:
        s = tl.load(s_ptr + offs, mask=mask, other=0.0)
    p = p * beta + r
    tl.store(p_ptr + offs, p, mask=mask)
    tl.store(out_ptr + offs, s * p, mask=mask)


def cg_direction(p: torch.Tensor, r: torch.Tensor, rr_new: torch.Tensor, rr: torch.Tensor,
                 sqrt_eta: torch.Tensor) -> torch.Tensor:
    """Triton twin of :func:`fastgame.ops.reference.cg_direction_` (updates p in place)."""
    n = p.numel()
    out = torch.empty_like(p)
    wrap_triton(_cg_direction_kernel)[elementwise_grid(n)](
        p, r, rr_new.to(p.dtype), rr.to(p.dtype), sqrt_eta.to(p.dtype), out, n,
        SCALAR_ETA=sqrt_eta.numel() == 1, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out
