"""Benchmark: fastgame GACGD vs CGDs.GACGD 0.4.5 on the same model, init, batches and
tolerance in one process (non-saturating MLP GAN), plus the effect of GMRES(m)'s restart
length and of the warm start on HVP passes, on identical systems (``--sweep``).

    python bench/gacgd_cpu.py                     # CPU: 2-256-256-1 MLP GAN, batch 256, 2 threads
    python bench/gacgd_cpu.py --sweep --lr 0.05 --no-reference   # restart / warm start sweep
    python bench/gacgd_cpu.py --device cuda       # GPU row (CUDA-synchronised timing)
    python bench/gacgd_cpu.py --smoke --sweep     # CI: width 16, batch 32, 2 timed steps, 1 thread

The optimizers take their steps round-robin (one step of each per batch), so a change in
machine load hits all of them alike and the printed ratio is from one run. Both are capped
at ``--max-iter`` GMRES iterations (CGDs allocates a (max_iter+1)² Hessenberg, 71 GB here
with None). Also printed: GMRES iterations per step (CGDs' counted by wrapping its GMRES),
fastgame's HVP passes per step, and how far the two runs' parameters end up apart.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import fastgame

try:
    from bench.models import mlp_gan, ring_data
except ImportError:  # run as a script from bench/
    from models import mlp_gan, ring_data


def ns_losses(G, D, real, z):
    """Non-saturating GAN: G minimises -log σ(D(G(z))), D the usual cross-entropy."""
    fake = G(z)
    return F.softplus(-D(fake)).mean(), F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()


def count_reference_iterations():
    """Wrap CGDs' GMRES to record its iteration counts (its own tracking adds host reads)."""
    import CGDs.gmres_acgd as ref
    counts = []
    inner = ref.GMRES

    def counted(*args, **kwargs):
        soln, (j, hist) = inner(*args, **kwargs)
        counts.append(j + 1 if soln is not kwargs.get("b") else 0)  # j is the last step's index
        return soln, (j, hist)
    ref.GMRES = counted
    return counts


def sweep(G0, D0, batches, kw) -> None:
    """Restart length and warm start on the *same* systems: a driver (full GMRES) walks the
    trajectory; at each step every config steps from a copy of the driver's parameters and
    state (so a warm start is the driver's previous solution). Different trajectories would
    give different systems, which is why the configs are not simply run side by side."""
    G, D = copy.deepcopy(G0), copy.deepcopy(D0)
    full = dict(kw, max_iter=max(kw["max_iter"], 200))
    driver = fastgame.GACGD(G.parameters(), D.parameters(), restart=full["max_iter"], **full)
    configs = [(m, ws) for m in (10, 20, 40, full["max_iter"]) for ws in (False, True)]
    cost = {c: [] for c in configs}
    for i, (real, z) in enumerate(batches):
        if i > 0:  # step 0 has no warm start to compare
            for m, ws in configs:
                G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
                opt = fastgame.GACGD(G2.parameters(), D2.parameters(), **full)
                opt.load_state_dict(driver.state_dict())
                for group in opt.param_groups:  # game-wide settings: the same in both players' groups
                    group.update(restart=m, warm_start=ws)
                opt.step(*ns_losses(G2, D2, real, z))
                cost[(m, ws)].append(opt.info["hvp_passes"])
        driver.step(*ns_losses(G, D, real, z))
    print(f"same-system sweep over {len(batches) - 1} steps (max_iter {full['max_iter']}): HVP passes per step")
    print(f"{'restart':>8}{'warm':>6}{'mean':>8}{'max':>6}")
    for (m, ws), c in cost.items():
        print(f"{m:>8}{int(ws):>6}{statistics.mean(c):>8.1f}{max(c):>6}")


def _time_rounds(runs: dict, batches: list, warmup: int, cuda: bool, ref_counts: list) -> None:
    """One step of every optimizer per batch (round-robin); after ``warmup`` steps, record each
    step's ms, GMRES iterations and HVP passes in its run."""
    for i, (real, z) in enumerate(batches):
        for run in runs.values():
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            run["opt"].step(*ns_losses(run["G"], run["D"], real, z))
            if cuda:
                torch.cuda.synchronize()
            ms = (time.perf_counter() - t) * 1e3
            if isinstance(run["opt"], fastgame.GACGD):
                it, passes = run["opt"].info["iter_num"], run["opt"].info["hvp_passes"]
            else:
                it, passes = ref_counts[-1], float("nan")
            if i >= warmup:
                run["times"].append(ms)
                run["iters"].append(it)
                run["passes"].append(passes)


def _report(runs: dict, args, device: torch.device, name_dev: str, cgds_version: str) -> dict:
    """Print the table (and the speed-up) and return the results by optimizer."""
    def params(run):
        return torch.cat([p.detach().reshape(-1) for m in (run["G"], run["D"]) for p in m.parameters()])

    print(f"2-{args.width}-{args.width}-1 MLP GAN (non-saturating), batch {args.batch}, tol {args.tol:g}, "
          f"atol {args.atol:g}, max_iter {args.max_iter}, {args.steps} timed steps, {device} ({name_dev}), "
          f"{args.threads} threads, torch {torch.__version__}, CGDs {cgds_version}")
    print(f"{'optimizer':<26}{'ms/step':>10}{'GMRES iters':>13}{'HVP passes':>12}{'param diff':>12}")
    base = params(runs["CGDs GACGD"]) if "CGDs GACGD" in runs else None
    results = {}
    for name, run in runs.items():
        ms = statistics.median(run["times"])
        diff = float((params(run) - base).norm() / base.norm()) if base is not None else float("nan")
        results[name] = dict(ms_per_step=ms, gmres_iters=statistics.mean(run["iters"]),
                             hvp_passes=statistics.mean(run["passes"]), rel_param_diff_vs_cgds=diff)
        print(f"{name:<26}{ms:>10.2f}{results[name]['gmres_iters']:>13.1f}{results[name]['hvp_passes']:>12.1f}"
              f"{diff:>12.1e}", flush=True)
    if "CGDs GACGD" in results:
        speedup = results["CGDs GACGD"]["ms_per_step"] / results["fastgame GACGD"]["ms_per_step"]
        print(f"speed-up fastgame GACGD over CGDs GACGD ({device.type}): {speedup:.2f}x")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=12, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tol", type=float, default=1e-5, help="GMRES tol (CGDs' default)")
    ap.add_argument("--atol", type=float, default=1e-6, help="GMRES atol (CGDs' default)")
    ap.add_argument("--max-iter", type=int, default=100, help="GMRES cap for both")
    ap.add_argument("--sweep", action="store_true", help="also sweep restart length and warm start")
    ap.add_argument("--no-reference", action="store_true", help="skip CGDs (e.g. for a sweep alone)")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--smoke", action="store_true", help="CI check: CPU, width 16, batch 32, 1 + 2 steps, 1 thread")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.width, args.batch, args.warmup, args.steps, args.threads = "cpu", 16, 32, 1, 2, 1
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # same arithmetic as the reference's
    import CGDs
    ref_counts = count_reference_iterations()

    torch.manual_seed(0)
    G0, D0 = (m.to(device) for m in mlp_gan(args.width))
    gen = torch.Generator().manual_seed(1)
    batches = [(ring_data(args.batch, gen).to(device), torch.randn(args.batch, 2, generator=gen).to(device))
               for _ in range(args.steps + args.warmup)]
    kw = dict(lr_x=args.lr, lr_y=args.lr, tol=args.tol, atol=args.atol, max_iter=args.max_iter)
    configs = {}
    if not args.no_reference:
        configs["CGDs GACGD"] = lambda G, D: CGDs.GACGD(x_params=G.parameters(), y_params=D.parameters(), **kw)
    configs["fastgame GACGD"] = lambda G, D: fastgame.GACGD(G.parameters(), D.parameters(), **kw)
    runs = {}
    for name, make in configs.items():
        G, D = copy.deepcopy(G0), copy.deepcopy(D0)
        runs[name] = dict(G=G, D=D, opt=make(G, D), times=[], iters=[], passes=[])
    _time_rounds(runs, batches, args.warmup, cuda, ref_counts)
    name_dev = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    results = _report(runs, args, device, name_dev, getattr(CGDs, "__version__", "0.4.5"))
    if args.sweep:
        sweep(G0, D0, batches, kw)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), device=name_dev, torch=torch.__version__, results=results), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
