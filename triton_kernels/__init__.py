"""Triton kernels of the fused CGD vector ops, installed as ``fastgame.triton_kernels``.

One op per file, named as the op is registered (``cg_step.py`` for ``cg_step_``): its
``@triton.jit`` kernel and its launcher, a function of the op's name and signature that
:mod:`fastgame.ops._triton` registers with ``torch.library.triton_op`` as
``fastgame::triton_<op>`` (the launcher doubles as its fake kernel). Set
``TRITON_INTERPRET=1`` before the first op call to run the kernels on CPU tensors (slowly;
for tests).
"""
