"""One step of each path a GAN user weighs, per model, in one run.

Per model (GPU: the MLP GAN b512, DCGAN-32 b64 and b256, DCGAN-64 b64), from the same initial
models through the same batches, the median step time of:

* ``trainer-acgd``: the trainer's ACGD step (``fastgame.trainer.methods.make_stepper``, its default
  path: piecewise CUDA graphs with exact CG iterations on CUDA, eager elsewhere), with its CG
  iterations k, mixed-HVP passes P and its floor F + P·H (F: one forward + create_graph
  backward, H: one mixed HVP pass, both CUDA-graphed on a GPU; ``bench.measure.measure_floor``);
* ``trainer-acgd-eager``: the same trainer with ``--eager``;
* ``trainer-adam``: the same trainer's Adam step (two players, simultaneous);
* ``cgds``: CGDs 0.4.5's ACGD ``step(loss)``;
* ``step-loss`` / ``step-closure``: fastgame ACGD's drop-in ``opt.step(loss)`` (loss on the default
  stream) and ``opt.step(closure)`` (CG iterations graph-replayed per solve, ``graph_cg``);
* ``step-loss-cuda-stream``: ``opt.step(loss)`` with the loop inside ``fastgame.cuda_stream()``
  (the default-stream drop-in probe: does the loss then get graph replay?);
* ``trainer-acgd-bf16``: the trainer's default step under bf16 autocast, with its step error
  ‖Δθ_bf16 − Δθ_fp32‖/‖Δθ_fp32‖ of one eager step taken from the bf16 run's point (the default
  path's numbers are the eager step's).

    python bench/step_tables.py [--steps 20] [--warmup 6] [--json FILE]
    python bench/step_tables.py --smoke   # CI: every row on the CPU, small models, 2 steps
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time
from typing import Callable, Optional

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastgame  # noqa: E402
from bench.cases import Config, build_case  # noqa: E402
from bench.measure import gpu_script_parser, measure_floor, script_device  # noqa: E402
from bench.rows import autocast_loss  # noqa: E402
from fastgame.trainer.batches import Batch  # noqa: E402
from fastgame.trainer.methods import make_stepper  # noqa: E402
from fastgame.graphs import with_run_settings  # noqa: E402

GPU = [Config("mlp", 512, 128, 1e-3), Config("dcgan32", 64, 64, 1e-4), Config("dcgan32", 256, 64, 1e-4),
       Config("dcgan64", 64, 64, 1e-4)]
SMOKE = [Config("mlp", 64, 32, 1e-3, depth=2), Config("dcgan32", 4, 8, 1e-4)]
ROWS = ("cgds", "trainer-adam", "trainer-acgd", "trainer-acgd-eager", "step-loss", "step-closure",
        "step-loss-cuda-stream", "trainer-acgd-bf16")


class CaseLosses:
    """The trainer's ``GameLosses`` interface on a bench case's zero-sum loss f (D maximises it):
    ``(loss_d, loss_g, zero_sum) = (-f, f, f)``."""

    def __init__(self, loss_fn: Callable, G, D) -> None:
        self.loss_fn, self.G, self.D = loss_fn, G, D

    def __call__(self, real, z, t):
        f = self.loss_fn(self.G, self.D, real, z)
        return -f, f, f

    def generator_loss(self, real, z):
        return self.loss_fn(self.G, self.D, real, z)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _flat(*ms) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for m in ms for p in m.parameters()])


def _stepper(name: str, G, D, loss_fn, cfg: Config, example, tol: float, eager: bool):
    settings = {} if name == "adam" else {"tol": tol}
    return make_stepper(name, G, D, CaseLosses(loss_fn, G, D), cfg.lr, cfg.lr, example=example,
                                 eager=eager, **settings)


def run_row(name: str, case, cfg: Config, steps: int, warmup: int, tol: float, device: torch.device) -> dict:
    G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
    real0, z0 = case.batches[0]
    t = torch.zeros(real0.shape[0], device=device)
    example = Batch(torch.empty_like(real0), torch.empty_like(z0), torch.empty_like(t))
    loss_fn = autocast_loss(case.loss_fn, torch.bfloat16) if name.endswith("bf16") else case.loss_fn
    opt, stepper = None, None
    if name == "cgds":
        import CGDs
        opt = CGDs.ACGD(max_params=D.parameters(), min_params=G.parameters(), lr_max=cfg.lr, lr_min=cfg.lr, tol=tol,
                        atol=1e-20, collect_info=False)
    elif name.startswith("trainer"):
        stepper = _stepper("adam" if name == "trainer-adam" else "acgd", G, D, loss_fn, cfg, example, tol,
                           eager=name == "trainer-acgd-eager")
        opt = getattr(stepper, "opt", None)
    else:
        opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=cfg.lr, lr_min=cfg.lr, tol=tol)
    stream = fastgame.cuda_stream(device) if name == "step-loss-cuda-stream" else None
    ms, iters, passes, replayed, graphed = [], [], [], [], []
    for i in range(warmup + steps):
        real, z = case.batches[i % len(case.batches)]
        _sync(device)
        t0 = time.perf_counter()
        if stepper is not None:
            stepper.step([Batch(real, z, t)])
        elif name == "step-closure":
            opt.step(lambda: loss_fn(G, D, real, z))
        elif stream is not None:
            with fastgame.cuda_stream(device):  # the user's loop body inside the context
                opt.step(loss_fn(G, D, real, z))
        else:
            opt.step(loss_fn(G, D, real, z))
        _sync(device)
        if i >= warmup:
            ms.append(1e3 * (time.perf_counter() - t0))
            info = opt.get_info() if isinstance(opt, fastgame.GameOptimizer) else {}
            if "iter_num" in info:
                iters.append(int(info["iter_num"]))
                passes.append(int(info["hvp_passes"]))
                replayed.append(int(info.get("cg_replays", info["iter_num"])))
                graphed.append(bool(info.get("cg_graphed", "cg_replays" in info)))
    path = getattr(stepper, "path", None) if name != "trainer-adam" else None
    row = {"config": cfg.label, "optimizer": name, "ms_median": statistics.median(ms), "ms_min": min(ms),
           "k": statistics.fmean(iters) if iters else None, "passes": statistics.fmean(passes) if passes else None,
           "replays": statistics.fmean(replayed) if replayed else None,
           "cg_graphed": statistics.fmean(graphed) if graphed else None, "path": path,
           "reason": getattr(opt, "graph_cg_reason", None) if name.startswith("step-loss") else None}
    if name == "trainer-acgd-bf16":
        row["step_error"] = _bf16_step_error(case, G, D, stepper.opt, cfg, tol)
    return row


def _bf16_step_error(case, G, D, opt, cfg: Config, tol: float) -> float:
    """‖Δθ_bf16 − Δθ_fp32‖/‖Δθ_fp32‖ of one eager step from the bf16 run's point (models and state)."""
    real, z = case.batches[0]
    deltas = []
    for loss_fn in (case.loss_fn, autocast_loss(case.loss_fn, torch.bfloat16)):
        G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
        eager = fastgame.ACGD(D2.parameters(), G2.parameters(), lr_max=cfg.lr, lr_min=cfg.lr, tol=tol)
        eager.load_state_dict(with_run_settings(eager, opt.state_dict()))
        before = _flat(D2, G2)
        eager.step(lambda: loss_fn(G2, D2, real, z))
        deltas.append(_flat(D2, G2) - before)
    return float((deltas[1] - deltas[0]).norm() / deltas[0].norm())


def print_table(rows: list[dict], floors: dict) -> None:
    print(f"{'config':14} {'row':22} {'ms':>8} {'vs CGDs':>8} {'vs Adam':>8} {'k':>6} {'P':>6} "
          f"{'floor ms':>9} {'/floor':>7}  path / notes")
    for cfg_label in dict.fromkeys(r["config"] for r in rows):
        done = {r["optimizer"]: r for r in rows if r["config"] == cfg_label}
        cgds, adam = done.get("cgds", {}).get("ms_median"), done.get("trainer-adam", {}).get("ms_median")
        F, H = floors[cfg_label]["fwd_bwd_ms"], floors[cfg_label]["hvp_ms"]
        for name, r in done.items():
            if "error" in r:
                print(f"{cfg_label:14} {name:22} failed: {r['error']}")
                continue
            ms = r["ms_median"]
            r["speedup_vs_cgds"] = cgds / ms if cgds else None
            r["vs_adam"] = ms / adam if adam else None
            r["floor_ms"] = F + r["passes"] * H if r.get("passes") is not None else None
            r["vs_floor"] = ms / r["floor_ms"] if r["floor_ms"] else None
            notes = [x for x in (r.get("path"), r.get("reason")) if x]
            if r.get("cg_graphed") is not None and name.startswith("step"):
                notes.append(f"cg_graphed {r['cg_graphed']:.2f}")
            if "step_error" in r:
                notes.append(f"bf16 step error {r['step_error']:.2e}")
            fmt = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
            print(f"{cfg_label:14} {name:22} {ms:8.2f} {fmt(r['speedup_vs_cgds'], '7.2f') + 'x':>8} "
                  f"{fmt(r['vs_adam'], '7.2f') + 'x':>8} {fmt(r['k'], '6.1f'):>6} {fmt(r['passes'], '6.1f'):>6} "
                  f"{fmt(r['floor_ms'], '9.2f'):>9} {fmt(r['vs_floor'], '7.2f'):>7}  {'; '.join(notes)}")
    for cfg_label in dict.fromkeys(r["config"] for r in rows):  # the goals of the GPU trainer path, as measured here
        ms = {r["optimizer"]: r.get("ms_median") for r in rows if r["config"] == cfg_label and "error" not in r}
        if all(ms.get(k) for k in ("trainer-acgd", "trainer-acgd-eager", "trainer-adam", "cgds")):
            d = ms["trainer-acgd"]
            print(f"{cfg_label}: default path {ms['trainer-acgd-eager'] / d:.2f}x faster than --eager, "
                  f"{d / ms['trainer-adam']:.2f}x Adam's step, {ms['cgds'] / d:.2f}x CGDs' speed")
    print("vs CGDs: CGDs' step time / the row's (higher is faster); vs Adam: the row's / the trainer's Adam step; "
          "floor: F + P·H with this row's P (F, H: " + ("CUDA-graphed" if floors.get("_graphed") else "eager") + ")")


def main(argv: Optional[list] = None) -> int:
    ap = gpu_script_parser(__doc__, steps=20, warmup=6, tol_help="CG tolerance of every ACGD row (CGDs' own default 1e-10)")
    ap.add_argument("--models", nargs="+", default=None, help="labels to run (e.g. mlp-b512 dcgan32-b64)")
    args = ap.parse_args(argv)
    device = script_device(args, "bench/step_tables.py")
    if device is None:
        return 0
    machine = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"# step tables on {machine}, torch {torch.__version__}, {args.steps} timed steps after {args.warmup}, "
          f"tol {args.tol:g}; command: python bench/step_tables.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows, floors = [], {"_graphed": device.type == "cuda"}
    for cfg in (GPU if device.type == "cuda" else SMOKE):
        if args.models and cfg.label not in args.models:
            continue
        case = build_case(cfg, device, n_batches=8)
        floors[cfg.label] = measure_floor(case, device, graphed=device.type == "cuda", reps=3 if args.smoke else 7)
        for name in ROWS:
            try:
                rows.append(run_row(name, case, cfg, args.steps, args.warmup, args.tol, device))
            except Exception as exc:  # noqa: BLE001  (report the row as failed, go on)
                rows.append({"config": cfg.label, "optimizer": name, "error": repr(exc)[:300]})
        del case
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_table(rows, floors)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "floors": floors}, f, indent=1)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
