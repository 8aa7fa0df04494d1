"""The unchanged eager loop on a GPU: CGDs 0.4.5 vs fastgame ACGD stepped on a loss tensor
(default stream, CG iterations eager), on a closure (CG iterations replayed from a CUDA graph
captured in each solve, ``graph_cg``), the same closure with ``graph_cg=False``, and the
restructured whole-step graph (``make_graphed_step``, a fixed max_iter masked CG iterations) and
its piecewise form (``make_graphed_step(exact_cg=True)``: the CG iterations each step needs, the
trainer's default on CUDA), all from the same initial models
through the same batches. DCGAN-32 also with its BatchNorm layers as fastgame.nn.BatchNorm.

    python bench/eager_graph.py [--steps 30] [--warmup 8] [--json FILE]
    python bench/eager_graph.py --smoke   # CI: the same rows on the CPU, small models, 2 steps

Prints per row the median step time, the speed-up over CGDs in this run, the mean CG
iterations, the share of steps whose CG was graph-replayed, the largest parameter difference
from the ``graph_cg=False`` closure row (same solves, so ~0), and the median host time of
recording and instantiating an iteration's graph (once per step).
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastgame  # noqa: E402
from bench.cases import Config, build_case  # noqa: E402
from bench.measure import gpu_script_parser, script_device  # noqa: E402
from bench.rows import _flat  # noqa: E402

SMOKE = [(Config("mlp", 64, 32, 1e-3, depth=2), "native"), (Config("dcgan32", 4, 8, 1e-4), "fastgame")]  # --device cpu
CONFIGS = [(Config("mlp", 512, 128, 1e-3), "native"), (Config("dcgan32", 64, 64, 1e-4), "native"),
           (Config("dcgan32", 64, 64, 1e-4), "fastgame")]
ROWS = ("cgds", "fastgame-loss", "fastgame-closure", "fastgame-closure-check4", "fastgame-closure-nograph",
        "fastgame-graphed", "fastgame-piecewise")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_row(name: str, case, cfg: Config, steps: int, warmup: int, tol: float, max_iter: int, cg_start: str,
            device: torch.device) -> dict:
    G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
    loss_fn = case.loss_fn
    kw = dict(lr_max=cfg.lr, lr_min=cfg.lr, tol=tol)
    graphed_step = None
    if name == "cgds":
        import CGDs
        opt = CGDs.ACGD(max_params=D.parameters(), min_params=G.parameters(), collect_info=False, atol=1e-20, **kw)
    elif name in ("fastgame-graphed", "fastgame-piecewise"):
        piecewise = name == "fastgame-piecewise"  # max_iter: only a bound for its host loop
        opt = fastgame.ACGD(D.parameters(), G.parameters(), capturable=True, max_iter=10_000 if piecewise else max_iter,
                            cg_start=cg_start, **kw)
        r0, z0 = case.batches[0]
        graphed_step = fastgame.make_graphed_step(opt, lambda r, z: loss_fn(G, D, r, z), torch.empty_like(r0),
                                                  torch.empty_like(z0), check_finite=False, exact_cg=piecewise)
    else:
        opt = fastgame.ACGD(D.parameters(), G.parameters(), graph_cg=name != "fastgame-closure-nograph",
                            cg_start=cg_start, check_every=4 if name.endswith("check4") else 1, **kw)
    ms, iters, graphed, capture_ms = [], [], [], []
    for i in range(warmup + steps):
        real, z = case.batches[i % len(case.batches)]
        _sync(device)
        t0 = time.perf_counter()
        if name == "cgds" or name == "fastgame-loss":
            opt.step(loss_fn(G, D, real, z))
        elif graphed_step is not None:
            graphed_step(real, z)
        else:
            opt.step(lambda: loss_fn(G, D, real, z))
        _sync(device)
        if i >= warmup:
            ms.append(1e3 * (time.perf_counter() - t0))
            if name != "cgds":
                iters.append(int(opt.info["iter_num"]))
                graphed.append(bool(opt.info.get("cg_graphed", graphed_step is not None)))
                if "cg_capture_s" in opt.info:
                    capture_ms.append(1e3 * opt.info["cg_capture_s"])
    if graphed_step is not None:
        opt.raise_if_nonfinite()
    row = {"config": cfg.label, "batchnorm": case.batchnorm, "optimizer": name, "ms_median": statistics.median(ms),
           "ms_min": min(ms), "cg_iters": statistics.fmean(iters) if iters else None,
           "cg_graphed": statistics.fmean(graphed) if graphed else None,
           "capture_ms": statistics.median(capture_ms) if capture_ms else None,
           "k_max": max(iters) if iters else None, "reason": getattr(opt, "graph_cg_reason", None)}
    if name == "fastgame-graphed":
        row["max_iter"] = max_iter
    row["params"] = _flat(G, D)
    return row


def main(argv=None) -> int:
    ap = gpu_script_parser(__doc__, steps=30, warmup=8,
                           tol_help="CG tolerance (CGDs' default 1e-10 is reachable in fp32 only loosely)")
    ap.add_argument("--max-iter", type=int, default=32, help="the whole-step graph's fixed CG iterations, if no "
                    "eager row gave its largest k")
    ap.add_argument("--cg-start", default="zero", choices=("warm", "zero"), help="fastgame's CG start")
    args = ap.parse_args(argv)
    device = script_device(args, "bench/eager_graph.py")
    if device is None:
        return 0
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"# eager loop on {name}, torch {torch.__version__}, "
          f"{args.steps} timed steps after {args.warmup}, tol {args.tol:g}, fastgame cg_start {args.cg_start}; command: python bench/eager_graph.py "
          + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"{'config':16} {'BN':9} {'optimizer':26} {'ms':>8} {'vs CGDs':>8} {'k':>6} {'graphed':>8} {'|dθ| vs nograph':>16} {'capture ms':>10}")
    rows = []
    for cfg, bn in (CONFIGS if device.type == "cuda" else SMOKE):
        case = build_case(cfg, device, n_batches=8, batchnorm=bn)
        case.batchnorm = bn
        done = {}
        for name in ROWS:
            # the whole-step graph runs a fixed max_iter: the eager runs' largest k plus 2
            k = done.get("fastgame-closure-nograph", {}).get("k_max")
            try:
                done[name] = run_row(name, case, cfg, args.steps, args.warmup, args.tol, k + 2 if k else args.max_iter,
                                     args.cg_start, device)
            except Exception as exc:  # noqa: BLE001  (report the row as failed, go on)
                done[name] = {"config": cfg.label, "batchnorm": bn, "optimizer": name, "error": repr(exc)[:300]}
        base = done["cgds"].get("ms_median")
        ref = done["fastgame-closure-nograph"].get("params")
        for name, r in done.items():
            if "error" in r:
                print(f"{r['config']:16} {bn:9} {name:26} failed: {r['error']}")
            else:
                r["speedup_vs_cgds"] = base / r["ms_median"] if base else None
                p = r.pop("params")
                r["dtheta_vs_nograph"] = float((p - ref).abs().max()) if ref is not None else None
                k = f"{r['cg_iters']:.1f}" if r["cg_iters"] is not None else "-"
                g = f"{r['cg_graphed']:.2f}" if r["cg_graphed"] is not None else "-"
                sp = f"{r['speedup_vs_cgds']:.2f}x" if r["speedup_vs_cgds"] else "-"
                # no reference where the graph_cg=False row failed
                dt = f"{r['dtheta_vs_nograph']:.2e}" if r["dtheta_vs_nograph"] is not None else "-"
                print(f"{r['config']:16} {bn:9} {name:26} {r['ms_median']:8.2f} {sp:>8} {k:>6} {g:>8} "
                      f"{dt:>16} " + (f"{r['capture_ms']:10.2f}" if r["capture_ms"] else f"{'-':>10}") + (f"  ({r['reason']})" if r.get("reason") and name == "fastgame-loss" else ""))
            rows.append(r)
        for r in done.values():
            r.pop("params", None)
        del case
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
