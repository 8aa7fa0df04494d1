"""The generator/discriminator pairs that fastgame trains and benchmarks.

* :func:`mlp_gan` — an MLP pair for 2-D data (the mixtures of :mod:`fastgame.games`);
* :class:`ConvGenerator` / :class:`ConvDiscriminator` — a small DCGAN for 8×8, 16×16 or
  32×32 images (BatchNorm; the discriminator's can be switched off for gradient penalties);
* :class:`WGANGPGenerator` / :class:`WGANGPDiscriminator` — the DCGAN of WGAN-GP's CIFAR-10
  experiments (Gulrajani et al. 2017) for 32×32 images;
* :class:`DCGAN64Generator` / :class:`DCGAN64Discriminator` — the DCGAN for 64×64 images.

Every generator maps a ``(batch, latent)`` code to a sample and has a ``latent`` size;
every discriminator returns one raw output (logit or critic value) per sample.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ..nn import convert_batchnorm

__all__ = ["build_gan", "build_models", "GAN_MODELS", "mlp", "mlp_gan", "ConvGenerator", "ConvDiscriminator", "WGANGPGenerator", "WGANGPDiscriminator",
           "DCGAN64Generator", "DCGAN64Discriminator"]


def mlp(sizes: list[int], act: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """Fully connected net, ``act`` between layers (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def mlp_gan(width: int = 256, depth: int = 2, latent: int = 2) -> tuple[nn.Module, nn.Module]:
    """(G, D) for 2-D data: G latent-width...-2, D 2-width...-1 (``depth`` hidden layers)."""
    return mlp([latent] + [width] * depth + [2]), mlp([2] + [width] * depth + [1])


class ConvGenerator(nn.Module):
    """DCGAN generator for ``size``×``size`` images (size 8, 16 or 32) with BatchNorm."""

    def __init__(self, latent: int = 32, ch: int = 16, size: int = 16, out_ch: int = 3) -> None:
        super().__init__()
        self.latent, self.ch, self.start = latent, ch, 4
        ups = {8: 1, 16: 2, 32: 3}[size]
        self.fc = nn.Linear(latent, ch * (2 ** ups) * 16)
        blocks: list[nn.Module] = [nn.BatchNorm2d(ch * 2 ** ups), nn.ReLU()]
        for i in range(ups, 0, -1):
            blocks += [nn.ConvTranspose2d(ch * 2 ** i, ch * 2 ** (i - 1), 4, 2, 1)]
            if i > 1:
                blocks += [nn.BatchNorm2d(ch * 2 ** (i - 1)), nn.ReLU()]
        blocks += [nn.ReLU(), nn.Conv2d(ch, out_ch, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*blocks)
        self.ups = ups

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.ch * 2 ** self.ups, 4, 4)
        return self.net(h)


class ConvDiscriminator(nn.Module):
    """DCGAN discriminator (strided convs, BatchNorm, LeakyReLU) for size×size images.

    ``batchnorm=False`` drops the BatchNorm layers, so that each sample's output depends on
    that sample only (gradient penalties take input gradients of the summed outputs)."""

    def __init__(self, ch: int = 16, size: int = 16, in_ch: int = 3, batchnorm: bool = True) -> None:
        super().__init__()
        downs = {8: 1, 16: 2, 32: 3}[size]
        blocks: list[nn.Module] = [nn.Conv2d(in_ch, ch, 3, 1, 1), nn.LeakyReLU(0.2)]
        c = ch
        for _ in range(downs):
            blocks += [nn.Conv2d(c, 2 * c, 4, 2, 1)]
            blocks += [nn.BatchNorm2d(2 * c)] if batchnorm else []
            blocks += [nn.LeakyReLU(0.2)]
            c *= 2
        self.net = nn.Sequential(*blocks)
        self.fc = nn.Linear(c * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).flatten(1))


# ---- benchmark-suite models (bench/run.py) ------------------------------------------------------

class WGANGPGenerator(nn.Module):
    """The DCGAN generator of WGAN-GP's CIFAR-10 experiments (Gulrajani et al. 2017) for
    32×32 images: Linear-BN-ReLU, two ConvTranspose(2, stride 2)-BN-ReLU, ConvTranspose, tanh.
    ``dim`` 64, ``latent`` 128: 0.70M parameters."""

    def __init__(self, dim: int = 64, latent: int = 128, out_ch: int = 3) -> None:
        super().__init__()
        self.dim, self.latent = dim, latent
        self.fc = nn.Sequential(nn.Linear(latent, 4 * 4 * 4 * dim), nn.BatchNorm1d(4 * 4 * 4 * dim), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(4 * dim, 2 * dim, 2, stride=2), nn.BatchNorm2d(2 * dim), nn.ReLU(),
            nn.ConvTranspose2d(2 * dim, dim, 2, stride=2), nn.BatchNorm2d(dim), nn.ReLU(),
            nn.ConvTranspose2d(dim, out_ch, 2, stride=2), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(z.shape[0], 4 * self.dim, 4, 4))


class WGANGPDiscriminator(nn.Module):
    """WGAN-GP's CIFAR-10 critic: three Conv(3, stride 2)-LeakyReLU and a linear output
    (no normalisation). ``dim`` 64: 0.37M parameters."""

    def __init__(self, dim: int = 64, in_ch: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, dim, 3, 2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(dim, 2 * dim, 3, 2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * dim, 4 * dim, 3, 2, padding=1), nn.LeakyReLU(0.2))
        self.fc = nn.Linear(4 * 4 * 4 * dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).flatten(1))


class DCGAN64Generator(nn.Module):
    """The DCGAN generator for 64×64 images (Radford et al. 2016; the PyTorch example):
    ConvTranspose-BN-ReLU ×4 from a ``latent``×1×1 code, then ConvTranspose and tanh.
    ``ngf`` 64, ``latent`` 100: 3.58M parameters."""

    def __init__(self, ngf: int = 64, latent: int = 100, out_ch: int = 3) -> None:
        super().__init__()
        self.latent = latent
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent, ngf * 8, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(ngf * 8), nn.ReLU()]
        for m in (8, 4, 2):
            layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ngf * m // 2), nn.ReLU()]
        layers += [nn.ConvTranspose2d(ngf, out_ch, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.latent, 1, 1))


class DCGAN64Discriminator(nn.Module):
    """The DCGAN discriminator for 64×64 images: Conv-LeakyReLU, Conv-BN-LeakyReLU ×3,
    Conv to one logit. ``ndf`` 64: 2.77M parameters."""

    def __init__(self, ndf: int = 64, in_ch: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        for m in (1, 2, 4):
            layers += [nn.Conv2d(ndf * m, ndf * m * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * m * 2),
                       nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


GAN_MODELS = ("mlp", "dcgan", "wgan_gp_dcgan")
"""The model pairs :func:`build_gan` builds (``fastgame train --model``)."""


def build_gan(model: str, width: int, latent: int, sample_shape: tuple[int, ...],
              discriminator_batchnorm: bool = True, fastgame_batchnorm: bool = True,
              seed: Optional[int] = None) -> tuple[nn.Module, nn.Module]:
    """(G, D) of one of :data:`GAN_MODELS` for samples of ``sample_shape`` (``(2,)`` points or
    ``(C, S, S)`` images): ``width`` is the MLP's hidden width or the base channel count,
    ``latent`` the code size. ``discriminator_batchnorm=False`` drops the DCGAN discriminator's
    BatchNorm (a gradient penalty needs each output to depend on its own sample only);
    ``fastgame_batchnorm`` swaps torch's BatchNorm layers for :class:`fastgame.nn.BatchNorm`
    (the same function, cheaper mixed-HVP passes). ``seed``: seeds torch's global RNG first."""
    if seed is not None:
        torch.manual_seed(seed)
    if model == "mlp":
        return mlp_gan(width, depth=2, latent=latent)
    channels, size = sample_shape[0], sample_shape[-1]
    if model == "dcgan":
        G, D = (ConvGenerator(latent, width, size, out_ch=channels),
                ConvDiscriminator(width, size, in_ch=channels, batchnorm=discriminator_batchnorm))
    elif model == "wgan_gp_dcgan":
        G, D = WGANGPGenerator(width, latent, out_ch=channels), WGANGPDiscriminator(width, in_ch=channels)
    else:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(GAN_MODELS)}")
    if fastgame_batchnorm:
        G, D = convert_batchnorm(G), convert_batchnorm(D)
    return G, D


def build_models(cfg: Any, data: Any) -> tuple[nn.Module, nn.Module]:
    """Seeded (G, D) for a resolved :class:`~fastgame.trainer.config.TrainConfig` ``cfg`` and its
    :class:`~fastgame.trainer.data.TrainingData`."""
    assert cfg.width is not None and cfg.latent is not None
    # resolve() states d_batchnorm; None (a run saved before it existed) is the old rule: no
    # BatchNorm in D with a penalty, which needs each sample's output to depend on that sample only.
    d_batchnorm = cfg.d_batchnorm if cfg.d_batchnorm is not None else cfg.penalty == "none"
    return build_gan(cfg.model, cfg.width, cfg.latent, data.sample_shape,
                     discriminator_batchnorm=d_batchnorm, fastgame_batchnorm=cfg.batchnorm == "fastgame",
                     seed=cfg.seed)
