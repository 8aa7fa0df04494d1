"""The fastgame benchmark suite: ACGD (or BCGD, ``--algo``) step time of fastgame (eager and CUDA-graphed, each fused-op
backend) vs CGDs 0.4.5 vs simultaneous Adam (eager and fused), on the same model, initial
parameters, batches and tolerance, in one process (docs/design.md §7).

    python -m bench --suite quick                    # CPU, small sizes, a few minutes
    python -m bench --suite cpu  --out bench/results/
    python -m bench --suite gpu  --out bench/results/   # CUDA: eager + graphed rows, CUDA-event timing
    python -m bench --suite cpu --models mlp --optimizers cgds fastgame adam
    python -m bench --suite quick --smoke            # CI: every row of the suite, tiny models, 1 + 2 steps

Each row reports the median ms/step (warm-up steps excluded), CG iterations k and mixed-HVP
passes per step, the peak memory, the speed-up over CGDs and the cost relative to Adam. Each
model also gets its *floor* measured in the same run and mode: one forward + create_graph
backward (F) and one mixed HVP pass (H, the mean of D_xy and D_yx); a fastgame step doing
P passes (1 + 2k from CG's zero start, 2 + 2k warm) has floor F + P·H, and ``step/floor`` says
how close the step gets to it. On the CPU the floor is sampled in the rows' loop, each sample
F_j and the mean H_j of 6 passes each way, on the same batch, thread count and models, and a
row's floor is the median over samples of F_j + P·H_j: a median of per-step sums, as the rows'
own times are (a sum of per-pass medians would leave out the passes a shared CPU slows down).
A recycled-CG row's batched passes (A·W) count once but cost more than one pass.

Timing: on CUDA, per-step CUDA events with no host sync between steps (the graphed step is run
with check_finite=False), torch.backends.cudnn.benchmark on, rows one after another; on the
CPU, time.perf_counter, and the rows' timed steps interleaved round-robin (step j of every row
before step j + 1 of any, the floor sampled in the same loop), so a shared machine's drifting
load hits every row alike (--no-interleave: one row after another). Every row starts from a
deep copy of one seeded model and steps through the same batches; CGDs and fastgame get the
same tol/atol. CGDs' CG iterations come from a second, untimed run with collect_info=True;
mixed-HVP passes are counted by wrapping torch.autograd.grad/backward (fastgame's also from
``opt.get_info()``, and the two are checked against each other). Graphed rows (CUDA, when
``fastgame.make_graphed_step`` exists) run CG for exactly max_iter = the most iterations the
eager fastgame step needed, so they compute the same numbers.
Mixed precision (the -bf16 rows, backend auto): the loss is computed under torch.autocast(bfloat16),
so the forward, the create_graph backward and every mixed HVP run in bf16 where autocast allows,
while gradients, step sizes and CG state stay fp32. Their accuracy: ``step_err_vs_fp32``, the
median (and max) over the timed steps of ‖Δθ_bf16 − Δθ_fp32‖/‖Δθ_fp32‖ for one step taken from
the same point of the fp32 trajectory (untimed run, :func:`bench.rows.mixed_step_errors`), and
``dtheta_vs_cgds`` after the whole run. The floor columns are fp32's and left empty for them.
Memory: CUDA torch.cuda.max_memory_allocated from the end of the warm-up (cuDNN autotuning
done) over the timed steps -- graphed rows from the first capture, so the graphs' memory pool
counts (``peak_mb`` absolute, ``extra_mb`` above what was allocated when the row started:
models, batches, earlier rows' leftovers);
CPU the process's peak-RSS growth during the row (VmHWM reset through /proc/self/clear_refs
after malloc_trim; approximate: the allocator may reuse memory freed by earlier rows), or
n/a where the kernel does not allow it.

Files: cases.py (the suites' models and batches), measure.py (timers, pass counters, memory,
the floor), rows.py (one runner per optimizer row, and the loop that drives them), this file
(the suite, its table and files, the command line).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Optional

import torch

import fastgame

from .cases import SUITES, VARIANTS, Case, Config, build_case
from .measure import measure_floor
from .rows import (AdamRunner, CGDsRunner, FastgameRunner, FloorRunner, Runner, _flat, cgds_iterations, drive,
                   floor_ms, mixed_step_errors)
OPTIMIZERS = ("cgds", "fastgame", "fastgame-graphed", "fastgame-bf16", "fastgame-graphed-bf16", "adam", "adam-fused")
COLUMNS = ["suite", "config", "model", "batch", "device", "optimizer", "algo", "backend", "mode", "status",
           "ms_median", "ms_mean", "ms_min", "ms_iqr", "steps", "cg_iters", "cg_iters_max", "hvp_passes",
           "grad_passes", "floor_ms", "step_over_floor", "fwd_bwd_ms", "hvp_ms", "peak_mb", "extra_mb",
           "mem_method", "speedup_vs_cgds", "cost_vs_adam", "dtheta_vs_cgds", "step_err_vs_fp32",
           "step_err_vs_fp32_max", "params_G", "params_D", "tol", "cg_start",
           "lr", "warmup", "max_iter", "note"]


def _available_backends(device: torch.device) -> list[str]:
    # The Triton interpreter (auto=False) is for tests, not timing.
    return [b.name for b in fastgame.backends().values() if b.auto and b.serves(device) is None]


def _row_base(suite: str, cfg: Config, case: Case, device: torch.device, tol: float) -> dict[str, Any]:
    return {"suite": suite, "config": cfg.label, "model": cfg.model, "batch": cfg.batch, "device": device.type,
            "params_G": sum(p.numel() for p in case.G.parameters()),
            "params_D": sum(p.numel() for p in case.D.parameters()), "tol": tol, "lr": cfg.lr}


# ---- the suite ------------------------------------------------------------------------------

def environment(device: torch.device) -> dict[str, Any]:
    try:
        from importlib.metadata import version
        cgds_version = version("CGDs")
    except Exception:  # noqa: BLE001
        cgds_version = "not installed"
    meta = {"time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": device.type, "torch": torch.__version__, "cgds": cgds_version,
            "fastgame": getattr(fastgame, "__version__", "?"), "python": platform.python_version(),
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "fastgame_backends": {name: str(b) for name, b in fastgame.backends().items()},
            "graphed_api": hasattr(fastgame, "make_graphed_step")}
    try:
        import subprocess
        meta["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        meta["git"] = "?"
    if hasattr(os, "getloadavg"):
        meta["loadavg"] = os.getloadavg()
    if device.type == "cuda":
        meta.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), cudnn_benchmark=torch.backends.cudnn.benchmark,
                    cudnn_tf32=torch.backends.cudnn.allow_tf32, matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
        try:
            import triton
            meta["triton"] = triton.__version__
        except ImportError:
            meta["triton"] = "not installed"
    return meta


def _matches(cfg: Config, models: Optional[list[str]]) -> bool:
    return not models or any(m in (cfg.model, cfg.label) for m in models)


@dataclasses.dataclass
class _Plan:
    """A suite run's settings, resolved once (:func:`_plan`) and read by every stage."""
    suite: str
    device: torch.device
    optimizers: list[str]
    warmup: Optional[int]       # None: each case's own, else the suite's
    steps: Optional[int]
    tol: float
    atol: float
    graph_max_iter: Optional[int]
    count_steps: Optional[int]  # None: every timed step
    floor: bool
    interleave: bool
    algo: str
    batchnorm: str
    log: Callable[..., None]

    def case_steps(self, cfg: Config) -> tuple[int, int]:
        """(warm-up, timed) steps of ``cfg``: the caller's, else the case's, else the suite's."""
        spec = SUITES[self.suite]
        warmup = self.warmup if self.warmup is not None else (cfg.warmup if cfg.warmup is not None else spec["warmup"])
        steps = self.steps if self.steps is not None else (cfg.steps if cfg.steps is not None else spec["steps"])
        return warmup, steps


def _plan(suite: str, optimizers, steps, warmup, tol, atol, device, threads, graph_max_iter, count_steps, floor,
          verbose, interleave, algo, batchnorm) -> _Plan:
    """Check the arguments and set the process up (threads, cuDNN) for the suite."""
    spec = SUITES[suite]
    dev = torch.device(device or spec["device"])
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("the gpu suite needs CUDA (torch.cuda.is_available() is False); try --suite cpu")
    threads = threads or spec.get("threads")
    if threads:  # quick/tiny: 1 thread, robust on a shared 2-core machine (2 OpenMP threads under load stall)
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if interleave is None:  # a shared CPU's load drifts over minutes: let it hit every row alike
        interleave = dev.type == "cpu"
    optimizers = list(optimizers or OPTIMIZERS)
    unknown = set(optimizers) - set(OPTIMIZERS)
    if unknown:
        raise ValueError(f"unknown optimizers {sorted(unknown)}; choose from {OPTIMIZERS}")
    return _Plan(suite, dev, optimizers, warmup, steps, tol, atol, graph_max_iter,
                 None if count_steps == -1 else count_steps,  # -1: every timed step, so CGDs' k covers fastgame's
                 floor, interleave, algo, batchnorm, print if verbose else (lambda *a, **k: None))


def _eager_makers(plan: _Plan, case: Case, cfg: Config, warmup: int,
                  backends_here: list[str]) -> list[tuple[str, Callable[[], Runner]]]:
    """(row key, runner factory) of the eager rows of one case."""
    opts, tol, atol, algo = plan.optimizers, plan.tol, plan.atol, plan.algo
    mk: list[tuple[str, Callable[[], Runner]]] = []
    if "adam" in opts:
        mk.append(("adam", lambda: AdamRunner(case, cfg, warmup, fused=False)))
    if "adam-fused" in opts:
        mk.append(("adam-fused", lambda: AdamRunner(case, cfg, warmup, fused=True)))
    variants = VARIANTS if cfg.variants and "fastgame" in opts and backends_here else []
    if "cgds" in opts:  # one row at the suite's tol, one at each other tolerance preset
        for t in dict.fromkeys([tol] + [vt for _, vt in variants if vt is not None]):
            mk.append(("cgds" if t == tol else f"cgds@tol{t:g}",
                       lambda t=t: CGDsRunner(case, cfg, warmup, t, atol, algo)))
    if "fastgame" in opts:
        for backend in backends_here:
            mk.append((f"fastgame/{backend}",
                       lambda b=backend: FastgameRunner(case, cfg, warmup, tol, atol, b, False, None, algo)))
        for start, vt in variants:  # per CG start and tolerance preset, on the auto backend
            t = tol if vt is None else vt
            mk.append((f"fastgame@{start},tol{t:g}/auto",
                       lambda s=start, t=t: FastgameRunner(case, cfg, warmup, t, atol, "auto", False, None, algo,
                                                           cg_start=s)))
    if "fastgame-bf16" in opts and backends_here:  # one row: the mixed part is autograd's, not the ops'
        mk.append(("fastgame-bf16/auto",
                   lambda: FastgameRunner(case, cfg, warmup, tol, atol, "auto", False, None, algo, mixed=True)))
    return mk


def _build(makers: list[tuple[str, Callable[[], Runner]]], add: Callable[[dict], None]) -> list[Runner]:
    """The runners the factories can build; a row says why for each that cannot."""
    runners: list[Runner] = []
    for key, make in makers:
        try:
            rn = make()
            rn.key = key
            runners.append(rn)
        except ImportError as exc:
            add({"optimizer": key, "backend": "-", "mode": "eager", "status": "skipped",
                 "note": f"not importable: {exc}"})
        except (RuntimeError, ValueError, TypeError) as exc:  # e.g. fused Adam unsupported here
            add({"optimizer": key.split("/")[0], "backend": key.split("/")[-1], "mode": "eager",
                 "status": "skipped", "note": f"{type(exc).__name__}: {exc}"[:300]})
    return runners


def _run_eager(plan: _Plan, case: Case, cfg: Config, warmup: int, steps: int, backends_here: list[str],
               want_floor: bool, fl: dict, finals: dict, add: Callable[[dict], None]) -> None:
    """Time the eager rows (and, interleaved, the floor) and complete their rows: CGDs' CG
    iterations from an untimed run, the bf16 row's step error."""
    dev = plan.device
    if want_floor and not plan.interleave:  # measured right before the rows
        fl["eager"] = measure_floor(case, dev, graphed=False)
    runners = _build(_eager_makers(plan, case, cfg, warmup, backends_here), add)
    floor_runner = FloorRunner(case, warmup) if want_floor and plan.interleave else None
    drive(runners + ([floor_runner] if floor_runner else []), dev, steps, plan.interleave)
    if floor_runner is not None and floor_runner.row.get("status") == "ok":
        fl["eager"] = floor_runner.floor()
    for rn in runners:
        rn.row["key"] = rn.key
        ok = rn.row.get("status") == "ok"
        if ok:
            finals[rn.key] = rn.final_params
        if rn.key.startswith("cgds") and ok:
            counted = steps if plan.count_steps is None else min(steps, plan.count_steps)
            iters, formula_ok = cgds_iterations(case, cfg, warmup, counted, rn.row["tol"], plan.atol, plan.algo)
            rn.row.update(cg_iters=statistics.fmean(iters) if iters else None,
                          cg_iters_max=max(iters) if iters else None,
                          note=f"k from an untimed collect_info run ({len(iters)} steps)"
                               + ("" if formula_ok else "; its passes != 5+2k"))
        if rn.key.startswith("fastgame-bf16") and ok:
            errors = mixed_step_errors(case, cfg, warmup, steps, plan.tol, plan.atol, plan.algo)
            rn.row.update(step_err_vs_fp32=statistics.median(errors), step_err_vs_fp32_max=max(errors))
        add(rn.row)


def _graphed_runners(plan: _Plan, full: Case, cfg: Config, warmup: int, backends_here: list[str],
                     cfg_rows: list[dict], add: Callable[[dict], None]) -> list[Runner]:
    """The graphed rows' runners (CUDA): CG runs as many iterations as the eager fastgame step
    needed at most; a row says why for each that cannot run here."""
    def eager_kmax(name: str) -> int:
        return max((r["cg_iters_max"] for r in cfg_rows if r.get("key", "").startswith(name + "/")
                    and r.get("status") == "ok"), default=0)

    wanted = [(f"fastgame-graphed/{b}", b, False) for b in backends_here if "fastgame-graphed" in plan.optimizers]
    if "fastgame-graphed-bf16" in plan.optimizers and backends_here:
        wanted.append(("fastgame-graphed-bf16/auto", "auto", True))
    runners: list[Runner] = []
    for key, backend, mixed in wanted:
        name = key.split("/")[0]
        skipped = {"optimizer": name, "backend": backend, "mode": "graphed", "status": "skipped"}
        if not hasattr(fastgame, "make_graphed_step"):
            add({**skipped, "note": "fastgame.make_graphed_step does not exist in this fastgame"})
        elif plan.device.type != "cuda":
            add({**skipped, "note": "CUDA graphs need a CUDA device"})
        else:
            k = plan.graph_max_iter or eager_kmax("fastgame-bf16" if mixed else "fastgame") or eager_kmax(
                "fastgame") or 8
            try:
                rn = FastgameRunner(full, cfg, warmup, plan.tol, plan.atol, backend, True, k, plan.algo, mixed=mixed)
                rn.key = key
                runners.append(rn)
            except Exception as exc:  # noqa: BLE001
                add({**skipped, "status": "error", "note": f"{type(exc).__name__}: {exc}"[:300]})
    return runners


def _run_graphed(plan: _Plan, case: Case, runners: list[Runner], warmup: int, steps: int, want_floor: bool,
                 fl: dict, finals: dict, cfg_rows: list[dict], add: Callable[[dict], None]) -> None:
    """Time the graphed rows (and their floor) and complete their rows."""
    if want_floor:
        try:
            fl["graphed"] = measure_floor(case, plan.device, graphed=True)
        except Exception as exc:  # noqa: BLE001
            fl["graphed_error"] = f"{type(exc).__name__}: {exc}"[:300]
    drive(runners, plan.device, steps, plan.interleave)
    eager_bf16 = next((r for r in cfg_rows if r["optimizer"] == "fastgame-bf16"), {})
    for rn in runners:
        if rn.row.get("status") == "ok" and warmup >= 6:  # same number of steps as CGDs
            finals[rn.key] = rn.final_params
        if rn.key.startswith("fastgame-graphed-bf16"):  # the same steps, measured eagerly
            rn.row.update({k: eager_bf16.get(k) for k in ("step_err_vs_fp32", "step_err_vs_fp32_max")})
        add(rn.row)


def _add_ratios(cfg_rows: list[dict], fl: dict, finals: dict, theta0: torch.Tensor, tol: float) -> None:
    """Speed-up over CGDs at the row's own tolerance (the suite's where CGDs has no row at it),
    cost relative to Adam, the floor columns and the distance from CGDs' final parameters."""
    ref = {r["optimizer"]: r for r in cfg_rows if r.get("status") == "ok" and r.get("tol", tol) == tol}
    cgds_at = {r["tol"]: r for r in cfg_rows if r.get("status") == "ok" and r["optimizer"] == "cgds"}
    for r in cfg_rows:
        if r.get("status") != "ok":
            continue
        cg_ref = cgds_at.get(r.get("tol", tol), ref.get("cgds"))
        if cg_ref is not None:
            r["speedup_vs_cgds"] = cg_ref["ms_median"] / r["ms_median"]
        if "adam" in ref:
            r["cost_vs_adam"] = r["ms_median"] / ref["adam"]["ms_median"]
        f = fl.get(r["mode"])
        if r["optimizer"] in ("fastgame", "fastgame-graphed") and f:  # the floor is fp32's
            r["fwd_bwd_ms"], r["hvp_ms"] = f["fwd_bwd_ms"], f["hvp_ms"]
            r["floor_ms"] = floor_ms(f, r["hvp_passes"])
            r["step_over_floor"] = r["ms_median"] / r["floor_ms"]
        key = r.get("key") or r["optimizer"] + ("" if r["optimizer"] == "cgds" else f"/{r['backend']}")
        cg_key = cg_ref.get("key", "cgds") if cg_ref is not None else "cgds"
        if r["algo"] != "Adam SimGDA" and cg_key in finals and key in finals:
            moved = (finals[cg_key] - theta0).norm()
            r["dtheta_vs_cgds"] = float((finals[key] - finals[cg_key]).norm() / moved) if moved > 0 else 0.0


def _run_case(plan: _Plan, cfg: Config) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One configuration's rows and floors: build the case, run the eager then the graphed rows,
    add the ratios."""
    log, dev = plan.log, plan.device
    warmup, steps = plan.case_steps(cfg)
    full = build_case(cfg, dev, max(warmup, 6) + steps, batchnorm=plan.batchnorm)  # graphed rows warm up >= 6 steps
    case = dataclasses.replace(full, batches=full.batches[:warmup + steps])  # eager rows: warmup + steps
    base = {**_row_base(plan.suite, cfg, case, dev, plan.tol), "warmup": warmup}
    log(f"## {cfg.label}: G {base['params_G']:,} D {base['params_D']:,} params, {case.loss_name}, lr {cfg.lr:g}, "
        f"{steps} timed steps after {warmup}")
    cfg_rows: list[dict[str, Any]] = []
    finals: dict[str, torch.Tensor] = {}
    theta0 = _flat(case.G, case.D)

    def add(row: dict[str, Any]) -> None:
        row = {**base, **row}
        cfg_rows.append(row)
        if row.get("status") == "ok":
            log(f"   {_name(row):<34}{row['backend']:<8}{row['ms_median']:9.2f} ms"
                + (f"  k {row['cg_iters']:.2f}  passes {row['hvp_passes']:.1f}" if row.get("cg_iters") is not None
                   else ""))
        else:
            log(f"   {_name(row):<34}{row['backend']:<8} {row['status']}: {row.get('note', '')}")

    backends_here = _available_backends(dev)
    want_floor = bool(plan.floor and backends_here and ("fastgame" in plan.optimizers
                                                        or "fastgame-graphed" in plan.optimizers))
    fl: dict[str, Any] = {}
    _run_eager(plan, case, cfg, warmup, steps, backends_here, want_floor, fl, finals, add)
    graphed = _graphed_runners(plan, full, cfg, warmup, backends_here, cfg_rows, add)
    if graphed:
        _run_graphed(plan, case, graphed, warmup, steps, want_floor, fl, finals, cfg_rows, add)
    del graphed
    for mode in ("eager", "graphed"):
        if mode in fl:
            f = fl[mode]
            log(f"   floor ({mode}): forward + create_graph backward {f['fwd_bwd_ms']:.3f} ms, "
                f"one HVP pass {f['hvp_ms']:.3f} ms (D_xy {f['hvp_xy_ms']:.3f}, D_yx {f['hvp_yx_ms']:.3f})")
    _add_ratios(cfg_rows, fl, finals, theta0, plan.tol)
    return cfg_rows, fl


def _write(out: str, suite: str, tag: Optional[str], meta: dict, floors: dict, rows: list[dict],
           table: str) -> list[str]:
    """``<out>/<suite>_<UTC time>[_tag]``.json/.csv/.txt (and .png): the files written."""
    os.makedirs(out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stem = os.path.join(out, f"{suite}_{stamp}" + (f"_{tag}" if tag else ""))
    with open(stem + ".json", "w") as f:
        json.dump({"meta": meta, "floors": floors, "rows": rows}, f, indent=1, default=str)
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k)) for k in COLUMNS})
    with open(stem + ".txt", "w") as f:
        f.write(format_verdict(rows) + "\n\n" + table + "\n")
    files = [stem + ".json", stem + ".csv", stem + ".txt"]
    plot = plot_verdict(rows, stem + ".png", f"{suite} suite, {meta.get('device', '')}")
    return files + ([plot] if plot else [])


def run_suite(suite: str = "quick", out: Optional[str] = "fastgame-runs/bench", models: Optional[list[str]] = None,
              optimizers: Optional[list[str]] = None, steps: Optional[int] = None, warmup: Optional[int] = None,
              tol: float = 1e-10, atol: float = 1e-20, device: Optional[str] = None, threads: Optional[int] = None,
              graph_max_iter: Optional[int] = None, count_steps: Optional[int] = -1, floor: bool = True,
              tag: Optional[str] = None, verbose: bool = True, interleave: Optional[bool] = None,
              algo: str = "ACGD", batchnorm: str = "native", configs: Optional[list[Config]] = None) -> dict[str, Any]:
    """Run a suite; write ``<out>/<suite>_<UTC time>.json`` and ``.csv`` (``out`` None: nothing)
    and return ``{"meta", "floors", "rows", "files"}``. ``interleave`` (default: on the CPU) runs
    the timed steps of all rows round-robin (see :func:`drive`). ``configs`` replaces the
    suite's configurations (``--smoke``: shrunk copies of them)."""
    plan = _plan(suite, optimizers, steps, warmup, tol, atol, device, threads, graph_max_iter, count_steps, floor,
                 verbose, interleave, algo, batchnorm)
    spec, log = SUITES[suite], plan.log
    meta = environment(plan.device)
    meta.update(suite=suite, algo=algo, batchnorm=batchnorm, steps=spec["steps"] if steps is None else steps,
                warmup=spec["warmup"] if warmup is None else warmup, tol=tol, atol=atol, tag=tag,
                interleaved=plan.interleave,
                timing="CUDA events per step, no host sync between steps" if plan.device.type == "cuda"
                else "time.perf_counter per step", statistic="median over timed steps (warm-up excluded)")
    log(f"# fastgame bench --suite {suite} --algo {algo} --batchnorm {batchnorm}: {plan.device.type} "
        f"{meta.get('gpu', meta['cpu'])}, torch {meta['torch']}, CGDs {meta['cgds']}, fastgame {meta['fastgame']}, "
        f"{meta['threads']} threads, {meta['steps']} timed steps after {meta['warmup']} warm-up (where a case sets "
        f"none), tol {tol:g}, {'interleaved' if plan.interleave else 'sequential'} rows")
    rows: list[dict[str, Any]] = []
    floors: dict[str, dict[str, Any]] = {}
    t_suite = time.perf_counter()
    for cfg in configs if configs is not None else spec["configs"]:
        if _matches(cfg, models):
            cfg_rows, floors[cfg.label] = _run_case(plan, cfg)
            rows.extend(cfg_rows)
            gc.collect()
    meta["suite_seconds"] = time.perf_counter() - t_suite
    result = {"meta": meta, "floors": floors, "rows": rows, "files": []}
    table = format_table(rows, floors)
    log("")
    log(format_verdict(rows))
    if not out:
        log("")
        log(table)
        return result
    result["files"] = _write(out, suite, tag, meta, floors, rows, table)
    stem = os.path.splitext(os.path.basename(result["files"][0]))[0]
    log(f"wrote {', '.join(os.path.basename(p) for p in result['files'])} to {out} (the full table is in "
        f"{stem}.txt; {meta['suite_seconds']:.0f} s)")
    return result


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def _fmt(v: Any, spec: str, missing: str = "-") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    return format(v, spec)


def _name(row: dict[str, Any]) -> str:
    """The optimizer, with its CG start and tolerance where a row names them."""
    extra = [f"{row['cg_start']}" if row.get("cg_start") else "", f"tol {row['tol']:g}" if row.get("tol") else ""]
    extra = [e for e in extra if e] if row["optimizer"] != "adam" and not row["optimizer"].startswith("adam") else []
    return row["optimizer"] + (f" ({', '.join(extra)})" if extra else "")


def _fastest(rows: list[dict[str, Any]], config: str, optimizers: tuple[str, ...]) -> Optional[dict[str, Any]]:
    """The fastest ok row of ``optimizers`` for ``config``, at the tolerance of the config's CGDs row
    (the suite's), so that a looser preset does not stand in for a like-for-like comparison."""
    cgds_tol = next((r.get("tol") for r in rows if r["config"] == config and r.get("key", r["optimizer"]) == "cgds"),
                    None)
    ok = [r for r in rows if r["config"] == config and r["optimizer"] in optimizers and r.get("status") == "ok"
          and (cgds_tol is None or r.get("tol", cgds_tol) == cgds_tol)]
    return min(ok, key=lambda r: r["ms_median"]) if ok else None


def format_verdict(rows: list[dict[str, Any]]) -> str:
    """The suite in a few lines: per model, fastgame's fastest fp32 row (eager, and graphed
    where there is one) as a speed-up over CGDs and a cost relative to Adam."""
    lines = ["verdict (fastest fp32 fastgame row per model at CGDs' tolerance; speed-up over CGDs 0.4.5, "
             "cost relative to Adam):"]
    for config in dict.fromkeys(r["config"] for r in rows):
        parts = []
        for label, names in (("eager", ("fastgame",)), ("graphed", ("fastgame-graphed",))):
            r = _fastest(rows, config, names)
            if r is not None:
                parts.append(f"{label} {_fmt(r.get('speedup_vs_cgds'), '.2f')}x CGDs, "
                             f"{_fmt(r.get('cost_vs_adam'), '.1f')}x Adam ({r['ms_median']:.1f} ms, {r['backend']}, "
                             f"cg_start {r.get('cg_start')}, step/floor {_fmt(r.get('step_over_floor'), '.2f')})")
        lines.append(f"  {config:<16}" + ("; ".join(parts) if parts else "no fastgame rows"))
    return "\n".join(lines)


def plot_verdict(rows: list[dict[str, Any]], path: str, title: str) -> Optional[str]:
    """A bar chart of ms/step per model for CGDs, fastgame (eager, graphed) and Adam; None
    (nothing written) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    configs = list(dict.fromkeys(r["config"] for r in rows))
    series = [("CGDs 0.4.5", ("cgds",)), ("fastgame eager", ("fastgame",)), ("fastgame graphed", ("fastgame-graphed",)),
              ("Adam", ("adam", "adam-fused"))]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(configs), 3.2))
    width = 0.8 / len(series)
    for i, (label, names) in enumerate(series):
        ms = [(_fastest(rows, c, names) or {}).get("ms_median", float("nan")) for c in configs]
        ax.bar([j + i * width for j in range(len(configs))], ms, width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(configs))], configs)
    ax.set_ylabel("ms per step (median)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(rows: list[dict[str, Any]], floors: dict[str, Any]) -> str:
    head = (f"{'config':<20}{'optimizer':<22}{'backend':<8}{'mode':<8}{'start':<8}{'tol':>6}{'ms/step':>9}{'k':>6}"
            f"{'passes':>7}"
            f"{'floor':>8}{'/floor':>7}{'mem MB':>9}{'vs CGDs':>8}{'vs Adam':>8}{'dθ/CGDs':>9}{'Δ/fp32':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r['config']:<20}{r['optimizer']:<22}{r['backend']:<8}{r['mode']:<8}"
                         f"  {r.get('status')}: {r.get('note', '')}")
            continue
        mem = r.get("extra_mb") if r.get("extra_mb") is not None else r.get("peak_mb")
        lines.append(
            f"{r['config']:<20}{r['optimizer']:<22}{r['backend']:<8}{r['mode']:<8}{r.get('cg_start') or '-':<8}"
            f"{_fmt(r.get('tol') if r.get('cg_start') else None, '.0e'):>6}{r['ms_median']:>9.2f}"
            f"{_fmt(r.get('cg_iters'), '.2f'):>6}{_fmt(r.get('hvp_passes'), '.1f'):>7}"
            f"{_fmt(r.get('floor_ms'), '.2f'):>8}{_fmt(r.get('step_over_floor'), '.2f'):>7}"
            f"{_fmt(mem, '.1f', 'n/a'):>9}{_fmt(r.get('speedup_vs_cgds'), '.2f'):>8}"
            f"{_fmt(r.get('cost_vs_adam'), '.2f'):>8}{_fmt(r.get('dtheta_vs_cgds'), '.1e'):>9}"
            f"{_fmt(r.get('step_err_vs_fp32'), '.1e'):>9}")
    method = next((r.get("mem_method") for r in rows if r.get("mem_method")), "n/a")
    lines.append(f"k: mean CG iterations/step; passes: mixed-HVP passes/step; floor = F + passes·H (ms, same mode; "
                 f"eager CPU: median over steps of F_j + passes·H_j); "
                 f"mem MB: peak above the row's start (models, batches), {method}{' (growth during the row)' if method.startswith('rss') else ''}; "
                 f"start/tol: CG's start and tolerance (CGDs: warm); vs CGDs: speed-up over CGDs at the same tol; vs Adam: cost; dθ/CGDs: ‖θ−θ_CGDs‖/‖θ_CGDs−θ0‖ after the run; "
                 f"Δ/fp32 (-bf16 rows): median ‖Δθ−Δθ_fp32‖/‖Δθ_fp32‖ of one step from the same point")
    return "\n".join(lines)


def smoke_configs(suite: str) -> list[Config]:
    """The suite's configurations shrunk for a smoke run: its first configuration of each model,
    at batch 4 and width 4 (MLP: 16, depth 2), 1 warm-up and 2 timed steps. The same rows and
    code paths as the suite, in seconds."""
    def shrink(cfg: Config) -> Config:
        mlp = cfg.model == "mlp"
        return dataclasses.replace(cfg, batch=min(cfg.batch, 4), width=min(cfg.width, 16 if mlp else 4),
                                   depth=min(cfg.depth, 2), warmup=1, steps=2)
    first = {}
    for cfg in SUITES[suite]["configs"]:
        first.setdefault(cfg.model, cfg)
    return [shrink(c) for c in first.values()]


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), default="quick")
    ap.add_argument("--out", default="fastgame-runs/bench",
                    help="folder for the JSON/CSV/TXT/PNG (default fastgame-runs/bench, ignored by git; '' to write nothing)")
    ap.add_argument("--models", nargs="*", help="model names (mlp dcgan32 dcgan64) or config labels (dcgan32-b64)")
    ap.add_argument("--optimizers", nargs="*", choices=OPTIMIZERS)
    ap.add_argument("--steps", type=int, help="timed steps (default: the suite's)")
    ap.add_argument("--warmup", type=int, help="untimed warm-up steps (default: the suite's)")
    ap.add_argument("--algo", choices=("ACGD", "BCGD"), default="ACGD", help="the competitive optimizer compared")
    ap.add_argument("--batchnorm", choices=("native", "fastgame"), default="native",
                    help="fastgame: every row's models with fastgame.nn.BatchNorm (cheaper second derivatives)")
    ap.add_argument("--tol", type=float, default=1e-10, help="CG tolerance, the same for CGDs and fastgame")
    ap.add_argument("--atol", type=float, default=1e-20)
    ap.add_argument("--device", help="override the suite's device (cpu, cuda, cuda:1)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads")
    ap.add_argument("--graph-max-iter", type=int,
                    help="CG iterations of the graphed step (default: the most the eager fastgame step needed)")
    ap.add_argument("--count-steps", type=int, default=-1,
                    help="timed steps covered by the untimed CGDs run that reads its iteration counts (default: all)")
    ap.add_argument("--no-floor", action="store_true", help="skip measuring the F + P·H floor")
    ap.add_argument("--tag", help="suffix for the output file names")
    ap.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                    help="time the rows' steps round-robin (default: on for CPU, off for CUDA)")
    ap.add_argument("--smoke", action="store_true",
                    help="CI check of this mode: the suite's rows on shrunk models (see smoke_configs), 1 + 2 steps, "
                         "files in a temporary folder unless --out is given; a CUDA suite without a GPU is skipped")
    args = ap.parse_args(argv)
    configs = None
    if args.smoke:
        if SUITES[args.suite]["device"] == "cuda" and not args.device and not torch.cuda.is_available():
            print(f"python -m bench --suite {args.suite} --smoke: needs CUDA, skipped (imports and arguments ok)")
            return 0
        configs = smoke_configs(args.suite)
        if args.out == ap.get_default("out"):  # never into the tracked bench/results or the runs folder
            args.out = tempfile.mkdtemp(prefix="fastgame-bench-smoke-")
    run_suite(args.suite, args.out or None, args.models, args.optimizers, args.steps, args.warmup, args.tol,
              args.atol, args.device, args.threads, args.graph_max_iter, args.count_steps, not args.no_floor, args.tag,
              interleave=args.interleave, algo=args.algo, batchnorm=args.batchnorm, configs=configs)
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):  # python bench/run.py
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from bench.run import main as _main
        sys.exit(_main())
    sys.exit(main())
