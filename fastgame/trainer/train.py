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
import os
import signal
import sys
import threading
import time
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from .batches import BatchSource
from .checkpoint import (LOCK_FILE, RunLock, is_temporary, load_checkpoint, remove_stale_temporaries, restore_run,
                         run_state, save_checkpoint)
from .config import RESUMABLE, ConfigError, TrainConfig, default_out, optimizer_settings, read_run_config, resolve
from .data import TrainingData, load_dataset
from .evaluation import Evaluator
from .methods import get_method, make_stepper
from .models import build_models
from .options import option
from .probe import mark_stale_probe
from .recorder import Recorder
from .multi_steppers import MultiGameLosses
from .steppers import GameLosses

__all__ = ["Run", "StepWindow", "prepare", "train", "Interrupted", "PeerError", "DIST_TIMEOUT_S"]

DIST_TIMEOUT_S = float(os.environ.get("FASTGAME_DIST_TIMEOUT", "300"))
"""Seconds a collective waits for the other ranks before the run ends with :class:`PeerError`."""


class Interrupted(Exception):
    """SIGINT or SIGTERM ended the run after a completed step, with a checkpoint there."""

    def __init__(self, step: int, signum: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.step, self.signum = step, signum


class PeerError(RuntimeError):
    """Another rank of a data-parallel run is gone or stopped answering (within the timeout)."""


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


class StepWindow:
    """Each step's (loss_d, loss_g, cg_iters, hvp_passes) since the last multiple of --eval-every,
    each a host number or a tensor (left on its device until an evaluation averages them)."""

    def __init__(self) -> None:
        self.steps: list[tuple[Any, ...]] = []

    def add(self, d: Tensor, g: Tensor, iters: Any, passes: Any) -> None:
        # Losses (and a graphed step's counts) stay on the device, copied: a graphed step
        # overwrites its outputs. They are read every 10 steps for the bar and at evaluations.
        losses = torch.stack([d.detach().float(), g.detach().float()])
        self.steps.append((losses[0], losses[1]) + tuple(c.detach().float().clone() if isinstance(c, Tensor)
                                                          else c for c in (iters, passes)))

    def table(self, last: Optional[int] = None) -> Tensor:
        """The steps (the ``last`` ones) as an (n, 4) float32 CPU tensor, each device's tensors read in one copy."""
        window = self.steps[-last:] if last else self.steps
        flat = [v for row in window for v in row]
        where: dict[torch.device, list[int]] = {}
        for i, v in enumerate(flat):
            if isinstance(v, Tensor):
                where.setdefault(v.device, []).append(i)
        for idx in where.values():
            for i, v in zip(idx, torch.stack([flat[i].reshape(()).float() for i in idx]).cpu().tolist()):
                flat[i] = v
        return torch.tensor(flat, dtype=torch.float32).reshape(len(window), 4)

    def load(self, table: Optional[Tensor]) -> None:
        """The window of a checkpoint (None: one from before windows were saved starts empty)."""
        self.steps = [] if table is None else [tuple(r) for r in table.reshape(-1, 4).tolist()]

    def clear(self) -> None:
        self.steps = []


class Run:
    """A prepared run: everything built and checked, nothing written yet. It holds the models and
    the loop; its other jobs are elsewhere: checkpoints in :mod:`.checkpoint`, batches in
    :class:`~fastgame.trainer.batches.BatchSource`, the sinks in
    :class:`~fastgame.trainer.recorder.Recorder`, metrics and pictures in the evaluator."""

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
        # A stepper against a list of discriminators (K > 1, or PCGD's players) steps on their losses.
        losses = (MultiGameLosses if get_method(cfg.optimizer).stepper_for(cfg.discriminators).many_discriminators
                  else GameLosses)
        self.losses = losses(self.G, self.D, cfg.loss, None if cfg.penalty == "none" else cfg.penalty,
                             cfg.penalty_weight, autocast)
        try:
            self.batches = BatchSource(data, cfg.batch, cfg.latent, cfg.seed, rank, world, self.device, self.dtype)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            self.stepper = make_stepper(cfg.optimizer, self.G, self.D, self.losses, cfg.lr_d, cfg.lr_g,
                                        graphed=cfg.graphed, example=self.batches.example(data.sample_shape),
                                        eager=cfg.eager, d_steps=cfg.d_steps, discriminators=cfg.discriminators,
                                        **optimizer_settings(cfg))
        except ValueError as exc:  # resolve() checked the settings on probe parameters; these are the models'
            raise ConfigError(f"--optimizer {cfg.optimizer}: {exc}") from None
        self.step, self.elapsed, self.rows = 0, 0.0, []
        self.saved_step: Optional[int] = None  # the step of the checkpoint in the folder (None: none)
        self.restarted = False  # a resumed folder without a checkpoint, trained again from step 0
        self.window = StepWindow()
        if resume_state is not None:
            restore_run(self, resume_state)
        self.evaluator = Evaluator(data)
        self.recorder = Recorder(out, self.evaluator.picture, lambda line: print(f"fastgame: {line}", flush=True))

    @torch.no_grad()
    def samples(self, n: int) -> Tensor:
        """n samples of G from fixed latent codes, in train mode on a copy (BatchNorm's running
        statistics stay those of training)."""
        z = torch.randn(n, self.cfg.latent, generator=torch.Generator().manual_seed(12345), dtype=self.dtype)
        G = copy.deepcopy(self.G)
        return torch.cat([G(c.to(self.device)) for c in z.split(500)]).float().cpu()

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
                cfg.extra["step_path"] = getattr(self.stepper, "path", "eager")
                self.recorder.open(cfg.to_json())
                if self.saved_step is not None and self.step < cfg.steps:
                    mark_stale_probe(self.out, self.saved_step)  # it probed a checkpoint about to be replaced
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
            self.recorder.close()
            if lock is not None:
                lock.release()
        return self.rows

    def _loop(self, bar: Any, quiet: bool, label: str, stop: "_StopSignals") -> None:
        """The steps to ``cfg.steps``, with the evaluations and checkpoints on their periods."""
        cfg, main = self.cfg, self.rank == 0
        shown: dict[str, str] = {}  # the latest evaluation's metrics stay on the bar
        start = time.perf_counter() - self.elapsed
        while self.step < cfg.steps:
            self.window.add(*self.stepper.step(self.batches.next(self.stepper.d_steps)))
            self.step += 1
            if main and getattr(self.stepper, "notices", None):
                self._fell_back()
            last = self.step == cfg.steps
            evaluate, save = self.step % cfg.eval_every == 0 or last, self.step % cfg.checkpoint_every == 0 or last
            signum = stop.agreed(self.step, self.world, self.device)
            if evaluate or save or signum:
                self.elapsed = time.perf_counter() - start
                paused = time.perf_counter()  # the training clock stops for evaluations and checkpoints
            if bar is not None and (self.step % 10 == 0 or last or evaluate):
                m = self.window.table(last=1)[0].tolist()
                losses = dict(loss_d=f"{m[0]:.3f}", loss_g=f"{m[1]:.3f}", cg=int(m[2]))
            if evaluate:
                if main:
                    row = self._evaluate()
                    if quiet:
                        print(f"{label or cfg.optimizer} step {self.step}/{cfg.steps} "
                              + " ".join(f"{k_}={_fmt(v)}" for k_, v in row.items() if k_ != "step"), flush=True)
                    shown = {m_: _fmt(row[m_]) for m_ in self.evaluator.names[:2]}
                if self.step % cfg.eval_every == 0:
                    # Not after the extra evaluation at the last step: a run extended later then
                    # averages the same steps into its next row as a run that never stopped.
                    self.window.clear()
            if bar is not None and (self.step % 10 == 0 or last or evaluate):
                # After this step's evaluation: the bar shows the metrics of this step, not the one before.
                bar.set_postfix(**losses, **shown, refresh=False)
                bar.update(self.step - bar.n)
            if (save or signum) and main:
                self._save()
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
        self.recorder.config(self.cfg.to_json())

    def _save(self) -> None:
        """The checkpoint at this step, and curves.png with it."""
        save_checkpoint(os.path.join(self.out, "checkpoint.pt"), run_state(self))
        self.saved_step = self.step
        self.recorder.curves(self.rows, self.evaluator.names,
                             f"{self.cfg.optimizer} on {self.cfg.data}, seed {self.cfg.seed}")

    def _evaluate(self) -> dict[str, Any]:
        """This step's row (the window's means, wall-clock, metrics) and its pictures, recorded."""
        window = self.window.table().mean(0)
        row: dict[str, Any] = {"step": self.step, "wall_s": round(self.elapsed, 3), "loss_d": float(window[0]),
                               "loss_g": float(window[1]), "cg_iters": float(window[2]),
                               "hvp_passes": float(window[3])}
        samples = self.samples(self.cfg.eval_samples)
        row.update(self.evaluator(samples))
        self.rows.append(row)
        self.recorder.rows(self.rows)
        title = f"{self.cfg.optimizer} on {self.data.label}, step {self.step}\n" + ", ".join(
            f"{n}={_fmt(row[n])}" for n in self.evaluator.names[:2])
        self.recorder.samples(self.step, samples, title)
        return row


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


def _is_empty_folder(out: str) -> bool:
    """Whether the folder ``out`` holds nothing of a run: at most a lock, the temporary files of
    killed writers and an empty ``samples`` folder (what a run killed at its start leaves)."""
    rest = [n for n in os.listdir(out) if n != LOCK_FILE and not is_temporary(n)]
    return rest in ([], ["samples"]) and (not rest or not os.listdir(os.path.join(out, "samples")))


def _resumed_config(resume: str, steps: Optional[int], given: dict[str, Any]) -> TrainConfig:
    """The configuration of the run folder ``resume``, with the :data:`~fastgame.trainer.config.RESUMABLE`
    settings of ``given`` (the options typed on the command line) and ``steps`` applied; any other
    setting given must equal the run's own."""
    if not os.path.isdir(resume):
        raise ConfigError(f"--resume {resume}: no such run folder")
    if not os.path.exists(os.path.join(resume, "config.json")) and _is_empty_folder(resume):
        raise ConfigError(f"--resume {resume}: the run stopped before it wrote anything; start it again with "
                          f"--out {resume}")
    saved = read_run_config(resume)
    for key, value in given.items():
        if key in RESUMABLE:
            setattr(saved, key, value)
        elif value != getattr(saved, key):
            raise ConfigError(f"--resume takes the settings from {os.path.join(resume, 'config.json')}: "
                              f"{option(key).flag} {value} differs from the run's {getattr(saved, key)!r} (only "
                              + ", ".join(option(k).flag for k in RESUMABLE) + " and --quiet may change)")
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

