"""State I/O and validation of a :class:`~fastgame.optim.base.GameOptimizer`, from what the
class declares (``hyperparameters``, ``game_wide``, ``state_keys``, ``row_state_keys``,
``nonnegative_state_keys``, ``game_state``, ``added_later``): the checks of both param groups,
of a state_dict, and the load that changes nothing unless everything in it is valid.

The optimizer is seen through :class:`Declared` (so this module needs nothing of base.py), and
its rules between hyperparameters come in as a :data:`CombinationCheck`."""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
from torch import Tensor

from ..linalg.captured import capturing
from ..linalg.params import Player
from .checks import Validator

CombinationCheck = Callable[[dict[str, Any], str], None]
"""The optimizer's rules between game-wide hyperparameters: ``check(group, where)`` raises ValueError."""


class Declared(Protocol):
    """What state I/O reads of an optimizer: its class's declarations and its players."""
    player_names: tuple[str, ...]
    players: Sequence[Player]
    hyperparameters: Mapping[str, Validator]
    game_wide: frozenset[str]
    state_keys: frozenset[str]
    row_state_keys: frozenset[str]
    nonnegative_state_keys: frozenset[str]
    game_state: Mapping[str, Validator]
    added_later: Mapping[str, Callable[[dict[str, Any]], Any]]


def clone_tree(obj: Any) -> Any:
    """A deep copy of nested dicts/lists/tuples of tensors (tensors detached and cloned)."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_tree(v) for v in obj)
    return copy.copy(obj)


def validate_groups(opt: Declared, groups: Sequence[dict[str, Any]], where: str,
                    check_combination: CombinationCheck) -> None:
    """Check every hyperparameter of every group (one per player), that game-wide ones agree,
    and the optimizer's rules between them (``check_combination``)."""
    if len(groups) != len(opt.player_names):
        raise ValueError(f"{where}: expected {len(opt.player_names)} param groups (one per player), got {len(groups)}")
    name_of = type(opt).__name__
    for i, (group, name) in enumerate(zip(groups, opt.player_names)):
        if group.get("player", name) != name:
            raise ValueError(f"{where}: param group {i} is the {group.get('player')!r} player, expected {name!r}; "
                             "is it another optimizer's?")
        missing = sorted(set(opt.hyperparameters) - set(group))  # extra keys: e.g. a scheduler's
        if missing:
            raise ValueError(f"{where}: param group {i} lacks {missing}, which {name_of} takes "
                             f"({sorted(opt.hyperparameters)}); is it another optimizer's?")
        for key, check in opt.hyperparameters.items():
            value = group[key]
            if key == "lr" and isinstance(value, Tensor) and value.numel() == 1 and not capturing():
                value = float(value)
            check(f"param_groups[{i}][{key!r}] ({name} player)", value)
    for key in sorted(opt.game_wide):
        for other in groups[1:]:
            if groups[0][key] != other[key]:
                raise ValueError(f"{where}: {key!r} is game-wide but differs between the param groups "
                                 f"({groups[0][key]!r} and {other[key]!r}); set it to one value in all")
    check_combination(groups[0], where)


def validate_game_state(opt: Declared, game: Any) -> None:
    if not isinstance(game, dict):
        raise ValueError("state_dict['state'] has no 'game' entry (the step count and game-wide state)")
    if set(game) != set(opt.game_state):
        raise ValueError(f"state_dict['state']['game'] has entries {sorted(game)}, but "
                         f"{type(opt).__name__} keeps {sorted(opt.game_state)}; is it another optimizer's?")
    for key, check in opt.game_state.items():
        check(f"state_dict['state']['game'][{key!r}]", game[key])


def player_state_as_loaded(opt: Declared, player: Player, st: Any) -> dict[str, Tensor]:
    """``st`` (a player's saved state) checked and cast to the player's device and dtype.

    The cast comes first, so that the values checked are the values that would be loaded (a
    float64 value beyond float32's range is refused here, not loaded as inf)."""
    where = f"state_dict entry {player.name}"
    if not isinstance(st, dict):
        raise ValueError(f"{where} must be a dict of tensors")
    out = {}
    for k, v in st.items():
        if k not in opt.state_keys:
            raise ValueError(f"{where}.{k} is not state {type(opt).__name__} keeps "
                             f"({sorted(opt.state_keys)}); is it another optimizer's?")
        if not isinstance(v, Tensor):
            raise ValueError(f"{where}.{k} must be a Tensor, got {type(v).__name__}")
        if k in opt.row_state_keys:  # a few flat vectors, as rows
            if v.dim() != 2 or v.shape[1] != player.numel:
                raise ValueError(f"{where}.{k} has shape {tuple(v.shape)}; expected (k, {player.numel}): "
                                 f"rows of the {player.name} player's {player.numel} parameters")
        elif v.numel() != player.numel:
            raise ValueError(f"{where}.{k} has {v.numel()} elements; "
                             f"the {player.name} player has {player.numel} parameters")
        elif v.dim() != 1:
            raise ValueError(f"{where}.{k} has shape {tuple(v.shape)}; expected a flat ({player.numel},) tensor")
        if not v.is_floating_point():
            raise ValueError(f"{where}.{k} has dtype {v.dtype}; expected a floating-point tensor")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{where}.{k} has non-finite values")
        cast = v.detach().to(device=player.device, dtype=player.dtype, copy=True)
        if not bool(torch.isfinite(cast).all()):
            raise ValueError(f"{where}.{k} has values beyond the range of the parameters' dtype {player.dtype}")
        if k in opt.nonnegative_state_keys and bool((cast < 0).any()):
            raise ValueError(f"{where}.{k} has negative values (a second-moment average is >= 0)")
        out[k] = cast
    return out


def validated_state_dict(opt: Declared, state_dict: Any, check_combination: CombinationCheck) -> dict[str, Any]:
    """A copy of ``state_dict`` to load into ``opt``, every part validated (the rules between
    hyperparameters by ``check_combination``) and its per-player tensors cast to the players'
    device and dtype; raises ValueError on the first problem."""
    if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError("not an optimizer state_dict: expected keys 'state' and 'param_groups'")
    groups, state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) for g in groups):
        raise ValueError("state_dict['param_groups'] must be a list of dicts")
    if len(groups) != len(opt.players) or [len(g.get("params", ())) for g in groups] != [len(p.params) for p in opt.players]:
        raise ValueError("state_dict has a different number of parameters per player than this optimizer")
    # Hyperparameters newer than the dict take the values its version behaved as (``added_later``).
    groups = [{**{k: older(g) for k, older in opt.added_later.items() if k not in g}, **g} for g in groups]
    validate_groups(opt, groups, "load_state_dict", check_combination)
    if not isinstance(state, dict):
        raise ValueError("state_dict['state'] must be a dict")
    unknown = set(state) - {*opt.player_names, "game"}
    if unknown:
        raise ValueError(f"state_dict['state'] has unknown entries {sorted(map(str, unknown))}; "
                         f"{type(opt).__name__} keeps {list(opt.player_names)} and 'game'")
    validate_game_state(opt, state.get("game"))
    loaded = {p.name: player_state_as_loaded(opt, p, state.get(p.name, {})) for p in opt.players}
    game = clone_tree(state["game"])
    if isinstance(game["step"], Tensor):  # saved by a capturable optimizer
        game["step"] = (game["step"].to(device=opt.players[0].device, dtype=torch.float64)
                        if groups[0].get("capturable", False) else int(game["step"].item()))
    # String keys are carried by torch's load as they are: the entries go in as validated here,
    # in the saved order (a resumed run's state_dict then lists them as an uninterrupted run's).
    new_state = {k: game if k == "game" else loaded[k] for k in state}
    return {"state": new_state, "param_groups": clone_tree(groups)}
