"""One training step of a GAN for each optimizer ``fastgame train`` offers.

The CGD family (ACGD, BCGD) steps on the zero-sum loss, GACGD on both players' own losses;
the baselines are Adam, simultaneous (both players' gradients at the same point) or
alternating (the discriminator first, then the generator against the updated
discriminator), each player with its own learning rate (two-timescale rates).

Every stepper has ``step(batches) -> (loss_d, loss_g, cg_iterations, hvp_passes)``, ``batches`` the
:class:`~fastgame.trainer.batches.Batch` list of one step (one batch; k + 1 for k critic steps, see
:class:`AlternatingAdamStepper`), without a host sync: the losses are tensors on the models' device, the counts host numbers where the
optimizer counts on the host (eager steps) and tensors where it counts on the device (a graphed
step's), ``state_dict()`` and ``load_state_dict()``. ``hvp_passes`` is the number of mixed
double-backward (Hessian-vector product) passes the step took, as the optimizer counts them in
``get_info()["hvp_passes"]`` (a batched pass counts once; 0 for Adam and for dynamics without
HVPs); ``cg_iterations`` is the solver's iteration count. Under ``torch.distributed`` the
fastgame optimizers average gradients and Hessian-vector products across ranks
themselves; the Adam baselines average their gradients here.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import losses as L
from ..graph_guard import VerifiedStep
from ..graphs import make_graphed_step, with_run_settings
from ..linalg.distributed import all_reduce_mean, is_data_parallel
from ..linalg.flat import flatten, split_like
from ..optim.cg_starts import STARTS
from .batches import Batch

__all__ = ["GameLosses", "CGDStepper", "GACGDStepper", "DynamicsStepper", "SimultaneousAdamStepper",
           "AlternatingAdamStepper"]


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
    """A stepper around one fastgame optimizer ``opt``, whose state is the optimizer's.

    Class attributes the trainer reads: ``graphable`` (whole steps can be CUDA-graphed,
    ``--graphed``), ``critic_steps`` (it takes ``d_steps`` > 1) and ``many_discriminators`` (it
    steps on :class:`~fastgame.trainer.multi_steppers.MultiGameLosses`, D a list of discriminators)."""

    opt: Any
    graphable = False
    critic_steps = False
    many_discriminators = False
    d_steps = 1  # the critic batches one step takes

    @classmethod
    def create(cls, method: Any, G: nn.Module, D: nn.Module, losses: GameLosses, lr_d: float, lr_g: float,
               settings: dict[str, Any], example: Optional[Batch] = None, graphed: bool = False,
               eager: bool = False, d_steps: int = 1) -> "_Stepper":
        """The stepper of ``method`` (a :class:`~fastgame.trainer.methods.Method`), D the max
        player (x), with the optimizer's ``settings`` already checked against the method."""
        return cls(method.build(D.parameters(), G.parameters(), lr_d, lr_g, **settings), losses)  # type: ignore[call-arg]

    def state_dict(self) -> dict[str, Any]:
        return self.opt.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.opt.load_state_dict(sd)


class CGDStepper(_Stepper):
    """ACGD or BCGD on the zero-sum loss; D is the max player."""

    graphable = True

    def __init__(self, opt: Any, losses: GameLosses, graphed: bool = False, example: Optional[Batch] = None,
                 exact_cg: bool = False) -> None:
        self.opt, self.losses = opt, losses
        self._last: tuple[Tensor, Tensor] = (torch.zeros(()), torch.zeros(()))

        def zero_sum(real: Tensor, z: Tensor, t: Tensor) -> Tensor:
            d, g, zs = losses(real, z, t)
            self._last = (d.detach(), g.detach())
            return zs

        self._zero_sum = zero_sum
        self.notices: list[str] = []  # a fallback's cause, once, for the trainer to print and record
        # make_graphed_step warns and steps eagerly where CUDA graphs are not possible.
        self._graphed: Any = (make_graphed_step(opt, zero_sum, *[e.clone() for e in example], exact_cg=exact_cg)
                              if (graphed or exact_cg) and example is not None else None)
        if exact_cg and self._graphed is not None:  # the default CUDA path: trusted once its first replays give eager steps' numbers
            buffers = [b for m in (losses.G, losses.D) for b in m.buffers()]  # BatchNorm statistics
            self._graphed = VerifiedStep(self._graphed, buffers, on_fallback=self.notices.append)

    @property
    def path(self) -> str:
        """Which path the steps take, for ``config.json``: eager, piecewise or whole-step CUDA graphs
        (with why they run eagerly where they do)."""
        if self._graphed is None:
            return "eager"
        checked = isinstance(self._graphed, VerifiedStep)
        reason = self._graphed.reason if checked else self._graphed.eager_reason
        if reason:
            return f"eager ({reason})"
        if checked:
            return "piecewise CUDA graphs (each phase's first replay checked against an eager step)"
        return "whole-step CUDA graphs"

    @classmethod
    def create(cls, method: Any, G: nn.Module, D: nn.Module, losses: GameLosses, lr_d: float, lr_g: float,
               settings: dict[str, Any], example: Optional[Batch] = None, graphed: bool = False,
               eager: bool = False, d_steps: int = 1) -> "CGDStepper":
        """Whole-step graphs with ``graphed``; otherwise, on CUDA (``example`` on a CUDA device, one
        process, a capturable ``cg_start``), piecewise graphs with the CG iterations each step needs
        (``make_graphed_step(exact_cg=True)``, the same numbers as eager steps), unless ``eager``;
        ``max_iter`` then only bounds the host loop (default: the larger player's parameter count;
        the loop also stops at the solved player's, as an eager solve does)."""
        piecewise = not (graphed or eager) and _piecewise_possible(example, settings)
        if graphed or piecewise:
            settings = {**settings, "capturable": True}
        if piecewise and "max_iter" not in settings:
            settings["max_iter"] = max(sum(p.numel() for p in m.parameters()) for m in (D, G))
        opt = method.build(D.parameters(), G.parameters(), lr_d, lr_g, **settings)
        return cls(opt, losses, graphed, example, exact_cg=piecewise)

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        # How the step runs (capturable, the graphs' max_iter bound) stays this stepper's: a
        # checkpoint of an eager run resumes a graphed one and the other way round.
        self.opt.load_state_dict(with_run_settings(self.opt, sd))

    def step(self, batches: Sequence[Batch]) -> tuple[Tensor, Tensor, Any, Any]:
        (real, z, t), = batches
        if self._graphed is not None:
            zs = self._graphed(real, z, t)
            # Inside a replayed graph the Python side does not run: report the zero-sum loss for both.
            d, g = (-zs.detach(), zs.detach()) if self._graphed.graphs else self._last
        else:  # a closure: on CUDA its CG iterations can then be graph-replayed (graph_cg)
            self.opt.step(lambda: self._zero_sum(real, z, t))
            d, g = self._last
        return (d, g) + _counts(self.opt)


def _piecewise_possible(example: Optional[Batch], settings: dict[str, Any]) -> bool:
    """Whether the default CUDA path of ACGD/BCGD can be piecewise graphs: CUDA inputs, one process
    (graphs would record the cross-rank all-reduces) and a capturable CG start."""
    start = settings.get("cg_start")
    return (example is not None and all(e.device.type == "cuda" for e in example)
            and torch.cuda.is_available() and not is_data_parallel()
            and (start is None or STARTS[start].capturable))


def _counts(opt: Any) -> tuple[Any, Any]:
    """(solver iterations, mixed-HVP passes) of ``opt``'s last step, from its ``get_info()``: host
    numbers stay on the host (wrapping them in tensors for the device would cost a blocking copy
    each step) and device counts (a graphed step's) on the device, unread."""
    info = opt.get_info()
    return info.get("iter_num", 0), info.get("hvp_passes", 0)


class GACGDStepper(_Stepper):
    """GACGD: D (x) minimises its own loss, G (y) its own."""

    def __init__(self, opt: Any, losses: GameLosses) -> None:
        self.opt, self.losses = opt, losses

    def step(self, batches: Sequence[Batch]) -> tuple[Tensor, Tensor, Any, Any]:
        (real, z, t), = batches
        d, g, _ = self.losses(real, z, t)
        self.opt.step(d, g)
        return (d.detach(), g.detach()) + _counts(self.opt)


class DynamicsStepper(_Stepper):
    """One of the other game dynamics on the zero-sum loss, D the max player. It steps with a
    closure, since extragradient, alternating and proximal methods evaluate the loss again."""

    def __init__(self, opt: Any, losses: GameLosses) -> None:
        self.opt, self.losses = opt, losses

    def step(self, batches: Sequence[Batch]) -> tuple[Tensor, Tensor, Any, Any]:
        (real, z, t), = batches
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


class SimultaneousAdamStepper:
    """Adam for each player with its own rate (two-timescale), both players' gradients at the same point."""

    graphable = False
    critic_steps = False
    many_discriminators = False

    def __init__(self, method: Any, G: nn.Module, D: nn.Module, losses: GameLosses, lr_d: float, lr_g: float,
                 d_steps: int = 1, **settings: Any) -> None:
        self.d_params, self.g_params = list(D.parameters()), list(G.parameters())
        self.opt_d = method.build_one(self.d_params, lr_d, **settings)
        self.opt_g = method.build_one(self.g_params, lr_g, **settings)
        self.losses, self.d_steps = losses, d_steps

    @classmethod
    def create(cls, method: Any, G: nn.Module, D: nn.Module, losses: GameLosses, lr_d: float, lr_g: float,
               settings: dict[str, Any], example: Optional[Batch] = None, graphed: bool = False,
               eager: bool = False, d_steps: int = 1) -> "SimultaneousAdamStepper":
        return cls(method, G, D, losses, lr_d, lr_g, d_steps, **settings)

    def step(self, batches: Sequence[Batch]) -> tuple[Tensor, Tensor, Any, Any]:
        (real, z, t), = batches
        d, g, _ = self.losses(real, z, t)
        _set_grads(self.d_params, d)
        _set_grads(self.g_params, g)
        self.opt_d.step()
        self.opt_g.step()
        return self._done(d, g)

    def _done(self, d: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Any, Any]:
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


class AlternatingAdamStepper(SimultaneousAdamStepper):
    """Adam for each player, alternating: ``d_steps`` k discriminator (critic) steps, each on its
    own batch, then one generator step against the updated critic (WGAN-GP's recipe: Gulrajani,
    Ahmed, Arjovsky, Dumoulin & Courville, "Improved training of Wasserstein GANs", NeurIPS 2017,
    Algorithm 1). ``step`` takes the k critic batches and, for k > 1, one more: the generator's
    (the last real batch, fresh codes); with k = 1 the generator answers on the critic's batch."""

    critic_steps = True

    def step(self, batches: Sequence[Batch]) -> tuple[Tensor, Tensor, Any, Any]:
        if len(batches) != self.d_steps + (self.d_steps > 1):
            raise ValueError(f"{len(batches)} batches for {self.d_steps} critic steps")
        for real, z, t in batches[:self.d_steps]:
            d, _, _ = self.losses(real, z, t)
            _set_grads(self.d_params, d)
            self.opt_d.step()
        g = self.losses.generator_loss(batches[-1].real, batches[-1].z)
        _set_grads(self.g_params, g)
        self.opt_g.step()
        return self._done(d, g)
