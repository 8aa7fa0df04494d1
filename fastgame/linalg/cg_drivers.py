"""How a solve's CG iterations are run (``driver`` of :func:`fastgame.linalg.cg.run_cg`), as
strategies: when the convergence test is read on the host, whether an iteration after
convergence is a masked no-op, and who runs the iterations (this loop, a CUDA graph replayed
per iteration, or the host loop of a piecewise-graphed step).

* :class:`HostChecked`: plain CG, the test read after every iteration (the eager default);
* :class:`Masked`: masked iterations, the test read every ``check_every`` (None: never, exactly
  ``max_iter`` iterations, for a step captured whole); the count is a device tensor;
* :class:`Replayed`: masked iterations replayed from a graph captured at the first one
  (:class:`~fastgame.linalg.captured.IterationReplay`);
* :class:`Piecewise`: the masked iterations handed to a :class:`~fastgame.linalg.captured.CGPieces`.

All give the same iterates. A new execution mode is one class here (and a case in
:func:`cg_driver` if the optimizers choose it from their settings).
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, Union

import torch
from torch import Tensor

from .captured import CGPieces, IterationReplay, cg_host_loop
from .hvp import MixedHVP


class CGIterations(Protocol):
    """One solve's CG as a driver sees it (made by :func:`fastgame.linalg.cg.run_cg`)."""
    rr: Tensor      # ‖r‖² of the current iterate
    hvp: MixedHVP   # whose passes the iterations take

    def iterate(self, active: Optional[Tensor] = None, in_place: bool = False) -> Tensor:
        """One iteration, a no-op where the device bool ``active`` is False; ``in_place``: written
        into the buffers made before the first one (what a replayed graph reads). The new ‖r‖²."""


class CGDriver:
    """Runs a solve's CG iterations."""

    def bound(self, max_iter: Optional[int], size: int) -> int:
        """The iteration bound of a system of ``size`` unknowns (``max_iter`` None: the size, as the reference)."""
        return size if max_iter is None else max_iter

    def run(self, cg: CGIterations, threshold: Tensor, max_iter: int) -> Union[int, Tensor]:
        """Iterate until ‖r‖² < ``threshold`` (or a non-finite ‖r‖²), at most ``max_iter`` times;
        the iterations taken (a device tensor where they are not counted on the host)."""
        raise NotImplementedError


class HostChecked(CGDriver):
    """Plain CG: the test read on the host after every iteration, so exactly the iterations needed."""

    def run(self, cg: CGIterations, threshold: Tensor, max_iter: int) -> int:
        if not (bool(cg.rr >= threshold) and max_iter > 0):  # also stops on a non-finite residual
            return 0
        for n in range(1, max_iter + 1):
            rr_new = cg.iterate()
            if n == max_iter or not bool(rr_new >= threshold):
                return n
        return max_iter


class _MaskedIterations(CGDriver):
    """Base of the drivers whose iterations are masked no-ops once converged: ``active`` (a device
    bool) and ``count`` (the effective iterations, int64) live on the device, so an iteration reads
    nothing; :meth:`loop` says when ``active`` is read and who runs the iterations."""

    in_place = False  # whether an iteration must write into the buffers made before the first one

    def run(self, cg: CGIterations, threshold: Tensor, max_iter: int) -> Union[int, Tensor]:
        active = cg.rr >= threshold
        count = torch.zeros((), dtype=torch.int64, device=cg.rr.device)
        cg.rr = cg.rr.clone()  # written in place from here on

        def masked() -> None:
            rr_new = cg.iterate(active, self.in_place)
            count.add_(active)
            active.logical_and_(rr_new >= threshold)

        return self.loop(masked, cg.hvp, active, count, max_iter)

    def loop(self, masked: Callable[[], None], hvp: MixedHVP, active: Tensor, count: Tensor,
             max_iter: int) -> Union[int, Tensor]:
        """Run ``masked`` (one iteration, in place) up to ``max_iter`` times; the iterations taken."""
        raise NotImplementedError


def _host_check(check_every: Optional[int], who: str) -> int:
    if check_every is None:
        raise ValueError(f"{who} read the convergence test on the host: give check_every")
    return check_every


class Masked(_MaskedIterations):
    """Masked iterations, ``active`` read every ``check_every`` iterations (one small copy; the
    iterations up to the next read are no-ops), or never (None: exactly ``max_iter`` iterations,
    nothing read, for a step captured whole). The count is the device tensor."""

    def __init__(self, check_every: Optional[int]) -> None:
        self.check_every = check_every

    def bound(self, max_iter: Optional[int], size: int) -> int:
        if max_iter is None and self.check_every is None:
            raise ValueError("a solve without host checks (check_every=None) needs max_iter")
        return super().bound(max_iter, size)

    def loop(self, masked, hvp, active, count, max_iter):
        if self.check_every is None:
            for _ in range(max_iter):
                masked()
        else:
            cg_host_loop(masked, active, max_iter, self.check_every)
        return count


class Replayed(_MaskedIterations):
    """Masked iterations replayed from the CUDA graph ``replay`` captures at the first one, the
    test read every ``check_every`` iterations; the count is read on the host (it is anyway)."""

    in_place = True

    def __init__(self, replay: IterationReplay, check_every: Optional[int]) -> None:
        self.replay = replay
        self.check_every = _host_check(check_every, "graph-replayed CG iterations")

    def loop(self, masked, hvp, active, count, max_iter):
        cg_host_loop(lambda: self.replay.run(masked, hvp), active, max_iter, self.check_every)
        return int(count)


class Piecewise(_MaskedIterations):
    """The masked iterations handed to ``pieces``, which runs them now with the host loop or records
    one into a graph of its own (a piecewise-graphed step). ``max_iter`` is then a bound capped at the
    system size (the eager default), so the iterations are an eager solve's. The count is a host int
    if they ran now with ``check_every`` 1, else the device tensor."""

    in_place = True

    def __init__(self, pieces: CGPieces, check_every: Optional[int]) -> None:
        self.pieces = pieces
        self.check_every = _host_check(check_every, "CG pieces")

    def bound(self, max_iter: Optional[int], size: int) -> int:
        return size if max_iter is None else min(max_iter, size)  # never past an eager step's default

    def loop(self, masked, hvp, active, count, max_iter):
        n = self.pieces.iterate(masked, hvp, active, count, max_iter, self.check_every)
        return n if n is not None and self.check_every == 1 else count


HOST_CHECKED = HostChecked()


def cg_driver(check_every: Optional[int], replay: Optional[IterationReplay] = None,
              pieces: Optional[CGPieces] = None) -> CGDriver:
    """The driver of a solve reading the test every ``check_every`` iterations (None: never), its
    iterations handed to ``pieces`` or else replayed by ``replay`` when given."""
    if pieces is not None:
        return Piecewise(pieces, check_every)
    if replay is not None:
        return Replayed(replay, check_every)
    return HOST_CHECKED if check_every == 1 else Masked(check_every)
