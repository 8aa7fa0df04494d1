"""The compiled ops (C++ CPU in ``fastgame._C``, CUDA in ``fastgame._cuda``): loading, and
their op table (:class:`~fastgame.ops.interface.OpTable`) over ``torch.ops.fastgame``.

The libraries are loaded on first need (:func:`load`; reading ``CPP_ERROR`` or ``CUDA_ERROR``
loads them), not when fastgame is imported. Loading never raises: a missing or broken
extension leaves ``CPP_ERROR`` / ``CUDA_ERROR`` set to the reason, and :mod:`fastgame.ops`
uses another backend. With ``FASTGAME_JIT=1`` a missing extension is built from the source
tree's ``csrc/`` with ``torch.utils.cpp_extension.load`` (cached under ``TORCH_EXTENSIONS_DIR``).
The schemas and fake kernels are those declared with the twins (:data:`~fastgame.ops.interface.SCHEMAS`).
"""
from __future__ import annotations

import importlib
import os
from typing import Optional

import torch

from . import schemas
from .interface import SCHEMAS, OpTable
from .sources import CSRC, sources

_errors: dict[str, Optional[str]] = {}  # "CPP_ERROR" / "CUDA_ERROR" -> None or why unavailable, once loaded


def __getattr__(name: str):
    if name in ("CPP_ERROR", "CUDA_ERROR"):
        load()
        return _errors[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _jit_wanted() -> bool:
    return os.environ.get("FASTGAME_JIT", "").strip().lower() not in ("", "0", "false", "no")


def _jit(name: str, kind: str) -> None:
    from torch.utils.cpp_extension import load as build
    cuda = kind == "cuda"
    flags = ["-O3", "-fopenmp", "-fno-math-errno", "-ffp-contract=off"]
    build(name=name, sources=[os.path.join(os.path.dirname(CSRC), s) for s in sources(kind)],
          extra_include_paths=[CSRC], extra_cflags=flags if not cuda else ["-O3"],
          extra_ldflags=["-fopenmp"] if not cuda else [], extra_cuda_cflags=["-O3", "--expt-relaxed-constexpr"],
          is_python_module=False, verbose=False)


def _installed_copy(module: str) -> Optional[str]:
    """The built library of ``module`` in another sys.path entry: fastgame imported from a
    source checkout while a regular install put the extension in site-packages."""
    import importlib.machinery
    import sys
    rel = module.split(".")
    for entry in sys.path:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(entry or ".", *rel[:-1], rel[-1] + suffix)
            if os.path.isfile(path):
                return path
    return None


def _load(module: str, jit_name: str, kind: str) -> Optional[str]:
    """Import an extension module (or JIT-build it); return None or why it is unavailable."""
    try:
        importlib.import_module(module)
        return None
    except Exception as exc:  # ImportError, or an undefined symbol from a torch mismatch
        error = f"not built ({type(exc).__name__}: {exc})"
    path = _installed_copy(module)
    if path is not None:
        try:
            torch.ops.load_library(path)
            return None
        except Exception as exc:
            error += f"; loading {path} failed ({type(exc).__name__}: {exc})"
    if not _jit_wanted():
        return error
    if not os.path.isdir(CSRC):
        return error + "; FASTGAME_JIT=1 but no csrc/ next to the package"
    try:
        _jit(jit_name, kind)
        return None
    except Exception as exc:
        return f"{error}; JIT build failed ({type(exc).__name__}: {exc})"


def load() -> None:
    """Load the compiled kernels and register their schemas, once."""
    if _errors:
        return
    cpp = _load("fastgame._C", "fastgame_C", "cpp")
    # The CUDA kernels need only the schemas (defined below), not fastgame._C.
    cuda = "torch is built without CUDA" if torch.version.cuda is None else _load("fastgame._cuda", "fastgame_cuda",
                                                                                   "cuda")
    try:
        schemas.define(SCHEMAS)  # after loading: a library built before the schemas moved to Python defines them too
    except RuntimeError as exc:
        cpp = cpp or str(exc)
        cuda = cuda or str(exc)
    _errors.update(CPP_ERROR=cpp, CUDA_ERROR=cuda)


# The ops through the dispatcher, under their registered names (OpSchema.registered), which picks
# the C++ or the CUDA kernel by the tensors' device.
OPS = OpTable("compiled", lambda schema: getattr(torch.ops.fastgame, schema.registered).default)
