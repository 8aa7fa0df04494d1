"""The main job: examples/demo.sh's settings at a few steps (smoke), and its verdicts."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import demo_summary  # noqa: E402


def test_verdicts_are_computed_from_the_seeds():
    v = demo_summary.verdict
    assert v("modes_covered", [5, 8, 8], [0, 0, 0], "Adam") == "ACGD better than Adam on every seed"
    assert v("fcd", [30.0, 40.0], [10.0, 20.0], "Adam") == "ACGD worse than Adam on every seed"
    assert v("fcd", [10.0, 30.0], [20.0, 40.0], "Adam").startswith("ACGD ahead of Adam on average (20 vs 30)")
    assert v("modes_covered", [8, 8], [8, 8], "Adam") == "ACGD ties Adam"
    assert v("modes_covered", [4, 8], [5, 6], "Adam").endswith("unsettled")


def test_describe_names_what_differs_from_plain_play():
    cfg = {"optimizer": "adam-alt", "penalty": "wgan_gp", "penalty_weight": 10.0, "d_steps": 3, "betas": [0.5, 0.9]}
    assert demo_summary.describe(cfg) == "Adam (alternating) + wgan_gp 10, 3 critic steps, betas (0.5, 0.9)"
    assert demo_summary.describe({"optimizer": "acgd", "penalty": "none"}) == "ACGD"


def test_describe_names_wgan_gp_recipes_by_their_weight():
    recipe = dict(demo_summary.RECIPE, lr_d=1e-4, lr_g=1e-4)
    assert demo_summary.describe({**recipe, "penalty_weight": 0.1}) == "Adam + WGAN-GP (λ 0.1, toy recipe)"
    assert demo_summary.describe({**recipe, "penalty_weight": 10.0}) == "Adam + WGAN-GP (λ 10, image recipe)"
    assert demo_summary.describe({**recipe, "penalty_weight": 1.0}) == \
        "Adam + WGAN-GP (λ 1, the recipe's other settings)"
    # Another learning rate than the paper's is named.
    assert demo_summary.describe({**recipe, "lr_d": 1e-3, "lr_g": 1e-3, "penalty_weight": 0.1}) == \
        "Adam + WGAN-GP (λ 0.1, toy recipe but lr 0.001)"
    assert demo_summary.describe({**recipe, "lr_d": 4e-4, "penalty_weight": 10.0}) == \
        "Adam + WGAN-GP (λ 10, image recipe but lr 0.0004/0.0001)"
    assert demo_summary.describe({**recipe, "d_steps": 1, "penalty_weight": 10.0}).startswith("Adam (alternating) + wgan_gp 10")
    sources = demo_summary.recipe_sources([{**recipe, "penalty_weight": 0.1}, {"optimizer": "acgd"}])
    assert len(sources) == 1 and "gan_toy.py" in sources[0] and "Gulrajani" in sources[0]
    assert demo_summary.recipe_sources([{"optimizer": "acgd"}]) == []


def test_demo_settings_smoke(tmp_path, fastgame_cache):
    """The whole demo, every setting and the summary, at 4 steps and one seed."""
    out = tmp_path / "demo"
    env = dict(os.environ, FASTGAME_DEMO_SMOKE="1", FASTGAME_DEMO_JOBS="1", FASTGAME_CACHE=fastgame_cache,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(["bash", os.path.join(ROOT, "examples", "demo.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    for setting in ("ring8-wgan", "digits-wgan", "ring8-minimax", "digits-minimax"):
        assert os.path.getsize(out / setting / "summary.png") > 1000
        assert f"]({setting}/summary.png)" in summary
    assert summary.count("**Verdict") == 4
    # WGAN-GP's recipes are what the baselines ran with: the toy one on the ring, the image one on the digits.
    ring, digits = summary.split("## Digits (8x8), WGAN loss")[0], summary.split("## Digits (8x8), WGAN loss")[1]
    assert "| Adam + WGAN-GP (λ 0.1, toy recipe but lr 0.001) |" in ring and "gan_toy.py" in ring
    assert "| Adam + WGAN-GP (λ 10, image recipe but lr 0.0002) |" in digits.split("## Control")[0]
    assert str(out.resolve()) in proc.stdout.splitlines()[-1]
