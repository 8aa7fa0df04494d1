"""Best-response-manifold training (M. Ehab, "Towards Theoretically-Grounded GAN Training",
after the STON'R algorithm of Daskalakis, Golowich, Skoulakis & Zampetakis)."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

from ..linalg.cg import run_cg, stop_threshold
from ..linalg.cg_drivers import Masked
from .base import Proposal
from .checks import boolean, positive_int
from .dynamics import GameDynamics
from ..linalg.game_hvp import GameHVP


class BestResponseManifold(GameDynamics):
    r"""The generator descends its loss on the discriminator's best-response manifold
    𝓜 = {(D, G): ∇_D ℓ_D(D, G) = 0} (x, group 0, is the discriminator D; y the generator G):

    1. v = ∇ℓ_G = (∇_D ℓ_G, ∇_G ℓ_G) is projected onto 𝓜's tangent space, the null space of
       M = ∂(∇_D ℓ_D)/∂(D, G) = [H_DD, H_DG]: p = v − Mᵀw with w the least-squares solution
       of MMᵀw = Mv, by ``ls_iters`` conjugate-gradient iterations on mixed/full HVPs,
       warm-started from the last step's w;
    2. both players move along the tangent: (D, G) ← (D, G) − η_G p (``lr_min``);
    3. a retraction back onto 𝓜: ``retraction_steps`` gradient steps of the discriminator on
       ℓ_D, D ← D − η_D ∇_D ℓ_D at the moved point (``lr_max``).

    p is the Riemannian gradient of ℓ_G restricted to 𝓜: the generator follows the total
    derivative of its loss along the discriminator's best response (cooperating with it
    rather than exploiting it). With ``general_sum=True``
    the losses are ``(loss_D, loss_G)`` (e.g. a WGAN-GP critic loss and the generator loss);
    zero-sum, ℓ_D = −f and ℓ_G = f. M. Ehab, "Towards Theoretically-Grounded GAN Training"
    (report), building on Daskalakis, Golowich, Skoulakis & Zampetakis, "STay-ON-the-Ridge:
    Guaranteed Convergence to Local Minimax Equilibrium in Nonconvex-Nonconcave Games" (2022).

    Args:
        ls_iters: CG iterations of the least-squares solve. retraction_steps: discriminator
            steps of the retraction. warm_start: start the solve from the last step's w.

    ``step`` needs a closure (evaluated at every retraction iterate). Cost per step:
    1 + ``retraction_steps`` gradient evaluations and 2·``ls_iters`` + 1 HVP passes (+ 2 when
    warm-started from a saved w).
    Capturable (the solve runs a fixed number of iterations).
    """

    hyperparameters = {**GameDynamics.hyperparameters, "ls_iters": positive_int,
                       "retraction_steps": positive_int, "warm_start": boolean}
    game_wide = GameDynamics.game_wide | {"ls_iters", "retraction_steps", "warm_start"}
    state_keys = frozenset({"ls_solution"})
    second_order = True
    needs_closure = True

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float = 1e-2,
                 lr_min: float = 1e-2, ls_iters: int = 10, retraction_steps: int = 5, warm_start: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min, ls_iters=ls_iters,
                         retraction_steps=retraction_steps, warm_start=warm_start, **kwargs)

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("ls_solution",) if group is self.param_groups[0] else ()  # D's least-squares solve

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: GameHVP, step: Tensor) -> Proposal:
        group = self.param_groups[0]  # the solver settings are game-wide
        d, g = self.directions(grads)  # ∇_D ℓ_D, ∇_G ℓ_G
        v = (hvp.cross_gradient(0), g)  # ∇ℓ_G: on 𝓜, ℓ_G also changes through D

        normal = _NormalEquations(hvp, d)
        saved = self.state.get(self.players[0].name, {}).get("ls_solution")
        if saved is None or not group["warm_start"]:  # w = 0: MMᵀw and Mᵀw are zero, no passes
            w, mm_w, mt_w = torch.zeros_like(d), torch.zeros_like(d), d.new_zeros(d.numel() + g.numel())
        else:
            w = saved.clone()
            mt_w, mm_w, _ = normal.products(w, w)
        r = hvp.jacobian_row(0, v) - mm_w  # Mv − MMᵀw
        rr = r.dot(r)
        # CG, a fixed count (no host read), tracking Mᵀw alongside w as the CGD solve tracks u
        run_cg(normal, w, mt_w, r, stop_threshold(0.0, rr, 0.0), group["ls_iters"], Masked(None), fused=self.ops)
        rr = r.dot(r)
        mt_w = (mt_w[:d.numel()], mt_w[d.numel():])
        tangent = [vi - mi for vi, mi in zip(v, mt_w)]  # v − Mᵀw: v's part along 𝓜
        checks = [("least-squares residual of the projection (stage: HVP / least-squares solve)", rr),
                  ("tangent direction of the discriminator (stage: HVP / projection)", tangent[0]),
                  ("tangent direction of the generator (stage: HVP / projection)", tangent[1])]

        lr_d, lr_g = self._lr_tensors()
        deltas = [-lr_g * tangent[0], -lr_g * tangent[1]]
        for j in range(group["retraction_steps"]):
            losses, grads_at = self._gradients_at(deltas)
            checks += self._extrapolated_checks(losses, (grads_at[0], None), f"at retraction step {j + 1}")
            deltas[0] = deltas[0] - lr_d * self.directions(grads_at)[0]
        state = {self.players[0].name: {"ls_solution": w}, self.players[1].name: {}}
        return Proposal(deltas, state, checks, {"ls_residual_sq": rr})

    @property
    def grad_evals(self) -> int:
        """The pipeline's evaluation and one per retraction step."""
        return 1 + self.param_groups[0]["retraction_steps"]


class _NormalEquations:
    """M Mᵀ w = M v of the projection as :func:`~fastgame.linalg.cg.run_cg` sees it (M = [H_DD, H_DG],
    the discriminator's block row of the Jacobian): each product also gives Mᵀp, both players'
    parts in one flat vector, which CG accumulates into Mᵀw. Two passes a product."""

    def __init__(self, hvp: GameHVP, like: Tensor) -> None:
        self.hvp = hvp
        self.scale = torch.ones((), dtype=like.dtype, device=like.device)  # CG's direction enters as is

    def products(self, p: Tensor, sp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mt_p = self.hvp.jacobian_transpose((sp, None))
        mm_p = self.hvp.jacobian_row(0, mt_p)
        return torch.cat(mt_p), mm_p, p.dot(mm_p)
