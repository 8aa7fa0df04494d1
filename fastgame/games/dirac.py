r"""The Dirac-GAN of Mescheder, Geiger & Nowozin, *Which training methods for GANs do actually
converge?* (ICML 2018): the smallest GAN on which unregularised training fails."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import losses as L
from .base import Game, PlayerLosses

_LOSSES = ("standard", "non_saturating", "wgan")
# f'(0) and f''(0) of Mescheder's f, where the game is L(θ, ψ) = f(ψθ) + f(0):
# f(t) = −log(1 + e^{−t}) for the classifier losses, f(t) = t for WGAN.
_F_PRIME = {"standard": (0.5, -0.25), "non_saturating": (0.5, -0.25), "wgan": (1.0, 0.0)}


def gaussian_points(n: int, std: float) -> Tensor:
    """n equal-weight points standing in for N(0, std²): symmetric normal quantiles rescaled
    so their mean is exactly 0 and their mean square exactly std², in the default dtype.

    With these the expected loss is deterministic and the Jacobian at the equilibrium —
    which depends on the noise only through its variance — is exactly that of Gaussian noise.
    """
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"noise_points must be an int >= 2, got {n!r}")
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    z = torch.special.ndtri(q)
    z = z - z.mean()
    z = z / z.pow(2).mean().sqrt()
    return (std * z).to(torch.get_default_dtype())


class DiracGAN(Game):
    r"""Generator δ_θ, linear discriminator D(x) = ψ·x, data δ₀ (one-dimensional).

    The unique equilibrium is (ψ, θ) = (0, 0). At it the Jacobian of the gradient vector
    field has the eigenvalues ±f′(0)·i without regularisation, so gradient descent-ascent
    circles (AltGD) or spirals out (SimGD); R1/R2 with weight γ moves them to
    −γ/2 ± √(γ²/4 − f′(0)²), instance noise of std σ to f″(0)σ² ± √(f″(0)²σ⁴ − f′(0)²)
    (see :meth:`equilibrium_eigenvalues`).

    The max player is the discriminator: ``max_params = [psi]``, ``min_params = [theta]``.

    Args:
        loss: ``"standard"`` (minimax), ``"non_saturating"`` or ``"wgan"``.
        penalty: None, ``"r1"``, ``"r2"``, ``"wgan_gp"`` or ``"relu_gp"`` (:mod:`fastgame.losses`).
        penalty_weight: γ for R1/R2, λ for the interpolating penalties.
        noise_std: instance noise σ added to real and fake points. The expectation over the
            noise is taken exactly on ``noise_points`` symmetric quantile points
            (:func:`gaussian_points`), so the game stays deterministic.
        noise_points: number of points representing the noise distribution.
        theta, psi: the starting point.

    Built from :mod:`fastgame.losses` (the penalties by autograd through D), so the seed's
    eigenvalue formulas also test those functions.
    """

    def __init__(self, loss: str = "standard", penalty: Optional[str] = None, penalty_weight: float = 0.0,
                 noise_std: float = 0.0, noise_points: int = 16, theta: float = 1.0, psi: float = 1.0) -> None:
        super().__init__()
        if loss not in _LOSSES:
            raise ValueError(f"unknown Dirac-GAN loss {loss!r}; choose one of {list(_LOSSES)}")
        if penalty is not None and penalty not in L.PENALTIES:
            raise ValueError(f"unknown penalty {penalty!r}; choose None or one of {list(L.PENALTIES)}")
        for name, v in (("penalty_weight", penalty_weight), ("noise_std", noise_std)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"invalid {name}: {v!r} (must be a finite number >= 0)")
        if penalty is None and penalty_weight != 0:
            raise ValueError("penalty_weight given without a penalty")
        self.loss_name, self.penalty = loss, penalty
        self.penalty_weight, self.noise_std = float(penalty_weight), float(noise_std)
        self.is_zero_sum = loss in L.ZERO_SUM_LOSSES
        offsets = gaussian_points(noise_points, noise_std) if noise_std > 0 else torch.zeros(1)
        self.register_buffer("offsets", offsets.reshape(-1, 1))
        self.theta = nn.Parameter(torch.tensor([float(theta)]))
        self.psi = nn.Parameter(torch.tensor([float(psi)]))

    @property
    def max_params(self) -> list[nn.Parameter]:
        return [self.psi]

    @property
    def min_params(self) -> list[nn.Parameter]:
        return [self.theta]

    def discriminator(self, x: Tensor) -> Tensor:
        """D(x) = ψ·x for a batch of points of shape (n, 1)."""
        return (x * self.psi).sum(dim=1)

    def losses(self) -> PlayerLosses:
        """The discriminator's loss plus its penalty, and the generator's loss."""
        real = self.offsets                       # δ₀ (+ noise)
        fake = self.theta + self.offsets          # δ_θ (+ the same noise points)
        out = L.get_loss(self.loss_name)(self.discriminator(real), self.discriminator(fake))
        d_loss = out.discriminator
        if self.penalty is not None:
            # D is linear, so any interpolation weight gives the same penalty; fixing t = ½
            # keeps the game deterministic.
            d_loss = d_loss + L.gradient_penalty(self.penalty, self.discriminator, real, fake,
                                                 self.penalty_weight, t=torch.tensor(0.5))
        return PlayerLosses(d_loss, out.generator)

    def equilibrium(self) -> Tensor:
        """(ψ, θ) = (0, 0): generator on the data, discriminator flat."""
        return torch.zeros_like(self.point())

    def equilibrium_eigenvalues(self) -> Tensor:
        r"""Closed-form eigenvalues of the vector field's Jacobian at (0, 0) (Mescheder et al. 2018, Lemmas 3.2-3.3).

        The Jacobian is [[2σ²f″(0) − γ, −f′(0)], [f′(0), 0]] in the order (ψ, θ), with γ the
        R1/R2 weight (0 otherwise) and σ the instance-noise std, so the eigenvalues are
        τ/2 ± √(τ²/4 − f′(0)²) with τ = 2σ²f″(0) − γ; f′(0) = ½, f″(0) = −¼ for the
        classifier losses, f′(0) = 1, f″(0) = 0 for WGAN. Raises ValueError for the
        interpolating penalties, whose Jacobian at ψ = 0 (‖∇D‖ = 0, a kink) does not exist.
        """
        if self.penalty in ("wgan_gp", "relu_gp"):
            raise ValueError(f"the {self.penalty} penalty is not differentiable at the equilibrium (ψ = 0)")
        fp, fpp = _F_PRIME[self.loss_name]
        gamma = self.penalty_weight if self.penalty in ("r1", "r2") else 0.0
        tau = 2 * self.noise_std ** 2 * fpp - gamma
        root = torch.sqrt(torch.tensor(tau * tau / 4 - fp * fp, dtype=torch.complex128))
        return torch.stack([tau / 2 + root, tau / 2 - root])
