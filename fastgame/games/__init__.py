"""Two-player games with known answers, and the simple game dynamics they are compared on.

Every game is an ``nn.Module`` with ``max_params``, ``min_params``, the zero-sum ``loss()``
(max player maximises, min player minimises — what fastgame's optimizers take) and
``losses()`` (each player's own loss, both minimised). See :class:`Game`.
"""
from .base import Game, PlayerLosses
from .dirac import DiracGAN, gaussian_points
from .textbook_gda import AltGD, SimGD
from .gan import GAN
from .gaussian_location import GaussianLocationGame
from .mixtures import GaussianMixture, MixtureMetrics
from .toy import Bilinear, ICRQuadratic

__all__ = [
    "AltGD", "Bilinear", "DiracGAN", "GAN", "Game", "GaussianLocationGame", "GaussianMixture",
    "ICRQuadratic", "MixtureMetrics", "PlayerLosses", "SimGD", "gaussian_points",
]
