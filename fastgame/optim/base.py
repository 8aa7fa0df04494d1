"""What every fastgame optimizer shares: two players as two param groups, input checks,
closures, the all-or-nothing commit of a step, and a state_dict that is a real copy.

Per-player state lives under the string keys ``"max"``/``"min"`` (``"x"``/``"y"`` for
general-sum games) of ``self.state`` as flat tensors, and game-wide counters under
``"game"``; torch's Optimizer carries string keys through ``state_dict`` unchanged.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from .._params import Player, as_param_list

LossOrClosure = Union[Tensor, Callable[[], Tensor]]


def check_nonnegative(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"invalid {name}: {v!r} (must be a finite number >= 0)")


def check_beta(beta: float) -> None:
    if not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
        raise ValueError(f"invalid beta: {beta!r} (must be in [0, 1))")


def check_max_iter(max_iter: Optional[int]) -> None:
    if max_iter is not None and (not isinstance(max_iter, int) or max_iter < 0):
        raise ValueError(f"invalid max_iter: {max_iter!r} (must be None or an int >= 0)")


def resolve_loss(loss: LossOrClosure, what: str = "loss") -> Tensor:
    """Evaluate a closure (under grad mode) and check the loss is a scalar with a graph."""
    if callable(loss) and not isinstance(loss, Tensor):
        with torch.enable_grad():
            loss = loss()
    if not isinstance(loss, Tensor):
        raise ValueError(f"{what} must be a scalar Tensor or a closure returning one, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"{what} must be a scalar, got shape {tuple(loss.shape)}")
    if not loss.requires_grad:
        raise ValueError(f"{what} has no autograd graph (requires_grad=False): compute it from the "
                         "parameters with grad enabled and do not detach it")
    return loss.reshape(())


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which fastgame's own arithmetic (step sizes, CG/GMRES vectors, updates)
    stays in the parameters' dtype even if ``step`` is called under ``torch.autocast``; the
    loss's graph, and so every HVP, keeps the precision it was built with."""
    available = getattr(torch.amp, "is_autocast_available", lambda t: t in ("cpu", "cuda"))
    return torch.autocast(device.type, enabled=False) if available(device.type) else contextlib.nullcontext()


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _clone_tree(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone_tree(v) for v in obj)
    return copy.copy(obj)


class GameOptimizer(torch.optim.Optimizer):
    """Base of the two-player optimizers: param group 0 is player x, group 1 is player y,
    each with its own ``lr`` (so ``torch.optim.lr_scheduler`` works unchanged)."""

    player_names: tuple[str, str] = ("max", "min")

    def __init__(self, params_x: Iterable[Tensor], params_y: Iterable[Tensor], lr_x: float, lr_y: float,
                 defaults: dict[str, Any], arg_names: tuple[str, str], lr_names: tuple[str, str]) -> None:
        check_nonnegative(**{lr_names[0]: lr_x, lr_names[1]: lr_y})
        px = as_param_list(params_x, arg_names[0])
        py = as_param_list(params_y, arg_names[1])
        shared = {id(p) for p in px} & {id(p) for p in py}
        if shared:
            raise ValueError(f"{len(shared)} parameter(s) appear in both {arg_names[0]} and {arg_names[1]}; "
                             "each parameter belongs to exactly one player")
        groups = [{"params": px, "lr": lr_x, "player": self.player_names[0]},
                  {"params": py, "lr": lr_y, "player": self.player_names[1]}]
        super().__init__(groups, defaults)
        self.players = (Player(px, self.player_names[0]), Player(py, self.player_names[1]))
        self.info: dict[str, Any] = {}

    # ---- players and per-player state -------------------------------------------------
    def _ensure_flat(self) -> None:
        for player in self.players:
            if player.ensure_flat():  # moved or cast: bring the state along
                st = self.state[player.name]
                for k, v in st.items():
                    if isinstance(v, Tensor):
                        st[k] = v.to(device=player.device, dtype=player.dtype)

    def _grads(self, loss: Tensor, create_graph: bool = True) -> tuple[list[Tensor], list[Tensor]]:
        """Gradients of ``loss`` for both players in one backward (zeros for unused params)."""
        nx = len(self.players[0].params)
        g = torch.autograd.grad(loss, self.players[0].params + self.players[1].params,
                                create_graph=create_graph, materialize_grads=True)
        return list(g[:nx]), list(g[nx:])

    def _lr_tensors(self) -> tuple[Tensor, Tensor]:
        """The groups' learning rates as 0-dim float64 device tensors (no host sync to use)."""
        lrs = self.__dict__.setdefault("_lr_t", [None, None])
        for i, player in enumerate(self.players):
            if lrs[i] is None or lrs[i].device != player.device:
                lrs[i] = torch.zeros((), dtype=torch.float64, device=player.device)
            if not _capturing():  # a graph replays the lr tensors; the caller refreshes them
                lrs[i].fill_(float(self.param_groups[i]["lr"]))
        return lrs[0], lrs[1]

    def _check_finite(self, checks: Sequence[tuple[str, Tensor]]) -> None:
        """Raise FloatingPointError naming the first non-finite (stage, tensor); one host read."""
        flags = torch.stack([torch.isfinite(t).all().to(self.players[0].device) for _, t in checks]).tolist()
        for (what, _), ok in zip(checks, flags):
            if not ok:
                raise FloatingPointError(f"{type(self).__name__}: non-finite {what}; the step was not applied "
                                         "(parameters and optimizer state are unchanged)")

    def _apply(self, deltas: Sequence[Tensor]) -> None:
        with torch.no_grad():
            for player, d in zip(self.players, deltas):
                if d is not None:
                    player.flat.add_(d)

    # ---- torch.optim.Optimizer API ----------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear ``.grad`` of both players (fastgame computes its gradients itself)."""
        super().zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """A deep copy of the optimizer state (safe to keep, mutate or ``torch.save``)."""
        sd = super().state_dict()
        return {"state": _clone_tree(sd["state"]), "param_groups": _clone_tree(sd["param_groups"])}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict`, onto the parameters' device and dtype.

        Validates everything first: on a mismatch it raises ``ValueError`` and changes nothing.
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("not an optimizer state_dict: expected keys 'state' and 'param_groups'")
        groups = state_dict["param_groups"]
        if len(groups) != 2 or [len(g["params"]) for g in groups] != [len(p.params) for p in self.players]:
            raise ValueError("state_dict has a different number of parameters per player than this optimizer")
        for player in self.players:
            for k, v in state_dict["state"].get(player.name, {}).items():
                if isinstance(v, Tensor) and v.numel() != player.numel:
                    raise ValueError(f"state_dict entry {player.name}.{k} has {v.numel()} elements; "
                                     f"the {player.name} player has {player.numel} parameters")
        super().load_state_dict(_clone_tree(state_dict))
        for player in self.players:
            st = self.state[player.name]
            for k, v in st.items():
                if isinstance(v, Tensor):
                    st[k] = v.to(device=player.device, dtype=player.dtype)

    def get_info(self) -> dict[str, Any]:
        """Diagnostics of the last step (CG iterations, HVP passes, norms with collect_info)."""
        if not self.info:
            print("Warning! No update information stored yet: call step() first")
        return dict(self.info)

    def set_lr(self, lr_x: float, lr_y: float) -> None:
        """Set both players' learning rates (reference-compatible; schedulers also work)."""
        check_nonnegative(lr_x=lr_x, lr_y=lr_y)
        self.param_groups[0]["lr"] = lr_x
        self.param_groups[1]["lr"] = lr_y
