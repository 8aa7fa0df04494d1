"""Sample-quality metrics for ``fastgame train``.

* 2-D mixtures: the mode metrics of :class:`fastgame.games.GaussianMixture` (modes covered,
  fraction of high-quality samples, JSD of the mode histogram from uniform).
* Labelled images (the scikit-learn digits, ``mnist:``, ``fashion-mnist:``, ``cifar10:``): a
  small classifier that fastgame trains once on the set's own labelled training images
  (seeded, cached in the user's cache directory under the data set and image size, its
  held-out accuracy kept with it) gives the number of classes the generator produces, the
  KL divergence of its class histogram from uniform, and the **Fréchet classifier distance**
  (FCD): the Fréchet distance between Gaussians fitted to the classifier's penultimate
  features of real training images and of generated ones, computed by torchmetrics'
  ``FrechetInceptionDistance`` with the classifier as its feature extractor. It is FID's
  formula on a 64-feature classifier of that data set, not FID: its values are not
  comparable with FID values anywhere else, nor across data sets.
* Unlabelled images (``.npy``/``.pt`` files, image folders): torchmetrics' Inception FID, only
  when torch-fidelity and its Inception weights are already on this machine
  (:func:`inception_fid`); otherwise no metric and one note saying why. Never a download.
"""
from __future__ import annotations

import hashlib
import math
import os
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import atomic_write
from .data import digits_split, load_digits, resize_images

__all__ = ["DigitClassifier", "digit_classifier", "ImageClassifier", "image_classifier", "cache_dir",
           "frechet_distance", "ClassifierMetrics", "DigitMetrics", "class_metrics", "labelled_split", "inception_fid",
           "INCEPTION_WEIGHTS"]

_CLASSIFIER_VERSION = 2  # bump when the architecture or the training recipe changes
_IMAGE_CLASSIFIER_VERSION = 1  # the same for ImageClassifier
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
"""torch-fidelity's Inception file, looked for in torch hub's checkpoint folder."""


def cache_dir() -> str:
    """Where fastgame caches files: ``$FASTGAME_CACHE``, else ``$XDG_CACHE_HOME/fastgame``,
    else ``~/.cache/fastgame``."""
    if os.environ.get("FASTGAME_CACHE"):
        return os.environ["FASTGAME_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastgame")


def _fid_metric(extractor: nn.Module):
    """torchmetrics' Fréchet distance on ``extractor``'s features (``extractor.num_features`` wide)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as exc:
        raise ImportError("the image metrics need torchmetrics: pip install torchmetrics") from exc
    return FrechetInceptionDistance(feature=extractor, reset_real_features=False)


class _Rows(nn.Module):
    """The identity on (N, d) feature rows, as a torchmetrics feature extractor."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: Tensor) -> Tensor:
        return x


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b``:
    ‖μa − μb‖² + Tr(Σa + Σb − 2(Σa Σb)^½), in float64 (torchmetrics' FID formula)."""
    fid = _fid_metric(_Rows(a.shape[1]))
    fid.update(a.double(), real=True)
    fid.update(b.double(), real=False)
    return float(fid.compute())


def _one_thread(fit: Callable[[], nn.Module]) -> nn.Module:
    """``fit()`` on one thread: these models are too small to gain from more, and on a busy
    2-core machine OpenMP threads made the digit classifier 3x slower (10 s -> 32 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit()
    finally:
        torch.set_num_threads(threads)


def _cached(path: str, model: nn.Module, fit: Callable[[], nn.Module], what: str, verbose: bool) -> nn.Module:
    """``model`` loaded from ``path`` (with its ``held_out_accuracy``), else ``fit()`` saved there.

    A missing, unreadable or outdated cache file is replaced; the file is written
    atomically, so concurrent runs never read half a file."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        acc = float(sd.pop("held_out_accuracy"))
        model.load_state_dict(sd)
        model.held_out_accuracy = acc
        model.eval()
        return model
    except Exception:
        pass  # not cached yet, or unusable: train it again
    if verbose:
        print(f"fastgame: training the {what} classifier once (cached in {path})", flush=True)
    model = _one_thread(fit)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sd = dict(model.state_dict())
    sd["held_out_accuracy"] = torch.tensor(model.held_out_accuracy)
    atomic_write(path, lambda f: torch.save(sd, f))
    return model


# ---- the scikit-learn digits --------------------------------------------------------------
class DigitClassifier(nn.Module):
    """An MLP on 8×8 digits in [-1, 1]: 64-256-64-10, ReLU. ``features`` is the 64-wide
    penultimate layer the Fréchet classifier distance is computed on."""

    num_features = 64

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)
        self.held_out_accuracy = float("nan")

    def features(self, x: Tensor) -> Tensor:
        # Generated images may be 16×16 or 32×32 and have 3 channels: compare at the digits' 8×8 grey.
        x = x.float()
        if x.dim() == 4 and x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-1] != 8:
            x = resize_images(x, 8)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _fit_digit_classifier() -> DigitClassifier:
    """Seeded full-batch Adam on the training split; deterministic on the CPU (~2 s)."""
    images, labels = load_digits()
    train, held = digits_split()
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    x, y = images[train], labels[train]
    for _ in range(150):
        # Small shifts of ±1 pixel make the features depend on shape more than on exact position.
        shift = torch.randint(-1, 2, (2,), generator=g)
        xb = torch.roll(x, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
        opt.zero_grad()
        F.cross_entropy(model(torch.cat([x, xb])), torch.cat([y, y])).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        model.held_out_accuracy = float((model(images[held]).argmax(1) == labels[held]).float().mean())
    return model


def digit_classifier(verbose: bool = False) -> DigitClassifier:
    """The cached digit classifier, trained (a few seconds) and cached on first use."""
    path = os.path.join(cache_dir(), f"digit_classifier_v{_CLASSIFIER_VERSION}.pt")
    return _cached(path, DigitClassifier(), _fit_digit_classifier, "digit", verbose)


# ---- any labelled image set ------------------------------------------------------------------
class ImageClassifier(nn.Module):
    """A small CNN on ``channels``×``size``×``size`` images in [-1, 1]: two stride-2 3×3
    convolutions (16, 32 channels), a 64-wide ReLU layer (``features``, the FCD's) and a
    linear head over ``classes``."""

    num_features = 64

    def __init__(self, channels: int, size: int, classes: int = 10) -> None:
        super().__init__()
        self.channels, self.size = channels, size
        side = (size + 3) // 4
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * side * side, 64), nn.ReLU())
        self.head = nn.Linear(64, classes)
        self.held_out_accuracy = float("nan")

    def features(self, x: Tensor) -> Tensor:
        x = x.float()
        if x.shape[1] != self.channels:  # grey <-> colour, so that any generator can be scored
            x = x.mean(dim=1, keepdim=True) if self.channels == 1 else x.expand(-1, self.channels, -1, -1)
        return self.body(resize_images(x, self.size))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def labelled_split(n: int, held_out: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices (train, held-out) of a seeded split of ``n`` labelled images."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, int(round(n * held_out)))
    return perm[k:], perm[:k]


def _fit_image_classifier(images: Tensor, labels: Tensor, classes: int, samples: int = 60_000) -> ImageClassifier:
    """Seeded Adam, batches of 128, ``samples`` training images seen in all (a few epochs of
    MNIST's 54,000; ~20-60 s on one CPU thread), on the training part of :func:`labelled_split`."""
    train, held = labelled_split(len(images))
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ImageClassifier(images.shape[1], images.shape[-1], classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = max(200, samples // 128)
    for _ in range(steps):
        idx = train[torch.randint(len(train), (128,), generator=g)]
        opt.zero_grad()
        F.cross_entropy(model(images[idx]), labels[idx]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(c).argmax(1) for c in images[held].split(1000)])
    model.held_out_accuracy = float((pred == labels[held]).float().mean())
    return model


def _fingerprint(images: Tensor, labels: Tensor) -> str:
    """A short hash of a labelled set (its shape, labels and every 97th image): another data set
    under the same name gets its own cache file."""
    h = hashlib.sha1(repr(tuple(images.shape)).encode())
    h.update(labels.to(torch.int64).numpy().tobytes())
    h.update(images[::97].float().numpy().tobytes())
    return h.hexdigest()[:12]


def image_classifier(name: str, images: Tensor, labels: Tensor, verbose: bool = False) -> ImageClassifier:
    """The cached classifier of the labelled set ``name`` (e.g. ``mnist``) at the images' size,
    trained on first use. ``images``: ``(N, C, S, S)`` in [-1, 1]; ``labels``: ``(N,)`` ints."""
    if images.dim() != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"expected (N, C, S, S) images and (N,) labels, got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)}")
    labels = labels.to(torch.int64)
    classes = int(labels.max()) + 1
    key = f"{name}_{images.shape[1]}x{images.shape[-1]}px_{_fingerprint(images, labels)}"
    path = os.path.join(cache_dir(), f"image_classifier_v{_IMAGE_CLASSIFIER_VERSION}_{key}.pt")
    return _cached(path, ImageClassifier(images.shape[1], images.shape[-1], classes),
                   lambda: _fit_image_classifier(images, labels, classes), name, verbose)


# ---- the metrics -----------------------------------------------------------------------------------
class _Features(nn.Module):
    """A classifier's penultimate features as a torchmetrics feature extractor."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x)


def class_metrics(predicted: Tensor, classes: int = 10, min_fraction: float = 0.2) -> tuple[int, float]:
    """(classes covered, KL(histogram ‖ uniform) in nats) of predicted labels; a class is
    covered when it gets at least ``min_fraction`` of its fair share n/classes, as for the
    mixtures' modes. The KL is 0 for a uniform histogram and log(classes) for one class."""
    counts = torch.bincount(predicted, minlength=classes).double()
    p = counts / counts.sum()
    kl = float(torch.where(p > 0, p * torch.log(p * classes), torch.zeros_like(p)).sum())
    covered = int((counts >= min_fraction * predicted.numel() / classes).sum())
    return covered, kl


class ClassifierMetrics:
    """Scores generated images against ``real`` images through ``classifier`` (see the module
    docstring): ``{"classes_covered", "class_kl", "fcd"}``."""

    def __init__(self, classifier: nn.Module, real: Tensor) -> None:
        self.classifier = classifier
        self.classes = classifier.head.out_features
        self.fid = _fid_metric(_Features(classifier))
        with torch.no_grad():
            for chunk in real.float().split(2000):
                self.fid.update(chunk, real=True)

    @classmethod
    def for_labelled(cls, name: str, images: Tensor, labels: Tensor, verbose: bool = False) -> "ClassifierMetrics":
        """The metrics of the labelled set ``name``: its cached :func:`image_classifier`, and its
        classifier's training images as the real reference."""
        classifier = image_classifier(name, images, labels, verbose)
        train, _ = labelled_split(len(images))
        return cls(classifier, images[train])

    @torch.no_grad()
    def __call__(self, samples: Tensor) -> dict[str, float]:
        samples = samples.detach().float().cpu()
        covered, kl = class_metrics(self.classifier(samples).argmax(1), self.classes)
        self.fid.reset()  # the fake features only: the real ones stay
        self.fid.update(samples, real=False)
        fcd = float(self.fid.compute())
        return {"classes_covered": covered, "class_kl": kl, "fcd": fcd if math.isfinite(fcd) else float("inf")}


class DigitMetrics(ClassifierMetrics):
    """The metrics of the scikit-learn digits, against the classifier's training digits.

    ``image_size``: the size the generator makes (8, 16 or 32). The real digits are resized
    to it and back to 8×8 like the generated ones, so that resizing alone costs nothing."""

    def __init__(self, classifier: Optional[DigitClassifier] = None, image_size: int = 8) -> None:
        images, _ = load_digits()
        train, _ = digits_split()
        super().__init__(classifier if classifier is not None else digit_classifier(),
                         resize_images(images[train], image_size))


def inception_fid(real: Tensor) -> tuple[Optional[Callable[[Tensor], dict[str, float]]], str]:
    """(scorer, note): torchmetrics' Inception FID against ``real`` images in [-1, 1] when
    torch-fidelity and :data:`INCEPTION_WEIGHTS` are already on this machine, else ``None``
    and a one-line note saying what is missing. Never downloads anything."""
    path = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_WEIGHTS)
    try:
        import torch_fidelity  # noqa: F401
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        return None, "no image metric: Inception FID needs torchmetrics and torch-fidelity (pip install torch-fidelity)"
    if not os.path.isfile(path):
        return None, f"no image metric: Inception FID needs its weights in {path} (fastgame never downloads them)"
    fid = FrechetInceptionDistance(feature=2048, reset_real_features=False, normalize=True,
                                   feature_extractor_weights_path=path)

    def to_unit_rgb(x: Tensor) -> Tensor:
        x = (x.float().cpu().clamp(-1, 1) + 1) / 2
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    with torch.no_grad():
        for chunk in real.split(500):
            fid.update(to_unit_rgb(chunk), real=True)

    @torch.no_grad()
    def score(samples: Tensor) -> dict[str, float]:
        fid.reset()
        for chunk in samples.split(500):
            fid.update(to_unit_rgb(chunk), real=False)
        return {"fid": float(fid.compute())}

    return score, f"Inception FID against {len(real)} real images (torchmetrics, weights {path})"
