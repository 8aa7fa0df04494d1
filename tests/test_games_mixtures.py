"""2-D Gaussian mixtures and their metrics on samples with known answers, and the GAN game
that trains networks on them."""
import math

import pytest
import torch

import fastgame
from fastgame.games import GAN, GaussianMixture


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_ring_and_grid_layouts():
    ring = GaussianMixture.ring()
    assert ring.num_modes == 8 and ring.std == 0.02
    torch.testing.assert_close(ring.means.norm(dim=1), torch.full((8,), 2.0))
    angles = torch.atan2(ring.means[:, 1], ring.means[:, 0])
    torch.testing.assert_close(torch.sort(torch.remainder(angles, 2 * math.pi)).values,
                               torch.arange(8) * math.pi / 4, atol=1e-6, rtol=0)
    grid = GaussianMixture.grid()
    assert grid.num_modes == 25 and grid.std == 0.05
    assert sorted(set(grid.means[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]


@pytest.mark.parametrize("mixture", [GaussianMixture.ring(), GaussianMixture.grid()], ids=["ring8", "grid25"])
def test_exact_samples_cover_every_mode_with_high_quality(mixture):
    m = mixture.metrics(mixture.sample(2500, generator=gen()))
    assert m.modes_covered == mixture.num_modes
    # In 2-D, P(‖ε‖ ≤ 3σ) = 1 − e^{−9/2} ≈ 0.989.
    assert abs(m.high_quality - (1 - math.exp(-4.5))) < 0.01
    assert m.mode_jsd < 0.01
    assert int(m.counts.sum()) == round(m.high_quality * 2500)


@pytest.mark.parametrize("mixture", [GaussianMixture.ring(), GaussianMixture.grid()], ids=["ring8", "grid25"])
def test_samples_from_one_mode_cover_one_mode(mixture):
    m = mixture.metrics(mixture.sample(2500, generator=gen(1), modes=torch.tensor([3])))
    assert m.modes_covered == 1 and m.counts[3] == m.counts.sum() > 2400
    # JSD of a point mass to the uniform histogram over K modes, in closed form.
    K = mixture.num_modes
    expect = 0.5 * math.log(2 * K / (K + 1)) + 0.5 * ((1 / K) * math.log(2 / (K + 1)) + (K - 1) / K * math.log(2))
    assert m.mode_jsd == pytest.approx(expect, rel=1e-12)


def test_partial_collapse_and_the_coverage_threshold():
    ring = GaussianMixture.ring()
    half = ring.sample(2000, generator=gen(2), modes=torch.tensor([0, 2, 4, 6]))
    assert ring.metrics(half).modes_covered == 4
    stray = ring.sample(5, generator=gen(3), modes=torch.tensor([1]))
    samples = torch.cat([half, stray])
    assert ring.metrics(samples).modes_covered == 4  # 5 samples < 0.2 × 2005/8
    assert ring.metrics(samples, min_fraction=0.0).modes_covered == 5


def test_samples_off_the_modes_are_low_quality():
    ring = GaussianMixture.ring()
    m = ring.metrics(torch.full((100, 2), 100.0))
    assert (m.modes_covered, m.high_quality, m.mode_jsd) == (0, 0.0, math.log(2))
    between = ring.means[:1] * 0.5  # halfway to the centre: 50σ from every mode
    assert ring.metrics(between.repeat(10, 1)).high_quality == 0.0


@pytest.mark.parametrize("bad", [
    lambda: GaussianMixture(torch.zeros(3), 0.1), lambda: GaussianMixture(torch.zeros(0, 2), 0.1),
    lambda: GaussianMixture(torch.zeros(3, 2), 0.0), lambda: GaussianMixture.ring(modes=0),
    lambda: GaussianMixture.grid(side=0), lambda: GaussianMixture.ring().sample(-1),
    lambda: GaussianMixture.ring().sample(5, modes=torch.tensor([8])),
    lambda: GaussianMixture.ring().metrics(torch.zeros(4, 3)),
    lambda: GaussianMixture.ring().metrics(torch.zeros(0, 2)),
    lambda: GaussianMixture.ring().metrics(torch.zeros(4, 2), min_fraction=1.5),
])
def test_bad_mixture_input_raises(bad):
    with pytest.raises(ValueError):
        bad()


# ---- the GAN game on a mixture --------------------------------------------------------------
def mlp(i, o, width=16):
    return torch.nn.Sequential(torch.nn.Linear(i, width), torch.nn.Tanh(), torch.nn.Linear(width, o))


def make_gan(loss="standard", **kw):
    torch.manual_seed(0)
    ring = GaussianMixture.ring()
    kw.setdefault("batch_size", 64)
    return GAN(mlp(2, 2), mlp(2, 1), ring.sample, latent_dim=2, loss=loss, **kw), ring


def test_gan_players_losses_and_zero_sum_form():
    game, _ = make_gan()
    assert game.max_params == list(game.discriminator.parameters())
    assert game.min_params == list(game.generator.parameters())
    torch.manual_seed(1)
    loss_max, loss_min = game.losses()
    torch.manual_seed(1)
    f = game.loss()
    torch.testing.assert_close(f, -loss_max)
    # standard loss: the zero-sum form gives the generator exactly its own gradient
    g_own = torch.autograd.grad(loss_min, game.min_params, retain_graph=True)
    g_zs = torch.autograd.grad(f, game.min_params)
    for a, b in zip(g_own, g_zs):
        torch.testing.assert_close(a, b)
    assert game.is_zero_sum and not make_gan("hinge")[0].is_zero_sum


@pytest.mark.parametrize("loss,kw", [("wgan", dict(penalty="wgan_gp", penalty_weight=10.0)),
                                     ("standard", dict(penalty="r1", penalty_weight=1.0, noise_std=0.1)),
                                     ("rahinge", dict(penalty="relu_gp", penalty_weight=5.0))])
def test_gan_trains_with_acgd(loss, kw):
    game, ring = make_gan(loss, **kw)
    before = game.point()
    opt = fastgame.ACGD(game.max_params, game.min_params, lr_max=1e-3, lr_min=1e-3)
    for _ in range(3):
        opt.step(game.loss())
    after = game.point()
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    samples = game.sample(500)
    assert samples.shape == (500, 2) and not samples.requires_grad
    assert 0 <= ring.metrics(samples).modes_covered <= 8


@pytest.mark.parametrize("kw", [dict(loss="bce"), dict(penalty="r3"), dict(penalty_weight=-1.0),
                                dict(noise_std=float("nan")), dict(batch_size=0)])
def test_bad_gan_arguments_raise(kw):
    with pytest.raises(ValueError):
        make_gan(**kw)
    with pytest.raises(ValueError):
        GAN(mlp(2, 2), mlp(2, 1), real=None, latent_dim=2)
    with pytest.raises(ValueError):
        GAN(mlp(2, 2), mlp(2, 1), GaussianMixture.ring().sample, latent_dim=0)
