"""Inception Score and Inception FID of generated 32-px RGB images (CIFAR-10's kind), the metrics
the GAN papers report, computed by torchmetrics (``InceptionScore``, ``FrechetInceptionDistance``)
on torch-fidelity's Inception network, only when torch-fidelity is installed and its weights file
is already in torch hub's checkpoint folder (where torch-fidelity itself caches it). Nothing is
ever downloaded: without the weights, the trainer reports its other metrics and says once why
these are missing.

The networks are arguments of :class:`InceptionMetrics`, so that a small stand-in (any module
mapping uint8 images to rows of features or logits) runs the same code where the weights are absent.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .metrics import INCEPTION_WEIGHTS

__all__ = ["InceptionMetrics", "inception_networks", "inception_metrics", "weights_path", "IS_SPLITS"]

IS_SPLITS = 10
"""Inception Score's splits of the samples (the score's usual definition, Salimans et al. 2016)."""
_IS_SEED = 0  # IS shuffles the samples before splitting them: seeded, and apart from training's RNG


def weights_path() -> str:
    """Where torch-fidelity's Inception weights are looked for: torch hub's checkpoint folder."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_WEIGHTS)


def inception_networks() -> tuple[Optional[tuple[nn.Module, nn.Module]], str]:
    """((pool features, logits) networks, note) when torch-fidelity and its cached weights are on
    this machine; else (None, a one-line note saying what is missing). Never downloads."""
    path = weights_path()
    try:
        import torch_fidelity  # noqa: F401
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError:
        return None, "no Inception Score/FID: they need torch-fidelity (pip install torch-fidelity) and its weights"
    if not os.path.isfile(path):
        return None, f"no Inception Score/FID: torch-fidelity's weights are not in {path} (fastgame never downloads them)"
    nets = tuple(NoTrainInceptionV3(name="inception-v3-compat", features_list=[f], feature_extractor_weights_path=path)
                 for f in ("2048", "logits_unbiased"))
    return nets, f"Inception Score and FID (torchmetrics, torch-fidelity's weights {path})"  # type: ignore[return-value]


def _uint8_rgb(x: Tensor) -> Tensor:
    """Images in [-1, 1] (N, 1 or 3, H, W) as the uint8 RGB the Inception networks take."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class InceptionMetrics:
    """Scores generated images: ``{"inception_score", "fid"}`` against ``real`` images in [-1, 1].

    ``features`` maps uint8 images to feature rows (torchmetrics' FID needs its ``num_features``
    or runs it once on a 299-px image to find it); ``logits`` maps them to class logits."""

    def __init__(self, real: Tensor, features: nn.Module, logits: nn.Module, chunk: int = 200) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore
        self.chunk = chunk
        self.fid = FrechetInceptionDistance(feature=features, reset_real_features=False)
        with warnings.catch_warnings():  # that it keeps the features: a few thousand rows of logits here
            warnings.filterwarnings("ignore", message=".*will save all extracted features", category=UserWarning)
            self.inception_score = InceptionScore(feature=logits, splits=IS_SPLITS)
        with torch.no_grad():
            for part in real.split(chunk):
                self.fid.update(_uint8_rgb(part), real=True)

    @torch.no_grad()
    def __call__(self, samples: Tensor) -> dict[str, float]:
        self.fid.reset()  # the fake features only: the real ones stay
        self.inception_score.reset()
        for part in samples.split(self.chunk):
            images = _uint8_rgb(part)
            self.fid.update(images, real=False)
            self.inception_score.update(images)
        with torch.random.fork_rng(devices=[]):  # IS's shuffle must not move training's random stream
            torch.manual_seed(_IS_SEED)
            score = float(self.inception_score.compute()[0])
        fid = float(self.fid.compute())
        return {"inception_score": score, "fid": fid if math.isfinite(fid) else float("inf")}


def inception_metrics(real: Tensor) -> tuple[Optional[Callable[[Tensor], dict[str, float]]], str]:
    """(scorer, note): :class:`InceptionMetrics` on torch-fidelity's network where its weights are
    cached (see :func:`inception_networks`), else (None, the note saying why not)."""
    nets, note = inception_networks()
    if nets is None:
        return None, note
    return InceptionMetrics(real, *nets), note
