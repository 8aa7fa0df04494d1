"""A training run's configuration: :class:`TrainConfig` (everything that defines a run, what
``config.json`` holds), :func:`resolve` (every setting checked, the data-dependent defaults
filled in) and :func:`config_diff` (what a resumed or reused run may not change).

Adding a trainer option: a field of :class:`TrainConfig` (with :data:`ADDED_LATER` if old run
folders ran without it), its check in :func:`resolve`, and its flag in :mod:`fastgame.trainer.cli`. An
option the optimizer takes under the same name also goes into :data:`OPTIMIZER_SETTINGS`; the
optimizer's own validators then check it (:mod:`fastgame.trainer.methods`).
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .. import losses as L
from .data import TrainingData, source_label
from .models import GAN_MODELS
from . import methods
from .methods import unsupported_setting

__all__ = ["TrainConfig", "ConfigError", "resolve", "config_diff", "default_out", "optimizer_settings",
           "unsupported_setting", "default_threads", "MODELS", "PENALTIES", "OPTIMIZER_SETTINGS", "ADDED_LATER", "FREE"]

MODELS = ("auto",) + GAN_MODELS
PENALTIES = ("none",) + tuple(L.PENALTIES)
# Default sizes that train in minutes on a CPU: an ACGD step of the width-64 MLP took
# ~0.02 s against ~0.28 s at width 256; the width-16 DCGAN trained the digits in under a minute.
_WIDTH = {"mlp": 64, "dcgan": 16, "wgan_gp_dcgan": 64}
_LATENT = {"mlp": 2, "dcgan": 32, "wgan_gp_dcgan": 128}
_LR = {"mlp": 1e-3, "dcgan": 2e-4, "wgan_gp_dcgan": 2e-4}

OPTIMIZER_SETTINGS = ("tol", "max_iter", "cg_start", "betas", "eps")
"""The settings given to the optimizer under their own names (None: the optimizer's own);
which optimizers take each one is the registry's answer."""


class ConfigError(ValueError):
    """An invalid training configuration (the message says which setting and why)."""


@dataclass
class TrainConfig:
    """Everything that defines a run (``fastgame train --help`` explains each setting)."""

    data: str = "ring8"
    out: Optional[str] = None
    optimizer: str = "acgd"
    steps: int = 2000
    batch: int = 256
    seed: int = 0
    loss: Optional[str] = None  # None: "standard" for points, "non_saturating" for images
    penalty: str = "none"
    penalty_weight: float = 10.0
    d_steps: int = 1  # discriminator (critic) steps per generator step: adam-alt only
    d_batchnorm: Optional[bool] = None  # BatchNorm in the DCGAN discriminator; None: on unless a penalty
    lr_d: Optional[float] = None
    lr_g: Optional[float] = None
    model: str = "auto"
    width: Optional[int] = None
    latent: Optional[int] = None
    image_size: Optional[int] = None
    tol: Optional[float] = None
    max_iter: Optional[int] = None
    cg_start: Optional[str] = None  # ACGD/BCGD's CG start (warm, zero, recycle); None: the optimizer's own
    betas: Optional[list[float]] = None  # Adam's (beta1, beta2); None: the method's own
    eps: Optional[float] = None  # the optimizer's epsilon (ACGD's, added to sqrt(v); Adam's); None: its own
    device: str = "auto"
    dtype: str = "float32"
    bf16: bool = False
    batchnorm: str = "fastgame"
    graphed: bool = False
    eager: bool = False  # ACGD/BCGD on CUDA: eager steps instead of the default piecewise CUDA graphs
    eval_every: Optional[int] = None
    eval_samples: Optional[int] = None
    checkpoint_every: Optional[int] = None
    threads: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)  # resolved facts: world size, versions

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrainConfig":
        """The config a ``config.json`` holds; a setting newer than the file takes the value its
        run was trained with (:data:`ADDED_LATER`), not today's default."""
        if not isinstance(d, dict):
            raise ConfigError(f"config.json holds {type(d).__name__}, not the settings")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"config.json has unknown settings {sorted(unknown)}")
        types = typing.get_type_hints(cls)
        for key, value in d.items():
            if not _has_type(value, types[key]):
                raise ConfigError(f"config.json: {key} is {value!r}, not {_type_name(types[key])}")
        return cls(**{**ADDED_LATER, **d})


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's type (int for a float field too; no bool for numbers)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union:
        return any(_has_type(value, a) for a in args)
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint) or hint
    if origin in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if origin is float else origin)


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union:
        return " or ".join(_type_name(a) for a in args)
    return "null" if hint is type(None) else getattr(typing.get_origin(hint) or hint, "__name__", str(hint))


ADDED_LATER: dict[str, Any] = {"batchnorm": "native", "d_steps": 1, "d_batchnorm": None, "betas": None,
                               "eps": None}
"""Settings added after runs were first saved, with the value those older runs used (image
models kept torch's BatchNorm before ``batchnorm`` existed; ``d_batchnorm`` None is the old rule,
BatchNorm in the DCGAN discriminator unless a penalty). ``cg_start`` needs no entry: its None
means the optimizer's own start, which a saved optimizer state records itself."""

TRAINER_TOL = 1e-6
"""The CG/GMRES tolerance the trainer gives ACGD, BCGD and GACGD unless --tol says otherwise: the
README's study ("Solve tolerance and training quality", docs/benchmarks.md) found it
quality-neutral with ~30% fewer mixed-HVP passes. The optimizer classes keep CGDs' defaults."""

CPU_THREADS = 1
"""The torch CPU threads of the small models (the MLP, the 8-px DCGAN) unless --threads says
otherwise: on a 2-core VM two threads gained nothing for them (300 ACGD steps of the width-64 MLP:
1.84 s vs 1.87 s; the 8-px digits DCGAN 1.95 vs 1.77 s), and on a busy machine torch's default
made them 8.5x slower (``fastgame train --data ring8 --steps 200`` at width 256: 7 min 58 s
against 56 s with one thread)."""

CONV_THREADS = 2
"""The CPU threads (at most the cores available) of the DCGANs at 16 and 32 px: on the same VM two
threads were faster (60 ACGD steps of the 16-px digits: 6.2 vs 7.9 s; 30 steps at 32 px: 14.5-15.4
vs 20.8-25.4 s; the WGAN-GP DCGAN 2.5 vs 4.9 s for 3 steps), with one other job running."""


def default_threads(model: str, image_size: Optional[int]) -> int:
    """The measured fastest CPU thread count of ``model`` (see :data:`CPU_THREADS`, :data:`CONV_THREADS`)."""
    if model == "mlp" or (image_size or 0) <= 8:
        return CPU_THREADS
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(CONV_THREADS, cores))


FREE = ("steps", "out", "extra", "threads")
"""The settings a continued run may change: it can be extended, its folder moved, or run on
another number of CPU threads (the numbers are then equal up to float rounding, not bit for bit)."""


def config_diff(saved: TrainConfig, mine: TrainConfig) -> list[str]:
    """The settings, other than :data:`FREE`, in which ``mine`` differs from ``saved`` (both
    resolved), in the order of :class:`TrainConfig`'s fields."""
    a, b = saved.to_json(), mine.to_json()
    return [k for k, v in b.items() if k not in FREE and a.get(k) != v]


def default_out(cfg: TrainConfig) -> str:
    """The run folder of ``cfg`` when no --out is given: fastgame-runs/<data>-<optimizer>-seed<seed>."""
    return os.path.join("fastgame-runs", f"{source_label(cfg.data)}-{cfg.optimizer}-seed{cfg.seed}")


def optimizer_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings of :data:`OPTIMIZER_SETTINGS` that ``cfg`` gives (the others: the optimizer's own)."""
    out = {k: getattr(cfg, k) for k in OPTIMIZER_SETTINGS if getattr(cfg, k) is not None}
    if "betas" in out:
        out["betas"] = tuple(out["betas"])
    return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _positive(name: str, v: Optional[float], allow_none: bool = True) -> None:
    if v is None and allow_none:
        return
    if v is None or not v > 0:
        raise ConfigError(f"{_flag(name)} must be > 0, got {v}")


def _one_of(flag: str, value: Any, choices: tuple[str, ...], what: str = "") -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}" if what else
                          f"{flag} must be {', '.join(choices[:-1])} or {choices[-1]}, got {value!r}")


def _check_settings(cfg: TrainConfig) -> None:
    """Every setting that does not depend on the data."""
    _one_of("--optimizer", cfg.optimizer, methods.names(), "optimizer")
    if cfg.loss is not None:
        _one_of("--loss", cfg.loss, tuple(L.LOSSES), "loss")
    _one_of("--penalty", cfg.penalty, PENALTIES, "penalty")
    _one_of("--model", cfg.model, MODELS, "model")
    _one_of("--device", cfg.device, ("auto", "cpu", "cuda"))
    _one_of("--dtype", cfg.dtype, ("float32", "float64"))
    _one_of("--batchnorm", cfg.batchnorm, ("fastgame", "native"))
    for name in ("steps", "batch", "width", "latent", "eval_every", "eval_samples", "checkpoint_every", "threads",
                 "lr_d", "lr_g", "tol", "eps"):
        _positive(name, getattr(cfg, name), allow_none=name not in ("steps", "batch"))
    if cfg.penalty_weight < 0:
        raise ConfigError(f"--penalty-weight must be >= 0, got {cfg.penalty_weight}")
    if not (isinstance(cfg.d_steps, int) and cfg.d_steps >= 1):
        raise ConfigError(f"--d-steps must be a whole number >= 1, got {cfg.d_steps!r}")
    if cfg.d_steps > 1 and methods.get_method(cfg.optimizer).stepper != "adam-alt":
        raise ConfigError(f"--d-steps {cfg.d_steps} is for adam-alt (critic steps, then a generator step against "
                          f"the updated critic); {cfg.optimizer} steps both players together")
    if cfg.d_batchnorm and cfg.penalty != "none":
        raise ConfigError(f"--d-batchnorm on cannot be combined with --penalty {cfg.penalty}: a gradient penalty "
                          "needs each sample's discriminator output to depend on that sample only")
    if cfg.betas is not None and (len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas)):
        raise ConfigError(f"--betas must be two numbers in [0, 1), got {cfg.betas!r}")
    cg_starts = methods.choices("cg_start") or ()
    if cfg.cg_start is not None and cfg.cg_start not in cg_starts:
        raise ConfigError(f"--cg-start must be one of {', '.join(cg_starts)}, got {cfg.cg_start!r}")
    if cfg.bf16 and cfg.dtype == "float64":
        raise ConfigError("--bf16 autocasts float32 models; it cannot be combined with --dtype float64")
    _check_optimizer(cfg)


def _check_optimizer(cfg: TrainConfig) -> None:
    """The optimizer's settings: each one it does not take is refused here, by name; the values
    and their combinations by the optimizer's own validators."""
    method = methods.get_method(cfg.optimizer)
    settings = optimizer_settings(cfg)
    for key in settings:
        why = unsupported_setting(cfg.optimizer, key)
        if why:
            raise ConfigError(f"{_flag(key)} {why}")
    if cfg.graphed and cfg.eager:
        raise ConfigError("--graphed and --eager exclude each other (--graphed: whole-step graphs; --eager: none)")
    if cfg.graphed:  # a whole step in a CUDA graph: the steppers of the CGD kind, capturable optimizers
        graphable = [m.name for m in methods.METHODS.values() if m.stepper == "cgd"]
        if method.stepper != "cgd":
            raise ConfigError(f"--graphed needs --optimizer {' or '.join(graphable)}")
        settings["capturable"] = True
    try:
        method.check(**settings)
    except ValueError as exc:
        graphed = " (--graphed builds it with capturable=True)" if cfg.graphed else ""
        raise ConfigError(f"--optimizer {cfg.optimizer} refuses these settings: {exc}{graphed}") from None


def resolve(cfg: TrainConfig, data: TrainingData) -> TrainConfig:
    """``cfg`` with the defaults that depend on the data filled in, after checking every setting."""
    _check_settings(cfg)
    model = cfg.model
    if model == "auto":  # the small DCGAN at every size: the WGAN-GP DCGAN is minutes a step on a CPU
        model = "mlp" if data.kind == "points" else "dcgan"
    if model == "mlp" and data.kind != "points":
        raise ConfigError(f"--model mlp is for 2-D points; {data.name} holds images (use dcgan or wgan_gp_dcgan)")
    if model != "mlp" and data.kind != "images":
        raise ConfigError(f"--model {model} is for images; {data.name} holds 2-D points (use mlp)")
    if model == "wgan_gp_dcgan" and data.sample_shape[-1] != 32:
        raise ConfigError(f"--model wgan_gp_dcgan needs 32x32 images; use --image-size 32 "
                          f"(the data are {data.sample_shape[-1]}x{data.sample_shape[-1]})")
    if model != "dcgan" and cfg.d_batchnorm is not None:
        raise ConfigError(f"--d-batchnorm is the DCGAN discriminator's; the {model} discriminator has no BatchNorm")
    out = dataclasses.replace(cfg)
    out.model = model
    out.loss = cfg.loss or ("standard" if data.kind == "points" else "non_saturating")
    if model == "dcgan" and cfg.d_batchnorm is None:
        out.d_batchnorm = cfg.penalty == "none"
    if cfg.tol is None and methods.get_method(cfg.optimizer).solver is not None:
        out.tol = TRAINER_TOL
    if cfg.threads is None and cfg.device != "cuda" and not (cfg.device == "auto" and torch.cuda.is_available()):
        out.threads = default_threads(model, data.sample_shape[-1] if data.kind == "images" else None)
    out.width = cfg.width or _WIDTH[model]
    out.latent = cfg.latent or _LATENT[model]
    out.lr_d = cfg.lr_d or _LR[model]
    out.lr_g = cfg.lr_g or _LR[model]
    out.image_size = data.sample_shape[-1] if data.kind == "images" else None
    out.eval_every = cfg.eval_every or max(1, cfg.steps // 20)
    out.checkpoint_every = cfg.checkpoint_every or max(1, cfg.steps // 5)
    out.eval_samples = cfg.eval_samples or (2500 if data.kind == "points" else 1000)
    return out
