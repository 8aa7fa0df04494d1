"""The methods a trainer offers, by name: each one's class, the stepper class that drives it
(:mod:`fastgame.trainer.steppers`), whether it solves a linear system each step, and the settings
it accepts, read from the class itself; :func:`make_stepper` builds a method's stepper.

A method's settings are the hyperparameters its class declares (``GameOptimizer.hyperparameters``)
or, for a torch optimizer, its constructor's keywords: nothing here lists them again. Whether a
combination of settings is allowed is decided by the class's own validators, which
:meth:`Method.check` runs by building the optimizer on two one-element probe parameters (a
``ValueError`` naming the setting).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

import torch
from torch import Tensor, nn

from ..optim import DYNAMICS
from .batches import Batch
from .steppers import (AlternatingAdamStepper, CGDStepper, DynamicsStepper, GACGDStepper, GameLosses,
                       SimultaneousAdamStepper)

__all__ = ["Method", "METHODS", "ADAM_BETAS", "get_method", "names", "takers", "unsupported_setting",
           "refuse_unsupported", "make_stepper", "describe_run"]


@dataclass(frozen=True)
class Method:
    """One method a trainer offers.

    Attributes:
        name: its name (``--optimizer NAME``).
        cls: the optimizer class (``torch.optim.Adam`` for the Adam baselines, one per player).
        stepper: the stepper class that drives it (:mod:`fastgame.trainer.steppers`): ``CGDStepper``
            (ACGD/BCGD on the zero-sum loss, may be CUDA-graphed), ``GACGDStepper`` (each player's
            own loss), ``DynamicsStepper`` (a game dynamic stepping with a closure), or torch Adam
            per player, ``SimultaneousAdamStepper`` / ``AlternatingAdamStepper``.
        solver: the linear solve each step runs ("CG", "GMRES"; None: none, see :attr:`solves`).
        fixed: keywords the name stands for, given to ``cls`` besides the trainer's settings.
    """

    name: str
    cls: type
    stepper: type
    solver: Optional[str] = None
    fixed: Mapping[str, Any] = field(default_factory=dict)

    @property
    def solves(self) -> bool:
        """Whether each step solves a linear system (CG or GMRES: iterations and mixed-HVP passes to report)."""
        return self.solver is not None

    @property
    def settings(self) -> frozenset[str]:
        """The settings ``cls`` accepts: its declared hyperparameters (a game optimizer's) or
        its constructor's keywords (a torch optimizer's)."""
        if not self.per_player:
            return frozenset(self.cls.hyperparameters)
        return frozenset(p for p in inspect.signature(self.cls).parameters if p != "params")

    def takes(self, key: str) -> bool:
        """Whether ``cls`` accepts the setting ``key``."""
        return key in self.settings

    @property
    def lr_names(self) -> tuple[str, str]:
        """The constructor's keywords of the two players' learning rates (x's, y's), e.g.
        ``("lr_max", "lr_min")``; a torch optimizer has one ``lr`` per instance."""
        found = tuple(p for p in inspect.signature(self.cls).parameters if p.startswith("lr_"))
        return found if len(found) == 2 else ("lr", "lr")  # type: ignore[return-value]

    def _keywords(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor's keywords for ``settings`` (None: the class's own), with :attr:`fixed`."""
        given = {k: v for k, v in settings.items() if v is not None}
        unknown = sorted(set(given) - self.settings)
        if unknown:
            raise ValueError(f"{self.name} takes no {', '.join(unknown)}")
        return {**self.fixed, **given}

    def build(self, x_params: Iterable[Tensor], y_params: Iterable[Tensor], lr_x: float, lr_y: float,
              **settings: Any) -> Any:
        """The game optimizer for players x (first, e.g. the discriminator) and y, with the
        settings given (None: the class's own); its validators refuse a bad value or
        combination with ``ValueError``. (A torch optimizer is one per player: :meth:`build_one`.)"""
        lx, ly = self.lr_names
        return self.cls(x_params, y_params, **{lx: lr_x, ly: lr_y}, **self._keywords(settings))

    def build_one(self, params: Iterable[Tensor], lr: float, **settings: Any) -> Any:
        """A torch optimizer (one player's) with the settings given."""
        return self.cls(params, lr=lr, **self._keywords(settings))

    @property
    def per_player(self) -> bool:
        """Whether ``cls`` is a torch optimizer, one instance per player (no game optimizer)."""
        return getattr(self.cls, "hyperparameters", None) is None

    def check(self, **settings: Any) -> None:
        """Raise the class's ``ValueError`` if it refuses these settings (None: the class's
        own), by building it on one-element probe parameters."""
        x, y = (torch.zeros(1, requires_grad=True) for _ in range(2))
        if self.per_player:
            self.build_one([x], 1e-3, **settings)
        else:
            self.build([x], [y], 1e-3, 1e-3, **settings)


_SOLVING = {"acgd": (CGDStepper, "CG"), "bcgd": (CGDStepper, "CG"), "gacgd": (GACGDStepper, "GMRES")}
# BCGD collects CGDs' info norms by default (as CGDs does), which costs one more mixed pass a
# step; the trainer reads none of them.
_FIXED = {"bcgd": {"collect_info": False}}
ADAM_BETAS = (0.5, 0.999)
"""The Adam baselines' betas unless --betas: the usual GAN setting (Radford, Metz & Chintala,
"Unsupervised representation learning with deep convolutional GANs", ICLR 2016)."""

METHODS: dict[str, Method] = {
    **{name: Method(name, DYNAMICS[name], stepper, solver, fixed=_FIXED.get(name, {}))
       for name, (stepper, solver) in _SOLVING.items()},
    "adam": Method("adam", torch.optim.Adam, SimultaneousAdamStepper, fixed={"betas": ADAM_BETAS}),
    "adam-alt": Method("adam-alt", torch.optim.Adam, AlternatingAdamStepper, fixed={"betas": ADAM_BETAS}),
    **{name: Method(name, DYNAMICS[name], DynamicsStepper) for name in sorted(DYNAMICS) if name not in _SOLVING},
}
"""Every method by name, in the order a trainer lists them: the CGD family, the two torch Adam
baselines, then the other game dynamics of :data:`fastgame.optim.DYNAMICS`."""


def get_method(name: str) -> Method:
    """The method called ``name``; ``ValueError`` naming the choices if there is none."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(METHODS)}") from None


def names() -> tuple[str, ...]:
    """The methods' names, in order."""
    return tuple(METHODS)


def takers(key: str) -> tuple[Method, ...]:
    """The methods that accept the setting ``key``, in order."""
    return tuple(m for m in METHODS.values() if m.takes(key))


def unsupported_setting(name: str, key: str) -> Optional[str]:
    """None where method ``name`` takes the setting ``key``, else the end of a message saying why
    not, e.g. "sets the CG solve of acgd and bcgd, not adam" (the caller names the setting)."""
    if get_method(name).takes(key):
        return None
    found = takers(key)
    listed = [m.name for m in found]
    what = "/".join(dict.fromkeys(m.solver for m in found if m.solver))
    listing = f"{', '.join(listed[:-1])} and {listed[-1]}" if len(listed) > 1 else "".join(listed)
    return f"sets the {what + ' solve' if what else 'setting'} of {listing or 'no optimizer'}, not {name}"


def refuse_unsupported(name: str, settings: Iterable[str], label: Any = str) -> None:
    """``ValueError`` "<label(key)> sets the ... of ..., not <name>" for the first setting of
    ``settings`` that method ``name`` does not take (``label``: how the caller names a setting)."""
    for key in settings:
        why = unsupported_setting(name, key)
        if why:
            raise ValueError(f"{label(key)} {why}")


def make_stepper(name: str, G: nn.Module, D: nn.Module, losses: GameLosses, lr_d: float, lr_g: float,
                 graphed: bool = False, example: Optional[Batch] = None, eager: bool = False, d_steps: int = 1,
                 **settings: Any) -> Any:
    """The stepper of method ``name`` (one of :data:`METHODS`), D the max player (x), G the min
    player (y). ``settings`` go to the optimizer under their own names, None meaning the
    optimizer's own, e.g. ``tol``, ``max_iter`` (ACGD, BCGD and GACGD: bound each CG/GMRES
    solve) or ``cg_start`` (ACGD and BCGD: how each CG solve starts). A setting the optimizer
    does not take raises ValueError rather than being ignored, and so does one its validators
    refuse. ``graphed``: CUDA-graph whole steps (a graphable stepper; needs ``max_iter``);
    ``example``: a :class:`~fastgame.trainer.batches.Batch` of the step's shapes, on its device
    (:meth:`CGDStepper.create` says how ACGD/BCGD use it and ``eager``). ``d_steps``: critic
    steps per generator step (a stepper with ``critic_steps``)."""
    method = get_method(name)
    settings = {k: v for k, v in settings.items() if v is not None}
    refuse_unsupported(name, settings)
    if graphed and not method.stepper.graphable:
        raise ValueError(f"--graphed needs {' or '.join(m.name for m in METHODS.values() if m.stepper.graphable)}, "
                         f"not {name}")
    if d_steps > 1 and not method.stepper.critic_steps:
        raise ValueError(f"d_steps {d_steps} is for "
                         f"{', '.join(m.name for m in METHODS.values() if m.stepper.critic_steps)}, not {name}")
    return method.stepper.create(method, G, D, losses, lr_d, lr_g, settings, example=example, graphed=graphed,
                                 eager=eager, d_steps=d_steps)


_SHOWN = {"acgd": "ACGD", "bcgd": "BCGD", "gacgd": "GACGD", "adam": "Adam (simultaneous)", "adam-alt": "Adam (alternating)"}
_PENALTY_SHOWN = {"wgan_gp": "WGAN-GP", "r1": "R1", "r2": "R2", "relu_gp": "ReLU-GP"}


def describe_run(cfg: Mapping[str, Any]) -> str:
    """A run's method as tables and summaries name it, from its configuration (``config.json``'s
    keys): the method, then its explicit regularization with everything that differs from plain
    play, e.g. "Adam + WGAN-GP (λ 10, 5 critic steps, betas 0.5, 0.9)" (critic steps imply
    alternating play, so "(alternating)" is not repeated) or "ACGD"."""
    name = _SHOWN.get(cfg["optimizer"], cfg["optimizer"])
    d_steps = cfg.get("d_steps", 1)
    extra = [f"{d_steps} critic steps"] if d_steps != 1 else []
    if d_steps != 1:
        name = name.replace(" (alternating)", "")
    if cfg.get("betas"):
        extra.append("betas {:g}, {:g}".format(*cfg["betas"]))
    penalty = cfg.get("penalty", "none")
    if penalty != "none":
        extra.insert(0, f"λ {cfg['penalty_weight']:g}")
        name += f" + {_PENALTY_SHOWN.get(penalty, penalty)}"
    return name + (f" ({', '.join(extra)})" if extra else "")
