r"""2-D mixtures of Gaussians (8 on a ring, 25 on a grid) and their mode-collapse metrics.

The metrics are those of the mode-collapse literature (Metz et al. 2017, Srivastava et al.
2017, Lin et al. 2018): a sample is *high quality* if it lies within 3σ of its nearest
mode; a mode is *covered* if it receives enough high-quality samples; and the JSD between
the histogram of high-quality samples over the modes and the uniform histogram measures
how evenly the modes are covered (0 is perfect, log 2 the worst).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .base import as_tensor


class MixtureMetrics(NamedTuple):
    """The metrics of a batch of samples (see :meth:`GaussianMixture.metrics`)."""

    modes_covered: int
    """Number of modes with at least ``min_fraction`` of their fair share of high-quality samples."""
    high_quality: float
    """Fraction of samples within 3σ of their nearest mode."""
    mode_jsd: float
    """JSD (nats) of the high-quality samples' mode histogram to the uniform one; log 2 if there are none."""
    counts: Tensor
    """High-quality samples per mode (int64, one entry per mode)."""


class GaussianMixture:
    """An equal-weight mixture of isotropic Gaussians N(mean_k, σ²I) in the plane (or any dimension).

    Args:
        means: (K, d) tensor of mode centres.
        std: σ, the standard deviation of every mode.
    """

    def __init__(self, means: Tensor, std: float) -> None:
        means = as_tensor(means, "means", dim=2)
        if means.shape[0] == 0 or means.shape[1] == 0:
            raise ValueError(f"means must be a non-empty (K, d) tensor, got shape {tuple(means.shape)}")
        if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
            raise ValueError(f"invalid std: {std!r} (must be a finite number > 0)")
        self.means, self.std = means, float(std)

    @classmethod
    def ring(cls, modes: int = 8, radius: float = 2.0, std: float = 0.02) -> "GaussianMixture":
        """``modes`` Gaussians evenly spaced on a circle (the standard "8 Gaussians": radius 2, σ = 0.02)."""
        if not (isinstance(modes, int) and modes >= 1):
            raise ValueError(f"modes must be an int >= 1, got {modes!r}")
        angle = 2 * math.pi * torch.arange(modes, dtype=torch.float64) / modes
        means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        return cls(means.to(torch.get_default_dtype()), std)

    @classmethod
    def grid(cls, side: int = 5, spacing: float = 2.0, std: float = 0.05) -> "GaussianMixture":
        """side × side Gaussians on a square grid centred at 0 (the standard "25 Gaussians":
        means in {−4, −2, 0, 2, 4}², σ = 0.05)."""
        if not (isinstance(side, int) and side >= 1):
            raise ValueError(f"side must be an int >= 1, got {side!r}")
        ticks = spacing * (torch.arange(side, dtype=torch.float64) - (side - 1) / 2)
        means = torch.cartesian_prod(ticks, ticks)
        return cls(means.to(torch.get_default_dtype()), std)

    @property
    def num_modes(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(self, *args, **kwargs) -> "GaussianMixture":
        """A copy with the means moved/cast as by ``Tensor.to``."""
        return GaussianMixture(self.means.to(*args, **kwargs), self.std)

    def sample(self, n: int, generator: Optional[torch.Generator] = None, modes: Optional[Tensor] = None) -> Tensor:
        """n samples (n, d) on the means' device and dtype.

        ``modes`` restricts sampling to the given mode indices (uniformly among them),
        e.g. ``modes=torch.tensor([0])`` for a perfectly mode-collapsed generator.
        """
        if not (isinstance(n, int) and n >= 0):
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        dev = self.means.device
        if modes is None:
            pool = torch.arange(self.num_modes, device=dev)
        else:
            pool = torch.as_tensor(modes, device=dev).reshape(-1)
        if pool.numel() == 0 or pool.min() < 0 or pool.max() >= self.num_modes:
            raise ValueError(f"modes must be non-empty indices in [0, {self.num_modes})")
        gen_dev = generator.device if generator is not None else dev
        pick = pool[torch.randint(pool.numel(), (n,), generator=generator, device=gen_dev).to(dev)]
        noise = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=gen_dev).to(dev)
        return self.means[pick] + self.std * noise

    def assign(self, samples: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest mode of each sample and the distance to it."""
        if not isinstance(samples, Tensor) or samples.dim() != 2 or samples.shape[1] != self.dim:
            shape = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
            raise ValueError(f"samples must be an (n, {self.dim}) tensor, got {shape}")
        d = torch.cdist(samples.detach().to(self.means), self.means)
        dist, idx = d.min(dim=1)
        return idx, dist

    def metrics(self, samples: Tensor, min_fraction: float = 0.2, radius: float = 3.0) -> MixtureMetrics:
        """Mode coverage, sample quality and evenness of ``samples`` (n, d).

        A sample is high quality if it lies within ``radius``·σ of its nearest mode; a mode is
        covered if it gets at least ``min_fraction`` × n/K of the high-quality samples
        (0.2 is the usual threshold: 20 of 100 expected samples when 2,500 fall on 25 modes).
        """
        if not (isinstance(min_fraction, (int, float)) and 0 <= min_fraction <= 1):
            raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction!r}")
        if not (isinstance(radius, (int, float)) and radius > 0):
            raise ValueError(f"radius must be > 0, got {radius!r}")
        idx, dist = self.assign(samples)
        n, k = samples.shape[0], self.num_modes
        if n == 0:
            raise ValueError("metrics need at least one sample")
        good = dist <= radius * self.std
        counts = torch.bincount(idx[good], minlength=k).cpu()
        covered = int((counts >= max(min_fraction * n / k, 1e-12)).sum())
        return MixtureMetrics(covered, float(good.double().mean()), _jsd_to_uniform(counts), counts)


def _jsd_to_uniform(counts: Tensor) -> float:
    total = counts.sum()
    if total == 0:
        return math.log(2.0)
    p = counts.double() / total
    u = torch.full_like(p, 1.0 / p.numel())
    m = 0.5 * (p + u)
    # 0·log 0 = 0: only the modes p puts mass on contribute to KL(p‖m).
    kl_pm = torch.where(p > 0, p * torch.log(p / m), torch.zeros_like(p)).sum()
    kl_um = (u * torch.log(u / m)).sum()
    return float(0.5 * (kl_pm + kl_um))
