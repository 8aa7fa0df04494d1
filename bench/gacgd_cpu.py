"""CPU benchmark: fastgame GACGD vs CGDs.GACGD 0.4.5 on the same model, init, batches and
tolerance in one process (non-saturating MLP GAN), plus the effect of GMRES(m)'s restart
length and of the warm start on iterations and time.

    python bench/gacgd_cpu.py     # 2-256-256-1 MLP GAN, batch 256, default tolerances, 2 threads
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

import fastgame

try:
    from bench.models import mlp_gan, ring_data
except ImportError:  # run as a script from bench/
    from models import mlp_gan, ring_data


def ns_losses(G, D, real, z):
    fake = G(z)
    return F.softplus(-D(fake)).mean(), F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()


def run(make_opt, G, D, batches, warmup):
    opt = make_opt(G, D)
    times, iters = [], []
    for i, (real, z) in enumerate(batches):
        t = time.perf_counter()
        opt.step(*ns_losses(G, D, real, z))
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
            info = opt.info if isinstance(opt, fastgame.GACGD) else {}
            iters.append(info.get("iter_num", float("nan")))
    return statistics.median(times), statistics.mean(iters)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-iter", type=int, default=100,
                    help="GMRES cap for both (CGDs allocates (max_iter+1)^2, i.e. 72 GB here with None)")
    ap.add_argument("--sweep", action="store_true", help="also sweep restart length and warm start")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import CGDs

    torch.manual_seed(0)
    G0, D0 = mlp_gan(args.width)
    gen = torch.Generator().manual_seed(1)
    batches = [(ring_data(args.batch, gen), torch.randn(args.batch, 2, generator=gen))
               for _ in range(args.steps + args.warmup)]
    kw = dict(lr_x=args.lr, lr_y=args.lr, max_iter=args.max_iter)
    configs = {"CGDs GACGD": lambda G, D: CGDs.GACGD(x_params=G.parameters(), y_params=D.parameters(), **kw),
               "fastgame GACGD": lambda G, D: fastgame.GACGD(G.parameters(), D.parameters(), **kw)}
    if args.sweep:
        for m in (5, 10, 20, 40):
            for ws in (False, True):
                configs[f"fastgame m={m} warm={int(ws)}"] = (
                    lambda G, D, m=m, ws=ws: fastgame.GACGD(G.parameters(), D.parameters(), restart=m,
                                                            warm_start=ws, **kw))
    print(f"2-{args.width}-{args.width}-1 MLP GAN (non-saturating), batch {args.batch}, default tol, "
          f"max_iter {args.max_iter}, {args.threads} threads, {args.steps} timed steps, torch {torch.__version__}")
    print(f"{'optimizer':<26}{'ms/step':>10}{'GMRES iters':>13}")
    results = {}
    for name, make in configs.items():
        ms, it = run(make, copy.deepcopy(G0), copy.deepcopy(D0), batches, args.warmup)
        results[name] = ms
        print(f"{name:<26}{ms:>10.2f}{it:>13.1f}", flush=True)
    print(f"speed-up fastgame GACGD over CGDs GACGD: {results['CGDs GACGD'] / results['fastgame GACGD']:.2f}x")


if __name__ == "__main__":
    main()
