"""Sample-quality metrics for ``fastgame train``.

* 2-D mixtures: the mode metrics of :class:`fastgame.games.GaussianMixture` (modes covered,
  fraction of high-quality samples, JSD of the mode histogram from uniform).
* Digits: a small classifier that fastgame trains once on the scikit-learn digits (seeded,
  cached in the user's cache directory) gives the number of digit classes the generator
  produces, the KL divergence of its class histogram from uniform, and the **Fréchet
  classifier distance** (FCD): the Fréchet distance between Gaussians fitted to the
  classifier's penultimate features of real training digits and of generated ones. It is
  FID's formula on a 64-feature digit classifier, not FID: its values are not comparable
  with FID values anywhere else.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import atomic_write
from .data import digits_split, load_digits, resize_images

__all__ = ["DigitClassifier", "digit_classifier", "cache_dir", "frechet_distance", "DigitMetrics", "class_metrics"]

_CLASSIFIER_VERSION = 2  # bump when the architecture or the training recipe changes


def cache_dir() -> str:
    """Where fastgame caches files: ``$FASTGAME_CACHE``, else ``$XDG_CACHE_HOME/fastgame``,
    else ``~/.cache/fastgame``."""
    if os.environ.get("FASTGAME_CACHE"):
        return os.environ["FASTGAME_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastgame")


class DigitClassifier(nn.Module):
    """An MLP on 8×8 digits in [-1, 1]: 64-256-64-10, ReLU. ``features`` is the 64-wide
    penultimate layer the Fréchet classifier distance is computed on."""

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


def _train_classifier() -> DigitClassifier:
    """Seeded full-batch Adam on the training split; deterministic on the CPU (~2 s)."""
    threads = torch.get_num_threads()
    # One thread: this model is too small to gain from more, and on a busy 2-core machine
    # OpenMP threads made it 3x slower (10 s -> 32 s).
    torch.set_num_threads(1)
    try:
        return _fit_classifier()
    finally:
        torch.set_num_threads(threads)


def _fit_classifier() -> DigitClassifier:
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
    """The cached digit classifier, trained (a few seconds) and cached on first use.

    A missing, unreadable or outdated cache file is replaced; the file is written
    atomically, so concurrent runs never read half a file.
    """
    path = os.path.join(cache_dir(), f"digit_classifier_v{_CLASSIFIER_VERSION}.pt")
    model = DigitClassifier()
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
        print(f"fastgame: training the digit classifier once (cached in {path})", flush=True)
    model = _train_classifier()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sd = dict(model.state_dict())
    sd["held_out_accuracy"] = torch.tensor(model.held_out_accuracy)
    atomic_write(path, lambda f: torch.save(sd, f))
    return model


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b``:
    ‖μa − μb‖² + Tr(Σa + Σb − 2(Σa^½ Σb Σa^½)^½), in float64."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(cov_a)
    root_a = (v * w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def class_metrics(predicted: Tensor, classes: int = 10, min_fraction: float = 0.2) -> tuple[int, float]:
    """(classes covered, KL(histogram ‖ uniform) in nats) of predicted labels; a class is
    covered when it gets at least ``min_fraction`` of its fair share n/classes, as for the
    mixtures' modes. The KL is 0 for a uniform histogram and log(classes) for one class."""
    counts = torch.bincount(predicted, minlength=classes).double()
    p = counts / counts.sum()
    kl = float(torch.where(p > 0, p * torch.log(p * classes), torch.zeros_like(p)).sum())
    covered = int((counts >= min_fraction * predicted.numel() / classes).sum())
    return covered, kl


class DigitMetrics:
    """Scores generated digits against the real training digits (see the module docstring).

    ``image_size``: the size the generator makes (8, 16 or 32). The real digits are resized
    to it and back to 8×8 like the generated ones, so that resizing alone costs nothing."""

    def __init__(self, classifier: Optional[DigitClassifier] = None, image_size: int = 8) -> None:
        self.classifier = classifier if classifier is not None else digit_classifier()
        images, _ = load_digits()
        train, _ = digits_split()
        with torch.no_grad():
            self.real_features = self.classifier.features(resize_images(images[train], image_size))

    @torch.no_grad()
    def __call__(self, samples: Tensor) -> dict[str, float]:
        samples = samples.detach().float().cpu()
        feats = self.classifier.features(samples)
        covered, kl = class_metrics(self.classifier.head(feats).argmax(1))
        fcd = frechet_distance(self.real_features, feats)
        return {"classes_covered": covered, "class_kl": kl, "fcd": fcd if math.isfinite(fcd) else float("inf")}
