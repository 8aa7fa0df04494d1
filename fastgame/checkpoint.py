"""Atomic files for run folders: checkpoints, JSON and CSV.

Every file is written to a temporary name in the same folder, flushed and fsynced, then
renamed over the old one (``os.replace`` is atomic on POSIX and Windows), so an interrupted
run leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Callable, Sequence

import torch

__all__ = ["CheckpointError", "atomic_write", "save_checkpoint", "load_checkpoint", "write_json", "write_csv",
           "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "fastgame-train-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not belong to the run."""


def atomic_write(path: str, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` atomically with ``write(file)``."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    try:  # make the rename itself durable; not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, lists and dicts) atomically."""
    atomic_write(path, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **state}, f))


def load_checkpoint(path: str) -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save_checkpoint`; :class:`CheckpointError` if it is
    missing, corrupt or not a fastgame training checkpoint. Loads tensors only (no pickled code)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt or not a fastgame checkpoint ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a fastgame training checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return state


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()))


def write_csv(path: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` (dicts) as CSV with ``columns`` in that order, atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))
