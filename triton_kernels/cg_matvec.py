"""Finish the CG operator product, A p = p + sqrt_eta * t, and p . A p, in one pass."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from ._utils import BLOCK, NUM_WARPS, finish_sum, reduction_grid


@triton.jit
def _cg_matvec_kernel(p_ptr, s_ptr, t_ptr, ap_ptr, partials_ptr, n,
                      SCALAR_ETA: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.float64)
    if SCALAR_ETA:
        s = tl.load(s_ptr)
    for start in range(pid * BLOCK, n, tl.num_programs(0) * BLOCK):  # persistent: few partials
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        mask = offs < n
        p = tl.load(p_ptr + offs, mask=mask, other=0.0)
        t = tl.load(t_ptr + offs, mask=mask, other=0.0)
        if not SCALAR_ETA:
            s = tl.load(s_ptr + offs, mask=mask, other=0.0)
        ap = p + s * t
        tl.store(ap_ptr + offs, ap, mask=mask)
        acc += p.to(tl.float64) * ap.to(tl.float64)
    tl.store(partials_ptr + pid, tl.sum(acc, axis=0))


def cg_matvec(p: torch.Tensor, sqrt_eta: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of :func:`fastgame.ops.reference.cg_matvec`."""
    n = p.numel()
    ap = torch.empty_like(p)
    pap = p.new_empty(())
    grid = reduction_grid(n, p.device)
    partials = torch.empty(grid[0], dtype=torch.float64, device=p.device)
    scalar = sqrt_eta.numel() == 1
    wrap_triton(_cg_matvec_kernel)[grid](p, sqrt_eta.to(p.dtype), t, ap, partials, n,
                                         SCALAR_ETA=scalar, BLOCK=BLOCK, num_warps=NUM_WARPS)
    finish_sum(partials, pap)
    return ap, pap
