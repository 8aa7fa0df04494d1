"""fastgame ACGD/BCGD against the reference CGDs 0.4.5 on the same models, init and batches."""
import copy

import pytest
import torch

import fastgame
from bench.models import ConvDiscriminator, ConvGenerator, gan_loss, mlp_gan, ring_data, wgan_loss
from tests.helpers import flat

CGDs = pytest.importorskip("CGDs")


def _mlp_case(batch=64):
    G, D = mlp_gan(width=32, depth=2, latent=4)
    gen = torch.Generator().manual_seed(3)
    batches = [(ring_data(batch, gen), torch.randn(batch, 4, generator=gen)) for _ in range(12)]
    return G, D, batches, gan_loss


def _conv_case(batch=8):
    G, D = ConvGenerator(latent=8, ch=4, size=8), ConvDiscriminator(ch=4, size=8)
    gen = torch.Generator().manual_seed(4)
    batches = [(torch.rand(batch, 3, 8, 8, generator=gen) * 2 - 1, torch.randn(batch, 8, generator=gen))
               for _ in range(10)]
    return G, D, batches, wgan_loss


def run_pair(case, cls, steps, **kw):
    """Run the reference and fastgame side by side; return per-step update relative errors
    and the final relative parameter error."""
    torch.manual_seed(0)
    G, D, batches, loss_fn = case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ref = getattr(CGDs, cls)(max_params=D.parameters(), min_params=G.parameters(), **kw)
    ours = getattr(fastgame, cls)(max_params=D2.parameters(), min_params=G2.parameters(), **kw)
    errors = []
    for real, z in batches[:steps]:
        before_ref, before_ours = flat(D, G), flat(D2, G2)
        ref.step(loss_fn(G, D, real, z))
        ours.step(loss_fn(G2, D2, real, z))
        d_ref, d_ours = flat(D, G) - before_ref, flat(D2, G2) - before_ours
        errors.append(((d_ref - d_ours).norm() / d_ref.norm()).item())
    final = ((flat(D, G) - flat(D2, G2)).norm() / flat(D, G).norm()).item()
    return errors, final


@pytest.mark.parametrize("cls", ["ACGD", "BCGD"])
@pytest.mark.parametrize("case", [_mlp_case, _conv_case], ids=["mlp", "conv_bn"])
def test_parity_float64_tight(float64, cls, case):
    errors, final = run_pair(case, cls, steps=10, lr_max=1e-2, lr_min=1e-2, tol=1e-18, atol=1e-30)
    assert max(errors) <= 1e-6, errors
    assert final <= 1e-8


@pytest.mark.parametrize("cls", ["ACGD", "BCGD"])
def test_parity_float32_default_tolerance(cls):
    errors, final = run_pair(_mlp_case, cls, steps=10, lr_max=1e-2, lr_min=1e-2)
    assert max(errors) <= 1e-3, errors
    assert final <= 1e-4


def test_parity_with_lr_schedule(float64):
    """A scheduler on fastgame's param groups equals CGDs with set_lr at each step."""
    torch.manual_seed(0)
    G, D, batches, loss_fn = _mlp_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    kw = dict(lr_max=1e-2, lr_min=2e-2, tol=1e-18, atol=1e-30)
    ref = CGDs.ACGD(max_params=D.parameters(), min_params=G.parameters(), **kw)
    ours = fastgame.ACGD(max_params=D2.parameters(), min_params=G2.parameters(), **kw)
    sched = torch.optim.lr_scheduler.StepLR(ours, step_size=2, gamma=0.5)
    for real, z in batches[:8]:
        ref.set_lr(*[g["lr"] for g in ours.param_groups])
        ref.step(loss_fn(G, D, real, z))
        ours.step(loss_fn(G2, D2, real, z))
        sched.step()
    assert ours.param_groups[0]["lr"] == pytest.approx(1e-2 / 16)
    ref_p, ours_p = flat(D, G), flat(D2, G2)
    assert ((ref_p - ours_p).norm() / ref_p.norm()).item() <= 1e-8
