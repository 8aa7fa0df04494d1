"""Reliability of one optimizer step beyond non-finite values: steps from two threads, float16
parameters, a state_dict value float32 cannot hold, max_iter=0, a parameter whose
requires_grad was turned off, and ranks of torch.distributed that fail together (a closure
that raises on one rank makes every rank raise at that step, with nothing changed)."""
import copy
import datetime
import os
import threading
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastgame
from tests.helpers import flat, state_equal


def small_game(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    G = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to(dtype)
    D = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    real = torch.randn(16, 2, generator=g, dtype=dtype) + 1.0
    z = torch.randn(16, 2, generator=g, dtype=dtype)
    return G, D, real, z


def zero_sum(G, D, real, z):
    return D(real).mean() - D(G(z)).mean()


def build(name, D, G, **kw):
    if name == "GACGD":
        return fastgame.GACGD(D.parameters(), G.parameters(), lr_x=0.05, lr_y=0.05, **kw)
    return getattr(fastgame, name)(D.parameters(), G.parameters(), lr_max=0.05, lr_min=0.05, **kw)


def step(opt, G, D, real, z, before=None):
    def closure():
        if before is not None:
            before()
        value = zero_sum(G, D, real, z)
        return (-value, value) if isinstance(opt, fastgame.GACGD) else value
    return opt.step(closure)


def snapshot(opt, *modules):
    return flat(*modules), opt.state_dict()


def assert_unchanged(before, opt, *modules):
    assert torch.equal(before[0], flat(*modules)), "the refused step changed the parameters"
    assert state_equal(before[1], opt.state_dict()), "the refused step changed the optimizer state"


# ---- item 5: steps from two threads ------------------------------------------------------
@pytest.mark.parametrize("name", ["ACGD", "GACGD", "Extragradient"])
def test_two_threads_stepping_one_optimizer_give_the_sequential_result(name):
    """Steps of one optimizer run one at a time: two threads of 3 steps each (every closure
    sleeps, so that without the lock the steps interleave) give the 6 sequential steps."""
    G, D, real, z = small_game()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    ref = build(name, D2, G2)
    for _ in range(6):
        step(ref, G2, D2, real, z)
    opt = build(name, D, G)
    errors = []

    def worker():
        try:
            for _ in range(3):
                step(opt, G, D, real, z, before=lambda: time.sleep(0.005))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert torch.equal(flat(D, G), flat(D2, G2))
    assert state_equal(opt.state_dict(), ref.state_dict())


def test_a_step_from_inside_a_step_raises():
    G, D, real, z = small_game()
    opt = build("ACGD", D, G)
    before = snapshot(opt, D, G)
    with pytest.raises(RuntimeError, match="from inside its own step"):
        step(opt, G, D, real, z, before=lambda: step(opt, G, D, real, z))
    assert_unchanged(before, opt, D, G)
    step(opt, G, D, real, z)  # the optimizer is usable afterwards


# ---- item 6: float16 --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ACGD", "BCGD", "GACGD", "SimGD"])
def test_float16_parameters_are_refused_pointing_to_bf16_autocast(name):
    G, D, _, _ = small_game(torch.float16)
    with pytest.raises(ValueError, match=r"float16.*torch\.autocast.*bfloat16") as err:
        build(name, D, G)
    assert "\n" not in str(err.value)


def test_parameters_cast_to_float16_after_construction_are_refused():
    G, D, real, z = small_game(torch.float32)
    opt = build("ACGD", D, G)
    step(opt, G, D, real, z)
    G.half(), D.half()
    before = snapshot(opt, D, G)
    with pytest.raises(ValueError, match="float16"):
        step(opt, G, D, real.half(), z.half())
    assert_unchanged(before, opt, D, G)


# ---- item 12: load_state_dict, max_iter=0, requires_grad ---------------------------------
def test_a_state_value_beyond_float32_is_refused_not_loaded_as_inf():
    G, D, real, z = small_game(torch.float32)
    opt = build("ACGD", D, G)
    step(opt, G, D, real, z)
    sd = opt.state_dict()
    sd["state"]["max"]["square_avg"] = sd["state"]["max"]["square_avg"].double()
    sd["state"]["max"]["square_avg"][0] = 1e300  # finite in float64, inf in float32
    before = snapshot(opt, D, G)
    with pytest.raises(ValueError, match=r"square_avg has values beyond the range .*float32"):
        opt.load_state_dict(sd)
    assert_unchanged(before, opt, D, G)
    step(opt, G, D, real, z)  # and the optimizer still steps


@pytest.mark.parametrize("name", ["ACGD", "BCGD"])
def test_max_iter_0_is_refused_by_the_cg_optimizers(name):
    """0 CG iterations would leave the solved player where CG starts: refused, as the CLI does.
    (GACGD keeps CGDs' meaning of 0, the right-hand side as the step: tests/test_gacgd.py.)"""
    G, D, real, z = small_game()
    with pytest.raises(ValueError, match=r"invalid max_iter: 0 \(must be None or an int >= 1\)"):
        build(name, D, G, max_iter=0)
    opt = build(name, D, G, max_iter=3)
    for group in opt.param_groups:
        group["max_iter"] = 0
    before = snapshot(opt, D, G)
    with pytest.raises(ValueError, match=r"max_iter.*: 0 \(must be None or an int >= 1\)"):
        step(opt, G, D, real, z)
    assert_unchanged(before, opt, D, G)


@pytest.mark.parametrize("name", ["ACGD", "GACGD", "SimGD", "Extragradient"])
def test_requires_grad_turned_off_after_construction_is_one_clear_line(name):
    G, D, real, z = small_game()
    opt = build(name, D, G)
    step(opt, G, D, real, z)
    G[2].bias.requires_grad_(False)
    before = snapshot(opt, D, G)
    with pytest.raises(ValueError, match=r"parameter 3 \(shape \(2,\)\) of .*(min|y).* no longer requires grad") as err:
        step(opt, G, D, real, z)
    assert "\n" not in str(err.value)
    assert_unchanged(before, opt, D, G)
    G[2].bias.requires_grad_(True)
    step(opt, G, D, real, z)


# ---- item 7: ranks that fail together ----------------------------------------------------
STEPS, BAD_STEP = 4, 2
CASES = ["ACGD", "GACGD", "Extragradient", "lr-nan", "lr-differs"]


def run_rank(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))  # a mismatch fails, never hangs CI
    try:
        for case in CASES:
            result = rank_case(rank, case)
            path = os.path.join(out_dir, f"{case}-rank{rank}.pt")
            torch.save(result, path + ".tmp")
            os.replace(path + ".tmp", path)  # complete, or absent
        dist.barrier()
    finally:
        dist.destroy_process_group()


def rank_case(rank, case):
    G, D, real, z = small_game()
    shard = slice(rank * 8, (rank + 1) * 8)
    name = case if case in ("ACGD", "GACGD", "Extragradient") else "ACGD"
    opt = build(name, D, G)
    if case == "lr-differs" and rank == 1:
        opt.param_groups[1]["lr"] = 0.1
    raised, unchanged, calls = [], [], []

    def before():
        calls.append(1)
        # rank 1's closure raises at BAD_STEP: at its first call (the step's own loss), or for
        # extragradient at its second (the loss at the extrapolated point)
        if rank == 1 and t == BAD_STEP and len(calls) == (2 if name == "Extragradient" else 1):
            raise RuntimeError("boom on rank 1")
    for t in range(STEPS):
        calls.clear()
        if case == "lr-nan" and rank == 1:
            opt.param_groups[0]["lr"] = float("nan") if t == BAD_STEP else 0.05
        saved = snapshot(opt, D, G)
        try:
            step(opt, G, D, real[shard], z[shard], before=before if case in ("ACGD", "GACGD", "Extragradient") else None)
        except Exception as exc:  # noqa: BLE001
            raised.append((t, type(exc).__name__, str(exc)))
            # (the state only: a NaN lr in param_groups never equals itself)
            unchanged.append(torch.equal(saved[0], flat(D, G)) and state_equal(saved[1]["state"], opt.state_dict()["state"]))
            if case == "lr-differs":
                break
    return {"raised": raised, "unchanged": unchanged, "params": flat(D, G)}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path_factory.mktemp("ranks")
    try:
        mp.spawn(run_rank, args=(2, str(out / "init"), str(out)), nprocs=2, join=True)
    except mp.ProcessExitedException as exc:
        # gloo can abort a rank in its teardown on a loaded machine ("terminate called without an
        # active exception", after the barrier); what the tests read was saved before it.
        if not all((out / f"{case}-rank{r}.pt").exists() for case in CASES for r in range(2)):
            raise
        print(f"note: a rank aborted in gloo's teardown after saving its results ({exc})")
    return out


@pytest.mark.parametrize("case", ["ACGD", "GACGD", "Extragradient", "lr-nan"])
def test_a_failure_on_one_rank_makes_every_rank_raise_at_that_step(two_ranks, case):
    r0, r1 = (torch.load(two_ranks / f"{case}-rank{r}.pt") for r in range(2))
    assert [e[0] for e in r0["raised"]] == [BAD_STEP] == [e[0] for e in r1["raised"]]
    own = "RuntimeError" if case != "lr-nan" else "ValueError"
    assert r1["raised"][0][1] == own and r0["raised"][0][1] == "PeerFailure"
    assert "rank 1" in r0["raised"][0][2] and ("boom on rank 1" if case != "lr-nan" else "lr") in r0["raised"][0][2]
    assert r0["unchanged"] == [True] == r1["unchanged"]  # nothing changed on either rank
    assert torch.equal(r0["params"], r1["params"])  # and the ranks go on in lockstep


def test_hyperparameters_that_differ_between_ranks_are_refused_on_every_rank(two_ranks):
    for r in range(2):
        res = torch.load(two_ranks / f"lr-differs-rank{r}.pt")
        assert [(t, kind) for t, kind, _ in res["raised"]] == [(0, "ValueError")]
        assert "param_groups[1]['lr'] differs between ranks" in res["raised"][0][2]
        assert res["unchanged"] == [True]


def test_load_state_dict_from_another_thread_waits_for_the_running_step():
    """A load issued while another thread's step runs lands after that step, not inside it
    (inside, the step would commit on top of the loaded state)."""
    G, D, real, z = small_game()
    opt = build("ACGD", D, G)
    step(opt, G, D, real, z)
    saved = opt.state_dict()
    inside = threading.Event()

    def slow():
        inside.set()
        time.sleep(0.2)
    worker = threading.Thread(target=lambda: step(opt, G, D, real, z, before=slow))
    worker.start()
    inside.wait()
    opt.load_state_dict(saved)
    worker.join()
    assert state_equal(opt.state_dict(), saved)


def test_load_state_dict_from_inside_a_step_is_refused():
    G, D, real, z = small_game()
    opt = build("ACGD", D, G)
    step(opt, G, D, real, z)
    saved = opt.state_dict()
    with pytest.raises(RuntimeError, match="load_state_dict was called from inside a step"):
        step(opt, G, D, real, z, before=lambda: opt.load_state_dict(saved))
    assert state_equal(opt.state_dict(), saved)
    step(opt, G, D, real, z, before=lambda: opt.state_dict())  # reading inside a step is fine
