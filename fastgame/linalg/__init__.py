"""The solver layer, on the players' flat buffers: parameters as flat buffers (params),
mixed Hessian-vector products (hvp) and the game Jacobian's products built on them
(game_hvp), cross-rank reductions (distributed), the one CG iteration and the CGD solve
with its pass schedule (cg), the drivers that run CG's iterations (cg_drivers), its deflation
by recycled Ritz vectors (recycle), CG iterations replayed from CUDA graphs (captured),
restarted GMRES (gmres) and its Arnoldi step (arnoldi), and flatten/split helpers for points
of a game (flat)."""
from .cg import CGDSolution, Deflation, Preconditioner, run_cg, solve_cgd
from .cg_drivers import CGDriver, cg_driver
from .distributed import all_ranks_true, all_reduce_mean, is_data_parallel
from .gmres import GMRESResult, gmres
from .hvp import MixedHVP, mixed_hvp
from .params import Player

__all__ = ["CGDSolution", "CGDriver", "Deflation", "GMRESResult", "MixedHVP", "Player", "Preconditioner", "all_ranks_true",
           "all_reduce_mean", "cg_driver", "gmres", "is_data_parallel", "mixed_hvp", "run_cg", "solve_cgd"]
