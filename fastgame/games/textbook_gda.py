r"""Simultaneous and alternating gradient descent-ascent: the baselines CGD is compared with.

Both are ``torch.optim.Optimizer``\ s with the calling convention of fastgame's optimizers:
param group 0 is the max player, group 1 the min player, each with its own ``lr`` (so
schedulers work). ``step`` takes either

* a zero-sum loss f (a scalar tensor, or a closure returning one): the max player ascends
  f, the min player descends it; or
* a closure returning a pair ``(loss_max, loss_min)`` — e.g. ``game.losses`` — each
  descended by its own player (general-sum games).

AltGD moves one player and then re-evaluates the loss for the other, so it needs a closure.

These are the textbook forms, kept beside the step pipeline's :class:`fastgame.SimGD` and
:class:`fastgame.AltGD` (checked all-or-nothing commits, state, Adam rules, capture) on purpose:
they are the plain reference those are tested against (``tests/test_dynamics.py``), and the
diagnostics' default, since they take either kind of game's ``step`` argument without
configuration (the pipeline versions need ``general_sum=True`` for a pair of losses).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence, Union

import torch
from torch import Tensor

Objective = Union[Tensor, Sequence[Tensor]]
LossOrClosure = Union[Tensor, Callable[[], Objective]]


def _check_lr(name: str, lr: float) -> None:
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"invalid {name}: {lr!r} (must be a finite number >= 0)")


def _param_list(params: Iterable[Tensor], name: str) -> list[Tensor]:
    if isinstance(params, Tensor):
        raise ValueError(f"{name} must be an iterable of tensors, got a single Tensor; wrap it in a list")
    params = list(params)
    if not params:
        raise ValueError(f"{name} is empty: each player needs at least one parameter")
    return params


def _evaluate(loss: LossOrClosure) -> Objective:
    if callable(loss) and not isinstance(loss, Tensor):
        with torch.enable_grad():
            loss = loss()
    return loss


def _unpack(objective: Objective) -> tuple[Tensor, ...]:
    """(f,) for a zero-sum loss, (loss_max, loss_min) for a pair; all scalars."""
    if isinstance(objective, Tensor):
        parts: tuple[Tensor, ...] = (objective,)
    elif isinstance(objective, (tuple, list)) and len(objective) == 2 and all(isinstance(t, Tensor) for t in objective):
        parts = tuple(objective)
    else:
        raise ValueError("step expects a scalar zero-sum loss or a pair (loss_max, loss_min) of scalar tensors, "
                         f"got {type(objective).__name__}")
    for t in parts:
        if t.numel() != 1:
            raise ValueError(f"losses must be scalars, got shape {tuple(t.shape)}")
    return tuple(t.reshape(()) for t in parts)


def _grad(target: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    if not target.requires_grad:  # the loss depends on no parameter
        return [torch.zeros_like(p) for p in params]
    return list(torch.autograd.grad(target, list(params), retain_graph=True, allow_unused=True,
                                    materialize_grads=True))


def descent_directions(objective: Objective, max_params: Sequence[Tensor], min_params: Sequence[Tensor],
                       players: Sequence[int] = (0, 1)) -> dict[int, list[Tensor]]:
    """The gradients each requested player (0: max, 1: min) *descends*.

    ``objective`` is a zero-sum loss f (the max player descends −f, the min player f; one
    backward pass for both) or a pair ``(loss_max, loss_min)``.
    """
    parts = _unpack(objective)
    params = (list(max_params), list(min_params))
    if len(parts) == 1:
        wanted = [params[i] for i in players]
        flat = _grad(parts[0], [p for group in wanted for p in group])
        out, offset = {}, 0
        for i in players:
            sign = -1.0 if i == 0 else 1.0
            out[i] = [sign * g for g in flat[offset:offset + len(params[i])]]
            offset += len(params[i])
        return out
    return {i: _grad(parts[i], params[i]) for i in players}


class _GradientPlay(torch.optim.Optimizer):
    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor],
                 lr_max: float, lr_min: float) -> None:
        _check_lr("lr_max", lr_max)
        _check_lr("lr_min", lr_min)
        px, py = _param_list(max_params, "max_params"), _param_list(min_params, "min_params")
        if {id(p) for p in px} & {id(p) for p in py}:
            raise ValueError("a parameter appears in both max_params and min_params")
        super().__init__([{"params": px, "lr": lr_max, "player": "max"},
                          {"params": py, "lr": lr_min, "player": "min"}], {})

    def _directions(self, objective: Objective, players: Sequence[int]) -> dict[int, list[Tensor]]:
        return descent_directions(objective, self.param_groups[0]["params"], self.param_groups[1]["params"], players)

    def _apply(self, player: int, grads: Sequence[Tensor]) -> None:
        group = self.param_groups[player]
        with torch.no_grad():
            for p, g in zip(group["params"], grads):
                p.add_(g, alpha=-group["lr"])


class SimGD(_GradientPlay):
    r"""Simultaneous gradient descent-ascent: both players step from the same point.

    x ← x + η_max ∇ₓf,  y ← y − η_min ∇ᵧf  (or each descends its own loss).
    """

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor],
                 lr_max: float = 1e-3, lr_min: float = 1e-3) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min)

    def step(self, loss: LossOrClosure) -> Objective:  # type: ignore[override]
        """One simultaneous step; returns the (detached) objective."""
        objective = _evaluate(loss)
        grads = self._directions(objective, (0, 1))
        for i in (0, 1):
            self._apply(i, grads[i])
        return _detach(objective)


class AltGD(_GradientPlay):
    r"""Alternating gradient descent-ascent: one player steps, then the other from the new point.

    Args:
        max_first: the max player (discriminator) moves first, as in GAN training; False
            moves the min player first (the order of Mescheder et al. 2018).
    """

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor],
                 lr_max: float = 1e-3, lr_min: float = 1e-3, max_first: bool = True) -> None:
        super().__init__(max_params, min_params, lr_max, lr_min)
        self.max_first = bool(max_first)

    def step(self, closure: Callable[[], Objective]) -> Objective:  # type: ignore[override]
        """One alternating step; ``closure`` recomputes the loss(es). Returns the first objective."""
        if isinstance(closure, Tensor) or not callable(closure):
            raise ValueError("AltGD.step needs a closure: the second player's gradient is taken after "
                             "the first player has moved")
        first = _evaluate(closure)
        order = (0, 1) if self.max_first else (1, 0)
        self._apply(order[0], self._directions(first, order[:1])[order[0]])
        self._apply(order[1], self._directions(_evaluate(closure), order[1:])[order[1]])
        return _detach(first)


def _detach(objective: Objective) -> Objective:
    if isinstance(objective, Tensor):
        return objective.detach()
    detached = [t.detach() for t in objective]
    return objective._make(detached) if hasattr(objective, "_make") else type(objective)(detached)
