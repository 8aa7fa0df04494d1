"""The benchmark cases: models, sizes, batches and learning rates of each suite (docs/design.md §7)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import torch
from torch import nn

from fastgame.nn import convert_batchnorm

from .models import (DCGAN64Discriminator, DCGAN64Generator, WGANGPDiscriminator, WGANGPGenerator, gan_loss,
                     image_data, mlp_gan, ring_data, wgan_loss)


@dataclasses.dataclass
class Config:
    """One benchmark case: a model, its size knobs, batch size, loss and learning rate."""
    model: str                      # "mlp", "dcgan32" or "dcgan64"
    batch: int
    width: int                      # mlp: hidden width; dcgan32: dim; dcgan64: ngf = ndf
    lr: float
    depth: int = 3                  # mlp hidden layers
    latent: int = 0                 # 0: the model's default
    warmup: Optional[int] = None    # untimed / timed steps for this case (None: the suite's; the
    steps: Optional[int] = None     # command line's --warmup/--steps override both)
    variants: bool = False          # also fastgame rows per cg_start and tolerance preset (VARIANTS)

    @property
    def label(self) -> str:
        return (f"{self.model}-b{self.batch}" + ("" if self.width == _FULL_WIDTH[self.model] else f"-w{self.width}")
                + ("" if self.lr == _DEFAULT_LR[self.model] else f"-lr{self.lr:g}"))


_FULL_WIDTH = {"mlp": 128, "dcgan32": 64, "dcgan64": 64}
_DEFAULT_LR = {"mlp": 1e-3, "dcgan32": 1e-4, "dcgan64": 1e-4}

# The extra fastgame rows of a case with ``variants``: (cg_start, tol) on the auto backend, tol
# None meaning the suite's (--tol, CGDs' 1e-10 by default); CGDs gets a row at each other tol.
VARIANTS: list[tuple[str, Optional[float]]] = [
    (start, tol) for tol in (None, 1e-6) for start in ("warm", "zero", "recycle")]

SUITES: dict[str, dict[str, Any]] = {
    # the full-size configurations, for one GPU: (a) the MLP GAN (width 128) at batch 512, (b) DCGAN
    # on 32x32 images (width 64) at batch 64 and 256, (c) DCGAN on 64x64 images (width 64) at batch 64
    "gpu": dict(device="cuda", warmup=10, steps=50, configs=[
        Config("mlp", 512, 128, 1e-3), Config("dcgan32", 64, 64, 1e-4), Config("dcgan32", 256, 64, 1e-4),
        Config("dcgan64", 64, 64, 1e-4)]),
    # the same models on the CPU; conv models at smaller batch and width
    "cpu": dict(device="cpu", warmup=3, steps=10, configs=[
        Config("mlp", 512, 128, 1e-3), Config("dcgan32", 16, 64, 1e-4), Config("dcgan64", 8, 32, 1e-4)]),
    # a few minutes on a 2-core CPU. The MLP GAN at lr 1e-3 and 1e-2 with rows per CG start and
    # tolerance preset, after 30 untimed steps: CG's iteration count grows over the first tens
    # of steps (at lr 1e-2 from ~4 to ~12), and the timed steps should see the grown one.
    "quick": dict(device="cpu", warmup=2, steps=6, threads=1, configs=[
        Config("mlp", 256, 128, 1e-3, warmup=30, steps=16, variants=True),
        Config("mlp", 256, 128, 1e-2, warmup=30, steps=16, variants=True),
        Config("dcgan32", 8, 32, 1e-4), Config("dcgan64", 4, 16, 1e-4)]),
    # seconds: the smoke test (tests/test_bench_suite.py)
    "tiny": dict(device="cpu", warmup=1, steps=3, threads=1, configs=[
        Config("mlp", 64, 32, 1e-3, depth=2), Config("dcgan32", 4, 8, 1e-4)]),
}


@dataclasses.dataclass
class Case:
    G: nn.Module
    D: nn.Module
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    loss_fn: Callable[[nn.Module, nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    loss_name: str


# image models: generator, discriminator, image size, default latent size, loss, its name
_IMAGE_MODELS = {
    "dcgan32": (WGANGPGenerator, WGANGPDiscriminator, 32, 128, wgan_loss, "WGAN (zero-sum, no penalty)"),
    "dcgan64": (DCGAN64Generator, DCGAN64Discriminator, 64, 100, gan_loss, "minimax GAN"),
}


def build_case(cfg: Config, device: torch.device, n_batches: int, seed: int = 0, batchnorm: str = "native") -> Case:
    """Seeded models (each row deep-copies these) and a fixed list of batches on ``device``;
    ``batchnorm="fastgame"``: the models' BatchNorm layers as fastgame.nn.BatchNorm (the same
    function and parameters, cheaper second derivatives)."""
    if batchnorm not in ("native", "fastgame"):
        raise ValueError(f"batchnorm must be 'native' or 'fastgame', got {batchnorm!r}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    if cfg.model == "mlp":
        latent = cfg.latent or 2
        G, D = mlp_gan(cfg.width, cfg.depth, latent)
        batches = [(ring_data(cfg.batch, gen), torch.randn(cfg.batch, latent, generator=gen)) for _ in range(n_batches)]
        loss_fn, loss_name = gan_loss, "minimax GAN"
    elif cfg.model in _IMAGE_MODELS:
        make_g, make_d, size, default_latent, loss_fn, loss_name = _IMAGE_MODELS[cfg.model]
        latent = cfg.latent or default_latent
        G, D = make_g(cfg.width, latent), make_d(cfg.width)
        batches = [(image_data(cfg.batch, size, gen), torch.randn(cfg.batch, latent, generator=gen))
                   for _ in range(n_batches)]
    else:
        raise ValueError(f"unknown model {cfg.model!r}")
    G, D = G.to(device), D.to(device)
    if batchnorm == "fastgame":
        G, D = convert_batchnorm(G), convert_batchnorm(D)
    batches = [(r.to(device), z.to(device)) for r, z in batches]
    return Case(G, D, batches, loss_fn, loss_name)
