"""fastgame's optimizers: the CGD family and the game dynamics it is compared with."""
from .acgd import ACGD
from .altgd import AltAdam, AltGD
from .base import GameOptimizer
from .bcgd import BCGD
from .consensus import ConsensusOptimization
from .extragradient import ExtraAdam, Extragradient
from .gacgd import GACGD
from .hamiltonian import HamiltonianGradient
from .lead import LEAD
from .manifold import BestResponseManifold
from .ogda import OGDA, OptimisticAdam
from .pcgd import APCGD, PCGD
from .proximal import ProximalTraining
from .ranks import PeerFailure
from .sga import SGA
from .simgd import SimAdam, SimGD

# Every method by a lowercase name (e.g. for a training CLI's --optimizer).
DYNAMICS: dict[str, type[GameOptimizer]] = {
    "simgd": SimGD, "simadam": SimAdam, "altgd": AltGD, "altadam": AltAdam,
    "extragradient": Extragradient, "extra-adam": ExtraAdam, "ogda": OGDA, "optimistic-adam": OptimisticAdam,
    "consensus": ConsensusOptimization, "sga": SGA, "hamiltonian": HamiltonianGradient, "lead": LEAD,
    "proximal": ProximalTraining, "manifold": BestResponseManifold,
    "acgd": ACGD, "bcgd": BCGD, "gacgd": GACGD,
}

__all__ = ["ACGD", "APCGD", "AltAdam", "AltGD", "BCGD", "BestResponseManifold", "ConsensusOptimization", "DYNAMICS", "ExtraAdam", "Extragradient",
           "GACGD", "GameOptimizer", "HamiltonianGradient", "LEAD", "OGDA", "OptimisticAdam", "PCGD", "PeerFailure", "ProximalTraining", "SGA", "SimAdam",
           "SimGD"]
