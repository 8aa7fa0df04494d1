"""Every trainer option, declared once: one :class:`Option` record per setting of a run.

From these records come the ``fastgame train``/``compare`` flags (:mod:`.cli`), the fields of
:class:`~fastgame.trainer.config.TrainConfig` and their defaults, what a resume may change, the
per-optimizer ``NAME:key=value`` settings of ``compare`` (:func:`parse_setting`) and the value
checks of :func:`~fastgame.trainer.config.resolve`. Adding an option is its record here and the
code where it acts; its combinations with other options are checked in :mod:`.config`.

A record's ``check`` returns the problem with a value (``"must be > 0, got 0"``), or None; each
caller names the setting its own way (``--steps``, ``argument --steps``, ``'acgd:tol=0': tol``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from .. import losses as L
from ..optim.cgd import CG_STARTS
from . import methods
from .data import ON_DISK
from .models import GAN_MODELS

__all__ = ["Option", "OPTIONS", "GROUPS", "option", "parse_setting", "MODELS", "PENALTIES", "TRAINER_TOL",
           "CPU_THREADS", "CONV_THREADS"]

MODELS = ("auto",) + GAN_MODELS
PENALTIES = ("none",) + tuple(L.PENALTIES)
GROUPS = ("data and model", "game and optimizer", "run")

TRAINER_TOL = 1e-6
"""The CG/GMRES tolerance the trainer gives ACGD, BCGD and GACGD unless --tol says otherwise: the
README's study ("Solve tolerance and training quality", docs/benchmarks.md) found it
quality-neutral with ~30% fewer mixed-HVP passes. The optimizer classes keep CGDs' defaults."""

CPU_THREADS = 1
"""The torch CPU threads of the small models (the MLP, the 8-px DCGAN) unless --threads says
otherwise: on a 2-core VM two threads gained nothing for them (300 ACGD steps of the width-64 MLP:
1.84 s vs 1.87 s; the 8-px digits DCGAN 1.95 vs 1.77 s), and on a busy machine torch's default
made them 8.5x slower (``fastgame train --data ring8 --steps 200`` at width 256: 7 min 58 s
against 56 s with one thread)."""

CONV_THREADS = 2
"""The CPU threads (at most the cores available) of the DCGANs at 16 and 32 px: on the same VM two
threads were faster (60 ACGD steps of the 16-px digits: 6.2 vs 7.9 s; 30 steps at 32 px: 14.5-15.4
vs 20.8-25.4 s; the WGAN-GP DCGAN 2.5 vs 4.9 s for 3 steps), with one other job running."""

_NEW = object()  # an option that runs have had since their first version


# ---- parsing one command-line word, and the checks of a value -------------------------------------
def _number(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise ValueError(f"must be a number, got {s!r}") from None


def _whole(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise ValueError(f"must be a whole number, got {s!r}") from None


def _on_off(s: str) -> bool:
    if s not in ("on", "off"):
        raise ValueError(f"must be on or off, got {s!r}")
    return s == "on"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive(v: Any) -> Optional[str]:
    return None if _is_number(v) and v > 0 else f"must be > 0, got {v!r}"


def _count(v: Any) -> Optional[str]:
    """A whole number >= 1."""
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else f"must be a whole number >= 1, got {v!r}"


def _any_whole(v: Any) -> Optional[str]:
    return None if isinstance(v, int) and not isinstance(v, bool) else f"must be a whole number, got {v!r}"


def _not_negative(v: Any) -> Optional[str]:
    return None if _is_number(v) and v >= 0 else f"must be >= 0, got {v!r}"


def _betas(v: Any) -> Optional[str]:
    ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v)
    return None if ok else f"must be two numbers in [0, 1), got {v!r}"


def _any(v: Any) -> Optional[str]:
    return None


@dataclass(frozen=True)
class Option:
    """One setting of a training run.

    Attributes:
        name: the :class:`~fastgame.trainer.config.TrainConfig` field; its flag is ``--name-with-dashes``.
        hint: the field's type (what ``config.json`` must hold).
        default: the value when it is not given (None where :func:`~fastgame.trainer.config.resolve`
            fills it from the data or the method).
        help: the ``--help`` text ("Default: ..." is added for a default that is not None).
        group: which of :data:`GROUPS` lists it in ``--help`` (None: a flag of ``train`` alone).
        parse: one command-line word to a value (``ValueError`` saying what is wrong).
        check: the problem with a value, or None (None values are not checked: "not given").
        choices: the values it may take (a function: read when asked, from the tables that own them).
        nargs, metavar: as argparse's.
        switch: a flag without a value (``store_true``).
        resumable: whether ``train --resume`` may change it (the run continues with the same numbers).
        identity: whether it is part of what the run is (False: where the run is written).
        to_optimizer: whether it is given to the optimizer under its own name (the optimizer's
            validators then check its value, and a method without it refuses it).
        per_method: whether ``compare`` takes it per optimizer (``NAME:key=value``).
        added_later: for an option runs were saved without, the value those runs used.
    """

    name: str
    hint: Any
    default: Any
    help: str
    group: Optional[str]
    parse: Callable[[str], Any] = str
    check: Callable[[Any], Optional[str]] = _any
    choices: Optional[Callable[[], Sequence[Any]]] = None
    nargs: Optional[int] = None
    metavar: Any = None
    switch: bool = False
    resumable: bool = False
    identity: bool = True
    to_optimizer: bool = False
    per_method: bool = False
    added_later: Any = _NEW

    @property
    def added_later_to_runs(self) -> bool:
        """Whether run folders exist without this option (they ran with :attr:`added_later`)."""
        return self.added_later is not _NEW

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def problem(self, value: Any) -> Optional[str]:
        """What is wrong with ``value`` (None: nothing, or not given)."""
        if value is None:
            return None
        if self.choices is not None:
            allowed = tuple(self.choices())
            return None if value in allowed else f"must be one of {', '.join(map(str, allowed))}, got {value!r}"
        return self.check(value)

    @property
    def full_help(self) -> str:
        if self.default is None or self.switch or "Default:" in self.help:
            return self.help
        shown = f"{self.default:g}" if isinstance(self.default, float) else self.default
        return f"{self.help}. Default: {shown}"


def _fixed(*values: Any) -> Callable[[], tuple[Any, ...]]:
    return lambda: values


OPTIONS: tuple[Option, ...] = (
    Option("data", str, "ring8", "ring8 (8 Gaussians on a ring), grid25 (25 on a grid), digits (scikit-learn's "
           f"1,797 8x8 digits), {' / '.join(k + ':ROOT' for k in ON_DISK)} (the files torchvision keeps under ROOT "
           "once downloaded), or a path: a .npy/.pt tensor file ((N,2) points or (N,[C,]H,W) images) or a folder "
           "of images. Nothing is downloaded", "data and model", metavar="SOURCE"),
    Option("out", Optional[str], None, "the run folder to create (must not exist or be empty). Default: "
           "fastgame-runs/<data>-<optimizer>-seed<seed>", None, metavar="RUN_DIR", identity=False),
    Option("optimizer", str, "acgd", "", None, choices=methods.names, metavar="NAME"),
    Option("steps", int, 2000, "training steps (generator steps with --d-steps)", "run", _whole, _count,
           resumable=True),
    Option("batch", int, 256, "batch size (all processes together)", "run", _whole, _count),
    Option("seed", int, 0, "seed of the models, data order and noise", "run", _whole, _any_whole),
    Option("loss", Optional[str], None, "GAN loss (fastgame.losses). Default: standard (the minimax GAN, "
           "zero-sum) for points, non_saturating for images (the minimax loss trained no MNIST images with "
           "either optimizer; ACGD/BCGD step on the zero-sum form of any loss). wgan: the Wasserstein loss, "
           "unregularized unless --penalty", "game and optimizer", choices=lambda: tuple(L.LOSSES)),
    Option("penalty", str, "none", "gradient penalty on the discriminator", "game and optimizer",
           choices=_fixed(*PENALTIES), per_method=True),
    Option("penalty_weight", float, 10.0, "its weight (gamma or lambda)", "game and optimizer", _number,
           _not_negative, per_method=True),
    Option("d_steps", int, 1, "discriminator (critic) steps per generator step, adam-alt only (WGAN-GP's "
           "recipe: 5). --steps counts generator steps", "game and optimizer", _whole, _count, per_method=True,
           added_later=1),
    Option("discriminators", int, 1, "one generator against K discriminators, each seeing the same real and "
           "generated batches (Durugkar, Gemp & Mahadevan, ICLR 2017); each discriminator minimises its own loss, "
           "the generator the mean of its losses against them. K > 1 needs pcgd or apcgd (n = K + 1 players) or "
           "adam (one Adam per player, simultaneous)", "game and optimizer", _whole, _count, metavar="K",
           added_later=1),
    Option("d_batchnorm", Optional[bool], None, "BatchNorm in the DCGAN discriminator. Default: on without a "
           "penalty, off with one (a gradient penalty needs each sample's output to depend on that sample only; on "
           "with a penalty is refused). Give it to compare a penalty with none on the same discriminator; the "
           "run's config.json records the choice", "data and model", _on_off, metavar="on|off", added_later=None),
    Option("lr_d", Optional[float], None, "discriminator learning rate (mlp 1e-3, conv models 2e-4)",
           "game and optimizer", _number, _positive, per_method=True),
    Option("lr_g", Optional[float], None, "generator learning rate (same defaults)", "game and optimizer",
           _number, _positive, per_method=True),
    Option("model", str, "auto", "mlp for points, dcgan for 8/16/32-px images, wgan_gp_dcgan for 32-px images "
           "(minutes a step on a CPU). Default: auto (mlp for points, dcgan for images)", "data and model",
           choices=_fixed(*MODELS)),
    Option("width", Optional[int], None, "hidden width (mlp, default 64) or base channels (dcgan 16, "
           "wgan_gp_dcgan 64)", "data and model", _whole, _count),
    Option("latent", Optional[int], None, "latent size (mlp 2, dcgan 32, wgan_gp 128)", "data and model",
           _whole, _count),
    Option("image_size", Optional[int], None, "resize images to this size (bilinear). Default: the data's own "
           "size (32 for folders)", "data and model", _whole, choices=_fixed(8, 16, 32)),
    Option("tol", Optional[float], None, f"CG/GMRES tolerance of ACGD/BCGD/GACGD. Default: {TRAINER_TOL:g}, "
           "which the README's study found quality-neutral with ~30%% fewer passes (the optimizer classes keep "
           "CGDs' 1e-12 for drop-in parity); recorded in config.json", "game and optimizer", _number, _positive,
           to_optimizer=True, per_method=True),
    Option("max_iter", Optional[int], None, "at most this many CG/GMRES iterations per step (what the "
           "optimizer's max_iter accepts: ACGD and BCGD refuse 0, GACGD takes it). Default: the optimizer's own",
           "game and optimizer", _whole, _any_whole, to_optimizer=True, per_method=True),
    Option("cg_start", Optional[str], None, "how ACGD/BCGD start each CG solve: warm (from the previous step's "
           "solution, as CGDs), zero (one mixed-HVP pass fewer) or recycle (zero start deflated by Ritz "
           "vectors). Default: the optimizer's own (zero)", "game and optimizer", choices=_fixed(*CG_STARTS),
           to_optimizer=True, per_method=True),
    Option("betas", Optional[list[float]], None, "Adam's betas (adam, adam-alt and the Adam dynamics). Default: "
           "0.5 0.999 for adam and adam-alt (Radford et al. 2016); WGAN-GP's recipe is 0.5 0.9",
           "game and optimizer", _number, _betas, nargs=2, metavar=("B1", "B2"), to_optimizer=True,
           per_method=True, added_later=None),
    Option("eps", Optional[float], None, "the optimizer's epsilon: ACGD's (added to sqrt(v); the ICR paper's runs: "
           "1e-8) or Adam's. Default: the optimizer's own (ACGD 1e-5, Adam 1e-8)", "game and optimizer", _number,
           _positive, to_optimizer=True, per_method=True, added_later=None),
    Option("device", str, "auto", "auto = cuda when available", "run", choices=_fixed("auto", "cpu", "cuda")),
    Option("dtype", str, "float32", "the models' floating-point type", "run", choices=_fixed("float32", "float64")),
    Option("bf16", bool, False, "bfloat16 autocast for the forward passes", "run", switch=True),
    Option("batchnorm", str, "fastgame", "the image models' BatchNorm layers: fastgame.nn.BatchNorm (the same "
           "function with a cheaper double backward: an ACGD step's floor 18-39%% lower on an H200) or torch's own",
           "run", choices=_fixed("fastgame", "native"), added_later="native"),
    Option("graphed", bool, False, "CUDA-graph whole ACGD/BCGD steps with exactly --max-iter masked CG "
           "iterations (CUDA only, needs --max-iter; warns and runs eagerly elsewhere). Without it, ACGD/BCGD on "
           "CUDA replay piecewise graphs with the CG iterations each step needs (same numbers as eager)", "run",
           switch=True),
    Option("eager", bool, False, "ACGD/BCGD on CUDA: step eagerly instead of replaying the default piecewise "
           "CUDA graphs (CPU runs are always eager)", "run", switch=True),
    Option("eval_every", Optional[int], None, "steps between evaluations (metrics, pictures). Default: steps/20",
           "run", _whole, _count),
    Option("eval_samples", Optional[int], None, "generated samples per evaluation. Default: 2500 points or 1000 "
           "images", "run", _whole, _count),
    Option("checkpoint_every", Optional[int], None, "steps between checkpoints. Default: steps/5", "run", _whole,
           _count),
    Option("threads", Optional[int], None, "torch CPU threads; may be given with --resume. Default on the CPU, by "
           f"measurement: {CPU_THREADS} for the MLP and 8-px images (torch's default was 8.5x slower on a busy "
           f"2-core machine), {CONV_THREADS} (at most the cores) for the DCGANs at 16/32 px; torch's own on CUDA; "
           "recorded in config.json", "run", _whole, _count, resumable=True),
)
"""Every option, in the order of :class:`~fastgame.trainer.config.TrainConfig`'s fields (and of
``config.json``)."""

_BY_NAME = {o.name: o for o in OPTIONS}


def option(name: str) -> Option:
    """The option called ``name`` (a TrainConfig field name)."""
    return _BY_NAME[name]


def parse_setting(name: str, text: str) -> Any:
    """A per-method setting of ``compare`` (``key=value``) from its text, checked alone (the
    combinations are :func:`~fastgame.trainer.config.resolve`'s); a value of several words is
    comma-separated (``betas=0.5,0.9``). ``ValueError`` with the problem, not naming the setting."""
    opt = _BY_NAME[name]
    words = text.split(",") if opt.nargs else [text]
    if opt.nargs and len(words) != opt.nargs:
        raise ValueError(f"must be {opt.nargs} comma-separated values, got {text!r}")
    values = [opt.parse(w) for w in words]
    value = values if opt.nargs else values[0]
    problem = opt.problem(value)
    if problem:
        raise ValueError(problem)
    return value
