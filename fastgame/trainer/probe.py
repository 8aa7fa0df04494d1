"""``fastgame probe RUN_DIR``: the implicit-competitive-regularization probe of a trained run.

Schäfer, Zheng & Anandkumar, "Implicit competitive regularization in GANs" (ICML 2020) argue
that a GAN trained without explicit regularization is held in place by the players'
competition: from a checkpoint, training the discriminator *alone* moves its outputs far and
drives its loss down, while training *both* players keeps it close. This module runs that
experiment on a run folder's checkpoint with :func:`fastgame.diagnostics.icr_probe` —
(a) only the discriminator, (b) both players simultaneously, each from the checkpoint with the
run's own optimizer and learning rates — and records, at every step, the mean distance of D's
outputs on fixed real and fake samples from their values at the checkpoint, and D's loss::

    RUN_DIR/probe.csv   step, and for each case (d_only, both): D's output change, its loss on the
                        fixed samples and on the step's fresh batch, ‖∇_G L_G‖
    RUN_DIR/probe.png   output change and D's loss against steps, both cases

The optimizers start with fresh state (Adam's moments, ACGD's second moments): the checkpoint's
state belongs to the training run's two-player step. The probe changes nothing in the run folder
except these two files. When the run is later resumed past the probed checkpoint, they are kept
and renamed ``probe-stepN.csv``/``.png`` (N: the checkpoint's step, :func:`mark_stale_probe`), so
that a ``probe.png`` always belongs to the folder's checkpoint.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from ..diagnostics import ICRProbe, icr_probe
from ..games.gan import GAN
from ..losses import get_loss
from ..optim import SimAdam
from .checkpoint import load_checkpoint, write_csv
from .config import ConfigError, read_run_config
from .data import load_dataset
from .methods import ADAM_BETAS, get_method, names
from .models import build_models
from .options import TRAINER_TOL
from .steppers import CGDStepper

__all__ = ["ProbeResult", "probe_run", "mark_stale_probe", "PROBE_SAMPLES", "PROBE_FILES"]

PROBE_FILES = ("probe.csv", "probe.png")

PROBE_SAMPLES = 256
"""Fixed real and fixed fake samples (each) whose discriminator outputs are tracked."""


@dataclass
class ProbeResult:
    """What :func:`probe_run` measured and wrote."""

    probe: ICRProbe
    """The probe's per-step traces."""
    rows: list[dict[str, Any]]
    """What probe.csv holds, one dict per step."""
    csv: str
    png: str
    title: str


class _OnZeroSum:
    """A CGD optimizer stepping on the zero-sum loss ``−L_D`` of a game whose closure returns both
    players' losses (the trainer's CGD steps on that surrogate for non-zero-sum losses too)."""

    def __init__(self, opt: Any) -> None:
        self.opt = opt

    def step(self, closure: Callable[[], Any]) -> Any:
        def zero_sum() -> Tensor:
            out = closure()
            return out if isinstance(out, Tensor) else -out[0]
        return self.opt.step(zero_sum)


def _check_probed(name: str) -> None:
    """ConfigError unless the probe can continue a run of method ``name`` (see :func:`_optimizer`)."""
    probed = [m for m in names() if get_method(m).stepper is CGDStepper or get_method(m).per_player]
    if name not in probed:
        raise ConfigError(f"the probe continues runs of {', '.join(probed)}, not {name!r}")


def _optimizer(name: str, zero_sum: bool) -> Callable[..., Any]:
    """``factory(max_params, min_params, lr_max=, lr_min=)`` continuing a run of method ``name``:
    ACGD/BCGD (the trainer's CGD steppers) at the trainer's tolerance, the Adam baselines as
    simultaneous Adam with their betas."""
    _check_probed(name)
    method = get_method(name)
    if method.stepper is CGDStepper:
        cls = method.cls
        return lambda mx, mn, lr_max, lr_min: _OnZeroSum(cls(max_params=mx, min_params=mn, lr_max=lr_max,
                                                             lr_min=lr_min, tol=TRAINER_TOL))
    return lambda mx, mn, lr_max, lr_min: SimAdam(mx, mn, lr_max=lr_max, lr_min=lr_min, betas=ADAM_BETAS,
                                                  general_sum=not zero_sum)


def _load(run_dir: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(config, data, (G, D) at the checkpoint, checkpoint state) of ``run_dir``."""
    cfg = read_run_config(run_dir)
    _check_probed(cfg.optimizer)  # before the data and models are loaded
    if cfg.discriminators > 1:
        raise ConfigError(f"the probe follows one discriminator; {run_dir} trained {cfg.discriminators} "
                          "(--discriminators)")
    state = load_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    data = load_dataset(cfg.data, cfg.image_size)
    G, D = build_models(cfg, data)
    G.load_state_dict(state["G"])
    D.load_state_dict(state["D"])
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    return cfg, data, (G.to(dtype), D.to(dtype)), state


def mark_stale_probe(run_dir: str, step: int) -> list[str]:
    """Rename the probe's files of ``run_dir`` to ``probe-step<step>.*`` (``step``: the checkpoint
    they probed, which the run is about to train past); returns the new paths."""
    moved = []
    for name in PROBE_FILES:
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            stem, ext = os.path.splitext(name)
            moved.append(os.path.join(run_dir, f"{stem}-step{step}{ext}"))
            os.replace(path, moved[-1])
    return moved


class _Progress:
    """One line at the start of each case and every quarter of its steps (a probe is minutes long)."""

    def __init__(self, steps: int, say: Callable[[str], None]) -> None:
        self.steps, self.say, self.calls, self.t0 = steps, say, 0, time.perf_counter()

    def __call__(self) -> None:
        """Called with every evaluation of the outputs: the reference and then one per record, per case."""
        case, i = divmod(self.calls, self.steps + 2)
        self.calls += 1
        step = i - 1  # call 0 of a case is its reference, call 1 its starting point
        if step == 0 or (step > 0 and step % max(1, self.steps // 4) == 0):
            label = ("D alone", "both players")[min(case, 1)]
            self.say(f"fastgame probe: {label}, step {step}/{self.steps} ({time.perf_counter() - self.t0:.0f} s)")


def probe_run(run_dir: str, steps: int = 100, seed: int = 0, out: Optional[str] = None,
              quiet: bool = False) -> ProbeResult:
    """Run the ICR probe on ``run_dir``'s checkpoint for ``steps`` steps per case and write
    ``probe.csv`` and ``probe.png`` into ``out`` (default ``run_dir``). On the CPU, deterministic
    for a fixed ``seed`` and thread count. Raises a ConfigError/CheckpointError/DataError with a
    one-line message for a folder that is not a finished or checkpointed run."""
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"--steps must be an int >= 1, got {steps!r}")
    say = (lambda line: None) if quiet else (lambda line: print(line, flush=True))  # noqa: E731
    say(f"fastgame probe: loading {run_dir} (its data, models and checkpoint)")
    cfg, data, (G, D), state = _load(run_dir)
    dtype = next(G.parameters()).dtype
    g = torch.Generator().manual_seed(seed)

    def real(n: int) -> Tensor:
        if data.mixture is not None:
            return data.mixture.sample(n, generator=g)
        return data.tensor[torch.randint(len(data), (n,), generator=g)]

    game = GAN(G, D, real, latent_dim=cfg.latent, loss=cfg.loss,
               penalty=None if cfg.penalty == "none" else cfg.penalty, penalty_weight=cfg.penalty_weight,
               batch_size=cfg.batch)
    torch.manual_seed(seed)  # the game's latent codes
    with torch.no_grad():
        fixed = torch.cat([real(PROBE_SAMPLES).to(dtype), game.sample(PROBE_SAMPLES)])
    loss = get_loss(cfg.loss)
    fixed_loss: list[float] = []  # D's loss on the fixed samples at every call of outputs()

    progress = _Progress(steps, say)

    def outputs() -> Tensor:
        progress()
        o = D(fixed).reshape(-1)
        fixed_loss.append(float(loss(o[:PROBE_SAMPLES], o[PROBE_SAMPLES:]).discriminator))
        return o

    factory = _optimizer(cfg.optimizer, game.is_zero_sum)
    result = icr_probe(game, lr_max=cfg.lr_d, lr_min=cfg.lr_g, steps=steps, counter_steps=0,
                       optimizer=factory, outputs=outputs)
    # icr_probe calls outputs() once for the reference, then once per record, case after case.
    assert len(fixed_loss) == 2 * (steps + 2)
    fixed_by_case = {"d_only": fixed_loss[1:steps + 2], "both": fixed_loss[steps + 3:]}
    out = out or run_dir
    rows = []
    for t in range(steps + 1):
        row: dict[str, Any] = {"step": t}
        for case, run in (("d_only", result.discriminator_only), ("both", result.both)):
            row[f"{case}_output_change"] = float(run.output_change[t])
            row[f"{case}_loss_d_fixed"] = fixed_by_case[case][t]
            row[f"{case}_loss_d_batch"] = float(run.discriminator_loss[t])
            row[f"{case}_grad_g"] = float(run.generator_grad_norm[t])
        rows.append(row)
    csv_path, png_path = os.path.join(out, "probe.csv"), os.path.join(out, "probe.png")
    write_csv(csv_path, rows, list(rows[0]))
    title = f"ICR probe: {cfg.optimizer} run on {cfg.data} ({cfg.loss} loss), step {state['step']}, seed {cfg.seed}"
    plot_probe(png_path, rows, title)
    return ProbeResult(result, rows, csv_path, png_path, title)


def plot_probe(path: str, rows: list[dict[str, Any]], title: str) -> None:
    """D's output change and its loss on the fixed samples against probe steps, D alone vs both players."""
    from .plots import _plt
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=80)
    steps = [r["step"] for r in rows]
    for case, label, color in (("d_only", "D alone", "C3"), ("both", "both players", "C0")):
        axes[0].plot(steps, [r[f"{case}_output_change"] for r in rows], color=color, label=label)
        axes[1].plot(steps, [r[f"{case}_loss_d_fixed"] for r in rows], color=color, label=label)
    axes[0].set_title("mean |D(x) - D(x) at the checkpoint|, fixed real and fake x", fontsize=8)
    axes[1].set_title("D's loss on those x", fontsize=8)
    for ax in axes:
        ax.set_xlabel("probe step")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
