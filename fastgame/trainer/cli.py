"""The ``fastgame`` command (also ``python -m fastgame``): ``train``, ``compare`` and ``probe``.

Bad input (a missing path, an unknown optimizer, a corrupt checkpoint, ...) prints one
line ``fastgame: error: ...`` and exits with status 2 before anything is trained or written.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Optional, Sequence

import torch

from .. import losses as L
from .checkpoint import CheckpointError, WriteError
from .data import ON_DISK, DataError
from .config import CONV_THREADS, CPU_THREADS, MODELS, PENALTIES, TRAINER_TOL, ConfigError, TrainConfig
from . import methods
from .train import Interrupted

__all__ = ["main", "build_parser"]

_EPILOG_TRAIN = """examples:
  fastgame train --data ring8 --steps 2000 --out runs/ring-acgd        # ACGD on 8 Gaussians
  fastgame train --data digits --optimizer adam --out runs/digits-adam  # Adam on scikit-learn's digits
  fastgame train --resume runs/ring-acgd --steps 4000                   # continue a run
  fastgame train --data ring8 --loss wgan --optimizer adam-alt --penalty wgan_gp --d-steps 5 --betas 0.5 0.9
                                                          # WGAN-GP's recipe (Gulrajani et al. 2017)
  torchrun --nproc_per_node 2 -m fastgame train --data ring8 --out runs/ddp   # data-parallel

The run folder gets config.json (every setting as resolved: tolerance, threads, loss,
d_batchnorm, ...), metrics.csv/.json, checkpoint.pt, samples.png, samples/step_*.png,
curves.png (and tensorboard/ when tensorboard is installed). Metrics: ring8/grid25 - modes
covered, fraction of high-quality samples, mode JSD; labelled images (digits, mnist:,
fashion-mnist:, cifar10:) - Frechet classifier distance (fcd, lower is better; not FID) on a
classifier trained once on the set's own labels, classes covered and KL of the class
histogram from uniform; other images - Inception FID only if its weights are already on this
machine. `fastgame probe RUN_DIR` then runs the ICR probe on the run's checkpoint."""

_EPILOG_COMPARE = """examples:
  fastgame compare --data ring8 --optimizers acgd adam --seeds 0 1 2 --steps 1000 --out runs/cmp
  fastgame compare --data digits --optimizers acgd adam:lr_d=4e-4,lr_g=1e-4 --out runs/cmp-digits

An optimizer may carry its own settings after a colon (lr_d, lr_g, tol, max_iter, cg_start,
betas, d_steps, penalty, penalty_weight), e.g. two-timescale Adam "adam:lr_d=4e-4,lr_g=1e-4",
"acgd:tol=1e-4,cg_start=zero", or WGAN-GP's recipe beside unregularized runs:
"adam-alt:penalty=wgan_gp,d_steps=5,betas=0.5,0.9". Writes
DIR/compare.md and compare.csv (final and best value of each metric, mean +- std over seeds;
CG iterations and mixed-HVP passes per step), DIR/compare.png (the first metric
against steps and against wall-clock time), each run in DIR/<optimizer>-seed<k>/ and its
final samples as DIR/samples-<optimizer>-seed<k>.png. Finished runs are reused and
unfinished ones resumed when the command is run again."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one --help away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _whole_number(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
    return v


def _positive_float_or_zero(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {s}")
    return v


def _on_off(s: str) -> bool:
    if s not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {s!r}")
    return s == "on"


def _add_training_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and model")
    g.add_argument("--data", default="ring8", metavar="SOURCE",
                   help="ring8 (8 Gaussians on a ring), grid25 (25 on a grid), digits (scikit-learn's 1,797 8x8 "
                        f"digits), {' / '.join(k + ':ROOT' for k in ON_DISK)} (the files torchvision keeps "
                        "under ROOT once downloaded), or a path: a .npy/.pt tensor file ((N,2) points or "
                        "(N,[C,]H,W) images) or a folder of images. Nothing is downloaded. Default: ring8")
    g.add_argument("--image-size", type=int, choices=(8, 16, 32), default=None,
                   help="resize images to this size (bilinear). Default: the data's own size (32 for folders)")
    g.add_argument("--model", choices=MODELS, default="auto",
                   help="mlp for points, dcgan for 8/16/32-px images, wgan_gp_dcgan for 32-px images (minutes a "
                        "step on a CPU). Default: auto (mlp for points, dcgan for images)")
    g.add_argument("--width", type=_positive_int, default=None,
                   help="hidden width (mlp, default 64) or base channels (dcgan 16, wgan_gp_dcgan 64)")
    g.add_argument("--d-batchnorm", type=_on_off, default=None, metavar="on|off",
                   help="BatchNorm in the DCGAN discriminator. Default: on without a penalty, off with one (a "
                        "gradient penalty needs each sample's output to depend on that sample only; on with a "
                        "penalty is refused). Give it to compare a penalty with none on the same discriminator; "
                        "the run's config.json records the choice")
    g.add_argument("--latent", type=_positive_int, default=None, help="latent size (mlp 2, dcgan 32, wgan_gp 128)")
    g = p.add_argument_group("game and optimizer")
    g.add_argument("--loss", choices=list(L.LOSSES), default=None, help="GAN loss (fastgame.losses). "
                   "Default: standard (the minimax GAN, zero-sum) for points, non_saturating for images (the "
                   "minimax loss trained no MNIST images with either optimizer; ACGD/BCGD step on the zero-sum "
                   "form of any loss). wgan: the Wasserstein loss, unregularized unless --penalty")
    g.add_argument("--penalty", choices=PENALTIES, default="none",
                   help="gradient penalty on the discriminator. Default: none")
    g.add_argument("--penalty-weight", type=float, default=10.0, help="its weight (gamma or lambda). Default: 10")
    g.add_argument("--lr-d", type=_positive_float, default=None,
                   help="discriminator learning rate (mlp 1e-3, conv models 2e-4)")
    g.add_argument("--lr-g", type=_positive_float, default=None, help="generator learning rate (same defaults)")
    g.add_argument("--tol", type=_positive_float, default=None,
                   help=f"CG/GMRES tolerance of ACGD/BCGD/GACGD. Default: {TRAINER_TOL:g}, which the README's "
                        "study found quality-neutral with ~30%% fewer passes (the optimizer classes keep CGDs' "
                        "1e-12 for drop-in parity); recorded in config.json")
    g.add_argument("--betas", type=_positive_float_or_zero, nargs=2, default=None, metavar=("B1", "B2"),
                   help="Adam's betas (adam, adam-alt and the Adam dynamics). Default: 0.5 0.999 for adam and "
                        "adam-alt (Radford et al. 2016); WGAN-GP's recipe is 0.5 0.9")
    g.add_argument("--eps", type=_positive_float, default=None,
                   help="the optimizer's epsilon: ACGD's (added to sqrt(v); the ICR paper's runs: 1e-8) or Adam's. "
                        "Default: the optimizer's own (ACGD 1e-5, Adam 1e-8)")
    g.add_argument("--d-steps", type=_positive_int, default=1,
                   help="discriminator (critic) steps per generator step, adam-alt only (WGAN-GP's recipe: 5). "
                        "--steps counts generator steps. Default: 1")
    g.add_argument("--max-iter", type=_whole_number, default=None,
                   help="at most this many CG/GMRES iterations per step (what the optimizer's max_iter accepts, "
                        "0 included). Default: the optimizer's own")
    g.add_argument("--cg-start", choices=methods.choices("cg_start"), default=None,
                   help="how ACGD/BCGD start each CG solve: warm (from the previous step's solution, as CGDs), "
                        "zero (one mixed-HVP pass fewer) or recycle (zero start deflated by Ritz vectors). "
                        "Default: the optimizer's own (zero)")
    g = p.add_argument_group("run")
    g.add_argument("--steps", type=_positive_int, default=None, help="training steps. Default: 2000")
    g.add_argument("--batch", type=_positive_int, default=256, help="batch size (all processes together). "
                   "Default: 256")
    g.add_argument("--seed", type=int, default=0, help="seed of the models, data order and noise. Default: 0")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when available. Default: auto")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward passes")
    g.add_argument("--batchnorm", choices=("fastgame", "native"), default="fastgame",
                   help="the image models' BatchNorm layers: fastgame.nn.BatchNorm (the same function with a "
                        "cheaper double backward: an ACGD step's floor 18-39%% lower on an H200) or torch's own. "
                        "Default: fastgame")
    g.add_argument("--graphed", action="store_true",
                   help="CUDA-graph whole ACGD/BCGD steps with exactly --max-iter masked CG iterations (CUDA only, "
                        "needs --max-iter; warns and runs eagerly elsewhere). Without it, ACGD/BCGD on CUDA replay "
                        "piecewise graphs with the CG iterations each step needs (same numbers as eager)")
    g.add_argument("--eager", action="store_true",
                   help="ACGD/BCGD on CUDA: step eagerly instead of replaying the default piecewise CUDA graphs "
                        "(CPU runs are always eager)")
    g.add_argument("--eval-every", type=_positive_int, default=None, help="steps between evaluations "
                   "(metrics, pictures). Default: steps/20")
    g.add_argument("--eval-samples", type=_positive_int, default=None,
                   help="generated samples per evaluation. Default: 2500 points or 1000 images")
    g.add_argument("--checkpoint-every", type=_positive_int, default=None, help="Default: steps/5")
    g.add_argument("--threads", type=_positive_int, default=None,
                   help=f"torch CPU threads; may be given with --resume. Default on the CPU, by measurement: "
                        f"{CPU_THREADS} for the MLP and 8-px images (torch's default was 8.5x slower on a busy "
                        f"2-core machine), {CONV_THREADS} (at most the cores) for the DCGANs at 16/32 px; torch's "
                        "own on CUDA; recorded in config.json")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar: one line per evaluation (for logs)")


def _optimizer_help() -> str:
    """--optimizer's help, from the registry: the CGD family, the Adam baselines, the other dynamics."""
    table = methods.METHODS.values()
    by_kind = {kind: [m.name for m in table if m.stepper in kinds]
               for kind, kinds in (("cgd", ("cgd", "gacgd")), ("adam", ("adam", "adam-alt")), ("dynamics", ("dynamics",)))}
    betas = ", ".join(map(str, methods.METHODS["adam"].fixed["betas"]))
    return (f"{', '.join(by_kind['cgd'])}; the baselines adam (simultaneous) and adam-alt (alternating, "
            f"torch.optim.Adam with betas {betas}); or another game dynamics of fastgame.optim.DYNAMICS: "
            + ", ".join(by_kind["dynamics"]) + ". Default: acgd")


def build_parser() -> argparse.ArgumentParser:
    """The ``fastgame`` argument parser."""
    p = _Parser(prog="fastgame", description="Train GANs with fastgame's competitive optimizers "
                "(ACGD, BCGD, GACGD) or Adam, on offline data, and compare them.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    t = sub.add_parser("train", help="one training run in a run folder",
                       description="Train one GAN and write a run folder (config, metrics, checkpoints, pictures).",
                       epilog=_EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--out", metavar="RUN_DIR", default=None,
                   help="the run folder to create (must not exist or be empty). Default: "
                        "fastgame-runs/<data>-<optimizer>-seed<seed>")
    t.add_argument("--optimizer", choices=methods.names(), default="acgd", metavar="NAME",
                   help=_optimizer_help())
    t.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its checkpoint, or from step 0 if it stopped before its "
                        "first (its config.json is used; only --steps, --threads and --quiet may change; other "
                        "options may be given only with the run's own values)")
    _add_training_options(t)
    c = sub.add_parser("compare", help="several optimizers over several seeds, with a table and plots",
                       description="Train the same setting with several optimizers and seeds; write a table of the "
                                   "metrics (mean +- std over seeds) and plots.",
                       epilog=_EPILOG_COMPARE, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--out", metavar="DIR", required=True, help="the comparison folder (runs are reused)")
    c.add_argument("--optimizers", nargs="+", default=["acgd", "adam"], metavar="OPT",
                   help=f"two or more of {', '.join(methods.names())}, each optionally NAME:key=value,... "
                        "Default: acgd adam")
    c.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="Default: 0 1")
    _add_training_options(c)
    pr = sub.add_parser("probe", help="the implicit-competitive-regularization probe of a run's checkpoint",
                        description="From RUN_DIR's checkpoint, train (a) only the discriminator and (b) both players, "
                                    "with the run's optimizer and rates, and record how far the discriminator's outputs "
                                    "on fixed real and fake samples move and its loss (Schaefer, Zheng & Anandkumar, "
                                    "'Implicit competitive regularization in GANs', ICML 2020). Writes RUN_DIR/probe.png "
                                    "and RUN_DIR/probe.csv; the run itself is not changed.")
    pr.add_argument("run_dir", metavar="RUN_DIR", help="a run folder of fastgame train (acgd, bcgd or adam run)")
    pr.add_argument("--steps", type=_positive_int, default=100, help="probe steps per case. Default: 100")
    pr.add_argument("--seed", type=int, default=0, help="seed of the fixed samples and batches. Default: 0")
    pr.add_argument("--threads", type=_positive_int, default=CPU_THREADS, help=f"torch CPU threads. Default: "
                    f"{CPU_THREADS}")
    return p


def _config(args: argparse.Namespace, **over) -> TrainConfig:
    keys = {f.name for f in dataclasses.fields(TrainConfig)} - {"steps", "extra"}  # the options of the same names
    kw = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    kw["steps"] = args.steps or TrainConfig.steps
    kw.update(over)
    return TrainConfig(**kw)


def _typed(argv: Optional[Sequence[str]]) -> dict[str, Any]:
    """The training settings typed on the command line ``argv`` (whatever their values, defaults
    included), by TrainConfig field name."""
    parser = build_parser()
    for action in _walk_actions(parser):
        action.default = argparse.SUPPRESS
    typed = vars(parser.parse_args(argv))
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"steps", "extra"}
    return {k: v for k, v in typed.items() if k in fields}


def _walk_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every argument of ``parser`` and of its subcommands."""
    out = []
    for action in parser._actions:  # argparse keeps no public list of a parser's arguments
        out.append(action)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += _walk_actions(sub)
    return out


def _continue_hint(run: Any) -> str:
    """Where a stopped run stands and how to continue it, as it really is on disk."""
    if run.saved_step is None:
        return (f"{run.out} holds no checkpoint yet; fastgame train --resume {run.out} trains it again from step 0")
    return f"the last checkpoint (step {run.saved_step}) is in {run.out}; continue with --resume {run.out}"


def _train(args: argparse.Namespace, argv: Optional[Sequence[str]]) -> int:
    """``fastgame train``: prepare, train, and turn every way a run ends into one line."""
    from .train import PeerError, prepare
    import torch.distributed as dist
    given = _typed(argv) if args.resume is not None else None
    run = prepare(_config(args), args.resume, args.steps, given=given)  # a resumed run holds its rows
    if run.world > 1:
        dist.barrier()  # every rank has checked its input before rank 0 writes anything
    main = run.rank == 0
    if main and args.resume is not None:
        print(f"fastgame: resuming {run.out} at step {run.step} of {run.cfg.steps}"
              + (" (it stopped before its first checkpoint)" if run.restarted else ""), flush=True)
    peer_gone = False
    try:
        run.train(quiet=args.quiet)
        if run.world > 1:
            # Rank 0 still evaluates and writes after the last step; a rank that tore down
            # its process group meanwhile aborted at exit ("terminate called without an
            # active exception"), so every rank waits for rank 0 first.
            dist.barrier()
    except FloatingPointError as exc:
        _say(main, f"fastgame: training stopped at step {run.step + 1}: {exc}; {_continue_hint(run)}")
        return 1
    except Interrupted as exc:
        _say(main, f"fastgame: {exc}: stopped; {_continue_hint(run)}")
        return 128 + exc.signum
    except KeyboardInterrupt:
        _say(main, f"fastgame: interrupted at step {run.step}; {_continue_hint(run)}")
        return 130
    except (PeerError, WriteError) as exc:
        _say(main or isinstance(exc, PeerError), f"fastgame: error: {exc}; {_continue_hint(run)}")
        peer_gone = isinstance(exc, PeerError)
        return 1
    finally:
        # With a peer gone the group's transport is broken, and tearing it down can abort the
        # process ("terminate called without an active exception") after the line above: it is
        # left to entry(), which exits without running its destructors.
        if run.world > 1 and dist.is_initialized() and not peer_gone:
            dist.destroy_process_group()
    if main:
        print(f"fastgame: run folder {os.path.abspath(run.out)}", flush=True)
    return 0


def _say(show: bool, line: str) -> None:
    if show:
        print(line, file=sys.stderr, flush=True)


def _main(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    if args.command == "train":
        return _train(args, argv)
    if args.command == "probe":
        from .probe import probe_run
        torch.set_num_threads(args.threads)
        result = probe_run(args.run_dir, steps=args.steps, seed=args.seed)
        print(f"fastgame: {result.title}; wrote {result.png} and {result.csv}", flush=True)
        return 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("compare runs in one process; start each data-parallel run with torchrun ... train")
    from .compare import compare
    folder = compare(args, _config)
    print(f"fastgame: comparison in {os.path.abspath(folder)} (compare.md, compare.csv, compare.png)", flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``fastgame`` command; returns the exit status."""
    try:
        return _main(argv)
    except (ConfigError, DataError, CheckpointError) as exc:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"fastgame: error: {exc}", file=sys.stderr)
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        return 2
    except WriteError as exc:  # in compare (train says where its run stands itself)
        print(f"fastgame: error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:  # in compare: the run that was training has a checkpoint at that step
        print(f"fastgame: {exc}: stopped with a checkpoint; run the same command again to continue",
              file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:  # before a run started training (or in compare, which resumes its runs)
        print("fastgame: interrupted; a run folder it trained keeps its last checkpoint (run the same command "
              "again to continue)", file=sys.stderr)
        return 130


def entry() -> None:
    """The console script and ``python -m fastgame``: :func:`main` in a process of its own."""
    # Small GANs drift into subnormal floats (e.g. Adam's second moments), which x86 CPUs
    # handle ~50x slower: an 8-Gaussians Adam run went from 13 s to 100 s. Flushing them to
    # zero is process-wide, so it is set here and not in main(), which tests call in-process.
    torch.set_flush_denormal(True)
    code = main()
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():  # left broken by a gone peer (see _train)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
