"""What ``fastgame train`` measures and draws at each evaluation, chosen from what the data
are, not from their name: a mixture of Gaussians gets its mode metrics, labelled images of a
set with a classifier in :mod:`fastgame.trainer.metrics` get the classifier metrics (and, for
32-px RGB images, the Inception Score and FID of :mod:`fastgame.trainer.inception` where its
weights are cached), other data get losses only. Every set of samples gets a picture (points scattered, or an image grid)."""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from .data import TrainingData

__all__ = ["Evaluator", "METRIC_DIRECTION"]

METRIC_DIRECTION = {"modes_covered": "max", "high_quality": "max", "mode_jsd": "min",
                    "fcd": "min", "classes_covered": "max", "class_kl": "min", "fid": "min",
                    "inception_score": "max"}
"""Whether a larger (max) or smaller (min) value of each metric is better."""

MIXTURE_METRICS = ("modes_covered", "high_quality", "mode_jsd")
RGB32 = (3, 32, 32)
"""The images that get the Inception metrics besides their classifier's (CIFAR-10's kind)."""
INCEPTION_REAL = 2000
"""Real images the Inception FID compares with (the first ones of the set)."""


def _digit_metrics(data: TrainingData) -> Callable[[Tensor], dict[str, Any]]:
    from .metrics import DigitMetrics
    return DigitMetrics(image_size=data.sample_shape[-1])


def _labelled_metrics(data: TrainingData) -> Callable[[Tensor], dict[str, Any]]:
    from .metrics import ClassifierMetrics
    assert data.tensor is not None and data.labels is not None
    return ClassifierMetrics.for_labelled(data.family, data.tensor, data.labels, verbose=True)


_CLASSIFIER_METRICS = ("fcd", "classes_covered", "class_kl")

CLASSIFIERS: dict[str, tuple[tuple[str, ...], Callable[[TrainingData], Callable[[Tensor], dict[str, Any]]]]] = {
    "digits": (_CLASSIFIER_METRICS, _digit_metrics),
    **{family: (_CLASSIFIER_METRICS, _labelled_metrics) for family in ("mnist", "fashion-mnist", "cifar10")},
}
"""The labelled data families with a classifier metric: family -> (metric names, a builder of the
metric from the data). A labelled family without an entry logs losses only."""


class Evaluator:
    """The metrics (:attr:`names`, in the order they are shown) and the picture of one data set."""

    def __init__(self, data: TrainingData) -> None:
        self.data = data
        self.names: list[str] = []
        self.note = ""  # why there is no quality metric, or which one there is, where that needs saying
        self._metric: Callable[[Tensor], dict[str, Any]] = lambda samples: {}
        if data.mixture is not None:
            self.names = list(MIXTURE_METRICS)
            self._metric = self._mixture
        elif data.kind == "images" and data.labels is not None and data.family in CLASSIFIERS:
            names, build = CLASSIFIERS[data.family]
            self.names, self._metric = list(names), build(data)
            if data.sample_shape == RGB32:
                self._add_inception(data)
        elif data.kind == "images" and data.tensor is not None:  # unlabelled: Inception FID, if on this machine
            from .metrics import inception_fid
            score, self.note = inception_fid(data.tensor[:2000])
            if score is not None:
                self.names, self._metric = ["fid"], score

    def _add_inception(self, data: TrainingData) -> None:
        """IS and FID beside the classifier metrics, where the Inception weights are cached; else
        the note that says why not (printed once by the run)."""
        from . import inception
        assert data.tensor is not None
        score, self.note = inception.inception_metrics(data.tensor[:INCEPTION_REAL])
        if score is not None:
            classifier = self._metric
            self.names += ["inception_score", "fid"]
            self._metric = lambda samples: {**classifier(samples), **score(samples)}

    def _mixture(self, samples: Tensor) -> dict[str, Any]:
        assert self.data.mixture is not None
        m = self.data.mixture.metrics(samples)
        return {name: getattr(m, name) for name in MIXTURE_METRICS}

    def __call__(self, samples: Tensor) -> dict[str, Any]:
        """The metrics of ``samples`` (generated, on the CPU), by name."""
        return self._metric(samples)

    def picture(self, path: str, samples: Tensor, title: str) -> None:
        """A PNG of ``samples``: points with the mixture's modes, or a grid of 64 images."""
        from .plots import plot_images, plot_points
        if self.data.kind == "points":
            modes = self.data.mixture.means if self.data.mixture is not None else None
            plot_points(path, samples[:2500], modes, title)
        else:
            plot_images(path, samples[:64], title)
