"""The base of the game dynamics CGD is compared with (SimGD, extragradient, consensus, …).

:class:`GameDynamics` gives them the constructor convention of fastgame's optimizers
(``Method(max_params, min_params, lr_max=..., lr_min=..., **method_kwargs)``), zero-sum
``step(loss)`` or general-sum ``step(loss_x, loss_y)``, each player's descent direction (the
gradient of its own loss) and the step pipeline of :class:`GameOptimizer` (checked
all-or-nothing commit, or masked and host-read-free with ``capturable=True``).
:class:`RuleDynamics` adds a torch.optim update rule per player (:mod:`.rules`: SGD or Adam).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence, Union

from torch import Tensor

from .base import GameOptimizer
from .checks import LossOrClosure, boolean, nonnegative, step_arguments, step_count, unit_interval
from ..linalg.game_hvp import GameHVP
from .rules import RULE_STATE, RULES, betas, rule_name


class GameDynamics(GameOptimizer):
    """Base of the game dynamics: player x (group 0) and y (group 1), each with its own ``lr``.

    Zero-sum (the default): x maximises ``loss``, y minimises it. ``general_sum=True``: x
    minimises ``loss_x`` and y ``loss_y`` (``step(loss_x, loss_y)`` or a closure returning the
    pair, e.g. ``game.losses``); the players are then named ``"x"`` and ``"y"`` in the state.

    A subclass supplies :meth:`_propose` (from the flat gradients; :meth:`directions` gives
    each player's descent direction), the per-player state it keeps (:meth:`_state_names`)
    and ``grad_evals``, the gradient evaluations per step that :meth:`get_info` reports (a
    property where it depends on the hyperparameters, e.g. ``inner_steps``).
    """

    hyperparameters = {"lr": nonnegative, "capturable": boolean}
    game_wide = frozenset({"capturable"})
    game_state = {"step": step_count}
    second_order = False
    grad_evals = 1

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float, lr_min: float,
                 general_sum: bool = False, capturable: bool = False,
                 per_player: Optional[dict[str, tuple[Any, Any]]] = None, **defaults: Any) -> None:
        """``per_player``: hyperparameters given as (x's value, y's value)."""
        boolean("general_sum", general_sum)
        self.general_sum = general_sum
        if general_sum:
            self.player_names, self.loss_names, self.player_label = ("x", "y"), ("loss_x", "loss_y"), "player {}"
        per_player = per_player or {}
        for key, pair in per_player.items():
            for value in pair:
                self.hyperparameters[key](key, value)
        defaults.update({key: pair[0] for key, pair in per_player.items()})
        super().__init__(max_params, min_params, lr_max, lr_min, dict(capturable=bool(capturable), **defaults),
                         ("max_params", "min_params"), ("lr_max", "lr_min"))
        for key, pair in per_player.items():
            self.param_groups[1][key] = pair[1]
        self.state["game"] = {"step": 0}
        if self.capturable:  # allocate now, so that even a skipped first step changes no state
            self._prepare_capturable()

    def _config_attrs(self) -> tuple[str, ...]:
        return (*super()._config_attrs(), "general_sum", "player_names", "loss_names", "player_label")

    def _loss_count_hint(self) -> str:
        return "" if self.general_sum else " (general_sum=True takes one per player)"

    @property
    def signs(self) -> tuple[float, float]:
        """What turns the pipeline's step gradients into the gradients of each player's own
        loss: the max player of a zero-sum game ascends f, i.e. descends −f."""
        return (1.0, 1.0) if self.general_sum else (-1.0, 1.0)

    def directions(self, grads: Sequence[Tensor]) -> list[Tensor]:
        """Each player's descent direction, the gradient of its own loss (flat)."""
        return [s * g for s, g in zip(self.signs, grads)]

    def step(self, loss: Union[LossOrClosure, Any] = None, loss_y: Optional[Tensor] = None, *,
             closure: Optional[Callable[[], Any]] = None) -> Union[Tensor, tuple[Tensor, ...]]:
        """One step on the zero-sum ``loss`` (x maximises it, y minimises it) or, with
        ``general_sum=True``, on ``(loss, loss_y)`` (each minimises its own; or one closure
        returning the pair, also as ``closure=``, torch.optim's keyword). No ``backward()`` is
        needed (a closure must not call it). Returns the loss(es), detached.

        Raises ``ValueError`` on bad input and ``FloatingPointError`` naming the player and
        stage on a non-finite value anywhere in the step; either way parameters and state are
        unchanged (``capturable=True``: the step is skipped on the device instead, see
        :meth:`raise_if_nonfinite`).
        """
        return self._run_step(*step_arguments(type(self).__name__, self.loss_names, (loss, loss_y), closure))

    # ---- state ------------------------------------------------------------------------
    def _hvp(self, step_grads: Any, cross: Any) -> GameHVP:
        return GameHVP(self.players, step_grads, cross, self.signs)

    def _extend_info(self, grads: tuple[Tensor, Tensor], deltas: Sequence[Optional[Tensor]], capturable: bool) -> None:
        self.info["grad_evals"] = self.grad_evals  # the step's: no hyperparameter changed since

    def _player_checks(self, what: str, stage: str, values: Sequence[Tensor]) -> list[tuple[str, Tensor]]:
        """One check per player of a per-player intermediate, e.g. ``("∇H", "HVP", grad_h)``."""
        return [(f"{what} of {self.player_label.format(p.name)} (stage: {stage})", t)
                for p, t in zip(self.players, values)]

    def _extrapolated_checks(self, losses: Sequence[Tensor], grads: Sequence[Tensor],
                             where: str) -> list[tuple[str, Tensor]]:
        """The checks of a re-evaluation at another point (see ``_gradients_at``)."""
        labels = [self.player_label.format(p.name) for p in self.players]
        checks = [(f"{name} {where} (stage: forward {where})", t) for name, t in zip(self.loss_names, losses)]
        checks += [(f"gradient of {lab} {where} (stage: gradient {where})", g) for lab, g in zip(labels, grads)
                   if g is not None]
        return checks


class RuleDynamics(GameDynamics):
    """Game dynamics whose players step by a torch.optim update rule each (:mod:`.rules`).

    Args:
        optimizer: ``"sgd"`` or ``"adam"``, or a pair (one per player); the class's default
            (e.g. ``"adam"`` for :class:`~fastgame.optim.SimAdam`) when None. Per param group,
            as ``lr``, ``momentum``, ``betas`` and ``eps``, so the players may differ.
        momentum: SGD's momentum (torch.optim.SGD, dampening 0).
        betas, eps: Adam's (torch.optim.Adam; the default betas are torch's).
    """

    hyperparameters = {**GameDynamics.hyperparameters, "optimizer": rule_name, "momentum": unit_interval,
                       "betas": betas, "eps": nonnegative}
    state_keys = frozenset({"momentum_buffer", "exp_avg", "exp_avg_sq"})
    nonnegative_state_keys = frozenset({"exp_avg_sq"})  # Adam's second moment: a negative one is NaN at √v
    default_rule = "sgd"

    def __init__(self, max_params: Iterable[Tensor], min_params: Iterable[Tensor], lr_max: float, lr_min: float,
                 optimizer: Union[str, tuple[str, str], None] = None, momentum: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, general_sum: bool = False,
                 capturable: bool = False, **defaults: Any) -> None:
        rules = optimizer or self.default_rule
        rules = (rules, rules) if isinstance(rules, str) else rules
        if not (isinstance(rules, (tuple, list)) and len(rules) == 2):
            raise ValueError(f"optimizer must be a rule name or a pair of them, got {optimizer!r}")
        super().__init__(max_params, min_params, lr_max, lr_min, general_sum, capturable,
                         per_player={"optimizer": rules}, momentum=momentum, betas=betas, eps=eps, **defaults)

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return RULE_STATE[group["optimizer"]](group)

    def rule_update(self, i: int, direction: Tensor, step: Tensor, state: Optional[dict[str, Tensor]] = None,
                    lr: Optional[Tensor] = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Player i's update for ``direction`` by its rule, from ``state`` (default: its
        committed state) at step count ``step`` with learning rate ``lr`` (default: its
        group's, from :meth:`_lr_tensors`), and the rule's new state."""
        group, player = self.param_groups[i], self.players[i]
        state = dict(self.state.get(player.name, {})) if state is None else state
        lr = self._lr_tensors()[i] if lr is None else lr
        return RULES[group["optimizer"]](direction, state, lr, step, group)

    def rule_updates(self, directions: Sequence[Tensor], step: Tensor,
                     states: Optional[dict[str, dict[str, Tensor]]] = None
                     ) -> tuple[list[Tensor], dict[str, dict[str, Tensor]]]:
        """Both players' :meth:`rule_update`; the new states keyed by player name."""
        updates, new = [], {}
        lrs = self._lr_tensors()  # once for both players
        for i, (player, d) in enumerate(zip(self.players, directions)):
            u, new[player.name] = self.rule_update(i, d, step, None if states is None else states[player.name], lrs[i])
            updates.append(u)
        return updates, new
