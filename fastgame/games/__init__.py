"""Games with known answers (two players; n players in :mod:`.polymatrix`), and the simple
game dynamics they are compared on.

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
from .poisson import CompetitivePoisson
from .polymatrix import CyclicBilinear, PolymatrixGame, monotone_quadratic
from .toy import Bilinear, ICRQuadratic

__all__ = [
    "AltGD", "Bilinear", "CompetitivePoisson", "CyclicBilinear", "DiracGAN", "GAN", "Game", "GaussianLocationGame",
    "GaussianMixture", "ICRQuadratic", "MixtureMetrics", "PlayerLosses", "PolymatrixGame", "SimGD", "gaussian_points",
    "monotone_quadratic",
]
