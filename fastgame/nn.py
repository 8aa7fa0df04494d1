"""Modules whose second derivatives are cheap: what CGD's mixed Hessian-vector products need.

A mixed HVP differentiates a gradient again, so each layer's *double backward* runs on every
pass. For ``nn.BatchNorm*d`` autograd's double backward of ``native_batch_norm`` is a composite of
about 120 ops per layer (measured on DCGAN-32: 327 arithmetic ops for a D_xy pass through the
generator's three BatchNorm layers, 36 for D_yx; ``bench/batchnorm_hvp.py``). Written as plain
tensor ops, BatchNorm gets a double backward of about half as many, at the price of a longer
forward. :func:`convert_batchnorm` swaps it into a model, as ``nn.SyncBatchNorm.convert_sync_batchnorm``
does for its own BatchNorm.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class PlainBatchNorm(_BatchNorm):
    """BatchNorm over dim 1 whose training forward is plain tensor ops (mean, subtract, rsqrt,
    scale), so autograd derives a short double backward. Same outputs, running statistics
    and ``state_dict`` as the ``nn.BatchNorm1d/2d/3d`` it replaces; evaluation with running
    statistics calls the native kernel. Half-precision inputs (autocast) get their statistics
    in float32, as the native kernel computes them."""

    def __init__(self, *args, check_input_dim: Callable[[Tensor], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._native_check = check_input_dim

    def _check_input_dim(self, x: Tensor) -> None:
        if self._native_check is not None:  # the replaced class's rule (e.g. 4-D for BatchNorm2d)
            self._native_check(self, x)
        elif x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not (self.training or self.running_mean is None):
            return super().forward(x)  # running statistics: an affine map, the native kernel is fine
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        n = x.numel() // x.shape[1] if x.shape[1] else 0
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        xs = x.float() if x.dtype in _LOW_PRECISION else x
        mean = xs.mean(dims, keepdim=True)
        centred = xs - mean
        var = (centred * centred).mean(dims, keepdim=True)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.reshape(-1).to(self.running_mean.dtype), factor)
                self.running_var.lerp_(var.reshape(-1).to(self.running_var.dtype) * (n / (n - 1)), factor)
        y = centred * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` in ``module`` by a :class:`PlainBatchNorm` with the
    same hyperparameters and train/eval mode that shares its parameters and buffers (the same
    tensors: optimizers and the model's parameter list are unchanged); returns the module
    (converted in place, or the new layer if ``module`` itself is a BatchNorm).
    ``SyncBatchNorm`` (cross-process statistics) and lazy, not yet initialised BatchNorm are left
    as they are."""
    if _convertible(module):
        return _plain_copy(module)
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module


def _convertible(m: nn.Module) -> bool:
    return (isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
            and not isinstance(m, nn.modules.lazy.LazyModuleMixin))


def _plain_copy(bn: _BatchNorm) -> PlainBatchNorm:
    """The same layer as a PlainBatchNorm, sharing ``bn``'s Parameter and buffer objects (so an
    optimizer built on the model before the conversion still holds the right parameters)."""
    plain = PlainBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                           check_input_dim=type(bn)._check_input_dim, device="meta")
    for name, p in bn.named_parameters(recurse=False):
        setattr(plain, name, p)
    for name, b in bn.named_buffers(recurse=False):
        setattr(plain, name, b)
    return plain.train(bn.training)


__all__ = ["PlainBatchNorm", "convert_batchnorm"]
