"""Mixed-HVP passes per step with CG warm-started from the previous solution (CGDs' rule) or
from zero, in closed-loop training of the suite's MLP GAN (each mode trains on the same seeded
batches), at lr 1e-3 and 1e-2.

    python -m bench.solve_start [--steps 150] [--tol 1e-12]

Prints one row per (lr, start): mean CG iterations k and passes per step after the first
10 steps, and the passes' ratio to the warm start. Pass counts are exact, not timed.
"""
from __future__ import annotations

import argparse
import statistics

import torch

import fastgame

from .models import gan_loss, mlp_gan, ring_data


def run(lr: float, warm_start: bool, steps: int, tol: float, seed: int = 0) -> tuple[float, float]:
    """Mean (CG iterations, HVP passes) per step after a 10-step warm-up."""
    torch.manual_seed(seed)
    G, D = mlp_gan(width=128, depth=3, latent=2)
    opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=lr, lr_min=lr, tol=tol, warm_start=warm_start)
    gen = torch.Generator().manual_seed(seed + 1)
    iters, passes = [], []
    for _ in range(steps):
        real, z = ring_data(256, gen), torch.randn(256, 2, generator=gen)
        opt.step(gan_loss(G, D, real, z))
        iters.append(int(opt.info["iter_num"]))
        passes.append(opt.info["hvp_passes"])
    return statistics.fmean(iters[10:]), statistics.fmean(passes[10:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--tol", type=float, default=1e-12)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"MLP GAN (2-128x3-2, batch 256, 8-ring), ACGD, tol {args.tol:g}, {args.steps} steps, float32")
    print("| lr | start | k | passes/step | passes vs warm |")
    print("|---|---|---|---|---|")
    for lr in (1e-3, 1e-2):
        warm = run(lr, True, args.steps, args.tol)
        zero = run(lr, False, args.steps, args.tol)
        for name, (k, p) in (("warm (CGDs)", warm), ("zero", zero)):
            print(f"| {lr:g} | {name} | {k:.1f} | {p:.1f} | {p / warm[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
