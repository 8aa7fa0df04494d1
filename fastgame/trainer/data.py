"""Offline training data for ``fastgame train`` (:class:`TrainingData`, with the class labels
where the source has them), and a resumable, shardable stream of batches (:class:`BatchStream`).

The names are fastgame's own: :class:`TrainingData` is not a ``torch.utils.data.Dataset`` and
:class:`BatchStream` not a ``torch.utils.data.BatchSampler`` (it yields samples, not indices,
and its state is checkpointed). ``Dataset`` and ``BatchSampler`` remain as aliases.

Sources (never a download):

* ``ring8`` / ``grid25`` — the 2-D Gaussian mixtures of :mod:`fastgame.games` (fresh samples
  every batch);
* ``digits`` — the 1,797 handwritten 8×8 digits that ship inside scikit-learn
  (``sklearn.datasets.load_digits``, grey levels 0..16, scaled to [-1, 1]; optionally
  resized bilinearly to 16×16 or 32×32 with ``image_size``);
* a path: a ``.npy`` or ``.pt`` tensor file — ``(N, 2)`` points, or ``(N, H, W)`` /
  ``(N, C, H, W)`` images — or a folder of image files (PNG/JPEG/..., read with Pillow);
* ``mnist:ROOT``, ``fashion-mnist:ROOT``, ``cifar10:ROOT`` — those training sets where
  torchvision keeps them once downloaded (``ROOT/MNIST/raw/train-images-idx3-ubyte[.gz]``,
  ``ROOT/FashionMNIST/raw/...``, ``ROOT/cifar-10-batches-py/data_batch_1..5``), read from disk
  directly (no torchvision needed, never a download); MNIST is resized to ``image_size``
  (default 32).

Images are returned as float ``(N, C, S, S)`` tensors in [-1, 1]: integer images are
divided by 255; float images with no negative value are taken to be in [0, 1], others
must already lie in [-1, 1].
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..games import GaussianMixture

__all__ = ["DataError", "TrainingData", "load_dataset", "BatchStream", "MIXTURES", "ON_DISK", "IMAGE_SIZES",
           "load_digits", "digits_split", "source_label"]

MIXTURES = ("ring8", "grid25")
BUILTIN = MIXTURES + ("digits",)
IMAGE_SIZES = (8, 16, 32)
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A data source that cannot be used (missing, unreadable, wrong format); the message names it."""


@dataclass
class TrainingData:
    """Training data: either a finite tensor of samples or a mixture to sample from.

    Attributes:
        name: the source as given (``ring8``, ``digits`` or a path).
        kind: ``"points"`` (2-D samples) or ``"images"`` (``(C, S, S)`` samples in [-1, 1]).
        tensor: all samples (``None`` for a mixture, which is sampled afresh).
        mixture: the mixture for ``ring8`` / ``grid25`` (else ``None``).
        labels: the class of each sample of ``tensor`` (int64), where the source has labels
            (the digits, MNIST, Fashion-MNIST, CIFAR-10), else ``None``.
        family: what kind of source it is, for choosing its metrics: ``"ring8"``, ``"grid25"``,
            ``"digits"``, ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"file"`` or ``"folder"``.
    """

    name: str
    kind: str
    tensor: Optional[Tensor] = None
    mixture: Optional[GaussianMixture] = None
    labels: Optional[Tensor] = None
    family: str = "file"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        if self.mixture is not None:
            return (self.mixture.dim,)
        assert self.tensor is not None
        return tuple(self.tensor.shape[1:])

    def __len__(self) -> int:
        return 0 if self.tensor is None else int(self.tensor.shape[0])

    @property
    def label(self) -> str:
        """A short name for folder names and titles (see :func:`source_label`)."""
        return source_label(self.name)


def source_label(source: str) -> str:
    """A short name of the data ``source`` for folder names and titles: the kind of an on-disk
    data set (``mnist`` for ``mnist:/data/tv``), else the file or folder name."""
    kind, sep, _ = source.partition(":")
    if sep and kind in ON_DISK:
        return kind
    return os.path.basename(source.rstrip("/")) or "data"


def load_digits() -> tuple[Tensor, Tensor]:
    """The scikit-learn digits as ``(1797, 1, 8, 8)`` float images in [-1, 1] and their labels."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as exc:  # pragma: no cover - sklearn is a dependency
        raise DataError("the digits need scikit-learn: pip install scikit-learn") from exc
    d = _load()
    images = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # 0..16 -> [-1, 1]
    return images, torch.as_tensor(d.target, dtype=torch.int64)


def digits_split(seed: int = 0, held_out: float = 0.3) -> tuple[Tensor, Tensor]:
    """Indices (train, held-out) of a seeded, fixed split of the digits, shared by the
    classifier and the metrics so that held-out digits are never seen by the classifier."""
    n = 1797
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(round(n * held_out))
    return perm[k:], perm[:k]


def resize_images(images: Tensor, size: int) -> Tensor:
    """Bilinear (antialiased when shrinking) resize of ``(N, C, H, W)`` images to size×size."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(-1, 1)


_INTEGER_RANGE = {torch.uint8: 255, torch.uint16: 65535} if hasattr(torch, "uint16") else {torch.uint8: 255}
"""The integer image dtypes and their full-scale value (0 is black, the value white)."""


def _scale_images(t: Tensor, where: str) -> Tensor:
    """Images in [-1, 1] by their dtype's range: uint8 0..255, uint16 0..65535, bool 0/1; floats in
    [0, 1] or already in [-1, 1]. Other integer dtypes are refused: their range is unknown (0..16
    digits, 0..255 in an int64, ...), so a guess could squeeze them silently."""
    if t.dtype == torch.bool:
        return t.float() * 2 - 1
    if t.dtype in _INTEGER_RANGE:
        full = _INTEGER_RANGE[t.dtype]
        return t.float() / 127.5 - 1.0 if full == 255 else t.double().div(full / 2).sub(1).float()
    if not t.is_floating_point():
        lo, hi = int(t.min()), int(t.max())
        raise DataError(f"{where}: {str(t.dtype).replace('torch.', '')} images with values in [{lo}, {hi}] have no "
                        "known range; convert them to uint8 (0..255), uint16 (0..65535) or floats in [0, 1]")
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{where}: the images contain NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo >= 0:
        if hi > 1:
            raise DataError(f"{where}: float images must lie in [0, 1] or [-1, 1], got values in [{lo:g}, {hi:g}]")
        return t * 2 - 1
    if lo < -1 or hi > 1:
        raise DataError(f"{where}: float images must lie in [0, 1] or [-1, 1], got values in [{lo:g}, {hi:g}]")
    return t


def _from_tensor(t: Any, where: str, image_size: Optional[int]) -> TrainingData:
    if not isinstance(t, Tensor):
        try:
            t = torch.as_tensor(t)
        except Exception as exc:
            raise DataError(f"{where}: expected one array/tensor, got {type(t).__name__}") from exc
    if t.layout != torch.strided or t.is_quantized:
        kind = "quantized" if t.is_quantized else f"{str(t.layout).replace('torch.', '')} (not dense)"
        raise DataError(f"{where}: a {kind} tensor; save a dense one (t.to_dense() / t.dequantize())")
    if t.is_complex():
        raise DataError(f"{where}: complex values ({str(t.dtype).replace('torch.', '')}); training data must be real")
    if t.dim() == 0 or t.shape[0] < 2:
        raise DataError(f"{where}: need at least 2 samples along the first dimension, got shape {tuple(t.shape)}")
    if t.dim() == 2:
        if t.shape[1] != 2:
            raise DataError(f"{where}: a 2-D array must be (N, 2) points, got shape {tuple(t.shape)}")
        pts = t.float()
        if not bool(torch.isfinite(pts).all()):
            raise DataError(f"{where}: the points contain NaN or infinite values")
        return TrainingData(where, "points", tensor=pts)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() != 4 or t.shape[1] not in (1, 3) or t.shape[2] != t.shape[3]:
        raise DataError(f"{where}: images must be (N, H, W) or (N, C, H, W) with C in (1, 3) and H == W, "
                        f"got shape {tuple(t.shape)}")
    images = _scale_images(t, where)
    # Like mnist:ROOT, images of another size are resized to 32 px unless --image-size says otherwise.
    size = image_size or (int(images.shape[-1]) if images.shape[-1] in IMAGE_SIZES else 32)
    return TrainingData(where, "images", tensor=resize_images(images, size))


def _load_folder(path: str, image_size: Optional[int]) -> TrainingData:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow comes with matplotlib
        raise DataError("reading an image folder needs Pillow: pip install pillow") from exc
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names
                   if f.lower().endswith(_IMAGE_EXTENSIONS))
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(_IMAGE_EXTENSIONS)}) in this folder")
    size = image_size or 32
    if size not in IMAGE_SIZES:
        raise DataError(f"--image-size must be one of {list(IMAGE_SIZES)}, got {size}")
    imgs = [_read_image(f, size) for f in files]
    if any(im.dtype != torch.uint8 for im in imgs):  # 16-bit images among them: all in [0, 1] first
        arr = torch.stack([im.float() / 255 if im.dtype == torch.uint8 else im for im in imgs])
        images = arr * 2 - 1
    else:
        arr = torch.stack(imgs)
        images = None
    # Grey-level folders train a one-channel model: three equal channels carry no more information.
    if bool((arr[:, 0] == arr[:, 1]).all() and (arr[:, 1] == arr[:, 2]).all()):
        arr = arr[:, :1]
        images = None if images is None else images[:, :1]
    if arr.shape[0] < 2:
        raise DataError(f"{path}: need at least 2 images, found {arr.shape[0]}")
    return TrainingData(path, "images", tensor=arr.float() / 127.5 - 1.0 if images is None else images,
                        family="folder")


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # Pillow's modes of 16-bit grey PNGs/TIFFs


def _read_image(f: str, size: int) -> Tensor:
    """One image file at size×size: ``(3, S, S)`` uint8, or float in [0, 1] for a 16-bit image
    (scaled by 65535: Pillow's RGB conversion would clip it to 255)."""
    from PIL import Image
    try:
        with Image.open(f) as im:
            if im.mode not in _SIXTEEN_BIT:
                rgb = im.convert("RGB").resize((size, size), Image.BILINEAR)
                return torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)
            import numpy as np
            values = np.asarray(im, dtype=np.float64)
            grey = im.convert("F").resize((size, size), Image.BILINEAR)
    except Exception as exc:
        raise DataError(f"{f}: cannot read this image ({exc})") from exc
    if values.min() < 0 or values.max() > 65535:
        raise DataError(f"{f}: a {im.mode} image with values in [{values.min():g}, {values.max():g}], "
                        "outside 16 bits (0..65535)")
    x = torch.from_numpy(np.asarray(grey, dtype=np.float32).copy()).clamp(0, 65535) / 65535
    return x.expand(3, size, size)


ON_DISK = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}
"""The on-disk data sets (``KIND:ROOT``) and the folder under ROOT where torchvision keeps each."""


def _read_idx(path: str, magic: int, what: str) -> tuple[bytes, list[int]]:
    """An IDX file's payload and dimensions (MNIST's format: magic, then one big-endian int32
    per dimension, then uint8 values)."""
    import gzip
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = magic - 2048
    head = 4 + 4 * ndim
    if len(raw) < head or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path}: not an IDX {what} file (expected magic number {magic})")
    dims = [int.from_bytes(raw[i:i + 4], "big") for i in range(4, head, 4)]
    size = 1
    for d in dims:
        size *= d
    if len(raw) != head + size:
        raise DataError(f"{path}: truncated IDX file ({len(raw) - head} bytes for {what} of shape {dims})")
    return raw[head:], dims


def _read_idx_images(path: str) -> Tensor:
    """An IDX file of uint8 images (magic 2051, count, rows, cols, pixels)."""
    raw, (n, rows, cols) = _read_idx(path, 2051, "image")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(n, 1, rows, cols)


def _read_idx_labels(path: str, n: int) -> Tensor:
    """An IDX file of ``n`` uint8 class labels (magic 2049), as int64."""
    raw, (count,) = _read_idx(path, 2049, "label")
    if count != n:
        raise DataError(f"{path}: {count} labels for {n} images")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()


def _read_cifar10(folder: str) -> tuple[Tensor, Tensor]:
    """CIFAR-10's five training batches (the 'python version' pickles) as (50000, 3, 32, 32)
    uint8 images and their (50000,) int64 labels."""
    import pickle
    parts, labels = [], []
    for i in range(1, 6):
        path = os.path.join(folder, f"data_batch_{i}")
        if not os.path.isfile(path):
            raise DataError(f"{path}: missing (CIFAR-10 is read from disk only; torchvision's "
                            "CIFAR10(root, download=True) puts it there)")
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = torch.as_tensor(batch[b"data"], dtype=torch.uint8).view(-1, 3, 32, 32)
            label = torch.as_tensor(batch[b"labels"], dtype=torch.int64).view(-1)
            if len(label) != len(data):
                raise ValueError(f"{len(label)} labels for {len(data)} images")
        except Exception as exc:
            raise DataError(f"{path}: cannot read this CIFAR-10 batch ({type(exc).__name__}: {exc})") from exc
        parts.append(data)
        labels.append(label)
    return torch.cat(parts), torch.cat(labels)


def _first_file(folder: str, name: str) -> Optional[str]:
    """``folder/name`` or ``folder/name.gz``, whichever exists first (None: neither)."""
    return next((p for p in (os.path.join(folder, name + ext) for ext in ("", ".gz")) if os.path.isfile(p)), None)


def _load_on_disk(kind: str, root: str, image_size: Optional[int]) -> TrainingData:
    folder = os.path.join(root, ON_DISK[kind])
    if not os.path.isdir(folder):
        raise DataError(f"{kind}:{root}: no {ON_DISK[kind]} folder under {root!r} (fastgame never downloads; "
                        "point ROOT at the folder torchvision downloaded into)")
    if kind == "cifar10":
        images, labels = _read_cifar10(folder)
    else:
        raw = os.path.join(folder, "raw")
        path = _first_file(raw, "train-images-idx3-ubyte")
        if path is None:
            raise DataError(f"{kind}:{root}: missing {os.path.join(raw, 'train-images-idx3-ubyte')}[.gz]")
        images = _read_idx_images(path)
        label_path = _first_file(raw, "train-labels-idx1-ubyte")  # optional: images train without it
        labels = None if label_path is None else _read_idx_labels(label_path, len(images))
    size = image_size or 32
    return TrainingData(f"{kind}:{root}", "images", tensor=resize_images(images.float() / 127.5 - 1.0, size),
                        labels=labels, family=kind)


def load_dataset(source: str, image_size: Optional[int] = None) -> TrainingData:
    """The data set called ``source``: ``ring8``, ``grid25``, ``digits``, ``mnist:ROOT``,
    ``fashion-mnist:ROOT``, ``cifar10:ROOT``, or a path to a ``.npy``/``.pt`` file or an image
    folder. Raises :class:`DataError` naming the source."""
    if image_size is not None and image_size not in IMAGE_SIZES:
        raise DataError(f"--image-size must be one of {list(IMAGE_SIZES)}, got {image_size}")
    if source == "ring8":
        return TrainingData(source, "points", mixture=GaussianMixture.ring(), family=source)
    if source == "grid25":
        return TrainingData(source, "points", mixture=GaussianMixture.grid(), family=source)
    if source == "digits":
        images, labels = load_digits()
        train, _ = digits_split()
        # The generator trains on the classifier's training split only, so that the
        # metrics' held-out digits are unseen by both.
        return TrainingData(source, "images", tensor=resize_images(images[train], image_size or 8),
                            labels=labels[train], family="digits")
    kind, sep, root = source.partition(":")
    if sep and kind in ON_DISK:
        return _load_on_disk(kind, root, image_size)
    if not os.path.exists(source):
        raise DataError(f"{source}: no such file or folder (built-in data: {', '.join(BUILTIN)})")
    if os.path.isdir(source):
        return _load_folder(source, image_size)  # family "folder"
    ext = os.path.splitext(source)[1].lower()
    try:
        if ext == ".npy":
            import numpy as np
            obj: Any = torch.from_numpy(np.load(source, allow_pickle=False))
        elif ext == ".pt":
            obj = torch.load(source, map_location="cpu", weights_only=True)
        else:
            raise DataError(f"{source}: unknown file type {ext or '(none)'!r}; use a .npy or .pt tensor file, "
                            f"an image folder, or one of {', '.join(BUILTIN)}")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{source}: cannot read this {ext} file ({type(exc).__name__}: {exc})") from exc
    return _from_tensor(obj, source, image_size)


class BatchStream:
    """Seeded batches of a :class:`TrainingData`, resumable and shardable.

    A finite data set is visited in a fresh random order each epoch (a batch that reaches the
    end of an epoch is completed from the next epoch's order); a mixture is sampled afresh. The whole state — the generator and the position in the current
    order — is in :meth:`state_dict`, so a resumed run draws the same batches.

    Every rank draws the same full batch and keeps its ``rank``-th of ``world`` equal
    shards, so that data-parallel training sees exactly the single-process batches.
    """

    def __init__(self, data: TrainingData, batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if batch % world:
            raise ValueError(f"the batch size {batch} must be divisible by the number of processes {world}")
        self.data, self.batch, self.rank, self.world = data, batch, rank, world
        self.gen = torch.Generator().manual_seed(seed)
        self.order: Optional[Tensor] = None
        self.pos = 0

    def _indices(self, n: int) -> Tensor:
        out = []
        while n > 0:
            if self.order is None or self.pos >= len(self.order):
                self.order, self.pos = torch.randperm(len(self.data), generator=self.gen), 0
            take = self.order[self.pos:self.pos + n]
            self.pos += len(take)
            n -= len(take)
            out.append(take)
        return torch.cat(out)

    def next(self) -> Tensor:
        """This rank's shard of the next batch (``batch // world`` samples)."""
        if self.data.mixture is not None:
            full = self.data.mixture.sample(self.batch, generator=self.gen)
        else:
            assert self.data.tensor is not None
            full = self.data.tensor[self._indices(self.batch)]
        k = self.batch // self.world
        return full[self.rank * k:(self.rank + 1) * k]

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "order": self.order, "pos": self.pos}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.gen.set_state(sd["gen"])
        self.order, self.pos = sd["order"], int(sd["pos"])


# The names before fastgame had its own (they clashed with torch.utils.data's, a different API).
Dataset = TrainingData
BatchSampler = BatchStream
