"""Mixed second-derivative products of a two-player game.

One ``create_graph`` gradient of the loss is taken for both players; every mixed product
then differentiates that gradient once more (a double-backward "pass"), which is the
fastest HVP available to autograd. Players are indexed 0 (x, the max player of a zero-sum
game) and 1 (y). ``D[0]`` maps a y-vector to ``∂(g_y·w)/∂x`` (that is D_xy w) and ``D[1]``
maps an x-vector to ``∂(g_x·v)/∂y`` (D_yx v).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .distributed import all_reduce_mean
from .params import Player


def mixed_hvp(grads: Sequence[Tensor], params: Sequence[Tensor], vecs: Sequence[Tensor],
              batched: bool = False) -> tuple[Tensor, ...]:
    """∂(Σ_i grads[i]·vecs[i])/∂params in one double-backward pass: with ``grads`` one player's
    gradient (taken with ``create_graph=True``) and ``params`` the other player's parameters,
    the mixed block times ``vecs`` (e.g. D_xy w = ∂(∇_y f·w)/∂x); with ``params`` all of them,
    the Hessian-vector product.

    ``vecs`` are shaped like ``grads`` (with a leading batch dimension when ``batched``: one
    pass for all rows). Gradient entries without a graph do not depend on ``params`` and are
    left out; with none left the product is zero and no pass is taken. Returns one tensor per
    parameter (zeros where a parameter does not enter), the graph kept for further passes.
    """
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    if not live:
        lead = (vecs[0].shape[0],) if batched and vecs else ()
        return tuple(torch.zeros(lead + p.shape, dtype=p.dtype, device=p.device) for p in params)
    return torch.autograd.grad([grads[i] for i in live], list(params), grad_outputs=[vecs[i] for i in live],
                               retain_graph=True, materialize_grads=True, is_grads_batched=batched)


class MixedHVP:
    """Products with the mixed blocks D_xy, D_yx from create_graph gradients.

    ``grads[i]`` are the per-parameter gradients (with graph) that player ``i``'s mixed
    block differentiates, i.e. ``grads[1]`` = ∇_y f for D_xy. ``passes`` counts the
    double-backward passes taken (a batched pass counts once).
    """

    def __init__(self, players: Sequence[Player], grads: Sequence[Sequence[Tensor]]) -> None:
        self.players = players
        # Only gradient entries that still carry a graph can be differentiated again.
        self._interacts = [any(g.requires_grad for g in gs) for gs in grads]
        self.grads = grads
        self.passes = 0

    def uncounted(self, record: Callable[[], None]) -> int:
        """Run ``record`` (a CUDA graph capture: the passes it launches are recorded, not run)
        without counting its passes; returns how many it took, for :meth:`count` at each replay."""
        before = self.passes
        try:
            record()
        finally:
            taken, self.passes = self.passes - before, before
        return taken

    def count(self, passes: int) -> None:
        """Count passes that ran outside :meth:`__call__` (a replayed graph's)."""
        self.passes += passes

    def __call__(self, to: int, vec: Tensor) -> Tensor:
        """D_xy vec (``to=0``, vec a y-vector) or D_yx vec (``to=1``, vec an x-vector)."""
        return self._product(to, vec, batch=None)

    def batched(self, to: int, vecs: Tensor) -> Tensor:
        """The same for the rows of ``vecs`` (k, n) in one pass, batched over the rows (a single
        row takes a plain pass: autograd's vmapped backward costs ~30% more for one row on a CPU)."""
        if vecs.shape[0] == 1:
            return self._product(to, vecs[0], batch=None).unsqueeze(0)
        return self._product(to, vecs, batch=vecs.shape[0])

    def _product(self, to: int, vec: Tensor, batch: int | None) -> Tensor:
        src = 1 - to
        target = self.players[to]
        if not self._interacts[src]:  # the players do not interact: the mixed block is zero
            shape = (target.numel,) if batch is None else (batch, target.numel)
            return torch.zeros(shape, dtype=target.dtype, device=target.device)
        out = mixed_hvp(self.grads[src], target.params, self.players[src].split(vec), batched=batch is not None)
        self.passes += 1
        with torch.no_grad():
            return all_reduce_mean(target.gather(out, batch))
