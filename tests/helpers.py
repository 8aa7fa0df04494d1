"""Helpers shared by the tests (import as ``from tests.helpers import flat``)."""
import torch
from torch import nn


def flat(*modules: nn.Module) -> torch.Tensor:
    """The modules' parameters, detached and concatenated into one new 1-D tensor."""
    return torch.cat([p.detach().reshape(-1) for m in modules for p in m.parameters()])


class NanGradient(torch.autograd.Function):
    """Identity whose gradient is NaN: a finite value with a non-finite derivative."""

    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, float("nan"))
