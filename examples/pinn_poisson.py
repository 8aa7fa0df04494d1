"""A physics-informed network trained two ways on CPINN's Poisson problem: competitively with
GACGD against a discriminator ("Competitive Physics Informed Networks", Zeng, Kothari,
Bryngelson & Schäfer, ICLR 2023) and as a plain PINN with Adam.

    python examples/pinn_poisson.py                    # 1000 + 100 points, 600 steps each: minutes on a CPU
    python examples/pinn_poisson.py --interior 5000 --per-edge 50 --steps 2000   # CPINN's points
    python examples/pinn_poisson.py --smoke            # CI: 100 + 20 points, 3 steps, temporary --out

−Δu = 2 sin x cos y on [−2, 2]², u = sin x cos y on the boundary (the exact solution). Both
methods start from the same PINN (2-50-50-50-1 tanh) on the same points, in float64. GACGD plays
the PINN against a 2-50-50-50-50-2 ReLU discriminator with CPINN's settings (lr 1e-3, eps 1e-8,
beta 0.99, tol 1e-7, atol 1e-20, max_iter 1000); Adam minimises the PINN loss (mean squared
residual + mean squared boundary error) at lr 1e-3. Prints both relative L2 errors on a 256 × 256
grid and the CPU time each took, and writes pinn_poisson.png: the exact solution, each method's
error map, and the error against steps.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import fastgame  # noqa: E402
from fastgame.games.poisson import CompetitivePoisson, evaluation_grid, exact_solution  # noqa: E402

GRID = 256  # CPINN's test grid


def train_gacgd(game: CompetitivePoisson, steps: int, every: int, grid: torch.Tensor) -> tuple[list, float]:
    """GACGD on the competitive game; the L2 error every ``every`` steps and the seconds taken."""
    opt = fastgame.GACGD(game.max_params, game.min_params, lr_x=1e-3, lr_y=1e-3, eps=1e-8, beta=0.99,
                         tol=1e-7, atol=1e-20, max_iter=1000)
    return _train(game, steps, every, grid, lambda: opt.step(*game.losses()))  # (-L, L): D maximises L


def train_adam(game: CompetitivePoisson, steps: int, every: int, grid: torch.Tensor) -> tuple[list, float]:
    """Adam on the plain PINN loss; the L2 error every ``every`` steps and the seconds taken."""
    opt = torch.optim.Adam(game.min_params, lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        game.pinn_loss().backward()
        opt.step()
    return _train(game, steps, every, grid, step)


def _train(game, steps, every, grid, step) -> tuple[list, float]:
    """The steps and the error curve; the seconds are the process's CPU time in the steps (one
    thread: the wall-clock time on an idle machine, and steadier than it on a shared one)."""
    curve, seconds = [(0, game.relative_l2(grid))], 0.0
    for i in range(1, steps + 1):
        t = time.process_time()
        step()
        seconds += time.process_time() - t
        if i % every == 0 or i == steps:
            curve.append((i, game.relative_l2(grid)))
    return curve, seconds


def picture(path: Path, games: dict[str, CompetitivePoisson], curves: dict[str, list], grid: torch.Tensor,
            title: str) -> None:
    """Exact solution, each method's error map |u_PINN − u|, and the error against steps."""
    fig, axes = plt.subplots(1, 2 + len(games), figsize=(4.2 * (2 + len(games)), 3.8))
    extent = (-2, 2, -2, 2)
    im = axes[0].imshow(exact_solution(grid).reshape(GRID, GRID).numpy(), origin="lower", extent=extent, cmap="RdBu_r")
    axes[0].set_title("exact u = sin x cos y")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    errors = {n: (g.solution(grid) - exact_solution(grid)).abs().reshape(GRID, GRID).numpy() for n, g in games.items()}
    vmax = max(float(e.max()) for e in errors.values())
    for ax, (name, err) in zip(axes[1:], errors.items()):
        im = ax.imshow(err, origin="lower", extent=extent, cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"|error|, {name}")
        fig.colorbar(im, ax=ax, shrink=0.8)
    ax = axes[-1]
    for name, curve in curves.items():
        ax.semilogy(*zip(*curve), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("relative L2 error")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interior", type=int, default=1000, help="interior points (CPINN: 5000)")
    parser.add_argument("--per-edge", type=int, default=25, help="boundary points per edge (CPINN: 50)")
    parser.add_argument("--steps", type=int, default=600, help="steps of each method")
    parser.add_argument("--every", type=int, default=20, help="evaluate the L2 error every this many steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/pinn_poisson"))
    parser.add_argument("--smoke", action="store_true", help="CI check: 100 + 20 points, 3 steps, temporary --out")
    args = parser.parse_args()
    if args.smoke:
        args.interior, args.per_edge, args.steps, args.every = 100, 5, 3, 1
        args.out = Path(tempfile.mkdtemp(prefix="fastgame-example-"))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    grid = evaluation_grid(GRID)
    start = CompetitivePoisson(interior=args.interior, per_edge=args.per_edge, seed=args.seed)
    games = {"GACGD (CPINN)": start, "Adam (PINN)": CompetitivePoisson(args.interior, args.per_edge, args.seed)}
    curves, seconds = {}, {}
    for (name, game), train in zip(games.items(), (train_gacgd, train_adam)):
        curves[name], seconds[name] = train(game, args.steps, args.every, grid)
        print(f"{name:14s} relative L2 error {curves[name][-1][1]:.3e} after {args.steps} steps "
              f"(from {curves[name][0][1]:.3e}), {seconds[name]:.0f} s CPU", flush=True)
    title = (f"CPINN Poisson, {args.interior} + {4 * args.per_edge} points, {args.steps} steps each, float64; "
             + ", ".join(f"{n}: L2 {c[-1][1]:.2e} in {seconds[n]:.0f} s CPU" for n, c in curves.items()))
    path = args.out / "pinn_poisson.png"
    picture(path, games, curves, grid, title)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
