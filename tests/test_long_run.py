"""Many thousand steps on a toolkit game: memory and per-step time stay flat (no state,
graph or cache that grows with the step count) and the iterates converge."""
import gc
import time
import warnings

import pytest
import torch

import fastgame
from fastgame.games import Bilinear


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs /proc (Linux)")
@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD, fastgame.GACGD])
def test_thousands_of_steps_flat_memory_and_time(cls):
    torch.manual_seed(0)
    game = Bilinear(torch.randn(6, 4) + 2 * torch.eye(6, 4), P=0.1 * torch.eye(6), Q=0.1 * torch.eye(4))
    if cls is fastgame.GACGD:
        opt = cls(game.min_params, game.max_params, lr_x=0.05, lr_y=0.05)
        take = lambda: opt.step(game.loss(), -game.loss())  # noqa: E731  (x = min player)
    else:
        opt = cls(game.max_params, game.min_params, lr_max=0.05, lr_min=0.05)
        take = lambda: opt.step(game.loss)  # noqa: E731
    start_distance = game.distance_to_equilibrium()
    steps, window = 3000, 500
    times, rss, tensors = [], {}, {}
    for t in range(steps):
        start = time.perf_counter()
        take()
        times.append(time.perf_counter() - start)
        if t + 1 in (window, steps):
            gc.collect()
            rss[t + 1] = rss_kib()
            with warnings.catch_warnings():  # isinstance on deprecated torch objects warns
                warnings.simplefilter("ignore")
                tensors[t + 1] = sum(isinstance(o, torch.Tensor) for o in gc.get_objects())
    assert tensors[steps] <= tensors[window]  # no tensor kept per step
    assert rss[steps] - rss[window] < 8 * 1024  # KiB: allocator noise, not per-step growth
    early = sorted(times[window:2 * window])[window // 2]
    late = sorted(times[-window:])[window // 2]
    assert late < 2.0 * early, (early, late)  # generous: a regression check, not a benchmark
    assert game.distance_to_equilibrium() < 0.05 * start_distance  # and it converged
