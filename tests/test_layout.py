"""The package's layout: the library never loads the application (fastgame.trainer), and the
trainer modules' old import paths give the modules of the new ones."""
import importlib
import subprocess
import sys

import pytest

from fastgame._moved import MOVED

LIBRARY = ["fastgame", "fastgame.optim", "fastgame.linalg", "fastgame.ops", "fastgame.games", "fastgame.losses",
           "fastgame.nn", "fastgame.graphs", "fastgame.diagnostics", "fastgame.graph_guard", "fastgame.doctor"]


def test_the_library_does_not_import_the_trainer():
    code = ("import sys, importlib\n"
            f"for name in {LIBRARY!r}: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('fastgame.trainer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_paths_give_the_moved_module(old):
    module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert module.__name__ == MOVED[old]
