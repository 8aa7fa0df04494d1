"""Polymatrix CGD's cost per step for n = 2, 3, 4 players: one MLP generator against K = n − 1
MLP discriminators on the 8-Gaussian ring (the standard GAN loss of each pair, the generator
minimising their mean: ``fastgame.losses.multi_discriminator``), APCGD with its n-pass product
against the O(n²) pairwise product (the same numbers), each on its default solve (``auto``: the
Schur complement of the generator, since the discriminators do not interact), APCGD on the
block system (``solve="block"``), and GACGD at n = 2.

    python -m bench.pcgd                      # width 64, batch 256, 30 timed steps, lr 1e-2, 1 thread
    python -m bench.pcgd --smoke              # CI: width 8, batch 32, 2 timed steps (files only with --out)

For each n every optimizer trains its own copy of the same initial models on the same batches,
one step of each per batch (round-robin), so a change in machine load hits all alike and the
ratios are from one run. Rows: median ms/step, mean GMRES iterations, mixed-HVP passes per
step and per product with GMRES's matrix (besides the right-hand side's passes of the Schur
solves; GACGD reports no products: "–"), and how far each run's parameters end up from the
first row's of its n (the pairwise product and GACGD solve the same systems to the tolerance).
Files: ``pcgd_<timestamp>.json`` and ``.md`` under ``--out`` (default bench/results; none with
``--smoke`` unless ``--out`` is given).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

import fastgame
from fastgame.games import GaussianMixture
from fastgame.losses import multi_discriminator

from .measure import StepTimer
from .models import mlp


def players(n: int, width: int, seed: int) -> list[nn.Module]:
    """[G, D_1, …, D_{n−1}]: MLPs with two tanh hidden layers of ``width``."""
    torch.manual_seed(seed)
    return [mlp([2, width, width, 2])] + [mlp([2, width, width, 1]) for _ in range(n - 1)]


def losses(models: list[nn.Module], real: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    G, *Ds = models
    fake = G(z)
    return multi_discriminator("standard", [D(real) for D in Ds], [D(fake) for D in Ds]).per_player()


def optimizers(n: int, models: list[nn.Module], lr: float, tol: float) -> dict[str, tuple[list[nn.Module], Any]]:
    """Each row's own copy of the models and its optimizer."""
    rows = {}
    for product, solve in (("per_player", "auto"), ("pairwise", "auto"), ("per_player", "block")):
        own = copy.deepcopy(models)
        rows[f"APCGD ({product}, {solve})"] = (own, fastgame.APCGD([m.parameters() for m in own], lr=lr, tol=tol,
                                                                   product=product, solve=solve))
    if n == 2:
        own = copy.deepcopy(models)
        rows["GACGD"] = (own, fastgame.GACGD(own[0].parameters(), own[1].parameters(), lr_x=lr, lr_y=lr, tol=tol))
    return rows


def measure(n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows of one n: every optimizer steps once per batch, round-robin."""
    ring = GaussianMixture.ring()
    gen = torch.Generator().manual_seed(args.seed + 1)
    batches = [(ring.sample(args.batch, generator=gen), torch.randn(args.batch, 2, generator=gen))
               for _ in range(args.warmup + args.steps)]
    rows = optimizers(n, players(n, args.width, args.seed), args.lr, args.tol)
    stats = {name: {"timer": StepTimer(torch.device("cpu")), "iters": [], "passes": [], "products": [], "rhs": []} for name in rows}
    for t, (real, z) in enumerate(batches):
        for name, (models, opt) in rows.items():
            timed = stats[name]["timer"]() if t >= args.warmup else _untimed()
            with timed:
                opt.step(*losses(models, real, z))
            if t >= args.warmup:
                info = opt.get_info()
                stats[name]["iters"].append(info["iter_num"])
                stats[name]["passes"].append(info["hvp_passes"])
                stats[name]["products"].append(info.get("products", 0))  # GACGD reports none
                stats[name]["rhs"].append(info.get("rhs_passes", 0))
    first = _flat(next(iter(rows.values()))[0])
    out = []
    for name, (models, _) in rows.items():
        s = stats[name]
        out.append(dict(n=n, optimizer=name, ms_per_step=statistics.median(s["timer"].ms()),
                        gmres_iters=statistics.fmean(s["iters"]), passes_per_step=statistics.fmean(s["passes"]),
                        passes_per_product=((sum(s["passes"]) - sum(s["rhs"])) / sum(s["products"])
                                            if sum(s["products"]) else None),
                        param_diff=float((_flat(models) - first).norm() / first.norm())))
    return out


class _untimed:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _flat(models: list[nn.Module]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for m in models for p in m.parameters()])


def _or_dash(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table, with each row's time relative to its n's n-pass row."""
    lines = ["| n | optimizer | ms/step | vs n-pass | GMRES iters | passes/step | passes/product | param diff |",
             "|---|---|---|---|---|---|---|---|"]
    base: dict[int, float] = {}
    for r in rows:
        base.setdefault(r["n"], r["ms_per_step"])
        lines.append(f"| {r['n']} | {r['optimizer']} | {r['ms_per_step']:.1f} | {r['ms_per_step'] / base[r['n']]:.2f} | "
                     f"{r['gmres_iters']:.1f} | {r['passes_per_step']:.1f} | {_or_dash(r['passes_per_product'])} | "
                     f"{r['param_diff']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--players", type=int, nargs="+", default=[2, 3, 4], help="the n to measure (each >= 2)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per optimizer")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--tol", type=float, default=1e-5, help="GMRES tolerance (GACGD's and APCGD's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help='folder for the JSON and markdown (default bench/results, '
                        'none with --smoke; "" for none)')
    parser.add_argument("--smoke", action="store_true", help="CI check: width 8, batch 32, 2 timed steps, 1 warm-up")
    args = parser.parse_args(argv)
    if args.smoke:
        args.width, args.batch, args.steps, args.warmup = 8, 32, 2, 1
    if args.out is None:
        args.out = "" if args.smoke else "bench/results"
    if min(args.players) < 2 or args.steps < 1 or args.warmup < 0:
        parser.error("--players must be >= 2, --steps >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    header = (f"one generator against n-1 discriminators (MLPs 2-{args.width}-{args.width}-2 / -1, tanh), standard "
              f"loss, 8-Gaussian ring, batch {args.batch}, lr {args.lr:g}, tol {args.tol:g}, {args.steps} timed steps "
              f"after {args.warmup}, float32, CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} "
              f"cores, {args.threads} thread(s)), torch {torch.__version__}")
    print(header, flush=True)
    rows: list[dict[str, Any]] = []
    for n in args.players:
        rows += measure(n, args)
    text = table(rows)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, f"pcgd_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        with open(stem + ".json", "w") as f:
            json.dump({"setup": header, "args": vars(args), "rows": rows}, f, indent=1)
        with open(stem + ".md", "w") as f:
            f.write(f"{header}\n\n`python -m bench.pcgd {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n{text}\n")
        print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
