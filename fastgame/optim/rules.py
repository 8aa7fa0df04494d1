"""Per-player update rules of the first-order game dynamics, as pure functions.

A rule maps a player's descent direction (the gradient of its own loss) to the update it
adds to its parameters, and its state to the new state, without changing anything, so the
step pipeline can check everything before it commits (and a capturable step can mask it).
The formulas are torch.optim's: ``"sgd"`` is ``torch.optim.SGD`` (with ``momentum``,
dampening 0), ``"adam"`` is ``torch.optim.Adam`` (``betas``, ``eps``, no weight decay).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

Rule = Callable[[Tensor, dict[str, Tensor], Tensor, Tensor, dict[str, Any]], tuple[Tensor, dict[str, Tensor]]]


def sgd(direction: Tensor, state: dict[str, Tensor], lr: Tensor, step: Tensor,
        group: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
    """−lr·d, or with momentum μ: b ← μb + d, update −lr·b (b starts at 0, so b₁ = d as in torch)."""
    mu = group["momentum"]
    if mu == 0:
        return -lr * direction, {}
    buf = state.get("momentum_buffer")
    buf = direction.clone() if buf is None else buf * mu + direction
    return -lr * buf, {"momentum_buffer": buf}


def adam(direction: Tensor, state: dict[str, Tensor], lr: Tensor, step: Tensor,
         group: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
    """m ← β₁m + (1−β₁)d, v ← β₂v + (1−β₂)d², update −lr·m̂/(√v̂ + eps) with the bias
    corrections of step ``step`` (a device tensor, so no host read)."""
    beta1, beta2 = group["betas"]
    m, v = state.get("exp_avg"), state.get("exp_avg_sq")
    m = (1 - beta1) * direction if m is None else torch.lerp(m, direction, 1 - beta1)
    v = (1 - beta2) * direction.square() if v is None else v * beta2 + (1 - beta2) * direction.square()
    correction1 = 1 - torch.pow(beta1, step)
    correction2 = 1 - torch.pow(beta2, step)
    update = -(lr / correction1) * m / ((v / correction2).sqrt() + group["eps"])
    return update, {"exp_avg": m, "exp_avg_sq": v}


RULES: dict[str, Rule] = {"sgd": sgd, "adam": adam}

# The state each rule keeps, allocated up front for a capturable step.
RULE_STATE: dict[str, Callable[[dict[str, Any]], tuple[str, ...]]] = {
    "sgd": lambda group: ("momentum_buffer",) if group["momentum"] != 0 else (),
    "adam": lambda group: ("exp_avg", "exp_avg_sq"),
}


def rule_name(name: str, v: Any) -> None:
    if not (isinstance(v, str) and v in RULES):
        raise ValueError(f"invalid {name}: {v!r} (must be one of {sorted(RULES)})")


def betas(name: str, v: Any) -> None:
    if not (isinstance(v, (tuple, list)) and len(v) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in v)):
        raise ValueError(f"invalid {name}: {v!r} (must be a pair of numbers in [0, 1))")

