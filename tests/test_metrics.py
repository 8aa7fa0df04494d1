"""The digit metrics: real held-out digits score near-perfect, noise and collapse badly."""
from __future__ import annotations

import math
import os

import pytest
import torch

from fastgame.trainer import metrics
from fastgame.trainer.data import digits_split, load_digits, resize_images


@pytest.fixture(scope="module")
def classifier(fastgame_cache):
    return metrics.digit_classifier()


@pytest.fixture(scope="module")
def digit_metrics(classifier):
    return metrics.DigitMetrics(classifier)


@pytest.fixture(scope="module")
def held_out():
    images, labels = load_digits()
    _, held = digits_split()
    return images[held], labels[held]


def test_classifier_accuracy_and_cache(classifier, held_out):
    assert classifier.held_out_accuracy > 0.95
    images, labels = held_out
    with torch.no_grad():
        acc = float((classifier(images).argmax(1) == labels).float().mean())
    assert acc == pytest.approx(classifier.held_out_accuracy)
    path = os.path.join(metrics.cache_dir(), "digit_classifier_v2.pt")
    mtime = os.path.getmtime(path)
    again = metrics.digit_classifier()  # from the cache, not retrained
    assert os.path.getmtime(path) == mtime
    for a, b in zip(classifier.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_corrupt_cache_is_retrained(classifier, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAME_CACHE", str(tmp_path))
    (tmp_path / "digit_classifier_v2.pt").write_bytes(b"not a checkpoint")
    fresh = metrics.digit_classifier()
    # Seeded training is deterministic on the CPU: the same classifier as the cached one.
    for a, b in zip(classifier.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


def test_real_held_out_digits_score_near_perfect(digit_metrics, held_out):
    m = digit_metrics(held_out[0])
    assert m["classes_covered"] == 10
    assert m["class_kl"] < 0.02
    assert m["fcd"] < 5.0

    # A 16x16 model is scored against digits that went through the same resizing.
    m16 = metrics.DigitMetrics(digit_metrics.classifier, image_size=16)(resize_images(held_out[0], 16))
    assert m16["classes_covered"] == 10 and m16["fcd"] < 5.0


def test_noise_scores_badly(digit_metrics, held_out):
    real = digit_metrics(held_out[0])
    g = torch.Generator().manual_seed(0)
    for noise in (torch.rand(539, 1, 8, 8, generator=g) * 2 - 1, torch.randn(539, 1, 8, 8, generator=g).clamp(-1, 1),
                  torch.full((539, 1, 8, 8), -1.0)):
        m = digit_metrics(noise)
        assert m["fcd"] > 20 * real["fcd"] and m["fcd"] > 50
        assert m["class_kl"] > 5 * real["class_kl"]


def test_mode_collapse_shows_in_the_class_metrics(digit_metrics, held_out):
    images, labels = held_out
    m = digit_metrics(images[labels == 3])
    assert m["classes_covered"] == 1
    assert m["class_kl"] > 0.8 * math.log(10)
    two = digit_metrics(images[(labels == 3) | (labels == 7)])
    assert two["classes_covered"] == 2
    assert two["class_kl"] == pytest.approx(math.log(5), abs=0.2)  # log 5 for two equal classes


def test_frechet_distance_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # Shifting one set by d adds |d|^2; scaling by s changes the trace term to (s-1)^2 per unit variance.
    d = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert metrics.frechet_distance(a, a + d) == pytest.approx(float(d @ d), rel=1e-9)
    cov = torch.cov(a.T)
    mu = a.mean(0)
    # Σ_b = 4Σ_a: Tr(Σ + 4Σ − 2·2Σ) = Tr Σ, plus the means' distance |μ − 2μ|².
    assert metrics.frechet_distance(a, 2 * a) == pytest.approx(float(cov.trace() + mu @ mu), rel=1e-9)


def test_class_metrics():
    assert metrics.class_metrics(torch.arange(10).repeat(5)) == (10, pytest.approx(0.0, abs=1e-12))
    covered, kl = metrics.class_metrics(torch.zeros(50, dtype=torch.int64))
    assert covered == 1 and kl == pytest.approx(math.log(10))


def test_cache_dir_respects_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTGAME_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert metrics.cache_dir() == os.path.join(str(tmp_path), "fastgame")
    monkeypatch.setenv("FASTGAME_CACHE", str(tmp_path / "x"))
    assert metrics.cache_dir() == str(tmp_path / "x")


# ---- any labelled image set, on a tiny torchvision-layout MNIST ---------------------------------
def _write_idx(path, magic: int, array) -> None:
    import numpy as np
    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    path.write_bytes(header + a.tobytes())


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """ROOT/MNIST/raw/train-{images-idx3,labels-idx1}-ubyte as torchvision leaves them: the
    scikit-learn digits at 28x28 in MNIST's uint8 grey levels, twice, the copy shifted by a pixel."""
    images, labels = load_digits()
    big = (resize_images(images, 28) + 1) * 127.5
    big = torch.cat([big, torch.roll(big, shifts=(1, -1), dims=(2, 3))]).round().clamp(0, 255).to(torch.uint8)
    labels = torch.cat([labels, labels])
    root = tmp_path_factory.mktemp("tv")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte", 2051, big[:, 0].numpy())
    _write_idx(raw / "train-labels-idx1-ubyte", 2049, labels.numpy())
    return str(root), labels


@pytest.fixture(scope="module")
def mnist_metrics(tiny_mnist, fastgame_cache):
    from fastgame.trainer.data import load_dataset
    root, labels = tiny_mnist
    data = load_dataset(f"mnist:{root}", 16)
    return metrics.ClassifierMetrics.for_labelled("mnist", data.tensor, labels), data.tensor, labels


def test_labelled_classifier_accuracy_and_cache(mnist_metrics):
    m, images, labels = mnist_metrics
    assert m.classifier.held_out_accuracy > 0.9
    _, held = metrics.labelled_split(len(images))
    with torch.no_grad():
        acc = float((m.classifier(images[held]).argmax(1) == labels[held]).float().mean())
    assert acc == pytest.approx(m.classifier.held_out_accuracy)
    key = f"image_classifier_v1_mnist_1x16px_{metrics._fingerprint(images, labels)}.pt"  # this data set's file
    files = [f for f in os.listdir(metrics.cache_dir()) if f == key]
    assert len(files) == 1
    mtime = os.path.getmtime(os.path.join(metrics.cache_dir(), files[0]))
    again = metrics.image_classifier("mnist", images, labels)  # from the cache, not retrained
    assert os.path.getmtime(os.path.join(metrics.cache_dir(), files[0])) == mtime
    assert again.held_out_accuracy == m.classifier.held_out_accuracy
    for a, b in zip(m.classifier.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    # Another image size is another classifier (another file).
    other = metrics.image_classifier("mnist", resize_images(images, 8), labels)
    assert other.size == 8 and len(os.listdir(metrics.cache_dir())) > len(files)


def test_labelled_real_held_out_near_perfect_noise_bad(mnist_metrics):
    m, images, labels = mnist_metrics
    _, held = metrics.labelled_split(len(images))
    real = m(images[held])
    assert real["classes_covered"] == 10
    assert real["class_kl"] < 0.05
    g = torch.Generator().manual_seed(0)
    for noise in (torch.rand(len(held), 1, 16, 16, generator=g) * 2 - 1, torch.full((len(held), 1, 16, 16), -1.0)):
        bad = m(noise)
        assert bad["fcd"] > 20 * real["fcd"]
        assert bad["class_kl"] > 5 * real["class_kl"]
    one = m(images[labels == 3])  # all of them: with few samples one mistake covers a class
    assert one["classes_covered"] == 1 and one["fcd"] > 5 * real["fcd"]
    # Colour samples are scored through the grey classifier.
    assert m(images[held].expand(-1, 3, -1, -1))["fcd"] == pytest.approx(real["fcd"], rel=1e-4)


def test_image_classifier_rejects_bad_input():
    with pytest.raises(ValueError, match="labels"):
        metrics.image_classifier("mnist", torch.zeros(5, 1, 8, 8), torch.zeros(4, dtype=torch.int64))


def test_inception_fid_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    score, note = metrics.inception_fid(torch.zeros(4, 1, 8, 8))
    assert score is None and note.startswith("no image metric") and "\n" not in note
