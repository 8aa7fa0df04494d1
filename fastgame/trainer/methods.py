"""The methods a trainer offers, by name: each one's class, the kind of stepper that drives it,
and the settings it accepts, read from the class itself.

A method's settings are the hyperparameters its class declares (``GameOptimizer.hyperparameters``)
or, for a torch optimizer, its constructor's keywords: nothing here lists them again. Whether a
combination of settings is allowed is decided by the class's own validators, which
:meth:`Method.check` runs by building the optimizer on two one-element probe parameters (a
``ValueError`` naming the setting). This module knows nothing of the trainer: a stepper maps
:attr:`Method.stepper` (a kind name) to its own classes.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

import torch
from torch import Tensor

from ..optim import DYNAMICS
from ..optim.cgd import CG_STARTS

__all__ = ["Method", "METHODS", "get_method", "names", "takers", "choices", "unsupported_setting"]


@dataclass(frozen=True)
class Method:
    """One method a trainer offers.

    Attributes:
        name: its name (``--optimizer NAME``).
        cls: the optimizer class (``torch.optim.Adam`` for the Adam baselines, one per player).
        stepper: the kind of training step that drives it: ``"cgd"`` (ACGD/BCGD on the zero-sum
            loss, may be CUDA-graphed), ``"gacgd"`` (each player's own loss), ``"dynamics"`` (a
            game dynamic stepping with a closure), ``"adam"`` / ``"adam-alt"`` (torch Adam per
            player, simultaneous or alternating).
        solver: the linear solve each step runs ("CG", "GMRES"; None: none).
        fixed: keywords the name stands for, given to ``cls`` besides the trainer's settings.
    """

    name: str
    cls: type
    stepper: str
    solver: Optional[str] = None
    fixed: Mapping[str, Any] = field(default_factory=dict)

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
        kw = {**self.fixed, **{k: v for k, v in settings.items() if v is not None}}
        unknown = sorted(set(kw) - self.settings)
        if unknown:
            raise ValueError(f"{self.name} takes no {', '.join(unknown)}")
        return kw

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


_CGD = {"acgd": ("cgd", "CG"), "bcgd": ("cgd", "CG"), "gacgd": ("gacgd", "GMRES")}
_ADAM_BETAS = (0.5, 0.999)  # the usual GAN setting (Radford et al. 2016)

METHODS: dict[str, Method] = {
    **{name: Method(name, DYNAMICS[name], kind, solver) for name, (kind, solver) in _CGD.items()},
    "adam": Method("adam", torch.optim.Adam, "adam", fixed={"betas": _ADAM_BETAS}),
    "adam-alt": Method("adam-alt", torch.optim.Adam, "adam-alt", fixed={"betas": _ADAM_BETAS}),
    **{name: Method(name, DYNAMICS[name], "dynamics") for name in sorted(DYNAMICS) if name not in _CGD},
}
"""Every method by name, in the order a trainer lists them: the CGD family, the two torch Adam
baselines, then the other game dynamics of :data:`fastgame.optim.DYNAMICS`."""

_CHOICES = {"cg_start": CG_STARTS}  # the settings whose values are names


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


def choices(key: str) -> Optional[tuple[str, ...]]:
    """The values a named setting may take (``cg_start``), None for a numeric one."""
    return _CHOICES.get(key)


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
