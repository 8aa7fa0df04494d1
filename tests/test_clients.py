"""The patterns of published code that uses CGDs 0.4.5, written small: each runs unchanged with
``fastgame`` in place of ``CGDs`` and is compared with CGDs on the same steps.

* a competitive PINN (GACGD, float64, a PDE residual with second derivatives, ``track_cond``,
  ``info["num_iter"]`` after every step, the state saved and resumed);
* adversarial training (BCGD built per batch on a perturbation ``delta``, ``step(loss=...)``,
  ``delta.data`` clamped between steps);
* a GAN learner whose callback calls ``step(loss=...)``;
* ACGD and BCGD on a small Fourier neural operator against a discriminator.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import autograd, nn

import fastgame

CGDs = pytest.importorskip("CGDs")


def params_of(*modules):
    return torch.cat([p.detach().reshape(-1) for m in modules for p in m.parameters()])


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


# ---- a competitive PINN ------------------------------------------------------------------
def mlp(sizes, act):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([act()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def poisson_points(n_interior=48, n_boundary=16, seed=0):
    """Collocation points of -Δu = f on [-2, 2]², u = sin x cos y (so f = 2 sin x cos y)."""
    gen = torch.Generator().manual_seed(seed)
    inner = torch.rand(n_interior, 2, generator=gen) * 4 - 2
    t = torch.rand(n_boundary, generator=gen) * 4 - 2
    side = torch.arange(n_boundary) % 4
    edge = torch.where(side < 2, -2.0, 2.0)
    boundary = torch.where((side % 2 == 0).unsqueeze(1), torch.stack([edge, t], 1), torch.stack([t, edge], 1))
    return inner, boundary


def cpinn_losses(pinn, disc, inner, boundary):
    """The competitive PINN game: the discriminator weights the PDE and boundary residuals
    pointwise; the PINN minimises the weighted residuals, the discriminator maximises them."""
    xy = inner.clone().requires_grad_(True)
    u = pinn(xy)
    du = autograd.grad(u.sum(), xy, create_graph=True)[0]
    u_xx = autograd.grad(du[:, 0].sum(), xy, create_graph=True)[0][:, 0]
    u_yy = autograd.grad(du[:, 1].sum(), xy, create_graph=True)[0][:, 1]
    f = 2 * torch.sin(inner[:, 0]) * torch.cos(inner[:, 1])
    pde = -(u_xx + u_yy) - f
    bd = pinn(boundary).squeeze(1) - torch.sin(boundary[:, 0]) * torch.cos(boundary[:, 1])
    value = (disc(inner)[:, 0] * pde).mean() + (disc(boundary)[:, 1] * bd).mean()
    value = value + (pde ** 2).mean() + (bd ** 2).mean()  # plus the plain PINN loss: not a bilinear game
    return -value, value  # loss_x (discriminator), loss_y (PINN)


def cpinn_run(lib, pinn, disc, points, steps, state=None, save_after=None):
    """A CPINN training loop as published code writes it; returns the optimizer, the num_iter
    it read after each step and (``save_after``) the optimizer state saved then."""
    optimizer = lib.GACGD(x_params=disc.parameters(), y_params=pinn.parameters(), max_iter=1000, lr_x=1e-3,
                          lr_y=1e-3, tol=1e-7, atol=1e-20, eps=1e-8, beta=0.99, track_cond=lambda x, y: True)
    if state is not None:
        optimizer.load_state_dict(state)
    num_iters, saved = [], None
    for i in range(steps):
        loss_x, loss_y = cpinn_losses(pinn, disc, *points)
        optimizer.step(loss_x, loss_y, 0)
        num_iters.append(optimizer.info["num_iter"])
        if save_after == i + 1:
            saved = copy.deepcopy(optimizer.state_dict())
    return optimizer, num_iters, saved


def test_competitive_pinn(float64, tmp_path):
    """GACGD on a PINN against a discriminator, float64, with CGDs' settings of the published
    CPINN runs. The two solve the same system to tol = 1e-7 (fastgame by GMRES on the Schur
    complement, CGDs on the block system), so each update agrees to about that tolerance and
    the parameters, which move ~1e-3 of their size a step, to far less: bound 1e-8 relative
    after 4 steps (measured 4e-10, 2-core CPU). The state saved after 2 steps (torch.save, a
    new optimizer) resumes bit for bit."""
    torch.manual_seed(0)
    pinn, disc = mlp([2, 12, 12, 1], nn.Tanh), mlp([2, 12, 12, 2], nn.ReLU)
    pinn2, disc2 = copy.deepcopy(pinn), copy.deepcopy(disc)
    points = poisson_points()
    _, ref_iters, _ = cpinn_run(CGDs, pinn, disc, points, 4)
    start = copy.deepcopy((pinn2.state_dict(), disc2.state_dict()))
    ours, our_iters, saved = cpinn_run(fastgame, pinn2, disc2, points, 4, save_after=2)
    assert rel(params_of(pinn2, disc2), params_of(pinn, disc)) < 1e-8
    assert all(isinstance(n, int) and n >= 0 for n in our_iters)
    assert all(n <= r for n, r in zip(our_iters, ref_iters))  # each iteration gains about two of CGDs'

    # Resume: 2 steps, save to a file with the models, a new process's optimizer loads and continues.
    pinn3, disc3 = copy.deepcopy(pinn), copy.deepcopy(disc)
    pinn3.load_state_dict(start[0]), disc3.load_state_dict(start[1])
    cpinn_run(fastgame, pinn3, disc3, points, 2)
    torch.save({"optimizer": saved, "pinn": pinn3.state_dict(), "disc": disc3.state_dict()}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    pinn4, disc4 = copy.deepcopy(pinn3), copy.deepcopy(disc3)
    pinn4.load_state_dict(ckpt["pinn"]), disc4.load_state_dict(ckpt["disc"])
    resumed, _, _ = cpinn_run(fastgame, pinn4, disc4, points, 2, state=ckpt["optimizer"])
    assert torch.equal(params_of(pinn4, disc4), params_of(pinn2, disc2))
    assert resumed.state["game"]["step"] == 4


# ---- adversarial training with BCGD built per batch --------------------------------------
def adversarial_run(lib, model, batches, radius=0.1):
    """Per batch: a perturbation delta maximises the classifier's loss, the classifier minimises
    it, by one BCGD step of a new optimizer; delta is projected onto the L∞ ball between steps."""
    for x, y in batches:
        delta = torch.zeros_like(x, requires_grad=True)
        optimizer = lib.BCGD(max_params=[delta], min_params=model.parameters(), lr_max=0.1, lr_min=0.05,
                             tol=1e-14, atol=1e-20)
        for _ in range(2):
            loss = F.cross_entropy(model(x + delta), y)
            optimizer.step(loss=loss)
            delta.data.clamp_(-radius, radius)
    return model


def test_adversarial_training_with_bcgd_per_batch(float64):
    """Each batch's first BCGD step starts CG from zero in both packages (a new CGDs optimizer
    has no warm start); the second starts warm in CGDs and from zero in fastgame, the same
    system at tol 1e-14: bound 1e-9 relative after 3 batches (measured 2e-11)."""
    torch.manual_seed(0)
    model = mlp([5, 16, 3], nn.Tanh)
    model2 = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(24, 5, generator=gen), torch.randint(0, 3, (24,), generator=gen)) for _ in range(3)]
    adversarial_run(CGDs, model, batches)
    adversarial_run(fastgame, model2, batches)
    assert rel(params_of(model2), params_of(model)) < 1e-9


# ---- a GAN learner with a stepping callback ---------------------------------------------
class Learner:
    """A minimal training loop with callbacks, in the style of callback-based frameworks: the
    loop computes the loss, and the optimizer callback steps on it (no backward)."""

    def __init__(self, G, D, loss_fn, callbacks):
        self.G, self.D, self.loss_fn, self.callbacks = G, D, loss_fn, callbacks

    def fit(self, batches):
        for self.batch in batches:
            self.loss = self.loss_fn(self.G, self.D, *self.batch)
            for cb in self.callbacks:
                cb.after_loss(self)


class CompetitiveStep:
    """The callback: builds the optimizer at the first batch, then steps with ``step(loss=...)``."""

    def __init__(self, lib, cls, **kw):
        self.lib, self.cls, self.kw, self.opt = lib, cls, kw, None

    def after_loss(self, learner):
        if self.opt is None:
            self.opt = getattr(self.lib, self.cls)(max_params=learner.D.parameters(),
                                                   min_params=learner.G.parameters(), **self.kw)
        self.opt.step(loss=learner.loss)


def wgan_loss(G, D, real, z):
    return D(real).mean() - D(G(z)).mean()


@pytest.mark.parametrize("cls", ["ACGD", "BCGD"])
def test_gan_learner_steps_from_a_callback(float64, cls):
    """fastgame starts CG from zero where CGDs starts warm (both solve the same system, see
    tests/test_parity.py for the per-step bound 2√tol‖rhs‖ = 2e-8‖rhs‖ at tol 1e-16); the
    parameters after 5 steps: bound 1e-8 relative (measured 2e-10 ACGD, 2e-11 BCGD)."""
    torch.manual_seed(0)
    G, D = mlp([3, 16, 2], nn.Tanh), mlp([2, 16, 1], nn.Tanh)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.randn(32, 2, generator=gen) + 1, torch.randn(32, 3, generator=gen)) for _ in range(5)]
    kw = dict(lr_max=1e-2, lr_min=1e-2, tol=1e-16)
    Learner(G, D, wgan_loss, [CompetitiveStep(CGDs, cls, **kw)]).fit(batches)
    Learner(G2, D2, wgan_loss, [CompetitiveStep(fastgame, cls, **kw)]).fit(batches)
    assert rel(params_of(G2, D2), params_of(G, D)) < 1e-8


# ---- a Fourier neural operator against a discriminator ----------------------------------
class SpectralConv1d(nn.Module):
    """The FNO layer: multiply the lowest ``modes`` Fourier modes by learned complex weights
    (kept as real and imaginary parts: fastgame's parameters are real)."""

    def __init__(self, channels, modes):
        super().__init__()
        self.modes = modes
        scale = 1 / channels
        self.w_re = nn.Parameter(scale * torch.rand(channels, channels, modes))
        self.w_im = nn.Parameter(scale * torch.rand(channels, channels, modes))

    def forward(self, x):  # (batch, channels, n)
        x_ft = torch.fft.rfft(x)
        out = torch.zeros_like(x_ft)
        w = torch.complex(self.w_re, self.w_im)
        out[:, :, : self.modes] = torch.einsum("bim,iom->bom", x_ft[:, :, : self.modes], w)
        return torch.fft.irfft(out, n=x.shape[-1])


class FNO1d(nn.Module):
    def __init__(self, channels=4, modes=5):
        super().__init__()
        self.lift = nn.Conv1d(1, channels, 1)
        self.spectral = SpectralConv1d(channels, modes)
        self.local = nn.Conv1d(channels, channels, 1)
        self.project = nn.Conv1d(channels, 1, 1)

    def forward(self, a):  # (batch, 1, n) -> (batch, 1, n)
        h = self.lift(a)
        h = torch.tanh(self.spectral(h) + self.local(h))
        return self.project(h)


def fno_batches(n=32, batch=8, count=4, seed=3):
    """Inputs a(x) and targets u(x) of a smoothing operator (u'' = a, periodic), by FFT."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.fft.rfftfreq(n, d=1 / n)
    out = []
    for _ in range(count):
        a = torch.randn(batch, 1, n, generator=gen)
        a_ft = torch.fft.rfft(a)
        u_ft = torch.where(k > 0, -a_ft / (2 * math.pi * k.clamp(min=1)) ** 2, torch.zeros_like(a_ft))
        out.append((a, torch.fft.irfft(u_ft, n=n)))
    return out


def fno_loss(fno, disc, a, u):
    """The FNO minimises its error and fools a discriminator on (a, u) pairs; the discriminator
    maximises the gap between the true and the predicted pairs (a WGAN-style critic)."""
    pred = fno(a)
    real = disc(torch.cat([a, u], 1).flatten(1)).mean()
    fake = disc(torch.cat([a, pred], 1).flatten(1)).mean()
    return F.mse_loss(pred, u) + real - fake


@pytest.mark.parametrize("cls", ["ACGD", "BCGD"])
def test_fourier_neural_operator_against_a_discriminator(float64, cls):
    """The gradients pass through torch.fft; fastgame starts CG from zero where CGDs starts warm
    (the same system, as in the GAN learner's test): bound 1e-8 relative after 4 steps at
    tol 1e-16 (measured 4e-10 ACGD, 2e-11 BCGD)."""
    torch.manual_seed(0)
    fno, disc = FNO1d(), mlp([64, 16, 1], nn.Tanh)
    fno2, disc2 = copy.deepcopy(fno), copy.deepcopy(disc)
    kw = dict(lr_max=1e-2, lr_min=1e-2, tol=1e-16)
    ref = getattr(CGDs, cls)(max_params=disc.parameters(), min_params=fno.parameters(), **kw)
    ours = getattr(fastgame, cls)(max_params=disc2.parameters(), min_params=fno2.parameters(), **kw)
    for a, u in fno_batches():
        ref.step(fno_loss(fno, disc, a, u))
        ours.step(fno_loss(fno2, disc2, a, u))
    assert rel(params_of(fno2, disc2), params_of(fno, disc)) < 1e-8
    assert ours.get_info()["iter_num"] >= 1
