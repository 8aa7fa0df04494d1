"""The ``fastgame`` command (also ``python -m fastgame``): ``train``, ``compare`` and ``probe``.

Bad input (a missing path, an unknown optimizer, a corrupt checkpoint, ...) prints one
line ``fastgame: error: ...`` and exits with status 2 before anything is trained or written.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence

import torch

from .checkpoint import CheckpointError, WriteError
from .data import DataError
from .config import CPU_THREADS, RESUMABLE, ConfigError, TrainConfig
from . import methods
from .options import GROUPS, OPTIONS, Option, option
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

An optimizer may carry its own settings after a colon, any of
{per_method},
e.g. two-timescale Adam "adam:lr_d=4e-4,lr_g=1e-4",
"acgd:tol=1e-4,cg_start=zero", or WGAN-GP's recipe beside unregularized runs:
"adam-alt:penalty=wgan_gp,d_steps=5,betas=0.5,0.9". Writes
DIR/compare.md and compare.csv (final and best value of each metric, mean +- std over seeds;
CG iterations and mixed-HVP passes per step), DIR/compare.png (the first metric
against steps and against wall-clock time), each run in DIR/<optimizer>-seed<k>/ and its
final samples as DIR/samples-<optimizer>-seed<k>.png. Finished runs are reused and
unfinished ones resumed when the command is run again.""".format(
    per_method=", ".join(o.name for o in OPTIONS if o.per_method))


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one --help away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(s: str) -> int:
    """The probe's own --steps and --threads."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


class _Checked(argparse.Action):
    """Stores an option's value after its record's check (on the whole value: both --betas)."""

    def __init__(self, *args: Any, record: Option, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record = record

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        problem = self.record.problem(values)
        if problem:
            raise argparse.ArgumentError(self, problem)
        setattr(namespace, self.dest, values)


def _word(record: Option) -> Any:
    """argparse's ``type`` of an option: its record's parse, with the problem as argparse's message."""
    def parse(s: str) -> Any:
        try:
            return record.parse(s)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = record.name  # argparse names the type in some messages
    return parse


def _add_option(p: Any, record: Option, help: Optional[str] = None) -> None:
    """``record``'s flag on ``p`` (a parser or a group). No default is stored: the namespace holds
    exactly the options typed, and :class:`TrainConfig` the defaults."""
    kw: dict[str, Any] = dict(dest=record.name, default=argparse.SUPPRESS, help=help or record.full_help)
    if record.switch:
        p.add_argument(record.flag, action="store_true", **kw)
        return
    choices = record.choices() if record.choices is not None else None
    p.add_argument(record.flag, action=_Checked, record=record, type=_word(record), choices=choices,
                   nargs=record.nargs, metavar=record.metavar, **kw)


def _add_training_options(p: argparse.ArgumentParser) -> None:
    for group in GROUPS:
        g = p.add_argument_group(group)
        for record in OPTIONS:
            if record.group == group:
                _add_option(g, record)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar: one line per evaluation (for logs)")


def _optimizer_help() -> str:
    """--optimizer's help, from the registry: the CGD family, the Adam baselines, the other dynamics."""
    table = methods.METHODS.values()
    solving = [m.name for m in table if m.solves]
    dynamics = [m.name for m in table if not m.solves and not m.per_player]
    betas = ", ".join(map(str, methods.ADAM_BETAS))
    return (f"{', '.join(solving)}; the baselines adam (simultaneous) and adam-alt (alternating, "
            f"torch.optim.Adam with betas {betas}); or another game dynamics of fastgame.optim.DYNAMICS: "
            + ", ".join(dynamics) + f". Default: {option('optimizer').default}")


def build_parser() -> argparse.ArgumentParser:
    """The ``fastgame`` argument parser."""
    p = _Parser(prog="fastgame", description="Train GANs with fastgame's competitive optimizers "
                "(ACGD, BCGD, GACGD) or Adam, on offline data, and compare them.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    t = sub.add_parser("train", help="one training run in a run folder",
                       description="Train one GAN and write a run folder (config, metrics, checkpoints, pictures).",
                       epilog=_EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_option(t, option("out"))
    _add_option(t, option("optimizer"), help=_optimizer_help())
    t.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its checkpoint, or from step 0 if it stopped before its "
                        f"first (its config.json is used; only {_resumable()} may change; other "
                        "options may be given only with the run's own values)")
    _add_training_options(t)
    c = sub.add_parser("compare", help="several optimizers over several seeds, with a table and plots",
                       description="Train the same setting with several optimizers and seeds; write a table of the "
                                   "metrics (mean +- std over seeds) and plots.",
                       epilog=_EPILOG_COMPARE, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--out", dest="folder", metavar="DIR", required=True,
                   help="the comparison folder (runs are reused)")
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
    from .. import doctor
    doctor.build_parser(sub.add_parser("doctor", help="check this machine's fastgame paths (run this first on a GPU)",
                                       description=doctor.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    return p


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings typed on the command line (whatever their values), by option name."""
    return {o.name: getattr(args, o.name) for o in OPTIONS if hasattr(args, o.name)}


def _resumable() -> str:
    """The options ``train --resume`` may change, as --help and the error say."""
    return ", ".join(option(k).flag for k in RESUMABLE) + " and --quiet"


def _continue_hint(run: Any) -> str:
    """Where a stopped run stands and how to continue it, as it really is on disk."""
    if run.saved_step is None:
        return (f"{run.out} holds no checkpoint yet; fastgame train --resume {run.out} trains it again from step 0")
    return f"the last checkpoint (step {run.saved_step}) is in {run.out}; continue with --resume {run.out}"


def _train(args: argparse.Namespace) -> int:
    """``fastgame train``: prepare, train, and turn every way a run ends into one line."""
    from .train import PeerError, prepare
    import torch.distributed as dist
    typed = _settings(args)
    if args.resume is not None:
        run = prepare(TrainConfig(), args.resume, given=typed)
    else:
        run = prepare(TrainConfig(**typed))  # a resumed run holds its rows
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
        return _train(args)
    if args.command == "doctor":
        from .. import doctor
        def refuse(message: str) -> int:
            raise ConfigError(message)
        return doctor.run_from_args(args, refuse)
    if args.command == "probe":
        from .probe import probe_run
        torch.set_num_threads(args.threads)
        result = probe_run(args.run_dir, steps=args.steps, seed=args.seed)
        print(f"fastgame: {result.title}; wrote {result.png} and {result.csv}", flush=True)
        return 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("compare runs in one process; start each data-parallel run with torchrun ... train")
    from .compare import compare
    folder = compare(args.folder, args.optimizers, args.seeds, _settings(args), quiet=args.quiet)
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
