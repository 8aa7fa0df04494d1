"""Ranks that fail together under torch.distributed: every failure of one rank in the parts
of a step that run before, or between, its collectives (input checks, the closure, the loss
checks) reaches every rank, so that all raise at the same step with nothing changed; a
non-finite value anywhere reaches them through the finiteness verdict (AND-ed across ranks,
:func:`~fastgame.optim.checks.finite_flags`). And the hyperparameters agree across ranks.
Without a process group of more than one rank each function is a plain call."""
from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

import torch

from ..linalg.distributed import failed_ranks, gather_objects, is_data_parallel

T = TypeVar("T")


class PeerFailure(RuntimeError):
    """Raised on the ranks that did not fail when another rank's step failed."""


def on_all_ranks(owner: str, what: str, fn: Callable[[], T], device: torch.device) -> T:
    """``fn()``, with every rank told whether any rank's ``fn`` raised: the failing rank raises
    its own exception, the others :class:`PeerFailure` naming the rank and its error. All ranks
    must reach this call at the same point of the same step (one all-reduce; a gather of the
    messages only on a failure)."""
    if not is_data_parallel():
        return fn()
    try:
        out, error = fn(), None
    except Exception as exc:  # noqa: BLE001  (any failure: re-raised below, after the ranks agreed)
        out, error = None, exc
    failed = failed_ranks(error is not None, device)
    if failed:
        messages = gather_objects(None if error is None else f"{type(error).__name__}: {str(error).strip()[:300]}")
        if error is not None:
            raise error
        said = "; ".join(f"rank {r}: {messages[r]}" for r in failed)
        raise PeerFailure(f"{owner}: {what} failed on rank{'s' if len(failed) > 1 else ''} "
                          f"{', '.join(map(str, failed))} at this step ({said}); the step was not applied on "
                          "any rank (parameters and optimizer state are unchanged)")
    return out


def hyperparameters_of(groups: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The groups' settings (everything but the parameters) as comparable text."""
    return [{k: repr(float(v) if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
             for k, v in sorted(g.items()) if k != "params"} for g in groups]


def check_ranks_agree(owner: str, groups: Sequence[dict[str, Any]]) -> None:
    """Raise ValueError on every rank if any hyperparameter differs between ranks (one gather)."""
    if not is_data_parallel():
        return
    every = gather_objects(hyperparameters_of(groups))
    for rank, theirs in enumerate(every[1:], start=1):
        for i, (mine, other) in enumerate(zip(every[0], theirs)):
            for key in sorted(set(mine) | set(other)):
                if mine.get(key) != other.get(key):
                    raise ValueError(f"{owner}: param_groups[{i}][{key!r}] differs between ranks (rank 0: "
                                     f"{mine.get(key)}, rank {rank}: {other.get(key)}); every rank must step "
                                     "with the same hyperparameters")
