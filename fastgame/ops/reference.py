"""Pure-torch twins of the fused vector ops.

These define what every backend (C++, CUDA, Triton) must compute; they are the fallback
where no kernel applies and the reference the kernel tests compare against. Scalars that
the CG recurrences produce (alpha, beta, the dot products) stay 0-dim device tensors, so
no op here forces a host sync. ``sqrt_eta`` may be a 0-dim tensor (a scalar learning rate,
as in BCGD) or a vector shaped like the other operands.

Each fused op is declared here, once: its twin, with the torch schema and the fake (meta) kernel
of the compiled and Triton ops above it (:func:`~fastgame.ops.schemas.declare`); the op list
(:data:`fastgame.ops.interface.SCHEMAS`) follows this file's order.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .schemas import declare


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    # After exact convergence both are 0: 0/0 must give 0, not NaN (CG would poison itself).
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(num))


def _precondition_fake(grad, square_avg, lr, step, beta, eps):
    return tuple(torch.empty_like(grad) for _ in range(4))


@declare("precondition(Tensor grad, Tensor square_avg, Tensor lr, Tensor step, float beta, float eps) "
         "-> (Tensor, Tensor, Tensor, Tensor)", _precondition_fake)
def precondition(grad: Tensor, square_avg: Tensor, lr: Tensor, step: Tensor,
                 beta: float, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """RMSProp step sizes of ACGD (no momentum, eps outside the bias correction).

    Returns ``(square_avg_new, eta, sqrt_eta, eta * grad)`` with
    ``square_avg_new = beta * square_avg + (1 - beta) * grad**2`` and
    ``eta = lr * sqrt(1 - beta**step) / (sqrt(square_avg_new) + eps)``.
    ``lr`` and ``step`` are 0-dim tensors (step counted from 1), so the op can be graphed.
    ``square_avg`` is not modified; the caller commits ``square_avg_new`` once the step succeeds.
    """
    square_avg_new = square_avg.mul(beta).addcmul_(grad, grad, value=1 - beta)
    scale = (lr.double() * torch.sqrt(1 - beta ** step.double())).to(grad.dtype)
    eta = scale / square_avg_new.sqrt().add_(eps)
    return square_avg_new, eta, eta.sqrt(), eta * grad


def _cg_matvec_fake(p, sqrt_eta, t):
    return torch.empty_like(p), p.new_empty(())


@declare("cg_matvec(Tensor p, Tensor sqrt_eta, Tensor t) -> (Tensor, Tensor)", _cg_matvec_fake)
def cg_matvec(p: Tensor, sqrt_eta: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Finish ``A p = p + sqrt_eta * t`` (t the two mixed HVPs) and return ``(A p, p . A p)``."""
    ap = torch.addcmul(p, sqrt_eta, t)
    return ap, torch.dot(p, ap)


def _cg_step_fake(w, u, r, p, q, ap, rr, pap):
    return r.new_empty(())


@declare("cg_step(Tensor(a!) w, Tensor(b!) u, Tensor(c!) r, Tensor p, Tensor q, Tensor ap, Tensor rr, "
         "Tensor pap) -> Tensor", _cg_step_fake)
def cg_step_(w: Tensor, u: Tensor, r: Tensor, p: Tensor, q: Tensor, ap: Tensor,
             rr: Tensor, pap: Tensor) -> Tensor:
    """One CG update in place: ``alpha = rr / pAp`` (0 when pAp is 0),
    ``w += alpha p``, ``u += alpha q``, ``r -= alpha A p``; returns the new ``r . r``."""
    alpha = _safe_div(rr, pap)
    w.add_(alpha * p)
    u.add_(alpha * q)
    r.sub_(alpha * ap)
    return torch.dot(r, r)


def _cg_direction_fake(p, r, rr_new, rr, sqrt_eta):
    return torch.empty_like(p)


@declare("cg_direction(Tensor(a!) p, Tensor r, Tensor rr_new, Tensor rr, Tensor sqrt_eta) -> Tensor",
         _cg_direction_fake)
def cg_direction_(p: Tensor, r: Tensor, rr_new: Tensor, rr: Tensor, sqrt_eta: Tensor) -> Tensor:
    """New search direction in place, ``p = r + beta p`` with ``beta = rr_new / rr``
    (0 when rr is 0); returns ``sqrt_eta * p``, the vector the next HVP takes."""
    beta = _safe_div(rr_new, rr)
    p.mul_(beta).add_(r)
    return sqrt_eta * p
