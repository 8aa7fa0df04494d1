"""fastgame's optimizers."""
from .acgd import ACGD
from .base import GameOptimizer
from .bcgd import BCGD

__all__ = ["ACGD", "BCGD", "GameOptimizer"]
