"""``fastgame train``: one GAN training run, end to end, in a run folder.

:func:`prepare` resolves and checks everything (configuration, data, models, optimizer,
checkpoint) before anything is written, so bad input changes no file; :func:`Run.train`
then trains with a progress bar and writes the run folder::

    RUN_DIR/config.json         the resolved configuration
    RUN_DIR/metrics.csv, .json  losses, CG iterations, mixed-HVP passes, wall-clock and metrics at each
                                evaluation (losses and counts: means over the steps since the last
                                multiple of --eval-every before it)
    RUN_DIR/checkpoint.pt       the latest checkpoint (atomic): models, optimizer, data order, RNGs
    RUN_DIR/samples.png         the latest samples (also samples/step_NNNNNN.png at each evaluation)
    RUN_DIR/curves.png          losses and metrics against steps

Under ``torchrun`` every rank trains on its shard of every batch and only rank 0 writes
or prints.
"""
from __future__ import annotations

import copy
import dataclasses  # noqa: F401  (fastgame.train.dataclasses: kept for callers of the old module)
import json
import os
import shutil
import time
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_csv, write_json
from .config import ConfigError, TrainConfig, config_diff, default_out, optimizer_settings, resolve
from .data import BatchStream, TrainingData, load_dataset
from .evaluation import Evaluator
from .models import build_gan
from .steppers import GameLosses, make_stepper

# The configuration lives in fastgame.config; its names stay importable from here.
__all__ = ["TrainConfig", "ConfigError", "Run", "prepare", "train", "resolve", "config_diff", "default_out",
           "build_models"]


def build_models(cfg: TrainConfig, data: TrainingData) -> tuple[nn.Module, nn.Module]:
    """Seeded (G, D) for the resolved ``cfg``."""
    assert cfg.width is not None and cfg.latent is not None
    # Gradient penalties need each sample's output to depend on that sample only: no BatchNorm in D.
    return build_gan(cfg.model, cfg.width, cfg.latent, data.sample_shape,
                     discriminator_batchnorm=cfg.penalty == "none", fastgame_batchnorm=cfg.batchnorm == "fastgame",
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
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("FASTGAME_DIST_BACKEND")
                                != "gloo" else "gloo")
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
                                        graphed=cfg.graphed, example=example, eager=cfg.eager,
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
        # Each step since the last multiple of eval_every: (loss_d, loss_g, cg_iters, hvp_passes),
        # each a host number or a tensor (left on its device until an evaluation averages them).
        self.window: list[tuple[Any, ...]] = []
        if resume_state is not None:
            self._restore(resume_state)
        self.evaluator = Evaluator(data)

    # ---- checkpoints ---------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "elapsed": self.elapsed, "config": self.cfg.to_json(),
                "G": self.G.state_dict(), "D": self.D.state_dict(), "optimizer": self.stepper.state_dict(),
                "sampler": self.sampler.state_dict(), "noise": self.noise.get_state(),
                "torch_rng": torch.get_rng_state(), "window": _window_table(self.window)}

    def _restore(self, st: dict[str, Any]) -> None:
        # A checkpoint written before a setting existed is read as its config.json is.
        try:
            saved_cfg = TrainConfig.from_json(st["config"])
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"the checkpoint's configuration is unreadable ({exc})") from None
        diff = sorted(config_diff(saved_cfg, self.cfg))
        if diff:
            raise CheckpointError(f"the checkpoint belongs to another configuration (differs in {diff})")
        try:
            self.G.load_state_dict(st["G"])
            self.D.load_state_dict(st["D"])
            self.stepper.load_state_dict(st["optimizer"])
            self.sampler.load_state_dict(st["sampler"])
            self.noise.set_state(st["noise"])
            torch.set_rng_state(st["torch_rng"])
            self.step, self.elapsed = int(st["step"]), float(st["elapsed"])
            # A checkpoint from before the window was saved starts its first window empty.
            window = st.get("window")
            self.window = [] if window is None else [tuple(r) for r in window.reshape(-1, 4).tolist()]
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"the checkpoint does not match this run ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0]})") from None
        if self.step > self.cfg.steps:
            raise ConfigError(f"the checkpoint is at step {self.step}, past --steps {self.cfg.steps}")
        if self.rank == 0:  # the rows up to the checkpoint's step: the resumed run recomputes the rest
            try:
                with open(os.path.join(self.out, "metrics.json")) as f:
                    rows = json.load(f)
            except (OSError, ValueError):
                rows = []
            rows = rows if isinstance(rows, list) else []
            self.rows = [r for r in rows if isinstance(r, dict) and r.get("step", 0) <= self.step]

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
        """Train from the current step to ``cfg.steps``; returns the metric rows."""
        from .plots import plot_curves
        cfg, main = self.cfg, self.rank == 0
        if main:
            os.makedirs(os.path.join(self.out, "samples"), exist_ok=True)
            write_json(os.path.join(self.out, "config.json"), cfg.to_json())
        bar = None
        if main and not quiet:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc=label or f"{cfg.optimizer} {cfg.data}",
                       unit="step", dynamic_ncols=True)
        shown: dict[str, str] = {}  # the last evaluation's metrics stay on the bar
        start = time.perf_counter() - self.elapsed
        k = self.shard
        while self.step < cfg.steps:
            real = self._to_device(self.sampler.next())
            # Every rank draws the full batch's codes and keeps its shard: the same numbers as one process.
            z = torch.randn(cfg.batch, cfg.latent, generator=self.noise, dtype=self.dtype)
            t = torch.rand(cfg.batch, generator=self.noise, dtype=self.dtype)
            lo = self.rank * k
            d, g, it, hp = self.stepper.step(real, self._to_device(z[lo:lo + k]), self._to_device(t[lo:lo + k]))
            # Losses (and a graphed step's counts) stay on the device, copied: a graphed step
            # overwrites its outputs. They are read every 10 steps for the bar and at evaluations.
            losses = torch.stack([d.detach().float(), g.detach().float()])
            self.window.append((losses[0], losses[1]) + tuple(c.detach().float().clone() if isinstance(c, Tensor)
                                                              else c for c in (it, hp)))
            self.step += 1
            last = self.step == cfg.steps
            if bar is not None and (self.step % 10 == 0 or last):
                m = _window_table(self.window[-1:])[0].tolist()
                bar.set_postfix(loss_d=f"{m[0]:.3f}", loss_g=f"{m[1]:.3f}", cg=int(m[2]), **shown, refresh=False)
                bar.update(self.step - bar.n)
            evaluate, save = self.step % cfg.eval_every == 0 or last, self.step % cfg.checkpoint_every == 0 or last
            if evaluate or save:
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
            if save and main:
                save_checkpoint(os.path.join(self.out, "checkpoint.pt"), self._state())
                plot_curves(os.path.join(self.out, "curves.png"), self.rows, self.evaluator.names,
                            f"{cfg.optimizer} on {cfg.data}, seed {cfg.seed}")
            if evaluate or save:
                start += time.perf_counter() - paused
        if bar is not None:
            bar.close()
        return self.rows

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


def prepare(cfg: TrainConfig, resume: Optional[str] = None, steps: Optional[int] = None,
            data: Optional[TrainingData] = None) -> Run:
    """Check ``cfg`` (or the run folder ``resume``, whose total ``steps`` may be raised),
    load the data (unless ``data``, ``cfg.data`` already loaded at ``cfg.image_size``, is
    given) and build the run; a resumed run is at its checkpoint, with the folder's metric
    rows up to the checkpoint's step (it recomputes the later ones). Under torchrun, call
    ``torch.distributed.barrier()`` before :meth:`Run.train`, so that every rank has checked
    its input before rank 0 writes anything.

    Raises :class:`ConfigError`, :class:`~fastgame.data.DataError` or
    :class:`~fastgame.checkpoint.CheckpointError` with a one-line message; writes nothing.
    """
    rank, world = _dist()
    state = None
    if resume is not None:
        if not os.path.isdir(resume):
            raise ConfigError(f"--resume {resume}: no such run folder")
        cfg_path = os.path.join(resume, "config.json")
        try:
            with open(cfg_path) as f:
                saved = TrainConfig.from_json(json.load(f))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"{cfg_path}: cannot read the run's configuration ({exc})") from None
        saved.steps = steps if steps is not None else saved.steps
        cfg, out = saved, resume
        state = load_checkpoint(os.path.join(resume, "checkpoint.pt"))
    else:
        out = cfg.out or default_out(cfg)
        if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
            raise ConfigError(f"{out} already exists and is not empty; pass another --out, or --resume {out}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if data is None:
        data = load_dataset(cfg.data, cfg.image_size)
    if resume is None:
        cfg = resolve(cfg, data)
        cfg.out = out
        cfg.extra = {"world_size": world, "torch": str(torch.__version__)}
    else:
        resolve(cfg, data)  # re-check a hand-edited config.json
    if cfg.batch % world:
        raise ConfigError(f"--batch {cfg.batch} must be divisible by the number of processes ({world})")
    return Run(cfg, data, out, state, rank, world)


def train(cfg: TrainConfig, resume: Optional[str] = None, steps: Optional[int] = None, quiet: bool = False,
          label: str = "") -> Run:
    """Prepare and train one run (what ``fastgame train`` does); returns the finished
    :class:`Run` (its folder is ``run.out``)."""
    run = prepare(cfg, resume, steps)
    if run.world > 1:
        dist.barrier()  # every rank has checked its input before rank 0 writes anything
    run.train(quiet=quiet, label=label)
    return run

