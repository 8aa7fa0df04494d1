"""Many thousand steps on a toolkit game: memory, live objects and optimizer state stay flat
(no state, graph or cache that grows with the step count) and the iterates converge.

No timing assertion: the solver's own work per step legitimately changes along the run (GMRES
takes 1 iteration early and 4 near the fixed point here, where the right-hand side is tiny), and
speed is the benchmark suite's job. What would make late steps slower for the wrong reason is
something kept per step, which the object counts and the state size catch deterministically."""
import gc
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
def test_thousands_of_steps_flat_memory_and_state(cls):
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
    rss, tensors, objects, state_bytes = {}, {}, {}, {}
    for t in range(steps):
        take()
        if t + 1 in (window, steps):
            gc.collect()
            rss[t + 1] = rss_kib()
            with warnings.catch_warnings():  # isinstance on deprecated torch objects warns
                warnings.simplefilter("ignore")
                live = gc.get_objects()
                tensors[t + 1] = sum(isinstance(o, torch.Tensor) for o in live)
                objects[t + 1] = len(live)
                del live
            state_bytes[t + 1] = sum(v.numel() * v.element_size() for s in opt.state.values()
                                     for v in s.values() if isinstance(v, torch.Tensor))
    assert tensors[steps] <= tensors[window]  # no tensor kept per step
    # No Python object kept per step (2500 steps would leave >= 2500); a few dozen is interpreter noise.
    assert objects[steps] - objects[window] < 100, objects
    assert state_bytes[steps] == state_bytes[window]  # no state that grows with the step count
    assert rss[steps] - rss[window] < 8 * 1024  # KiB: allocator noise, not per-step growth
    assert game.distance_to_equilibrium() < 0.05 * start_distance  # and it converged
