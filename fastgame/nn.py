"""Modules whose second derivatives are cheap: what CGD's mixed Hessian-vector products need.

A mixed HVP differentiates a gradient again, so each layer's *double backward* runs on every
pass. For ``nn.BatchNorm*d`` autograd's double backward of ``native_batch_norm`` is a composite of
about 120 ops per layer (DCGAN-32: 327 arithmetic ops for one D_xy pass through the generator's
BatchNorm layers, against 36 for D_yx; ``bench/batchnorm_hvp.py``). :class:`BatchNorm` keeps the
native kernels for the forward and for a plain backward, and gives a ``create_graph`` backward
a differentiable formula of a dozen ops, whose own derivative is short (82 ops for that
D_xy pass). :func:`convert_batchnorm` swaps it into a model, as
``nn.SyncBatchNorm.convert_sync_batchnorm`` does for its own BatchNorm.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class _TrainingBatchNorm(torch.autograd.Function):
    """Batch-statistics BatchNorm over dim 1: native forward; backward native when no graph
    is wanted, else the closed form in differentiable ops (recomputing the statistics from
    the input, so derivatives through them are exact)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                running_mean: Optional[Tensor], running_var: Optional[Tensor], momentum: float,
                eps: float) -> Tensor:
        out, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps)  # also updates the running stats
        ctx.save_for_backward(x, weight, save_mean, save_invstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        x, weight, save_mean, save_invstd = ctx.saved_tensors
        need = list(ctx.needs_input_grad[:3])
        none = (None, None, None, None)
        if not torch.is_grad_enabled():  # a plain backward (e.g. a D_yx pass): one fused kernel
            gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
                grad, x, weight, None, None, save_mean, save_invstd, True, ctx.eps, need)
            return (gx, gw if weight is not None else None, gb if weight is not None else None) + none
        # create_graph: x̂ = (x - μ)·r, r = 1/√(σ² + eps) per channel; with n values per channel
        # dβ = Σg, dγ = Σ g·x̂, dx = γ·r·(g - (dβ + x̂·dγ)/n).
        xs, gs = (x.float(), grad.float()) if x.dtype in _LOW_PRECISION else (x, grad)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = xs - xs.mean(dims, keepdim=True)
        invstd = torch.rsqrt((centred * centred).mean(dims, keepdim=True) + ctx.eps)
        xhat = centred * invstd
        gb = gs.sum(dims)
        gw = (gs * xhat).sum(dims)
        scale = invstd if weight is None else weight.reshape(shape) * invstd
        gx = scale * (gs - (gb.reshape(shape) + xhat * gw.reshape(shape)) / (x.numel() // x.shape[1]))
        if weight is None:
            gw = gb = None
        return (gx.to(x.dtype) if need[0] else None, gw if need[1] else None, gb if need[2] else None) + none


class BatchNorm(_BatchNorm):
    """BatchNorm over dim 1 with cheap second derivatives (see the module doc). The same
    outputs, gradients, second derivatives, running statistics and ``state_dict`` as the
    ``nn.BatchNorm1d/2d/3d`` it replaces; build it with :func:`convert_batchnorm`."""

    def __init__(self, *args: Any, check_input_dim: Optional[Callable[[Any, Tensor], None]] = None,
                 **kwargs: Any) -> None:
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
            return super().forward(x)  # running statistics: an affine map, native is cheap to differentiate
        if x.numel() // max(x.shape[1], 1) <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        momentum = 0.0 if self.momentum is None else self.momentum
        update = self.training and self.track_running_stats
        if update:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        return _TrainingBatchNorm.apply(x, self.weight, self.bias, self.running_mean if update else None,
                                        self.running_var if update else None, momentum, self.eps)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` in ``module`` by a :class:`BatchNorm` with the same
    hyperparameters and train/eval mode that shares its parameters and buffers (the same
    tensors: optimizers and the model's parameter list are unchanged); returns the module
    (converted in place, or the new layer if ``module`` itself is a BatchNorm).
    ``SyncBatchNorm`` (cross-process statistics) and lazy, not yet initialised BatchNorm are left
    as they are."""
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and not isinstance(
            module, nn.modules.lazy.LazyModuleMixin):
        return _converted(module)
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module


def _converted(bn: _BatchNorm) -> BatchNorm:
    new = BatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                    check_input_dim=type(bn)._check_input_dim, device="meta")
    for name, p in bn.named_parameters(recurse=False):
        setattr(new, name, p)
    for name, b in bn.named_buffers(recurse=False):
        setattr(new, name, b)
    return new.train(bn.training)


__all__ = ["BatchNorm", "convert_batchnorm"]
