"""The linear solve of a (A/B)CGD step on flat vectors, with the cheap pass schedule.

Solving for player ``a`` (0 = x, the max player; 1 = y, the min player) with the other
player ``b`` and sign ``s`` (-1 for a = x, +1 for a = y), the step (docs/design.md §2) is

    rhs = √η_a (g_a + s D_ab η_b g_b),   A = I + √η_a D_ab η_b D_ba √η_a,   A w = rhs,
    Δa = -s √η_a w,   Δb = s η_b (g_b + D_ba Δa),

and it is computed with 2 + 2k mixed-HVP passes (1 + 2k from a zero start): CG also
tracks u = D_ba(√η_a w), so D_ba Δa = -s u costs no extra pass (docs/design.md §3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import ops
from .captured import IterationReplay
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
    iterations: Union[int, Tensor]     # host int when counted on the host, else a device tensor
    residual_sq: Tensor                # ‖r‖² when CG stopped
    rhs_sq: Tensor                     # ‖rhs‖²


def solve_cgd(hvp: MixedHVP, solve: int, grads: Sequence[Tensor], pre: Sequence[Preconditioner],
              w0: Optional[Tensor], tol: float, atol: float, max_iter: Optional[int] = None,
              check_every: Optional[int] = 1, fused: Any = ops, replay: Optional[IterationReplay] = None) -> CGDSolution:
    """Solve for player ``solve`` by conjugate gradients and back-substitute the other.

    ``w0`` is the warm start (None: zero). CG stops when ‖r‖² < tol·‖rhs‖² or ‖r‖² < atol,
    after ``max_iter`` iterations (None: the system size, as the reference), or on a
    non-finite residual (the caller's finiteness check then reports it).

    ``check_every`` sets how often the convergence test reads the device: 1 (every
    iteration), c > 1 (every c iterations; iterations after convergence are no-ops), or
    None (never: exactly ``max_iter`` masked iterations, for CUDA graphs). All give the
    same result; ``iterations`` is then a device tensor counting the effective ones.
    ``fused`` provides the fused vector ops (default: :mod:`fastgame.ops` under the
    process-wide backend; an optimizer passes its own ``ops.dispatch(backend)``).
    ``replay`` (CUDA, with host checks): run the iterations from a CUDA graph captured at the
    first one (:mod:`fastgame.linalg.captured`); the same iterates, one launch per iteration.
    """
    if replay is not None and check_every is None:
        raise ValueError("graph-replayed CG iterations read the convergence test on the host: give check_every")
    a, b = solve, 1 - solve
    s = -1.0 if a == 0 else 1.0
    pa, pb = pre[a], pre[b]
    if w0 is None:
        rhs, w, u, r = zero_start(hvp, a, grads, pa, pb)
    else:
        w = w0.clone()
        u = hvp(b, pa.sqrt_eta * w)
        h = hvp.batched(a, torch.stack([pb.eta_grad, pb.eta * u]))
        rhs = torch.add(grads[a], h[0], alpha=s).mul_(pa.sqrt_eta)
        r = rhs - torch.addcmul(w, pa.sqrt_eta, h[1])
    rr = torch.dot(r, r)
    rhs_sq = torch.dot(rhs, rhs)
    threshold = stop_threshold(tol, rhs_sq, atol)
    if max_iter is None:
        if check_every is None:
            raise ValueError("a solve without host checks (check_every=None) needs max_iter")
        max_iter = w.numel()
    if replay is not None:
        iterations = int(_cg_masked(hvp, a, b, pa, pb, w, u, r, rr, threshold, max_iter, check_every, fused, replay))
    elif check_every == 1:
        iterations = _cg_checked(hvp, a, b, pa, pb, w, u, r, rr, threshold, max_iter, fused)
    else:
        iterations = _cg_masked(hvp, a, b, pa, pb, w, u, r, rr, threshold, max_iter, check_every, fused)
    return back_substitute(a, grads, pa, pb, w, u, iterations, torch.dot(r, r), rhs_sq)


def stop_threshold(tol: float, rhs_sq: Tensor, atol: float) -> Tensor:
    """CG stops once ‖r‖² < max(tol·‖rhs‖², atol); never below the dtype's smallest normal
    number, so that an exact zero residual (a zero right-hand side with atol = 0) stops too."""
    return torch.clamp(tol * rhs_sq, min=max(atol, torch.finfo(rhs_sq.dtype).tiny))


def zero_start(hvp: MixedHVP, a: int, grads: Sequence[Tensor], pa: Preconditioner, pb: Preconditioner
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(rhs, w, u, r) of CG for player ``a`` started from w = 0 (one HVP pass, for the rhs)."""
    s = -1.0 if a == 0 else 1.0
    rhs = torch.add(grads[a], hvp(a, pb.eta_grad), alpha=s).mul_(pa.sqrt_eta)
    return rhs, torch.zeros_like(rhs), torch.zeros_like(grads[1 - a]), rhs.clone()


def back_substitute(a: int, grads: Sequence[Tensor], pa: Preconditioner, pb: Preconditioner, w: Tensor, u: Tensor,
                    iterations: Union[int, Tensor], rr: Tensor, rhs_sq: Tensor) -> CGDSolution:
    """Both players' updates and next warm starts from CG's solution ``w`` for player ``a`` and
    ``u = D_ba(√η_a w)``, which CG tracks so that the other player's update needs no pass."""
    b = 1 - a
    s = -1.0 if a == 0 else 1.0
    v = torch.add(grads[b], u, alpha=-s)  # g_b + D_ba Δa
    delta: list = [None, None]
    warm: list = [None, None]
    delta[a] = (-s) * pa.sqrt_eta * w
    delta[b] = s * pb.eta * v
    warm[a] = w
    warm[b] = pb.sqrt_eta * v
    return CGDSolution(tuple(delta), tuple(warm), iterations, rr, rhs_sq)


def _cg_checked(hvp, a, b, pa, pb, w, u, r, rr, threshold, max_iter, ops) -> int:
    """CG with the convergence test read on the host every iteration (plain CG)."""
    iterations = 0
    if not (bool(rr >= threshold) and max_iter > 0):  # also stops on a non-finite residual
        return 0
    p = r.clone()
    sp = pa.sqrt_eta * p
    while True:
        q = hvp(b, sp)
        ap, pap = ops.cg_matvec(p, pa.sqrt_eta, hvp(a, pb.eta * q))
        rr_new = ops.cg_step_(w, u, r, p, q, ap, rr, pap)
        iterations += 1
        if iterations >= max_iter or not bool(rr_new >= threshold):
            return iterations
        sp = ops.cg_direction_(p, r, rr_new, rr, pa.sqrt_eta)
        rr = rr_new


def _cg_masked(hvp, a, b, pa, pb, w, u, r, rr, threshold, max_iter, check_every, ops,
               replay: Optional[IterationReplay] = None) -> Tensor:
    """CG whose iterations after convergence are no-ops (alpha masked to 0), reading the
    device only every ``check_every`` iterations (never if None). Same iterates as plain CG.
    Each iteration works in place on buffers made before the first, so that ``replay`` can
    run it from a CUDA graph."""
    active = rr >= threshold
    iterations = torch.zeros((), dtype=torch.int64, device=r.device)
    p = r.clone()
    sp = pa.sqrt_eta * p
    rr = rr.clone()

    def iteration() -> None:
        nonlocal sp, rr
        q = hvp(b, sp)
        ap, pap = ops.cg_matvec(p, pa.sqrt_eta, hvp(a, pb.eta * q))
        rr_new = ops.cg_step_(w, u, r, p, q, ap, torch.where(active, rr, 0.0), pap)
        iterations.add_(active)
        active.logical_and_(rr_new >= threshold)
        if replay is None:  # eager or whole-step capture: rebinding is enough
            sp, rr = ops.cg_direction_(p, r, rr_new, rr, pa.sqrt_eta), rr_new
        else:  # a replayed graph reads and writes the buffers it was captured with
            sp.copy_(ops.cg_direction_(p, r, rr_new, rr, pa.sqrt_eta))
            rr.copy_(rr_new)

    for it in range(max_iter):
        if check_every is not None and it % check_every == 0 and not bool(active):
            break
        if replay is None:
            iteration()
        else:
            replay.run(iteration, hvp)
    return iterations
