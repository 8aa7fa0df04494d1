"""``python -m fastgame``: the ``fastgame`` command (see :mod:`fastgame.cli`)."""
import sys

from .cli import main

sys.exit(main())
