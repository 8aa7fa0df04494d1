"""``fastgame compare``: one setting, several optimizers and seeds, one table and plots."""
from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import statistics
from typing import Any, Optional, Sequence

from .checkpoint import write_csv, write_json
from .config import ConfigError, TrainConfig, check, config_diff, read_run_config, resolve
from .data import TrainingData, load_dataset
from .evaluation import METRIC_DIRECTION
from . import methods
from .options import OPTIONS, option, parse_setting
from .train import prepare

__all__ = ["compare", "parse_optimizer", "summarise", "PER_METHOD"]

PER_METHOD = tuple(o.name for o in OPTIONS if o.per_method)
"""The settings an optimizer may carry in ``--optimizers`` (``NAME:key=value,...``): its rates, its
solve, Adam's betas (two numbers: ``betas=0.5,0.9``), critic steps, and the gradient penalty, so that
an explicitly regularized baseline (e.g. WGAN-GP's recipe) sits in the same table as unregularized runs."""


def _items(rest: str) -> list[tuple[str, str]]:
    """``"lr_d=1e-3,betas=0.5,0.9"`` -> ``[("lr_d", "1e-3"), ("betas", "0.5,0.9")]``: an item without
    ``=`` continues the previous value (an option of several values, as betas)."""
    items: list[tuple[str, str]] = []
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if eq:
            items.append((key, value))
        elif items and items[-1][0] in PER_METHOD and option(items[-1][0]).nargs:
            items[-1] = (items[-1][0], f"{items[-1][1]},{item}")
        else:
            items.append((item, ""))
    return items


def parse_optimizer(spec: str) -> tuple[str, dict[str, Any]]:
    """``"adam:lr_d=4e-4,lr_g=1e-4"`` -> ``("adam", {"lr_d": 4e-4, "lr_g": 1e-4})``;
    ``"acgd:cg_start=zero,tol=1e-6"`` -> ``("acgd", {"cg_start": "zero", "tol": 1e-6})``;
    ``"adam-alt:penalty=wgan_gp,d_steps=5,betas=0.5,0.9"`` -> ``("adam-alt", {"penalty": "wgan_gp",
    "d_steps": 5, "betas": [0.5, 0.9]})``. Each value is checked by its option's record; whether the
    optimizer takes it, and the combinations, by :func:`~fastgame.trainer.config.check`."""
    name, _, rest = spec.partition(":")
    if name not in methods.METHODS:
        raise ConfigError(f"unknown optimizer {name!r} in {spec!r}; choose one of {', '.join(methods.names())}")
    over: dict[str, Any] = {}
    for key, value in _items(rest):
        if key not in PER_METHOD or not value:
            raise ConfigError(f"{spec!r}: settings are key=value with key one of {', '.join(PER_METHOD)}")
        try:
            over[key] = parse_setting(key, value)
        except ValueError as exc:
            raise ConfigError(f"{spec!r}: {key} {exc}") from None
    try:
        methods.refuse_unsupported(name, [k for k in over if option(k).to_optimizer])
    except ValueError as exc:
        raise ConfigError(f"{spec!r}: {exc}") from None
    return name, over


def _folder_name(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec.replace(":", "_"))


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarise(runs: dict[str, list[list[dict[str, Any]]]], metrics: list[str],
              failures: Optional[dict[str, list[Optional[dict[str, Any]]]]] = None) -> list[dict[str, Any]]:
    """One row per optimizer: final and best of each metric (mean and std over the seeds with
    rows), the wall-clock seconds, the mean CG iterations per step and the mean mixed-HVP passes
    per step (NaN for runs recorded before the trainer counted passes), and ``failed``: the
    seeds whose run stopped on a non-finite step, each as "seed S: step N (reason)"."""
    table = []
    for name, all_seeds in runs.items():
        seeds = [rows for rows in all_seeds if rows]  # a run that failed before its first evaluation has none
        fails = [f for f in (failures or {}).get(name, []) if f is not None]
        row: dict[str, Any] = {"optimizer": name, "seeds": len(all_seeds),
                               "steps": max((rows[-1]["step"] for rows in seeds), default=0),
                               "failed": "; ".join(f"seed {f['seed']}: step {f['step']} ({f['reason']})" for f in fails)}
        for m in metrics:
            best = max if METRIC_DIRECTION[m] == "max" else min
            row[f"{m}_final"] = _mean_std([rows[-1][m] for rows in seeds])
            row[f"{m}_best"] = _mean_std([best(r[m] for r in rows) for rows in seeds])
        row["wall_s"] = _mean_std([rows[-1]["wall_s"] for rows in seeds])
        row["cg_iters"] = _mean_std([statistics.fmean(r["cg_iters"] for r in rows) for rows in seeds])
        row["hvp_passes"] = _mean_std([statistics.fmean(r.get("hvp_passes", math.nan) for r in rows)
                                       for rows in seeds])
        table.append(row)
    return table


def _fmt(ms: tuple[float, float], digits: int = 3) -> str:
    m, s = ms
    if not (math.isfinite(m) and math.isfinite(s)):
        return f"{m}"
    return f"{m:.{digits}g} ± {s:.2g}"


def _write_table(folder: str, table: list[dict[str, Any]], metrics: list[str], setting: str) -> None:
    arrow = {m: "↑" if METRIC_DIRECTION[m] == "max" else "↓" for m in metrics}
    cols = [f"{m} {arrow[m]} final" for m in metrics] + [f"{m} best" for m in metrics[:1]]
    lines = [f"{setting}\n", "| optimizer | seeds | steps | " + " | ".join(cols)
             + " | wall-clock s | CG iters/step | HVP passes/step | failed |", "|---" * (len(cols) + 7) + "|"]
    for r in table:
        vals = [_fmt(r[f"{m}_final"]) for m in metrics] + [_fmt(r[f"{m}_best"]) for m in metrics[:1]]
        # A method that solves nothing takes no CG iteration and no HVP pass: its columns stay empty.
        solves = methods.get_method(r["optimizer"].partition(":")[0]).solves
        cg, hp = (_fmt(r["cg_iters"]), _fmt(r["hvp_passes"])) if solves else ("–", "–")
        lines.append(f"| {r['optimizer']} | {r['seeds']} | {r['steps']} | " + " | ".join(vals)
                     + f" | {_fmt(r['wall_s'])} | {cg} | {hp} | {r['failed'] or '–'} |")
    lines.append("\nmean ± std over seeds; final = at the last step, best = best evaluation of each run. "
                 "HVP passes/step: mixed double-backward (Hessian-vector product) passes per step as the "
                 "optimizer counts them (a batched pass counts once; ACGD/BCGD take 2 + 2k with the warm "
                 "start, 1 + 2k from zero, for k CG iterations), averaged over the evaluation windows. failed: "
                 "the seeds whose run stopped on a non-finite step (the step, the reason; its folder holds "
                 "failed.json); their rows up to then count in the means.")
    with open(os.path.join(folder, "compare.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    flat = []
    for r in table:
        d: dict[str, Any] = {"optimizer": r["optimizer"], "seeds": r["seeds"], "steps": r["steps"], "failed": r["failed"]}
        for k, v in r.items():
            if isinstance(v, tuple):
                d[f"{k}_mean"], d[f"{k}_std"] = v
        flat.append(d)
    write_csv(os.path.join(folder, "compare.csv"), flat, list(flat[0]))


def _check_same_setting(out: str, cfg: TrainConfig, data: TrainingData) -> None:
    """A run folder is reused only for the setting ``cfg`` (its total steps may differ), read as
    ``train --resume`` reads it (settings newer than the folder take the value it ran with).
    The periods that default to a share of the steps (--eval-every, --checkpoint-every) are
    compared only where ``cfg`` sets them: left to their defaults, they are those the run was
    created with, whatever ``--steps`` now asks for."""
    saved = read_run_config(out)
    want = resolve(dataclasses.replace(cfg, eval_every=cfg.eval_every or saved.eval_every,
                                       checkpoint_every=cfg.checkpoint_every or saved.checkpoint_every), data)
    diff = config_diff(saved, want)
    if diff:
        raise ConfigError(f"{out} holds a run with other settings ({', '.join(diff)}); pick another --out")


FAILED_FILE = "failed.json"


def _train_or_record(run: Any, seed: int, label: str, quiet: bool) -> Optional[dict[str, Any]]:
    """Train ``run``; a divergence (a non-finite step) is a result of a stability comparison:
    recorded in the run's folder (:data:`FAILED_FILE`) and returned, not raised."""
    path = os.path.join(run.out, FAILED_FILE)
    try:
        run.train(quiet=quiet, label=label)
    except FloatingPointError as exc:
        failure = {"seed": seed, "step": run.step + 1, "reason": str(exc).splitlines()[0]}
        write_json(path, failure)
        print(f"{label}: stopped at step {failure['step']}: {failure['reason']} (recorded in {path})", flush=True)
        return failure
    if os.path.exists(path):  # an earlier attempt's record; this one finished
        os.remove(path)
    return None


def compare(folder: str, optimizers: Sequence[str], seeds: Sequence[int], settings: dict[str, Any],
            quiet: bool = False) -> str:
    """Run (or reuse) every optimizer × seed in ``folder``, then write the table and plots; returns
    the folder. ``optimizers``: specs ``NAME[:key=value,...]`` (:func:`parse_optimizer`);
    ``settings``: the other options given (by name; the rest take their defaults)."""
    from .plots import plot_compare
    specs = [parse_optimizer(s) for s in optimizers]
    if len(specs) < 2:
        raise ConfigError("compare needs two or more --optimizers")
    if len(set(optimizers)) != len(optimizers) or len(set(seeds)) != len(seeds):
        raise ConfigError("--optimizers and --seeds must not repeat")
    base = TrainConfig(**settings)
    steps = settings.get("steps")  # given: a reused run is extended to it
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"{folder} exists and is not a folder")
    # Check every run's input before the first one trains (a typo in the last one should not
    # cost the first ones' time).
    plans = []
    for spec, (name, over) in zip(optimizers, specs):
        try:
            check(dataclasses.replace(base, optimizer=name, **over))
        except ConfigError as exc:
            raise ConfigError(f"{spec!r}: {exc}") from None
    data = load_dataset(base.data, base.image_size)
    for spec, (name, over) in zip(optimizers, specs):
        for seed in seeds:
            out = os.path.join(folder, f"{_folder_name(spec)}-seed{seed}")
            cfg = dataclasses.replace(base, optimizer=name, seed=seed, out=out, **over)
            # A folder with a run's config is continued (from step 0 if it has no checkpoint yet).
            resume = out if os.path.isfile(os.path.join(out, "config.json")) else None
            if resume is None and os.path.exists(out) and os.listdir(out):
                raise ConfigError(f"{out} exists without a run's config.json; remove it or pick another --out")
            if resume is not None:
                _check_same_setting(out, cfg, data)
            plans.append((spec, seed, cfg, resume))
    for _, _, cfg, resume in plans:  # built once to check it, then dropped: one run in memory at a time
        prepare(cfg, resume, steps if resume else None, data=data)
    os.makedirs(folder, exist_ok=True)
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    failures: dict[str, list[Optional[dict[str, Any]]]] = {}
    metrics: list[str] = []
    for i, (spec, seed, cfg, resume) in enumerate(plans):
        run = prepare(cfg, resume, steps if resume else None, data=data)
        label = f"[{i + 1}/{len(plans)}] {spec} seed {seed}"
        if resume is not None and run.step >= run.cfg.steps:  # prepare() kept its metric rows
            print(f"{label}: finished earlier, reusing {run.out}", flush=True)
        failures.setdefault(spec, []).append(_train_or_record(run, seed, label, quiet))
        runs.setdefault(spec, []).append(run.rows)
        metrics = run.evaluator.names
        if i == 0:
            cfg0 = run.cfg  # as resolved (model, sizes): the table's setting line
        samples = os.path.join(run.out, "samples.png")
        if os.path.isfile(samples):  # a run that failed before its first evaluation has none
            shutil.copyfile(samples, os.path.join(folder, f"samples-{_folder_name(spec)}-seed{seed}.png"))
        del run
    setting = (f"{cfg0.data}, {cfg0.model} (width {cfg0.width}), loss {cfg0.loss}, penalty {cfg0.penalty}, batch "
               f"{cfg0.batch}, {cfg0.steps} steps, lr_d {cfg0.lr_d}, lr_g {cfg0.lr_g} unless set per optimizer")
    table = summarise(runs, metrics, failures)
    _write_table(folder, table, metrics, setting)
    # Data without a quality metric (user files) still get the discriminator's loss over time.
    plot_compare(os.path.join(folder, "compare.png"), runs, metrics[0] if metrics else "loss_d", setting)
    with open(os.path.join(folder, "compare.md")) as f:
        print(f.read(), flush=True)
    return folder
