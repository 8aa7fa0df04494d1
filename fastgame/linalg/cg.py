"""The linear solve of a (A/B)CGD step on flat vectors, with the cheap pass schedule, and
the one conjugate-gradient iteration every CG of fastgame runs (:func:`run_cg`).

Solving for player ``a`` (0 = x, the max player; 1 = y, the min player) with the other
player ``b`` and sign ``s`` (-1 for a = x, +1 for a = y), the step (docs/design.md §2) is

    rhs = √η_a (g_a + s D_ab η_b g_b),   A = I + √η_a D_ab η_b D_ba √η_a,   A w = rhs,
    Δa = -s √η_a w,   Δb = s η_b (g_b + D_ba Δa),

and it is computed with 2 + 2k mixed-HVP passes (1 + 2k from a zero start): CG also
tracks u = D_ba(√η_a w), so D_ba Δa = -s u costs no extra pass (docs/design.md §3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence, Union

import torch
from torch import Tensor

from .. import ops
from .cg_drivers import HOST_CHECKED, CGDriver
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
    coupling: Optional[Tensor] = None  # D_ab η_b g_b, the mixed product in the right-hand side


class LinearSystem(Protocol):
    """An SPD system A w = rhs as CG sees it. CG's direction p enters the products as
    ``scale * p`` (√η_a for the CGD system), and each product also returns a vector ``q``
    linear in p that CG accumulates alongside w (u = Σ α q), for a back-substitution."""
    scale: Tensor
    hvp: MixedHVP  # whose passes the products take (counted, or recorded by a graph replay)

    def products(self, p: Tensor, sp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(q, A p, p·A p) for the direction ``p`` with ``sp = scale * p``."""


class Deflation:
    """Hooks that keep CG's iterates A-orthogonal to a subspace (deflated CG, see
    :mod:`fastgame.linalg.recycle`). This base is plain CG: every hook changes nothing."""

    def begin(self, rhs: Tensor, w: Tensor, u: Tensor, r: Tensor) -> None:
        """Before the first iteration: move the start (w, u, r in place) into the subspace's solution."""

    def seen(self, p: Tensor, ap: Tensor, q: Tensor) -> None:
        """Each direction CG takes, with its products (before the iteration changes p)."""

    def residual_(self, r: Tensor, rr: Tensor) -> Tensor:
        """After an update: the residual kept orthogonal to the subspace (in place), and its ‖r‖²."""
        return rr

    def direction_(self, p: Tensor, r: Tensor, sp: Tensor) -> Tensor:
        """The new direction made A-orthogonal to the subspace (in place), and its ``scale * p``."""
        return sp


class CGDSystem:
    """A = I + √η_a D_ab η_b D_ba √η_a of the CGD step for player ``a``, tracking
    q = D_ba(√η_a p) so that u = D_ba(√η_a w) comes with w (two passes a product)."""

    def __init__(self, hvp: MixedHVP, a: int, pa: Preconditioner, pb: Preconditioner, fused: Any = ops) -> None:
        self.hvp, self.a, self.pa, self.pb, self.fused = hvp, a, pa, pb, fused
        self.scale = pa.sqrt_eta

    def products(self, p: Tensor, sp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q = self.hvp(1 - self.a, sp)
        ap, pap = self.fused.cg_matvec(p, self.pa.sqrt_eta, self.hvp(self.a, self.pb.eta * q))
        return q, ap, pap


def solve_cgd(hvp: MixedHVP, solve: int, grads: Sequence[Tensor], pre: Sequence[Preconditioner],
              w0: Optional[Tensor], tol: float, atol: float, max_iter: Optional[int] = None,
              driver: CGDriver = HOST_CHECKED, fused: Any = ops, deflation: Optional[Deflation] = None) -> CGDSolution:
    """Solve for player ``solve`` by conjugate gradients and back-substitute the other.

    ``w0`` is the warm start (None: zero). CG stops when ‖r‖² < tol·‖rhs‖² or ‖r‖² < atol,
    after ``max_iter`` iterations (None: the system size, as the reference), or on a
    non-finite residual (the caller's finiteness check then reports it).

    ``driver`` runs the iterations (:mod:`fastgame.linalg.cg_drivers`, chosen by
    :func:`~fastgame.linalg.cg_drivers.cg_driver`): the test read on the host every iteration
    (the default), every c iterations or never (masked iterations, for CUDA graphs), replayed
    from a CUDA graph captured at the first iteration, or handed to the pieces of a
    piecewise-graphed step. All give the same result; ``iterations`` is a host int where the
    driver counts on the host, else a device tensor counting the effective ones.
    ``fused`` provides the fused vector ops (default: :mod:`fastgame.ops` under the
    process-wide backend; an optimizer passes its own ``ops.dispatch(backend)``).
    ``deflation``: keep CG away from a subspace (:class:`Deflation`; with the host-checked driver).
    """
    a, b = solve, 1 - solve
    s = -1.0 if a == 0 else 1.0
    pa, pb = pre[a], pre[b]
    if w0 is None:
        rhs, w, u, r, coupling = zero_start(hvp, a, grads, pa, pb)
    else:
        w = w0.clone()
        u = hvp(b, pa.sqrt_eta * w)
        h = hvp.batched(a, torch.stack([pb.eta_grad, pb.eta * u]))
        coupling = h[0]
        rhs = torch.add(grads[a], coupling, alpha=s).mul_(pa.sqrt_eta)
        r = rhs - torch.addcmul(w, pa.sqrt_eta, h[1])
    if deflation is not None:
        deflation.begin(rhs, w, u, r)
    rhs_sq = torch.dot(rhs, rhs)
    iterations = run_cg(CGDSystem(hvp, a, pa, pb, fused), w, u, r, stop_threshold(tol, rhs_sq, atol),
                        driver.bound(max_iter, w.numel()), driver, fused, deflation)
    sol = back_substitute(a, grads, pa, pb, w, u, iterations, torch.dot(r, r), rhs_sq)
    sol.coupling = coupling
    return sol


def stop_threshold(tol: float, rhs_sq: Tensor, atol: float) -> Tensor:
    """CG stops once ‖r‖² < max(tol·‖rhs‖², atol); never below the dtype's smallest normal
    number, so that an exact zero residual (a zero right-hand side with atol = 0) stops too."""
    return torch.clamp(tol * rhs_sq, min=max(atol, torch.finfo(rhs_sq.dtype).tiny))


def zero_start(hvp: MixedHVP, a: int, grads: Sequence[Tensor], pa: Preconditioner, pb: Preconditioner
               ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(rhs, w, u, r, D_ab η_b g_b) of CG for player ``a`` started from w = 0 (one HVP pass, for the rhs)."""
    s = -1.0 if a == 0 else 1.0
    coupling = hvp(a, pb.eta_grad)
    rhs = torch.add(grads[a], coupling, alpha=s).mul_(pa.sqrt_eta)
    return rhs, torch.zeros_like(rhs), torch.zeros_like(grads[1 - a]), rhs.clone(), coupling


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


def run_cg(system: LinearSystem, w: Tensor, u: Tensor, r: Tensor, threshold: Tensor, max_iter: int,
           driver: CGDriver = HOST_CHECKED, fused: Any = ops, deflation: Optional[Deflation] = None
           ) -> Union[int, Tensor]:
    """CG iterations on ``system`` from the iterate ``w`` (with its tracked ``u`` and residual
    ``r``, all updated in place) until ‖r‖² < ``threshold``, after ``max_iter`` iterations or
    on a non-finite residual, run by ``driver`` (see :func:`solve_cgd`). Returns the iterations
    taken: a host int or a device tensor, as the driver counts. Every iteration is :func:`_iteration`."""
    p = r.clone()
    sp = system.scale * p
    if deflation is not None:
        sp = deflation.direction_(p, r, sp)
    return driver.run(_Iterates(w, u, r, p, sp, torch.dot(r, r), system, fused, deflation), threshold, max_iter)


@dataclass
class _Iterates:
    """CG's state between iterations: w, its tracked u, the residual r, the direction p,
    ``scale * p`` and ‖r‖², with what an iteration runs on (a driver's
    :class:`~fastgame.linalg.cg_drivers.CGIterations`)."""
    w: Tensor
    u: Tensor
    r: Tensor
    p: Tensor
    sp: Tensor
    rr: Tensor
    system: LinearSystem
    fused: Any
    deflation: Optional[Deflation]

    @property
    def hvp(self) -> MixedHVP:
        return self.system.hvp

    def iterate(self, active: Optional[Tensor] = None, in_place: bool = False) -> Tensor:
        return _iteration(self.system, self, self.fused, self.deflation, active, in_place)


def _iteration(system: LinearSystem, it: _Iterates, fused: Any, deflation: Optional[Deflation],
               active: Optional[Tensor] = None, in_place: bool = False) -> Tensor:
    """The CG iteration: one product, the update of (w, u, r) and the next direction; returns
    the new ‖r‖². ``active`` (a device bool) masks the step to a no-op once converged.
    ``in_place``: write the direction and ‖r‖² into the buffers made before the first
    iteration (a replayed CUDA graph reads and writes the buffers it was captured with)."""
    q, ap, pap = system.products(it.p, it.sp)
    if deflation is not None:
        deflation.seen(it.p, ap, q)
    rr_step = it.rr if active is None else torch.where(active, it.rr, 0.0)
    rr_new = fused.cg_step_(it.w, it.u, it.r, it.p, q, ap, rr_step, pap)
    if deflation is not None:
        rr_new = deflation.residual_(it.r, rr_new)
    sp = fused.cg_direction_(it.p, it.r, rr_new, it.rr, system.scale)
    if deflation is not None:
        sp = deflation.direction_(it.p, it.r, sp)
    if in_place:
        it.sp.copy_(sp)
        it.rr.copy_(rr_new)
    else:  # eager or a whole-step capture: rebinding is enough
        it.sp, it.rr = sp, rr_new
    return rr_new
