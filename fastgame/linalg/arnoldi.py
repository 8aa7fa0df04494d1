"""Arnoldi's method: one orthogonalisation step, shared by GMRES (:mod:`fastgame.linalg.gmres`) and
the eigenvalue estimates of the diagnostics (:func:`arnoldi_eigenvalues`)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor


def arnoldi_step(basis: Tensor, j: int, w: Tensor) -> tuple[Tensor, Tensor]:
    """Orthogonalise ``w = A basis[j]`` against the orthonormal rows ``basis[:j + 1]``.

    Classical Gram–Schmidt applied twice (CGS2): as stable as modified Gram–Schmidt ("twice
    is enough", Giraud et al. 2005), but each pass is two matrix-vector products with the
    basis instead of j dependent dot products and axpys. Returns ``(h, w)``: the Hessenberg
    column ``H[:j + 1, j]`` and the remainder, whose norm is ``H[j + 1, j]`` (``w`` divided
    by it is the next basis vector). The caller decides on breakdown.
    """
    v = basis[: j + 1]
    h = v @ w
    w = w - h @ v
    h2 = v @ w  # second pass: orthogonality to rounding level
    w -= h2 @ v
    return h + h2, w


def arnoldi_eigenvalues(matvec: Callable[[Tensor], Tensor], dim: int, k: int = 6, num_iters: int = 30,
                        which: str = "LM", start: Optional[Tensor] = None,
                        dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
    r"""The k extreme eigenvalues of a linear operator from ``num_iters`` Arnoldi steps.

    Builds an orthonormal Krylov basis Q (classical Gram-Schmidt, applied twice for
    stability) and returns the Ritz values — eigenvalues of the small Hessenberg matrix
    QᵀAQ — sorted by ``which``: ``"LM"`` largest magnitude, ``"LR"`` largest real part,
    ``"SR"`` smallest real part. For a symmetric operator this is the Lanczos method (the
    Hessenberg matrix is tridiagonal). Extreme, well-separated eigenvalues converge first;
    with ``num_iters >= dim`` the result is exact up to rounding.

    Args:
        matvec: v ↦ A v on flat vectors of length ``dim``.
        start: first Krylov vector (default: a fixed-seed random vector, so results repeat).
    Returns:
        a complex tensor of min(k, Krylov dimension) Ritz values.
    """
    if which not in ("LM", "LR", "SR"):
        raise ValueError(f"which must be 'LM', 'LR' or 'SR', got {which!r}")
    for name, v in (("dim", dim), ("k", k), ("num_iters", num_iters)):
        if not (isinstance(v, int) and v >= 1):
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    m = min(num_iters, dim)
    if start is None:
        start = torch.randn(dim, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    if start.shape != (dim,) or not bool(start.norm() > 0):
        raise ValueError(f"start must be a non-zero vector of shape ({dim},)")
    Q = torch.zeros(m + 1, dim, dtype=start.dtype, device=start.device)
    H = torch.zeros(m + 1, m, dtype=start.dtype, device=start.device)
    Q[0] = start / start.norm()
    size = m
    for j in range(m):
        w = matvec(Q[j])
        scale = w.norm()
        H[:j + 1, j], w = arnoldi_step(Q, j, w)
        H[j + 1, j] = w.norm()
        # An invariant subspace: the Ritz values so far are exact eigenvalues.
        if H[j + 1, j] <= 1e-12 * max(float(scale), float(H[:j + 1, j].norm()), 1e-300):
            size = j + 1
            break
        Q[j + 1] = w / H[j + 1, j]
    ritz = torch.linalg.eigvals(H[:size, :size])
    key = {"LM": ritz.abs(), "LR": ritz.real, "SR": -ritz.real}[which]
    return ritz[torch.argsort(key, descending=True)[:k]]
