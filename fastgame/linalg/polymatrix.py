r"""The off-diagonal Hessian blocks of an n-player game, as products on flat vectors.

Player i minimises f_i(x_1, …, x_n). The interaction matrix H_o has the blocks
(H_o)_{ij} = D²_{x_i x_j} f_i for j ≠ i and zero diagonal blocks. Its product with
v = (v_1, …, v_n) needs one double-backward pass per player, not one per pair:

    (H_o v)_i = Σ_{j≠i} D²_{x_i x_j} f_i v_j = ∇_{x_i} ⟨∇_{x_{−i}} f_i, v_{−i}⟩,

since the sum over j of the mixed blocks is the x_i-derivative of one scalar, the inner
product of f_i's create_graph gradient for the other players with their parts of v.
``pairwise=True`` takes the n(n−1) single-block products instead (one pass per pair, as the
public research code of the method does), to measure what the n-pass product saves.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .distributed import all_reduce_mean
from .hvp import mixed_hvp
from .params import Player


class PolymatrixHVP:
    """Products with H_o from each player's create_graph gradients.

    ``grads[i][j]`` are the per-parameter gradients ∇_{x_j} f_i (with graph where they depend
    on the parameters). ``passes`` counts the double-backward passes taken; a product whose
    gradients carry no graph (the players do not interact there) is zero and takes none.
    Results are averaged across data-parallel ranks.
    """

    def __init__(self, players: Sequence[Player], grads: Sequence[Sequence[Sequence[Tensor]]],
                 pairwise: bool = False) -> None:
        self.players = list(players)
        self.grads = grads
        self.pairwise = pairwise
        self.passes = 0

    def interacts(self, i: int, j: int) -> bool:
        """Whether block (i, j) of H_o can be nonzero: ∇_{x_j} f_i carries a graph."""
        return i != j and any(g.requires_grad for g in self.grads[i][j])

    def two_groups(self) -> Optional[tuple[list[int], list[int]]]:
        """Players split into two groups with no interaction inside either (a two-colouring of
        the graph with an edge where block (i, j) or (j, i) can be nonzero), or None if there
        is none (an odd cycle of interactions, or no interaction at all)."""
        n = len(self.players)
        edges = [[j for j in range(n) if self.interacts(i, j) or self.interacts(j, i)] for i in range(n)]
        if not any(edges):
            return None
        colour: list[Optional[int]] = [None] * n
        for root in range(n):
            if colour[root] is not None:
                continue
            colour[root], stack = 0, [root]
            while stack:
                i = stack.pop()
                for j in edges[i]:
                    if colour[j] is None:
                        colour[j] = 1 - colour[i]
                        stack.append(j)
                    elif colour[j] == colour[i]:
                        return None
        return [i for i in range(n) if colour[i] == 0], [i for i in range(n) if colour[i] == 1]

    def __call__(self, vecs: Sequence[Tensor]) -> list[Tensor]:
        """(H_o v)_i for every player i, from the players' flat parts ``vecs`` of v."""
        return [self.row(i, vecs) for i in range(len(self.players))]

    def row(self, i: int, vecs: Sequence[Optional[Tensor]], sources: Optional[Sequence[int]] = None) -> Tensor:
        """(H_o v)_i = Σ_{j≠i} D²_{x_i x_j} f_i v_j, a flat vector of player i; with ``sources``,
        the sum over those j only (the other entries of ``vecs`` may be None)."""
        others = [j for j in (range(len(self.players)) if sources is None else sources) if j != i]
        if not self.pairwise:
            return self._pass(i, others, vecs)
        target = self.players[i]
        total = torch.zeros(target.numel, dtype=target.dtype, device=target.device)
        for j in others:
            total += self._pass(i, [j], vecs)
        return total

    def _pass(self, i: int, sources: Sequence[int], vecs: Sequence[Optional[Tensor]]) -> Tensor:
        """∇_{x_i} Σ_{j ∈ sources} ⟨∇_{x_j} f_i, v_j⟩ in one pass (none if no gradient has a graph)."""
        target = self.players[i]
        grads = [g for j in sources for g in self.grads[i][j]]
        if not any(g.requires_grad for g in grads):
            return torch.zeros(target.numel, dtype=target.dtype, device=target.device)
        pieces = [piece for j in sources for piece in self.players[j].split(vecs[j])]
        out = mixed_hvp(grads, target.params, pieces)
        self.passes += 1
        with torch.no_grad():
            return all_reduce_mean(target.gather(out))
