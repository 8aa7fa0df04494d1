"""``python -m fastgame.doctor`` (also ``fastgame doctor``): check this machine's fastgame paths.

It prints the torch, CUDA and Triton versions and which fused-op backends load; runs every fused
op of every backend that serves the device against its torch twin at the tolerances the kernel
tests use (:mod:`fastgame.ops.selfcheck`); builds a small MLP GAN and checks one eager
``step(closure)`` and, against eager steps from the same state, the piecewise host loop, the
piecewise-graphed step, the whole-step graph (:func:`fastgame.make_graphed_step`, each checked by
:class:`fastgame.graph_guard.VerifiedStep`), the piecewise step under bf16 autocast and
``graph_cg`` replay. One table: ok, failed (with the error) or skipped (with why); the exit status
is 1 when anything failed. On a CPU it checks what applies there (the ops of the CPU backends, the
Triton kernels too under ``TRITON_INTERPRET=1``, the eager paths) and says what it skipped.

    python -m fastgame.doctor                  # the default device (CUDA when there is one)
    python -m fastgame.doctor --device cpu --json report.json   # for a bug report
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from .graph_guard import Snapshot, VerifiedStep, difference, step_rtol
from .graphs import make_graphed_step, with_run_settings
from .linalg.captured import LiveCG
from .ops import backends as backend_records
from .ops.backends import Backend
from .ops.interface import SCHEMAS
from .ops.selfcheck import TOLERANCES, check_op
from .optim import ACGD

OP_SIZES = (1, 7, 1023, 2**20 + 3)
INTERPRETER_SIZES = (1, 7, 1023)  # the Triton interpreter runs each program as Python
BATCH, LATENT, WIDTH = 64, 4, 32
STEPS = 4  # two warm-ups, then the first step of each phase (the player CG solves)


@dataclass
class Check:
    """One row of the report: ``status`` is "ok", "failed" or "skipped"; ``detail`` the numbers,
    the error or why it was skipped."""
    name: str
    status: str
    detail: str = ""


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()[:400]}"


def environment(device: torch.device) -> dict[str, Any]:
    """The versions and the device, as a bug report needs them."""
    try:
        import triton
        triton_version = triton.__version__
    except Exception as exc:  # noqa: BLE001  (not installed, or broken: say which)
        triton_version = f"not importable ({type(exc).__name__})"
    env = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "cuda (torch built with)": torch.version.cuda, "cuda available": torch.cuda.is_available(),
           "triton": triton_version, "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", ""),
           "FASTGAME_BACKEND": os.environ.get("FASTGAME_BACKEND", ""), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["compute capability"] = "%d.%d" % torch.cuda.get_device_capability(device)
        env["cudnn"] = torch.backends.cudnn.version()
    return env


# ---- the fused ops ----------------------------------------------------------------------------
def op_checks(device: torch.device, backends: Optional[Mapping[str, Backend]] = None) -> list[Check]:
    """Every op of every kernel backend against the torch twins, one row per backend, op and dtype."""
    rows = []
    for name, backend in (backends if backends is not None else backend_records()).items():
        if name == "torch":
            continue  # the twins themselves
        why = backend.serves(device)
        if why:
            rows.append(Check(f"ops: {name}", "skipped", why))
            continue
        sizes = OP_SIZES if backend.auto else INTERPRETER_SIZES
        for schema in SCHEMAS:
            for dtype in TOLERANCES:
                label = f"ops: {name} {schema.name} {str(dtype)[6:]}"
                try:
                    why = _first_mismatch(backend.ops, schema, sizes, dtype, device)
                except Exception as exc:  # noqa: BLE001  (a kernel that raises is a failure to report)
                    why = _error(exc)
                rows.append(Check(label, "failed" if why else "ok", why or f"sizes {', '.join(map(str, sizes))}"))
    return rows


def _first_mismatch(module: Any, schema: Any, sizes: Sequence[int], dtype: torch.dtype,
                    device: torch.device) -> Optional[str]:
    for n in sizes:
        why = check_op(module, schema, n, dtype, device)
        if why:
            return f"n={n}: {why}"
    return None


# ---- the steps --------------------------------------------------------------------------------
class Game:
    """A small GAN, all from one seed: MLP generator and discriminator (tanh, width 32) on
    points of a circle, the logistic zero-sum loss (D maximises it), ``STEPS`` batches."""

    def __init__(self, device: torch.device, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.G = nn.Sequential(nn.Linear(LATENT, WIDTH), nn.Tanh(), nn.Linear(WIDTH, 2)).to(device)
        self.D = nn.Sequential(nn.Linear(2, WIDTH), nn.Tanh(), nn.Linear(WIDTH, 1)).to(device)
        angle = 2 * torch.pi * torch.rand(STEPS, BATCH, generator=gen)
        real = torch.stack([angle.cos(), angle.sin()], -1) + 0.05 * torch.randn(STEPS, BATCH, 2, generator=gen)
        self.batches = list(zip(real.to(device), torch.randn(STEPS, BATCH, LATENT, generator=gen).to(device)))

    def loss(self, real: Tensor, z: Tensor) -> Tensor:
        """log D(real) + log(1 - D(G(z))), D's logits through a sigmoid."""
        return -nn.functional.softplus(-self.D(real)).mean() - nn.functional.softplus(self.D(self.G(z))).mean()

    def optimizer(self, **kw: Any) -> ACGD:
        return ACGD(self.D.parameters(), self.G.parameters(), lr_max=1e-2, lr_min=1e-2, **kw)

    def copy(self) -> "Game":
        twin = copy.copy(self)
        twin.G, twin.D = copy.deepcopy(self.G), copy.deepcopy(self.D)
        return twin


def _eager_check(name: str, device: torch.device) -> Check:
    game = Game(device)
    opt = game.optimizer(graph_cg=False)
    iters = []
    for real, z in game.batches:
        opt.step(lambda: game.loss(real, z))
        iters.append(int(opt.info["iter_num"]))
    return Check(name, "ok", f"{STEPS} steps, CG iterations {iters}")


def _stepwise(name: str, device: torch.device, run: Callable[[Game, ACGD, Tensor, Tensor], None],
              **kw: Any) -> Check:
    """``run`` takes each step of an ACGD built with ``kw``; each is compared with an eager
    ``step(closure)`` from the same parameters and optimizer state."""
    game = Game(device)
    opt = game.optimizer(**kw)
    ref_game = game.copy()
    ref = ref_game.optimizer(graph_cg=False)
    worst, rtol = 0.0, step_rtol(opt)
    for real, z in game.batches:
        with torch.no_grad():
            for p, q in zip([*ref_game.D.parameters(), *ref_game.G.parameters()],
                            [*game.D.parameters(), *game.G.parameters()]):
                p.copy_(q)
        ref.load_state_dict(with_run_settings(ref, opt.state_dict()))
        before, ref_before = Snapshot(opt), Snapshot(ref)
        run(game, opt, real, z)
        ref.step(lambda: ref_game.loss(real, z))
        worst = max(worst, difference(before.outcome()[:2], ref_before.outcome()[:2]))
    status = "ok" if worst <= rtol else "failed"
    return Check(name, status, f"largest relative difference from eager {worst:.3g} (allowed {rtol:.3g})")


def _piecewise_loop(name: str, device: torch.device) -> Check:
    def run(game: Game, opt: ACGD, real: Tensor, z: Tensor) -> None:
        with opt.cg_pieces(LiveCG()):
            opt.step(lambda: game.loss(real, z))
    return _stepwise(name, device, run, capturable=True, max_iter=10_000)


def _graph_cg(name: str, device: torch.device) -> Check:
    graphed = []

    def run(game: Game, opt: ACGD, real: Tensor, z: Tensor) -> None:
        opt.step(lambda: game.loss(real, z))
        graphed.append(bool(opt.info.get("cg_graphed")) or opt.graph_cg_reason or "no reason recorded")
    check = _stepwise(name, device, run)
    reasons = [g for g in graphed[1:] if g is not True]  # a first step warms up without a graph
    if reasons:
        return Check(check.name, "failed", f"CG not graph-replayed: {reasons[0]}")
    return check


def _verified(name: str, device: torch.device, exact_cg: bool, autocast: bool = False) -> Check:
    """make_graphed_step checked by VerifiedStep: two warm-ups, then each phase's first replay."""
    game = Game(device)
    opt = game.optimizer(capturable=True, max_iter=10_000 if exact_cg else 64)

    def loss(real: Tensor, z: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return game.loss(real, z).float()
    causes: list[str] = []
    static = [t.clone() for t in game.batches[0]]
    step = VerifiedStep(make_graphed_step(opt, loss, *static, warmup=2, exact_cg=exact_cg), on_fallback=causes.append)
    for real, z in game.batches:
        step(real, z)
    if causes:
        return Check(name, "failed", causes[0])
    if step.verified != {0, 1}:
        return Check(name, "failed", f"only phases {sorted(step.verified)} were captured and checked")
    return Check(name, "ok", f"each phase's first replay within {step_rtol(opt):.3g} of eager "
                             f"(last difference {step.last_difference:.3g})")


def step_checks(device: torch.device) -> list[Check]:
    """The GAN's steps on ``device``; the CUDA-graph paths are skipped elsewhere."""
    cuda = device.type == "cuda"
    checks: list[tuple[str, Callable[[str, torch.device], Check], bool]] = [  # (name, check, needs CUDA graphs)
        ("step: eager step(closure)", _eager_check, False),
        ("step: piecewise host loop, no graphs", _piecewise_loop, False),
        ("step: piecewise graphs (make_graphed_step(exact_cg=True))",
         lambda name, dev: _verified(name, dev, exact_cg=True), True),
        ("step: whole-step graph (make_graphed_step)", lambda name, dev: _verified(name, dev, exact_cg=False), True),
        ("step: piecewise graphs under bf16 autocast",
         lambda name, dev: _verified(name, dev, exact_cg=True, autocast=True), True),
        ("step: graph_cg (CG iterations replayed per solve)", _graph_cg, True),
    ]
    rows = []
    for name, run, needs in checks:
        if needs and not cuda:
            rows.append(Check(name, "skipped", f"CUDA graphs need a CUDA device (this run: {device})"))
            continue
        try:
            rows.append(run(name, device))
        except Exception as exc:  # noqa: BLE001  (every failure is a row, the others still run)
            rows.append(Check(name, "failed", _error(exc)))
    return rows


# ---- the report -------------------------------------------------------------------------------
def run(device: torch.device, backends: Optional[Mapping[str, Backend]] = None) -> dict[str, Any]:
    """Everything the doctor checks on ``device``: ``{"environment", "backends", "checks", "ok"}``."""
    table = backends if backends is not None else backend_records()
    checks = op_checks(device, table) + step_checks(device)
    return {"environment": environment(device), "backends": {n: str(b) for n, b in table.items()},
            "checks": [asdict(c) for c in checks], "ok": not any(c.status == "failed" for c in checks)}


def format_report(report: dict[str, Any]) -> str:
    lines = ["# fastgame doctor"]
    lines += [f"{k}: {v}" for k, v in report["environment"].items()]
    lines += ["backends:"] + [f"  {n}: {b}" for n, b in report["backends"].items()]
    width = max(len(c["name"]) for c in report["checks"])
    lines += [f"{c['name']:<{width}}  {c['status']:<7}  {c['detail']}" for c in report["checks"]]
    counts = {s: sum(c["status"] == s for c in report["checks"]) for s in ("ok", "failed", "skipped")}
    lines.append(f"# {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped"
                 + ("" if report["ok"] else "; send this output with a bug report"))
    return "\n".join(lines)


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The doctor's options (on ``parser``: the CLI's subcommand)."""
    ap = parser if parser is not None else argparse.ArgumentParser(
        prog="python -m fastgame.doctor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    ap.add_argument("--json", metavar="PATH", default=None, help="also write the report as JSON here")
    return ap


def run_from_args(args: argparse.Namespace, error: Callable[[str], Any]) -> int:
    """Run the doctor on parsed options; ``error`` reports a bad option (argparse's, exits 2)."""
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        return error(f"--device {args.device!r} is not a device torch knows; use cpu, cuda or cuda:N")
    if device.type not in ("cpu", "cuda"):
        return error(f"--device {args.device!r}: the doctor checks cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        return error(f"--device {args.device}: torch sees no CUDA device here")
    report = run(device)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if report["ok"] else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = build_parser()
    return run_from_args(ap.parse_args(argv), ap.error)


if __name__ == "__main__":
    sys.exit(main())
