"""CPU benchmark: fastgame ACGD/BCGD vs CGDs 0.4.5 (and Adam) on the same model, init,
batches and tolerance, in one process; prints median ms/step and the speed-up.

    python bench/cpu_compare.py            # 2-256-256-1 MLP GAN, batch 256, tol 1e-10, 2 threads
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import fastgame

try:
    from bench.models import gan_loss, mlp_gan, ring_data
except ImportError:  # run as a script from bench/
    from models import gan_loss, mlp_gan, ring_data


def time_steps(make_opt, G, D, batches, warmup: int) -> tuple[float, list[float]]:
    opt = make_opt(G, D)
    times = []
    for i, (real, z) in enumerate(batches):
        t = time.perf_counter()
        loss = gan_loss(G, D, real, z)
        if isinstance(opt, tuple):  # Adam simultaneous GD: D ascends, G descends
            for o in opt:
                o.zero_grad()
            loss.backward()
            for p in D.parameters():
                p.grad.neg_()
            for o in opt:
                o.step()
        else:
            opt.step(loss)
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import CGDs

    torch.manual_seed(0)
    G0, D0 = mlp_gan(args.width)
    gen = torch.Generator().manual_seed(1)
    batches = [(ring_data(args.batch, gen), torch.randn(args.batch, 2, generator=gen))
               for _ in range(args.steps + args.warmup)]
    kw = dict(lr_max=args.lr, lr_min=args.lr, tol=args.tol)
    runs = {
        "CGDs ACGD": lambda G, D: CGDs.ACGD(max_params=D.parameters(), min_params=G.parameters(), **kw),
        "fastgame ACGD": lambda G, D: fastgame.ACGD(max_params=D.parameters(), min_params=G.parameters(), **kw),
        "CGDs BCGD": lambda G, D: CGDs.BCGD(max_params=D.parameters(), min_params=G.parameters(),
                                            collect_info=False, **kw),
        "fastgame BCGD": lambda G, D: fastgame.BCGD(max_params=D.parameters(), min_params=G.parameters(),
                                                    collect_info=False, **kw),
        "Adam (SimGD)": lambda G, D: (torch.optim.Adam(D.parameters(), lr=args.lr),
                                      torch.optim.Adam(G.parameters(), lr=args.lr)),
    }
    results = {}
    for name, make in runs.items():
        G, D = copy.deepcopy(G0), copy.deepcopy(D0)
        results[name], _ = time_steps(make, G, D, batches, args.warmup)
    print(f"2-{args.width}-{args.width}-1 MLP GAN, batch {args.batch}, tol {args.tol:g}, "
          f"{args.threads} threads, {args.steps} timed steps, torch {torch.__version__}")
    print(f"{'optimizer':<16}{'ms/step':>10}")
    for name, ms in results.items():
        print(f"{name:<16}{ms:>10.2f}")
    for alg in ("ACGD", "BCGD"):
        print(f"speed-up fastgame {alg} over CGDs {alg}: {results[f'CGDs {alg}'] / results[f'fastgame {alg}']:.2f}x")
    print(f"fastgame ACGD cost relative to Adam: {results['fastgame ACGD'] / results['Adam (SimGD)']:.1f}x")


if __name__ == "__main__":
    main()
