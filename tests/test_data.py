"""The trainer's data sources and its resumable, shardable sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastgame.data import BatchSampler, DataError, load_dataset


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
    assert d.sample_shape == (1, 8, 8) and float(d.tensor.min()) >= -1.0
    torch.save(torch.full((5, 8, 8), 3.0), tmp_path / "big.pt")
    with pytest.raises(DataError, match=r"\[0, 1\] or \[-1, 1\]"):
        load_dataset(str(tmp_path / "big.pt"))
    torch.save(torch.rand(5, 12, 12), tmp_path / "odd.pt")
    with pytest.raises(DataError, match="--image-size"):
        load_dataset(str(tmp_path / "odd.pt"))
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
