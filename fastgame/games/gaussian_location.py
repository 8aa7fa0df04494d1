r"""The Gaussian location game of M. Ehab, *Towards Theoretically-Grounded GAN Training*
(docs/design.md §1): where WGAN-GP has a spurious equilibrium and the one-sided ReLU penalty
does not."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import losses as L
from .base import Game, PlayerLosses, as_tensor

_PENALTIES = ("wgan_gp", "relu_gp")


class GaussianLocationGame(Game):
    r"""Data N(0, I_d), generator G(z) = z + θ (z ~ N(0, I_d)), linear critic f(x) = ψ·x.

    WGAN losses in expectation (exact, since the critic is linear): the critic minimises
    L_D = ψ·θ + penalty(ψ), the generator minimises L_G = −ψ·θ; the penalty is
    ``"wgan_gp"`` λ(‖∇f‖ − 1)² or ``"relu_gp"`` λ·ReLU(‖∇f‖ − 1), with ∇f = ψ everywhere.
    The zero-sum form ``loss() = −L_D`` gives both players the same gradients as these
    losses (the penalty does not depend on θ).

    Known answers (Ehab's report; :meth:`critic_best_response`, :meth:`spurious_critic`):

    * WGAN-GP: besides the best response ψ = (1 + r/2λ)·u (u = −θ/‖θ‖ points from the
      fakes to the data, r = ‖θ‖), the critic has a second stationary point ψ = −(1 − r/2λ)·u
      for r < 2λ: a *local* best response in one dimension (a saddle for d ≥ 2). On that
      branch the generator's loss is L_G = r²/2λ − r, minimised at r = λ. So in one
      dimension (θ, ψ) = (λ, ½) is a spurious equilibrium of best-response training, at a
      distance from the data set by the penalty weight alone: the critic is locally optimal
      and the generator's total derivative along the critic's best response vanishes. The
      seed calls it a local Nash equilibrium; strictly it is a local Stackelberg point, not
      a fixed point of simultaneous gradient play (∂L_G/∂θ = −ψ = −½ there), and it exists
      for the generator loss L_G, not for the zero-sum value −L_D, which includes the
      penalty. Simultaneous play started on the spurious side can instead stall where the
      branch ends, θ = 2λ, ψ = 0.
    * ReLU penalty with λ ≥ W₁ = ‖θ‖: the critic's best response is the WGAN critic ψ = u, so
      the generator's loss at the best response is L_G = ‖θ‖ = W₁, minimised at θ = 0.

    The max player is the critic: ``max_params = [psi]``, ``min_params = [theta]``.

    Args:
        penalty: ``"wgan_gp"``, ``"relu_gp"`` or None (plain WGAN: no best response exists).
        weight: λ.
        dim: dimension d of the data.
        theta, psi: starting point (default θ = ψ = (1, 0, ..., 0)·½).
    """

    def __init__(self, penalty: Optional[str] = "wgan_gp", weight: float = 1.0, dim: int = 1,
                 theta: Optional[Tensor] = None, psi: Optional[Tensor] = None) -> None:
        super().__init__()
        if penalty is not None and penalty not in _PENALTIES:
            raise ValueError(f"unknown penalty {penalty!r}; choose None or one of {list(_PENALTIES)}")
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"invalid weight: {weight!r} (must be a finite number >= 0)")
        if penalty is not None and weight == 0:
            raise ValueError("a penalty needs weight > 0")
        if not (isinstance(dim, int) and dim >= 1):
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        self.penalty, self.weight, self.dim = penalty, float(weight), dim
        start = torch.zeros(dim)
        start[0] = 0.5
        self.theta = nn.Parameter(start.clone() if theta is None else as_tensor(theta, "theta", shape=(dim,)))
        self.psi = nn.Parameter(start.clone() if psi is None else as_tensor(psi, "psi", shape=(dim,)))

    @property
    def max_params(self) -> list[nn.Parameter]:
        return [self.psi]

    @property
    def min_params(self) -> list[nn.Parameter]:
        return [self.theta]

    def critic(self, x: Tensor) -> Tensor:
        """f(x) = ψ·x for a batch of points (n, d)."""
        return x @ self.psi

    def losses(self) -> PlayerLosses:
        """L_D = ψ·θ + penalty(ψ) and L_G = −ψ·θ, the expected WGAN losses."""
        # E over the data of f is ψ·0, over the generator ψ·θ: evaluate f at the means.
        real = torch.zeros(1, self.dim, dtype=self.theta.dtype, device=self.theta.device)
        fake = self.theta.reshape(1, -1)
        out = L.wgan(self.critic(real), self.critic(fake))
        d_loss = out.discriminator
        if self.penalty is not None:
            # ∇f = ψ at every point, so any interpolation weight gives the exact penalty.
            d_loss = d_loss + L.gradient_penalty(self.penalty, self.critic, real, fake, self.weight,
                                                 t=torch.tensor(0.5))
        return PlayerLosses(d_loss, out.generator)

    def equilibrium(self) -> Tensor:
        """θ = 0 with the flat critic ψ = 0 (a Nash equilibrium for every penalty here)."""
        return torch.zeros_like(self.point())

    # ---- closed forms ------------------------------------------------------------------
    def _direction(self, theta: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        theta = self.theta.detach() if theta is None else as_tensor(theta, "theta", shape=(self.dim,))
        r = theta.norm()
        if r == 0:
            raise ValueError("at θ = 0 every critic with ‖ψ‖ ≤ 1 is a best response: "
                             "the direction is undefined")
        return -theta / r, r

    def critic_best_response(self, theta: Optional[Tensor] = None) -> Tensor:
        """The critic's (global) best response to θ (default: the current θ), in closed form.

        WGAN-GP: (1 + ‖θ‖/2λ)·u; ReLU penalty: u, the WGAN critic (needs λ ≥ ‖θ‖), where
        u = −θ/‖θ‖. Raises ValueError where no best response exists.
        """
        u, r = self._direction(theta)
        if self.penalty == "wgan_gp":
            return (1 + r / (2 * self.weight)) * u
        if self.penalty == "relu_gp":
            if r > self.weight:
                raise ValueError(f"λ = {self.weight} < W₁ = {float(r)}: the critic's loss is unbounded below")
            return u
        raise ValueError("without a penalty the WGAN critic's loss is unbounded below")

    def spurious_critic(self, theta: Optional[Tensor] = None) -> Tensor:
        """WGAN-GP's second stationary critic −(1 − ‖θ‖/2λ)·u (needs 0 < ‖θ‖ < 2λ): a local
        best response for d = 1, a saddle of the critic's loss for d ≥ 2."""
        if self.penalty != "wgan_gp":
            raise ValueError("only the WGAN-GP penalty has a spurious critic")
        u, r = self._direction(theta)
        if r >= 2 * self.weight:
            raise ValueError(f"‖θ‖ = {float(r)} >= 2λ: the spurious branch does not exist there")
        return -(1 - r / (2 * self.weight)) * u

    def spurious_equilibrium(self) -> Tensor:
        """WGAN-GP's spurious equilibrium (ψ, θ) = (½·e₁, λ·e₁) as a point (1-D: (½, λ))."""
        if self.penalty != "wgan_gp":
            raise ValueError("only the WGAN-GP penalty has the spurious equilibrium")
        psi, theta = torch.zeros_like(self.psi.detach()), torch.zeros_like(self.theta.detach())
        psi[0], theta[0] = 0.5, self.weight
        return torch.cat([psi, theta])
