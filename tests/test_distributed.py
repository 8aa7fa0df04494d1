"""Data parallelism of the optimizers: with torch.distributed initialised, each rank takes
the loss of its shard of the batch and fastgame averages gradients and mixed HVPs across
ranks, so 2 gloo processes take the steps 1 process takes on the full batch (float64, to
summation-order rounding), in both solve phases, with the modules plain or wrapped in
DistributedDataParallel. A non-finite value on one rank makes every rank refuse the step,
with nothing changed anywhere, and training goes on in lockstep."""
import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastgame
from tests.helpers import flat, state_equal

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

STEPS = 5
BAD_STEP = 2  # rank 1's loss is +inf at this step (its gradients stay finite)
BATCH = 16


def models():
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    D = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    return G, D


def batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 2, generator=g, dtype=torch.float64) + 1.0,
             torch.randn(BATCH, 2, generator=g, dtype=torch.float64)) for _ in range(STEPS)]


def make_opt(name, D, G):
    if name == "GACGD":
        return fastgame.GACGD(D.parameters(), G.parameters(), lr_x=0.05, lr_y=0.05, tol=1e-10, atol=1e-14)
    return getattr(fastgame, name)(D.parameters(), G.parameters(), lr_max=0.05, lr_min=0.05)


def take_step(opt, D, G, real, z, poison=False):
    value = D(real).mean() - D(G(z)).mean()
    if poison:
        value = value + float("inf")
    if isinstance(opt, fastgame.GACGD):  # x = D minimises -value, y = G minimises value
        return opt.step(-value, value)
    return opt.step(value)


CONFIGS = [(name, ddp) for name in ("ACGD", "BCGD", "GACGD") for ddp in (False, True)]


def run_rank(rank, world, init_file, out_dir):
    """Every configuration in one process group (spawning costs more than the steps)."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))  # a mismatch fails, never hangs CI
    try:
        for name, ddp in CONFIGS:
            train_rank(rank, world, name, ddp, out_dir)
        # Tear down together: a rank that destroys its group while the other still finishes
        # its last collective can abort it ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def train_rank(rank, world, name, ddp, out_dir):
    G, D = models()
    if ddp:
        G, D = torch.nn.parallel.DistributedDataParallel(G), torch.nn.parallel.DistributedDataParallel(D)
    opt = make_opt(name, D, G)
    shard = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    refused = []
    for t, (real, z) in enumerate(batches()):
        before = (flat(D, G), opt.state_dict())
        try:
            take_step(opt, D, G, real[shard], z[shard], poison=(t == BAD_STEP and rank == 1))
        except FloatingPointError as exc:
            refused.append(t)
            after = (flat(D, G), opt.state_dict())
            assert torch.equal(before[0], after[0]), "a refused step changed the parameters"
            assert state_equal(before[1], after[1]), "a refused step changed the optimizer state"
            assert "non-finite" in str(exc)
    torch.save({"params": flat(D, G), "refused": refused},
               os.path.join(out_dir, f"{name}-{ddp}-rank{rank}.pt"))


def single_process(name):
    """The reference: one process, the full batch, the bad step skipped."""
    G, D = models()
    opt = make_opt(name, D, G)
    for t, (real, z) in enumerate(batches()):
        if t != BAD_STEP:
            take_step(opt, D, G, real, z)
    return flat(D, G)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(run_rank, args=(2, str(out / "init"), str(out)), nprocs=2, join=True)
    return out


@pytest.mark.parametrize("name,ddp", CONFIGS, ids=[f"{n}-{'ddp' if d else 'plain'}" for n, d in CONFIGS])
def test_two_gloo_processes_equal_one_process_full_batch(two_ranks, name, ddp):
    results = [torch.load(two_ranks / f"{name}-{ddp}-rank{r}.pt") for r in range(2)]
    for r in results:
        assert r["refused"] == [BAD_STEP]  # every rank refused the step only rank 1 saw as bad
    assert torch.equal(results[0]["params"], results[1]["params"])  # the ranks stay in lockstep
    torch.testing.assert_close(results[0]["params"], single_process(name), rtol=1e-10, atol=1e-12)
