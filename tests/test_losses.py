"""fastgame.losses: every loss against its formula and a known optimum, the zero-sum forms, the
penalties against closed forms for linear and quadratic discriminators, and bad inputs."""
import math

import pytest
import torch

from fastgame import losses as L

CLASSIC = ["standard", "non_saturating", "wgan", "hinge", "least_squares"]
RELATIVISTIC = ["rsgan", "rasgan", "ralsgan", "rahinge"]


def logits(seed=0, n=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)


def reference(name, r, f):
    """The papers' formulas written naively (log σ, not softplus)."""
    ls, mean = torch.log(torch.sigmoid(r)), lambda t: t.mean()
    if name == "standard":
        return -mean(ls) - mean(torch.log(1 - torch.sigmoid(f))), mean(torch.log(1 - torch.sigmoid(f)))
    if name == "non_saturating":
        return -mean(ls) - mean(torch.log(1 - torch.sigmoid(f))), -mean(torch.log(torch.sigmoid(f)))
    if name == "wgan":
        return mean(f) - mean(r), -mean(f)
    if name == "hinge":
        return mean(torch.clamp(1 - r, min=0)) + mean(torch.clamp(1 + f, min=0)), -mean(f)
    if name == "least_squares":
        return 0.5 * mean((r - 1) ** 2) + 0.5 * mean(f ** 2), 0.5 * mean((f - 1) ** 2)
    if name == "rsgan":
        return -mean(torch.log(torch.sigmoid(r - f))), -mean(torch.log(torch.sigmoid(f - r)))
    rr, ff = r - f.mean(), f - r.mean()
    if name == "rasgan":
        d = -mean(torch.log(torch.sigmoid(rr))) - mean(torch.log(1 - torch.sigmoid(ff)))
        return d, -mean(torch.log(torch.sigmoid(ff))) - mean(torch.log(1 - torch.sigmoid(rr)))
    if name == "ralsgan":
        return mean((rr - 1) ** 2) + mean((ff + 1) ** 2), mean((ff - 1) ** 2) + mean((rr + 1) ** 2)
    if name == "rahinge":
        relu = torch.relu
        return mean(relu(1 - rr)) + mean(relu(1 + ff)), mean(relu(1 - ff)) + mean(relu(1 + rr))
    raise AssertionError(name)


@pytest.mark.parametrize("name", CLASSIC + RELATIVISTIC)
def test_loss_matches_formula_and_zero_sum_is_discriminator_payoff(name):
    r, f = logits()
    out = L.get_loss(name)(r, f)
    d_ref, g_ref = reference(name, r, f)
    torch.testing.assert_close(out.discriminator, d_ref)
    torch.testing.assert_close(out.generator, g_ref)
    torch.testing.assert_close(out.zero_sum, -out.discriminator)
    assert out.discriminator.shape == out.generator.shape == ()


@pytest.mark.parametrize("name", CLASSIC + RELATIVISTIC)
def test_generator_gradient_of_zero_sum_form_is_exact_only_for_zero_sum_losses(name):
    r, f = logits(1)
    f = f.clone().requires_grad_(True)
    r = r.clone().requires_grad_(True)  # relativistic generators also act through d_real
    out = L.get_loss(name)(r, f)
    g_own = torch.autograd.grad(out.generator, (r, f), retain_graph=True, allow_unused=True, materialize_grads=True)
    g_zs = torch.autograd.grad(out.zero_sum, (r, f), allow_unused=True, materialize_grads=True)
    # The generator moves d_fake only (and d_real too for relativistic losses).
    moved = (0, 1) if name in RELATIVISTIC else (1,)
    same = all(torch.allclose(g_own[i], g_zs[i]) for i in moved)
    assert same == (name in L.ZERO_SUM_LOSSES)


def test_relativistic_generator_loss_is_discriminator_loss_with_roles_swapped():
    r, f = logits(2)
    for name in RELATIVISTIC:
        fn = L.get_loss(name)
        torch.testing.assert_close(fn(r, f).generator, fn(f, r).discriminator)


def test_losses_are_stable_for_large_logits():
    big = torch.tensor([80.0, -80.0], dtype=torch.float32)
    for name in CLASSIC + RELATIVISTIC:
        out = L.get_loss(name)(big, -big)
        assert all(torch.isfinite(t) for t in out)


def _optimal_table_discriminator(name, p_real, p_fake, steps, lr):
    """Minimise the D loss over one free output per point of a 2-point space."""
    logit = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    real_idx = torch.tensor([0] * p_real[0] + [1] * p_real[1])
    fake_idx = torch.tensor([0] * p_fake[0] + [1] * p_fake[1])
    opt = torch.optim.SGD([logit], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        L.get_loss(name)(logit[real_idx], logit[fake_idx]).discriminator.backward()
        opt.step()
    return logit.detach(), L.get_loss(name)(logit[real_idx], logit[fake_idx]).discriminator.detach()


def test_standard_optimal_discriminator_and_jsd():
    # p_real = (3/4, 1/4), p_fake = (1/4, 3/4): D*(x) = p_r / (p_r + p_f), min D loss = log 4 − 2·JSD.
    logit, d_loss = _optimal_table_discriminator("standard", (3, 1), (1, 3), steps=200, lr=4.0)
    torch.testing.assert_close(torch.sigmoid(logit), torch.tensor([0.75, 0.25], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    pr, pf = torch.tensor([0.75, 0.25], dtype=torch.float64), torch.tensor([0.25, 0.75], dtype=torch.float64)
    m = (pr + pf) / 2
    jsd = 0.5 * (pr * (pr / m).log()).sum() + 0.5 * (pf * (pf / m).log()).sum()
    assert abs(float(d_loss) - (math.log(4) - 2 * float(jsd))) < 1e-10


def test_least_squares_optimal_discriminator():
    # D*(x) = (b p_r + a p_f) / (p_r + p_f) with a = 0, b = 1.
    logit, _ = _optimal_table_discriminator("least_squares", (3, 1), (1, 3), steps=100, lr=1.0)
    torch.testing.assert_close(logit, torch.tensor([0.75, 0.25], dtype=torch.float64), atol=1e-8, rtol=0)


def test_hinge_and_least_squares_vanish_at_a_perfect_margin():
    assert float(L.hinge(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -2.0])).discriminator) == 0.0
    assert float(L.least_squares(torch.ones(3), torch.zeros(3)).discriminator) == 0.0
    assert float(L.least_squares(torch.ones(3), torch.ones(3)).generator) == 0.0


@pytest.mark.parametrize("bad", [
    lambda: L.standard(torch.zeros(0), torch.zeros(3)),
    lambda: L.wgan(torch.zeros(3, dtype=torch.long), torch.zeros(3)),
    lambda: L.hinge([0.0], torch.zeros(3)),
    lambda: L.rsgan(torch.zeros(3), torch.zeros(4)),
    lambda: L.rahinge(torch.zeros(3, 1), torch.zeros(3)),
    lambda: L.get_loss("bce"),
])
def test_bad_loss_inputs_raise(bad):
    with pytest.raises(ValueError):
        bad()


# ---- penalties ----------------------------------------------------------------------------
def linear_critic(shape, seed=0):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).requires_grad_(True)
    return w, (lambda x: (x * w).flatten(1).sum(1))


def images(seed, n=5, shape=(2, 3, 3)):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_penalties_of_a_linear_critic_on_images():
    w, D = linear_critic((2, 3, 3))
    real, fake = images(1), images(2)
    norm = w.detach().norm()
    torch.testing.assert_close(L.r1_penalty(D, real, gamma=3.0), 1.5 * norm ** 2)
    torch.testing.assert_close(L.r2_penalty(D, fake, gamma=3.0), 1.5 * norm ** 2)
    torch.testing.assert_close(L.wgan_gp_penalty(D, real, fake, weight=2.0), 2.0 * (norm - 1) ** 2)
    torch.testing.assert_close(L.relu_gp_penalty(D, real, fake, weight=2.0), 2.0 * torch.relu(norm - 1))
    with torch.no_grad():
        w.mul_(0.5 / norm)  # inside the unit ball: the one-sided penalty is off, WGAN-GP is not
    assert float(L.relu_gp_penalty(D, real, fake).detach()) == 0.0
    torch.testing.assert_close(L.wgan_gp_penalty(D, real, fake, weight=1.0), torch.tensor(0.25, dtype=torch.float64))


def test_penalties_of_a_quadratic_critic_use_the_right_points():
    # D(x) = ½ a‖x‖²: ∇D(x) = a·x, so each penalty reads off where it was evaluated.
    a = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    D = lambda x: 0.5 * a * (x ** 2).flatten(1).sum(1)  # noqa: E731
    real, fake = images(3), images(4)
    sq = lambda x: (x ** 2).flatten(1).sum(1)  # noqa: E731
    torch.testing.assert_close(L.r1_penalty(D, real, gamma=2.0), (a * a * sq(real)).mean())
    torch.testing.assert_close(L.r2_penalty(D, fake, gamma=2.0), (a * a * sq(fake)).mean())
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    mid = t.view(-1, 1, 1, 1) * real + (1 - t.view(-1, 1, 1, 1)) * fake
    expect_gp = ((a * sq(mid).sqrt() - 1) ** 2).mean()
    torch.testing.assert_close(L.wgan_gp_penalty(D, real, fake, weight=1.0, t=t), expect_gp)
    torch.testing.assert_close(L.gradient_penalty("relu_gp", D, real, fake, 1.0, t=t),
                               torch.relu(a * sq(mid).sqrt() - 1).mean())
    # and the penalties are differentiable in the discriminator's parameters, correctly
    (grad,) = torch.autograd.grad(L.wgan_gp_penalty(D, real, fake, weight=1.0, t=t), a)
    (expect,) = torch.autograd.grad(expect_gp, a)
    torch.testing.assert_close(grad, expect)


def test_penalties_do_not_reach_the_generator():
    z = torch.randn(4, 2, dtype=torch.float64)
    G = torch.nn.Linear(2, 2).double()
    w, D = linear_critic((2,))
    fake, real = G(z), torch.randn(4, 2, dtype=torch.float64)
    total = sum(L.gradient_penalty(n, D, real, fake, 1.0) for n in L.PENALTIES)
    grads = torch.autograd.grad(total, [w] + list(G.parameters()), allow_unused=True)
    assert grads[0] is not None and all(g is None for g in grads[1:])


def test_penalty_at_a_zero_gradient_has_finite_derivatives():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    D = lambda x: x @ w  # noqa: E731
    x = torch.randn(4, 3, dtype=torch.float64)
    for name in L.PENALTIES:
        (g,) = torch.autograd.grad(L.gradient_penalty(name, D, x, x.flip(0), 1.0), w)
        assert torch.isfinite(g).all()


def test_interpolation_weights_are_random_unless_fixed():
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    D = lambda x: 0.5 * a * (x ** 2).sum(1)  # noqa: E731
    real, fake = torch.randn(64, 2, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    p1 = L.wgan_gp_penalty(D, real, fake, generator=g1)
    p2 = L.wgan_gp_penalty(D, real, fake, generator=g2)
    p3 = L.wgan_gp_penalty(D, real, fake, generator=g1)
    assert float(p1.detach()) == float(p2.detach()) != float(p3.detach())


def test_instance_noise():
    x = torch.zeros(20000, 2, dtype=torch.float64, requires_grad=True)
    assert L.instance_noise(x, 0.0) is x
    y = L.instance_noise(x, 0.3, generator=torch.Generator().manual_seed(0))
    assert abs(float(y.detach().std()) - 0.3) < 0.01 and abs(float(y.detach().mean())) < 0.01
    (g,) = torch.autograd.grad(y.sum(), x)  # the generator still gets its gradient
    assert torch.equal(g, torch.ones_like(g))


@pytest.mark.parametrize("bad", [
    lambda D, x: L.r1_penalty(D, x, gamma=-1.0),
    lambda D, x: L.r2_penalty(D, x, gamma=float("nan")),
    lambda D, x: L.wgan_gp_penalty(D, x, x, weight=-0.1),
    lambda D, x: L.relu_gp_penalty(D, x, x[:2]),
    lambda D, x: L.wgan_gp_penalty(D, x, x, t=torch.tensor(1.5)),
    lambda D, x: L.wgan_gp_penalty(D, x, x, t=torch.ones(3)),
    lambda D, x: L.r1_penalty(D, torch.zeros(0, 2)),
    lambda D, x: L.r1_penalty(lambda z: torch.ones(z.shape[0]), x),
    lambda D, x: L.instance_noise(x, -1.0),
    lambda D, x: L.gradient_penalty("r3", D, x, x, 1.0),
])
def test_bad_penalty_inputs_raise(bad):
    w, D = linear_critic((2,))
    with pytest.raises(ValueError):
        bad(D, torch.randn(4, 2, dtype=torch.float64))


# ---- one generator against K discriminators -------------------------------------------------
@pytest.mark.parametrize("name", ["standard", "wgan", "non_saturating"])
def test_multi_discriminator_losses_are_each_discriminators_and_their_mean(name):
    g = torch.Generator().manual_seed(0)
    reals = [torch.randn(8, generator=g, dtype=torch.float64) for _ in range(3)]
    fakes = [torch.randn(8, generator=g, dtype=torch.float64) for _ in range(3)]
    out = L.multi_discriminator(name, reals, fakes)
    each = [L.get_loss(name)(r, f) for r, f in zip(reals, fakes)]
    assert len(out.discriminators) == 3
    for got, want in zip(out.discriminators, each):
        assert torch.equal(got, want.discriminator)
    torch.testing.assert_close(out.generator, sum(w.generator for w in each) / 3)
    assert out.per_player()[0] is out.generator and out.per_player()[1:] == out.discriminators
    assert torch.equal(L.multi_discriminator(L.get_loss(name), reals, fakes).generator, out.generator)


def test_multi_discriminator_refuses_mismatched_outputs():
    x = torch.randn(4)
    with pytest.raises(ValueError, match="one real and one fake output per discriminator"):
        L.multi_discriminator("wgan", [x, x], [x])
    with pytest.raises(ValueError, match="at least one discriminator"):
        L.multi_discriminator("wgan", [], [])
    with pytest.raises(ValueError, match="sequences of tensors"):
        L.multi_discriminator("wgan", x, x)
    with pytest.raises(ValueError, match="unknown GAN loss"):
        L.multi_discriminator("nope", [x], [x])
