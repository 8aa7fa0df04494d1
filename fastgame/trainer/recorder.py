"""Where a run's results go: one :class:`Recorder` writes the run folder's sinks — ``config.json``,
``metrics.csv``/``.json``, TensorBoard scalars, the sample pictures and ``curves.png`` — atomically
(:mod:`fastgame.trainer.checkpoint`), and says once when TensorBoard is missing."""
from __future__ import annotations

import os
import shutil
from typing import Any, Callable

from torch import Tensor

from .checkpoint import write_csv, write_json

__all__ = ["Recorder", "TENSORBOARD_MISSING"]

TENSORBOARD_MISSING = ("tensorboard is not installed, so no RUN_DIR/tensorboard/ is written (metrics.csv and "
                       ".json hold the same rows; pip install 'fastgame[tensorboard]' to add it)")

_told: set[str] = set()


class Recorder:
    """The output sinks of the run folder ``out``. ``say`` prints a line for the user (once per
    note); ``picture(path, samples, title)`` draws samples (the evaluator's)."""

    def __init__(self, out: str, picture: Callable[[str, Tensor, str], None], say: Callable[[str], None]) -> None:
        self.out, self._picture, self._say = out, picture, say
        self._board: Any = None  # a TensorBoard writer once opened, False where tensorboard is missing
        self._writer: Any = None  # torch's SummaryWriter class, found by open()

    def open(self, config: dict[str, Any]) -> None:
        """Create the folder's layout and write ``config.json``."""
        os.makedirs(os.path.join(self.out, "samples"), exist_ok=True)
        write_json(os.path.join(self.out, "config.json"), config)
        try:  # here, so that a missing tensorboard is said before training, not under the progress bar
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package; without it, the CSV is all
            self._board = False
            self._tell(TENSORBOARD_MISSING)

    def config(self, config: dict[str, Any]) -> None:
        """Rewrite ``config.json`` (the run's step path changed, e.g. a CUDA-graph fallback)."""
        write_json(os.path.join(self.out, "config.json"), config)

    def rows(self, rows: list[dict[str, Any]]) -> None:
        """All metric rows so far (the last one new) to metrics.csv/.json and TensorBoard."""
        write_csv(os.path.join(self.out, "metrics.csv"), rows, list(rows[-1]))
        write_json(os.path.join(self.out, "metrics.json"), rows)
        self._to_board(rows[-1])

    def samples(self, step: int, samples: Tensor, title: str) -> None:
        """samples/step_NNNNNN.png, copied to samples.png (the latest)."""
        picture = os.path.join(self.out, "samples", f"step_{step:06d}.png")
        self._picture(picture, samples, title)
        shutil.copyfile(picture, os.path.join(self.out, "samples.png"))

    def curves(self, rows: list[dict[str, Any]], metrics: list[str], title: str) -> None:
        """curves.png: losses and metrics against steps."""
        from .plots import plot_curves
        plot_curves(os.path.join(self.out, "curves.png"), rows, metrics, title)

    def _to_board(self, row: dict[str, Any]) -> None:
        """The row's numbers as TensorBoard scalars in RUN_DIR/tensorboard, when tensorboard is installed."""
        if self._board is None:  # opened at the first row: a run that evaluates nothing writes no folder
            self._board = self._writer(os.path.join(self.out, "tensorboard"))
        if self._board:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._board.add_scalar(key, value, row["step"])
            self._board.flush()

    def _tell(self, note: str) -> None:
        if note not in _told:  # once per process: a comparison's runs would repeat it
            _told.add(note)
            self._say(note)

    def close(self) -> None:
        if self._board:
            self._board.close()
        self._board = None
