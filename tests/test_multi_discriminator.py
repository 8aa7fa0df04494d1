"""`fastgame train --discriminators K`: one generator against K discriminators (PCGD/APCGD with
K + 1 players, simultaneous Adam per player), end to end on tiny settings, against a hand-written
reference step, resumed bit for bit, and its bad input refused with one line."""
from __future__ import annotations

import json
import os

import pytest
import torch

import fastgame
from fastgame import losses as L
from fastgame.trainer.cli import main
from fastgame.trainer.config import TrainConfig
from fastgame.trainer.batches import Batch
from fastgame.trainer.methods import make_stepper
from fastgame.trainer.models import build_gan
from fastgame.trainer.multi_steppers import MultiGameLosses

from tests.test_train_cli import _assert_same_rows, _rows, _state

TINY = ["--steps", "4", "--batch", "16", "--width", "8", "--eval-samples", "64", "--eval-every", "2",
        "--checkpoint-every", "2", "-q"]


@pytest.fixture(scope="module", autouse=True)
def cache(fastgame_cache):
    """The digit classifier is trained once into the session's temporary cache."""
    return fastgame_cache


def _assert_same_state(a, b):
    assert a["step"] == b["step"]
    for k in ("G", "D"):
        assert a[k].keys() == b[k].keys()
        for name in a[k]:
            assert torch.equal(a[k][name], b[k][name]), (k, name)
    flat_a, flat_b = [], []
    torch.utils._pytree.tree_map(flat_a.append, a["optimizer"])
    torch.utils._pytree.tree_map(flat_b.append, b["optimizer"])
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b):
        assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y


@pytest.mark.parametrize("data,optimizer,k,extra", [
    ("ring8", "apcgd", 2, ["--loss", "wgan"]),
    ("ring8", "pcgd", 3, []),
    ("ring8", "adam", 3, ["--loss", "wgan", "--penalty", "wgan_gp"]),
    ("grid25", "apcgd", 1, []),
    ("digits", "apcgd", 2, ["--loss", "non_saturating"]),
    ("digits", "pcgd", 2, ["--penalty", "r1"]),
    ("digits", "adam", 2, []),
])
def test_train_k_discriminators(tmp_path, data, optimizer, k, extra):
    out = tmp_path / "run"
    assert main(["train", "--data", data, "--optimizer", optimizer, "--discriminators", str(k), "--out", str(out)]
                + TINY + extra) == 0
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "samples.png", "curves.png"):
        assert (out / name).is_file(), name
    cfg = json.load(open(out / "config.json"))
    assert cfg["discriminators"] == k and cfg["optimizer"] == optimizer
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(torch.isfinite(torch.tensor(float(r["loss_d"]))) for r in rows)
    if k > 1:  # K discriminators: a ModuleList's keys start with the discriminator's index
        D = _state(out)["D"]
        assert {name.split(".")[0] for name in D} == {str(i) for i in range(k)} and len(D) % k == 0
    if optimizer != "adam":
        # n = K + 1 players, one mixed pass each per product: at least K + 1 passes a step.
        assert all(float(r["hvp_passes"]) >= k + 1 for r in rows)


@pytest.mark.parametrize("optimizer", ["apcgd", "adam"])
def test_resume_equals_uninterrupted(tmp_path, optimizer):
    args = ["--data", "ring8", "--optimizer", optimizer, "--discriminators", "2", "--loss", "wgan", "--batch", "16",
            "--width", "8", "--eval-samples", "64", "--eval-every", "2", "--checkpoint-every", "3", "-q"]
    assert main(["train", "--out", str(tmp_path / "full"), "--steps", "6"] + args) == 0
    assert main(["train", "--out", str(tmp_path / "part"), "--steps", "3"] + args) == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--steps", "6", "-q"]) == 0
    _assert_same_state(_state(tmp_path / "full"), _state(tmp_path / "part"))
    _assert_same_rows(tmp_path / "full", tmp_path / "part")


def _game(k, seed=0):
    G, D = build_gan("mlp", 6, 2, (2,), seed=seed, discriminators=k)
    Ds = list(D) if k > 1 else [D]
    g = torch.Generator().manual_seed(seed + 7)
    real, z = torch.randn(12, 2, generator=g), torch.randn(12, 2, generator=g)
    return G, D, Ds, real, z


def test_adam_stepper_is_one_adam_per_player_on_its_own_loss():
    """Simultaneous Adam against K = 3 discriminators equals a hand-written step: each discriminator's
    Adam on its own loss, the generator's on the mean of its losses, gradients at the same point."""
    G, D, Ds, real, z = _game(3)
    G2, D2, Ds2, _, _ = _game(3)
    stepper = make_stepper("adam", G, D, MultiGameLosses(G, D, "standard", None, 0.0), 1e-2, 2e-2, discriminators=3)
    opts = [torch.optim.Adam(G2.parameters(), lr=2e-2, betas=(0.5, 0.999))]
    opts += [torch.optim.Adam(d.parameters(), lr=1e-2, betas=(0.5, 0.999)) for d in Ds2]
    for _ in range(3):
        stepper.step([Batch(real, z, torch.zeros(12))])
        fake = G2(z)
        out = L.multi_discriminator("standard", [d(real) for d in Ds2], [d(fake) for d in Ds2])
        grads = [torch.autograd.grad(loss, list(m.parameters()), retain_graph=True)
                 for loss, m in zip(out.per_player(), [G2] + Ds2)]
        for opt, m, gs in zip(opts, [G2] + Ds2, grads):
            for p, g_ in zip(m.parameters(), gs):
                p.grad = g_
            opt.step()
    for a, b in zip(list(G.parameters()) + list(D.parameters()), list(G2.parameters()) + list(D2.parameters())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pcgd_stepper_is_apcgd_on_the_players_own_losses():
    """The APCGD stepper is fastgame.APCGD with players (G, D_1, D_2) on (the generator's mean loss,
    each discriminator's loss), the generator at lr_g and the discriminators at lr_d."""
    G, D, Ds, real, z = _game(2)
    G2, D2, Ds2, _, _ = _game(2)
    stepper = make_stepper("apcgd", G, D, MultiGameLosses(G, D, "wgan", None, 0.0), 1e-2, 2e-2, discriminators=2,
                           tol=1e-6)
    ref = fastgame.APCGD([{"params": G2.parameters(), "lr": 2e-2}] + [{"params": d.parameters(), "lr": 1e-2}
                                                                       for d in Ds2], tol=1e-6)
    for _ in range(2):
        stepper.step([Batch(real, z, torch.zeros(12))])
        fake = G2(z)
        ref.step(L.multi_discriminator("wgan", [d(real) for d in Ds2], [d(fake) for d in Ds2]).per_player())
    for a, b in zip(list(G.parameters()) + list(D.parameters()), list(G2.parameters()) + list(D2.parameters())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert stepper.opt.get_info()["hvp_passes"] > 0


def test_first_discriminator_is_the_one_discriminator_run_s():
    """K discriminators are drawn after G, the first as a K = 1 run draws its D: K = 1 is unchanged."""
    G1, D1 = build_gan("dcgan", 4, 3, (1, 8, 8), seed=5)
    G3, D3 = build_gan("dcgan", 4, 3, (1, 8, 8), seed=5, discriminators=3)
    assert G1.state_dict().keys() == G3.state_dict().keys()
    for a, b in zip(list(G1.parameters()) + list(D1.parameters()), list(G3.parameters()) + list(D3[0].parameters())):
        assert torch.equal(a, b)
    assert not torch.equal(next(D3[0].parameters()), next(D3[1].parameters()))


def test_adam_state_of_other_k_is_refused_and_changes_nothing():
    G, D, Ds, real, z = _game(3)
    stepper = make_stepper("adam", G, D, MultiGameLosses(G, D, "standard", None, 0.0), 1e-2, 1e-2, discriminators=3)
    stepper.step([Batch(real, z, torch.zeros(12))])
    before = stepper.state_dict()
    G2, D2, Ds2, _, _ = _game(2)
    other = make_stepper("adam", G2, D2, MultiGameLosses(G2, D2, "standard", None, 0.0), 1e-2, 1e-2, discriminators=2)
    with pytest.raises(ValueError, match="against 3 discriminators"):
        stepper.load_state_dict(other.state_dict())
    after = stepper.state_dict()
    assert after["g"]["state"][0]["exp_avg"].equal(before["g"]["state"][0]["exp_avg"])


@pytest.mark.parametrize("args,message", [
    (["--optimizer", "acgd", "--discriminators", "2"],
     "--discriminators 2 needs --optimizer pcgd, apcgd or adam (one player per discriminator); acgd plays one "
     "generator against one discriminator"),
    (["--optimizer", "adam-alt", "--discriminators", "3"], "--discriminators 3 needs --optimizer"),
    (["--optimizer", "apcgd", "--discriminators", "2", "--cg-start", "warm"], "--cg-start sets the CG solve"),
    (["--optimizer", "pcgd", "--graphed", "--max-iter", "3"], "--graphed needs --optimizer acgd or bcgd"),
    (["--optimizer", "apcgd", "--discriminators", "2", "--d-steps", "5"], "--d-steps 5 is for adam-alt"),
])
def test_bad_input_one_line_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", "--data", "ring8", "--out", str(out)] + TINY + args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastgame: error: ") and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_discriminators_zero_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--discriminators", "0"])
    assert exc.value.code == 2 and "--discriminators: must be a whole number >= 1, got 0" in capsys.readouterr().err


def test_compare_refuses_k_for_a_two_player_method_before_training(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "ring8", "--discriminators", "2", "--optimizers", "apcgd", "acgd",
                 "--seeds", "0", "--out", str(out)] + TINY) == 2
    assert "acgd plays one generator against one discriminator" in capsys.readouterr().err
    assert not out.exists()


def test_compare_k_discriminators(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "ring8", "--discriminators", "2", "--loss", "wgan", "--optimizers", "apcgd",
                 "adam", "--seeds", "0", "1", "--out", str(out)] + TINY) == 0
    for name in ("compare.md", "compare.csv", "compare.png"):
        assert (out / name).is_file(), name
    for spec in ("apcgd", "adam"):
        for seed in (0, 1):
            assert json.load(open(out / f"{spec}-seed{seed}" / "config.json"))["discriminators"] == 2
    table = (out / "compare.md").read_text()
    assert "| apcgd | 2 | 4 |" in table and "| adam | 2 | 4 |" in table
    # Run again with another K: the folder holds other settings, refused by name.
    assert main(["compare", "--data", "ring8", "--discriminators", "3", "--loss", "wgan", "--optimizers", "apcgd",
                 "adam", "--seeds", "0", "--out", str(out)] + TINY) == 2


def test_old_config_without_discriminators_reads_as_one():
    cfg = TrainConfig().to_json()
    del cfg["discriminators"]
    assert TrainConfig.from_json(cfg).discriminators == 1


def test_probe_refuses_a_run_with_several_discriminators(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "ring8", "--optimizer", "adam", "--discriminators", "2", "--out", str(out)]
                + TINY) == 0
    assert main(["probe", str(out), "--steps", "2"]) == 2
    assert "the probe follows one discriminator" in capsys.readouterr().err


def test_make_stepper_refuses_k_for_a_two_player_method():
    G, D, _, _, _ = _game(2)
    with pytest.raises(ValueError, match="acgd plays one generator against one discriminator, not 2"):
        make_stepper("acgd", G, D, MultiGameLosses(G, D, "standard", None, 0.0), 1e-3, 1e-3, discriminators=2)
