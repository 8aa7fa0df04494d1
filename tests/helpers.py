"""Helpers shared by the tests (import as ``from tests.helpers import flat``); none needs CGDs,
so a module importing them is not skipped where the reference package is missing."""
import torch
from torch import nn


def make_case(seed=0, batch=32, steps=12, width=16, latent=3):
    """A small MLP GAN (bench.models.mlp_gan, depth 2) on the 2-D ring and ``steps`` batches of
    (real, z), all from ``seed``. The batches come from one generator in sequence, so a
    shorter ``steps`` gives a prefix of the longer list."""
    from bench.models import mlp_gan, ring_data
    torch.manual_seed(seed)
    G, D = mlp_gan(width=width, depth=2, latent=latent)
    gen = torch.Generator().manual_seed(seed + 1)
    return G, D, [(ring_data(batch, gen), torch.randn(batch, latent, generator=gen)) for _ in range(steps)]


def flat(*modules: nn.Module) -> torch.Tensor:
    """The modules' parameters, detached and concatenated into one new 1-D tensor."""
    return torch.cat([p.detach().reshape(-1) for m in modules for p in m.parameters()])


class NanGradient(torch.autograd.Function):
    """Identity whose gradient is NaN: a finite value with a non-finite derivative."""

    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, float("nan"))


class NanInDoubleBackward(torch.autograd.Function):
    """Identity whose backward is an identity with a NaN backward: finite loss and
    gradient, non-finite mixed second derivatives."""

    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return NanGradient.apply(g)


def state_equal(a, b) -> bool:
    """Nested dicts/lists of tensors equal bit for bit (shape and dtype too), e.g. two state_dicts."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(state_equal(u, v) for u, v in zip(a, b))
    return a == b


def snapshot(opt, x, y):
    """(state_dict, x, y) copies, to check later that a refused step changed nothing."""
    return opt.state_dict(), x.detach().clone(), y.detach().clone()


class NoHostReads:
    """Make every device-to-host read raise, as torch.cuda.set_sync_debug_mode('error')
    would on a GPU."""

    def __enter__(self):
        self.saved = {}
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "numpy", "cpu"):
            self.saved[name] = getattr(torch.Tensor, name)

            def refuse(*args, _name=name, **kwargs):
                raise AssertionError(f"host read Tensor.{_name} inside a capturable step")
            setattr(torch.Tensor, name, refuse)
        return self

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(torch.Tensor, name, fn)
