"""Old import paths: the trainer's modules, which lived at the top of the package before
they moved into :mod:`fastgame.trainer`, and two renamed library modules. ``import
fastgame.models`` (the path the README named), ``from fastgame import data`` or
``fastgame.optim.registry`` in a user's script keep working and give the very module object of the new path. Nothing is imported until asked
for, so ``import fastgame`` stays the library alone."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Optional

MOVED = {f"fastgame.{name}": f"fastgame.trainer.{name}" for name in
         ("cli", "train", "compare", "probe", "config", "evaluation", "metrics", "data", "steppers",
          "checkpoint", "plots", "models")}
MOVED["fastgame.optim.registry"] = "fastgame.trainer.methods"
# Renamed library modules (the backend table; the textbook dynamics, which shared a file name
# with optim/dynamics.py).
MOVED["fastgame.ops.registry"] = "fastgame.ops.backends"
MOVED["fastgame.games.dynamics"] = "fastgame.games.textbook_gda"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name and loads it as the module of its new name."""

    def find_spec(self, fullname: str, path, target=None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        # The module is the new path's, already executed. The import system has just filed it
        # under the old name too; keep its own name and spec, so pickles and reprs say where it lives.
        pass


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
