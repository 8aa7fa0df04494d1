"""A player's parameters as one flat buffer.

Each parameter of a player becomes a view into a single flat tensor allocated once, so the
solver works on flat vectors without ``torch.cat`` and applying an update is one ``add_``.
If something re-binds a parameter's storage later (``module.to(...)``, ``p.data = ...``),
:meth:`Player.needs_flatten` notices and the optimizer flattens again.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor

from .flat import flatten, split_like


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
        if p.dtype == torch.float16:
            raise ValueError(f"{name}[{i}] is float16, which fastgame refuses: the solver's values (second moments, "
                             "CG residuals against tol) underflow in float16 and the step comes out wrong; keep "
                             "the parameters float32 and run the forward under torch.autocast(..., dtype=torch.bfloat16)")
        if p.dtype != params[0].dtype or p.device != params[0].device:
            raise ValueError(f"{name} mixes dtypes or devices ({params[0].dtype} on {params[0].device} "
                             f"and {p.dtype} on {p.device} at index {i}); one player's parameters must share both")
    if len({id(p) for p in params}) != len(params):
        raise ValueError(f"{name} lists the same parameter more than once")
    return params


def _memory_span(p: Tensor) -> tuple[int, int]:
    """The byte range [start, end) a tensor's elements occupy."""
    extent = 1 + sum((size - 1) * abs(stride) for size, stride in zip(p.shape, p.stride()))
    start = p.data_ptr() - sum((size - 1) * abs(stride) for size, stride in zip(p.shape, p.stride())
                               if stride < 0) * p.element_size()
    return start, start + extent * p.element_size()


def check_players(players: Sequence[Sequence[Tensor]], names: Sequence[str],
                  shapes: Optional[Sequence[Sequence[torch.Size]]] = None) -> None:
    """Checks across the players (two, or more in a polymatrix game): one dtype and device for the game, no two parameters
    sharing memory (each is optimised as its own variable, so sharing would be silently
    untied), and, with ``shapes``, that no parameter changed shape since construction."""
    for params, name in zip(players, names):
        as_param_list(params, name)
    for a in range(len(players)):
        for b in range(a + 1, len(players)):
            shared = {id(p) for p in players[a]} & {id(p) for p in players[b]}
            if shared:
                raise ValueError(f"{len(shared)} parameter(s) appear in both {names[a]} and {names[b]}; "
                                 "each parameter belongs to exactly one player")
    first = players[0][0]
    for params, name in zip(players, names):
        p = params[0]
        if p.dtype != first.dtype or p.device != first.device:
            raise ValueError(f"the players differ in dtype or device ({names[0]}: {first.dtype} on {first.device}, "
                             f"{name}: {p.dtype} on {p.device}); both players' parameters must share one "
                             "dtype and device (cast the models with .to() first)")
    if shapes is not None:
        for params, name, old in zip(players, names, shapes):
            for i, (p, s) in enumerate(zip(params, old)):
                if p.shape != s:
                    raise ValueError(f"parameter {i} of the {name} changed shape from {tuple(s)} to "
                                     f"{tuple(p.shape)} since the optimizer was built; build a new optimizer")
    spans = sorted((*_memory_span(p), name, i) for params, name in zip(players, names)
                   for i, p in enumerate(params) if p.numel() > 0 and p.data_ptr() != 0)
    for (s0, e0, n0, i0), (s1, e1, n1, i1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise ValueError(f"{n0}[{i0}] and {n1}[{i1}] share memory (e.g. tied weights as two parameters); "
                             "fastgame optimises each parameter as its own variable, which would untie them: "
                             "pass the shared tensor once")


class Player:
    """The parameters of one player of a game, viewed as one flat buffer."""

    def __init__(self, params: Sequence[Tensor], name: str) -> None:
        self.params = list(params)
        self.name = name
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.numel = sum(self.numels)
        self.flat: Tensor = torch.empty(0)
        self._ptrs: list[int] = []
        self.flatten()

    @property
    def dtype(self) -> torch.dtype:
        return self.flat.dtype

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def flatten(self) -> None:
        """Copy the parameters into a new flat buffer and make them views of it (validate
        first: see :func:`check_players`)."""
        p0 = self.params[0]
        flat = torch.empty(self.numel, dtype=p0.dtype, device=p0.device)
        with torch.no_grad():
            for p, view in zip(self.params, self.split(flat)):
                view.copy_(p)
                p.data = view
        self.flat = flat
        self._ptrs = [p.data_ptr() for p in self.params]

    def needs_flatten(self) -> bool:
        """Whether a parameter no longer lives in the flat buffer (``module.to()``, ``p.data = ...``)."""
        return not all(p.data_ptr() == ptr for p, ptr in zip(self.params, self._ptrs))

    def split(self, vec: Tensor) -> list[Tensor]:
        """Views of a flat vector (last dimension) shaped like the parameters."""
        if vec.dim() == 1:
            return split_like(vec, self.params)
        lead = vec.shape[:-1]
        return [t.view(tuple(lead) + tuple(s)) for t, s in zip(torch.split(vec, self.numels, dim=-1), self.shapes)]

    def gather(self, tensors: Sequence[Tensor], batch: int | None = None) -> Tensor:
        """One flat vector (or a ``(batch, numel)`` matrix) from per-parameter tensors."""
        if batch is None:
            return flatten(tensors)
        # materialize_grads gives unbatched zeros for inputs a batched pass does not reach
        return torch.cat([(t if t.dim() > len(s) else t.expand(batch, *s)).reshape(batch, -1)
                          for t, s in zip(tensors, self.shapes)], dim=1)
