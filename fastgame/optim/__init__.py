"""fastgame's optimizers."""
from .acgd import ACGD
from .base import GameOptimizer
from .bcgd import BCGD
from .gacgd import GACGD

__all__ = ["ACGD", "BCGD", "GACGD", "GameOptimizer"]
