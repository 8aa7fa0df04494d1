"""The trainer's data sources and its resumable, shardable sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastgame.trainer.data import BatchSampler, DataError, load_dataset


def test_builtin_sources():
    ring = load_dataset("ring8")
    assert ring.kind == "points" and ring.sample_shape == (2,) and ring.mixture.num_modes == 8
    assert load_dataset("grid25").mixture.num_modes == 25
    digits = load_dataset("digits")
    assert digits.kind == "images" and digits.sample_shape == (1, 8, 8)
    assert len(digits) == 1797 - 539  # the classifier's training split only
    x = digits.tensor
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert load_dataset("digits", image_size=16).sample_shape == (1, 16, 16)


def test_tensor_files(tmp_path):
    np.save(tmp_path / "u8.npy", np.full((5, 3, 8, 8), 255, dtype=np.uint8))
    assert float(load_dataset(str(tmp_path / "u8.npy")).tensor.min()) == 1.0
    torch.save(torch.rand(5, 16, 16), tmp_path / "unit.pt")  # floats in [0, 1] -> [-1, 1]
    d = load_dataset(str(tmp_path / "unit.pt"), image_size=8)
    assert d.sample_shape == (1, 8, 8) and float(d.tensor.min()) >= -1.0 and float(d.tensor.max()) <= 1.0
    unit = torch.rand(5, 16, 16)
    torch.save(unit, tmp_path / "unit16.pt")  # at its own size: exactly 2x - 1
    torch.testing.assert_close(load_dataset(str(tmp_path / "unit16.pt"), image_size=16).tensor.reshape(5, 16, 16),
                               unit * 2 - 1)
    torch.save(torch.full((5, 8, 8), 3.0), tmp_path / "big.pt")
    with pytest.raises(DataError, match=r"\[0, 1\] or \[-1, 1\]"):
        load_dataset(str(tmp_path / "big.pt"))
    # Any other size is resized like mnist:ROOT: to 32 px, or to --image-size.
    torch.save(torch.rand(5, 12, 12), tmp_path / "odd.pt")
    assert load_dataset(str(tmp_path / "odd.pt")).sample_shape == (1, 32, 32)
    np.save(tmp_path / "mnist28.npy", np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8))
    assert load_dataset(str(tmp_path / "mnist28.npy")).sample_shape == (1, 32, 32)
    assert load_dataset(str(tmp_path / "mnist28.npy"), image_size=16).sample_shape == (1, 16, 16)
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="broken.npy"):
        load_dataset(str(tmp_path / "broken.npy"))
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "missing.pt"))


def test_image_folder(tmp_path):
    from PIL import Image
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_dataset(str(tmp_path / "empty"))
    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(3):
        Image.fromarray(np.full((10, 10), 40 * i, dtype=np.uint8)).save(grey / f"{i}.png")
    d = load_dataset(str(grey), image_size=16)
    assert d.sample_shape == (1, 16, 16)  # grey images train a one-channel model


def test_sampler_resumes_and_shards():
    data = load_dataset("digits")
    a = BatchSampler(data, batch=100, seed=3)
    for _ in range(14):  # past an epoch boundary (1258 samples)
        a.next()
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in a.state_dict().items()}
    expected = [a.next() for _ in range(5)]
    b = BatchSampler(data, batch=100, seed=99)
    b.load_state_dict(state)
    for e in expected:
        assert torch.equal(b.next(), e)
    # Two ranks' shards make up the single-process batch.
    full = BatchSampler(data, 100, seed=5)
    r0, r1 = BatchSampler(data, 100, seed=5, rank=0, world=2), BatchSampler(data, 100, seed=5, rank=1, world=2)
    for _ in range(3):
        assert torch.equal(torch.cat([r0.next(), r1.next()]), full.next())
    # An epoch visits every sample once.
    s = BatchSampler(load_dataset("digits"), batch=len(data), seed=0)
    idx = s._indices(len(data))
    assert sorted(idx.tolist()) == list(range(len(data)))
    with pytest.raises(ValueError, match="divisible"):
        BatchSampler(data, 101, seed=0, world=2)


def _write_mnist(root, n=6, gz=True):
    import gzip
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    pixels = (torch.arange(n * 28 * 28) % 256).to(torch.uint8)
    blob = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big")
    blob += bytes(pixels.tolist())
    path = raw / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    (gzip.open if gz else open)(path, "wb").write(blob)
    return pixels.view(n, 1, 28, 28)


def test_mnist_and_cifar10_read_from_disk(tmp_path):
    """mnist:ROOT and cifar10:ROOT read the files torchvision keeps, without torchvision."""
    import pickle
    pixels = _write_mnist(tmp_path / "m")
    data = load_dataset(f"mnist:{tmp_path / 'm'}", image_size=32)
    assert data.tensor.shape == (6, 1, 32, 32) and data.tensor.min() >= -1 and data.tensor.max() <= 1
    small = torch.nn.functional.interpolate(pixels.float() / 127.5 - 1, size=(32, 32), mode="bilinear",
                                            align_corners=False, antialias=True).clamp(-1, 1)
    torch.testing.assert_close(data.tensor, small)
    folder = tmp_path / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": np.full((2, 3072), 10 * i, dtype=np.uint8), b"labels": [0, 1]}, f)
    cifar = load_dataset(f"cifar10:{tmp_path / 'c'}")
    assert cifar.tensor.shape == (10, 3, 32, 32)
    torch.testing.assert_close(cifar.tensor[0, 0, 0, 0], torch.tensor(10 / 127.5 - 1))


def test_on_disk_sets_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="never downloads"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00" * 20)
    with pytest.raises(DataError, match="magic number 2051"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="data_batch_1: missing"):
        load_dataset(f"cifar10:{tmp_path}")


def test_labels_and_family_where_the_source_has_them(tmp_path):
    """The digits, MNIST (with its idx label file) and CIFAR-10 carry their class labels; data
    without labels (a mixture, a tensor file, MNIST images without the label file) carry None."""
    import gzip
    import pickle
    from fastgame.trainer.data import BatchStream, TrainingData, digits_split, load_digits
    digits = load_dataset("digits")
    _, all_labels = load_digits()
    torch.testing.assert_close(digits.labels, all_labels[digits_split()[0]])
    assert digits.family == "digits" and load_dataset("ring8").labels is None
    _write_mnist(tmp_path / "m")
    assert load_dataset(f"mnist:{tmp_path / 'm'}").labels is None  # images alone still train
    labels = bytes([3, 1, 4, 1, 5, 9])
    blob = (2049).to_bytes(4, "big") + (6).to_bytes(4, "big") + labels
    gzip.open(tmp_path / "m" / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz", "wb").write(blob)
    mnist = load_dataset(f"mnist:{tmp_path / 'm'}")
    assert mnist.labels.tolist() == list(labels) and mnist.family == "mnist" and mnist.label == "mnist"
    gzip.open(tmp_path / "m" / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz", "wb").write(blob[:-1])
    with pytest.raises(DataError, match="truncated IDX"):
        load_dataset(f"mnist:{tmp_path / 'm'}")
    folder = tmp_path / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": np.full((2, 3072), 10 * i, dtype=np.uint8), b"labels": [i, 0]}, f)
    assert load_dataset(f"cifar10:{tmp_path / 'c'}").labels.tolist() == [1, 0, 2, 0, 3, 0, 4, 0, 5, 0]
    np.save(tmp_path / "p.npy", np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32))
    points = load_dataset(str(tmp_path / "p.npy"))
    assert points.labels is None and points.family == "file"
    # The old names are aliases of the new ones (run folders and callers from before keep working).
    assert BatchSampler is BatchStream and isinstance(points, TrainingData)


def test_evaluator_follows_kind_and_labels_not_name():
    """The classifier metrics come with labelled images of a family that has a classifier, under
    any name; the same images without labels, or points without a mixture, log losses only."""
    from fastgame.trainer.data import TrainingData
    from fastgame.trainer.evaluation import METRIC_DIRECTION, Evaluator
    digits = load_dataset("digits")
    renamed = TrainingData("my-digits", "images", tensor=digits.tensor, labels=digits.labels, family="digits")
    assert Evaluator(renamed).names == ["fcd", "classes_covered", "class_kl"]
    unlabelled = TrainingData("digits", "images", tensor=digits.tensor, family="digits")
    assert Evaluator(unlabelled).names == [] and Evaluator(unlabelled)(digits.tensor[:4]) == {}
    ring = Evaluator(load_dataset("ring8"))
    assert ring.names == ["modes_covered", "high_quality", "mode_jsd"]
    assert set(ring(torch.randn(100, 2))) == set(ring.names) and set(ring.names) <= set(METRIC_DIRECTION)
