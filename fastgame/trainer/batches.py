"""What a training step steps on: :class:`Batch` (real samples, latent codes, penalty weights)
and :class:`BatchSource`, which draws a step's batches, this rank's shard, on the run's device.

A step takes a list of batches: one for most methods; for ``--d-steps k`` > 1 (alternating
Adam), the k critic batches and then the generator's (the last real batch, fresh codes).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from .data import BatchStream, TrainingData

__all__ = ["Batch", "BatchSource"]


class Batch(NamedTuple):
    """One batch of a step: ``real`` samples, latent codes ``z`` and the gradient penalty's
    interpolation weights ``t`` (None in the generator's batch of a critic-steps step)."""

    real: Tensor
    z: Tensor
    t: Optional[Tensor]


class BatchSource:
    """Seeded, resumable batches of ``batch`` samples for ``rank`` of ``world`` processes.

    Real samples come from a :class:`~fastgame.trainer.data.BatchStream`; latent codes and penalty
    weights from their own generator (:attr:`noise`, saved in checkpoints), so that evaluation or
    anything else using the global RNG cannot change training. Every rank draws the full batch's
    codes and keeps its shard: the same numbers as one process."""

    def __init__(self, data: TrainingData, batch: int, latent: int, seed: int, rank: int, world: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.sampler = BatchStream(data, batch, seed, rank, world)
        self.noise = torch.Generator().manual_seed(seed + 1)
        self.batch, self.latent, self.device, self.dtype = batch, latent, device, dtype
        self.shard = batch // world
        self._lo = rank * self.shard

    def _codes(self) -> Tensor:
        return torch.randn(self.batch, self.latent, generator=self.noise, dtype=self.dtype)[self._lo:self._lo + self.shard]

    def _weights(self) -> Tensor:
        return torch.rand(self.batch, generator=self.noise, dtype=self.dtype)[self._lo:self._lo + self.shard]

    def next(self, d_steps: int = 1) -> list[Batch]:
        """One step's batches: ``d_steps`` batches, and for ``d_steps`` > 1 the generator's after them."""
        out = [Batch(*(self._to_device(x) for x in (self.sampler.next(), self._codes(), self._weights())))
               for _ in range(d_steps)]
        if d_steps > 1:
            out.append(Batch(out[-1].real, self._to_device(self._codes()), None))
        return out

    def example(self, shape: tuple[int, ...]) -> Batch:
        """A zero batch of the shapes :meth:`next` draws (real samples of ``shape``), e.g. for a graph's capture."""
        zeros = lambda *s: torch.zeros(s, device=self.device, dtype=self.dtype)  # noqa: E731
        return Batch(zeros(self.shard, *shape), zeros(self.shard, self.latent), zeros(self.shard))

    def _to_device(self, x: Tensor) -> Tensor:
        """``x``, a fresh CPU tensor, on the run's device in its dtype. To a GPU through pinned
        memory without blocking the host: a copy from pageable memory would wait for the GPU
        each step. The pinned block is not reused before the copy has read it (torch's host
        allocator records the copy's stream), and ``x`` is not written again."""
        x = x.to(self.dtype)
        if self.device.type != "cuda":
            return x.to(self.device)
        return x.pin_memory().to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint entries: ``sampler`` (the data order) and ``noise`` (the codes' generator)."""
        return {"sampler": self.sampler.state_dict(), "noise": self.noise.get_state()}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.sampler.load_state_dict(st["sampler"])
        self.noise.set_state(st["noise"])
