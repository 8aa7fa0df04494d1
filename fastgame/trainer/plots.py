"""The pictures of a run folder and of a comparison (matplotlib, Agg: no display needed)."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["plot_points", "plot_images", "plot_curves", "plot_compare"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_points(path: str, samples: Tensor, modes: Optional[Tensor], title: str) -> None:
    """Generated 2-D samples over the mixture's modes (red crosses)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    s = samples.detach().float().cpu().numpy()
    ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.4, color="tab:blue", label="generated")
    if modes is not None:
        modes = modes.detach().float().cpu()
        ax.scatter(modes[:, 0].numpy(), modes[:, 1].numpy(), marker="x", s=40, color="tab:red", label="modes")
        lim = float(modes.abs().max()) * 1.6
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def image_grid(images: Tensor, cols: int = 8) -> Tensor:
    """(N, C, S, S) images in [-1, 1] as one (rows·(S+1), cols·(S+1), C) grid in [0, 1]."""
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    n, c, s, _ = x.shape
    rows = math.ceil(n / cols)
    grid = torch.ones(rows * (s + 1) + 1, cols * (s + 1) + 1, c)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[1 + r * (s + 1):1 + r * (s + 1) + s, 1 + k * (s + 1):1 + k * (s + 1) + s] = x[i].permute(1, 2, 0)
    return grid


def plot_images(path: str, images: Tensor, title: str, cols: int = 8) -> None:
    """A grid of generated images."""
    plt = _plt()
    grid = image_grid(images, cols)
    fig, ax = plt.subplots(figsize=(4, 4 * grid.shape[0] / grid.shape[1] + 0.3), dpi=80)
    ax.imshow((grid.squeeze(-1) if grid.shape[-1] == 1 else grid).numpy(), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(path: str, rows: Sequence[dict[str, Any]], metrics: Sequence[str], title: str) -> None:
    """Losses, CG iterations and the metrics against steps, one panel each."""
    plt = _plt()
    panels = [("loss_d", "loss_g"), ("cg_iters",)] + [(m,) for m in metrics]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), dpi=80, squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, keys in zip(axes[0], panels):
        for k in keys:
            ax.plot(steps, [r.get(k, float("nan")) for r in rows], label=k)
        ax.set_xlabel("step")
        ax.set_title(", ".join(keys), fontsize=9)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_compare(path: str, runs: dict[str, list[list[dict[str, Any]]]], metric: str, title: str) -> None:
    """``metric`` against steps (mean ± std over seeds) and against wall-clock time (each seed)."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.3), dpi=80)
    for i, (name, seeds) in enumerate(runs.items()):
        color = f"C{i}"
        steps = [r["step"] for r in seeds[0]]
        vals = torch.tensor([[float(r.get(metric, float("nan"))) for r in rows[:len(steps)]] for rows in seeds])
        mean = vals.mean(0)
        a1.plot(steps, mean.numpy(), color=color, label=f"{name} (mean of {len(seeds)})")
        if len(seeds) > 1:
            std = vals.std(0)
            a1.fill_between(steps, (mean - std).numpy(), (mean + std).numpy(), color=color, alpha=0.2)
        for rows in seeds:
            a2.plot([r["wall_s"] for r in rows], [r.get(metric, float("nan")) for r in rows], color=color,
                    alpha=0.7)
    a1.set_xlabel("step")
    a2.set_xlabel("wall-clock seconds (each seed)")
    for a in (a1, a2):
        a.set_ylabel(metric)
    # One legend under both panels: inside either it covered the curves of three or more runs.
    handles, labels = a1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    rows_of_legend = -(-len(labels) // 4)
    fig.tight_layout(rect=(0, 0.06 * rows_of_legend, 1, 1))
    fig.savefig(path)
    plt.close(fig)
