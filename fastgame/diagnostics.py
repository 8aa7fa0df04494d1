r"""Diagnostics for two-player games: local stability at a point and two probes of trained GANs.

Local analysis (Mescheder et al. 2018; docs/design.md §7). The gradient vector field of a
game is v(z) = −(∇_max L_max, ∇_min L_min) at z = (max params, min params), each player descending
its own loss (:meth:`Game.losses`); in a zero-sum game v = (∇_max f, −∇_min f). A point is
locally attracting for the continuous dynamics if every eigenvalue of the Jacobian ∂v/∂z
has a negative real part, and a discrete method z ← F(z) converges locally to a fixed point
iff the spectral radius of ∂F/∂z there is below 1.

* :func:`vector_field`, :func:`jacobian` (dense, small games), :func:`jacobian_eigenvalues`
  (Arnoldi on Jacobian-vector products, networks), :func:`arnoldi_eigenvalues`;
* :func:`update_jacobian`, :func:`spectral_radius` of any optimizer's update map;
* :func:`stackelberg_gradient`: the generator's total derivative along the discriminator's
  best response (the best-response-manifold training of Ehab's report).

Probes of a checkpoint. :func:`icr_probe` (Schäfer et al. 2020): train only the
discriminator versus both players, then let the generator counterattack.
:func:`proximal_probe` (Farnia & Ozdaglar 2020): fix the discriminator (or allow it a
proximal response) and keep optimizing the generator.

Every function takes the point it analyses from the game (or ``point=``) and restores the
game's parameters before returning.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor

from .linalg.arnoldi import arnoldi_eigenvalues
from .linalg.flat import flatten, split_like
from .games.base import Game
from .games.textbook_gda import SimGD
from .linalg.hvp import mixed_hvp

__all__ = [
    "vector_field", "jacobian", "jacobian_eigenvalues", "arnoldi_eigenvalues", "update_jacobian",
    "spectral_radius", "stackelberg_gradient", "icr_probe", "ICRProbe", "ProbeRun", "proximal_probe",
    "ProximalProbe",
]

OptimizerFactory = Callable[..., Any]


# ---- helpers ------------------------------------------------------------------------------
def _check_game(game: Game) -> None:
    if not isinstance(game, Game):
        raise ValueError(f"expected a fastgame.games.Game, got {type(game).__name__}")


@contextlib.contextmanager
def _at(game: Game, point: Optional[Tensor]) -> Iterator[None]:
    """Evaluate at ``point`` (default: where the game is) and restore the game afterwards."""
    _check_game(game)
    saved = copy.deepcopy(game.state_dict())
    try:
        if point is not None:
            game.set_point(torch.as_tensor(point).to(game.point()))
        yield
    finally:
        game.load_state_dict(saved)


def _params(game: Game) -> list[Tensor]:
    return game.max_params + game.min_params


def _closure(game: Game) -> Callable[[], Any]:
    """What an optimizer's ``step`` gets: the zero-sum loss when it is exact, else both losses."""
    return game.loss if game.is_zero_sum else game.losses


def _grad(out: Tensor, params: Sequence[Tensor], create_graph: bool = False) -> list[Tensor]:
    if not out.requires_grad:
        return [torch.zeros_like(p) for p in params]
    return list(torch.autograd.grad(out, list(params), create_graph=create_graph, retain_graph=True,
                                    allow_unused=True, materialize_grads=True))


class _Field:
    """v(z) and products with its Jacobian J = ∂v/∂z, from one evaluation of the losses."""

    def __init__(self, game: Game) -> None:
        self.params = _params(game)
        self.n_max = sum(p.numel() for p in game.max_params)
        self.n = self.n_max + sum(p.numel() for p in game.min_params)
        with torch.enable_grad():
            loss_max, loss_min = game.losses()
            if game.is_zero_sum:
                # v = S∇f with S = diag(I, −I), so J = S·Hess f: one double-backward per product.
                self.full = [_grad(-loss_max, self.params, create_graph=True)]
                g = flatten(self.full[0])
                self.value = torch.cat([g[:self.n_max], -g[self.n_max:]]).detach()
            else:
                self.full = [_grad(loss_max, self.params, create_graph=True),
                             _grad(loss_min, self.params, create_graph=True)]
                self.value = -torch.cat([flatten(self.full[0])[:self.n_max], flatten(self.full[1])[self.n_max:]]).detach()

    def _hvp(self, grads: list[Tensor], u: Tensor) -> Tensor:
        """Hess(loss)·u for the loss whose full gradient (with graph) is ``grads``."""
        return flatten(mixed_hvp(grads, self.params, split_like(u, self.params)))

    def jvp(self, u: Tensor) -> Tensor:
        """J·u."""
        with torch.enable_grad():
            if len(self.full) == 1:
                h = self._hvp(self.full[0], u)
                return torch.cat([h[:self.n_max], -h[self.n_max:]])
            # Row block i of J is −∂(∇_i L_i)/∂z; Hess(L_i)·u restricted to block i gives it.
            return -torch.cat([self._hvp(self.full[0], u)[:self.n_max], self._hvp(self.full[1], u)[self.n_max:]])


# ---- local analysis -------------------------------------------------------------------------
def vector_field(game: Game, point: Optional[Tensor] = None) -> Tensor:
    """v(z) = −(∇_max L_max, ∇_min L_min) as a flat vector (max params first)."""
    with _at(game, point):
        return _Field(game).value


def jacobian(game: Game, point: Optional[Tensor] = None) -> Tensor:
    """The dense Jacobian ∂v/∂z of the vector field, (n, n) with n = all parameters, max first.

    One double-backward pass per column (two for general-sum games): for small games.
    """
    with _at(game, point):
        field = _Field(game)
        eye = torch.eye(field.n, dtype=field.value.dtype, device=field.value.device)
        return torch.stack([field.jvp(eye[j]) for j in range(field.n)], dim=1)


def jacobian_eigenvalues(game: Game, k: int = 6, num_iters: int = 30, which: str = "LM",
                         point: Optional[Tensor] = None) -> Tensor:
    """The k extreme eigenvalues of the vector field's Jacobian by Arnoldi (see
    :func:`arnoldi_eigenvalues`), one double-backward pass per iteration; the losses are
    evaluated once, so a sampled game is analysed on one batch. ``"LR"`` gives the least
    stable directions (Re λ > 0 means locally repelling)."""
    with _at(game, point):
        field = _Field(game)
        return arnoldi_eigenvalues(field.jvp, field.n, k=k, num_iters=num_iters, which=which,
                                   dtype=field.value.dtype, device=field.value.device)


def update_jacobian(game: Game, optimizer: OptimizerFactory, point: Optional[Tensor] = None,
                    delta: Optional[float] = None) -> Tensor:
    r"""The Jacobian ∂F/∂z of one optimizer step z ↦ F(z), by central differences.

    ``optimizer(max_params, min_params)`` builds a fresh optimizer for every evaluation, e.g.
    ``functools.partial(fastgame.BCGD, lr_max=0.1, lr_min=0.1)`` or
    ``partial(fastgame.games.SimGD, lr_max=0.1, lr_min=0.1)``; its ``step`` gets
    ``game.loss`` (zero-sum games) or ``game.losses`` (general-sum games: SimGD and AltGD
    accept it). For a deterministic game and a stateless step; an optimizer's state (e.g.
    ACGD's second moments) is that of its first step. 2n steps for n parameters.

    Args:
        delta: difference step (default eps^(1/3) of the dtype, relative to max(1, |z_j|)).
    """
    with _at(game, point):
        z0 = game.point()
        h = torch.finfo(z0.dtype).eps ** (1 / 3) if delta is None else float(delta)
        if not h > 0:
            raise ValueError(f"delta must be > 0, got {delta!r}")

        def step(z: Tensor) -> Tensor:
            game.set_point(z)
            optimizer(game.max_params, game.min_params).step(_closure(game))
            return game.point()

        cols = []
        for j in range(z0.numel()):
            e = torch.zeros_like(z0)
            e[j] = h * max(1.0, abs(float(z0[j])))
            cols.append((step(z0 + e) - step(z0 - e)) / (2 * e[j]))
        return torch.stack(cols, dim=1)


def spectral_radius(game: Game, optimizer: OptimizerFactory, point: Optional[Tensor] = None,
                    delta: Optional[float] = None) -> float:
    """Spectral radius of :func:`update_jacobian`: below 1 at a fixed point means the
    optimizer converges there locally, above 1 that it is driven away."""
    return float(torch.linalg.eigvals(update_jacobian(game, optimizer, point, delta)).abs().max())


def stackelberg_gradient(game: Game, point: Optional[Tensor] = None) -> Tensor:
    r"""The min player's total derivative along the max player's local best response (dense).

    With the discriminator x (max player) at a stationary point of its loss, the implicit
    function theorem gives its best response x*(y) near the current y, and
    d/dy L_min(y, x*(y)) = ∇_y L_min − (∂²_xy L_max)ᵀ (∂²_xx L_max)⁻¹ ∇_x L_min.
    Its zeros with x at a local best response are the local Stackelberg (minimax) points that
    best-response-manifold training (Ehab's report) converges to; a gradient step along it is
    that method's projected generator step. Raises if ∂²_xx L_max is singular.
    """
    with _at(game, point):
        xs, ys = game.max_params, game.min_params
        params = xs + ys
        nx = sum(p.numel() for p in xs)
        with torch.enable_grad():
            loss_max, loss_min = game.losses()
            g_max = flatten(_grad(loss_max, xs, create_graph=True))
            # Rows ∂(∇_x L_max)_i/∂(x, y): [H_xx | H_xy].
            rows = torch.stack([flatten(_grad(g_max[i], params)) for i in range(nx)])
            g_min = flatten(_grad(loss_min, params))
        h_xx, h_xy = rows[:, :nx], rows[:, nx:]
        return g_min[nx:] - h_xy.T @ torch.linalg.solve(h_xx, g_min[:nx])


# ---- probes of a checkpoint ---------------------------------------------------------------------
@dataclass
class ProbeRun:
    """One run of :func:`icr_probe`, all per step with entry 0 at the checkpoint."""

    discriminator_loss: Tensor
    """The max player's loss L_max (``−loss()`` in a zero-sum game), length steps + 1."""
    output_change: Tensor
    """Mean |outputs − outputs at the checkpoint|: how far the discriminator has moved."""
    generator_grad_norm: Tensor
    """‖∇_min L_min‖: how hard the generator is pulled."""
    counterattack_loss: Tensor
    """L_max while, from the run's end, the discriminator is frozen and only the generator
    trains (length counter_steps + 1): how exposed the discriminator is to counterattack."""
    counterattack_grad_norm: Tensor
    """‖∇_min L_min‖ during the counterattack."""


@dataclass
class ICRProbe:
    """Result of :func:`icr_probe`."""

    discriminator_only: ProbeRun
    """The discriminator trained alone (the generator's learning rate 0)."""
    both: ProbeRun
    """Both players trained together."""


def _record(game: Game, outputs: Callable[[], Tensor], out0: Tensor) -> tuple[float, float, float]:
    with torch.enable_grad():
        loss_max, loss_min = game.losses()
        g = flatten(_grad(loss_min, game.min_params))
    with torch.no_grad():
        change = float((outputs().detach() - out0).abs().mean())
    return float(loss_max.detach()), change, float(g.norm())


def icr_probe(game: Game, lr_max: float, lr_min: float, steps: int = 100, counter_steps: int = 100,
              optimizer: OptimizerFactory = SimGD, outputs: Optional[Callable[[], Tensor]] = None) -> ICRProbe:
    r"""Implicit competitive regularization probe (Schäfer, Zheng & Anandkumar 2020), from the game's current point.

    Runs, each from the checkpoint (the current parameters, restored at the end):

    1. *discriminator only*: ``steps`` steps with the generator's learning rate set to 0;
    2. *both*: ``steps`` steps of both players;

    and after each, a *counterattack*: ``counter_steps`` steps of the generator alone against
    the frozen discriminator. If the checkpoint is held by ICR, the discriminator moves
    (``output_change``) much faster alone than together, its loss drops, the generator's
    gradient grows — and the counterattack then raises the discriminator's loss sharply.
    Losses and gradient norms are those of the zero-sum/player losses at each recorded
    point (one extra evaluation per step; for a sampled game, on a fresh batch).

    Args:
        optimizer: ``optimizer(max_params, min_params, lr_max=..., lr_min=...)``: SimGD (the
            default), AltGD, or fastgame.BCGD / ACGD for zero-sum games. The frozen player gets
            learning rate 0.
        outputs: the discriminator outputs to track, e.g. ``lambda: D(probe_batch)`` on fixed
            real and fake samples; default: the max player's parameters.
    """
    _check_game(game)
    for name, v in (("steps", steps), ("counter_steps", counter_steps)):
        if not (isinstance(v, int) and v >= 0):
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    if outputs is None:
        outputs = lambda: flatten(game.max_params)  # noqa: E731
    closure = _closure(game)

    def run(lr_min_run: float) -> ProbeRun:
        with torch.no_grad():
            out0 = outputs().detach().clone()
        trace = [_record(game, outputs, out0)]
        opt = optimizer(game.max_params, game.min_params, lr_max=lr_max, lr_min=lr_min_run)
        for _ in range(steps):
            opt.step(closure)
            trace.append(_record(game, outputs, out0))
        counter = [trace[-1]]
        opt = optimizer(game.max_params, game.min_params, lr_max=0.0, lr_min=lr_min)
        for _ in range(counter_steps):
            opt.step(closure)
            counter.append(_record(game, outputs, out0))
        t, c = torch.tensor(trace, dtype=torch.float64), torch.tensor(counter, dtype=torch.float64)
        return ProbeRun(t[:, 0], t[:, 1], t[:, 2], c[:, 0], c[:, 2])

    with _at(game, None):
        d_only = run(0.0)
    with _at(game, None):
        both = run(lr_min)
    return ICRProbe(d_only, both)


@dataclass
class ProximalProbe:
    """Result of :func:`proximal_probe`."""

    values: Tensor
    """The generator's (proximal) objective after each of its steps, entry 0 at the checkpoint."""
    gap: float
    """``values[0] − min(values)`` (≥ 0): how much the generator gains by deviating. 0 at a
    Nash equilibrium (``lam=inf``) or a λ-proximal equilibrium."""


def proximal_probe(game: Game, lr: float, steps: int = 100, lam: float = math.inf, inner_steps: int = 10,
                   inner_lr: Optional[float] = None,
                   optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD) -> ProximalProbe:
    r"""Proximal-equilibrium probe (Farnia & Ozdaglar 2020): fix the discriminator, keep optimizing the generator.

    With ``lam=inf`` the discriminator D₀ stays fixed and the generator descends
    L_min(G, D₀); the gap is what it gains — positive unless (G, D₀) is a Nash equilibrium
    for the generator. With finite λ the discriminator may respond proximally: at every
    generator step D̃ minimises L_max(G, D̃) + λ‖D̃ − D₀‖² (``inner_steps`` gradient steps,
    warm-started), and the generator's objective is the proximal one,
    V_λ(G) = L_min(G, D̃) − λ‖D̃ − D₀‖² (= max_D̃ f − λ‖D̃ − D₀‖² in a zero-sum game, whose
    gradient in G is ∇_G f(G, D̃) by Danskin's theorem). Parameter-space Euclidean norm.

    Args:
        lr: the generator's learning rate; ``optimizer(params, lr=lr)`` (default SGD).
        inner_lr: D̃'s step size (default 1/(2λ), exact for the proximal term alone; lower it
            when the discriminator's own curvature is comparable to 2λ).
    """
    _check_game(game)
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not (isinstance(lam, (int, float)) and lam > 0):
        raise ValueError(f"lam must be > 0 (math.inf: a fixed discriminator), got {lam!r}")
    proximal = math.isfinite(lam)
    if proximal:
        inner_lr = 1.0 / (2 * lam) if inner_lr is None else inner_lr
        if not (isinstance(inner_lr, (int, float)) and inner_lr > 0):
            raise ValueError(f"inner_lr must be > 0, got {inner_lr!r}")
        if not (isinstance(inner_steps, int) and inner_steps >= 1):
            raise ValueError(f"inner_steps must be an int >= 1, got {inner_steps!r}")

    with _at(game, None):
        d0 = [p.detach().clone() for p in game.max_params]
        opt = optimizer(game.min_params, lr=lr)

        def distance() -> Tensor:
            return sum(((p - q) ** 2).sum() for p, q in zip(game.max_params, d0))

        def evaluate() -> tuple[float, list[Tensor]]:
            with torch.enable_grad():
                if proximal:  # D̃ ← argmin L_max + λ‖D̃ − D₀‖², warm-started from the last D̃
                    for _ in range(inner_steps):
                        obj = game.losses().max_player + lam * distance()
                        grads = _grad(obj, game.max_params)
                        with torch.no_grad():
                            for p, g in zip(game.max_params, grads):
                                p.sub_(inner_lr * g)
                loss_min = game.losses().min_player
                value = loss_min - lam * distance() if proximal else loss_min
                return float(value.detach()), _grad(loss_min, game.min_params)

        values = []
        for t in range(steps + 1):
            value, grads = evaluate()
            values.append(value)
            if t < steps:
                opt.zero_grad()
                for p, g in zip(game.min_params, grads):
                    p.grad = g
                opt.step()
        opt.zero_grad(set_to_none=True)
        v = torch.tensor(values, dtype=torch.float64)
        return ProximalProbe(v, float(v[0] - v.min()))
