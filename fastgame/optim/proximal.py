"""Proximal training (Farnia & Ozdaglar, ICML 2020)."""
from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor

from ..linalg.hvp import MixedHVP
from .base import Proposal
from .checks import nonnegative, positive, positive_int
from .dynamics import RuleDynamics


class ProximalTraining(RuleDynamics):
    r"""Gradient play on the proximal objective of a zero-sum game (x, the max player, is the
    discriminator D; y, the min player, the generator G):

        V^prox_λ(G, D) = max_D̃ V(G, D̃) − λ‖D − D̃‖²,

    the inner maximum approximated by k ascent steps warm-started at D,
    D̃₀ = D, D̃_{j+1} = D̃_j + η_in (∇_D V(G, D̃_j) − 2λ(D̃_j − D)). Then, by Danskin's theorem,
    G descends ∇_G V(G, D̃_k) and D ascends ∇_D V^prox = 2λ(D̃_k − D), each through its update
    rule. λ-proximal equilibria (Nash equilibria of V^prox_λ) lie between Nash (λ → ∞) and
    Stackelberg equilibria (λ → 0), and exist for Wasserstein GANs where Nash equilibria do not.
    Farnia & Ozdaglar, "Do GANs always have Nash equilibria?" (ICML 2020).

    Args:
        prox: λ > 0 (game-wide). inner_steps: k. inner_lr: η_in, the inner ascent's step size.
        optimizer, momentum, betas, eps: the players' update rules (see ``RuleDynamics``).

    ``step`` needs a closure (evaluated at every inner iterate). Zero-sum only.
    Cost per step: k + 1 gradient evaluations, 0 HVP passes. Capturable (if the closure is).
    """

    hyperparameters = {**RuleDynamics.hyperparameters, "prox": positive, "inner_steps": positive_int,
                       "inner_lr": nonnegative}
    game_wide = RuleDynamics.game_wide | {"prox", "inner_steps", "inner_lr"}
    needs_closure = True

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float = 1e-3,
                 lr_min: float = 1e-3, prox: float = 1.0, inner_steps: int = 5, inner_lr: float = 1e-2,
                 **kwargs: Any) -> None:
        if kwargs.get("general_sum"):
            raise ValueError("ProximalTraining is defined for zero-sum games (one loss V) only")
        super().__init__(max_params, min_params, lr_max, lr_min, prox=prox, inner_steps=inner_steps,
                         inner_lr=inner_lr, **kwargs)

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: MixedHVP, step: Tensor) -> Proposal:
        group = self.param_groups[0]  # prox, inner_steps and inner_lr are game-wide
        lam, k, inner_lr = group["prox"], group["inner_steps"], group["inner_lr"]
        offset = grads[0].new_zeros(grads[0].shape)  # D̃ − D
        checks = []
        for j in range(k):
            # grads[0] is ∇_D V at D̃_j (the pipeline's own gradients for j = 0)
            offset = offset + inner_lr * (grads[0] - 2 * lam * offset)
            losses, grads = self._gradients_at((offset, None))
            checks += self._extrapolated_checks(losses, grads, f"at inner ascent iterate {j + 1}")
        directions = [-2 * lam * offset, grads[1]]  # each player's descent direction of ∓V^prox
        updates, state = self.rule_updates(directions, step)
        return Proposal(updates, state, checks)

    @property
    def grad_evals(self) -> int:
        """The pipeline's evaluation and one per inner ascent iterate."""
        return self.param_groups[0]["inner_steps"] + 1
