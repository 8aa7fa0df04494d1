"""The state_dict format of the reference package CGDs 0.4.5, both ways: a CGDs checkpoint
loads into fastgame's ACGD, BCGD and GACGD (:func:`from_cgds`), and fastgame's state goes out
in CGDs' format (:func:`to_cgds`, ``opt.state_dict(format="cgds")``) for CGDs to continue.

CGDs keeps one flat dict per optimizer (``optimizer.state``): the hyperparameters, the step
count, the second moments and CG's warm starts as flat vectors in the order of the
parameters it was given (fastgame's flat order too). What each entry becomes:

=============================  ======================================================
CGDs (ACGD / BCGD)             fastgame
=============================  ======================================================
``lr_max``, ``lr_min``         ``param_groups[0/1]["lr"]``
``eps``, ``beta``, ``momentum`` both param groups (CGDs has one value for both players)
``tol``, ``atol``              both param groups (game-wide)
``step``, ``solve_x``          ``state["game"]``
``sq_exp_avg_max/min``         ``state["max"/"min"]["square_avg"]`` (ACGD)
``old_max``, ``old_min``       ``state[...]["warm_start"]`` with ``cg_start="warm"``:
                               the same vectors for ACGD; for BCGD √lr times them
                               (CGDs' BCGD solves for the update over lr, fastgame for
                               the update over √lr). Dropped by another start.
``exp_avg_max/min`` (BCGD)     nothing: CGDs 0.4.5 never updates them (always 0.0)
=============================  ======================================================

GACGD: ``lr_x``/``lr_y``, ``eps``, ``beta``, ``tol``, ``atol``, ``step`` likewise;
``sq_exp_avg_x/y`` are ``square_avg``; ``x0`` (the last block solution, which CGDs never
reads) is each player's ``warm_start`` with ``warm_start=True``, else dropped.

Settings CGDs keeps outside its state (``max_iter``, ``update_max``, fastgame's own
``cg_start``, ``check_every``, ...) stay as the loading optimizer has them.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Protocol, Sequence

import torch
from torch import Tensor

from ..linalg.params import Player


class Counterpart(Protocol):
    """What the format reads of an optimizer: the CGDs class it replaces (None: none), its two
    players and its param groups."""
    cgds_class: Optional[str]
    players: Sequence[Player]
    param_groups: list[dict[str, Any]]

# The entries of each CGDs 0.4.5 optimizer's state dict (its ``self.state``).
CGDS_KEYS: dict[str, frozenset[str]] = {
    "ACGD": frozenset({"lr_max", "lr_min", "eps", "solve_x", "tol", "atol", "beta", "step",
                       "old_max", "old_min", "sq_exp_avg_max", "sq_exp_avg_min"}),
    "BCGD": frozenset({"lr_max", "lr_min", "momentum", "solve_x", "tol", "atol", "step",
                       "old_max", "old_min", "exp_avg_max", "exp_avg_min"}),
    "GACGD": frozenset({"lr_x", "lr_y", "eps", "tol", "atol", "beta", "step", "x0", "sq_exp_avg_x", "sq_exp_avg_y"}),
}
_ANY_CGDS_KEY = frozenset().union(*CGDS_KEYS.values())
# Per class: (CGDs' names of the two learning rates, hyperparameters shared by both groups,
# CGDs' names of the second moments, of the warm starts).
_LAYOUT: dict[str, tuple[tuple[str, str], tuple[str, ...], Optional[tuple[str, str]], Optional[tuple[str, str]]]] = {
    "ACGD": (("lr_max", "lr_min"), ("eps", "beta", "tol", "atol"), ("sq_exp_avg_max", "sq_exp_avg_min"),
             ("old_max", "old_min")),
    "BCGD": (("lr_max", "lr_min"), ("momentum", "tol", "atol"), None, ("old_max", "old_min")),
    "GACGD": (("lr_x", "lr_y"), ("eps", "beta", "tol", "atol"), ("sq_exp_avg_x", "sq_exp_avg_y"), None),
}


def is_cgds_state_dict(state_dict: Any) -> bool:
    """Whether ``state_dict`` looks like a CGDs optimizer's (flat, with entries of CGDs' names)
    rather than a torch optimizer's (``state`` and ``param_groups``)."""
    return (isinstance(state_dict, dict) and "state" not in state_dict and "param_groups" not in state_dict
            and bool(set(state_dict) & _ANY_CGDS_KEY))


def cgds_class_of(state_dict: dict[str, Any]) -> str:
    """The CGDs class whose state dict this is; ValueError if it is none's."""
    keys = set(map(str, state_dict))
    for name, expected in CGDS_KEYS.items():
        if keys == expected:
            return name
    best = min(CGDS_KEYS, key=lambda n: len(keys ^ CGDS_KEYS[n]))
    raise ValueError(f"not a CGDs 0.4.5 state_dict: closest is CGDs.{best}'s, but it lacks "
                     f"{sorted(CGDS_KEYS[best] - keys)} and has {sorted(keys - CGDS_KEYS[best])} besides")


def from_cgds(opt: Counterpart, cgds: dict[str, Any]) -> dict[str, Any]:
    """A fastgame state_dict for ``opt`` holding what the CGDs state dict ``cgds`` holds (see the
    module docstring); ``opt.load_state_dict`` then validates and loads it. Raises ValueError
    (one line, naming the entry) for a dict of another class or of other sizes."""
    own = opt.cgds_class
    name = cgds_class_of(cgds)
    if name != own:
        raise ValueError(f"a CGDs.{name} state_dict cannot be loaded into {type(opt).__name__}"
                         + (f" (it is CGDs.{own}'s counterpart)" if own else " (no CGDs counterpart)"))
    lr_names, shared, moments, starts = _LAYOUT[name]
    nx, ny = (len(g["params"]) for g in opt.param_groups)  # parameters numbered as torch's state_dict does
    groups = [dict(g, params=ids) for g, ids in zip(opt.param_groups, (list(range(nx)), list(range(nx, nx + ny))))]
    for g, lr in zip(groups, lr_names):
        g["lr"] = _number(cgds, lr)
        g.update({k: _number(cgds, k) for k in shared})
    state: dict[str, Any] = {"game": {"step": _count(cgds["step"])}}
    if "solve_x" in cgds:
        if not isinstance(cgds["solve_x"], bool):
            raise ValueError(f"CGDs state_dict entry solve_x must be True or False, got {cgds['solve_x']!r}")
        state["game"]["solve_x"] = cgds["solve_x"]
    sizes = [p.numel for p in opt.players]
    # Every vector is checked, also those this optimizer's start does not keep.
    vectors = {k: _vector(cgds, k, n, player.name) for pair in (moments, starts) if pair is not None
               for k, n, player in zip(pair, sizes, opt.players) if cgds[k] is not None}
    if name == "GACGD" and cgds["x0"] is not None:
        vectors["x0"] = _vector(cgds, "x0", sum(sizes), "x and y")
    for i, player in enumerate(opt.players):
        st = state.setdefault(player.name, {})
        if moments is not None and moments[i] in vectors:
            st["square_avg"] = vectors[moments[i]]
        if starts is not None and starts[i] in vectors and groups[0].get("cg_start") == "warm":
            w = vectors[starts[i]]
            st["warm_start"] = w * math.sqrt(groups[i]["lr"]) if name == "BCGD" else w
    if "x0" in vectors and groups[0]["warm_start"]:
        for player, part in zip(opt.players, vectors["x0"].split(sizes)):
            state[player.name]["warm_start"] = part
    return {"state": state, "param_groups": groups}


def to_cgds(opt: Counterpart, sd: dict[str, Any]) -> dict[str, Any]:
    """``sd`` (``opt``'s own state_dict) in the format of the CGDs class ``opt`` replaces, for
    ``CGDs...load_state_dict`` to continue from; ValueError where CGDs cannot hold it."""
    name = opt.cgds_class
    if name is None:
        raise ValueError(f"{type(opt).__name__} has no CGDs counterpart: state_dict(format='cgds') needs "
                         "ACGD, BCGD or GACGD")
    lr_names, shared, moments, starts = _LAYOUT[name]
    g0, g1 = sd["param_groups"]
    for k in shared:
        if g0[k] != g1[k]:
            raise ValueError(f"CGDs.{name} has one {k} for both players; this optimizer's differ "
                             f"({g0[k]!r} and {g1[k]!r})")
    out: dict[str, Any] = {lr_names[0]: float(g0["lr"]), lr_names[1]: float(g1["lr"]), **{k: g0[k] for k in shared}}
    game = sd["state"]["game"]
    out["step"] = int(game["step"].item()) if isinstance(game["step"], Tensor) else game["step"]
    if "solve_x" in game:
        out["solve_x"] = game["solve_x"]
    players = [sd["state"].get(p.name, {}) for p in opt.players]
    if moments is not None:
        out.update({k: st.get("square_avg") for k, st in zip(moments, players)})
    if starts is not None:
        for k, st, g in zip(starts, players, (g0, g1)):
            w = st.get("warm_start")
            if w is not None and name == "BCGD":
                w = w / math.sqrt(g["lr"]) if g["lr"] > 0 else None  # CGDs then starts CG from zero
            out[k] = w
    if name == "BCGD":
        out.update(exp_avg_max=0.0, exp_avg_min=0.0)
    if name == "GACGD":
        parts = [st.get("warm_start") for st in players]
        out["x0"] = torch.cat(parts) if all(p is not None for p in parts) else None
    return out


def _number(cgds: dict[str, Any], key: str) -> float:
    v = cgds[key]
    if isinstance(v, Tensor) and v.numel() == 1:
        v = v.item()
    if not (isinstance(v, numbers.Real) and not isinstance(v, bool)):
        raise ValueError(f"CGDs state_dict entry {key} must be a number, got {type(v).__name__}")
    return float(v)


def _count(v: Any) -> int:
    if isinstance(v, Tensor) and v.numel() == 1:
        v = v.item()
    if not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0):
        raise ValueError(f"CGDs state_dict entry step must be an int >= 0, got {v!r}")
    return int(v)


def _vector(cgds: dict[str, Any], key: str, numel: int, player: str) -> Tensor:
    v = cgds[key]
    if not isinstance(v, Tensor):
        raise ValueError(f"CGDs state_dict entry {key} must be a Tensor or None, got {type(v).__name__}")
    if v.dim() != 1 or v.numel() != numel:
        raise ValueError(f"CGDs state_dict entry {key} has shape {tuple(v.shape)}; the {player} player "
                         f"has {numel} parameters (a checkpoint of other models?)")
    if not v.is_floating_point():
        raise ValueError(f"CGDs state_dict entry {key} has dtype {v.dtype}; expected a floating-point tensor")
    return v.detach()
