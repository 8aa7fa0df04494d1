"""The demo's summary: one table, one picture and one verdict line per setting, all computed from
the run folders that ``fastgame compare`` left (nothing here is written by hand).

    python examples/demo_summary.py OUT SETTING=TITLE [SETTING=TITLE ...] [--seconds SETTING=S ...]

``OUT/SETTING`` is a ``fastgame compare`` folder; its runs are the subfolders ``<spec>-seed<k>``.
Writes ``OUT/summary.md`` and prints it. The verdict compares ACGD with each other optimizer on
the setting's first metric, seed by seed, at the last evaluation:

* "better on every seed": ACGD's worst seed beats the other's best seed;
* "worse on every seed": the other way round;
* "ahead/behind on average, seeds overlap (unsettled)": the means differ, the seed ranges overlap;
* "tie": the same mean.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from typing import Any

from fastgame.trainer.evaluation import METRIC_DIRECTION

ACGD = "acgd"
ORDER = ("modes_covered", "high_quality", "mode_jsd", "fcd", "classes_covered", "class_kl", "fid", "inception_score")
"""The metrics in the order the tables show them; the first one present is the verdict's."""


def _runs(folder: str) -> dict[str, list[dict[str, Any]]]:
    """label -> [{"seed", "config", "rows"}] for every run folder under ``folder``."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not (os.path.isdir(path) and os.path.isfile(os.path.join(path, "metrics.json"))):
            continue
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        with open(os.path.join(path, "metrics.json")) as f:
            rows = json.load(f)
        runs.setdefault(describe(cfg), []).append({"seed": cfg["seed"], "config": cfg, "rows": rows})
    # ACGD first, then the unregularized baselines, then the regularized ones.
    return dict(sorted(runs.items(), key=lambda kv: (kv[1][0]["config"]["optimizer"] != ACGD,
                                                      kv[1][0]["config"].get("penalty", "none") != "none", kv[0])))


RECIPE = {"optimizer": "adam-alt", "penalty": "wgan_gp", "d_steps": 5, "betas": [0.5, 0.9]}
RECIPE_LR = 1e-4
"""WGAN-GP's training recipe ("Improved training of Wasserstein GANs", Gulrajani, Ahmed, Arjovsky,
Dumoulin & Courville, NeurIPS 2017): alternating Adam, 5 critic steps per generator step, betas
(0.5, 0.9), lr :data:`RECIPE_LR` for both players; the penalty weight depends on the data
(:data:`RECIPE_WEIGHTS`)."""
RECIPE_WEIGHTS = {0.1: ("toy recipe", "its 8-Gaussians code (gan_toy.py) uses λ 0.1: "
                                      "\"smaller lambda seems to help for toy tasks\""),
                  10.0: ("image recipe", "its image models (the paper's Algorithm 1) use λ 10")}
"""The penalty weights WGAN-GP's own code uses: weight -> (the recipe's name, where it comes from)."""


def _is_recipe(cfg: dict[str, Any]) -> bool:
    """Whether ``cfg`` plays WGAN-GP's recipe (at any learning rate and penalty weight)."""
    return all(cfg.get(k) == v for k, v in RECIPE.items())


def describe(cfg: dict[str, Any]) -> str:
    """A run's optimizer as the table shows it, from its config. WGAN-GP's recipe is named with its
    penalty weight, e.g. "Adam + WGAN-GP (λ 0.1, toy recipe)", and its learning rate where that is
    not the recipe's ("..., toy recipe but lr 0.001"); anything else is the optimizer's name, then
    what differs from plain play (a penalty, critic steps, Adam's betas)."""
    if _is_recipe(cfg):
        weight = float(cfg["penalty_weight"])
        name = RECIPE_WEIGHTS[weight][0] if weight in RECIPE_WEIGHTS else "the recipe's other settings"
        lrs = {cfg.get("lr_d", RECIPE_LR), cfg.get("lr_g", RECIPE_LR)}
        if lrs != {RECIPE_LR}:
            name += " but lr " + "/".join(f"{lr:g}" for lr in (cfg["lr_d"], cfg["lr_g"])[:len(lrs)])
        return f"Adam + WGAN-GP (λ {weight:g}, {name})"
    name = {"acgd": "ACGD", "adam": "Adam (simultaneous)", "adam-alt": "Adam (alternating)"}.get(
        cfg["optimizer"], cfg["optimizer"])
    extra = []
    if cfg.get("penalty", "none") != "none":
        extra.append(f"{cfg['penalty']} {cfg['penalty_weight']:g}")
    if cfg.get("d_steps", 1) != 1:
        extra.append(f"{cfg['d_steps']} critic steps")
    if cfg.get("betas"):
        extra.append("betas ({:g}, {:g})".format(*cfg["betas"]))
    return name + (f" + {', '.join(extra)}" if extra else "")


def recipe_sources(configs: list[dict[str, Any]]) -> list[str]:
    """One paragraph on the WGAN-GP recipe runs among ``configs`` (none: no paragraph): the recipe,
    its source and where each penalty weight comes from."""
    weights = sorted({float(c["penalty_weight"]) for c in configs if _is_recipe(c)})
    if not weights:
        return []
    why = "; ".join(f"λ {w:g}: {RECIPE_WEIGHTS[w][1] if w in RECIPE_WEIGHTS else 'not a weight of its code (a sweep)'}"
                    for w in weights)
    return [f"Adam + WGAN-GP is WGAN-GP's recipe (Gulrajani et al., \"Improved training of Wasserstein GANs\", "
            f"NeurIPS 2017: alternating Adam, lr 1e-4, betas (0.5, 0.9), 5 critic steps per generator "
            f"step) with the penalty weight λ named in its row; {why}. A row that says \"but lr\" ran at another "
            "learning rate than the paper's (the package default, as every other method in the table)."]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def verdict(metric: str, acgd: list[float], other: list[float], other_name: str, subject: str = "ACGD") -> str:
    """One clause comparing ``subject``'s (ACGD's) per-seed values of ``metric`` with ``other``'s."""
    up = METRIC_DIRECTION[metric] == "max"
    better = (lambda a, b: a > b) if up else (lambda a, b: a < b)
    worst_a = min(acgd) if up else max(acgd)
    best_a = max(acgd) if up else min(acgd)
    worst_b = min(other) if up else max(other)
    best_b = max(other) if up else min(other)
    ma, mb = statistics.fmean(acgd), statistics.fmean(other)
    if better(worst_a, best_b):
        return f"{subject} better than {other_name} on every seed"
    if better(worst_b, best_a):
        return f"{subject} worse than {other_name} on every seed"
    if ma == mb:
        return f"{subject} ties {other_name}"
    side = "ahead of" if better(ma, mb) else "behind"
    return f"{subject} {side} {other_name} on average ({_fmt(ma)} vs {_fmt(mb)}), seeds overlap: unsettled"


def _short(label: str) -> str:
    """A legend-sized name: "Adam + WGAN-GP λ 0.1" for the recipe (", lr 0.001" at another rate),
    the optimizer for the others."""
    if label.startswith("Adam + WGAN-GP (λ "):
        lr = label.split("but lr ", 1)[1].rstrip(")") if "but lr " in label else ""
        return "Adam + WGAN-GP λ " + label.split("λ ", 1)[1].split(",")[0] + (f", lr {lr}" if lr else "")
    return {"Adam (simultaneous)": "Adam"}.get(label, label.split(",")[0])


def picture(path: str, runs: dict[str, list[dict[str, Any]]], metric: str, title: str,
            wall_clock: bool = False) -> None:
    """One picture of a setting: ``metric`` against generator steps (and, with ``wall_clock``,
    against training seconds) per optimizer, mean and range over seeds, and each optimizer's final
    samples of its first seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = 2 if wall_clock else 1
    fig, axes = plt.subplots(1, curves + len(runs), figsize=(3.3 * (curves + len(runs)), 3.3), dpi=80,
                             gridspec_kw={"width_ratios": [1.3] * curves + [1] * len(runs)})
    for i, (label, seeds) in enumerate(runs.items()):
        n = min(len(r["rows"]) for r in seeds)
        vals = [[float(r["rows"][j][metric]) for r in seeds] for j in range(n)]
        mean = [statistics.fmean(v) for v in vals]
        xs = [[r["step"] for r in seeds[0]["rows"][:n]]]
        if wall_clock:  # each evaluation's training seconds, averaged over the seeds
            xs.append([statistics.fmean(float(r["rows"][j]["wall_s"]) for r in seeds) for j in range(n)])
        for ax, x in zip(axes, xs):
            ax.plot(x, mean, color=f"C{i}", label=f"{_short(label)} ({len(seeds)} seeds)")
            ax.fill_between(x, [min(v) for v in vals], [max(v) for v in vals], color=f"C{i}", alpha=0.2)
        sample = os.path.join(os.path.dirname(path), _folder_of(seeds[0]), "samples.png")
        axes[curves + i].imshow(plt.imread(sample))
        axes[curves + i].set_title(f"{_short(label)}, seed {seeds[0]['seed']}, final", fontsize=8)
        axes[curves + i].axis("off")
    for ax, xlabel in zip(axes, ("generator step", "training seconds (mean of the seeds)")[:curves]):
        ax.set_xlabel(xlabel)
        ax.set_title(f"{metric} ({'higher' if METRIC_DIRECTION[metric] == 'max' else 'lower'} is better; "
                     "mean, range)", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _folder_of(run: dict[str, Any]) -> str:
    return os.path.basename(os.path.normpath(run["config"]["out"]))


def summarise(out: str, setting: str, title: str, seconds: float | None, wall_clock: bool = False) -> list[str]:
    """The markdown of one setting (``OUT/SETTING``): its line, its table, its picture (written as
    ``OUT/SETTING/summary.png``), the sources of its baselines' recipes and its verdict."""
    folder = os.path.join(out, setting)
    runs = _runs(folder)
    last = runs[next(iter(runs))][0]["rows"][-1]
    metrics = [k for k in ORDER if k in last and k in METRIC_DIRECTION]
    if not metrics:
        return [f"## {title}", "", "(no quality metric for these data)", ""]
    cfg = runs[next(iter(runs))][0]["config"]
    steps = runs[next(iter(runs))][0]["rows"][-1]["step"]
    lines = [f"## {title}", "",
             f"`{cfg['data']}`, {cfg['model']} (width {cfg['width']}), loss `{cfg['loss']}`, batch {cfg['batch']}, "
             f"{steps} generator steps, lr_d {cfg['lr_d']:g}, lr_g {cfg['lr_g']:g}"
             + (f"; this setting took {seconds:.0f} s" if seconds else ""), ""]
    arrow = {m: "↑" if METRIC_DIRECTION[m] == "max" else "↓" for m in metrics}
    lines.append("| optimizer | seeds | " + " | ".join(f"{m} {arrow[m]} (per seed)" for m in metrics)
                 + " | training s/run |")
    lines.append("|---" * (len(metrics) + 3) + "|")
    final: dict[str, list[float]] = {}
    for label, seeds in runs.items():
        seeds.sort(key=lambda r: r["seed"])
        cells = []
        for m in metrics:
            vals = [float(r["rows"][-1][m]) for r in seeds]
            if m == metrics[0]:
                final[label] = vals
            spread = f" ± {statistics.stdev(vals):.2g}" if len(vals) > 1 else ""
            cells.append(f"{_fmt(statistics.fmean(vals))}{spread} ({', '.join(_fmt(v) for v in vals)})")
        wall = statistics.fmean(float(r["rows"][-1]["wall_s"]) for r in seeds)
        lines.append(f"| {label} | {', '.join(str(r['seed']) for r in seeds)} | " + " | ".join(cells)
                     + f" | {wall:.0f} |")
    acgd = [label for label, seeds in runs.items() if seeds[0]["config"]["optimizer"] == ACGD]
    lines.append("")
    picture(os.path.join(folder, "summary.png"), runs, metrics[0], title, wall_clock)
    lines.append(f"![{title}]({setting}/summary.png)")
    lines.append("")
    for source in recipe_sources([r["config"] for seeds in runs.values() for r in seeds]):
        lines += [source, ""]
    if acgd:
        clauses = [verdict(metrics[0], final[acgd[0]], final[label], label) for label in final if label != acgd[0]]
        lines.append(f"**Verdict ({metrics[0]}, final, computed):** " + "; ".join(clauses) + ".")
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("settings", nargs="+", metavar="SETTING=TITLE")
    parser.add_argument("--seconds", nargs="*", default=[], metavar="SETTING=S")
    parser.add_argument("--command", default="bash examples/demo.sh")
    parser.add_argument("--total", type=float, default=None, help="the whole demo's seconds")
    parser.add_argument("--jobs", type=int, default=1, help="settings trained side by side")
    parser.add_argument("--title", default="fastgame demo: ACGD vs simultaneous Adam vs Adam + WGAN-GP")
    parser.add_argument("--wall-clock", action="store_true",
                        help="the pictures also show the metric against training seconds")
    args = parser.parse_args()
    seconds = {k: float(v) for k, _, v in (s.partition("=") for s in args.seconds)}
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"# {args.title}", "",
             f"Command: `{args.command}`; machine: {platform.machine()}, {os.cpu_count()} CPU threads ({cpu}); "
             f"{args.jobs} setting(s) trained side by side, one thread each"
             + (f"; {args.total:.0f} s in all" if args.total else "") + ". "
             "Mean ± std over seeds at the last evaluation, each seed in brackets; training seconds exclude "
             "evaluations. Verdicts compare seed by seed (see examples/demo_summary.py).", ""]
    for item in args.settings:
        setting, _, title = item.partition("=")
        lines += summarise(args.out, setting, title or setting, seconds.get(setting), args.wall_clock)
    text = "\n".join(lines)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
