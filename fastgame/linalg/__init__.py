"""The solver layer, on the players' flat buffers: parameters as flat buffers (params),
mixed Hessian-vector products (hvp), cross-rank reductions (distributed), CG with the
CGD pass schedule (cg), restarted GMRES (gmres) and its Arnoldi step (arnoldi), and
flatten/split helpers for points of a game (flat)."""
from .cg import CGDSolution, Preconditioner, solve_cgd
from .distributed import all_ranks_true, all_reduce_mean, is_data_parallel
from .gmres import GMRESResult, gmres
from .hvp import MixedHVP, mixed_hvp
from .params import Player

__all__ = ["CGDSolution", "GMRESResult", "MixedHVP", "Player", "Preconditioner", "all_ranks_true",
           "all_reduce_mean", "gmres", "is_data_parallel", "mixed_hvp", "solve_cgd"]
