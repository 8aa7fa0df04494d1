"""The finiteness verdict of a step and its commit: checked on the host and applied only if
everything is finite (eager), or masked on the device without a host read (capturable), the
verdict then read later, and the host half of a skipped step undone (:class:`Verdict`)."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from ..linalg.params import Player
from .checks import finite_flags

Checks = Sequence[tuple[str, Tensor]]  # (stage, value), in the order a non-finite value propagates


def raise_first(owner: str, checks: Sequence[tuple[str, Any]], flags: Sequence[bool], what: str) -> None:
    """Raise FloatingPointError naming the first stage whose flag is False."""
    for (stage, _), ok in zip(checks, flags):
        if not ok:
            raise FloatingPointError(f"{owner}: non-finite {stage}; the step {what} "
                                     "(parameters and optimizer state are unchanged)")


def check_finite(owner: str, checks: Checks, device: torch.device) -> None:
    """Raise FloatingPointError naming the first non-finite (stage, tensor); one host read."""
    raise_first(owner, checks, finite_flags([t for _, t in checks], device).tolist(), "was not applied")


def apply(players: Sequence[Player], deltas: Sequence[Optional[Tensor]]) -> None:
    """Add the updates to the players' flat parameters (None: leave that player alone)."""
    with torch.no_grad():
        for player, d in zip(players, deltas):
            if d is not None:
                player.flat.add_(d)


class Verdict:
    """The last capturable step's verdict: its stages, the device flags, the host flags once
    read, and how to undo the step's host half (e.g. the phase it advanced) if the device
    skipped the step."""

    def __init__(self) -> None:
        self._stages: list[str] = []
        self._flags: Optional[Tensor] = None
        self._host: Optional[list[bool]] = None
        self._undo: Optional[Callable[[], None]] = None

    def clear(self) -> None:
        self.__init__()

    def set(self, stages: list[str], flags: Tensor) -> None:
        """A new step's (unread) verdict; it has no host half to undo until :meth:`on_skip`."""
        self._stages, self._flags, self._host, self._undo = stages, flags, None, None

    def on_skip(self, undo: Optional[Callable[[], None]]) -> None:
        """What to run when the verdict, once read, says the step was skipped."""
        self._undo = undo

    @property
    def pending(self) -> Optional[tuple[list[str], Tensor]]:
        """The stages and the device bool flags, or None before a capturable step."""
        return None if self._flags is None else (self._stages, self._flags)

    def commit_masked(self, players: Sequence[Player], state: dict[str, dict[str, Tensor]], checks: Checks,
                      deltas: Sequence[Optional[Tensor]], pending: dict[str, dict[str, Tensor]]) -> Tensor:
        """Apply the step in place only if every check is finite, without a host read; returns
        the device bool. Every pending state entry must already exist (preallocated) so it can
        be updated in place."""
        flags = finite_flags([t for _, t in checks], players[0].device)
        ok = flags.all()
        for player, d in zip(players, deltas):
            if d is not None:
                player.flat.add_(torch.where(ok, d, 0.0))
        for player in players:
            for k, new in pending[player.name].items():
                old = state[player.name][k]
                old.copy_(torch.where(ok, new, old))
        self.set([stage for stage, _ in checks], flags)
        return ok

    def read(self) -> Optional[list[bool]]:
        """The flags as host bools (one read, the first time; the host half of a skipped step
        is then undone), or None before a capturable step."""
        if self._flags is None:
            return None
        if self._host is None:
            self._host = self._flags.tolist()
            if not all(self._host) and self._undo is not None:
                self._undo()
                self._undo = None
        return self._host

    def raise_if_skipped(self, owner: str) -> None:
        host = self.read()
        if host is not None:
            raise_first(owner, list(zip(self._stages, host)), host, "was skipped")
