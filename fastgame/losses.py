r"""GAN losses and discriminator penalties for real networks.

Every loss takes the discriminator's raw outputs on a real and a fake batch (logits for the
classifier losses, critic values for WGAN/hinge/least squares) and returns a
:class:`GANLoss` with three scalars:

* ``discriminator`` — the loss the discriminator minimises (a plain optimizer's D loss);
* ``generator`` — the loss the generator minimises;
* ``zero_sum`` — the zero-sum loss the CGD family takes: the discriminator (``max_params``)
  maximises it, the generator (``min_params``) minimises it. It is always
  ``-discriminator``, the discriminator's payoff. For ``standard`` (minimax) and ``wgan``
  the generator's loss equals it up to a term constant in the generator, so the zero-sum
  game *is* the game; for the other losses it is the minimax form of the discriminator's
  objective (e.g. a "saturating" generator loss), the usual way to train them with CGD.

Penalties regularise the discriminator only: they return a non-negative scalar to *add*
to ``discriminator`` (and to *subtract* from ``zero_sum``). The points a penalty is
evaluated at are detached, so a penalty never pushes the generator; this also keeps
``zero_sum - penalty`` an exact zero-sum form of the penalised game::

    out = losses.wgan(D(real), D(fake))
    pen = losses.wgan_gp_penalty(D, real, fake, weight=10.0)
    opt.step(out.zero_sum - pen)              # fastgame.ACGD(D.parameters(), G.parameters())
    # or, with two plain optimizers: (out.discriminator + pen) for D, out.generator for G

Losses average over all elements of ``d_real`` and ``d_fake``; the relativistic losses need
real and fake batches of the same shape. Penalties need a discriminator whose output for
one sample depends on that sample only (no batch norm across the batch), because the input
gradient is taken of the summed outputs.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GANLoss", "LOSSES", "ZERO_SUM_LOSSES", "get_loss", "MultiGANLoss", "multi_discriminator",
    "standard", "non_saturating", "wgan", "hinge", "least_squares",
    "rsgan", "rasgan", "ralsgan", "rahinge",
    "input_gradient", "r1_penalty", "r2_penalty", "wgan_gp_penalty", "relu_gp_penalty", "instance_noise",
    "PENALTIES", "gradient_penalty",
]

Discriminator = Callable[[Tensor], Tensor]


class GANLoss(NamedTuple):
    """The losses of one GAN batch (see the module docstring for the conventions)."""

    discriminator: Tensor
    """Loss the discriminator minimises."""
    generator: Tensor
    """Loss the generator minimises."""
    zero_sum: Tensor
    """Zero-sum loss for the CGD family: the discriminator maximises it, the generator minimises it."""


def _check_pair(d_real: Tensor, d_fake: Tensor, same_shape: bool = False) -> None:
    for name, t in (("d_real", d_real), ("d_fake", d_fake)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a Tensor, got {type(t).__name__}")
        if t.numel() == 0:
            raise ValueError(f"{name} is empty")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
    if same_shape and d_real.shape != d_fake.shape:
        raise ValueError(f"relativistic losses pair real and fake outputs: shapes {tuple(d_real.shape)} "
                         f"and {tuple(d_fake.shape)} differ")


def _make(d_loss: Tensor, g_loss: Tensor) -> GANLoss:
    return GANLoss(d_loss, g_loss, -d_loss)


# ---- classic losses -----------------------------------------------------------------
def standard(d_real: Tensor, d_fake: Tensor) -> GANLoss:
    r"""The original minimax GAN (Goodfellow et al. 2014) on logits.

    V = E log σ(D(x)) + E log(1 − σ(D(G(z)))); D maximises V, G minimises it:
    ``discriminator = −V``, ``generator = E log(1 − σ(D(G(z))))`` (V minus a G-constant).
    Zero-sum: exactly.
    """
    _check_pair(d_real, d_fake)
    # log σ(t) = −softplus(−t) and log(1 − σ(t)) = −softplus(t), stable for large |t|.
    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    return _make(d_loss, -F.softplus(d_fake).mean())


def non_saturating(d_real: Tensor, d_fake: Tensor) -> GANLoss:
    r"""Non-saturating GAN: D as in :func:`standard`; G minimises −E log σ(D(G(z))).

    Zero-sum form: that of :func:`standard` (the non-saturating generator loss has none).
    """
    _check_pair(d_real, d_fake)
    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    return _make(d_loss, F.softplus(-d_fake).mean())


def wgan(d_real: Tensor, d_fake: Tensor) -> GANLoss:
    r"""Wasserstein GAN (Arjovsky et al. 2017) on critic values.

    The critic maximises E D(x) − E D(G(z)); G minimises −E D(G(z)). Zero-sum: exactly.
    Combine with a Lipschitz penalty (:func:`wgan_gp_penalty`, :func:`relu_gp_penalty`).
    """
    _check_pair(d_real, d_fake)
    return _make(d_fake.mean() - d_real.mean(), -d_fake.mean())


def hinge(d_real: Tensor, d_fake: Tensor) -> GANLoss:
    r"""Hinge loss (Lim & Ye 2017; Miyato et al. 2018).

    D minimises E ReLU(1 − D(x)) + E ReLU(1 + D(G(z))); G minimises −E D(G(z)).
    """
    _check_pair(d_real, d_fake)
    return _make(F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean(), -d_fake.mean())


def least_squares(d_real: Tensor, d_fake: Tensor, real_label: float = 1.0, fake_label: float = 0.0,
                  generator_target: float = 1.0) -> GANLoss:
    r"""Least-squares GAN (Mao et al. 2017) with labels a = fake_label, b = real_label, c = generator_target.

    D minimises ½E(D(x) − b)² + ½E(D(G(z)) − a)²; G minimises ½E(D(G(z)) − c)².
    """
    _check_pair(d_real, d_fake)
    d_loss = 0.5 * ((d_real - real_label) ** 2).mean() + 0.5 * ((d_fake - fake_label) ** 2).mean()
    return _make(d_loss, 0.5 * ((d_fake - generator_target) ** 2).mean())


# ---- relativistic losses (Jolicoeur-Martineau 2018) ---------------------------------
# The generator's loss swaps the roles of real and fake, so its gradient also flows
# through d_real: do not detach the real outputs when computing the generator's loss.
def rsgan(d_real: Tensor, d_fake: Tensor) -> GANLoss:
    r"""Relativistic standard GAN on paired samples: D(x_r, x_f) = σ(C(x_r) − C(x_f)).

    D minimises −E log σ(C(x_r) − C(x_f)); G minimises −E log σ(C(x_f) − C(x_r)).
    """
    _check_pair(d_real, d_fake, same_shape=True)
    return _make(F.softplus(d_fake - d_real).mean(), F.softplus(d_real - d_fake).mean())


def _relative(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """C(x_r) − E C(x_f) and C(x_f) − E C(x_r): the relativistic average outputs."""
    return d_real - d_fake.mean(), d_fake - d_real.mean()


def rasgan(d_real: Tensor, d_fake: Tensor) -> GANLoss:
    r"""Relativistic average standard GAN.

    D minimises −E log σ(C_r − E C_f) − E log(1 − σ(C_f − E C_r)); G the same with real and
    fake swapped.
    """
    _check_pair(d_real, d_fake, same_shape=True)
    r, f = _relative(d_real, d_fake)
    return _make(F.softplus(-r).mean() + F.softplus(f).mean(), F.softplus(-f).mean() + F.softplus(r).mean())


def ralsgan(d_real: Tensor, d_fake: Tensor) -> GANLoss:
    r"""Relativistic average least-squares GAN.

    D minimises E(C_r − E C_f − 1)² + E(C_f − E C_r + 1)²; G the same with real and fake swapped.
    """
    _check_pair(d_real, d_fake, same_shape=True)
    r, f = _relative(d_real, d_fake)
    return _make(((r - 1) ** 2).mean() + ((f + 1) ** 2).mean(), ((f - 1) ** 2).mean() + ((r + 1) ** 2).mean())


def rahinge(d_real: Tensor, d_fake: Tensor) -> GANLoss:
    r"""Relativistic average hinge GAN.

    D minimises E ReLU(1 − (C_r − E C_f)) + E ReLU(1 + (C_f − E C_r)); G the same with real
    and fake swapped.
    """
    _check_pair(d_real, d_fake, same_shape=True)
    r, f = _relative(d_real, d_fake)
    return _make(F.relu(1 - r).mean() + F.relu(1 + f).mean(), F.relu(1 - f).mean() + F.relu(1 + r).mean())


LOSSES: dict[str, Callable[[Tensor, Tensor], GANLoss]] = {
    "standard": standard, "non_saturating": non_saturating, "wgan": wgan, "hinge": hinge,
    "least_squares": least_squares, "rsgan": rsgan, "rasgan": rasgan, "ralsgan": ralsgan, "rahinge": rahinge,
}
"""The losses by name."""

ZERO_SUM_LOSSES = frozenset({"standard", "wgan"})
"""Losses whose ``zero_sum`` form gives both players exactly their own gradients."""


def get_loss(name: str) -> Callable[[Tensor, Tensor], GANLoss]:
    """The loss function called ``name`` (a key of :data:`LOSSES`)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown GAN loss {name!r}; choose one of {sorted(LOSSES)}") from None


# ---- one generator against several discriminators -----------------------------------------
class MultiGANLoss(NamedTuple):
    """The losses of one batch of a GAN with one generator and K discriminators."""

    generator: Tensor
    """Loss the generator minimises: the mean of its losses against each discriminator."""
    discriminators: tuple[Tensor, ...]
    """Loss each discriminator minimises, in order."""

    def per_player(self) -> tuple[Tensor, ...]:
        """(generator, discriminator 1, …, K): one loss per player, in the order
        :class:`fastgame.PCGD` takes the players (generator first)."""
        return (self.generator, *self.discriminators)


def multi_discriminator(loss: Union[str, Callable[[Tensor, Tensor], GANLoss]], d_reals: Sequence[Tensor],
                        d_fakes: Sequence[Tensor]) -> MultiGANLoss:
    """One generator against K ≥ 1 discriminators, each seeing the same real and generated
    batches ("Generative Multi-Adversarial Networks", Durugkar, Gemp & Mahadevan, ICLR 2017,
    with the mean of the discriminators' feedback as the generator's loss).

    ``loss`` is a loss of this module or its name; ``d_reals[k]``, ``d_fakes[k]`` are
    discriminator k's raw outputs on the real and the generated batch.
    """
    fn = get_loss(loss) if isinstance(loss, str) else loss
    if isinstance(d_reals, Tensor) or isinstance(d_fakes, Tensor):
        raise ValueError("d_reals and d_fakes are sequences of tensors, one per discriminator")
    d_reals, d_fakes = list(d_reals), list(d_fakes)
    if not d_reals or len(d_reals) != len(d_fakes):
        raise ValueError(f"one real and one fake output per discriminator: got {len(d_reals)} real and "
                         f"{len(d_fakes)} fake outputs (at least one discriminator)")
    each = [fn(r, f) for r, f in zip(d_reals, d_fakes)]
    generator = torch.stack([out.generator for out in each]).mean()
    return MultiGANLoss(generator, tuple(out.discriminator for out in each))

# ---- penalties ------------------------------------------------------------------------
def _check_weight(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"invalid {name}: {value!r} (must be a finite number >= 0)")


def _check_points(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (first dimension = samples), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")


def input_gradient(discriminator: Discriminator, x: Tensor) -> Tensor:
    """∇ₓD(x) per sample, shape ``(batch, -1)``, differentiable w.r.t. D's parameters.

    ``x`` is detached first: the gradient is a function of the discriminator only.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = discriminator(x)
        if not isinstance(out, Tensor) or not out.requires_grad:
            raise ValueError("the discriminator's output does not depend on its input with a graph")
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.reshape(grad.shape[0], -1)


def _norm(grad: Tensor) -> Tensor:
    # The norm's derivative is undefined at 0; a critic with a zero input gradient
    # (e.g. ψ = 0 in the toy games) must still get a finite penalty gradient.
    return torch.sqrt((grad * grad).sum(dim=1) + torch.finfo(grad.dtype).tiny)


def _zero_centred_penalty(discriminator: Discriminator, points: Tensor, gamma: float, name: str) -> Tensor:
    _check_weight("gamma", gamma)
    _check_points(name, points)
    g = input_gradient(discriminator, points)
    return 0.5 * gamma * (g * g).sum(dim=1).mean()


def r1_penalty(discriminator: Discriminator, real: Tensor, gamma: float = 10.0) -> Tensor:
    r"""Zero-centred gradient penalty on real data (Mescheder et al. 2018): (γ/2) E‖∇D(x)‖²."""
    return _zero_centred_penalty(discriminator, real, gamma, "real")


def r2_penalty(discriminator: Discriminator, fake: Tensor, gamma: float = 10.0) -> Tensor:
    r"""Zero-centred gradient penalty on generated data: (γ/2) E‖∇D(G(z))‖² (fake is detached)."""
    return _zero_centred_penalty(discriminator, fake, gamma, "fake")


def _interpolates(real: Tensor, fake: Tensor, t: Optional[Tensor], generator: Optional[torch.Generator]) -> Tensor:
    _check_points("real", real)
    _check_points("fake", fake)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape to interpolate, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    if t is None:
        t = torch.rand(shape, generator=generator, dtype=real.dtype, device=real.device)
    else:
        t = torch.as_tensor(t, dtype=real.dtype, device=real.device)
        if t.numel() not in (1, real.shape[0]) or not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError(f"t must be one weight or one per sample ({real.shape[0]}), each in [0, 1]")
        t = t.reshape(-1).expand(real.shape[0]).reshape(shape)
    return t * real.detach() + (1 - t) * fake.detach()


def wgan_gp_penalty(critic: Discriminator, real: Tensor, fake: Tensor, weight: float = 10.0,
                    t: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    r"""WGAN-GP (Gulrajani et al. 2017): λ E(‖∇D(x̂)‖ − 1)² at x̂ = t·x + (1 − t)·G(z), t ~ U[0, 1].

    ``t`` fixes the interpolation weights (one, or one per sample) instead of drawing them
    with ``generator``; fixed points keep the penalty, and so the critic's best response,
    from changing between steps (Ehab's report fixes them for that reason; docs/design.md §1).

    Two-sided: it also pushes gradient norms below 1 up, which creates spurious local
    best responses and equilibria (Ehab's report, docs/design.md §1;
    :class:`fastgame.games.GaussianLocationGame`).
    """
    _check_weight("weight", weight)
    g = input_gradient(critic, _interpolates(real, fake, t, generator))
    return weight * ((_norm(g) - 1) ** 2).mean()


def relu_gp_penalty(critic: Discriminator, real: Tensor, fake: Tensor, weight: float = 10.0,
                    t: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    r"""One-sided linear penalty of Ehab's report (docs/design.md §1): λ E ReLU(‖∇D(x̂)‖ − 1)
    on the WGAN-GP interpolates.

    No penalty inside the 1-Lipschitz ball and a slope λ outside, so for λ ≥ W₁(p_data, p_G)
    the critic's best response is the WGAN (1-Lipschitz) optimal critic. ``t`` and
    ``generator`` as for :func:`wgan_gp_penalty`.
    """
    _check_weight("weight", weight)
    g = input_gradient(critic, _interpolates(real, fake, t, generator))
    return weight * F.relu(_norm(g) - 1).mean()


def instance_noise(x: Tensor, std: float, generator: Optional[torch.Generator] = None) -> Tensor:
    r"""x + std·ε, ε ~ N(0, I): instance noise (Sønderby et al. 2017; Arjovsky & Bottou 2017).

    Apply it to both the real and the fake batch before the discriminator. The gradient
    flows through to ``x`` (the generator's output).
    """
    _check_weight("std", std)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating-point Tensor")
    if std == 0:
        return x
    return x + std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


PENALTIES = ("r1", "r2", "wgan_gp", "relu_gp")
"""The gradient penalties by name, for :func:`gradient_penalty`."""


def gradient_penalty(name: str, discriminator: Discriminator, real: Tensor, fake: Tensor, weight: float,
                     t: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """The penalty called ``name`` (one of :data:`PENALTIES`) with weight γ or λ.

    One signature for all of them, for code that picks the penalty by name: R1 uses only
    ``real``, R2 only ``fake``, the interpolating penalties both (``t``, ``generator`` as for
    :func:`wgan_gp_penalty`).
    """
    if name == "r1":
        return r1_penalty(discriminator, real, weight)
    if name == "r2":
        return r2_penalty(discriminator, fake, weight)
    if name == "wgan_gp":
        return wgan_gp_penalty(discriminator, real, fake, weight, t=t, generator=generator)
    if name == "relu_gp":
        return relu_gp_penalty(discriminator, real, fake, weight, t=t, generator=generator)
    raise ValueError(f"unknown penalty {name!r}; choose one of {list(PENALTIES)}")
