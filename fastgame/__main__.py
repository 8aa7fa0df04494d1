"""``python -m fastgame``: the ``fastgame`` command (see :mod:`fastgame.trainer.cli`)."""
from .trainer.cli import entry

entry()
