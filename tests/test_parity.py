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


def run_pair(case, cls, steps, cg_start="warm", **kw):
    """Run the reference and fastgame (``cg_start="warm"``: CGDs' own start, so exact reference
    behaviour) side by side; return per-step update relative errors and the final relative
    parameter error."""
    torch.manual_seed(0)
    G, D, batches, loss_fn = case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ref = getattr(CGDs, cls)(max_params=D.parameters(), min_params=G.parameters(), **kw)
    ours = getattr(fastgame, cls)(max_params=D2.parameters(), min_params=G2.parameters(), cg_start=cg_start, **kw)
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


@pytest.mark.parametrize("cg_start", ["warm", "zero"])
@pytest.mark.parametrize("cls", ["ACGD", "BCGD"])
def test_parity_float32_default_tolerance(cls, cg_start):
    """CGDs' start and fastgame's default alike stay within float32 noise of CGDs over 10 steps."""
    errors, final = run_pair(_mlp_case, cls, steps=10, cg_start=cg_start, lr_max=1e-2, lr_min=1e-2)
    assert max(errors) <= 1e-3, errors
    assert final <= 1e-4


def test_parity_with_lr_schedule(float64):
    """A scheduler on fastgame's param groups equals CGDs with set_lr at each step."""
    torch.manual_seed(0)
    G, D, batches, loss_fn = _mlp_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    kw = dict(lr_max=1e-2, lr_min=2e-2, tol=1e-18, atol=1e-30)
    ref = CGDs.ACGD(max_params=D.parameters(), min_params=G.parameters(), **kw)
    ours = fastgame.ACGD(max_params=D2.parameters(), min_params=G2.parameters(), cg_start="warm", **kw)
    sched = torch.optim.lr_scheduler.StepLR(ours, step_size=2, gamma=0.5)
    for real, z in batches[:8]:
        ref.set_lr(*[g["lr"] for g in ours.param_groups])
        ref.step(loss_fn(G, D, real, z))
        ours.step(loss_fn(G2, D2, real, z))
        sched.step()
    assert ours.param_groups[0]["lr"] == pytest.approx(1e-2 / 16)
    ref_p, ours_p = flat(D, G), flat(D2, G2)
    assert ((ref_p - ours_p).norm() / ref_p.norm()).item() <= 1e-8


def _k_norm(loss, xs, ys, eta, a, enough=float("inf"), iters=60):
    """||K||, K = √η_b D_ba √η_a (a the solved player, b the other), by power iteration on KᵀK
    with autograd's mixed products at the point ``loss`` was computed: an estimate from below,
    returned as soon as it reaches ``enough``."""
    players = (xs, ys)
    g = torch.autograd.grad(loss, xs + ys, create_graph=True)
    grads = (g[:len(xs)], g[len(xs):])
    b = 1 - a

    def mixed(to, v):  # D_{to,from} v: differentiate g_from · v with respect to the player `to`
        src = grads[1 - to]
        dot = sum((gi * vi).sum() for gi, vi in zip(src, _split(v, players[1 - to])))
        out = torch.autograd.grad(dot, players[to], retain_graph=True, allow_unused=True, materialize_grads=True)
        return torch.cat([t.reshape(-1) for t in out])

    sa, sb = eta[a].sqrt(), eta[b].sqrt()
    v = torch.randn(sum(p.numel() for p in players[a]), dtype=loss.dtype, generator=torch.Generator().manual_seed(0))
    lam = torch.zeros((), dtype=loss.dtype)
    for _ in range(iters):
        v = v / v.norm()
        kv = sb * mixed(b, sa * v)      # K v
        w = sa * mixed(a, sb * kv)      # Kᵀ K v
        lam = torch.dot(v, w)
        v = w
        if lam.clamp(min=0).sqrt().item() >= enough:
            break
    return lam.clamp(min=0).sqrt().item()


def _split(v, params):
    out, i = [], 0
    for p in params:
        out.append(v[i:i + p.numel()].view_as(p))
        i += p.numel()
    return out


@pytest.mark.parametrize("tol", [1e-6, 1e-10])
@pytest.mark.parametrize("cls", ["ACGD", "BCGD"])
@pytest.mark.parametrize("case", [_mlp_case, _conv_case], ids=["mlp", "conv_bn"])
def test_default_zero_start_within_the_tolerance_bound(float64, cls, case, tol):
    """The default ``cg_start="zero"`` against CGDs' warm start, step by step from CGDs' point.

    Both solve A w = b, A = I + KᵀK ⪰ I (K = √η_b D_ba √η_a, a the solved player), and stop with
    ‖r‖² < max(tol‖b‖², atol). Since ‖A⁻¹‖ ≤ 1, each is within ‖r‖ < ε = √max(tol‖b‖², atol) of
    the exact solution, so the two differ by at most 2ε:

        ‖w − w'‖ ≤ 2ε,   ‖Δa − Δa'‖ ≤ max√η_a · 2ε,   ‖Δb − Δb'‖ = ‖√η_b K (w − w')‖ ≤ max√η_b ‖K‖ 2ε

    (Δa = −s√η_a w, Δb = sη_b(g_b + D_ba Δa)). Tested for 6 steps (both players solved, CGDs'
    warm start carried along), float64, at tol 1e-6 and 1e-10, atol 1e-20. The w bound is tested as
    stated; ‖K‖ by power iteration, an estimate from below, so a pass with it proves the bound
    (iterated until it does, or at most 60 times; no relative room, only 1e-14 absolute for
    float64 rounding of the differences).
    """
    torch.manual_seed(0)
    G, D, batches, loss_fn = case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    lr, atol = 1e-2, 1e-20
    ref = getattr(CGDs, cls)(max_params=D.parameters(), min_params=G.parameters(), lr_max=lr, lr_min=lr, tol=tol,
                             atol=atol)
    ours = getattr(fastgame, cls)(max_params=D2.parameters(), min_params=G2.parameters(), lr_max=lr, lr_min=lr,
                                  tol=tol, atol=atol)
    assert ours.param_groups[0]["cg_start"] == "zero"
    nx = sum(p.numel() for p in D.parameters())
    worst = 0.0
    for t, (real, z) in enumerate(batches[:6], start=1):
        G2.load_state_dict(G.state_dict())  # from CGDs' point (parameters and BatchNorm buffers)
        D2.load_state_dict(D.state_dict())
        G3, D3 = copy.deepcopy(G), copy.deepcopy(D)
        before = flat(D, G)
        ref.step(loss_fn(G, D, real, z))
        ours.step(loss_fn(G2, D2, real, z))
        info = ours.get_info()
        # started from zero; collect_info (BCGD's default) adds the pass of CGDs' hvp_x/hvp_y
        assert info["hvp_passes"] == 1 + 2 * info["iter_num"] + int(ours.collect_info)
        d_ref, d_ours = flat(D, G) - before, flat(D2, G2) - before
        if cls == "ACGD":
            scale = lr * (1 - 0.99 ** t) ** 0.5
            eta = [scale / (ours.state[n]["square_avg"].sqrt() + 1e-5) for n in ("max", "min")]
        else:
            eta = [torch.tensor(lr, dtype=torch.float64)] * 2
        a = 0 if info["solved"] == "max" else 1
        eps = max(tol * float(info["rhs_sq"]), atol) ** 0.5
        parts = [(d_ref[:nx], d_ours[:nx]), (d_ref[nx:], d_ours[nx:])]
        dw = (parts[a][1] - parts[a][0]) / eta[a].sqrt()
        assert dw.norm() <= 2 * eps, (t, dw.norm().item(), 2 * eps)
        assert (parts[a][1] - parts[a][0]).norm() <= eta[a].sqrt().max() * 2 * eps
        diff_b = (parts[1 - a][1] - parts[1 - a][0]).norm().item()
        per_k = (eta[1 - a].sqrt().max() * 2 * eps).item()
        k = _k_norm(loss_fn(G3, D3, real, z), list(D3.parameters()), list(G3.parameters()), eta, a,
                    enough=diff_b / per_k)
        assert diff_b <= per_k * k + 1e-14, (t, diff_b, k, eps)
        worst = max(worst, dw.norm().item() / (2 * eps))
    assert worst > 0  # the starts differ: the steps are not bit-equal, and the bound is what holds
