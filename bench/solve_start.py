"""Mixed-HVP products per step for each CG start (``cg_start``): warm-started from the previous
solution (CGDs' rule), from zero, or from zero deflated by recycled Ritz vectors, in
closed-loop training of the suite's MLP GAN (each mode trains on the same seeded batches),
at lr 1e-3 and 1e-2.

    python -m bench.solve_start [--steps 150] [--tol 1e-12]
    python -m bench.solve_start --smoke   # CI: width 16, batch 32, 12 steps

Prints one row per (lr, start): mean CG iterations k, deflation vectors, and HVP products per
step (1 for the right-hand side, 2 per warm start, deflation vector or iteration) after the
first 10 steps, and their ratio to the warm start's. Counts are exact, not timed.
"""
from __future__ import annotations

import argparse
import statistics

import torch

import fastgame

from .models import gan_loss, mlp_gan, ring_data


def run(lr: float, start: str, steps: int, tol: float, seed: int = 0, width: int = 128,
        batch: int = 256) -> tuple[float, float, float]:
    """Mean (CG iterations, deflation vectors, HVP products) per step after a 10-step warm-up."""
    torch.manual_seed(seed)
    G, D = mlp_gan(width=width, depth=3, latent=2)
    opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=lr, lr_min=lr, tol=tol, cg_start=start)
    gen = torch.Generator().manual_seed(seed + 1)
    iters, deflated, products = [], [], []
    for _ in range(steps):
        real, z = ring_data(batch, gen), torch.randn(batch, 2, generator=gen)
        opt.step(gan_loss(G, D, real, z))
        k = int(opt.info["iter_num"])
        iters.append(k)
        deflated.append(opt.info.get("deflated", 0))
        # a warm start costs 2 products (its pair runs as one batched pass)
        products.append(opt.info.get("hvp_products", 1 + 2 * k + (2 if start == "warm" and len(iters) > 1 else 0)))
    return statistics.fmean(iters[10:]), statistics.fmean(deflated[10:]), statistics.fmean(products[10:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--tol", type=float, default=1e-12)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--smoke", action="store_true", help="CI check: width 16, batch 32, 12 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.width, args.batch, args.steps = 16, 32, 12
    if args.steps <= 10:
        parser.error("--steps must exceed the 10 warm-up steps")
    torch.set_num_threads(1)
    print(f"MLP GAN (2-{args.width}x3-2, batch {args.batch}, 8-ring), ACGD, tol {args.tol:g}, {args.steps} steps, float32")
    print("| lr | cg_start | k | deflated | HVP products/step | vs warm |")
    print("|---|---|---|---|---|---|")
    for lr in (1e-3, 1e-2):
        warm = None
        for start in ("warm", "zero", "recycle"):
            k, d, p = run(lr, start, args.steps, args.tol, width=args.width, batch=args.batch)
            warm = warm or p
            print(f"| {lr:g} | {start} | {k:.1f} | {d:.1f} | {p:.1f} | {p / warm:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
