"""One CG update in one pass: w += alpha p, u += alpha q, r -= alpha A p, and r . r."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from ._utils import BLOCK, NUM_WARPS, div_rn, finish_sum, reduction_grid


@triton.jit
def _cg_step_kernel(w_ptr, u_ptr, r_ptr, p_ptr, q_ptr, ap_ptr, rr_ptr, pap_ptr, partials_ptr, n, m,
                    BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    # alpha = rr / pAp on the device, 0 after exact convergence (0 / 0).
    rr = tl.load(rr_ptr)
    pap = tl.load(pap_ptr)
    alpha = tl.where(pap != 0, div_rn(rr, tl.where(pap != 0, pap, 1.0)), 0.0)
    acc = tl.zeros([BLOCK], dtype=tl.float64)
    # w, r, p, A p have this player's size n; u, q the other player's m: one loop covers both.
    for start in range(pid * BLOCK, tl.maximum(n, m), tl.num_programs(0) * BLOCK):
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        mn = offs < n
        w = tl.load(w_ptr + offs, mask=mn, other=0.0)
        p = tl.load(p_ptr + offs, mask=mn, other=0.0)
        r = tl.load(r_ptr + offs, mask=mn, other=0.0)
        ap = tl.load(ap_ptr + offs, mask=mn, other=0.0)
        r = r - alpha * ap
        tl.store(w_ptr + offs, w + alpha * p, mask=mn)
        tl.store(r_ptr + offs, r, mask=mn)
        acc += r.to(tl.float64) * r.to(tl.float64)
        mm = offs < m
        u = tl.load(u_ptr + offs, mask=mm, other=0.0)
        q = tl.load(q_ptr + offs, mask=mm, other=0.0)
        tl.store(u_ptr + offs, u + alpha * q, mask=mm)
    tl.store(partials_ptr + pid, tl.sum(acc, axis=0))


def cg_step(w: torch.Tensor, u: torch.Tensor, r: torch.Tensor, p: torch.Tensor, q: torch.Tensor,
            ap: torch.Tensor, rr: torch.Tensor, pap: torch.Tensor) -> torch.Tensor:
    """Triton twin of :func:`fastgame.ops.reference.cg_step_` (updates w, u, r in place)."""
    n, m = w.numel(), u.numel()
    rr_new = r.new_empty(())
    grid = reduction_grid(max(n, m), w.device)
    partials = torch.empty(grid[0], dtype=torch.float64, device=w.device)
    wrap_triton(_cg_step_kernel)[grid](w, u, r, p, q, ap, rr.to(w.dtype), pap.to(w.dtype), partials, n, m,
                                       BLOCK=BLOCK, num_warps=NUM_WARPS)
    finish_sum(partials, rr_new)
    return rr_new
