"""CG for the CGD system from a zero start, deflated by Ritz vectors recycled from the
previous step's solve (deflated CG: Saad, Yeung, Erhel and Guyomarc'h, "A deflated version
of the conjugate gradient algorithm", SIAM J. Sci. Comput. 2000).

Why: at larger learning rates the matrix A = I + √η_a D_ab η_b D_ba √η_a has a few large
outlying eigenvalues, and CG spends iterations on them; a minibatch changes the right-hand
side by about its own size, so a warm start does not help, but the outlying eigenvectors
change slowly. Each solve keeps its Krylov directions, extracts Ritz pairs from them
(Rayleigh-Ritz, no extra HVPs: CG computes A p for every direction p), and hands the vectors
whose Ritz values exceed ``threshold`` to the next solve. The next step solves for the other
player, whose matrix I + Kᵀ K (K = √η_a D_ab √η_b, so A = I + K Kᵀ) has the same outlying
eigenvalues with eigenvectors Kᵀ v: that is √η_b times D_ba √η_a v, which CG also computed
for every direction. With no outliers the solve is plain zero-start CG.

Cost: 1 + 2k HVP products for k iterations, plus 2 per deflation vector (one batched pass
each way forms A W).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from .. import ops
from .cg import CGDSolution, Deflation, Preconditioner, solve_cgd
from .hvp import MixedHVP


def _apply_small(m_inv: Tensor, v: Tensor) -> Tensor:
    """(W^T A W)^{-1} v with the inverse formed once per solve (k <= 8, float64), so the
    iterations take no factorisation, and so no host sync for its error check."""
    return (m_inv @ v.to(m_inv.dtype)).to(v.dtype)


class RitzDeflation(Deflation):
    """Deflation of the CGD solve for player ``a`` by the rows of ``vectors`` (k, n_a), which
    also records the directions CG takes, for the Ritz vectors handed to the next solve
    (:meth:`ritz_vectors`). ``products``: the HVP products the deflation takes (2 per row)."""

    def __init__(self, hvp: MixedHVP, a: int, pre: Sequence[Preconditioner], vectors: Optional[Tensor],
                 max_stored: int = 32) -> None:
        self.hvp, self.a, self.pa, self.pb = hvp, a, pre[a], pre[1 - a]
        self.vectors, self.max_stored = vectors, max_stored
        self.W = self.AW = self.QW = self.WAW_inv = None
        self.products = 0
        self.dirs: list[tuple[Tensor, Tensor, Tensor]] = []  # (p, A p, D_ba √η_a p) of each iteration

    def begin(self, rhs: Tensor, w: Tensor, u: Tensor, r: Tensor) -> None:
        """The Galerkin start: the solution's part in span(W)."""
        if self.vectors is None or self.vectors.shape[0] == 0:
            return
        W = _orthonormal_rows(self.vectors.to(rhs.dtype))
        if W is None or W.shape[0] == 0:
            return
        a, b, pa, pb = self.a, 1 - self.a, self.pa, self.pb
        QW = self.hvp.batched(b, pa.sqrt_eta * W)  # D_ba √η_a W, (k, n_b)
        AW = W + pa.sqrt_eta * self.hvp.batched(a, pb.eta * QW)
        self.products = 2 * W.shape[0]
        WAW = W.double() @ AW.double().T
        WAW = (WAW + WAW.T) / 2
        if not bool(torch.isfinite(WAW).all()):  # a non-finite HVP: no solve; the residual carries it
            r.fill_(float("nan"))  # to the caller's check
            return
        self.WAW_inv = torch.linalg.inv(WAW)  # SPD and >= I (W orthonormal, A >= I): well conditioned
        self.W, self.AW, self.QW = W, AW, QW
        c = _apply_small(self.WAW_inv, W @ rhs)
        w.add_(c @ W)
        u.add_(c @ QW)
        r.sub_(c @ AW)

    def seen(self, p: Tensor, ap: Tensor, q: Tensor) -> None:
        self.dirs.append((p.clone(), ap, q))
        if len(self.dirs) > self.max_stored:
            self.dirs.pop(0)

    def residual_(self, r: Tensor, rr: Tensor) -> Tensor:
        if self.W is None:
            return rr
        r.sub_((self.W @ r) @ self.W)  # keep r ⊥ span(W) (exact in exact arithmetic; drifts in float32)
        return torch.dot(r, r)

    def direction_(self, p: Tensor, r: Tensor, sp: Tensor) -> Tensor:
        if self.W is None:
            return sp
        p.sub_(_apply_small(self.WAW_inv, self.AW @ r) @ self.W)  # A-orthogonal to span(W)
        return self.pa.sqrt_eta * p

    @property
    def rows(self) -> int:
        """The deflation vectors used (0: plain CG)."""
        return 0 if self.W is None else self.W.shape[0]

    def ritz_vectors(self, next_solve: int, threshold: float = 10.0, max_keep: int = 8) -> Tensor:
        """The Ritz vectors of span(W, directions) with values above ``threshold`` (at most
        ``max_keep``), as unit rows in the w-variables of ``next_solve``."""
        return _ritz_vectors(self.W, self.AW, self.QW, self.dirs, self.pa, self.pb, self.a, next_solve,
                             threshold, max_keep)


def solve_cgd_recycled(hvp: MixedHVP, solve: int, grads: Sequence[Tensor], pre: Sequence[Preconditioner],
                       deflate: Optional[Tensor], tol: float, atol: float, max_iter: Optional[int] = None,
                       threshold: float = 10.0, max_keep: int = 8, max_stored: int = 32, next_solve: Optional[int] = None,
                       fused: Any = ops) -> tuple[CGDSolution, Tensor, int]:
    """Solve for player ``solve`` from a zero start deflated by the rows of ``deflate`` (k, n_a)
    (None or k = 0: plain CG), and back-substitute the other player, as :func:`solve_cgd`.

    Returns the solution, the deflation vectors for the next solve (rows, in the w-variables
    of player ``next_solve``, default the other player; at most ``max_keep``, with Ritz values
    above ``threshold``; possibly 0 rows) and the HVP products taken. The convergence test is
    read on the host every iteration (this solver is not capturable). ``max_stored`` caps the
    directions kept for the Ritz extraction (the latest ones), bounding memory.
    """
    deflation = RitzDeflation(hvp, solve, pre, deflate, max_stored)
    sol = solve_cgd(hvp, solve, grads, pre, None, tol, atol, max_iter, fused=fused, deflation=deflation)
    keep = deflation.ritz_vectors(1 - solve if next_solve is None else next_solve, threshold, max_keep)
    return sol, keep, 1 + deflation.products + 2 * sol.iterations


def _orthonormal_rows(V: Tensor) -> Optional[Tensor]:
    """An orthonormal basis (rows) of the span of V's rows, without near-dependent directions
    (mapped to the other player, Ritz vectors can be nearly parallel, and a near-singular
    W^T A W would make the deflated iteration unstable)."""
    G = V.double() @ V.double().T
    try:
        lam, U = torch.linalg.eigh(G)
    except torch.linalg.LinAlgError:
        return None
    ok = lam > lam.max().clamp_min(0) * 1e-6
    if not bool(ok.any()):
        return None
    return ((U[:, ok] / lam[ok].sqrt()).T.to(V.dtype)) @ V


def _ritz_vectors(W: Optional[Tensor], AW: Optional[Tensor], QW: Optional[Tensor],
                  dirs: list[tuple[Tensor, Tensor, Tensor]], pa: Preconditioner, pb: Preconditioner, a: int,
                  next_solve: int, threshold: float, max_keep: int) -> Tensor:
    """Rayleigh-Ritz on span(W, directions): the Ritz vectors with values > threshold, as
    unit rows in the w-variables of ``next_solve`` (mapped through Kᵀ if that is the other player)."""
    Z = [d[0] for d in dirs]
    AZ = [d[1] for d in dirs]
    QZ = [d[2] for d in dirs]
    if W is not None:
        Z, AZ, QZ = list(W) + Z, list(AW) + AZ, list(QW) + QZ
    n_next = (pa.eta_grad if next_solve == a else pb.eta_grad).numel()
    dtype, device = (AZ[0].dtype, AZ[0].device) if AZ else (pa.eta_grad.dtype, pa.eta_grad.device)
    empty = torch.zeros(0, n_next, dtype=dtype, device=device)
    if not Z:
        return empty
    Z, AZ, QZ = torch.stack(Z), torch.stack(AZ), torch.stack(QZ)
    # The Gram matrices in the vectors' own precision (a float64 product of these m x n blocks
    # cost more than the rest of the extraction); only the small m x m problems are float64.
    G = (Z @ Z.T).double()
    H = (Z @ AZ.T).double()
    H = (H + H.T) / 2
    if not (bool(torch.isfinite(G).all()) and bool(torch.isfinite(H).all())):
        return empty  # a non-finite step: the caller's finiteness check refuses it
    try:
        lam, U = torch.linalg.eigh(G)  # an orthonormal basis of span(Z), dropping dependent directions
        ok = lam > lam.max() * (1e-10 if Z.dtype == torch.float64 else 1e-6)
        if not bool(ok.any()):
            return empty
        B = U[:, ok] / lam[ok].sqrt()
        theta, Y = torch.linalg.eigh(B.T @ H @ B)
    except torch.linalg.LinAlgError:  # a degenerate Krylov space: recycle nothing this time
        return empty
    pick = torch.nonzero(theta > threshold).flatten().flip(0)[:max_keep]  # the largest first
    if pick.numel() == 0:
        return empty
    C = (B @ Y[:, pick]).T.to(dtype)  # coefficients of the Ritz vectors in Z
    if next_solve == a:
        V = C @ Z
    else:
        V = pb.sqrt_eta * (C @ QZ)  # Kᵀ v = √η_b D_ba √η_a v
    return V / V.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
