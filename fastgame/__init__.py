"""fastgame: fast optimizers for differentiable games (two players, or n with PCGD) in PyTorch."""
from .ops import backends, get_backend, set_backend
from .graphs import cuda_stream, graphed_step, make_graphed_step
from .optim import (ACGD, APCGD, BCGD, BestResponseManifold, DYNAMICS, GACGD, LEAD, OGDA, SGA, AltAdam, AltGD, ConsensusOptimization, ExtraAdam,
                    Extragradient, GameOptimizer, HamiltonianGradient, OptimisticAdam, PCGD, ProximalTraining, SimAdam,
                    SimGD)

from . import diagnostics, games, losses, nn
from ._moved import install as _install_moved

_install_moved()  # the trainer modules' old paths (fastgame.models, ...): see fastgame/_moved.py

__version__ = "0.1.0"

__all__ = ["ACGD", "APCGD", "AltAdam", "AltGD", "BCGD", "BestResponseManifold", "ConsensusOptimization", "DYNAMICS", "ExtraAdam", "Extragradient",
           "GACGD", "GameOptimizer", "HamiltonianGradient", "LEAD", "OGDA", "OptimisticAdam", "PCGD", "ProximalTraining", "SGA", "SimAdam", "SimGD",
           "backends", "cuda_stream", "diagnostics", "games", "losses", "get_backend", "graphed_step", "make_graphed_step", "nn", "set_backend"]
