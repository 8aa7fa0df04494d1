"""Adaptive Competitive Gradient Descent (ACGD), drop-in for ``CGDs.ACGD``."""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from ..linalg.cg import Preconditioner
from .checks import nonnegative, unit_interval
from .cgd import CompetitiveGradient


class ACGD(CompetitiveGradient):
    r"""Adaptive Competitive Gradient Descent (Schäfer, Zheng & Anandkumar, ICML 2020).

    Each step solves the competitive linear system of CGD with RMSProp step sizes
    ``eta = lr * sqrt(1 - beta^t) / (sqrt(v) + eps)`` per element, alternating which player
    is solved by conjugate gradients and back-substituting the other. Same keywords,
    defaults and numbers (to solver tolerance) as ``CGDs.ACGD`` 0.4.5, except that CG starts from
    zero (``cg_start="zero"``, one pass a step fewer); ``cg_start="warm"`` is CGDs' start.

    Args:
        max_params: parameters of the player that maximises the loss (e.g. the discriminator).
        min_params: parameters of the player that minimises it (e.g. the generator).
        max_reducer, min_reducer: accepted for compatibility (DDP reducers of CGDs); fastgame
            all-reduces gradients and HVPs itself when torch.distributed is initialised.
        lr_max, lr_min: learning rates (param groups 0 and 1: schedulers may change them).
        eps: added to sqrt(v), outside the bias correction.
        beta: decay of the second-moment average. ``lr``, ``eps`` and ``beta`` may differ
            between the two param groups (players); the other hyperparameters are game-wide.
        tol, atol: CG stops when ||r||^2 < tol ||b||^2 or ||r||^2 < atol.
        solve_x: False to solve for the max player at the first step (then alternate).
        collect_info: record gradient and update norms in :meth:`get_info` (host syncs).
        max_iter: cap on CG iterations per step, >= 1 (None: the system size, as the reference).
        check_every: read the convergence test on the host every this many CG iterations
            (iterations after convergence are no-ops, so the result does not change).
        capturable: never read the device in :meth:`step` (needs ``max_iter``), so the step
            can be captured in a CUDA graph; see :func:`fastgame.make_graphed_step`.
        backend: the fused ops' backend for this optimizer ("auto", "cpp", "cuda", "triton",
            "torch"; None follows :func:`fastgame.set_backend`), as ``fused=`` in torch.optim.
        cg_start: how each CG solve starts: "zero" (the default: from zero, one mixed-HVP pass
            a step fewer than a warm start; 0.88x the HVP products of "warm" per step on the MLP
            GAN at lr 1e-3, 0.91x at 1e-2, README "CG's start"), "warm" (as CGDs, from the
            previous step's solution: exact reference behaviour), or "recycle" (zero start
            deflated by the previous solve's outlying Ritz vectors, see
            :mod:`fastgame.linalg.recycle`; not capturable). All solve the same system: with
            "zero" a step differs from CGDs' by at most what the tolerance allows (the solution
            w of A w = rhs, A >= I, moves by at most 2 sqrt(tol) ||rhs||).
        graph_cg: on CUDA, replay each solve's CG iterations from a CUDA graph captured at its
            first iteration (same numbers, one launch per iteration instead of hundreds). It
            applies from the second step to a step given a closure, or run on a non-default
            stream; ``info["cg_graphed"]`` and ``graph_cg_reason`` tell. False: never.
    """

    cgds_class = "ACGD"
    hyperparameters = {**CompetitiveGradient.hyperparameters, "eps": nonnegative, "beta": unit_interval}
    state_keys = CompetitiveGradient.state_keys | {"square_avg"}
    nonnegative_state_keys = frozenset({"square_avg"})

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor],
                 max_reducer: Any = None, min_reducer: Any = None,
                 lr_max: float = 1e-3, lr_min: float = 1e-3, eps: float = 1e-5, beta: float = 0.99,
                 tol: float = 1e-12, atol: float = 1e-20, solve_x: bool = False, collect_info: bool = False,
                 max_iter: Optional[int] = None, check_every: int = 1, capturable: bool = False, *,
                 backend: Optional[str] = None, cg_start: str = "zero", graph_cg: bool = True) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min, tol, atol, solve_x, collect_info, max_iter,
                         check_every, capturable, backend, cg_start, graph_cg, eps=eps, beta=beta)

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return (*super()._state_names(group), "square_avg")

    def _step_sizes(self, grads: tuple[Tensor, Tensor], step: Tensor) -> tuple[list[Preconditioner], dict]:
        pre, pending = [], {}
        for player, group, g, lr in zip(self.players, self.param_groups, grads, self._lr_tensors()):
            square_avg = self.state.get(player.name, {}).get("square_avg")
            if square_avg is None:
                square_avg = torch.zeros_like(g)
            new_avg, eta, sqrt_eta, eta_grad = self.ops.precondition(g, square_avg, lr, step,
                                                                group["beta"], group["eps"])
            pre.append(Preconditioner(eta, sqrt_eta, eta_grad))
            pending[player.name] = {"square_avg": new_avg}
        return pre, pending
