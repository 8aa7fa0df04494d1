"""General-sum Adaptive CGD (GACGD), drop-in for ``CGDs.GACGD``."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import Tensor

from .. import ops
from ..gmres import gmres
from ..hvp import MixedHVP, all_reduce_mean
from .base import GameOptimizer, check_beta, check_max_iter, check_nonnegative, resolve_loss

TwoLosses = Union[Tensor, Callable[[], tuple[Tensor, Tensor]]]


class GACGD(GameOptimizer):
    r"""Adaptive CGD for general-sum games: x minimises ``loss_x`` (f), y minimises ``loss_y`` (g).

    Each step solves, by restarted GMRES with mixed Hessian-vector products,

        [[I, η_x D_xy f], [η_y D_yx g, I]] s = [η_x ∇ₓf; η_y ∇ᵧg],   (x, y) -= s,

    with RMSProp step sizes η as in :class:`~fastgame.ACGD`. Same keywords, defaults and
    numbers (to solver tolerance) as ``CGDs.GACGD`` 0.4.5; for a zero-sum game
    (g = -f) it is the ACGD step.

    Args:
        x_params, y_params: the two players' parameters (param groups 0 and 1).
        x_reducer, y_reducer: accepted for compatibility (DDP reducers of CGDs); fastgame
            all-reduces gradients and HVPs itself under torch.distributed.
        lr_x, lr_y: learning rates. eps, beta: RMSProp (eps outside the bias correction).
        tol, atol: GMRES stops when ||r|| < tol ||b|| or ||r|| < atol (norms, not squared).
        max_iter: cap on GMRES iterations per step (None: the system size).
        track_cond: accepted for compatibility; ``get_info()`` always has the iteration
            count and residual.
        restart: GMRES(m) restart length; memory is (restart + 1) vectors of the smaller
            player's size. 20 measured as fast as 40 and faster than 5 or 10 (bench/gacgd_cpu.py).
        warm_start: start GMRES from the previous step's solution. Off by default: measured
            on the MLP GAN it saved no iterations and costs one extra matrix-vector product.

    The solve runs GMRES on the Schur complement of the smaller player (see :meth:`_solve`),
    about half the HVP passes of GMRES on the block system for the same residual.
    """

    player_names = ("x", "y")

    def __init__(self, x_params: Iterable[Tensor], y_params: Iterable[Tensor],
                 x_reducer: Any = None, y_reducer: Any = None, lr_x: float = 1e-3, lr_y: float = 1e-3,
                 eps: float = 1e-6, beta: float = 0.99, tol: float = 1e-5, atol: float = 1e-6,
                 max_iter: Optional[int] = None, track_cond: Any = None, *, restart: int = 20,
                 warm_start: bool = False) -> None:
        check_nonnegative(eps=eps, tol=tol, atol=atol)
        check_beta(beta)
        check_max_iter(max_iter)
        if not (isinstance(restart, int) and restart >= 1):
            raise ValueError(f"invalid restart: {restart!r} (must be an int >= 1)")
        super().__init__(x_params, y_params, lr_x, lr_y,
                         dict(eps=eps, beta=beta, tol=tol, atol=atol, max_iter=max_iter, restart=restart,
                              warm_start=bool(warm_start)),
                         ("x_params", "y_params"), ("lr_x", "lr_y"))
        self.state["game"] = {"step": 0}

    def step(self, loss_x: TwoLosses, loss_y: Optional[Tensor] = None, trigger: Any = None) -> tuple[Tensor, Tensor]:
        """One step: x descends ``loss_x``, y descends ``loss_y``, each anticipating the other.

        Pass the two scalar losses (with their graphs), or one closure returning
        ``(loss_x, loss_y)``. ``trigger`` is accepted for compatibility and ignored.
        Returns the two losses. Raises ``ValueError`` on bad input and
        ``FloatingPointError`` on a non-finite loss, gradient or HVP, changing nothing.
        """
        if callable(loss_x) and not isinstance(loss_x, Tensor):
            if loss_y is not None:
                raise ValueError("pass either a closure returning (loss_x, loss_y) or the two losses")
            with torch.enable_grad():
                losses = loss_x()
            if not (isinstance(losses, (tuple, list)) and len(losses) == 2):
                raise ValueError("a GACGD closure must return the pair (loss_x, loss_y)")
            loss_x, loss_y = losses
        if loss_y is None:
            raise ValueError("GACGD.step needs loss_y (the loss y minimises) besides loss_x")
        loss_x, loss_y = resolve_loss(loss_x, "loss_x"), resolve_loss(loss_y, "loss_y")
        self._ensure_flat()
        timer = time.perf_counter()
        group = self.param_groups[0]
        x, y = self.players
        step = self.state["game"]["step"] + 1
        # One create_graph backward per loss: ∇ₓf and ∇ᵧg for the step, ∇ᵧf and ∇ₓg to differentiate again.
        fx, fy = self._grads(loss_x)
        gx, gy = self._grads(loss_y)
        with torch.no_grad():
            grads = (all_reduce_mean(x.gather(fx)), all_reduce_mean(y.gather(gy)))
            step_t = torch.full((), step, dtype=torch.float64, device=x.device)
            pre, new_avgs = [], {}
            for player, g, lr in zip(self.players, grads, self._lr_tensors()):
                avg = self.state[player.name].get("square_avg")
                new_avg, eta, _, eta_grad = ops.precondition(
                    g, torch.zeros_like(g) if avg is None else avg, lr, step_t, group["beta"], group["eps"])
                pre.append((eta, eta_grad))
                new_avgs[player.name] = new_avg
            hvp = MixedHVP(self.players, (gx, fy))  # hvp(0, .) = D_xy f, hvp(1, .) = D_yx g
            s, result = self._solve(hvp, pre, group)
            self._check_finite([
                ("loss_x (stage: forward)", loss_x.detach()), ("loss_y (stage: forward)", loss_y.detach()),
                ("gradient of player x (stage: gradient)", grads[0]),
                ("gradient of player y (stage: gradient)", grads[1]),
                ("GMRES solution for player x (stage: mixed HVP / GMRES solve)", s[0]),
                ("GMRES solution for player y (stage: mixed HVP / GMRES solve)", s[1]),
            ])
            self._apply([-s[0], -s[1]])
            for player, part in zip(self.players, s):
                self.state[player.name].update(square_avg=new_avgs[player.name], warm_start=part)
        self.state["game"]["step"] = step
        self.info = {"iter_num": result.iterations, "residual": result.residual_norm,
                     "converged": result.converged, "hvp_passes": hvp.passes, "time": time.perf_counter() - timer}
        return loss_x.detach(), loss_y.detach()

    def _solve(self, hvp: MixedHVP, pre, group) -> tuple[tuple[Tensor, Tensor], Any]:
        """Solve the block system by GMRES on the Schur complement of the smaller player a:

            (I - η_a D_ab η_b D_ba) s_a = η_a (g_a - D_ab η_b g_b),   s_b = η_b (g_b - D_ba s_a).

        Back-substitution makes b's block row exact, so the full system's residual equals
        the Schur system's: stopping at tol·‖[η_x g_x; η_y g_y]‖ is the reference's test.
        The Krylov space of [[I, B], [C, I]] grows one power of BC per two matvecs, so this
        takes about half of full GMRES's matvecs, plus one for the rhs and one to back-substitute.
        """
        a = 0 if self.players[0].numel <= self.players[1].numel else 1
        b = 1 - a
        (eta_a, eta_grad_a), (eta_b, eta_grad_b) = pre[a], pre[b]

        def schur(v: Tensor) -> Tensor:
            return v - eta_a * hvp(a, eta_b * hvp(b, v))

        rhs = eta_grad_a - eta_a * hvp(a, eta_grad_b)
        threshold = max(group["tol"] * float(torch.sqrt(eta_grad_a.square().sum() + eta_grad_b.square().sum())),
                        group["atol"])
        w0 = self.state[self.players[a].name].get("warm_start") if group["warm_start"] else None
        result = gmres(schur, rhs, w0, 0.0, threshold, group["restart"], group["max_iter"])
        s = [None, None]
        s[a] = result.solution
        s[b] = eta_grad_b - eta_b * hvp(b, s[a])
        return (s[0], s[1]), result
