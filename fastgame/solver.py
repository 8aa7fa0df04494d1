"""The linear solve of a (A/B)CGD step on flat vectors, with the cheap pass schedule.

Solving for player ``a`` (0 = x, the max player; 1 = y, the min player) with the other
player ``b`` and sign ``s`` (-1 for a = x, +1 for a = y), the step of DESIGN.md §2 is

    rhs = √η_a (g_a + s D_ab η_b g_b),   A = I + √η_a D_ab η_b D_ba √η_a,   A w = rhs,
    Δa = -s √η_a w,   Δb = s η_b (g_b + D_ba Δa),

and it is computed with 2 + 2k mixed-HVP passes (1 + 2k from a zero start): CG also
tracks u = D_ba(√η_a w), so D_ba Δa = -s u costs no extra pass (DESIGN.md §3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from . import ops
from .hvp import MixedHVP


@dataclass
class Preconditioner:
    """Step sizes of one player: ``eta`` (vector or 0-dim), ``sqrt_eta`` and ``eta * grad``."""
    eta: Tensor
    sqrt_eta: Tensor
    eta_grad: Tensor


@dataclass
class CGDSolution:
    """Result of one solve: the parameter updates, the warm starts to keep and CG's record."""
    delta: tuple[Tensor, Tensor]       # (Δx, Δy), added to the parameters
    warm_start: tuple[Tensor, Tensor]  # next start of CG for x and y, in w-variables
    iterations: int
    residual_sq: Tensor                # ‖r‖² when CG stopped
    rhs_sq: Tensor                     # ‖rhs‖²


def solve_cgd(hvp: MixedHVP, solve: int, grads: Sequence[Tensor], pre: Sequence[Preconditioner],
              w0: Optional[Tensor], tol: float, atol: float, max_iter: Optional[int] = None) -> CGDSolution:
    """Solve for player ``solve`` by conjugate gradients and back-substitute the other.

    ``w0`` is the warm start (None: zero). CG stops when ‖r‖² < tol·‖rhs‖² or ‖r‖² < atol,
    after ``max_iter`` iterations (None: the system size, as the reference), or at once on
    a non-finite residual (the caller's finiteness check then reports it).
    """
    a, b = solve, 1 - solve
    s = -1.0 if a == 0 else 1.0
    pa, pb = pre[a], pre[b]
    if w0 is None:
        rhs = torch.add(grads[a], hvp(a, pb.eta_grad), alpha=s).mul_(pa.sqrt_eta)
        w = torch.zeros_like(rhs)
        u = torch.zeros_like(grads[b])
        r = rhs.clone()
    else:
        w = w0.clone()
        u = hvp(b, pa.sqrt_eta * w)
        h = hvp.batched(a, torch.stack([pb.eta_grad, pb.eta * u]))
        rhs = torch.add(grads[a], h[0], alpha=s).mul_(pa.sqrt_eta)
        r = rhs - torch.addcmul(w, pa.sqrt_eta, h[1])
    rr = torch.dot(r, r)
    rhs_sq = torch.dot(rhs, rhs)
    threshold = torch.clamp(tol * rhs_sq, min=atol)
    max_iter = w.numel() if max_iter is None else max_iter

    # The one host read per iteration: "keep going" is false once converged or non-finite.
    iterations = 0
    if bool(rr >= threshold) and max_iter > 0:
        p = r.clone()
        sp = pa.sqrt_eta * p
        while True:
            q = hvp(b, sp)
            ap, pap = ops.cg_matvec(p, pa.sqrt_eta, hvp(a, pb.eta * q))
            rr_new = ops.cg_step_(w, u, r, p, q, ap, rr, pap)
            iterations += 1
            if iterations >= max_iter or not bool(rr_new >= threshold):
                rr = rr_new
                break
            sp = ops.cg_direction_(p, r, rr_new, rr, pa.sqrt_eta)
            rr = rr_new

    v = torch.add(grads[b], u, alpha=-s)  # g_b + D_ba Δa
    delta = [None, None]
    warm = [None, None]
    delta[a] = (-s) * pa.sqrt_eta * w
    delta[b] = s * pb.eta * v
    warm[a] = w
    warm[b] = pb.sqrt_eta * v
    return CGDSolution(tuple(delta), tuple(warm), iterations, rr, rhs_sq)
