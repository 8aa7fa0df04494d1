"""Every game dynamics of fastgame on three games: steps and wall-clock to reach distance 1e-6
from the equilibrium (Dirac-GAN, an ill-conditioned 10-D bilinear game) and mode coverage of
the 8-Gaussians GAN after a fixed budget. Writes ``table.md`` and ``trajectories.png``.

    python examples/dynamics_compare.py [--out runs/dynamics] [--budget 800] [--gan-steps 800]
    python examples/dynamics_compare.py --smoke   # CI: 20 + 5 steps per method, files in a temporary folder

Step sizes are hand-picked per method and game (roughly the largest stable ones), not tuned
by a search. Needs matplotlib (the package itself does not).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

import fastgame
from fastgame.games import GAN, Bilinear, DiracGAN, Game, GaussianMixture

TOL = 1e-6
ADAM = dict(optimizer="adam", betas=(0.5, 0.999))  # on the GAN, the second-order methods step by Adam
# name: (Dirac-GAN kwargs, bilinear kwargs, GAN kwargs); lr applies to both players.
SETTINGS: dict[str, tuple[dict, dict, dict]] = {
    "simgd": (dict(lr=0.3), dict(lr=0.1), dict(lr=3e-2)),
    "simadam": (dict(lr=0.01), dict(lr=0.01), dict(lr=3e-3, betas=(0.5, 0.999))),
    "altgd": (dict(lr=0.3), dict(lr=0.5), dict(lr=3e-2)),
    "altadam": (dict(lr=0.01), dict(lr=0.01), dict(lr=3e-3, betas=(0.5, 0.999))),
    "extragradient": (dict(lr=1.0), dict(lr=0.9), dict(lr=1e-2)),
    "extra-adam": (dict(lr=0.01), dict(lr=0.01), dict(lr=3e-3, betas=(0.5, 0.999))),
    "ogda": (dict(lr=1.0), dict(lr=0.45), dict(lr=1e-2)),
    "optimistic-adam": (dict(lr=0.01), dict(lr=0.01), dict(lr=3e-3, betas=(0.5, 0.999))),
    "consensus": (dict(lr=0.5), dict(lr=0.5), dict(lr=3e-3, gamma=0.1, **ADAM)),
    "sga": (dict(lr=0.5), dict(lr=0.5), dict(lr=3e-3, lam=0.1, **ADAM)),
    "hamiltonian": (dict(lr=1.0), dict(lr=0.5), dict(lr=3e-3, **ADAM)),
    "lead": (dict(lr=0.5), dict(lr=0.1, coupling=0.1), dict(lr=1e-2, coupling=1e-2)),
    "proximal": (dict(lr=0.3, prox=0.5, inner_lr=0.3), dict(lr=0.5, prox=0.5, inner_lr=0.5),
                 dict(lr=3e-3, prox=1.0, inner_lr=1e-2, inner_steps=3, **ADAM)),
    "manifold": (dict(lr=0.5, ls_iters=3, retraction_steps=3), dict(lr=0.5, ls_iters=3, retraction_steps=3),
                 dict(lr=1e-2, ls_iters=3, retraction_steps=3)),
    "bcgd": (dict(lr=1.0), dict(lr=100.0), dict(lr=3e-2, max_iter=8)),
    "acgd": (dict(lr=0.1), dict(lr=0.5), dict(lr=3e-3, max_iter=8)),
    "gacgd": (dict(lr=0.1), dict(lr=0.5), dict(lr=3e-3, max_iter=8)),
}


def build(name: str, game: Game, lr: float, **kw: Any) -> tuple[torch.optim.Optimizer, Callable]:
    """The optimizer and what its ``step`` takes (GACGD is general-sum: the players' own losses)."""
    cls = fastgame.DYNAMICS[name]
    if cls is fastgame.GACGD:
        return cls(game.max_params, game.min_params, lr_x=lr, lr_y=lr, **kw), game.losses
    return cls(game.max_params, game.min_params, lr_max=lr, lr_min=lr, **kw), game.loss


def ill_conditioned_bilinear() -> Bilinear:
    """f = xᵀAy in 10 + 10 dimensions, A's singular values from 1 down to 0.01."""
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    return Bilinear(U @ torch.diag(torch.logspace(0, -2, 10, dtype=torch.float64)) @ V.T)


def to_equilibrium(name: str, make: Callable[[], Game], kw: dict, budget: int
                   ) -> tuple[Optional[int], float, list[torch.Tensor]]:
    """Steps and seconds until ‖z − z*‖ < TOL (None: not within the budget or diverged), and the path."""
    game = make()
    opt, arg = build(name, game, **kw)
    path, start = [game.point().clone()], time.perf_counter()
    for t in range(1, budget + 1):
        try:
            opt.step(arg)
        except FloatingPointError:
            break
        path.append(game.point().clone())
        if (game.point() - game.equilibrium()).norm() < TOL:
            return t, time.perf_counter() - start, path
        if not torch.isfinite(game.point()).all() or game.point().norm() > 1e6:
            break
    return None, time.perf_counter() - start, path


def mlp(inp: int, out: int, hidden: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out))


def gan_coverage(name: str, kw: dict, steps: int) -> tuple[int, float, float]:
    """Modes covered (of 8) and high-quality fraction after ``steps``, and the seconds taken."""
    torch.manual_seed(0)
    mixture = GaussianMixture.ring().to(torch.float32)
    game = GAN(mlp(2, 2), mlp(2, 1), mixture.sample, latent_dim=2, batch_size=128)
    opt, arg = build(name, game, **kw)
    start = time.perf_counter()
    for _ in range(steps):
        try:
            opt.step(arg)
        except FloatingPointError:
            return 0, 0.0, time.perf_counter() - start
    seconds = time.perf_counter() - start
    metrics = mixture.metrics(game.sample(2500))
    return metrics.modes_covered, metrics.high_quality, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/dynamics"))
    parser.add_argument("--budget", type=int, default=800, help="steps on the Dirac-GAN and the bilinear game")
    parser.add_argument("--gan-steps", type=int, default=800)
    parser.add_argument("--smoke", action="store_true", help="CI check: --budget 20 --gan-steps 5, temporary --out")
    args = parser.parse_args()
    if args.smoke:
        args.budget, args.gan_steps, args.out = 20, 5, Path(tempfile.mkdtemp(prefix="fastgame-example-"))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    rows, paths = [], {}
    for name, (dirac_kw, bilinear_kw, gan_kw) in SETTINGS.items():
        torch.set_default_dtype(torch.float64)
        d_steps, d_sec, paths[name] = to_equilibrium(name, DiracGAN, dirac_kw, args.budget)
        b_steps, b_sec, _ = to_equilibrium(name, ill_conditioned_bilinear, bilinear_kw, args.budget)
        torch.set_default_dtype(torch.float32)
        modes, quality, g_sec = gan_coverage(name, gan_kw, args.gan_steps)
        cell = lambda s, sec: "—" if s is None else f"{s} ({sec:.2f} s)"  # noqa: E731
        rows.append(f"| {name} | {cell(d_steps, d_sec)} | {cell(b_steps, b_sec)} | {modes}/8, {quality:.0%} "
                    f"({g_sec:.1f} s) |")
        print(rows[-1], flush=True)

    header = ["| method | Dirac-GAN: steps to 1e-6 | 10-D bilinear (κ = 100): steps to 1e-6 | "
              f"8 Gaussians after {args.gan_steps} steps: modes, high quality |", "|---|---|---|---|"]
    (args.out / "table.md").write_text("\n".join(header + rows) + "\n")
    plot(paths, args.out / "trajectories.png")
    print(f"wrote {args.out / 'table.md'} and {args.out / 'trajectories.png'}")


def plot(paths: dict[str, list[torch.Tensor]], file: Path) -> None:
    """One small panel per method: its Dirac-GAN path (θ, ψ) from (1, 1) to the equilibrium (0, 0)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = -(-len(paths) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.0 * rows), dpi=60, sharex=True, sharey=True)
    for ax, (name, path) in zip(axes.flat, paths.items()):
        z = torch.stack(path[:400]).clamp(-3, 3)  # a point is (ψ, θ): max player first
        ax.plot(z[:, 1], z[:, 0], lw=0.8)
        ax.plot([0.0], [0.0], "k*", ms=6)
        ax.set_title(name, fontsize=9)
        ax.set(xlim=(-3, 3), ylim=(-3, 3))
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(paths):]:
        ax.axis("off")
    fig.suptitle("Dirac-GAN: θ (generator, x-axis) and ψ (discriminator), first 400 steps", fontsize=10)
    fig.tight_layout()
    fig.savefig(file)


if __name__ == "__main__":
    main()
