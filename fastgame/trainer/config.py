"""A training run's configuration: :class:`TrainConfig` (everything that defines a run, what
``config.json`` holds; its fields are the records of :mod:`fastgame.trainer.options`),
:func:`resolve` (every setting checked, the data-dependent defaults filled in),
:func:`config_diff` (what a resumed or reused run may not change) and :func:`read_run_config`
(a run folder's ``config.json``).

Adding a trainer option: its record in :mod:`fastgame.trainer.options`, and the code where it
acts (a check of its combination with other options goes into :func:`_check_combinations`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import field
from typing import Any, Optional

import torch

from .data import TrainingData, source_label
from . import methods
from .options import CONV_THREADS, CPU_THREADS, MODELS, OPTIONS, PENALTIES, TRAINER_TOL, option

__all__ = ["TrainConfig", "ConfigError", "resolve", "check", "config_diff", "default_out", "optimizer_settings",
           "read_run_config", "default_threads", "MODELS", "PENALTIES", "OPTIMIZER_SETTINGS", "ADDED_LATER", "FREE",
           "RESUMABLE", "TRAINER_TOL", "CPU_THREADS", "CONV_THREADS"]

# Default sizes that train in minutes on a CPU: an ACGD step of the width-64 MLP took
# ~0.02 s against ~0.28 s at width 256; the width-16 DCGAN trained the digits in under a minute.
_WIDTH = {"mlp": 64, "dcgan": 16, "wgan_gp_dcgan": 64}
_LATENT = {"mlp": 2, "dcgan": 32, "wgan_gp_dcgan": 128}
_LR = {"mlp": 1e-3, "dcgan": 2e-4, "wgan_gp_dcgan": 2e-4}

OPTIMIZER_SETTINGS = tuple(o.name for o in OPTIONS if o.to_optimizer)
"""The settings given to the optimizer under their own names (None: the optimizer's own);
which optimizers take each one is the method table's answer."""

RESUMABLE = tuple(o.name for o in OPTIONS if o.resumable)
"""The settings ``train --resume`` may take anew (steps, threads): the run goes on with the same
numbers (with other threads, equal up to float rounding, not bit for bit)."""

FREE = RESUMABLE + tuple(o.name for o in OPTIONS if not o.identity) + ("extra",)
"""The settings in which a continued run may differ from its saved configuration: the resumable
ones, where it is written, and the resolved facts of ``extra``."""

ADDED_LATER: dict[str, Any] = {o.name: o.added_later for o in OPTIONS if o.added_later_to_runs}
"""Settings added after runs were first saved, with the value those older runs used (image
models kept torch's BatchNorm before ``batchnorm`` existed; ``d_batchnorm`` None is the old rule,
BatchNorm in the DCGAN discriminator unless a penalty). ``cg_start`` needs no entry: its None
means the optimizer's own start, which a saved optimizer state records itself."""


class ConfigError(ValueError):
    """An invalid training configuration (the message says which setting and why)."""


class _Config:
    """The methods of :class:`TrainConfig` (whose fields come from the option records)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Any:
        """The config a ``config.json`` holds; a setting newer than the file takes the value its
        run was trained with (:data:`ADDED_LATER`), not today's default."""
        if not isinstance(d, dict):
            raise ConfigError(f"config.json holds {type(d).__name__}, not the settings")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"config.json has unknown settings {sorted(unknown)}")
        types = typing.get_type_hints(cls)
        for key, value in d.items():
            if not _has_type(value, types[key]):
                raise ConfigError(f"config.json: {key} is {value!r}, not {_type_name(types[key])}")
        return cls(**{**ADDED_LATER, **d})


TrainConfig = dataclasses.make_dataclass(
    "TrainConfig", [(o.name, o.hint, field(default=o.default)) for o in OPTIONS]
    + [("extra", dict[str, Any], field(default_factory=dict))],  # resolved facts: world size, versions
    bases=(_Config,), namespace={"__doc__": "Everything that defines a run: one field per option of "
                                            ":data:`fastgame.trainer.options.OPTIONS` (``fastgame train --help`` "
                                            "explains each), and ``extra``, the resolved facts (world size, versions).",
                                            "__module__": __name__})


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


def default_threads(model: str, image_size: Optional[int]) -> int:
    """The measured fastest CPU thread count of ``model`` (see :data:`CPU_THREADS`, :data:`CONV_THREADS`)."""
    if model == "mlp" or (image_size or 0) <= 8:
        return CPU_THREADS
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(CONV_THREADS, cores))


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


def check(cfg: TrainConfig) -> None:
    """Every setting of ``cfg`` that does not depend on the data: each value by its option's
    record, then their combinations; :class:`ConfigError` naming the first problem."""
    for opt in OPTIONS:
        problem = opt.problem(getattr(cfg, opt.name))
        if problem is None and getattr(cfg, opt.name) is None and opt.default is not None:
            problem = "must be given, got None"
        if problem:
            raise ConfigError(f"{opt.flag} {problem}")
    _check_combinations(cfg)


def _check_combinations(cfg: TrainConfig) -> None:
    """The settings that refuse each other, and the optimizer's: each one it does not take is
    refused here, by name; the values and their combinations by the optimizer's own validators."""
    method = methods.get_method(cfg.optimizer)
    if cfg.d_steps > 1 and not method.stepper.critic_steps:
        raise ConfigError(f"--d-steps {cfg.d_steps} is for adam-alt (critic steps, then a generator step against "
                          f"the updated critic); {cfg.optimizer} steps both players together")
    if cfg.d_batchnorm and cfg.penalty != "none":
        raise ConfigError(f"--d-batchnorm on cannot be combined with --penalty {cfg.penalty}: a gradient penalty "
                          "needs each sample's discriminator output to depend on that sample only")
    if cfg.bf16 and cfg.dtype == "float64":
        raise ConfigError("--bf16 autocasts float32 models; it cannot be combined with --dtype float64")
    settings = optimizer_settings(cfg)
    try:
        methods.refuse_unsupported(cfg.optimizer, settings, label=lambda key: option(key).flag)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.graphed and cfg.eager:
        raise ConfigError("--graphed and --eager exclude each other (--graphed: whole-step graphs; --eager: none)")
    if cfg.graphed:  # a whole step in a CUDA graph: graphable steppers, capturable optimizers
        if not method.stepper.graphable:
            graphable = [m.name for m in methods.METHODS.values() if m.stepper.graphable]
            raise ConfigError(f"--graphed needs --optimizer {' or '.join(graphable)}")
        settings["capturable"] = True
    try:
        method.check(**settings)
    except ValueError as exc:
        graphed = " (--graphed builds it with capturable=True)" if cfg.graphed else ""
        raise ConfigError(f"--optimizer {cfg.optimizer} refuses these settings: {exc}{graphed}") from None


def read_run_config(folder: str) -> TrainConfig:
    """The configuration of the run folder ``folder`` (its ``config.json``, read with
    :meth:`TrainConfig.from_json`); :class:`ConfigError` naming the file if it is unreadable."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            return TrainConfig.from_json(json.load(f))
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read the run's configuration ({exc})") from None


def resolve(cfg: TrainConfig, data: TrainingData) -> TrainConfig:
    """``cfg`` with the defaults that depend on the data filled in, after checking every setting."""
    check(cfg)
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
    if cfg.tol is None and methods.get_method(cfg.optimizer).solves:
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
