"""Where each CG solve of the CGD family starts (``cg_start``), as strategies: which
per-player state a start keeps, whether it can run inside a captured step, what it gives
the solve (a warm start, a deflation) and what it keeps for the next one.

A new start is one class here and one entry in :data:`STARTS`; the optimizers' state
keys, validators and capturable rules are derived from these declarations.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from torch import Tensor

from ..linalg.cg import CGDSolution, Deflation, Preconditioner
from ..linalg.hvp import MixedHVP
from ..linalg.recycle import RitzDeflation

State = dict[str, dict[str, Tensor]]  # per-player state, by player name


class CGStart:
    """A CG start. ``state_keys``: the per-player state it keeps (``row_state_keys``: those
    that are (k, numel) matrices); ``capturable``: usable in a step that reads nothing from
    the device; ``host_checked``: its solve reads the convergence test on the host every
    iteration (and so is never graph-replayed)."""

    name = ""
    state_keys: frozenset[str] = frozenset()
    row_state_keys: frozenset[str] = frozenset()
    capturable = True
    host_checked = False

    def begin(self, hvp: MixedHVP, a: int, pre: Sequence[Preconditioner], saved: State,
              names: Sequence[str]) -> tuple[Optional[Tensor], Optional[Deflation]]:
        """Before the solve for player ``a``: its warm start (None: zero) and deflation (None: none),
        from the saved state."""
        return None, None

    def after(self, sol: CGDSolution, deflation: Optional[Deflation], next_solve: int, pending: State,
              names: Sequence[str]) -> dict[str, Any]:
        """After the solve: put what the next solve starts from into ``pending`` (committed with
        the step); returns this start's part of the step's info."""
        return {}


class ZeroStart(CGStart):
    """From w = 0: one mixed-HVP pass a step fewer than a warm start (the default)."""
    name = "zero"


class WarmStart(CGStart):
    """From the previous step's solution in the solved player's variables (CGDs' start)."""
    name = "warm"
    state_keys = frozenset({"warm_start"})

    def begin(self, hvp, a, pre, saved, names):
        return saved.get(names[a], {}).get("warm_start"), None

    def after(self, sol, deflation, next_solve, pending, names):
        for name, w in zip(names, sol.warm_start):  # the next solve's start; nothing else reads it
            pending.setdefault(name, {})["warm_start"] = w
        return {}


class RecycleStart(CGStart):
    """From zero, deflated by the outlying Ritz vectors of the previous solve
    (:mod:`fastgame.linalg.recycle`); the Ritz extraction reads the host, so not capturable."""
    name = "recycle"
    state_keys = row_state_keys = frozenset({"ritz"})  # the deflation vectors of the player solved next
    capturable = False
    host_checked = True

    def begin(self, hvp, a, pre, saved, names):
        return None, RitzDeflation(hvp, a, pre, saved.get(names[a], {}).get("ritz"))

    def after(self, sol, deflation, next_solve, pending, names):
        pending.setdefault(names[next_solve], {})["ritz"] = deflation.ritz_vectors(next_solve)
        saved = deflation.vectors
        return {"deflated": 0 if saved is None else saved.shape[0],
                "hvp_products": 1 + deflation.products + 2 * sol.iterations}


# By name, in the order messages list them.
STARTS: dict[str, CGStart] = {s.name: s for s in (WarmStart(), ZeroStart(), RecycleStart())}
