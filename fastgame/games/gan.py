r"""A GAN with real networks as a :class:`~fastgame.games.Game`."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .. import losses as L
from .base import Game, PlayerLosses


class GAN(Game):
    r"""Generator and discriminator networks, a data sampler and a loss from :mod:`fastgame.losses`.

    Every call of :meth:`losses` / :meth:`loss` draws a fresh real batch and latent batch::

        mixture = fastgame.games.GaussianMixture.ring()
        game = fastgame.games.GAN(G, D, mixture.sample, latent_dim=2, loss="wgan",
                                  penalty="wgan_gp", penalty_weight=10.0)
        opt = fastgame.ACGD(game.max_params, game.min_params, lr_max=1e-3, lr_min=1e-3)
        for _ in range(1000):
            opt.step(game.loss())
        mixture.metrics(game.sample(2500))

    The max player is the discriminator. ``loss()`` is the zero-sum form (``zero_sum −
    penalty``); :attr:`is_zero_sum` says whether it equals the game (losses ``standard`` and
    ``wgan``) or is the minimax surrogate of it.

    Args:
        generator: maps a latent batch (n, latent_dim) to samples.
        discriminator: maps samples to one output (logit or critic value) per sample.
        real: ``real(n)`` returns n data samples.
        latent_dim: the latent distribution is N(0, I_latent_dim).
        loss: a name in :data:`fastgame.losses.LOSSES`.
        penalty: None or a name in :data:`fastgame.losses.PENALTIES`.
        penalty_weight: γ (R1/R2) or λ (interpolating penalties).
        noise_std: instance noise added to real and fake samples before the discriminator.
        batch_size: samples per batch.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, real: Callable[[int], Tensor],
                 latent_dim: int, loss: str = "standard", penalty: Optional[str] = None,
                 penalty_weight: float = 0.0, noise_std: float = 0.0, batch_size: int = 256) -> None:
        super().__init__()
        if not isinstance(generator, nn.Module) or not isinstance(discriminator, nn.Module):
            raise ValueError("generator and discriminator must be nn.Modules")
        if not callable(real):
            raise ValueError("real must be a callable returning n data samples")
        L.get_loss(loss)  # validates the name
        if penalty is not None and penalty not in L.PENALTIES:
            raise ValueError(f"unknown penalty {penalty!r}; choose None or one of {list(L.PENALTIES)}")
        for name, v in (("penalty_weight", penalty_weight), ("noise_std", noise_std)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"invalid {name}: {v!r} (must be a finite number >= 0)")
        for name, v in (("latent_dim", latent_dim), ("batch_size", batch_size)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.generator, self.discriminator, self.real = generator, discriminator, real
        self.latent_dim, self.batch_size = latent_dim, batch_size
        self.loss_name, self.penalty = loss, penalty
        self.penalty_weight, self.noise_std = float(penalty_weight), float(noise_std)
        self.is_zero_sum = loss in L.ZERO_SUM_LOSSES

    @property
    def max_params(self) -> list[nn.Parameter]:
        return [p for p in self.discriminator.parameters() if p.requires_grad]

    @property
    def min_params(self) -> list[nn.Parameter]:
        return [p for p in self.generator.parameters() if p.requires_grad]

    def _like_params(self) -> dict:
        p = next(self.generator.parameters())
        return {"dtype": p.dtype, "device": p.device}

    def latent(self, n: int) -> Tensor:
        """n latent vectors."""
        return torch.randn(n, self.latent_dim, **self._like_params())

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """n generator samples (no graph), e.g. for :meth:`GaussianMixture.metrics`."""
        return self.generator(self.latent(n))

    def losses(self) -> PlayerLosses:
        """On a fresh batch: the discriminator's loss plus its penalty, and the generator's loss."""
        real = self.real(self.batch_size).to(**self._like_params())
        fake = self.generator(self.latent(self.batch_size))
        real_in = L.instance_noise(real, self.noise_std)
        fake_in = L.instance_noise(fake, self.noise_std)
        out = L.get_loss(self.loss_name)(self.discriminator(real_in), self.discriminator(fake_in))
        d_loss = out.discriminator
        if self.penalty is not None:
            d_loss = d_loss + L.gradient_penalty(self.penalty, self.discriminator, real_in, fake_in,
                                                 self.penalty_weight)
        return PlayerLosses(d_loss, out.generator)
