"""Lists of tensors as one flat vector and back (for analysis code; the optimizers keep each
player's parameters as views into one flat buffer, :mod:`fastgame.linalg.params`)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """The tensors' entries concatenated into one 1-D tensor (a copy; torch's C++ flatten, about
    half the host time of a Python cat of reshapes, which matters once per HVP pass)."""
    tensors = list(tensors)
    if len(tensors) == 1:  # torch's flatten returns a view of a lone tensor; callers reduce in place
        return tensors[0].reshape(-1).clone()
    return torch._utils._flatten_dense_tensors(tensors)


def split_like(vec: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    """Views of consecutive pieces of the flat ``vec``, shaped like ``tensors`` in turn."""
    if all(t.numel() for t in tensors):  # torch's C++ unflatten (narrow + view)
        return list(torch._utils._unflatten_dense_tensors(vec, list(tensors)))
    out, offset = [], 0
    for t in tensors:
        out.append(vec[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return out
