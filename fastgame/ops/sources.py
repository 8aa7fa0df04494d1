"""The compiled ops' source files, found by glob (as pytorch/extension-cpp's setup.py does):
every ``.cpp`` under ``csrc/`` goes into ``fastgame._C``, every ``.cu`` into ``fastgame._cuda``.

Used by ``setup.py`` (which loads this file by path, without importing fastgame or torch) and by
the JIT build of :mod:`fastgame.ops._ext`; a new source file needs no list edited.
"""
from __future__ import annotations

import glob
import os

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "csrc")
"""The source tree's csrc/ (present in a checkout, not in an installed package)."""


def sources(kind: str, root: str = CSRC) -> list[str]:
    """The sorted ``.cpp`` (``kind="cpp"``) or ``.cu`` (``kind="cuda"``) files under ``root``,
    as paths relative to ``root``'s parent (what setuptools wants)."""
    suffix = {"cpp": ".cpp", "cuda": ".cu"}[kind]
    found = glob.glob(os.path.join(root, "**", "*" + suffix), recursive=True)
    return sorted(os.path.relpath(f, os.path.dirname(root)) for f in found)
