"""The compiled ops (C++ CPU in ``fastgame._C``, CUDA in ``fastgame._cuda``): loading,
fake kernels, and the interface's functions (:mod:`fastgame.ops.interface`) over them.

Loading never raises: a missing or broken extension leaves ``CPP_ERROR`` / ``CUDA_ERROR``
set to the reason, and :mod:`fastgame.ops` uses another backend. With ``FASTGAME_JIT=1`` a
missing extension is built on first import from the source tree's ``csrc/`` with
``torch.utils.cpp_extension.load`` (cached under ``TORCH_EXTENSIONS_DIR``).
"""
from __future__ import annotations

import importlib
import os
from typing import Callable, Optional

import torch

from .interface import OPS, op

CPP_ERROR: Optional[str] = "not loaded"
CUDA_ERROR: Optional[str] = "not loaded"

_CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "csrc")


def _jit_wanted() -> bool:
    return os.environ.get("FASTGAME_JIT", "").strip().lower() not in ("", "0", "false", "no")


def _jit(name: str, sources: list[str], cuda: bool) -> None:
    from torch.utils.cpp_extension import load
    flags = ["-O3", "-fopenmp", "-fno-math-errno", "-ffp-contract=off"]
    load(name=name, sources=[os.path.join(_CSRC, s) for s in sources], extra_include_paths=[_CSRC],
         extra_cflags=flags if not cuda else ["-O3"], extra_ldflags=["-fopenmp"] if not cuda else [],
         extra_cuda_cflags=["-O3", "--expt-relaxed-constexpr"], is_python_module=False, verbose=False)


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


def _load(module: str, jit_name: str, sources: list[str], cuda: bool) -> Optional[str]:
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
    if not os.path.isdir(_CSRC):
        return error + "; FASTGAME_JIT=1 but no csrc/ next to the package"
    try:
        _jit(jit_name, sources, cuda)
        return None
    except Exception as exc:
        return f"{error}; JIT build failed ({type(exc).__name__}: {exc})"


def _register_fakes() -> None:
    """Shapes and dtypes of the outputs, for FakeTensor / torch.compile / opcheck."""

    @torch.library.register_fake("fastgame::precondition")
    def _(grad, square_avg, lr, step, beta, eps):
        return tuple(torch.empty_like(grad) for _ in range(4))

    @torch.library.register_fake("fastgame::cg_matvec")
    def _(p, sqrt_eta, t):
        return torch.empty_like(p), p.new_empty(())

    @torch.library.register_fake("fastgame::cg_step")
    def _(w, u, r, p, q, ap, rr, pap):
        return r.new_empty(())

    @torch.library.register_fake("fastgame::cg_direction")
    def _(p, r, rr_new, rr, sqrt_eta):
        return torch.empty_like(p)


def load() -> None:
    """Load the compiled ops once (called by :mod:`fastgame.ops` at import)."""
    global CPP_ERROR, CUDA_ERROR
    if CPP_ERROR != "not loaded":
        return
    CPP_ERROR = _load("fastgame._C", "fastgame_C", ["ops.cpp", "cpu/ops.cpp", "cpu/kernels_base.cpp", "cpu/kernels_avx2.cpp"], cuda=False)
    if CPP_ERROR is not None:
        # The CUDA kernels implement the schemas that fastgame._C defines: nothing to attach to.
        CUDA_ERROR = f"needs the C++ extension, which is unavailable: {CPP_ERROR}"
        return
    _register_fakes()
    if torch.version.cuda is None:
        CUDA_ERROR = "torch is built without CUDA"
    else:
        CUDA_ERROR = _load("fastgame._cuda", "fastgame_cuda", ["cuda/ops.cu"], cuda=True)


# The interface's functions over the registered ops, which csrc/ops.cpp names without the
# trailing underscore. Looked up at call time: torch.ops.fastgame exists only once the library loaded.

def _registered(name: str) -> Callable:
    schema = name.rstrip("_")

    def call(*args, **kwargs):
        return getattr(torch.ops.fastgame, schema).default(*args, **kwargs)
    return op(name, call)


precondition, cg_matvec, cg_step_, cg_direction_ = map(_registered, OPS)
