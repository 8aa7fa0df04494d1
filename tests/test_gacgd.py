"""GACGD against CGDs.GACGD 0.4.5, against ACGD on zero-sum games, and as an optimizer."""
import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import fastgame
from bench.models import mlp_gan, ring_data

CGDs = pytest.importorskip("CGDs")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_case(seed=0, batch=64, steps=10, width=32):
    torch.manual_seed(seed)
    G, D = mlp_gan(width=width, depth=2, latent=4)
    gen = torch.Generator().manual_seed(seed + 1)
    return G, D, [(ring_data(batch, gen), torch.randn(batch, 4, generator=gen)) for _ in range(steps)]


def ns_losses(G, D, real, z):
    """Non-saturating GAN: G minimises -log σ(D(G(z))), D minimises the usual cross-entropy."""
    fake = G(z)
    return F.softplus(-D(fake)).mean(), F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()


def flat(*modules):
    return torch.cat([p.detach().reshape(-1).clone() for m in modules for p in m.parameters()])


def run_pair(steps, warm_start, **kw):
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ref = CGDs.GACGD(x_params=G.parameters(), y_params=D.parameters(), **kw)
    ours = fastgame.GACGD(G2.parameters(), D2.parameters(), warm_start=warm_start, **kw)
    errors = []
    for real, z in batches[:steps]:
        b_ref, b_ours = flat(G, D), flat(G2, D2)
        ref.step(*ns_losses(G, D, real, z))
        ours.step(*ns_losses(G2, D2, real, z))
        d_ref, d_ours = flat(G, D) - b_ref, flat(G2, D2) - b_ours
        errors.append(((d_ref - d_ours).norm() / d_ref.norm()).item())
    return errors


@pytest.mark.parametrize("warm_start", [False, True])
def test_parity_float64(float64, warm_start):
    errors = run_pair(8, warm_start, lr_x=1e-2, lr_y=1e-2, tol=1e-12, atol=1e-20)
    assert max(errors) <= 1e-8, errors


def test_parity_float32_default_tolerance():
    errors = run_pair(8, False, lr_x=1e-2, lr_y=1e-2)
    assert max(errors) <= 1e-3, errors


def test_zero_sum_game_is_the_acgd_step(float64):
    """GACGD with loss_y = -loss_x (x = G minimises f, y = D maximises it) = ACGD."""
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    kw = dict(eps=1e-6, beta=0.9)
    gacgd = fastgame.GACGD(G.parameters(), D.parameters(), lr_x=1e-2, lr_y=2e-2, tol=1e-14, atol=0.0, **kw)
    acgd = fastgame.ACGD(D2.parameters(), G2.parameters(), lr_max=2e-2, lr_min=1e-2, tol=1e-28, atol=0.0, **kw)

    def f(G, D, real, z):
        return -F.softplus(-D(real)).mean() - F.softplus(D(G(z))).mean()
    for real, z in batches[:6]:
        loss = f(G, D, real, z)
        gacgd.step(loss, -loss)
        acgd.step(f(G2, D2, real, z))
    torch.testing.assert_close(flat(G, D), flat(G2, D2), rtol=1e-9, atol=1e-11)


def test_closure_scheduler_and_unused_parameters():
    G, D, batches = make_case()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    unused = torch.nn.Parameter(torch.randn(5))
    a = fastgame.GACGD(list(G.parameters()) + [unused], D.parameters(), lr_x=1e-2, lr_y=1e-2)
    b = fastgame.GACGD(G2.parameters(), D2.parameters(), lr_x=1e-2, lr_y=1e-2)
    sa = torch.optim.lr_scheduler.StepLR(a, 2, 0.5)
    sb = torch.optim.lr_scheduler.StepLR(b, 2, 0.5)
    before = unused.detach().clone()
    for real, z in batches[:4]:
        a.step(lambda: ns_losses(G, D, real, z))
        b.step(*ns_losses(G2, D2, real, z))
        sa.step(), sb.step()
    assert torch.equal(unused.detach(), before)
    torch.testing.assert_close(flat(G, D), flat(G2, D2), rtol=1e-5, atol=1e-6)
    assert a.param_groups[0]["lr"] == pytest.approx(2.5e-3)


CHILD = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    import fastgame
    from tests.test_gacgd import make_case, ns_losses
    G, D, batches = make_case()
    ckpt = torch.load({path!r}, weights_only=False)
    G.load_state_dict(ckpt["G"]); D.load_state_dict(ckpt["D"])
    opt = fastgame.GACGD(G.parameters(), D.parameters())
    opt.load_state_dict(ckpt["opt"])
    for real, z in batches[3:7]:
        opt.step(*ns_losses(G, D, real, z))
    torch.save([p.detach() for m in (G, D) for p in m.parameters()], {out!r})
""")


def test_state_survives_a_new_process_bit_for_bit(tmp_path):
    G, D, batches = make_case()
    opt = fastgame.GACGD(G.parameters(), D.parameters(), lr_x=1e-2, lr_y=2e-2, restart=5)
    for real, z in batches[:3]:
        opt.step(*ns_losses(G, D, real, z))
    path, out = str(tmp_path / "ckpt.pt"), str(tmp_path / "out.pt")
    torch.save({"G": G.state_dict(), "D": D.state_dict(), "opt": opt.state_dict()}, path)
    for real, z in batches[3:7]:
        opt.step(*ns_losses(G, D, real, z))
    subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, path=path, out=out)], check=True, cwd=ROOT)
    theirs = torch.load(out)
    assert all(torch.equal(p.detach(), q) for p, q in zip(list(G.parameters()) + list(D.parameters()), theirs))


def test_bad_inputs_change_nothing():
    G, D, batches = make_case()
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="both"):
        fastgame.GACGD([a, b], [b])
    with pytest.raises(ValueError, match="empty"):
        fastgame.GACGD([], [a])
    with pytest.raises(ValueError, match="restart"):
        fastgame.GACGD([a], [b], restart=0)
    with pytest.raises(ValueError, match="lr_y"):
        fastgame.GACGD([a], [b], lr_y=-1.0)
    opt = fastgame.GACGD(G.parameters(), D.parameters(), lr_x=1e-2, lr_y=1e-2)
    opt.step(*ns_losses(G, D, *batches[0]))
    state = opt.state_dict()
    before = flat(G, D)
    real, z = batches[1]
    lx, ly = ns_losses(G, D, real, z)
    with pytest.raises(ValueError, match="loss_y"):
        opt.step(lx)
    with pytest.raises(ValueError, match="scalar"):
        opt.step(D(real), ly)
    with pytest.raises(ValueError, match="no autograd graph"):
        opt.step(lx, ly.detach())
    with pytest.raises(ValueError, match="pair"):
        opt.step(lambda: lx)
    with pytest.raises(FloatingPointError, match="loss_y"):
        opt.step(lx, ly * float("nan"))
    with pytest.raises(FloatingPointError, match="gradient of player x"):
        opt.step(lx + torch.sqrt((G[0].weight ** 2 - G[0].weight.detach() ** 2).sum()), ly)
    assert torch.equal(before, flat(G, D))
    after = opt.state_dict()
    assert after["state"]["game"] == state["state"]["game"]
    for name in ("x", "y"):
        for k, v in state["state"][name].items():
            assert torch.equal(v, after["state"][name][k])
