"""Triton kernels of the fused CGD vector ops, installed as ``fastgame.triton_kernels``.

One op per file; each defines the ``@triton.jit`` kernel, its launcher and a torch op
registered with ``torch.library.triton_op`` (namespace ``fastgame::triton_*``), whose
function doubles as its fake kernel. Set ``TRITON_INTERPRET=1`` before importing this
package to run the kernels on CPU tensors (slowly; for tests).
"""
from .cg_direction import cg_direction
from .cg_matvec import cg_matvec
from .cg_step import cg_step
from .precondition import precondition

__all__ = ["cg_direction", "cg_matvec", "cg_step", "precondition"]
