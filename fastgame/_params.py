"""A player's parameters as one flat buffer.

Each parameter of a player becomes a view into a single flat tensor allocated once, so the
solver works on flat vectors without ``torch.cat`` and applying an update is one ``add_``.
If something re-binds a parameter's storage later (``module.to(...)``, ``p.data = ...``),
:meth:`Player.ensure_flat` notices and flattens again.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor


def as_param_list(params: Iterable[Tensor], name: str) -> list[Tensor]:
    """Validate one player's parameters: a non-empty list of distinct leaf tensors that
    require grad and share one dtype and device."""
    if isinstance(params, Tensor):
        raise ValueError(f"{name} must be an iterable of tensors, got a single Tensor; wrap it in a list")
    try:
        params = list(params)
    except TypeError:
        raise ValueError(f"{name} must be an iterable of tensors, got {type(params).__name__}") from None
    if not params:
        raise ValueError(f"{name} is empty: each player needs at least one parameter")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise ValueError(f"{name}[{i}] is a {type(p).__name__}, not a Tensor")
        if not p.is_leaf:
            raise ValueError(f"{name}[{i}] is not a leaf tensor; optimize the leaf it was computed from")
        if not p.requires_grad:
            raise ValueError(f"{name}[{i}] does not require grad")
        if not p.is_floating_point():
            raise ValueError(f"{name}[{i}] has dtype {p.dtype}; parameters must be floating point")
        if p.dtype != params[0].dtype or p.device != params[0].device:
            raise ValueError(f"{name} mixes dtypes or devices ({params[0].dtype} on {params[0].device} "
                             f"and {p.dtype} on {p.device} at index {i}); one player's parameters must share both")
    if len({id(p) for p in params}) != len(params):
        raise ValueError(f"{name} lists the same parameter more than once")
    return params


class Player:
    """The parameters of one player of a two-player game, viewed as one flat buffer."""

    def __init__(self, params: Sequence[Tensor], name: str) -> None:
        self.params = list(params)
        self.name = name
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.numel = sum(self.numels)
        self.flat: Tensor = torch.empty(0)
        self._ptrs: list[int] = []
        self._flatten()

    @property
    def dtype(self) -> torch.dtype:
        return self.flat.dtype

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def _flatten(self) -> None:
        p0 = self.params[0]
        flat = torch.empty(self.numel, dtype=p0.dtype, device=p0.device)
        with torch.no_grad():
            for p, view in zip(self.params, self.split(flat)):
                view.copy_(p)
                p.data = view
        self.flat = flat
        self._ptrs = [p.data_ptr() for p in self.params]

    def ensure_flat(self) -> bool:
        """Re-flatten if a parameter no longer lives in the flat buffer; True if it did."""
        if all(p.data_ptr() == ptr for p, ptr in zip(self.params, self._ptrs)):
            return False
        as_param_list(self.params, self.name)  # a .to() may have mixed dtypes or devices
        self._flatten()
        return True

    def split(self, vec: Tensor) -> list[Tensor]:
        """Views of a flat vector (last dimension) shaped like the parameters."""
        lead = vec.shape[:-1]
        return [t.view(tuple(lead) + tuple(s)) for t, s in zip(torch.split(vec, self.numels, dim=-1), self.shapes)]

    def gather(self, tensors: Sequence[Tensor], batch: int | None = None) -> Tensor:
        """One flat vector (or a ``(batch, numel)`` matrix) from per-parameter tensors."""
        if batch is None:
            return torch.cat([t.reshape(-1) for t in tensors])
        # materialize_grads gives unbatched zeros for inputs a batched pass does not reach
        return torch.cat([(t if t.dim() > len(s) else t.expand(batch, *s)).reshape(batch, -1)
                          for t, s in zip(tensors, self.shapes)], dim=1)
