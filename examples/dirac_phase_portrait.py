"""Phase portrait of the Dirac-GAN (Mescheder et al. 2018): SimGD, SimGD + R1 and ACGD from the same start.

The unregularised vector field only rotates around the equilibrium (θ, ψ) = (0, 0), so
simultaneous gradient descent-ascent spirals outwards; the R1 penalty adds damping and the
iterates spiral in; ACGD converges without any penalty.

    python examples/dirac_phase_portrait.py [--out examples/dirac_phase_portrait.png]
    python examples/dirac_phase_portrait.py --smoke   # CI: 20 steps, the figure in a temporary folder

Needs matplotlib (the package itself does not).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import fastgame
from fastgame import diagnostics
from fastgame.games import DiracGAN, SimGD

START = dict(theta=1.0, psi=1.0)
LR, STEPS, GAMMA = 0.1, 600, 0.5
LIM = 2.6


def trajectory(game: DiracGAN, optimizer, steps: int = STEPS) -> torch.Tensor:
    """(θ, ψ) after each of ``steps`` steps, starting point included."""
    points = [game.point().flip(0)]  # a point is (ψ, θ): max player first
    for _ in range(steps):
        optimizer.step(game.loss)
        points.append(game.point().flip(0))
    return torch.stack(points)


def field(game: DiracGAN, n: int = 21) -> tuple[torch.Tensor, ...]:
    """The vector field (dθ/dt, dψ/dt) on an n × n grid of (θ, ψ)."""
    ticks = torch.linspace(-LIM, LIM, n, dtype=torch.float64)
    th, ps = torch.meshgrid(ticks, ticks, indexing="xy")
    v = torch.stack([diagnostics.vector_field(game, torch.stack([p, t]))
                     for p, t in zip(ps.reshape(-1), th.reshape(-1))])
    return th, ps, v[:, 1].reshape(n, n), v[:, 0].reshape(n, n)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".png"))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--smoke", action="store_true", help="CI check: 20 steps, the figure in a temporary folder")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.out = 20, Path(tempfile.mkdtemp(prefix="fastgame-example-")) / "dirac_phase_portrait.png"
    torch.set_default_dtype(torch.float64)

    runs = []
    plain = DiracGAN("standard", **START)
    runs.append(("SimGD (no regularisation)", plain,
                 trajectory(plain, SimGD(plain.max_params, plain.min_params, lr_max=LR, lr_min=LR), args.steps)))
    r1 = DiracGAN("standard", penalty="r1", penalty_weight=GAMMA, **START)
    runs.append((f"SimGD + R1 (γ = {GAMMA})", r1,
                 trajectory(r1, SimGD(r1.max_params, r1.min_params, lr_max=LR, lr_min=LR), args.steps)))
    plain2 = DiracGAN("standard", **START)
    runs.append(("ACGD (no regularisation)", plain2,
                 trajectory(plain2, fastgame.ACGD(plain2.max_params, plain2.min_params, lr_max=LR, lr_min=LR),
                            args.steps)))

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.9), constrained_layout=True)
    for ax, (title, game, path) in zip(axes, runs):
        th, ps, u, v = field(DiracGAN("standard", penalty=game.penalty, penalty_weight=game.penalty_weight))
        ax.streamplot(th.numpy(), ps.numpy(), u.numpy(), v.numpy(), color="0.75", density=1.1, linewidth=0.8)
        ax.plot(path[:, 0], path[:, 1], color="tab:blue", lw=1.3, label=f"{args.steps} steps, lr {LR}")
        ax.plot(*path[0], "o", color="tab:green", label="start")
        ax.plot(*path[-1], "s", color="tab:red", label="end")
        ax.plot(0, 0, "*", color="black", ms=12, label="equilibrium")
        ax.set(title=title, xlabel="generator θ", ylabel="discriminator ψ", xlim=(-LIM, LIM), ylim=(-LIM, LIM),
               aspect="equal")
        ax.legend(loc="lower left", fontsize=8)
    fig.suptitle("Dirac-GAN, standard loss: data δ₀, generator δ_θ, discriminator D(x) = ψx")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    for title, game, path in runs:
        print(f"{title:28s} distance to equilibrium: {float(path[0].norm()):.3f} -> {float(path[-1].norm()):.3g}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
