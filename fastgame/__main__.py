"""``python -m fastgame``: the ``fastgame`` command (see :mod:`fastgame.cli`)."""
from .cli import entry

entry()
