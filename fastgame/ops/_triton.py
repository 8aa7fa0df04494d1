"""The Triton ops (``fastgame.triton_kernels``): availability, their registration as torch ops,
and their op table (:class:`~fastgame.ops.interface.OpTable`).

Each op's launcher lives in ``triton_kernels/<op>.py`` under the op's registered name
(:attr:`~fastgame.ops.schemas.OpSchema.registered`); :func:`kernels` registers every launcher of
:data:`~fastgame.ops.interface.SCHEMAS` with ``torch.library.triton_op`` as
``fastgame::triton_<op>`` (the launcher doubles as its fake kernel).

The kernel modules are imported on first use, not with fastgame: ``@triton.jit`` reads
``TRITON_INTERPRET`` when a kernel is defined, so a test can still set it after importing
fastgame, and a plain ``import fastgame`` never pays Triton's import time.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from types import SimpleNamespace
from typing import Optional

import torch

from .interface import SCHEMAS, OpTable
from .schemas import NAMESPACE

_kernels: Optional[SimpleNamespace] = None  # the registered ops, by registered name
_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "triton_kernels")


def interpreter() -> bool:
    """Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


def error() -> Optional[str]:
    """None if the Triton kernels can be imported, else why not (without importing them)."""
    if _kernels is not None:
        return None
    if importlib.util.find_spec("triton") is None:
        return "no Triton (the triton package is not installed)"
    if not hasattr(torch.library, "triton_op"):
        return f"torch {torch.__version__} has no torch.library.triton_op (needs torch >= 2.6)"
    return None


def kernels() -> SimpleNamespace:
    """The Triton ops, registered once: ``kernels().cg_step`` is ``torch.ops.fastgame.triton_cg_step``."""
    global _kernels
    if _kernels is None:
        name = f"{__package__.rsplit('.', 1)[0]}.triton_kernels"
        if os.path.isdir(_SOURCE):  # a source checkout: its own kernels, not an installed (editable) copy's
            _import_from_source(name)
        registered = {}
        for schema in SCHEMAS:
            launcher = getattr(importlib.import_module(f"{name}.{schema.registered}"), schema.registered)
            registered[schema.registered] = torch.library.triton_op(
                f"{NAMESPACE}::triton_{schema.registered}", launcher, mutates_args=schema.mutates)
        _kernels = SimpleNamespace(**registered)
    return _kernels


def _import_from_source(name: str):
    """Import ``<repo>/triton_kernels`` as ``fastgame.triton_kernels`` (what setup.py's
    package_dir does for an install), for a checkout used without installing."""
    import sys
    root = _SOURCE
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "__init__.py"),
                                                  submodule_search_locations=[root])
    if spec is None or not os.path.isdir(root):
        raise ModuleNotFoundError(f"{name} is not installed and {root} does not exist")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


# The ops over the registered Triton ops, under their registered names (OpSchema.registered).
OPS = OpTable("triton", lambda schema: getattr(kernels(), schema.registered))
