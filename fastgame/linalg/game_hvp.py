"""Products with the Jacobian of a two-player game's vector field, for the dynamics that
correct the gradient with second-order terms (consensus, SGA, Hamiltonian).

The vector field is v = (∇ₓℓ_x, ∇ᵧℓ_y), each player's gradient of its own loss (zero-sum:
ℓ_x = −f for the max player x, ℓ_y = f), and J = ∂v/∂z its Jacobian. Every product is one
double-backward pass through the step's create_graph gradients, as the mixed blocks of
:class:`~fastgame.linalg.hvp.MixedHVP`, and counts in the same ``passes`` (as there, a
product of gradients without a graph is zero and takes, and counts, no pass).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .distributed import all_reduce_mean
from .hvp import MixedHVP, mixed_hvp
from .params import Player


class GameHVP(MixedHVP):
    """The mixed blocks (as :class:`MixedHVP`) plus Jᵀu and Aᵀu, with A = ½(J − Jᵀ).

    ``step_grads[i]`` is player i's per-parameter gradient that drives its step and
    ``cross[i]`` the gradient of the *other* player's loss with respect to player i (see
    ``GameOptimizer._gradients``; kept as :class:`MixedHVP`'s ``grads``), both with graph;
    ``signs[i]`` turns ``step_grads[i]`` into the gradient of player i's own loss (−1 for the
    max player of a zero-sum game).
    """

    def __init__(self, players: Sequence[Player], step_grads: Sequence[Sequence[Tensor]],
                 cross: Sequence[Sequence[Tensor]], signs: tuple[float, float]) -> None:
        super().__init__(players, cross)
        self.step_grads, self.signs = step_grads, signs

    def _pass(self, grads: Sequence[Tensor], to: Sequence[int], vecs: Sequence[Tensor]) -> list[Tensor]:
        """∂(Σ grads·vecs)/∂(players ``to``), one flat vector per player in ``to``: one pass,
        or none (zeros, not counted) when no entry of ``grads`` has a graph (see :func:`mixed_hvp`)."""
        if not any(g.requires_grad for g in grads):  # as MixedHVP._product: nothing depends on z
            return [torch.zeros(self.players[i].numel, dtype=self.players[i].dtype, device=self.players[i].device)
                    for i in to]
        params = [p for i in to for p in self.players[i].params]
        out = mixed_hvp(grads, params, vecs)
        self.passes += 1
        flats, start = [], 0
        with torch.no_grad():
            for i in to:
                n = len(self.players[i].params)
                flats.append(all_reduce_mean(self.players[i].gather(out[start:start + n])))
                start += n
        return flats

    def jacobian_transpose(self, u: Sequence[Optional[Tensor]]) -> tuple[Tensor, Tensor]:
        """Jᵀu = ∂(v·u)/∂z in one pass over both players (with u = v: ∇H, H = ½‖v‖²). ``u[1]``
        None: u_y = 0, and the pass leaves player y's gradient out (less backward work)."""
        (sx, sy), (px, py) = self.step_grads, self.players
        if u[1] is None:
            gx, gy = self._pass(list(sx), (0, 1), px.split(self.signs[0] * u[0]))
        else:
            gx, gy = self._pass([*sx, *sy], (0, 1), px.split(self.signs[0] * u[0]) + py.split(self.signs[1] * u[1]))
        return gx, gy

    def cross_gradient(self, i: int) -> Tensor:
        """∇_i ℓ_j, the gradient of the other player's loss with respect to player i (flat; no pass)."""
        with torch.no_grad():
            return all_reduce_mean(self.signs[1 - i] * self.players[i].gather(self.grads[i]))

    def jacobian_row(self, i: int, u: Sequence[Tensor]) -> Tensor:
        """(Ju)_i = ∂(∇ₓℓ_i·u_x + ∇ᵧℓ_i·u_y)/∂z_i, player i's block row of J times u, in one
        pass over player i's parameters."""
        j = 1 - i
        own, cross = self.step_grads[i], self.grads[j]  # ∇_i ℓ_i and ∇_j ℓ_i, up to the sign of ℓ_i
        vecs = self.players[i].split(self.signs[i] * u[i]) + self.players[j].split(self.signs[i] * u[j])
        return self._pass([*own, *cross], (i,), vecs)[0]

    def antisymmetric_transpose(self, u: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Aᵀu, A = ½(J − Jᵀ), in two mixed passes. A's diagonal blocks vanish (a player's
        own Hessian is symmetric), and its x row is ½(D_xy ℓ_y − D_xy ℓ_x) u_y: the x-derivative
        of ½(∇ᵧℓ_y − ∇ᵧℓ_x)·u_y, likewise for y; Aᵀ = −A."""
        out = []
        for to, other in ((0, 1), (1, 0)):
            own, cross = self.step_grads[other], self.grads[other]  # ∇_other ℓ_other, ∇_other ℓ_to (signed below)
            s_own, s_cross = self.signs[other], self.signs[to]
            split = self.players[other].split
            if own is cross:  # zero-sum: one gradient, the signs combine
                grads, vecs = own, split(0.5 * (s_own - s_cross) * u[other])
            else:
                grads, vecs = [*own, *cross], split(0.5 * s_own * u[other]) + split(-0.5 * s_cross * u[other])
            out += self._pass(grads, (to,), vecs)
        return out[0], out[1]
