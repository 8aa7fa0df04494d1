r"""Polymatrix CGD for n ≥ 2 players: PCGD (constant step sizes) and APCGD (RMSProp step sizes).

"Polymatrix Competitive Gradient Descent" (Ma, Letcher, Schäfer, Shi & Anandkumar, 2021):
player i minimises f_i(x_1, …, x_n), and each step is the Nash equilibrium of the local game
with pairwise bilinear interactions,

    x⁺ = x − (I + A H_o)⁻¹ A ξ,   ξ_i = ∇_{x_i} f_i,   (H_o)_{ij} = D²_{x_i x_j} f_i (i ≠ j), (H_o)_{ii} = 0,

with A = diag(η_1 I, …, η_n I). For two players it is GACGD's system. The block system is
solved by restarted GMRES (:func:`fastgame.linalg.gmres.gmres`), on the block system or, when
the players form two groups that do not interact within a group, on a Schur complement; each
product takes one double-backward pass per player (:class:`fastgame.linalg.polymatrix.PolymatrixHVP`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from ..linalg.distributed import all_reduce_mean
from ..linalg.gmres import GMRESResult, gmres
from ..linalg.params import as_param_list, check_players
from ..linalg.polymatrix import PolymatrixHVP
from .. import ops
from .base import GameOptimizer, Proposal
from .checks import is_closure, nonnegative, one_of, optional_count, positive_int, step_count, unit_interval

PlayerSpec = Union[Iterable[Tensor], dict[str, Any]]
Losses = Union[Tensor, Sequence[Tensor], Callable[[], Sequence[Tensor]]]
PRODUCTS = ("per_player", "pairwise")
SOLVES = ("auto", "block")


class PCGD(GameOptimizer):
    r"""Polymatrix CGD with constant step sizes: A = diag(lr_i).

    Args:
        players: one entry per player (at least two), each an iterable of its parameters or a
            torch-style param-group dict (``{"params": ..., "lr": ...}``). Player i is param
            group i, so ``torch.optim.lr_scheduler`` changes each player's ``lr``.
        lr: the step size of every player whose group does not set its own.
        tol, atol: stop GMRES when the block residual ‖r‖ < max(tol·‖A ξ‖, atol) (norms, as
            GACGD; at least one GMRES iteration is taken, so a tiny right-hand side still
            gives s ≈ A ξ). Defaults are GACGD's, so two players give its numbers.
        max_iter: cap on GMRES iterations per step (None: the players' total size; 0: the
            simultaneous step s = A ξ).
        restart: m of GMRES(m); memory is m + 1 vectors of all players' size.
        product: ``"per_player"`` (n double-backward passes per product with H_o) or
            ``"pairwise"`` (n(n−1) passes, one per block, as the public research code does;
            the same numbers, for measuring the saving).
        solve: ``"auto"``: when the players split into two groups that do not interact within
            a group (two players; one generator against K discriminators), GMRES runs on the
            Schur complement of the smaller group, as GACGD's does (about half the iterations,
            the same n passes per product); otherwise, and with ``"block"``, on the block system.
        backend: the fused ops' backend for this optimizer, as for :class:`~fastgame.ACGD`.

    :meth:`get_info` reports ``iter_num`` (GMRES iterations), ``residual``, ``converged``,
    ``restarts``, ``products`` (GMRES's products with its matrix: iterations + restarts),
    ``solve`` (``"block"``, ``"schur"``, or ``"none"`` when ``max_iter == 0``), ``hvp_passes``
    (n per product, plus ``rhs_passes``: the Schur solve's right-hand side takes one per player
    of the smaller group) and ``time``.
    """

    player_label = "player {}"
    hyperparameters = {"lr": nonnegative, "tol": nonnegative, "atol": nonnegative, "max_iter": optional_count,
                       "restart": positive_int, "product": one_of(*PRODUCTS), "solve": one_of(*SOLVES)}
    game_wide = frozenset({"tol", "atol", "max_iter", "restart", "product", "solve"})
    game_state = {"step": step_count}

    def __init__(self, players: Sequence[PlayerSpec], lr: float = 1e-3, *, tol: float = 1e-5, atol: float = 1e-6,
                 max_iter: Optional[int] = None, restart: int = 40, product: str = "per_player", solve: str = "auto",
                 backend: Optional[str] = None, **defaults: Any) -> None:
        defaults = dict(lr=lr, tol=tol, atol=atol, max_iter=max_iter, restart=restart, product=product, solve=solve,
                        **defaults)
        unknown = sorted(set(defaults) - set(self.hyperparameters))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s) {unknown}")
        for key, value in defaults.items():
            self.hyperparameters[key](key, value)
        groups = self._player_groups(players)
        ops.dispatch(backend)  # an unknown or unusable backend fails here, before anything else
        self.backend = backend
        self.player_names = tuple(str(i) for i in range(len(groups)))
        self.loss_names = tuple(f"loss_{i}" for i in range(len(groups)))
        torch.optim.Optimizer.__init__(self, groups, defaults)
        self._validate_groups(self.param_groups, "__init__")
        self._groups_fixed = True
        self._init_runtime()
        self.state["game"] = {"step": 0}

    def _player_groups(self, players: Sequence[PlayerSpec]) -> list[dict[str, Any]]:
        """One param group per player, validated: at least two, no parameter in two of them."""
        if isinstance(players, Tensor) or not isinstance(players, (list, tuple)):
            raise ValueError(f"{type(self).__name__} takes a list with one entry per player (an iterable of "
                             f"its parameters or a param-group dict), got {type(players).__name__}")
        if len(players) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two players, got {len(players)}")
        per_player = sorted(set(self.hyperparameters) - self.game_wide)
        groups = []
        for i, spec in enumerate(players):
            group = dict(spec) if isinstance(spec, dict) else {"params": spec}
            if "params" not in group:
                raise ValueError(f"players[{i}] is a dict without 'params'")
            extra = sorted(set(group) - {"params", *per_player})
            if extra:
                raise ValueError(f"players[{i}] sets {extra}; a player's group may set only {per_player} "
                                 f"(the others are game-wide: pass them to {type(self).__name__}(...))")
            group["params"] = as_param_list(group["params"], f"players[{i}]")
            group["player"] = str(i)
            groups.append(group)
        check_players([g["params"] for g in groups], [f"players[{i}]" for i in range(len(groups))])
        return groups

    def _config_attrs(self) -> tuple[str, ...]:
        return (*super()._config_attrs(), "player_names", "loss_names")

    def step(self, *losses: Losses, closure: Optional[Callable[[], Sequence[Tensor]]] = None) -> tuple[Tensor, ...]:
        """One step: every player descends its own loss, anticipating the others.

        Pass one loss per player (``step(l0, l1, l2)`` or ``step([l0, l1, l2])``, with their
        graphs; no ``backward()`` needed), or a closure returning them (``step(fn)`` or
        ``step(closure=fn)``). Returns the losses, detached. Raises ``ValueError`` on bad
        input and ``FloatingPointError`` on a non-finite value anywhere in the step; either
        way parameters and optimizer state are unchanged.
        """
        if closure is not None:
            if losses:
                raise ValueError(f"pass either the losses or closure=, not both, to {type(self).__name__}.step")
            if not is_closure(closure):
                raise ValueError(f"closure must be callable, got {type(closure).__name__}")
            return self._run_step(closure)
        if len(losses) == 1 and isinstance(losses[0], (list, tuple)):
            losses = tuple(losses[0])
        if not losses:
            raise ValueError(f"{type(self).__name__}.step needs one loss per player ({', '.join(self.loss_names)}) "
                             "or a closure returning them")
        return self._run_step(*losses)

    def set_lr(self, *lrs: float) -> None:
        """Set every player's learning rate, in player order (schedulers also work)."""
        if len(lrs) != len(self.players):
            raise ValueError(f"set_lr takes one learning rate per player ({len(self.players)}), got {len(lrs)}")
        for i, lr in enumerate(lrs):
            nonnegative(f"lr of player {i}", lr)
        for group, lr in zip(self.param_groups, lrs):
            group["lr"] = lr

    # ---- gradients and the mixed products -------------------------------------------------
    def _gradients(self, losses: tuple[Tensor, ...], second_order: Optional[bool] = None
                   ) -> tuple[tuple[Tensor, ...], PolymatrixHVP]:
        """ξ_i = ∇_{x_i} f_i (flat, averaged across ranks) and the products with H_o, from one
        create_graph backward per loss over every player's parameters."""
        grads = self._on_all_ranks("the gradients", lambda: [self._loss_grads(i, f) for i, f in enumerate(losses)])
        with torch.no_grad():
            flat = tuple(all_reduce_mean(p.gather(g[i])) for i, (p, g) in enumerate(zip(self.players, grads)))
        return flat, PolymatrixHVP(self.players, grads, pairwise=self.param_groups[0]["product"] == "pairwise")

    def _loss_grads(self, i: int, loss: Tensor) -> list[list[Tensor]]:
        """∇_{x_j} f_i for every player j (with graph; zeros without one where f_i does not use
        a parameter). A loss that does not reach its own player is refused."""
        params = [p for player in self.players for p in player.params]
        try:
            g = torch.autograd.grad(loss, params, retain_graph=True, create_graph=True, allow_unused=True)
        except RuntimeError as exc:
            if "backward through the graph a second time" not in str(exc):
                raise
            raise ValueError(f"the graph of {self.loss_names[i]} was already freed (by backward() or another "
                             "autograd call without retain_graph=True); compute it again and pass it to step() "
                             "without calling backward()") from None
        out, start = [], 0
        for player in self.players:
            out.append(list(g[start:start + len(player.params)]))
            start += len(player.params)
        if all(t is None for t in out[i]):
            raise ValueError(f"{self.loss_names[i]} does not depend on the parameters of player {i}: each player "
                             "needs a loss of its own parameters (are the losses in player order?)")
        return [[torch.zeros_like(p) if t is None else t for p, t in zip(player.params, gs)]
                for player, gs in zip(self.players, out)]

    # ---- the method ---------------------------------------------------------------------------
    def _step_sizes(self, grads: tuple[Tensor, ...], step: Tensor) -> tuple[list[Tensor], list[Tensor], dict]:
        """Each player's step sizes η_i (a 0-dim tensor here), the right-hand side η_i ξ_i, and
        the per-player state to commit (none here)."""
        etas = [lr.to(g.dtype) for g, lr in zip(grads, self._lr_tensors())]
        return etas, [eta * g for eta, g in zip(etas, grads)], {}

    def _propose(self, grads: tuple[Tensor, ...], hvp: PolymatrixHVP, step: Tensor) -> Proposal:
        etas, rhs, state = self._step_sizes(grads, step)
        s, result, solve_info = self._solve(hvp, etas, rhs, self.param_groups[0])  # game-wide solver settings
        # Every product with H_o reaches the GMRES residual or the solution (a NaN residual
        # stops GMRES early, so it is checked itself).
        checks = [(f"step sizes of player {p.name} (stage: step sizes; check lr and eps)", eta)
                  for p, eta in zip(self.players, etas)]
        checks.append(("GMRES residual (stage: mixed HVP / GMRES solve)",
                       torch.tensor(result.residual_norm, dtype=torch.float64, device=s[0].device)))
        checks += [(f"GMRES solution for player {p.name} (stage: mixed HVP / GMRES solve)", part)
                   for p, part in zip(self.players, s)]
        info = {"iter_num": result.iterations, "residual": result.residual_norm, "converged": result.converged,
                "restarts": result.restarts, "products": result.iterations + result.restarts, **solve_info}
        return Proposal([-part for part in s], state, checks, info)

    def _solve(self, hvp: PolymatrixHVP, etas: Sequence[Tensor], rhs: Sequence[Tensor],
               group: dict[str, Any]) -> tuple[list[Tensor], GMRESResult, dict[str, Any]]:
        """s = (I + A H_o)⁻¹ A ξ as per-player flat parts, and which solve ran (``solve``) with the
        passes its right-hand side took (``rhs_passes``)."""
        b_norm = math.sqrt(float(torch.stack([part.double().square().sum() for part in rhs]).sum()))  # one read
        if group["max_iter"] == 0 or not math.isfinite(b_norm):  # non-finite: the checks name the culprit
            return [part.clone() for part in rhs], GMRESResult(torch.empty(0), 0, b_norm, False), \
                {"solve": "none", "rhs_passes": 0}
        threshold = max(group["tol"] * b_norm, group["atol"])
        split = hvp.two_groups() if group["solve"] == "auto" else None
        if split is None:
            return (*self._solve_block(hvp, etas, rhs, threshold, group), {"solve": "block", "rhs_passes": 0})
        s, result, rhs_passes = self._solve_schur(hvp, etas, rhs, threshold, group, split)
        return s, result, {"solve": "schur", "rhs_passes": rhs_passes}

    def _solve_block(self, hvp: PolymatrixHVP, etas: Sequence[Tensor], rhs: Sequence[Tensor], threshold: float,
                     group: dict[str, Any]) -> tuple[list[Tensor], GMRESResult]:
        """GMRES on the block system itself: n passes per product."""
        sizes = [p.numel for p in self.players]

        def matvec(v: Tensor) -> Tensor:
            parts = torch.split(v, sizes)
            out = torch.empty_like(v)
            for part, eta, hv, dest in zip(parts, etas, hvp(parts), torch.split(out, sizes)):
                torch.addcmul(part, eta, hv, out=dest)  # v_i + η_i (H_o v)_i, one kernel
            return out

        result = gmres(matvec, torch.cat(list(rhs)), None, tol=0.0, atol=threshold, restart=group["restart"],
                       max_iter=group["max_iter"], min_iter=1)
        return list(torch.split(result.solution, sizes)), result

    def _solve_schur(self, hvp: PolymatrixHVP, etas: Sequence[Tensor], rhs: Sequence[Tensor], threshold: float,
                     group: dict[str, Any], split: tuple[list[int], list[int]]) -> tuple[list[Tensor], GMRESResult, int]:
        """GMRES on the Schur complement of the smaller of two groups a, b of players that do not
        interact within a group (GACGD's solve, for two players):

            (I − η_a H_ab η_b H_ba) s_a = c_a − η_a H_ab c_b,   s_b = c_b − η_b H_ba s_a,

        H_ab, H_ba H_o's blocks between the groups. One Schur product takes a pass per player of
        b, then one per player of a (n in all), and gains a power of the coupling where a block
        product gains half of one; back-substitution makes b's rows exact, so the block residual
        is the Schur residual and the stopping test is the block system's. GMRES tracks
        η_b H_ba of its basis, so s_b costs no pass. Also returns the right-hand side's passes."""
        a, b = split
        if sum(self.players[i].numel for i in a) > sum(self.players[i].numel for i in b):
            a, b = b, a
        n = len(self.players)
        sizes_a, sizes_b = [self.players[i].numel for i in a], [self.players[i].numel for i in b]

        def across(to: list[int], source: list[int], parts: Sequence[Tensor]) -> Tensor:
            """η_i Σ_{j ∈ source} D²_{x_i x_j} f_i v_j for every i in ``to``, concatenated."""
            vecs: list[Optional[Tensor]] = [None] * n
            for j, part in zip(source, parts):
                vecs[j] = part
            return torch.cat([etas[i] * hvp.row(i, vecs, source) for i in to])

        def schur(v: Tensor) -> tuple[Tensor, Tensor]:
            u = across(b, a, torch.split(v, sizes_a))  # η_b H_ba v
            return v - across(a, b, torch.split(u, sizes_b)), u

        c_b = torch.cat([rhs[i] for i in b])
        before = hvp.passes
        r0 = torch.cat([rhs[i] for i in a]) - across(a, b, [rhs[i] for i in b])
        rhs_passes = hvp.passes - before
        result = gmres(schur, r0, None, tol=0.0, atol=threshold, restart=group["restart"],
                       max_iter=group["max_iter"], min_iter=1, track_like=c_b)
        s: list[Optional[Tensor]] = [None] * n
        for i, part in zip(a, torch.split(result.solution, sizes_a)):
            s[i] = part
        for i, part in zip(b, torch.split(c_b - result.tracked, sizes_b)):
            s[i] = part
        return s, result, rhs_passes


class APCGD(PCGD):
    r"""Adaptive polymatrix CGD: A = diag(η_i) with the RMSProp step sizes of ACGD/GACGD,
    η_i = lr_i·√(1−βᵗ)/(√v_i + eps) per element (v_i the running mean of ξ_i²; the fused
    ``precondition`` op). For two players it is :class:`~fastgame.GACGD`'s step.

    Args: as :class:`PCGD`, plus ``eps`` and ``beta`` (RMSProp; per player, like ``lr``,
    settable in a player's group). Defaults are GACGD's.
    """

    hyperparameters = {**PCGD.hyperparameters, "eps": nonnegative, "beta": unit_interval}
    state_keys = frozenset({"square_avg"})
    nonnegative_state_keys = frozenset({"square_avg"})

    def __init__(self, players: Sequence[PlayerSpec], lr: float = 1e-3, *, eps: float = 1e-6, beta: float = 0.99,
                 **kwargs: Any) -> None:
        super().__init__(players, lr, eps=eps, beta=beta, **kwargs)

    def _step_sizes(self, grads: tuple[Tensor, ...], step: Tensor) -> tuple[list[Tensor], list[Tensor], dict]:
        etas, rhs, state = [], [], {}
        for player, group, g, lr in zip(self.players, self.param_groups, grads, self._lr_tensors()):
            avg = self.state.get(player.name, {}).get("square_avg")
            new_avg, eta, _, eta_grad = self.ops.precondition(
                g, torch.zeros_like(g) if avg is None else avg, lr, step, group["beta"], group["eps"])
            etas.append(eta)
            rhs.append(eta_grad)
            state[player.name] = {"square_avg": new_avg}
        return etas, rhs, state
