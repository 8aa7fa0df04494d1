"""One training step of a GAN for each optimizer ``fastgame train`` offers.

The CGD family (ACGD, BCGD) steps on the zero-sum loss, GACGD on both players' own losses;
the baselines are Adam, simultaneous (both players' gradients at the same point) or
alternating (the discriminator first, then the generator against the updated
discriminator), each player with its own learning rate (two-timescale rates).

Every stepper has ``step(real, z, t) -> (loss_d, loss_g, cg_iterations, hvp_passes)``, without a
host sync: the losses are tensors on the models' device, the counts host numbers where the
optimizer counts on the host (eager steps) and tensors where it counts on the device (a graphed
step's), ``state_dict()`` and ``load_state_dict()``. ``hvp_passes`` is the number of mixed
double-backward (Hessian-vector product) passes the step took, as the optimizer counts them in
``get_info()["hvp_passes"]`` (a batched pass counts once; 0 for Adam and for dynamics without
HVPs); ``cg_iterations`` is the solver's iteration count. Under ``torch.distributed`` the
fastgame optimizers average gradients and Hessian-vector products across ranks
themselves; the Adam baselines average their gradients here.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

import fastgame
from . import losses as L
from .linalg.distributed import all_reduce_mean, is_data_parallel
from .linalg.flat import flatten, split_like
from .optim import DYNAMICS

__all__ = ["OPTIMIZERS", "SOLVER_SETTINGS", "GameLosses", "make_stepper", "unsupported_setting"]

_CGD_FAMILY = ("acgd", "bcgd", "gacgd")
OPTIMIZERS = (*_CGD_FAMILY, "adam", "adam-alt", *sorted(n for n in DYNAMICS if n not in _CGD_FAMILY))
"""Optimizer names: the CGD family, the two torch Adam baselines (betas 0.5, 0.999), and the
other game dynamics of :data:`fastgame.optim.DYNAMICS` (extragradient, OGDA, consensus, …)."""

ADAM_BETAS = (0.5, 0.999)  # the usual GAN setting (Radford et al. 2016)

SOLVER_SETTINGS = {"tol": _CGD_FAMILY, "max_iter": _CGD_FAMILY, "cg_start": ("acgd", "bcgd")}
"""The solver settings and the optimizers that take them (the others have no CG/GMRES solve)."""


def unsupported_setting(optimizer: str, key: str) -> Optional[str]:
    """None where ``optimizer`` takes the solver setting ``key`` (one of :data:`SOLVER_SETTINGS`),
    else the end of a message saying why not (the caller names the setting its own way)."""
    takers = SOLVER_SETTINGS[key]
    if optimizer in takers:
        return None
    solve = "CG solve" if len(takers) == 2 else "CG/GMRES solve"
    return f"sets the {solve} of {', '.join(takers[:-1])} and {takers[-1]}, not {optimizer}"


def _wide(t: Tensor) -> Tensor:
    """Losses in at least float32 (bf16/fp16 outputs under autocast), float64 kept float64."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class GameLosses:
    """``losses(real, z, t) -> (loss_d, loss_g, zero_sum)`` for generator G, discriminator D,
    a loss of :data:`fastgame.losses.LOSSES` and an optional gradient penalty.

    ``loss_d`` is what D minimises (penalty added), ``loss_g`` what G minimises and
    ``zero_sum`` the loss D maximises and G minimises (penalty subtracted). ``t`` are the
    penalty's interpolation weights, drawn by the caller so that every rank and every
    resumed run uses the same ones.
    """

    def __init__(self, G: nn.Module, D: nn.Module, loss: str, penalty: Optional[str], weight: float,
                 autocast: Optional[torch.autocast] = None) -> None:
        self.G, self.D, self.loss = G, D, L.get_loss(loss)
        self.penalty, self.weight, self.autocast = penalty, weight, autocast

    def _autocast(self) -> Any:
        return self.autocast if self.autocast is not None else torch.autocast("cpu", enabled=False)

    def __call__(self, real: Tensor, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with self._autocast():
            fake = self.G(z)
            out = self.loss(_wide(self.D(real)), _wide(self.D(fake)))
            if self.penalty is None:
                return out.discriminator, out.generator, out.zero_sum
            pen = _wide(L.gradient_penalty(self.penalty, self.D, real, fake.to(real.dtype), self.weight, t=t))
        return out.discriminator + pen, out.generator, out.zero_sum - pen

    def generator_loss(self, real: Tensor, z: Tensor) -> Tensor:
        """``loss_g`` alone: the penalty is D's, so the generator's re-evaluation after D moved
        (alternating play) skips its double-backward graph."""
        with self._autocast():
            return self.loss(_wide(self.D(real)), _wide(self.D(self.G(z)))).generator


class _Stepper:
    """A stepper around one fastgame optimizer ``opt``, whose state is the optimizer's."""

    opt: Any

    def state_dict(self) -> dict[str, Any]:
        return self.opt.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.opt.load_state_dict(sd)


class _CGDStepper(_Stepper):
    """ACGD or BCGD on the zero-sum loss; D is the max player."""

    def __init__(self, opt: Any, losses: GameLosses, graphed: bool, example: tuple[Tensor, ...]) -> None:
        self.opt, self.losses = opt, losses
        self._last: tuple[Tensor, Tensor] = (torch.zeros(()), torch.zeros(()))

        def zero_sum(real: Tensor, z: Tensor, t: Tensor) -> Tensor:
            d, g, zs = losses(real, z, t)
            self._last = (d.detach(), g.detach())
            return zs

        self._zero_sum = zero_sum
        # make_graphed_step warns and steps eagerly where CUDA graphs are not possible.
        self._graphed = fastgame.make_graphed_step(opt, zero_sum, *[e.clone() for e in example]) if graphed else None

    def step(self, real: Tensor, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Any, Any]:
        if self._graphed is not None:
            zs = self._graphed(real, z, t)
            # Inside a replayed graph the Python side does not run: report the zero-sum loss for both.
            d, g = (-zs.detach(), zs.detach()) if self._graphed.graphs else self._last
        else:  # a closure: on CUDA its CG iterations can then be graph-replayed (graph_cg)
            self.opt.step(lambda: self._zero_sum(real, z, t))
            d, g = self._last
        return (d, g) + _counts(self.opt)


def _counts(opt: Any) -> tuple[Any, Any]:
    """(solver iterations, mixed-HVP passes) of ``opt``'s last step, from its ``get_info()``: host
    numbers stay on the host (wrapping them in tensors for the device would cost a blocking copy
    each step) and device counts (a graphed step's) on the device, unread."""
    info = opt.get_info()
    return info.get("iter_num", 0), info.get("hvp_passes", 0)


class _GACGDStepper(_Stepper):
    """GACGD: D (x) minimises its own loss, G (y) its own."""

    def __init__(self, opt: Any, losses: GameLosses) -> None:
        self.opt, self.losses = opt, losses

    def step(self, real: Tensor, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Any, Any]:
        d, g, _ = self.losses(real, z, t)
        self.opt.step(d, g)
        return (d.detach(), g.detach()) + _counts(self.opt)


class _DynamicsStepper(_Stepper):
    """One of the other game dynamics on the zero-sum loss, D the max player. It steps with a
    closure, since extragradient, alternating and proximal methods evaluate the loss again."""

    def __init__(self, opt: Any, losses: GameLosses) -> None:
        self.opt, self.losses = opt, losses

    def step(self, real: Tensor, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Any, Any]:
        first: list[tuple[Tensor, Tensor]] = []

        def zero_sum() -> Tensor:
            d, g, zs = self.losses(real, z, t)
            first.append((d.detach(), g.detach()))
            return zs
        self.opt.step(zero_sum)
        d, g = first[0]  # the losses at the step's starting point
        return (d, g) + _counts(self.opt)


def _set_grads(params: list[Tensor], loss: Tensor) -> None:
    """``p.grad`` of ``loss`` for each parameter, averaged across data-parallel ranks in one
    collective (a flat buffer, not one all-reduce per parameter)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True, materialize_grads=True)
    if is_data_parallel():
        grads = split_like(all_reduce_mean(flatten(grads)), params)
    for p, g in zip(params, grads):
        p.grad = g


class _AdamStepper:
    """Adam for each player with its own rate, simultaneous or alternating."""

    def __init__(self, G: nn.Module, D: nn.Module, losses: GameLosses, lr_d: float, lr_g: float,
                 alternating: bool) -> None:
        self.d_params, self.g_params = list(D.parameters()), list(G.parameters())
        self.opt_d = torch.optim.Adam(self.d_params, lr=lr_d, betas=ADAM_BETAS)
        self.opt_g = torch.optim.Adam(self.g_params, lr=lr_g, betas=ADAM_BETAS)
        self.losses, self.alternating = losses, alternating

    def step(self, real: Tensor, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Any, Any]:
        d, g, _ = self.losses(real, z, t)
        _set_grads(self.d_params, d)
        if self.alternating:
            self.opt_d.step()
            g = self.losses.generator_loss(real, z)  # G answers the updated D on the same batch
        _set_grads(self.g_params, g)
        if not self.alternating:
            self.opt_d.step()
        self.opt_g.step()
        for p in self.d_params + self.g_params:
            p.grad = None
        return d.detach(), g.detach(), 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"d": self.opt_d.state_dict(), "g": self.opt_g.state_dict()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if set(sd) != {"d", "g"}:
            raise ValueError("not the state of the Adam baseline")
        self.opt_d.load_state_dict(sd["d"])
        self.opt_g.load_state_dict(sd["g"])


def make_stepper(name: str, G: nn.Module, D: nn.Module, losses: GameLosses, lr_d: float, lr_g: float,
                 tol: Optional[float] = None, max_iter: Optional[int] = None, graphed: bool = False,
                 example: tuple[Tensor, ...] = (), cg_start: Optional[str] = None) -> Any:
    """The stepper for optimizer ``name`` (one of :data:`OPTIMIZERS`). ``tol`` and ``max_iter``
    (ACGD, BCGD and GACGD only; None: the optimizer's own) bound each CG/GMRES solve, ``cg_start``
    (ACGD and BCGD only; None: the optimizer's own, "zero") is how each CG solve starts.
    ``fastgame train`` checks these in :func:`fastgame.train.resolve` first; here a
    setting an optimizer does not take raises ValueError rather than being ignored."""
    for key, value in (("tol", tol), ("max_iter", max_iter), ("cg_start", cg_start)):
        why = unsupported_setting(name, key) if name in OPTIMIZERS and value is not None else None
        if why:
            raise ValueError(f"{key} {why}")
    kw: dict[str, Any] = {"max_iter": max_iter}
    if tol is not None:
        kw["tol"] = tol
    if name in ("acgd", "bcgd"):
        cls: Callable[..., Any] = fastgame.ACGD if name == "acgd" else fastgame.BCGD
        if graphed:
            kw["capturable"] = True
        if cg_start is not None:
            kw["cg_start"] = cg_start
        opt = cls(max_params=D.parameters(), min_params=G.parameters(), lr_max=lr_d, lr_min=lr_g, **kw)
        return _CGDStepper(opt, losses, graphed, example)
    if graphed:
        raise ValueError(f"--graphed needs acgd or bcgd, not {name}")
    if name == "gacgd":
        return _GACGDStepper(fastgame.GACGD(D.parameters(), G.parameters(), lr_x=lr_d, lr_y=lr_g, **kw), losses)
    if name in ("adam", "adam-alt"):
        return _AdamStepper(G, D, losses, lr_d, lr_g, alternating=name == "adam-alt")
    if name in DYNAMICS:
        return _DynamicsStepper(DYNAMICS[name](D.parameters(), G.parameters(), lr_max=lr_d, lr_min=lr_g), losses)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
