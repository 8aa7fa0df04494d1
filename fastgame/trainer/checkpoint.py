"""Atomic, checked files for run folders: checkpoints, JSON and CSV, and the run folder's lock.

Every file is written to a temporary name in the same folder, flushed and fsynced, then
renamed over the old one (``os.replace`` is atomic on POSIX and Windows), so an interrupted
run leaves either the old file or the new one, never half of one; a temporary file left by a
killed process is removed by the next owner of the folder (:func:`remove_stale_temporaries`).
A failed write raises :class:`WriteError` naming the file (the previous version is intact).

A run's checkpoint (:func:`run_state`, :func:`restore_run`) holds its models, optimizer, data order,
RNGs, the steps of the evaluation window under way and the metric rows so far. A checkpoint carries a SHA-256 digest of its contents (every entry but its ``config``, which
the trainer checks against the run's ``config.json`` instead), verified on load: a flipped bit
is refused, not trained on. Checkpoints from before the digest load unverified.

:class:`RunLock` holds an exclusive ``flock`` on ``RUN_DIR/.lock`` for the life of a run, so two
processes never write one folder; the kernel releases it when its process dies (a SIGKILLed run
leaves the file but no stale lock), and a clean end removes the file.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from typing import Any, Callable, Optional, Sequence

import torch

from .config import ConfigError, TrainConfig, config_diff

__all__ = ["CheckpointError", "WriteError", "RunLock", "atomic_write", "save_checkpoint", "load_checkpoint",
           "state_digest", "is_temporary", "write_json", "write_csv", "remove_stale_temporaries", "CHECKPOINT_FORMAT", "LOCK_FILE",
           "read_rows", "checked_rows", "run_state", "restore_run"]

LOCK_FILE = ".lock"

CHECKPOINT_FORMAT = "fastgame-train-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not belong to the run."""


class WriteError(OSError):
    """A run-folder file that could not be written (full disk, permissions); the message names
    the file, whose previous version is intact."""


_TEMPORARY = re.compile(r"^\..+\.tmp\d+$")  # what atomic_write writes before its rename


def is_temporary(name: str) -> bool:
    """Whether the file name ``name`` is one of :func:`atomic_write`'s temporary files."""
    return bool(_TEMPORARY.match(name))


def atomic_write(path: str, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` atomically with ``write(file)``; :class:`WriteError` if it cannot."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        err = WriteError(f"cannot write {path} ({exc.strerror or exc}); its previous version is intact")
        err.errno = exc.errno
        raise err from exc
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


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the temporary files of :func:`atomic_write` that killed processes left in
    ``folder`` (call it holding the folder's :class:`RunLock`: no live writer then); returns them."""
    stale = [n for n in os.listdir(folder) if is_temporary(n)] if os.path.isdir(folder) else []
    for name in stale:
        try:
            os.remove(os.path.join(folder, name))
        except FileNotFoundError:
            pass
    return stale


def _digest(h: Any, obj: Any) -> None:
    """Feed ``obj`` (tensors, numbers, strings, None, lists, tuples, dicts) into hash ``h``,
    independently of how it was serialised (a tensor by dtype, shape and bytes)."""
    h.update(type(obj).__name__.encode() + b"\0")
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _digest(h, k)
            _digest(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{len(obj)}".encode())
        for v in obj:
            _digest(h, v)
    else:
        h.update(repr(obj).encode())
    h.update(b"\1")


def state_digest(state: dict[str, Any]) -> str:
    """The SHA-256 (hex) of a checkpoint's entries other than ``config``, ``format`` and ``sha256``."""
    h = hashlib.sha256()
    _digest(h, {k: v for k, v in state.items() if k not in ("config", "format", "sha256")})
    return h.hexdigest()


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, lists and dicts) atomically, with its digest."""
    full = {"format": CHECKPOINT_FORMAT, **state}
    full["sha256"] = state_digest(full)
    atomic_write(path, lambda f: torch.save(full, f))


def load_checkpoint(path: str) -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save_checkpoint` and verify its digest;
    :class:`CheckpointError` if it is missing, corrupt, altered or not a fastgame training
    checkpoint. Loads tensors only (no pickled code)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt or not a fastgame checkpoint ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a fastgame training checkpoint (format {CHECKPOINT_FORMAT} expected)")
    try:
        digest = state_digest(state) if "sha256" in state else None
    except Exception as exc:  # an entry of a type the digest cannot read: altered
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(exc).__name__}: {exc})") from exc
    if digest is not None and digest != state["sha256"]:
        raise CheckpointError(f"{path}: corrupt checkpoint (its SHA-256 does not match its contents); "
                              "it was damaged after it was written")
    return state


class RunLock:
    """An exclusive lock on a run folder for as long as this object holds it: a ``flock`` on
    ``folder/.lock``, released by :meth:`release` (which also removes the file) or by the kernel
    when the process ends (a killed run leaves the file, not the lock)."""

    def __init__(self, folder: str) -> None:
        self.folder, self.path = folder, os.path.join(folder, LOCK_FILE)
        self._fd: Optional[int] = None
        while self._fd is None:
            self._fd = self._take()
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def _take(self) -> Optional[int]:
        """The locked descriptor of the file now at :attr:`path`; None where that file was removed
        by its previous holder meanwhile (its lock then guards nothing: take the new file's)."""
        import fcntl
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise CheckpointError(f"{self.folder} is in use by another fastgame process (its lock {LOCK_FILE} is "
                                  "held); wait for it to finish or pick another folder") from None
        try:
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        return fd

    def release(self) -> None:
        """Give the lock up and remove its file (idempotent). The file goes first, while still
        locked: a process waiting on it then finds it gone and locks a new one (:meth:`_take`)."""
        if self._fd is not None:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


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


def checked_rows(rows: Any, where: str) -> list[dict[str, Any]]:
    """``rows`` if it is a list of metric rows (dicts with a whole-number step), else one-line error."""
    if not isinstance(rows, list):
        raise CheckpointError(f"{where} are not a list of rows (got {type(rows).__name__})")
    for i, r in enumerate(rows):
        step = r.get("step") if isinstance(r, dict) else None
        if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
            raise CheckpointError(f"{where}: row {i} has no step count (got {r!r:.80})")
    return rows


def _number(v: str) -> Any:
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() and math.isfinite(f) else f


def read_rows(folder: str) -> list[dict[str, Any]]:
    """The metric rows a run folder's ``metrics.json`` holds, or its ``metrics.csv`` where the
    JSON is unreadable; none where neither file exists; one-line error where both are damaged
    (nothing is rewritten empty)."""
    paths = [os.path.join(folder, n) for n in ("metrics.json", "metrics.csv")]
    if not any(os.path.exists(p) for p in paths):
        return []
    problems = []
    try:
        with open(paths[0]) as f:
            return checked_rows(json.load(f), paths[0])
    except (OSError, ValueError, CheckpointError) as exc:
        problems.append(f"{paths[0]}: {str(exc).splitlines()[0][:120]}")
    try:
        with open(paths[1], newline="") as f:
            reader = csv.DictReader(f)
            rows = [{k: _number(v) for k, v in r.items()} for r in reader]
            if "step" not in (reader.fieldnames or ()):
                raise ValueError("no header with a step column")
        return checked_rows(rows, paths[1])
    except (OSError, ValueError, CheckpointError) as exc:
        problems.append(f"{paths[1]}: {str(exc).splitlines()[0][:120]}")
    raise CheckpointError(f"the run's metric history is damaged ({'; '.join(problems)}) and its checkpoint, "
                          "from an older fastgame, holds no copy; restore one of the files or start a new run")


def run_state(run: Any) -> dict[str, Any]:
    """The checkpoint of a :class:`~fastgame.trainer.train.Run` at its current step."""
    return {"step": run.step, "elapsed": run.elapsed, "config": run.cfg.to_json(),
            "G": run.G.state_dict(), "D": run.D.state_dict(), "optimizer": run.stepper.state_dict(),
            **run.batches.state_dict(), "torch_rng": torch.get_rng_state(), "window": run.window.table(),
            "rows": run.rows}


def restore_run(run: Any, st: dict[str, Any]) -> None:
    """Put ``run`` (built from its configuration) at the checkpoint ``st``: :class:`CheckpointError`
    if the checkpoint belongs to another configuration or does not fit the run. A checkpoint
    written before a setting existed is read as its config.json is."""
    try:
        saved_cfg = TrainConfig.from_json(st["config"])
    except (ConfigError, TypeError, KeyError) as exc:
        raise CheckpointError(f"the checkpoint's configuration is unreadable ({exc})") from None
    diff = sorted(config_diff(saved_cfg, run.cfg))
    if diff:
        raise CheckpointError(f"the checkpoint belongs to another configuration (differs in {diff})")
    step = st.get("step")
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
        raise CheckpointError(f"the checkpoint's step is {step!r}, not a step count (a whole number >= 0)")
    try:
        run.G.load_state_dict(st["G"])
        run.D.load_state_dict(st["D"])
        run.stepper.load_state_dict(st["optimizer"])
        run.batches.load_state_dict(st)
        torch.set_rng_state(st["torch_rng"])
        run.step, run.elapsed = step, float(st["elapsed"])
        run.window.load(st.get("window"))  # None in a checkpoint from before the window was saved
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"the checkpoint does not match this run ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0]})") from None
    if run.step > run.cfg.steps:
        raise ConfigError(f"the checkpoint is at step {run.step}, past --steps {run.cfg.steps}")
    run.saved_step = run.step
    # The rows up to the checkpoint's step (the resumed run recomputes the rest): the
    # checkpoint's copy, or for a checkpoint from before it kept one, the folder's files.
    rows = st.get("rows")
    if rows is None:
        rows = read_rows(run.out) if run.rank == 0 else []
    run.rows = [r for r in checked_rows(rows, "the checkpoint's metric rows") if r["step"] <= run.step]
