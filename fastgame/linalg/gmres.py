"""Restarted GMRES(m) on flat vectors, for the nonsymmetric systems of general-sum games.

Design (the reference, ``CGDs.gmres_torch.GMRES``, is full GMRES with modified Gram–Schmidt,
a Python loop of j dot products and j axpys per step, and a dense (max_iter+1)² Hessenberg,
i.e. (n+1)² when ``max_iter`` is None):

* Memory is O(m·n): one Krylov basis of m + 1 vectors, allocated once per solve and reused
  by every restart cycle.
* Orthogonalisation is classical Gram–Schmidt applied twice (CGS2,
  :func:`fastgame.linalg.arnoldi.arnoldi_step`). It is as stable as modified Gram–Schmidt ("twice
  is enough", Giraud et al. 2005), but each pass is one matrix-vector product with the basis
  (two GEMVs) instead of j dependent dot products and axpys, which on a GPU means 4 kernels
  instead of 2j and on a CPU one read of the basis per pass. It costs one extra pass over
  the basis, which is small next to a Hessian-vector product.
* Each Arnoldi step reads the device once: the new Hessenberg column (j + 3 numbers,
  including ‖A v_j‖ for the breakdown test). The convergence test needs that read anyway,
  so the Givens rotations and the small triangular solve run on the host in float64 Python
  floats: on the device they would be ~10 tiny kernel launches per step plus the same read.
* The residual norm of the least-squares problem is exact in exact arithmetic; it is
  recomputed from ``b - A x`` at every restart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from .arnoldi import arnoldi_step

MatVec = Callable[[Tensor], Union[Tensor, tuple[Tensor, Tensor]]]


@dataclass
class GMRESResult:
    """Outcome of :func:`gmres`.

    Attributes:
        solution: the approximate solution x (a new tensor; ``x0`` is not modified).
        iterations: Arnoldi steps taken, i.e. matrix-vector products with basis vectors
            (the products that form restart residuals ``b - A x`` are not counted).
        residual_norm: ‖b - A x‖ as the Givens recurrence estimates it (exact at restarts).
        converged: whether ``residual_norm`` fell below ``max(tol·‖b‖, atol)``.
        restarts: restart residuals ``b - A x`` formed (one ``matvec`` each) after a cycle
            ended unconverged; the last one may show convergence and start no new cycle.
        tracked: ``T x`` for the auxiliary linear map of a tracking ``matvec`` (see
            :func:`gmres`), else None.
    """
    solution: Tensor
    iterations: int
    residual_norm: float
    converged: bool
    restarts: int = 0
    tracked: Optional[Tensor] = None


def gmres(matvec: MatVec, b: Tensor, x0: Optional[Tensor] = None, tol: float = 1e-5, atol: float = 1e-6,
          restart: int = 20, max_iter: Optional[int] = None, min_iter: int = 0,
          track_like: Optional[Tensor] = None, history: Optional[list[float]] = None) -> GMRESResult:
    """Solve ``A x = b`` for a linear operator ``matvec`` by restarted GMRES(m).

    Args:
        matvec: ``v -> A v`` on 1-D tensors like ``b``. With ``track_like`` it returns the pair
            ``(A v, T v)`` for a second linear map T that GMRES applies to its solution for
            free (``result.tracked = T x``), e.g. an intermediate product the operator computes
            anyway and the caller needs for x.
        b: right-hand side, a 1-D tensor (any float dtype, any device).
        x0: warm start (None: zero). Costs one extra ``matvec`` for the residual.
        tol, atol: stop when ‖r‖ < tol·‖b‖ or ‖r‖ < atol (norms, not squared, as CGDs' GMRES).
        restart: m, the Krylov basis size per cycle; memory is (m + 1)·n elements of b.
        max_iter: cap on the Arnoldi steps in all cycles (None: ``b.numel()``, as CGDs).
        min_iter: Arnoldi steps taken even if the start already meets the tolerance (CGDs'
            GMRES always takes one). The cap ``max_iter`` still wins.
        track_like: a tensor shaped like ``T v`` (turns tracking on; ``tracked`` starts at 0).
        history: a list to append the residual norms to: the start's, then the estimate after
            each Arnoldi step (host floats the solve reads anyway: no extra device read).

    Host reads: ‖r‖ once per cycle and one Hessenberg column per Arnoldi step.
    A non-finite residual stops the solve (the caller's finiteness check reports it).
    """
    if not isinstance(b, Tensor) or b.dim() != 1:
        raise ValueError(f"gmres needs a flat (1-D) right-hand side, got "
                         f"{tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__}")
    if not b.is_floating_point():
        raise ValueError(f"gmres needs a floating-point right-hand side, got {b.dtype}")
    if x0 is not None and (x0.shape != b.shape or x0.dtype != b.dtype or x0.device != b.device):
        raise ValueError(f"x0 must match b (shape {tuple(b.shape)}, {b.dtype}, {b.device}); got "
                         f"shape {tuple(x0.shape)}, {x0.dtype}, {x0.device}")
    if not (isinstance(restart, int) and restart >= 1):
        raise ValueError(f"invalid restart: {restart!r} (must be an int >= 1)")
    if max_iter is not None and not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"invalid max_iter: {max_iter!r} (must be None or an int >= 0)")
    if not (isinstance(min_iter, int) and min_iter >= 0):
        raise ValueError(f"invalid min_iter: {min_iter!r} (must be an int >= 0)")
    for name, v in (("tol", tol), ("atol", atol)):
        if not (isinstance(v, (int, float)) and v >= 0):  # inf is allowed: one step, or none
            raise ValueError(f"invalid {name}: {v!r} (must be a number >= 0)")
    n = b.numel()
    max_iter = n if max_iter is None else max_iter
    threshold = max(tol * float(b.norm()), atol)
    track = track_like is not None
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    tracked = torch.zeros_like(track_like) if track else None
    m = min(restart, max(n, 1), max(max_iter, 1))
    basis = torch.empty(m + 1, n, dtype=b.dtype, device=b.device)
    images = torch.empty(m, track_like.numel(), dtype=track_like.dtype, device=track_like.device) if track else None
    total, restarts = 0, 0
    while True:
        if x0 is None and total == 0:
            r = b.clone()
        else:  # the true residual: at a restart it also resets rounding drift of the estimate
            restarts += int(total > 0)
            ax = matvec(x)
            if track:
                ax, tx = ax
                if total == 0:
                    tracked = tx.clone()  # T x0
            r = b - ax
        beta = float(r.norm())
        if history is not None and total == 0:
            history.append(beta)
        done = beta < threshold and total >= min_iter
        if not math.isfinite(beta) or beta == 0.0 or done or total >= max_iter:
            return GMRESResult(x, total, beta, beta < threshold or beta == 0.0, restarts, tracked)
        basis[0] = r.div_(beta)
        steps, residual, exact = _arnoldi_cycle(matvec, basis, images, beta, threshold,
                                                min(m, max_iter - total), max(min_iter - total, 0), x, tracked,
                                                history)
        total += steps
        if exact or not math.isfinite(residual) or residual < threshold or total >= max_iter:
            return GMRESResult(x, total, residual, exact or residual < threshold, restarts, tracked)


def _arnoldi_cycle(matvec: MatVec, basis: Tensor, images: Optional[Tensor], beta: float, threshold: float,
                   steps: int, min_steps: int, x: Tensor, tracked: Optional[Tensor],
                   history: Optional[list[float]] = None) -> tuple[int, float, bool]:
    """One GMRES cycle from ``basis[0]``: up to ``steps`` Arnoldi steps, then ``x += V y``
    (and ``tracked += (T V) y``). Returns the steps taken, the residual norm estimate and
    whether the solution is exact up to rounding (an invariant Krylov space, R nonsingular)."""
    eps = torch.finfo(basis.dtype).eps
    cols: list[list[float]] = []  # rotated Hessenberg columns: cols[j][i] = R[i, j]
    cs: list[float] = []
    sn: list[float] = []
    g = [beta]  # rotated right-hand side beta e1; |g[j+1]| is the residual norm after step j
    residual = beta
    for j in range(steps):
        w = matvec(basis[j])
        if images is not None:
            w, images[j] = w
        w_norm = w.norm()
        h, w = arnoldi_step(basis, j, w)
        norm = w.norm()
        col = torch.cat([h, norm.reshape(1), w_norm.reshape(1)]).tolist()  # the one host read
        *col, a_norm = col
        # Breakdown: A v_j lies (to rounding) in the Krylov space, so the space is invariant
        # and the least-squares solution is exact; a further basis vector would be noise.
        breakdown = not (col[j + 1] > eps * a_norm)
        if not breakdown and j + 1 < basis.shape[0]:
            basis[j + 1] = w / norm
        for i in range(j):  # earlier rotations, then a new one that zeroes col[j + 1]
            col[i], col[i + 1] = cs[i] * col[i] + sn[i] * col[i + 1], -sn[i] * col[i] + cs[i] * col[i + 1]
        rho = math.hypot(col[j], col[j + 1])
        if not math.isfinite(rho):  # a non-finite product: give up, the solution shows it
            cols.append([float("nan")] * (j + 1))
            residual = float("nan")
            break
        c, s = (col[j] / rho, col[j + 1] / rho) if rho > 0 else (1.0, 0.0)
        cs.append(c)
        sn.append(s)
        col[j] = rho
        cols.append(col[: j + 1])
        g.append(-s * g[j])
        g[j] = c * g[j]
        residual = abs(g[j + 1])
        if history is not None:
            history.append(residual)
        if breakdown or (residual < threshold and j + 1 >= min_steps):
            break
    k = len(cols)
    # Back substitution R y = g[:k] (R upper triangular k×k, on the host).
    y = [0.0] * k
    for i in range(k - 1, -1, -1):
        acc = g[i] - sum(cols[l][i] * y[l] for l in range(i + 1, k))
        y[i] = acc / cols[i][i] if cols[i][i] != 0 else 0.0
    coef = torch.tensor(y, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
    x.add_(coef @ basis[:k])
    if tracked is not None:
        tracked.add_(coef.to(tracked.dtype) @ images[:k])
    exact = breakdown and math.isfinite(residual) and all(c[i] != 0 for i, c in enumerate(cols))
    return k, residual, exact
