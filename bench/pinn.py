"""The physics-informed workload: CPINN's Poisson problem ("Competitive Physics Informed
Networks", Zeng, Kothari, Bryngelson & Schäfer, ICLR 2023), GACGD and ACGD against their
other PyTorch implementations, and Adam on the plain PINN loss for scale.

    python -m bench.pinn                      # 5000 + 200 points, 12 timed steps after 1, 1 thread
    python -m bench.pinn --rows "fastgame GACGD" "CGDs GACGD" --steps 5
    python -m bench.pinn --smoke              # CI: 200 + 20 points, 2 steps, no files

The game (``fastgame.games.CompetitivePoisson``): −Δu = 2 sin x cos y on [−2, 2]², u = sin x cos y
on the boundary; a 2-50-50-50-1 tanh PINN minimises, a 2-50-50-50-50-2 ReLU discriminator
maximises ⟨D₁, r_int⟩ + ⟨D₂, r_bc⟩ (means over the points); float64 (the default dtype too,
as in CPINN's scripts). Settings are CPINN's GACGD run: lr 1e-3, eps 1e-8, beta 0.99, tol 1e-7,
atol 1e-20, max_iter 1000, ``loss_x = -loss_y``; ACGD rows use the same rates with CG at the same
relative precision (tol 1e-14, atol 1e-40 on squared norms); torch-cgd's ACGD its GMRES
(tol 1e-7, atol 1e-20); Adam lr 1e-3 (its paper's defaults otherwise).

Every row starts from the same game (points and initialisation), and the rows take their steps
round-robin (one step of each per round), so a change in machine load hits them alike. Timed:
the optimizer's step (the losses' forward, which includes the Laplacian, is not), in wall-clock
and in process CPU time (on a machine shared with other jobs the CPU time is the steadier: it
leaves out the time the process waited for a core). Counted in
the step: create_graph backward passes and the other autograd passes (mixed HVPs; CGDs' GACGD
also takes 2 first-order backward passes, torch-cgd's ACGD 2 HVPs for its zero-start residual,
Adam 1 backward). After the steps: the relative L2 error of u on CPINN's 256 × 256 test grid.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import torch

import fastgame
from fastgame.games.poisson import CompetitivePoisson, evaluation_grid

from .measure import PassCounter
from .run import environment

GACGD_KW = dict(lr_x=1e-3, lr_y=1e-3, eps=1e-8, beta=0.99, tol=1e-7, atol=1e-20, max_iter=1000)
ACGD_KW = dict(lr_max=1e-3, lr_min=1e-3, eps=1e-8, beta=0.99, tol=1e-14, atol=1e-40)


Step = Callable[[Any], Any]  # one step on the prepared losses; returns the solver iterations or None


class Row:
    """One optimizer on its own copy of the game: ``prepare()`` computes the losses (untimed),
    ``step(losses)`` takes one step and returns the solver iterations it reports (None where
    it reports none)."""

    def __init__(self, game: CompetitivePoisson, prepare: Callable[[], Any], step: Step) -> None:
        self.game, self.prepare, self.step = game, prepare, step
        self.ms: list[float] = []
        self.cpu_ms: list[float] = []
        self.iters: list[float] = []
        self.create_graph: list[int] = []
        self.other: list[int] = []


def _fastgame_gacgd(game: CompetitivePoisson, negation_visible: bool = True) -> tuple[Callable[[], Any], Step]:
    opt = fastgame.GACGD(game.max_params, game.min_params, track_cond=lambda x, y: True, **GACGD_KW)

    def prepare():
        loss_d, loss_pinn = game.losses()  # loss_d = -loss_pinn, as CPINN writes loss_x = -loss_y
        # "0 - loss" is the same number but hides the negation, so the step takes its two
        # create_graph backward passes, as before fastgame recognised it.
        return (loss_d if negation_visible else 0 - loss_pinn), loss_pinn

    def step(losses):
        opt.step(*losses)
        return opt.info["iter_num"]
    return prepare, step


def _cgds_gacgd(game: CompetitivePoisson) -> tuple[Callable[[], Any], Step]:
    import CGDs
    opt = CGDs.GACGD(x_params=game.max_params, y_params=game.min_params, track_cond=lambda x, y: True, **GACGD_KW)

    def step(losses):
        opt.step(*losses, 0)
        return opt.info["num_iter"] + 1  # CGDs reports its last GMRES index
    return game.losses, step


def _fastgame_acgd(game: CompetitivePoisson) -> tuple[Callable[[], Any], Step]:
    opt = fastgame.ACGD(game.max_params, game.min_params, **ACGD_KW)

    def step(loss):
        opt.step(loss)
        return opt.info["iter_num"]
    return game.loss, step


def _cgds_acgd(game: CompetitivePoisson) -> tuple[Callable[[], Any], Step]:
    import CGDs
    opt = CGDs.ACGD(max_params=game.max_params, min_params=game.min_params, collect_info=True, **ACGD_KW)

    def step(loss):
        opt.step(loss)
        return opt.info["iter_num"]
    return game.loss, step


def _torch_cgd_acgd(game: CompetitivePoisson) -> tuple[Callable[[], Any], Step]:
    import torch_cgd
    # torch-cgd's x minimises f: the PINN; its GMRES solves the PINN's system
    opt = torch_cgd.ACGD(game.min_params, game.max_params, lr=1e-3, beta=0.99, eps=1e-8,
                         solver=torch_cgd.solvers.GMRES(tol=1e-7, atol=1e-20, max_iter=1000))

    def step(loss):
        opt.step(loss)
        return None
    return game.loss, step


def _adam(game: CompetitivePoisson) -> tuple[Callable[[], Any], Step]:
    opt = torch.optim.Adam(game.min_params, lr=1e-3)

    def step(loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return None
    return game.pinn_loss, step


ROWS: dict[str, tuple[Callable[[CompetitivePoisson], tuple[Callable[[], Any], Step]], str]] = {
    "CGDs GACGD": (_cgds_gacgd, "CGDs"),
    "fastgame GACGD": (_fastgame_gacgd, "fastgame"),
    "fastgame GACGD, two backward (before)": (lambda g: _fastgame_gacgd(g, negation_visible=False), "fastgame"),
    "CGDs ACGD": (_cgds_acgd, "CGDs"),
    "fastgame ACGD": (_fastgame_acgd, "fastgame"),
    "torch-cgd ACGD (GMRES)": (_torch_cgd_acgd, "torch_cgd"),
    "Adam (plain PINN loss)": (_adam, "torch"),
}


def _available(module: str) -> str:
    """'' if ``module`` imports, else why not (the row is then skipped)."""
    try:
        __import__(module)
        return ""
    except ImportError as exc:
        return f"{module} not installed ({exc.__class__.__name__}): pip install {module.replace('_', '-')}"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('' where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def run_rows(names: list[str], game0: CompetitivePoisson, steps: int, warmup: int) -> dict[str, Row]:
    """Build each row on a copy of ``game0``, then take ``warmup + steps`` rounds of one step each."""
    rows = {name: Row(g, *ROWS[name][0](g)) for name in names for g in [copy.deepcopy(game0)]}
    counter = PassCounter()
    for i in range(warmup + steps):
        for name, row in rows.items():
            losses = row.prepare()
            counter.take()
            with counter.active():
                t, c = time.perf_counter(), time.process_time()
                iters = row.step(losses)
                ms, cpu_ms = (time.perf_counter() - t) * 1e3, (time.process_time() - c) * 1e3
            cg, other = counter.take()
            if i >= warmup:
                row.ms.append(ms)
                row.cpu_ms.append(cpu_ms)
                row.iters.append(float("nan") if iters is None else float(iters))
                row.create_graph.append(cg)
                row.other.append(other)
        print(f"round {i + 1}/{warmup + steps}" + (" (warm-up)" if i < warmup else ""), flush=True)
    return rows


def summarise(rows: dict[str, Row], grid: torch.Tensor, l2_start: float) -> dict[str, dict[str, float]]:
    """Per row: median ms/step, mean iterations and passes per step, L2 error, ratios."""
    ref = rows.get("CGDs GACGD")
    out = {}
    for name, row in rows.items():
        point = row.game.point()
        out[name] = dict(
            ms_per_step=statistics.median(row.ms), ms_mean=statistics.fmean(row.ms),
            cpu_ms_per_step=statistics.median(row.cpu_ms),
            solver_iters=statistics.fmean(row.iters), create_graph_passes=statistics.fmean(row.create_graph),
            other_passes=statistics.fmean(row.other), rel_l2=row.game.relative_l2(grid), rel_l2_start=l2_start,
            param_diff_vs_cgds_gacgd=(float((point - ref.game.point()).norm() / ref.game.point().norm())
                                      if ref is not None else float("nan")))
    if ref is not None:
        for name, r in out.items():
            r["speedup_vs_cgds_gacgd"] = out["CGDs GACGD"]["ms_per_step"] / r["ms_per_step"]
            r["cpu_speedup_vs_cgds_gacgd"] = out["CGDs GACGD"]["cpu_ms_per_step"] / r["cpu_ms_per_step"]
    return out


def markdown(results: dict[str, dict[str, float]], header: str, skipped: dict[str, str]) -> str:
    lines = [header, "",
             "| row | ms/step (median) | × vs CGDs GACGD | CPU ms/step | × (CPU time) | solver iters/step "
             "| create_graph + other passes/step | rel. L2 error | param. diff vs CGDs GACGD |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        iters = "–" if r["solver_iters"] != r["solver_iters"] else f"{r['solver_iters']:.1f}"
        lines.append(f"| {name} | {r['ms_per_step']:.0f} | {r.get('speedup_vs_cgds_gacgd', float('nan')):.2f} "
                     f"| {r['cpu_ms_per_step']:.0f} | {r.get('cpu_speedup_vs_cgds_gacgd', float('nan')):.2f} | {iters} | {r['create_graph_passes']:.1f} + {r['other_passes']:.1f} | {r['rel_l2']:.6f} "
                     f"| {r['param_diff_vs_cgds_gacgd']:.1e} |")
    lines += [f"| skipped: {name} | {why} | | | | | | | |" for name, why in skipped.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interior", type=int, default=5000, help="interior collocation points (CPINN: 5000)")
    ap.add_argument("--per-edge", type=int, default=50, help="boundary points per edge (CPINN: 50, 200 in all)")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per row")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps (they do count for the L2 error)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="points and initialisation (the same for every row)")
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS), metavar="ROW",
                    help=f"rows to run (default all): {', '.join(ROWS)}")
    ap.add_argument("--out", default="bench/results", help="folder for pinn_cpu_<time>.json/.md ('' writes none)")
    ap.add_argument("--smoke", action="store_true", help="CI check: 200 + 20 points, 2 timed steps after 1")
    args = ap.parse_args(argv)
    if args.smoke:
        args.interior, args.per_edge, args.steps, args.warmup = 200, 5, 2, 1
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float64)  # as CPINN's scripts; torch-cgd allocates in the default dtype
    try:
        return _run(args)
    finally:  # a caller in the same process (the tests) gets its settings back
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)


def _run(args: argparse.Namespace) -> int:
    """The rows, the table and the files of one run (``main`` sets the threads and dtype)."""
    skipped = {name: why for name in args.rows if (why := _available(ROWS[name][1]))}
    names = [n for n in args.rows if n not in skipped]
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    game0 = CompetitivePoisson(interior=args.interior, per_edge=args.per_edge, seed=args.seed)
    grid = evaluation_grid(256)
    env = environment(torch.device("cpu"))
    env["torch_cgd"] = _version("torch-cgd")
    env["cpu_model"] = _cpu_model() or env["cpu"]
    rows = run_rows(names, game0, args.steps, args.warmup)
    results = summarise(rows, grid, game0.relative_l2(grid))
    env["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    header = (f"CPINN Poisson, {args.interior} + {4 * args.per_edge} points, float64, {args.steps} timed steps after "
              f"{args.warmup} (L2 error after {args.steps + args.warmup} steps, from {game0.relative_l2(grid):.6f}; "
              f"256² grid), {args.threads} thread(s); {env['cpu_model']}, {env['cpu_count']} CPUs, load average "
              f"{env.get('loadavg', ('?',))[0]:.2f} at the start and {env['loadavg_end'][0]:.2f} at the end; "
              f"torch {env['torch']}, CGDs {env['cgds']}, torch-cgd {env['torch_cgd']}, fastgame {env['fastgame']} ({env['git']})")
    text = markdown(results, header, skipped)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, "pinn_cpu_" + env["time_utc"].replace("-", "").replace(":", "")[:15] + "Z")
        with open(stem + ".json", "w") as f:
            json.dump(dict(args=vars(args), environment=env, results=results, skipped=skipped), f, indent=1)
        with open(stem + ".md", "w") as f:
            f.write(text)
        print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
