"""The interface every game of :mod:`fastgame.games` shares.

A game is an ``nn.Module`` holding both players' parameters, so ``game.double()``,
``game.to(device)``, ``game.state_dict()`` and ``load_state_dict`` work as for any model.
Players are always listed max player first, as fastgame's optimizers take them::

    game = fastgame.games.Bilinear(A)
    opt = fastgame.BCGD(game.max_params, game.min_params, lr_max=0.5, lr_min=0.5)
    opt.step(game.loss())            # zero-sum: max_params maximise, min_params minimise

General-sum games (a non-saturating GAN, a penalised discriminator) also give each
player's own loss, both to be *minimised*: ``loss_max, loss_min = game.losses()``, e.g. for
GACGD ``GACGD(game.max_params, game.min_params).step(loss_max, loss_min)``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

from ..linalg.flat import flatten, split_like


class PlayerLosses(NamedTuple):
    """Each player's loss, to be minimised by that player."""

    max_player: Tensor
    """Loss of the max player (the discriminator): ``-loss()`` in a zero-sum game."""
    min_player: Tensor
    """Loss of the min player (the generator): ``loss()`` in a zero-sum game."""


class Game(nn.Module):
    """A two-player differentiable game.

    Subclasses define :attr:`max_params`, :attr:`min_params` and :meth:`losses`, and set
    :attr:`is_zero_sum`. Points of the game are flat vectors ``(max params, min params)``
    (see :meth:`point`), the order used by :mod:`fastgame.diagnostics`.
    """

    is_zero_sum: bool = True
    """True when :meth:`loss` gives both players exactly the gradients of :meth:`losses`,
    i.e. optimizing the zero-sum loss plays this game and not a surrogate of it."""

    @property
    def max_params(self) -> list[nn.Parameter]:
        """Parameters of the player that maximises :meth:`loss` (the discriminator)."""
        raise NotImplementedError

    @property
    def min_params(self) -> list[nn.Parameter]:
        """Parameters of the player that minimises :meth:`loss` (the generator)."""
        raise NotImplementedError

    def losses(self) -> PlayerLosses:
        """Both players' losses at the current parameters, each minimised by its player."""
        raise NotImplementedError

    def loss(self) -> Tensor:
        """The zero-sum loss the CGD family takes: max player maximises, min player minimises.

        It is the max player's payoff ``-losses().max_player``. When :attr:`is_zero_sum` is
        False the min player's real loss differs from it (beyond a constant); then this is
        the minimax surrogate of the game.
        """
        return -self.losses().max_player

    def forward(self) -> Tensor:
        """Same as :meth:`loss`."""
        return self.loss()

    # ---- points -----------------------------------------------------------------------
    @property
    def players(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(max_params, min_params)``."""
        return self.max_params, self.min_params

    @property
    def num_params(self) -> tuple[int, int]:
        """Number of scalar parameters of the max and the min player."""
        return sum(p.numel() for p in self.max_params), sum(p.numel() for p in self.min_params)

    def point(self) -> Tensor:
        """The current parameters as one detached flat vector ``(max params, min params)``."""
        return flatten([p.detach() for p in self.max_params + self.min_params])

    def set_point(self, point: Tensor) -> None:
        """Copy a flat vector ``(max params, min params)`` into the parameters (in place).

        In place, so optimizers that view the parameters as flat buffers stay valid.
        """
        params = self.max_params + self.min_params
        n = sum(p.numel() for p in params)
        if not isinstance(point, Tensor) or point.shape != (n,):
            shape = tuple(point.shape) if isinstance(point, Tensor) else type(point).__name__
            raise ValueError(f"a point of this game is a flat tensor of shape ({n},), got {shape}")
        with torch.no_grad():
            for p, piece in zip(params, split_like(point, params)):
                p.copy_(piece)

    def equilibrium(self) -> Optional[Tensor]:
        """The known equilibrium as a point ``(max params, min params)``, or None if the game
        has none (or none in closed form)."""
        return None

    def distance_to_equilibrium(self) -> float:
        """Euclidean distance of the current point to :meth:`equilibrium`."""
        eq = self.equilibrium()
        if eq is None:
            raise ValueError(f"{type(self).__name__} has no known equilibrium")
        return float((self.point() - eq).norm())


def as_tensor(value: object, name: str, dim: Optional[int] = None, shape: Optional[Sequence[int]] = None) -> Tensor:
    """A floating-point tensor copy of ``value`` (default dtype unless already floating),
    checked for dimension, shape and finiteness."""
    t = torch.as_tensor(value)
    t = t.clone() if t.is_floating_point() else t.to(torch.get_default_dtype())
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-dimensional, got shape {tuple(t.shape)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has non-finite entries")
    return t
