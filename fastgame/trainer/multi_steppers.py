"""The training step of a GAN with one generator against K discriminators (``--discriminators K``).

Every discriminator sees the same real batch and the same generated batch; discriminator k
minimises its own loss, the generator the mean of its losses against each discriminator
(:func:`fastgame.losses.multi_discriminator`; "Generative Multi-Adversarial Networks", Durugkar,
Gemp & Mahadevan, ICLR 2017, with the arithmetic mean as the combination). Two steppers:

* PCGD/APCGD (:class:`fastgame.PCGD`): the generator and each discriminator a player (n = K + 1),
  each on its own loss;
* simultaneous Adam, the baseline: each discriminator its own ``torch.optim.Adam`` on its own loss,
  the generator its own on the combined loss, all gradients at the same point.

The steppers have the interface of :mod:`fastgame.trainer.steppers` (``create``, ``step(batches) ->
(loss_d, loss_g, solver iterations, hvp_passes)``, ``state_dict()`` / ``load_state_dict()``), where
``loss_d`` is the mean of the discriminators' losses; the method table
(:mod:`fastgame.trainer.methods`) names them as a method's stepper against K > 1 discriminators.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import losses as L
from .batches import Batch
from .steppers import _counts, _set_grads, _wide

__all__ = ["MultiGameLosses", "PolymatrixStepper", "MultiAdamStepper", "discriminator_list"]


def discriminator_list(D: nn.Module) -> list[nn.Module]:
    """The discriminators of ``D``: an ``nn.ModuleList`` of K, or one module."""
    return list(D) if isinstance(D, nn.ModuleList) else [D]


class MultiGameLosses:
    """``losses(real, z, t) -> MultiGANLoss`` for generator G against the discriminators of ``D``
    (:func:`discriminator_list`) with a loss of :data:`fastgame.losses.LOSSES` and an optional gradient penalty, added to each
    discriminator's loss on its own outputs. ``t``: the penalty's interpolation weights (the same
    for every discriminator), drawn by the caller as for :class:`~fastgame.trainer.steppers.GameLosses`."""

    def __init__(self, G: nn.Module, D: nn.Module, loss: str, penalty: Optional[str], weight: float,
                 autocast: Optional[torch.autocast] = None) -> None:
        self.G, self.Ds, self.loss = G, discriminator_list(D), L.get_loss(loss)
        self.penalty, self.weight, self.autocast = penalty, weight, autocast

    def __call__(self, real: Tensor, z: Tensor, t: Tensor) -> L.MultiGANLoss:
        with self.autocast if self.autocast is not None else torch.autocast("cpu", enabled=False):
            fake = self.G(z)
            out = L.multi_discriminator(self.loss, [_wide(D(real)) for D in self.Ds],
                                        [_wide(D(fake)) for D in self.Ds])
            if self.penalty is None:
                return out
            pens = [_wide(L.gradient_penalty(self.penalty, D, real, fake.to(real.dtype), self.weight, t=t))
                    for D in self.Ds]
        return L.MultiGANLoss(out.generator, tuple(d + p for d, p in zip(out.discriminators, pens)))


def _reported(out: L.MultiGANLoss) -> tuple[Tensor, Tensor]:
    """(the discriminators' mean loss, the generator's loss), detached: the trainer's two loss columns."""
    return torch.stack([d.detach() for d in out.discriminators]).mean(), out.generator.detach()


class _StepperFlags:
    """The class attributes the trainer reads (see :class:`fastgame.trainer.steppers._Stepper`)."""

    graphable = False
    critic_steps = False
    many_discriminators = True
    d_steps = 1  # the critic batches one step takes


class PolymatrixStepper(_StepperFlags):
    """PCGD/APCGD with players (G, D_1, …, D_K), each on its own loss; the generator at ``lr_g``,
    every discriminator at ``lr_d``."""

    def __init__(self, opt: Any, losses: MultiGameLosses) -> None:
        self.opt, self.losses = opt, losses

    @classmethod
    def create(cls, method: Any, G: nn.Module, D: nn.Module, losses: MultiGameLosses, lr_d: float, lr_g: float,
               settings: dict[str, Any], **unused: Any) -> "PolymatrixStepper":
        players = [(G.parameters(), lr_g)] + [(d.parameters(), lr_d) for d in discriminator_list(D)]
        return cls(method.build_players(players, **settings), losses)

    def step(self, batches: Sequence[Batch]) -> tuple[Tensor, Tensor, Any, Any]:
        (real, z, t), = batches
        out = self.losses(real, z, t)
        self.opt.step(out.per_player())
        return _reported(out) + _counts(self.opt)

    def state_dict(self) -> dict[str, Any]:
        return self.opt.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.opt.load_state_dict(sd)


class MultiAdamStepper(_StepperFlags):
    """Simultaneous Adam: one ``torch.optim.Adam`` per player, each discriminator on its own loss,
    the generator on the combined loss, every gradient taken before any player moves."""

    def __init__(self, method: Any, G: nn.Module, Ds: Sequence[nn.Module], losses: MultiGameLosses,
                 lr_d: float, lr_g: float, **settings: Any) -> None:
        self.g_params = list(G.parameters())
        self.d_params = [list(D.parameters()) for D in Ds]
        self.opt_g = method.build_one(self.g_params, lr_g, **settings)
        self.opt_ds = [method.build_one(p, lr_d, **settings) for p in self.d_params]
        self.losses = losses

    @classmethod
    def create(cls, method: Any, G: nn.Module, D: nn.Module, losses: MultiGameLosses, lr_d: float, lr_g: float,
               settings: dict[str, Any], **unused: Any) -> "MultiAdamStepper":
        return cls(method, G, discriminator_list(D), losses, lr_d, lr_g, **settings)

    def step(self, batches: Sequence[Batch]) -> tuple[Tensor, Tensor, Any, Any]:
        (real, z, t), = batches
        out = self.losses(real, z, t)
        for params, loss in zip(self.d_params, out.discriminators):
            _set_grads(params, loss)
        _set_grads(self.g_params, out.generator)
        for opt in (*self.opt_ds, self.opt_g):
            opt.step()
        for p in self.g_params + [p for params in self.d_params for p in params]:
            p.grad = None
        return _reported(out) + (0, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"g": self.opt_g.state_dict(), "ds": [opt.state_dict() for opt in self.opt_ds]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if set(sd) != {"g", "ds"} or len(sd["ds"]) != len(self.opt_ds):
            raise ValueError(f"not the state of simultaneous Adam against {len(self.opt_ds)} discriminators")
        # torch's load_state_dict keeps what it loaded before it fails; load into copies first,
        # so that a state that does not fit changes nothing.
        opts = (self.opt_g, *self.opt_ds)
        trial = [(opt, type(opt)([dict(g) for g in opt.param_groups], **opt.defaults)) for opt in opts]
        for (_, copy), state in zip(trial, (sd["g"], *sd["ds"])):
            copy.load_state_dict(state)
        for (opt, _), state in zip(trial, (sd["g"], *sd["ds"])):
            opt.load_state_dict(state)

