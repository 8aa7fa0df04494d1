"""Models and data shared by the benchmarks and the parity tests. The models live in
:mod:`fastgame.trainer.models` (re-exported here so the benchmark suite and old imports keep
working); the synthetic data and the loss closures below are the benchmarks' own."""
from __future__ import annotations

import torch
from torch import nn

from fastgame.trainer.models import (ConvDiscriminator, ConvGenerator, DCGAN64Discriminator, DCGAN64Generator,  # noqa: F401
                             WGANGPDiscriminator, WGANGPGenerator, mlp, mlp_gan)


def wgan_loss(G: nn.Module, D: nn.Module, real: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Zero-sum WGAN loss E[D(real)] - E[D(G(z))]: D maximises it, G minimises it."""
    return D(real).mean() - D(G(z)).mean()


def gan_loss(G: nn.Module, D: nn.Module, real: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Zero-sum (minimax) GAN loss E[log σ(D(real))] + E[log(1 - σ(D(G(z))))]."""
    return -nn.functional.softplus(-D(real)).mean() - nn.functional.softplus(D(G(z))).mean()


def ring_data(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples of 8 Gaussians on a circle of radius 2 (std 0.02)."""
    k = torch.randint(0, 8, (n,), generator=generator)
    angle = k.to(torch.get_default_dtype()) * (2 * torch.pi / 8)
    centres = torch.stack([2 * torch.cos(angle), 2 * torch.sin(angle)], dim=1)
    return centres + 0.02 * torch.randn(n, 2, generator=generator)


def image_data(n: int, size: int, generator: torch.Generator | None = None, channels: int = 3) -> torch.Tensor:
    """A batch of synthetic "real" images in [-1, 1] (smooth random fields: a benchmark
    needs the shapes and a non-degenerate game, not a data set)."""
    coarse = torch.rand(n, channels, max(size // 4, 1), max(size // 4, 1), generator=generator)
    img = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return img * 2 - 1
