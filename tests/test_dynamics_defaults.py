"""Every game dynamic at its default hyperparameters on the two games where the literature says
what it does: the bilinear game f(x, y) = x·y and the Dirac-GAN (Mescheder, Geiger & Nowozin,
"Which training methods for GANs do actually converge?", ICML 2018), both with equilibrium 0.

* Converge: extragradient (Korpelevich 1976; Gidel et al., "A variational inequality perspective
  on generative adversarial networks", ICLR 2019), OGDA (Daskalakis, Ilyas, Syrgkanis & Zeng,
  "Training GANs with optimism", ICLR 2018), consensus optimization (Mescheder, Nowozin & Geiger,
  "The numerics of GANs", NeurIPS 2017), SGA (Balduzzi et al., "The mechanics of n-player
  differentiable games", ICML 2018), Hamiltonian gradient descent (same, and Abernethy, Lai &
  Wibisono 2019), LEAD (Hemmat, Mitra, Lajoie & Mitliagkas, "LEAD: Min-max optimization from a
  physical perspective", TMLR 2023: linear convergence on bilinear games), proximal training
  (Farnia & Ozdaglar, "Do GANs always have Nash equilibria?", ICML 2020: the proximal
  equilibrium of these games is 0), BCGD and ACGD (Schäfer & Anandkumar, "Competitive gradient
  descent", NeurIPS 2019).
* Simultaneous gradient descent-ascent spirals out on both (Mescheder et al. 2018, §2), and
  alternating gradient descent-ascent orbits without converging (Bailey, Gidel & Piliouras,
  "Finite regret and cycles with fixed step-size via alternating gradient descent-ascent", COLT
  2020; Mescheder et al. 2018 for the Dirac-GAN).

Not covered: the Adam forms (SimAdam, AltAdam, ExtraAdam, OptimisticAdam), whose constant-step
normalized updates are not claimed to converge on these games (they do not: they hover at a
distance of the order of the learning rate times the number of steps), and best-response-
manifold training, which needs a discriminator with a best response (both games' discriminator
losses are linear in the discriminator).

The learning rate is 0.1 for every method (the constructors' default 1e-3 would need 100× the
steps); every other hyperparameter is the constructor's default.
"""
from __future__ import annotations

import pytest
import torch

from fastgame.games import Bilinear, DiracGAN
from fastgame.optim import DYNAMICS

LR, STEPS = 0.1, 2000
CONVERGE = ["extragradient", "ogda", "consensus", "sga", "hamiltonian", "lead", "proximal", "bcgd", "acgd"]


def _games():
    return {"bilinear": Bilinear(A=[[1.0]], x0=[1.0], y0=[1.0]), "dirac": DiracGAN(theta=1.0, psi=1.0)}


def _trajectory(name: str, game) -> torch.Tensor:
    """‖z_t‖ / ‖z_0‖ for t = 0..STEPS with the method's default hyperparameters."""
    opt = DYNAMICS[name](game.max_params, game.min_params, lr_max=LR, lr_min=LR)
    z0 = float(game.point().norm())
    norms = [1.0]
    for _ in range(STEPS):
        opt.step(game.loss)
        norms.append(float(game.point().norm()) / z0)
    return torch.tensor(norms, dtype=torch.float64)


@pytest.mark.parametrize("game", ["bilinear", "dirac"])
@pytest.mark.parametrize("name", CONVERGE)
def test_defaults_converge_where_the_method_does(float64, name, game):
    r = _trajectory(name, _games()[game])
    assert r[-1] < 0.35, f"{name} on {game}: ‖z‖ ended at {float(r[-1]):.3g} of its start"
    # Still contracting (unless already at the equilibrium to rounding), not stuck on an orbit.
    assert r[-1] < 1e-9 or r[-1] < 0.9 * r[STEPS // 2], f"{name} on {game}: not contracting any more"


@pytest.mark.parametrize("game", ["bilinear", "dirac"])
def test_simultaneous_gradient_play_spirals_out(float64, game):
    r = _trajectory("simgd", _games()[game])
    assert r[-1] > 2 and r[-1] > r[STEPS // 2]


@pytest.mark.parametrize("game", ["bilinear", "dirac"])
def test_alternating_gradient_play_orbits(float64, game):
    r = _trajectory("altgd", _games()[game])
    assert 0.5 < float(r.min()) and float(r.max()) < 2


def test_lead_default_coupling_converges_on_the_bilinear_game(float64):
    """LEAD's coupling α = 1 diverged on x·y at lr 0.1 (rate 1.054 a step); the default 0.5
    converges there at lr 0.01-0.3 (rates 0.996, 0.960, 0.872), and on the Dirac-GAN."""
    import fastgame
    game = _games()["bilinear"]
    opt = fastgame.LEAD(game.max_params, game.min_params, lr_max=LR, lr_min=LR)
    assert opt.param_groups[0]["coupling"] == 0.5
