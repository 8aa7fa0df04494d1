"""``fastgame train``: one GAN training run, end to end, in a run folder.

:func:`prepare` resolves and checks everything (configuration, data, models, optimizer,
checkpoint) before anything is written, so bad input changes no file; :func:`Run.train`
then trains with a progress bar and writes the run folder::

    RUN_DIR/config.json         the resolved configuration
    RUN_DIR/metrics.csv, .json  losses, CG iterations, mixed-HVP passes, wall-clock and metrics at each
                                evaluation (losses and counts: means over the steps since the last
                                multiple of --eval-every before it)
    RUN_DIR/checkpoint.pt       the latest checkpoint (atomic, with a SHA-256 digest checked on resume):
                                models, optimizer, data order, RNGs, the metric rows so far
    RUN_DIR/samples.png         the latest samples (also samples/step_NNNNNN.png at each evaluation)
    RUN_DIR/curves.png          losses and metrics against steps
    RUN_DIR/tensorboard/        the same rows as TensorBoard scalars, when tensorboard is installed

While it trains, a run holds an exclusive lock on its folder (``RUN_DIR/.lock``), so a second
process on the same folder is refused; SIGINT (Ctrl-C) or SIGTERM ends it after the current step
with a checkpoint. Under ``torchrun`` every rank trains on its shard of every batch and only
rank 0 writes or prints; a peer that is gone or stopped ends every rank within the process
group's timeout (``FASTGAME_DIST_TIMEOUT`` seconds, default 300) with :class:`PeerError`.
"""
from __future__ import annotations

import copy
import datetime
import math
import signal
import threading
import dataclasses  # noqa: F401  (fastgame.train.dataclasses: kept for callers of the old module)
import json
import os
import shutil
import sys
import time
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .checkpoint import (LOCK_FILE, CheckpointError, RunLock, is_temporary, load_checkpoint, remove_stale_temporaries,
                         save_checkpoint, write_csv, write_json)
from .config import ConfigError, TrainConfig, config_diff, default_out, optimizer_settings, resolve
from .data import BatchStream, TrainingData, load_dataset
from .evaluation import Evaluator
from .models import build_gan
from .steppers import GameLosses, make_stepper

# The configuration lives in fastgame.trainer.config; its names stay importable from here.
__all__ = ["TrainConfig", "ConfigError", "Run", "prepare", "train", "resolve", "config_diff", "default_out",
           "build_models", "Interrupted", "PeerError", "DIST_TIMEOUT_S"]

DIST_TIMEOUT_S = float(os.environ.get("FASTGAME_DIST_TIMEOUT", "300"))
"""Seconds a collective waits for the other ranks before the run ends with :class:`PeerError`."""


class Interrupted(Exception):
    """SIGINT or SIGTERM ended the run after a completed step, with a checkpoint there."""

    def __init__(self, step: int, signum: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.step, self.signum = step, signum


class PeerError(RuntimeError):
    """Another rank of a data-parallel run is gone or stopped answering (within the timeout)."""


def build_models(cfg: TrainConfig, data: TrainingData) -> tuple[nn.Module, nn.Module]:
    """Seeded (G, D) for the resolved ``cfg``."""
    assert cfg.width is not None and cfg.latent is not None
    # resolve() states d_batchnorm; None (a run saved before it existed) is the old rule: no
    # BatchNorm in D with a penalty, which needs each sample's output to depend on that sample only.
    d_batchnorm = cfg.d_batchnorm if cfg.d_batchnorm is not None else cfg.penalty == "none"
    return build_gan(cfg.model, cfg.width, cfg.latent, data.sample_shape,
                     discriminator_batchnorm=d_batchnorm, fastgame_batchnorm=cfg.batchnorm == "fastgame",
                     seed=cfg.seed)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: this torch has no usable CUDA device")
    return torch.device(name)


def _dist() -> tuple[int, int]:
    """(rank, world size), starting torch.distributed when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("FASTGAME_DIST_BACKEND") != "gloo" else "gloo"
        # A peer that is gone or stopped fails the next collective after this timeout,
        # instead of blocking every other rank forever.
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=DIST_TIMEOUT_S))
    return dist.get_rank(), dist.get_world_size()


class Run:
    """A prepared run: everything built and checked, nothing written yet."""

    def __init__(self, cfg: TrainConfig, data: TrainingData, out: str, resume_state: Optional[dict[str, Any]],
                 rank: int, world: int) -> None:
        self.cfg, self.data, self.out, self.rank, self.world = cfg, data, out, rank, world
        self.device = _device(cfg.device)
        self.dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        if self.device.type == "cuda" and world > 1:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            self.device = torch.device("cuda", torch.cuda.current_device())
        G, D = build_models(cfg, data)
        self.G, self.D = G.to(self.device, self.dtype), D.to(self.device, self.dtype)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.bf16 else None
        self.losses = GameLosses(self.G, self.D, cfg.loss, None if cfg.penalty == "none" else cfg.penalty,
                                 cfg.penalty_weight, autocast)
        self.shard = cfg.batch // world
        example = (torch.zeros((self.shard,) + data.sample_shape, device=self.device, dtype=self.dtype),
                   torch.zeros(self.shard, cfg.latent, device=self.device, dtype=self.dtype),
                   torch.zeros(self.shard, device=self.device, dtype=self.dtype))
        try:
            self.stepper = make_stepper(cfg.optimizer, self.G, self.D, self.losses, cfg.lr_d, cfg.lr_g,
                                        graphed=cfg.graphed, example=example, eager=cfg.eager, d_steps=cfg.d_steps,
                                        **optimizer_settings(cfg))
        except ValueError as exc:  # resolve() checked the settings on probe parameters; these are the models'
            raise ConfigError(f"--optimizer {cfg.optimizer}: {exc}") from None
        try:
            self.sampler = BatchStream(data, cfg.batch, cfg.seed, rank, world)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # Latent codes and penalty weights come from their own generator (saved in checkpoints),
        # so that evaluation or anything else using the global RNG cannot change training.
        self.noise = torch.Generator().manual_seed(cfg.seed + 1)
        self.step, self.elapsed, self.rows = 0, 0.0, []
        self.saved_step: Optional[int] = None  # the step of the checkpoint in the folder (None: none)
        self.restarted = False  # a resumed folder without a checkpoint, trained again from step 0
        # Each step since the last multiple of eval_every: (loss_d, loss_g, cg_iters, hvp_passes),
        # each a host number or a tensor (left on its device until an evaluation averages them).
        self.window: list[tuple[Any, ...]] = []
        if resume_state is not None:
            self._restore(resume_state)
        self.evaluator = Evaluator(data)
        self._board: Any = None  # a TensorBoard writer once opened, False where tensorboard is missing

    # ---- checkpoints ---------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "elapsed": self.elapsed, "config": self.cfg.to_json(),
                "G": self.G.state_dict(), "D": self.D.state_dict(), "optimizer": self.stepper.state_dict(),
                "sampler": self.sampler.state_dict(), "noise": self.noise.get_state(),
                "torch_rng": torch.get_rng_state(), "window": _window_table(self.window), "rows": self.rows}

    def _save(self) -> None:
        save_checkpoint(os.path.join(self.out, "checkpoint.pt"), self._state())
        self.saved_step = self.step

    def _restore(self, st: dict[str, Any]) -> None:
        # A checkpoint written before a setting existed is read as its config.json is.
        try:
            saved_cfg = TrainConfig.from_json(st["config"])
        except (ConfigError, TypeError, KeyError) as exc:
            raise CheckpointError(f"the checkpoint's configuration is unreadable ({exc})") from None
        diff = sorted(config_diff(saved_cfg, self.cfg))
        if diff:
            raise CheckpointError(f"the checkpoint belongs to another configuration (differs in {diff})")
        step = st.get("step")
        if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
            raise CheckpointError(f"the checkpoint's step is {step!r}, not a step count (a whole number >= 0)")
        try:
            self.G.load_state_dict(st["G"])
            self.D.load_state_dict(st["D"])
            self.stepper.load_state_dict(st["optimizer"])
            self.sampler.load_state_dict(st["sampler"])
            self.noise.set_state(st["noise"])
            torch.set_rng_state(st["torch_rng"])
            self.step, self.elapsed = step, float(st["elapsed"])
            # A checkpoint from before the window was saved starts its first window empty.
            window = st.get("window")
            self.window = [] if window is None else [tuple(r) for r in window.reshape(-1, 4).tolist()]
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"the checkpoint does not match this run ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0]})") from None
        if self.step > self.cfg.steps:
            raise ConfigError(f"the checkpoint is at step {self.step}, past --steps {self.cfg.steps}")
        self.saved_step = self.step
        # The rows up to the checkpoint's step (the resumed run recomputes the rest): the
        # checkpoint's copy, or for a checkpoint from before it kept one, the folder's files.
        rows = st.get("rows")
        if rows is None:
            rows = read_rows(self.out) if self.rank == 0 else []
        self.rows = [r for r in _checked_rows(rows, "the checkpoint's metric rows") if r["step"] <= self.step]

    # ---- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def samples(self, n: int) -> Tensor:
        """n samples of G from fixed latent codes, in train mode on a copy (BatchNorm's running
        statistics stay those of training)."""
        z = torch.randn(n, self.cfg.latent, generator=torch.Generator().manual_seed(12345), dtype=self.dtype)
        G = copy.deepcopy(self.G)
        return torch.cat([G(c.to(self.device)) for c in z.split(500)]).float().cpu()

    # ---- the loop ------------------------------------------------------------------------------
    def train(self, quiet: bool = False, label: str = "") -> list[dict[str, Any]]:
        """Train from the current step to ``cfg.steps``; returns the metric rows.

        Rank 0 holds the run folder's lock meanwhile (:class:`~fastgame.trainer.checkpoint.CheckpointError`
        if another process holds it). Raises :class:`Interrupted` after SIGINT/SIGTERM (with a
        checkpoint at the step reached), :class:`PeerError` when another rank is gone, and
        :class:`~fastgame.trainer.checkpoint.WriteError` when a file cannot be written."""
        cfg, main = self.cfg, self.rank == 0
        lock = None
        if main:
            os.makedirs(self.out, exist_ok=True)
            lock = RunLock(self.out)
            remove_stale_temporaries(self.out)  # of killed writers: nobody else writes here now
        bar = None
        try:
            if main:
                os.makedirs(os.path.join(self.out, "samples"), exist_ok=True)
                cfg.extra["step_path"] = getattr(self.stepper, "path", "eager")
                write_json(os.path.join(self.out, "config.json"), cfg.to_json())
            if main and not quiet:
                from tqdm.auto import tqdm
                bar = tqdm(total=cfg.steps, initial=self.step, desc=label or f"{cfg.optimizer} {cfg.data}",
                           unit="step", dynamic_ncols=True)
            if main and self.evaluator.note:
                print(f"fastgame: {self.evaluator.note}", flush=True)
            with _StopSignals() as stop:
                self._loop(bar, quiet, label, stop)
        except RuntimeError as exc:
            if self.world > 1 and _peer_failure(exc):
                raise PeerError(f"another process of this data-parallel run is gone or stopped answering "
                                f"({str(exc).splitlines()[0][:200]})") from None
            raise
        finally:
            if bar is not None:
                bar.close()
            if self._board:
                self._board.close()
                self._board = None
            if lock is not None:
                lock.release()
        return self.rows

    def _loop(self, bar: Any, quiet: bool, label: str, stop: "_StopSignals") -> None:
        """The steps to ``cfg.steps``, with the evaluations and checkpoints on their periods."""
        from .plots import plot_curves
        cfg, main = self.cfg, self.rank == 0
        shown: dict[str, str] = {}  # the last evaluation's metrics stay on the bar
        start = time.perf_counter() - self.elapsed
        while self.step < cfg.steps:
            d, g, it, hp = self.stepper.step(*self._inputs())
            # Losses (and a graphed step's counts) stay on the device, copied: a graphed step
            # overwrites its outputs. They are read every 10 steps for the bar and at evaluations.
            losses = torch.stack([d.detach().float(), g.detach().float()])
            self.window.append((losses[0], losses[1]) + tuple(c.detach().float().clone() if isinstance(c, Tensor)
                                                              else c for c in (it, hp)))
            self.step += 1
            if main and getattr(self.stepper, "notices", None):
                self._fell_back()
            last = self.step == cfg.steps
            if bar is not None and (self.step % 10 == 0 or last):
                m = _window_table(self.window[-1:])[0].tolist()
                bar.set_postfix(loss_d=f"{m[0]:.3f}", loss_g=f"{m[1]:.3f}", cg=int(m[2]), **shown, refresh=False)
                bar.update(self.step - bar.n)
            evaluate, save = self.step % cfg.eval_every == 0 or last, self.step % cfg.checkpoint_every == 0 or last
            signum = stop.agreed(self.step, self.world, self.device)
            if evaluate or save or signum:
                self.elapsed = time.perf_counter() - start
                paused = time.perf_counter()  # the training clock stops for evaluations and checkpoints
            if evaluate:
                if main:
                    row = self._evaluate(_window_table(self.window).mean(0))
                    if quiet:
                        print(f"{label or cfg.optimizer} step {self.step}/{cfg.steps} "
                              + " ".join(f"{k_}={_fmt(v)}" for k_, v in row.items() if k_ != "step"), flush=True)
                    shown = {m_: _fmt(row[m_]) for m_ in self.evaluator.names[:2]}
                if self.step % cfg.eval_every == 0:
                    # Not after the extra evaluation at the last step: a run extended later then
                    # averages the same steps into its next row as a run that never stopped.
                    self.window = []
            if (save or signum) and main:
                self._save()
                plot_curves(os.path.join(self.out, "curves.png"), self.rows, self.evaluator.names,
                            f"{cfg.optimizer} on {cfg.data}, seed {cfg.seed}")
            if signum:
                raise Interrupted(self.step, signum)
            if evaluate or save:
                start += time.perf_counter() - paused

    def _fell_back(self) -> None:
        """The graphed step fell back to eager steps: one warning line naming the cause, and
        config.json records the path from this step on."""
        for cause in self.stepper.notices:
            print(f"fastgame: warning: piecewise CUDA graphs: {cause}; continuing with eager steps "
                  "(the same numbers; --eager skips the graphs)", file=sys.stderr, flush=True)
        self.stepper.notices.clear()
        self.cfg.extra["step_path"] = f"{self.stepper.path} from step {self.step}"
        write_json(os.path.join(self.out, "config.json"), self.cfg.to_json())

    def _to_board(self, row: dict[str, Any]) -> None:
        """The row's numbers as TensorBoard scalars in RUN_DIR/tensorboard, when tensorboard is installed."""
        if self._board is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # torch's writer needs the tensorboard package; without it, the CSV is all
                self._board = False
                return
            self._board = SummaryWriter(os.path.join(self.out, "tensorboard"))
        if self._board:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._board.add_scalar(key, value, row["step"])
            self._board.flush()

    def _inputs(self) -> tuple[Tensor, Tensor, Tensor]:
        """One step's (real batch, latent codes, penalty weights), this rank's shard, on the device.
        With ``--d-steps k``: k real batches and weights and k + 1 code batches (the last for the
        generator's step), each drawn as for one step and concatenated."""
        cfg, k, lo = self.cfg, self.shard, self.rank * self.shard
        reals, zs, ts = [], [], []
        for i in range(cfg.d_steps + (cfg.d_steps > 1)):
            if i < cfg.d_steps:
                reals.append(self.sampler.next())
            # Every rank draws the full batch's codes and keeps its shard: the same numbers as one process.
            zs.append(torch.randn(cfg.batch, cfg.latent, generator=self.noise, dtype=self.dtype)[lo:lo + k])
            if i < cfg.d_steps:
                ts.append(torch.rand(cfg.batch, generator=self.noise, dtype=self.dtype)[lo:lo + k])
        return tuple(self._to_device(torch.cat(parts)) for parts in (reals, zs, ts))  # type: ignore[return-value]

    def _to_device(self, x: Tensor) -> Tensor:
        """``x``, a fresh CPU tensor, on the run's device in its dtype. To a GPU through pinned
        memory without blocking the host: a copy from pageable memory would wait for the GPU
        each step. The pinned block is not reused before the copy has read it (torch's host
        allocator records the copy's stream), and ``x`` is not written again."""
        x = x.to(self.dtype)
        if self.device.type != "cuda":
            return x.to(self.device)
        return x.pin_memory().to(self.device, non_blocking=True)

    def _evaluate(self, window: Tensor) -> dict[str, Any]:
        cfg = self.cfg
        row: dict[str, Any] = {"step": self.step, "wall_s": round(self.elapsed, 3), "loss_d": float(window[0]),
                               "loss_g": float(window[1]), "cg_iters": float(window[2]),
                               "hvp_passes": float(window[3])}
        samples = self.samples(cfg.eval_samples)
        row.update(self.evaluator(samples))
        self.rows.append(row)
        columns = list(row)
        write_csv(os.path.join(self.out, "metrics.csv"), self.rows, columns)
        write_json(os.path.join(self.out, "metrics.json"), self.rows)
        self._to_board(row)
        title = f"{cfg.optimizer} on {self.data.label}, step {self.step}\n" + ", ".join(
            f"{n}={_fmt(row[n])}" for n in self.evaluator.names[:2])
        picture = os.path.join(self.out, "samples", f"step_{self.step:06d}.png")
        self.evaluator.picture(picture, samples, title)
        shutil.copyfile(picture, os.path.join(self.out, "samples.png"))
        return row


def _window_table(window: list[tuple[Any, ...]]) -> Tensor:
    """The window's steps as an (n, 4) float32 CPU tensor, the tensors of each device read in one copy."""
    flat = [v for row in window for v in row]
    where: dict[torch.device, list[int]] = {}
    for i, v in enumerate(flat):
        if isinstance(v, Tensor):
            where.setdefault(v.device, []).append(i)
    for idx in where.values():
        for i, v in zip(idx, torch.stack([flat[i].reshape(()).float() for i in idx]).cpu().tolist()):
            flat[i] = v
    return torch.tensor(flat, dtype=torch.float32).reshape(len(window), 4)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class _StopSignals:
    """While active (in the main thread), SIGINT and SIGTERM ask the loop to stop after the
    current step instead of interrupting it mid-step; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum = 0
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def agreed(self, step: int, world: int, device: torch.device) -> int:
        """The signal to stop on at this step (0: go on). Data-parallel ranks decide together,
        every 10 steps, so that all stop at the same step."""
        if world == 1:
            return self.signum
        if step % 10:
            return 0
        flag = torch.tensor([float(self.signum)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


def _peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` from a collective means another rank is gone or not answering."""
    dist_error = getattr(dist, "DistError", ())
    text = str(exc).lower()
    return isinstance(exc, dist_error) or any(s in text for s in ("connection closed", "connection reset", "timed out",
                                                                  "timeout", "broken pipe"))


def _checked_rows(rows: Any, where: str) -> list[dict[str, Any]]:
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
    import csv
    paths = [os.path.join(folder, n) for n in ("metrics.json", "metrics.csv")]
    if not any(os.path.exists(p) for p in paths):
        return []
    problems = []
    try:
        with open(paths[0]) as f:
            return _checked_rows(json.load(f), paths[0])
    except (OSError, ValueError, CheckpointError) as exc:
        problems.append(f"{paths[0]}: {str(exc).splitlines()[0][:120]}")
    try:
        with open(paths[1], newline="") as f:
            reader = csv.DictReader(f)
            rows = [{k: _number(v) for k, v in r.items()} for r in reader]
            if "step" not in (reader.fieldnames or ()):
                raise ValueError("no header with a step column")
        return _checked_rows(rows, paths[1])
    except (OSError, ValueError, CheckpointError) as exc:
        problems.append(f"{paths[1]}: {str(exc).splitlines()[0][:120]}")
    raise CheckpointError(f"the run's metric history is damaged ({'; '.join(problems)}) and its checkpoint, "
                          "from an older fastgame, holds no copy; restore one of the files or start a new run")


RUNTIME = ("threads",)
"""Settings a resumed run may take anew: they change how fast it runs, not its numbers."""


def _is_empty_folder(out: str) -> bool:
    """Whether the folder ``out`` holds nothing of a run: at most a lock, the temporary files of
    killed writers and an empty ``samples`` folder (what a run killed at its start leaves)."""
    rest = [n for n in os.listdir(out) if n != LOCK_FILE and not is_temporary(n)]
    return rest in ([], ["samples"]) and (not rest or not os.listdir(os.path.join(out, "samples")))


def _resumed_config(resume: str, steps: Optional[int], given: dict[str, Any]) -> TrainConfig:
    """The configuration of the run folder ``resume``, with ``steps`` and the :data:`RUNTIME`
    settings of ``given`` (the options typed on the command line) applied; any other setting
    given must equal the run's own."""
    if not os.path.isdir(resume):
        raise ConfigError(f"--resume {resume}: no such run folder")
    cfg_path = os.path.join(resume, "config.json")
    if not os.path.exists(cfg_path) and _is_empty_folder(resume):
        raise ConfigError(f"--resume {resume}: the run stopped before it wrote anything; start it again with "
                          f"--out {resume}")
    try:
        with open(cfg_path) as f:
            saved = TrainConfig.from_json(json.load(f))
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{cfg_path}: cannot read the run's configuration ({exc})") from None
    for key, value in given.items():
        if key in RUNTIME:
            setattr(saved, key, value)
        elif value != getattr(saved, key):
            raise ConfigError(f"--resume takes the settings from {cfg_path}: --{key.replace('_', '-')} {value} "
                              f"differs from the run's {getattr(saved, key)!r} (only --steps, "
                              + ", ".join("--" + k for k in RUNTIME) + " and --quiet may change)")
    saved.steps = steps if steps is not None else saved.steps
    return saved


def prepare(cfg: TrainConfig, resume: Optional[str] = None, steps: Optional[int] = None,
            data: Optional[TrainingData] = None, given: Optional[dict[str, Any]] = None) -> Run:
    """Check ``cfg`` (or the run folder ``resume``, whose total ``steps`` may be raised),
    load the data (unless ``data``, ``cfg.data`` already loaded at ``cfg.image_size``, is
    given) and build the run; a resumed run is at its checkpoint, with the metric rows up to
    the checkpoint's step (it recomputes the later ones), or at step 0 where the run stopped
    before its first checkpoint (``run.restarted``). ``given``: for a resumed run, the settings
    typed on the command line (:func:`_resumed_config`). Under torchrun, call
    ``torch.distributed.barrier()`` before :meth:`Run.train`, so that every rank has checked
    its input before rank 0 writes anything.

    Raises :class:`ConfigError`, :class:`~fastgame.trainer.data.DataError` or
    :class:`~fastgame.trainer.checkpoint.CheckpointError` with a one-line message; writes nothing.
    """
    rank, world = _dist()
    state, restarted = None, False
    if resume is not None:
        cfg, out = _resumed_config(resume, steps, given or {}), resume
        checkpoint = os.path.join(resume, "checkpoint.pt")
        restarted = not os.path.exists(checkpoint)  # killed before its first checkpoint: from step 0
        state = None if restarted else load_checkpoint(checkpoint)
    else:
        out = cfg.out or default_out(cfg)
        if os.path.exists(out) and (not os.path.isdir(out) or not _is_empty_folder(out)):
            raise ConfigError(f"{out} already exists and is not empty; pass another --out, or --resume {out}")
    if data is None:
        data = load_dataset(cfg.data, cfg.image_size)
    if resume is None:
        cfg = resolve(cfg, data)
        cfg.out = out
        cfg.extra = {"world_size": world, "torch": str(torch.__version__)}
    else:
        resolve(cfg, data)  # re-check a hand-edited config.json
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.batch % world:
        raise ConfigError(f"--batch {cfg.batch} must be divisible by the number of processes ({world})")
    run = Run(cfg, data, out, state, rank, world)
    run.restarted = restarted
    return run


def train(cfg: TrainConfig, resume: Optional[str] = None, steps: Optional[int] = None, quiet: bool = False,
          label: str = "") -> Run:
    """Prepare and train one run (what ``fastgame train`` does); returns the finished
    :class:`Run` (its folder is ``run.out``)."""
    run = prepare(cfg, resume, steps)
    if run.world > 1:
        dist.barrier()  # every rank has checked its input before rank 0 writes anything
    run.train(quiet=quiet, label=label)
    return run

