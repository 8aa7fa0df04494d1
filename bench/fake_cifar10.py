"""A tiny stand-in for CIFAR-10 in torchvision's on-disk layout, for smoke runs without the data:

    ROOT/cifar-10-batches-py/data_batch_1 .. data_batch_5   (pickles: b"data" N x 3072 uint8, b"labels")

Each class is noise around its own colour (seeded), so that the trainer's classifier and metrics
have something to learn; nothing here looks like CIFAR-10's photographs.

    python -m bench.fake_cifar10 ROOT [--per-batch N]   # writes ROOT/cifar-10-batches-py/...
    python -m bench.fake_cifar10 --smoke                # into a temporary folder, read back by fastgame
"""
from __future__ import annotations

import argparse
import os
import pickle
import tempfile

import numpy as np

__all__ = ["write_fake_cifar10"]


def write_fake_cifar10(root: str, per_batch: int = 40, seed: int = 0) -> str:
    """Write five batches of ``per_batch`` 32x32 RGB images under ``root``; returns ``cifar10:ROOT``."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    colours = rng.integers(0, 256, size=(10, 3, 1, 1))
    for i in range(1, 6):
        labels = rng.integers(0, 10, size=per_batch)
        images = np.clip(colours[labels] + rng.normal(0, 40, size=(per_batch, 3, 32, 32)), 0, 255).astype(np.uint8)
        with open(os.path.join(folder, f"data_batch_{i}"), "wb") as f:
            pickle.dump({b"data": images.reshape(per_batch, 3072), b"labels": labels.tolist()}, f)
    return f"cifar10:{root}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", help="the folder to write cifar-10-batches-py/ under")
    parser.add_argument("--per-batch", type=int, default=40, help="images per batch file (5 files). Default: 40")
    parser.add_argument("--smoke", action="store_true", help="write into a temporary folder and read it back")
    args = parser.parse_args()
    if args.smoke:
        from fastgame.trainer.data import load_dataset
        with tempfile.TemporaryDirectory() as tmp:
            data = load_dataset(write_fake_cifar10(tmp, 4))
            assert data.tensor is not None and tuple(data.tensor.shape) == (20, 3, 32, 32)
            print(f"bench.fake_cifar10 --smoke: ok ({len(data)} images read back as {data.label})")
        return
    if not args.root:
        parser.error("give ROOT (or --smoke)")
    print(write_fake_cifar10(args.root, args.per_batch))


if __name__ == "__main__":
    main()
