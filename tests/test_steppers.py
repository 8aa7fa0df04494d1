"""The trainer's Adam baselines against the plain torch loop they stand for."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fastgame import losses as L
from fastgame.trainer.batches import Batch
from fastgame.trainer.methods import ADAM_BETAS, METHODS, make_stepper
from fastgame.trainer.steppers import GameLosses


def _models(seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    D = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    return G, D


@pytest.mark.parametrize("penalty", [None, "r1", "wgan_gp"])
@pytest.mark.parametrize("alternating", [False, True])
def test_adam_stepper_is_the_torch_loop(penalty, alternating):
    """D descends loss_d (+ penalty) and G descends loss_g, G from the same point (simultaneous)
    or after D moved (alternating, on the same batch: the penalty is D's and not recomputed)."""
    G, D = _models(0)
    G_ref, D_ref = _models(0)
    stepper = make_stepper("adam-alt" if alternating else "adam", G, D,
                           GameLosses(G, D, "standard", penalty, 2.0), lr_d=1e-2, lr_g=2e-2)
    opt_d = torch.optim.Adam(D_ref.parameters(), lr=1e-2, betas=ADAM_BETAS)
    opt_g = torch.optim.Adam(G_ref.parameters(), lr=2e-2, betas=ADAM_BETAS)
    loss = L.get_loss("standard")
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        real, z, t = torch.randn(16, 2, generator=g).double(), torch.randn(16, 3, generator=g).double(), \
            torch.rand(16, generator=g).double()
        stepper.step([Batch(real, z, t)])

        fake = G_ref(z)
        out = loss(D_ref(real), D_ref(fake))
        loss_d = out.discriminator
        if penalty is not None:
            loss_d = loss_d + L.gradient_penalty(penalty, D_ref, real, fake, 2.0, t=t)
        opt_d.zero_grad()
        opt_g.zero_grad()
        loss_d.backward(inputs=list(D_ref.parameters()), retain_graph=True)
        if alternating:
            opt_d.step()
            out = loss(D_ref(real), D_ref(G_ref(z)))
        out.generator.backward(inputs=list(G_ref.parameters()))
        if not alternating:
            opt_d.step()
        opt_g.step()
    for p, q in zip(list(G.parameters()) + list(D.parameters()), list(G_ref.parameters()) + list(D_ref.parameters())):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    assert all(p.grad is None for p in list(G.parameters()) + list(D.parameters()))


def test_solver_settings_only_where_there_is_a_solve():
    """tol, max_iter and cg_start reach the optimizers with a CG/GMRES solve; given to another
    they are refused, not ignored."""
    G, D = _models(0)
    losses = GameLosses(G, D, "standard", None, 0.0)
    make_stepper("gacgd", G, D, losses, 1e-2, 1e-2, tol=1e-6, max_iter=4)
    for name, kw in (("adam", {"tol": 1e-6}), ("adam-alt", {"max_iter": 3}), ("extragradient", {"tol": 1e-6}),
                     ("gacgd", {"cg_start": "zero"})):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} sets the CG"):
            make_stepper(name, G, D, losses, 1e-2, 1e-2, **kw)


@pytest.mark.parametrize("name", ["acgd", "gacgd", "extragradient", "adam"])
def test_eager_counts_stay_on_the_host(name):
    """An eager step's CG iterations and HVP passes are host numbers, not CPU tensors (which
    the trainer would have to copy to the GPU, a blocking copy each step)."""
    G, D = _models(0)
    stepper = make_stepper(name, G, D, GameLosses(G, D, "standard", None, 0.0), 1e-2, 1e-2)
    g = torch.Generator().manual_seed(1)
    d, gl, it, hp = stepper.step([Batch(torch.randn(16, 2, generator=g).double(),
                                        torch.randn(16, 3, generator=g).double(), torch.rand(16, generator=g).double())])
    assert isinstance(d, torch.Tensor) and isinstance(gl, torch.Tensor)
    assert not isinstance(it, torch.Tensor) and not isinstance(hp, torch.Tensor), (it, hp)
    assert (it > 0) == (name in ("acgd", "gacgd"))


def test_registry_settings_come_from_the_classes():
    """The registry's settings are the classes' declared hyperparameters (or a torch optimizer's
    keywords); the optimizer's own validators refuse a bad combination; a setting a method does
    not take is refused by make_stepper, one it takes reaches the optimizer."""
    import fastgame
    from fastgame.trainer import methods as registry
    assert tuple(registry.METHODS)[:5] == ("acgd", "bcgd", "gacgd", "adam", "adam-alt")
    assert [m.name for m in METHODS.values() if m.solves] == ["acgd", "bcgd", "gacgd"]
    for m in registry.METHODS.values():
        assert m.settings == (frozenset(m.cls.hyperparameters) if hasattr(m.cls, "hyperparameters")
                              else frozenset(registry.METHODS["adam"].settings))
    assert [m.name for m in registry.takers("cg_start")] == ["acgd", "bcgd"]
    assert registry.METHODS["adam"].takes("betas") and not registry.METHODS["adam"].takes("tol")
    with pytest.raises(ValueError, match="capturable=True needs max_iter"):
        registry.METHODS["bcgd"].check(capturable=True)
    with pytest.raises(ValueError, match="invalid"):
        registry.METHODS["gacgd"].check(tol=-1.0)
    registry.METHODS["acgd"].check(capturable=True, max_iter=2, cg_start="warm")
    G, D = _models(0)
    losses = GameLosses(G, D, "standard", None, 0.0)
    stepper = make_stepper("gacgd", G, D, losses, 1e-2, 2e-2, tol=1e-6, max_iter=4)
    assert isinstance(stepper.opt, fastgame.GACGD)
    assert [g["lr"] for g in stepper.opt.param_groups] == [1e-2, 2e-2]
    assert stepper.opt.param_groups[0]["tol"] == 1e-6 and stepper.opt.param_groups[0]["max_iter"] == 4
    assert make_stepper("adam", G, D, losses, 1e-2, 1e-2, betas=(0.0, 0.9)).opt_d.param_groups[0]["betas"] == (0.0, 0.9)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        make_stepper("sgd", G, D, losses, 1e-2, 1e-2)
