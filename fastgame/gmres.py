"""Restarted GMRES(m) on flat vectors, for the nonsymmetric systems of general-sum games.

Memory is O(m·n): one Krylov basis of m + 1 vectors, reused across restarts. The Arnoldi
step orthogonalises with classical Gram–Schmidt applied twice (CGS2: as stable as
modified Gram–Schmidt, but two matrix-vector products instead of j dot products), so each
inner iteration reads the device once, for the new Hessenberg column; the small
least-squares problem (Givens rotations, triangular solve) runs on the host in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor


@dataclass
class GMRESResult:
    solution: Tensor
    iterations: int       # matrix-vector products in Arnoldi steps (restart residuals not counted)
    residual_norm: float  # ‖b − A x‖ estimated by the Givens recurrence (exact at restarts)
    converged: bool


def gmres(matvec: Callable[[Tensor], Tensor], b: Tensor, x0: Optional[Tensor] = None, tol: float = 1e-5,
          atol: float = 1e-6, restart: int = 20, max_iter: Optional[int] = None) -> GMRESResult:
    """Solve ``A x = b`` for a linear operator ``matvec`` by restarted GMRES.

    Stops when ‖r‖ < tol·‖b‖ or ‖r‖ < atol (norms, not squared, as in CGDs' GMRES), or after
    ``max_iter`` Arnoldi steps in all (None: the system size). ``x0`` is a warm start.
    """
    if b.dim() != 1:
        raise ValueError(f"gmres needs a flat right-hand side, got shape {tuple(b.shape)}")
    if restart < 1:
        raise ValueError(f"restart must be >= 1, got {restart}")
    n = b.numel()
    max_iter = n if max_iter is None else max_iter
    threshold = max(tol * float(b.norm()), atol)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    m = min(restart, max(n, 1))
    basis = torch.empty(m + 1, n, dtype=b.dtype, device=b.device)
    total = 0
    while True:
        r = b - matvec(x) if x0 is not None or total > 0 else b.clone()
        beta = float(r.norm())
        if not math.isfinite(beta) or beta < threshold or beta == 0.0 or total >= max_iter:
            return GMRESResult(x, total, beta, beta < threshold or beta == 0.0)
        basis[0] = r / beta
        steps, residual = _arnoldi_cycle(matvec, basis, beta, threshold, min(m, max_iter - total), x)
        total += steps
        if not math.isfinite(residual) or residual < threshold or total >= max_iter:
            return GMRESResult(x, total, residual, residual < threshold)


def _arnoldi_cycle(matvec, basis: Tensor, beta: float, threshold: float, steps: int, x: Tensor) -> tuple[int, float]:
    """One GMRES cycle from ``basis[0]``: up to ``steps`` Arnoldi steps, then ``x += V y``.
    Returns the steps taken and the residual norm estimate."""
    hess = torch.zeros(steps + 1, steps, dtype=torch.float64)
    cs, sn = torch.zeros(steps, dtype=torch.float64), torch.zeros(steps, dtype=torch.float64)
    g = torch.zeros(steps + 1, dtype=torch.float64)
    g[0] = beta
    residual, j = beta, 0
    for j in range(steps):
        w = matvec(basis[j])
        v = basis[: j + 1]
        h = v @ w
        w = w - h @ v
        h2 = v @ w  # second Gram-Schmidt pass: orthogonality to rounding
        w = w - h2 @ v
        norm = w.norm()
        column = torch.cat([h + h2, norm.reshape(1)]).to(torch.float64).cpu()  # the one host read
        hess[: j + 2, j] = column
        happy = column[j + 1].item() <= 1e-14 * max(1.0, abs(column[: j + 1]).max().item())
        if not happy:
            basis[j + 1] = w / norm
        for i in range(j):  # earlier rotations, then a new one zeroing hess[j+1, j]
            a, c = hess[i, j].item(), hess[i + 1, j].item()
            hess[i, j], hess[i + 1, j] = cs[i] * a + sn[i] * c, -sn[i] * a + cs[i] * c
        a, c = hess[j, j].item(), hess[j + 1, j].item()
        rho = math.hypot(a, c)
        cs[j], sn[j] = (a / rho, c / rho) if rho > 0 else (1.0, 0.0)
        hess[j, j], hess[j + 1, j] = rho, 0.0
        g[j + 1] = -sn[j] * g[j]
        g[j] = cs[j] * g[j]
        residual = abs(g[j + 1].item())
        if residual < threshold or happy or not math.isfinite(residual):
            break
    k = j + 1
    y = torch.linalg.solve_triangular(hess[:k, :k], g[:k].unsqueeze(1), upper=True).squeeze(1)
    x.add_(y.to(device=x.device, dtype=x.dtype) @ basis[:k])
    return k, residual
