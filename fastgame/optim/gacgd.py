"""General-sum Adaptive CGD (GACGD), drop-in for ``CGDs.GACGD``."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import Tensor

from ..linalg.gmres import GMRESResult, gmres
from ..linalg.hvp import MixedHVP
from .base import GameOptimizer, Proposal
from .checks import (boolean, nonnegative, optional_count, positive_int, step_arguments, step_count,
                     unit_interval)

TwoLosses = Union[Tensor, Callable[[], tuple[Tensor, Tensor]]]

# CGDs' GMRES returns its right-hand side unsolved when max_iter == 0 or ‖b‖ < 1e-8
# (absolute, in any dtype). GACGD keeps that rule, so its numbers match the reference's
# for tiny gradients too: s = b = (η_x ∇ₓf, η_y ∇ᵧg) is the system's solution to first
# order (the matrix is I + O(η)), i.e. a simultaneous RMSProp gradient step.
REFERENCE_SKIP_NORM = 1e-8

# CGDs' GACGD.info before its first step; the entries a tracked step sets stay until the next one.
CGDS_INFO = {"ada_lr_x": None, "ada_lr_y": None, "errors": 0, "iter_num": 0}
TRACKED_KEYS = ("ada_lr_x", "ada_lr_y", "num_iter", "errors")


class GACGD(GameOptimizer):
    r"""Adaptive CGD for general-sum games: x minimises ``loss_x`` (f), y minimises ``loss_y`` (g).

    Each step solves, by restarted GMRES with mixed Hessian-vector products,

        [[I, η_x D_xy f], [η_y D_yx g, I]] s = [η_x ∇ₓf; η_y ∇ᵧg],   (x, y) -= s,

    with RMSProp step sizes η = lr·√(1-βᵗ)/(√v + eps) per element as in :class:`~fastgame.ACGD`.
    Same keywords, defaults and numbers (to solver tolerance) as ``CGDs.GACGD`` 0.4.5; for a
    zero-sum game (g = -f) it is the ACGD step.

    Args:
        x_params, y_params: the two players' parameters (param groups 0 and 1, so
            ``torch.optim.lr_scheduler`` can change ``lr_x``/``lr_y``).
        x_reducer, y_reducer: accepted for compatibility (DDP reducers of CGDs); fastgame
            all-reduces gradients and HVPs itself under torch.distributed.
        lr_x, lr_y: learning rates. eps, beta: RMSProp (eps outside the bias correction).
        tol, atol: stop when the block system's residual ‖r‖ < tol·‖b‖ or ‖r‖ < atol
            (norms, not squared, as CGDs' GMRES). At least one GMRES iteration is taken, as
            in CGDs; if ``max_iter == 0`` or ‖b‖ < 1e-8 the step is s = b, as in CGDs.
        max_iter: cap on GMRES iterations per step (None: the smaller player's size, with
            O(restart·n) memory where CGDs allocates (n+1)²). One iteration here costs two HVP
            passes, as one of CGDs' does, but gains about as much as two of CGDs', so a step
            that hits the cap is closer to the solution than CGDs' step with the same cap
            (the two then differ by more than the tolerance).
        track_cond: as in CGDs, ``track_cond(loss_x, step)`` (step counted from 1) is called
            at the start of each step when callable; when it returns true, :attr:`info` gets
            CGDs' entries ``ada_lr_x``/``ada_lr_y`` (the step sizes η as numpy arrays),
            ``num_iter`` (the last GMRES iteration's index: iterations - 1) and ``errors``
            (the relative residual ‖r‖/‖b‖ at the start and after each GMRES iteration), kept
            until the next tracked step. :meth:`get_info` always reports fastgame's own
            ``iter_num`` (GMRES iterations taken; CGDs' GACGD leaves its ``iter_num`` at 0),
            ``residual`` (the GMRES estimate of the block residual), ``converged``,
            ``restarts``, ``hvp_passes`` and ``time``. Iterations here gain about twice what
            CGDs' do (see below), so ``num_iter`` and ``errors`` are about half as long.
        restart: m of GMRES(m); memory is m + 1 vectors of the smaller player plus m of
            the larger one. Default 40, measured (``bench/gacgd_cpu.py --sweep``, 2-256-256-1
            MLP GAN): at lr 1e-3..1e-2 a step needs 6-9 iterations and any m >= 10 is the
            same; at lr 0.05 it needs 20-32, and GMRES(20) stagnated to 40-200 where
            GMRES(40) equals full GMRES. Lower it to save memory on large models.
        backend: the fused ops' backend for this optimizer, as for :class:`~fastgame.ACGD`.
        warm_start: start GMRES from the previous step's solution (one extra HVP pass a step).
            Off by default: in the same sweep it never saved an iteration (each step's system
            has new step sizes and curvature), so it only cost the pass.

    How it solves: GMRES runs on the Schur complement of the smaller player a (b the other),

        (I - η_a D_ab η_b D_ba) s_a = η_a (∇_a - D_ab η_b ∇_b),   s_b = η_b (∇_b - D_ba s_a),

    whose Krylov space gains one power of the coupling per two HVPs where GMRES on the block
    system gains half of one (the block matrix is I + N with N² block diagonal). Back-
    substitution makes b's block row exact, so the block system's residual equals the Schur
    system's and the stopping test is the reference's. GMRES also carries η_b D_ba of its
    basis, so s_b costs no extra pass: a cold step takes 1 + 2k HVP passes (k iterations)
    and two create_graph backward passes (one per loss), against CGDs' 2k' + 4 with k' ≈ 2k.
    """

    cgds_class = "GACGD"
    player_names = ("x", "y")
    player_label = "player {}"
    loss_names = ("loss_x", "loss_y")
    hyperparameters = {"lr": nonnegative, "eps": nonnegative, "beta": unit_interval, "tol": nonnegative,
                       "atol": nonnegative, "max_iter": optional_count, "restart": positive_int, "warm_start": boolean}
    game_wide = frozenset({"tol", "atol", "max_iter", "restart", "warm_start"})
    state_keys = frozenset({"square_avg", "warm_start"})
    nonnegative_state_keys = frozenset({"square_avg"})
    game_state = {"step": step_count}

    def __init__(self, x_params: Iterable[Tensor], y_params: Iterable[Tensor],
                 x_reducer: Any = None, y_reducer: Any = None, lr_x: float = 1e-3, lr_y: float = 1e-3,
                 eps: float = 1e-6, beta: float = 0.99, tol: float = 1e-5, atol: float = 1e-6,
                 max_iter: Optional[int] = None, track_cond: Any = None, *, restart: int = 40,
                 warm_start: bool = False, backend: Optional[str] = None) -> None:
        super().__init__(x_params, y_params, lr_x, lr_y,
                         dict(eps=eps, beta=beta, tol=tol, atol=atol, max_iter=max_iter, restart=restart,
                              warm_start=warm_start),
                         ("x_params", "y_params"), ("lr_x", "lr_y"), backend)
        self.track_cond = track_cond
        self.state["game"] = {"step": 0}

    def _config_attrs(self) -> tuple[str, ...]:
        return (*super()._config_attrs(), "track_cond")

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self.info = dict(CGDS_INFO)
        self._tracked_info = {k: CGDS_INFO[k] for k in TRACKED_KEYS if k in CGDS_INFO}
        self._track = False  # what track_cond said for the running step

    def _resolve_losses(self, losses: tuple[Any, ...]) -> tuple[Tensor, ...]:
        losses = super()._resolve_losses(losses)
        # Called as CGDs calls it: with loss_x and the step's count, before anything is computed.
        track_cond = getattr(self, "track_cond", None)
        self._track = bool(track_cond(losses[0], self.state["game"]["step"] + 1)) if callable(track_cond) else False
        return losses

    def step(self, loss_x: Optional[TwoLosses] = None, loss_y: Optional[Tensor] = None, trigger: Any = None, *,
             closure: Optional[Callable[[], tuple[Tensor, Tensor]]] = None) -> tuple[Tensor, Tensor]:
        """One step: x descends ``loss_x``, y descends ``loss_y``, each anticipating the other.

        Pass the two scalar losses (with their graphs; no ``backward()`` needed), or one
        closure returning ``(loss_x, loss_y)`` (also as ``closure=``, torch.optim's keyword;
        it must not call ``backward()``). ``trigger`` is accepted for compatibility
        and ignored. Returns the two losses, detached. Raises ``ValueError`` on bad input
        and ``FloatingPointError`` on a non-finite value anywhere in the step; either way
        parameters and optimizer state are unchanged.
        """
        return self._run_step(*step_arguments(type(self).__name__, self.loss_names, (loss_x, loss_y), closure))

    def _propose(self, grads: tuple[Tensor, Tensor], hvp: MixedHVP, step: Tensor) -> Proposal:
        # hvp(0, ·) = D_xy f ·, hvp(1, ·) = D_yx g · (see GameOptimizer._gradients)
        pre, square_avgs = [], {}
        for player, group, g, lr in zip(self.players, self.param_groups, grads, self._lr_tensors()):
            avg = self.state.get(player.name, {}).get("square_avg")
            new_avg, eta, _, eta_grad = self.ops.precondition(
                g, torch.zeros_like(g) if avg is None else avg, lr, step, group["beta"], group["eps"])
            pre.append((eta, eta_grad))
            square_avgs[player.name] = new_avg
        history: Optional[list[float]] = [] if self._track else None
        s, result = self._solve(hvp, pre, self.param_groups[0], history)  # game-wide solver settings
        keep_start = self.param_groups[0]["warm_start"]  # kept only where the next step reads it
        state = {p.name: {"square_avg": square_avgs[p.name], **({"warm_start": part} if keep_start else {})}
                 for p, part in zip(self.players, s)}
        # Every mixed HVP result reaches the GMRES residual or the solution (a NaN residual
        # stops GMRES early, so it is checked itself).
        checks = [(f"step sizes of player {p.name} (stage: step sizes; check lr and eps)", eta)
                  for p, (eta, _) in zip(self.players, pre)]
        checks.append(("GMRES residual (stage: mixed HVP / GMRES solve)",
                       torch.tensor(result.residual_norm, dtype=torch.float64, device=s[0].device)))
        checks += [(f"GMRES solution for player {p.name} (stage: mixed HVP / GMRES solve)", part)
                   for p, part in zip(self.players, s)]
        info = {"iter_num": result.iterations, "residual": result.residual_norm, "converged": result.converged,
                "restarts": result.restarts}
        if history is not None:
            info.update(self._tracked(pre, result, history))
        return Proposal([-s[0], -s[1]], state, checks, info)

    @staticmethod
    def _tracked(pre: list[tuple[Tensor, Tensor]], result: GMRESResult, history: list[float]) -> dict[str, Any]:
        """CGDs' entries of a tracked step, in its types: the step sizes as numpy arrays, the last
        GMRES iteration's index and the relative residuals (CGDs' 0 and 0 for a skipped solve)."""
        ada_lr = [eta.detach().to("cpu", copy=True).numpy() for eta, _ in pre]  # copies: the step may reuse eta
        return {"ada_lr_x": ada_lr[0], "ada_lr_y": ada_lr[1],
                "num_iter": max(result.iterations - 1, 0), "errors": history if history else 0}

    def _extend_info(self, grads: tuple[Tensor, Tensor], deltas: Any, capturable: bool) -> None:
        self._tracked_info.update({k: self.info[k] for k in TRACKED_KEYS if k in self.info})
        self.info = {**self._tracked_info, **self.info}

    def _solve(self, hvp: MixedHVP, pre: list[tuple[Tensor, Tensor]], group: dict[str, Any],
               history: Optional[list[float]] = None) -> tuple[tuple[Tensor, Tensor], GMRESResult]:
        """Solve the block system for s = (s_x, s_y) by GMRES on the Schur complement of the
        smaller player a (see the class docstring). ``history``: a list to fill with the relative
        residuals ‖r‖/‖b‖ of the solve (:func:`~fastgame.linalg.gmres.gmres`; empty if skipped)."""
        (eta_x, c_x), (eta_y, c_y) = pre
        # The block right-hand side is (c_x, c_y); its norm sets the threshold, as in CGDs.
        b_norm = math.sqrt(float(c_x.double().square().sum() + c_y.double().square().sum()))
        # Non-finite: skip the solve; the caller's finiteness check names the culprit.
        if group["max_iter"] == 0 or not b_norm >= REFERENCE_SKIP_NORM or math.isinf(b_norm):
            return (c_x.clone(), c_y.clone()), GMRESResult(torch.empty(0), 0, b_norm, False)
        threshold = max(group["tol"] * b_norm, group["atol"])
        a = 0 if self.players[0].numel <= self.players[1].numel else 1
        b = 1 - a
        (eta_a, c_a), (eta_b, c_b) = pre[a], pre[b]

        def schur(v: Tensor) -> tuple[Tensor, Tensor]:
            u = eta_b * hvp(b, v)  # η_b D_ba v: GMRES tracks it, so s_b needs no extra pass
            return v - eta_a * hvp(a, u), u

        w0 = self.state.get(self.players[a].name, {}).get("warm_start") if group["warm_start"] else None
        if w0 is None:
            u0 = torch.zeros_like(c_b)
            r0 = c_a - eta_a * hvp(a, c_b)
        else:
            # Solve for the correction to w0: r0 = rhs - S w0 = c_a - w0 - η_a D_ab (c_b - η_b D_ba w0)
            # costs 2 passes where forming rhs and S w0 separately would cost 3.
            u0 = eta_b * hvp(b, w0)
            r0 = c_a - w0 - eta_a * hvp(a, c_b - u0)
        # CGDs' GMRES always takes one iteration, even when ‖b‖ < atol: min_iter=1 keeps its numbers.
        result = gmres(schur, r0, None, tol=0.0, atol=threshold, restart=group["restart"],
                       max_iter=group["max_iter"], min_iter=1, track_like=c_b, history=history)
        if history is not None:
            history[:] = [r / b_norm for r in history]
        s = [None, None]
        s[a] = result.solution if w0 is None else result.solution.add_(w0)
        s[b] = c_b - u0 - result.tracked
        return (s[0], s[1]), result
