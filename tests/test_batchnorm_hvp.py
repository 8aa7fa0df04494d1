"""bench/batchnorm_hvp.py: BatchNorm as plain ops is the same module as nn.BatchNorm*d
(outputs, running statistics, eval mode, mixed HVPs), and the experiment runs."""
import copy

import pytest
import torch
from torch import nn

from bench.batchnorm_hvp import PlainBatchNorm, main, to_plain_batchnorm


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(16, 5), (8, 3, 4, 4), (4, 2, 3, 3, 3)])
def test_plain_batchnorm_is_batchnorm(shape, momentum):
    torch.manual_seed(0)
    native = {2: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(shape)](shape[1], momentum=momentum)
    with torch.no_grad():
        native.weight.uniform_(0.5, 1.5)
        native.bias.uniform_(-0.5, 0.5)
    model = nn.Sequential(native)
    plain = to_plain_batchnorm(copy.deepcopy(model))
    assert isinstance(plain[0], PlainBatchNorm)
    for _ in range(3):
        x = torch.randn(shape, dtype=torch.float64) * 3 + 1
        model.double(), plain.double()
        torch.testing.assert_close(plain(x), model(x))
    for name, buf in native.named_buffers():
        torch.testing.assert_close(dict(plain[0].named_buffers())[name], buf)
    model.eval(), plain.eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(plain(x), model(x))


def test_plain_batchnorm_mixed_hvp_matches_native():
    """Second derivatives through a BatchNorm generator: D_xy and D_yx agree (float64)."""
    from bench.models import ConvDiscriminator, ConvGenerator, wgan_loss
    from fastgame.hvp import MixedHVP
    import fastgame

    torch.manual_seed(0)
    G, D = ConvGenerator(latent=8, ch=4, size=8).double(), ConvDiscriminator(ch=4, size=8).double()
    real, z = torch.rand(6, 3, 8, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    out = []
    for g, d in [(G, D), (to_plain_batchnorm(copy.deepcopy(G)), to_plain_batchnorm(copy.deepcopy(D)))]:
        opt = fastgame.ACGD(d.parameters(), g.parameters())
        gx, gy = opt._grads(wgan_loss(g, d, real, z))
        hvp = MixedHVP(opt.players, (gx, gy))
        gen = torch.Generator().manual_seed(1)
        out.append([hvp(to, torch.randn(opt.players[1 - to].numel, generator=gen, dtype=torch.float64))
                    for to in (0, 1)])
    for a, b in zip(*out):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_batchnorm_experiment_runs(capsys):
    threads = torch.get_num_threads()
    try:
        assert main(["--device", "cpu", "--models", "dcgan32-b4-w8"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "native" in out and "plain" in out and "ops D_xy" in out
