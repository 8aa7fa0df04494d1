"""Lists of tensors as one flat vector and back (for analysis code; the optimizers keep each
player's parameters as views into one flat buffer, :mod:`fastgame.linalg.params`)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """The tensors' entries concatenated into one 1-D tensor (a copy)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def split_like(vec: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    """Views of consecutive pieces of the flat ``vec``, shaped like ``tensors`` in turn."""
    out, offset = [], 0
    for t in tensors:
        out.append(vec[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return out
