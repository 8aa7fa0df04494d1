"""PCGD and APCGD under torch.distributed: 2 gloo processes, each with half of the batch, take
the steps one process takes on the full batch (gradients and every mixed product averaged;
float64, to summation-order rounding); a non-finite loss on one rank makes both refuse that
step with nothing changed, and training goes on in lockstep."""
import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastgame
from tests.helpers import state_equal
from tests.test_pcgd import multi_batches, multi_gan, multi_losses, params_of

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

STEPS = 4
BAD_STEP = 1  # rank 1's loss of player 2 is +inf at this step
CLASSES = ("PCGD", "APCGD")


def make_opt(name, G, Ds):
    return getattr(fastgame, name)([G.parameters()] + [D.parameters() for D in Ds], lr=0.05, tol=1e-10, atol=1e-14)


def run_rank(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))  # a mismatch fails, never hangs CI
    try:
        torch.set_num_threads(1)
        for name in CLASSES:
            train_rank(rank, world, name, out_dir)
        dist.barrier()  # tear down together (see tests/test_distributed.py)
    finally:
        dist.destroy_process_group()


def train_rank(rank, world, name, out_dir):
    G, Ds = multi_gan(2)
    opt = make_opt(name, G, Ds)
    refused = []
    for t, (real, z) in enumerate(multi_batches(STEPS)):
        shard = slice(rank * len(real) // world, (rank + 1) * len(real) // world)
        losses = list(multi_losses(G, Ds, real[shard], z[shard]))
        if t == BAD_STEP and rank == 1:
            losses[2] = losses[2] + float("inf")
        before = (params_of(G, Ds), opt.state_dict())
        try:
            opt.step(losses)
        except FloatingPointError:
            refused.append(t)
            assert torch.equal(before[0], params_of(G, Ds)) and state_equal(before[1], opt.state_dict())
    torch.save({"params": params_of(G, Ds), "refused": refused}, os.path.join(out_dir, f"{name}-rank{rank}.pt"))


def single_process(name):
    G, Ds = multi_gan(2)
    opt = make_opt(name, G, Ds)
    for t, (real, z) in enumerate(multi_batches(STEPS)):
        if t != BAD_STEP:
            opt.step(multi_losses(G, Ds, real, z))
    return params_of(G, Ds)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("pcgd_ddp")
    mp.spawn(run_rank, args=(2, str(out / "init"), str(out)), nprocs=2, join=True)
    return out


@pytest.mark.parametrize("name", CLASSES)
def test_two_gloo_processes_equal_one_process_full_batch(two_ranks, name):
    results = [torch.load(two_ranks / f"{name}-rank{r}.pt") for r in range(2)]
    for r in results:
        assert r["refused"] == [BAD_STEP]  # both ranks refused the step only rank 1 saw as bad
    assert torch.equal(results[0]["params"], results[1]["params"])
    torch.testing.assert_close(results[0]["params"], single_process(name), rtol=1e-9, atol=1e-11)
