"""ACGD's RMSProp step sizes in one pass: square_avg_new, eta, sqrt(eta), eta * grad."""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from ._utils import BLOCK, NUM_WARPS, div_rn, elementwise_grid, sqrt_rn


@triton.jit
def _precondition_kernel(g_ptr, v_ptr, vn_ptr, eta_ptr, sqrt_eta_ptr, eta_g_ptr, lr_ptr, step_ptr, n,
                         BETA: tl.constexpr, LOG2_BETA: tl.constexpr, EPS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0)
    dt = g.dtype
    # Bias correction from device scalars in float64 (no host value: graph-safe), then
    # rounded to the vectors' dtype as the reference does. beta**step = 2**(step log2 beta).
    lr = tl.load(lr_ptr).to(tl.float64)
    step = tl.load(step_ptr).to(tl.float64)
    scale = (lr * tl.sqrt(1.0 - tl.exp2(step * tl.full([], LOG2_BETA, tl.float64)))).to(dt)
    # Constants through tl.full so a float64 kernel gets them unrounded.
    a = v * tl.full([], BETA, dt) + tl.full([], 1.0 - BETA, dt) * g * g
    eta = div_rn(scale, sqrt_rn(a) + tl.full([], EPS, dt))
    tl.store(vn_ptr + offs, a, mask=mask)
    tl.store(eta_ptr + offs, eta, mask=mask)
    tl.store(sqrt_eta_ptr + offs, sqrt_rn(eta), mask=mask)
    tl.store(eta_g_ptr + offs, eta * g, mask=mask)


def precondition(grad: torch.Tensor, square_avg: torch.Tensor, lr: torch.Tensor, step: torch.Tensor,
                 beta: float, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton twin of :func:`fastgame.ops.reference.precondition`."""
    outs = [torch.empty_like(grad) for _ in range(4)]
    n = grad.numel()
    log2_beta = math.log2(beta) if beta > 0 else -math.inf
    wrap_triton(_precondition_kernel)[elementwise_grid(n)](
        grad, square_avg, *outs, lr.to(torch.float64), step.to(torch.float64), n,
        BETA=beta, LOG2_BETA=log2_beta, EPS=eps, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return tuple(outs)
