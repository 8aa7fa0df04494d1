"""fastgame.nn: BatchNorm is the same module as nn.BatchNorm*d (outputs, gradients,
second derivatives, running statistics, eval mode, state_dict), and convert_batchnorm swaps
it in without changing the model's parameters."""
import copy
import pickle

import pytest
import torch
from torch import nn

import fastgame
from bench.models import ConvDiscriminator, ConvGenerator, wgan_loss
from fastgame.linalg.hvp import MixedHVP
from fastgame.nn import BatchNorm, convert_batchnorm
from tests.helpers import flat

NATIVE = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


@pytest.mark.parametrize("affine,track", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(16, 5), (6, 4, 7), (8, 3, 4, 4), (4, 2, 3, 3, 3)])
def test_same_as_native(shape, momentum, affine, track):
    torch.manual_seed(0)
    native = NATIVE[len(shape)](shape[1], momentum=momentum, affine=affine, track_running_stats=track).double()
    if affine:
        with torch.no_grad():
            native.weight.uniform_(0.5, 1.5)
            native.bias.uniform_(-0.5, 0.5)
    plain = convert_batchnorm(copy.deepcopy(native))
    assert isinstance(plain, BatchNorm)
    for _ in range(3):  # training: outputs, first and second derivatives, running statistics
        x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).requires_grad_()
        ys = [m(x) for m in (native, plain)]
        assert ys[1].grad_fn is not None
        torch.testing.assert_close(ys[1], ys[0])
        v = torch.randn(shape, dtype=torch.float64)
        params = [x] + list(native.parameters()), [x] + list(plain.parameters())
        g = [torch.autograd.grad((y * v).sum(), p, create_graph=True) for y, p in zip(ys, params)]
        for a, b in zip(*g):
            torch.testing.assert_close(b, a)
        gg = [torch.autograd.grad(gi[0].square().sum(), p, materialize_grads=True) for gi, p in zip(g, params)]
        for a, b in zip(*gg):
            torch.testing.assert_close(b, a)
        plain_grads = [torch.autograd.grad((y * v).sum(), p) for y, p in zip(ys, params)]  # no graph: native kernel
        for a, b in zip(*plain_grads):
            torch.testing.assert_close(b, a)
    for name, buf in native.named_buffers():
        torch.testing.assert_close(dict(plain.named_buffers())[name], buf)
    native.eval(), plain.eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(plain(x), native(x))


def test_convert_keeps_parameters_buffers_and_modes():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.BatchNorm1d(144),
                          nn.SyncBatchNorm(144))
    model[4].eval()
    params, buffers, keys = list(model.parameters()), list(model.buffers()), list(model.state_dict())
    assert convert_batchnorm(model) is model
    assert [type(m).__name__ for m in model] == ["Conv2d", "BatchNorm", "ReLU", "Flatten", "BatchNorm",
                                                 "SyncBatchNorm"]
    assert all(a is b for a, b in zip(model.parameters(), params)) and len(list(model.parameters())) == len(params)
    assert all(a is b for a, b in zip(model.buffers(), buffers))
    assert list(model.state_dict()) == keys
    assert model[1].training and not model[4].training
    with pytest.raises(ValueError, match="4D"):  # BatchNorm2d's input check is kept
        model[1](torch.randn(2, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model[1](torch.randn(1, 4, 1, 1))
    clone = pickle.loads(pickle.dumps(model))  # torch.save of a whole model pickles it
    assert type(clone[1]) is BatchNorm


def test_autocast_statistics_in_float32():
    torch.manual_seed(0)
    native = nn.BatchNorm2d(3)
    plain = convert_batchnorm(copy.deepcopy(native))
    x = torch.randn(8, 3, 5, 5) * 10 + 100  # large mean: bf16 statistics would lose it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = plain(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), native(x.bfloat16().float()), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(plain.running_mean, native.running_mean)


def test_mixed_hvps_and_acgd_steps_match_native():
    """Through a BatchNorm generator and discriminator: the same mixed HVPs (float64) and the
    same ACGD trajectory as native BatchNorm."""
    torch.manual_seed(0)
    G, D = ConvGenerator(latent=8, ch=4, size=8).double(), ConvDiscriminator(ch=4, size=8).double()
    G2, D2 = convert_batchnorm(copy.deepcopy(G)), convert_batchnorm(copy.deepcopy(D))
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.rand(6, 3, 8, 8, generator=gen, dtype=torch.float64),
                torch.randn(6, 8, generator=gen, dtype=torch.float64)) for _ in range(4)]
    products = []
    for g, d in [(G, D), (G2, D2)]:
        opt = fastgame.ACGD(d.parameters(), g.parameters())
        gx, gy = opt._grads(wgan_loss(g, d, *batches[0]))
        hvp = MixedHVP(opt.players, (gx, gy))
        vgen = torch.Generator().manual_seed(2)
        products.append([hvp(to, torch.randn(opt.players[1 - to].numel, generator=vgen, dtype=torch.float64))
                         for to in (0, 1)])
    for a, b in zip(*products):  # equal up to float64 rounding, relative to the vector's size
        assert ((b - a).norm() / a.norm()).item() < 1e-12
    start = flat(G, D)
    # CG to float64 rounding (tol is on ‖r‖²: the default 1e-12 leaves solutions 1e-6 apart)
    opts = [fastgame.ACGD(d.parameters(), g.parameters(), lr_max=1e-2, lr_min=1e-2, tol=1e-24, atol=1e-40)
            for g, d in [(G, D), (G2, D2)]]
    for real, z in batches:
        for opt, (g, d) in zip(opts, [(G, D), (G2, D2)]):
            opt.step(wgan_loss(g, d, real, z))
    ends = [flat(G, D), flat(G2, D2)]
    assert ((ends[1] - ends[0]).norm() / (ends[0] - start).norm()).item() < 1e-9
