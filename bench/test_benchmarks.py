"""pytest-benchmark versions of the quick CPU configurations (not part of the CI test run,
which collects tests/ only):

    python -m pytest bench/test_benchmarks.py --benchmark-only
    python -m pytest bench/test_benchmarks.py --benchmark-only --benchmark-json bench/results/pytest_bench.json

One benchmark per (model, optimizer); each times a full step (forward + update) on a fixed
cycle of batches after a warm-up, from the same seeded model and batches as ``python -m bench
--suite quick``. The suite itself (bench/run.py) adds the floor, passes and memory columns.
"""
from __future__ import annotations

import copy
import itertools

import pytest
import torch

pytest.importorskip("pytest_benchmark")

import fastgame  # noqa: E402
from bench.cases import SUITES, build_case  # noqa: E402
from bench.rows import MIXED_DTYPE, autocast_loss  # noqa: E402

CONFIGS = {c.label: c for c in SUITES["quick"]["configs"]}
OPTIMIZERS = ["adam", "adam-fused", "cgds", "fastgame-torch", "fastgame-cpp", "fastgame-bf16"]


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(SUITES["quick"].get("threads") or old)
    yield
    torch.set_num_threads(old)
    fastgame.set_backend("auto")


def _stepper(name: str, case, lr: float, tol: float = 1e-10):
    G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
    if name.startswith("adam"):
        kw = dict(lr=lr, betas=(0.5, 0.999), **({"fused": True} if name == "adam-fused" else {}))
        opt_d = torch.optim.Adam(D.parameters(), maximize=True, **kw)
        opt_g = torch.optim.Adam(G.parameters(), **kw)

        def step(real, z):
            loss = case.loss_fn(G, D, real, z)
            opt_d.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
            opt_g.step()
        return step
    if name == "cgds":
        CGDs = pytest.importorskip("CGDs")
        opt = CGDs.ACGD(max_params=D.parameters(), min_params=G.parameters(), lr_max=lr, lr_min=lr, tol=tol)
    elif name == "fastgame-bf16":  # forward and HVPs under autocast, default fused-op backend
        opt = fastgame.ACGD(max_params=D.parameters(), min_params=G.parameters(), lr_max=lr, lr_min=lr, tol=tol)
        loss_fn = autocast_loss(case.loss_fn, MIXED_DTYPE)
        return lambda real, z: opt.step(loss_fn(G, D, real, z))
    else:
        backend = name.split("-", 1)[1]
        if not fastgame.backends()[backend].available:
            pytest.skip(f"fastgame backend {backend}: {fastgame.backends()[backend]}")
        fastgame.set_backend(backend)
        opt = fastgame.ACGD(max_params=D.parameters(), min_params=G.parameters(), lr_max=lr, lr_min=lr, tol=tol)
    return lambda real, z: opt.step(case.loss_fn(G, D, real, z))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_step(benchmark, config, optimizer):
    cfg = CONFIGS[config]
    case = build_case(cfg, torch.device("cpu"), n_batches=8)
    step = _stepper(optimizer, case, cfg.lr)
    batches = itertools.cycle(case.batches)
    for _ in range(2):  # warm-up
        step(*next(batches))
    benchmark.group = config
    benchmark.extra_info.update(config=config, optimizer=optimizer, threads=torch.get_num_threads(),
                                torch=torch.__version__, fastgame=fastgame.__version__)
    benchmark.pedantic(lambda: step(*next(batches)), rounds=5, iterations=1, warmup_rounds=0)
