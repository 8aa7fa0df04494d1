"""CUDA-graph mode on a GPU (skipped without CUDA; run by bench/gpu_check.sh)."""
import copy

import pytest
import torch

import fastgame
from bench.models import ConvDiscriminator, ConvGenerator, gan_loss, mlp_gan, ring_data, wgan_loss
from tests.helpers import flat

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture
def deterministic_cuda():
    """Bitwise-reproducible kernels: no TF32 convolutions, deterministic cuDNN algorithms.
    Measured on an H100: with PyTorch's defaults two *eager* ACGD runs of the conv_bn case
    already end 30% apart (lr 1e-2: RMSProp steps amplify TF32 and atomic-order noise), so
    graphed-vs-eager can only be compared exactly with these settings (then it is 0.0)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True, False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old


def cases():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    G, D = mlp_gan(width=64, depth=2, latent=2)
    mlp = (G, D, [(ring_data(128, gen), torch.randn(128, 2, generator=gen)) for _ in range(12)], gan_loss)
    torch.manual_seed(0)
    G, D = ConvGenerator(latent=16, ch=8, size=16), ConvDiscriminator(ch=8, size=16)
    conv = (G, D, [(torch.rand(16, 3, 16, 16, generator=gen) * 2 - 1, torch.randn(16, 16, generator=gen))
                   for _ in range(12)], wgan_loss)
    from fastgame.nn import convert_batchnorm

    plain = (convert_batchnorm(copy.deepcopy(conv[0])), convert_batchnorm(copy.deepcopy(conv[1])), conv[2], conv[3])
    return {"mlp": mlp, "conv_bn": conv, "conv_fastgame_bn": plain}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["mlp", "conv_bn", "conv_fastgame_bn"])
@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD])
def test_graphed_equals_eager(name, cls, dtype, deterministic_cuda):
    G, D, batches, loss_fn = cases()[name]
    G, D = G.to("cuda", dtype), D.to("cuda", dtype)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    batches = [(r.to("cuda", dtype), z.to("cuda", dtype)) for r, z in batches]
    # ACGD's default lr and a tol reachable in float32 (a float32 CG cannot reach the default
    # 1e-12): every step converges in 1-24 iterations, so the masked ones after convergence run
    kw = dict(lr_max=1e-3, lr_min=1e-3, capturable=True, max_iter=30, tol=1e-8 if dtype == torch.float32 else 1e-14)
    eager = cls(D.parameters(), G.parameters(), **kw)
    graphed = cls(D2.parameters(), G2.parameters(), **kw)
    sched = torch.optim.lr_scheduler.StepLR(graphed, step_size=4, gamma=0.5)
    sched_eager = torch.optim.lr_scheduler.StepLR(eager, step_size=4, gamma=0.5)
    step = fastgame.make_graphed_step(graphed, lambda r, z: loss_fn(G2, D2, r, z),
                                      torch.empty_like(batches[0][0]), torch.empty_like(batches[0][1]), warmup=2)
    for real, z in batches:  # 12 steps: 2 eager warm-up, both phases captured and replayed
        eager.step(loss_fn(G, D, real, z))
        eager.raise_if_nonfinite()
        step(real, z)  # raises if the graphed step was non-finite
        sched.step(), sched_eager.step()
    assert len(step.graphs) == 2
    assert int(graphed.info["iter_num"]) == int(eager.info["iter_num"])  # effective (unmasked) iterations
    # same kernels in the same order: equal up to float rounding
    torch.testing.assert_close(flat(D2, G2), flat(D, G), rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
    assert int(graphed.state["game"]["step"]) == 12


@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD])
def test_capturable_step_has_no_host_sync(cls):
    G, D, batches, loss_fn = cases()["mlp"]
    G, D = G.cuda(), D.cuda()
    opt = cls(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2, capturable=True, max_iter=10,
              collect_info=False)
    real, z = batches[0]
    opt.step(loss_fn(G, D, real.cuda(), z.cuda()))
    for real, z in batches[1:4]:
        loss = loss_fn(G, D, real.cuda(), z.cuda())
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step(loss)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_eager_cuda_parity_with_cpu():
    G, D, batches, loss_fn = cases()["mlp"]
    G2, D2 = copy.deepcopy(G).cuda(), copy.deepcopy(D).cuda()
    a = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2)
    b = fastgame.ACGD(D2.parameters(), G2.parameters(), lr_max=1e-2, lr_min=1e-2)
    for real, z in batches[:6]:
        a.step(loss_fn(G, D, real, z))
        b.step(loss_fn(G2, D2, real.cuda(), z.cuda()))
    torch.testing.assert_close(flat(D2, G2).cpu(), flat(D, G), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mixed", [False, True], ids=["fp32", "bf16-autocast"])
def test_graphed_step_other_shapes_run_eagerly_and_bf16(mixed, deterministic_cuda):
    """A short batch after both phases are captured runs eagerly (one warning) and the graphs
    replay on as before; with the loss under bf16 autocast, graphed equals eager as well."""
    G, D, batches, loss_fn = cases()["mlp"]
    G, D = G.cuda(), D.cuda()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    batches = [(r.cuda(), z.cuda()) for r, z in batches]
    if mixed:
        def loss_fn(G, D, r, z, _f=loss_fn):  # noqa: E306
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return _f(G, D, r, z)
    kw = dict(lr_max=1e-3, lr_min=1e-3, capturable=True, max_iter=30, tol=1e-8)
    eager = fastgame.ACGD(D.parameters(), G.parameters(), **kw)
    graphed = fastgame.ACGD(D2.parameters(), G2.parameters(), **kw)
    step = fastgame.make_graphed_step(graphed, lambda r, z: loss_fn(G2, D2, r, z),
                                      torch.empty_like(batches[0][0]), torch.empty_like(batches[0][1]), warmup=2)
    for i, (real, z) in enumerate(batches):
        if i == 6:  # both phases captured by now
            real, z = real[:100], z[:100]
            with pytest.warns(UserWarning, match="differ from the captured"):
                step(real, z)
        else:
            step(real, z)
        eager.step(loss_fn(G, D, real, z))
        eager.raise_if_nonfinite()
    assert len(step.graphs) == 2 and step.eager_reason is None
    torch.testing.assert_close(flat(D2, G2), flat(D, G), rtol=1e-6, atol=0)
    assert int(graphed.state["game"]["step"]) == 12


@pytest.mark.parametrize("how", ["closure", "own_stream"])
@pytest.mark.parametrize("name", ["mlp", "conv_bn"])
@pytest.mark.parametrize("cls", [fastgame.ACGD, fastgame.BCGD])
def test_eager_step_replays_cg_iterations(cls, name, how, deterministic_cuda):
    """graph_cg: an eager step given a closure (or run on the caller's own stream) replays its CG
    iterations from a graph captured in the solve, with the eager path's numbers and pass count;
    a loss tensor from the default stream is solved eagerly and says why."""
    G, D, batches, loss_fn = cases()[name]
    G, D = G.cuda(), D.cuda()
    G2, D2, G3, D3 = copy.deepcopy(G), copy.deepcopy(D), copy.deepcopy(G), copy.deepcopy(D)
    batches = [(r.cuda(), z.cuda()) for r, z in batches]
    kw = dict(lr_max=1e-3, lr_min=1e-3, tol=1e-8)
    ref = cls(D.parameters(), G.parameters(), graph_cg=False, **kw)
    opt = cls(D2.parameters(), G2.parameters(), **kw)
    plain = cls(D3.parameters(), G3.parameters(), **kw)
    own = torch.cuda.Stream()
    graphed, reserved = [], []
    for real, z in batches:
        ref.step(loss_fn(G, D, real, z))
        if how == "closure":
            opt.step(lambda: loss_fn(G2, D2, real, z))
        else:
            own.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(own):
                opt.step(loss_fn(G2, D2, real, z))
            torch.cuda.current_stream().wait_stream(own)
        plain.step(loss_fn(G3, D3, real, z))
        assert opt.info["hvp_passes"] == ref.info["hvp_passes"] and opt.info["iter_num"] == ref.info["iter_num"]
        graphed.append(opt.info["cg_graphed"])
        reserved.append(torch.cuda.memory_reserved())
        assert not plain.info["cg_graphed"]
    assert graphed == [False] + [True] * (len(batches) - 1), opt.graph_cg_reason
    assert "default CUDA stream" in plain.graph_cg_reason
    diff = (flat(G2, D2) - flat(G, D)).abs().max().item()
    print(f"graph_cg {cls.__name__} {name} {how}: max |dθ| vs eager {diff:.2e}, reserved MB "
          f"{reserved[2] / 2**20:.0f} -> {reserved[-1] / 2**20:.0f}")
    assert torch.equal(flat(G2, D2), flat(G, D))  # the same kernels, deterministic settings: 0.0 on an H200
    assert reserved[-1] <= reserved[2] * 1.25 + 2**22  # the iteration graphs reuse one pool, step after step


def test_eager_graph_cg_beside_a_cuda_thread():
    """graph_cg captures every step; another thread's CUDA work (allocations, host reads, as a
    pinning data loader does) must not break it, nor be broken by it."""
    import threading

    G, D, batches, loss_fn = cases()["mlp"]
    G, D = G.cuda(), D.cuda()
    opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=1e-3, lr_min=1e-3, tol=1e-8)
    errors, stop = [], threading.Event()

    def busy():
        try:
            while not stop.is_set():
                t = torch.randn(1 << 16, device="cuda")
                float(t.sum())
                torch.empty(1 << 20, pin_memory=True)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        for real, z in batches:
            real, z = real.cuda(), z.cuda()
            opt.step(lambda: loss_fn(G, D, real, z))
    finally:
        stop.set()
        worker.join()
    assert not errors, errors
    assert opt.info["cg_graphed"], opt.graph_cg_reason


# ---- piecewise graphs with exact CG iterations (make_graphed_step(exact_cg=True)) --------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["mlp", "conv_bn", "conv_fastgame_bn"])
@pytest.mark.parametrize("cls,cg_start", [(fastgame.ACGD, "zero"), (fastgame.BCGD, "zero"), (fastgame.ACGD, "warm")])
def test_piecewise_equals_eager_closure_step(name, cls, cg_start, dtype, deterministic_cuda):
    """Replayed head, k iterations and tail: the eager closure step's numbers bit for bit (deterministic
    kernels), its exact k and pass count, both phases captured once."""
    G, D, batches, loss_fn = cases()[name]
    G, D = G.to("cuda", dtype), D.to("cuda", dtype)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    batches = [(r.to("cuda", dtype), z.to("cuda", dtype)) for r, z in batches]
    kw = dict(lr_max=1e-3, lr_min=1e-3, tol=1e-8 if dtype == torch.float32 else 1e-14, cg_start=cg_start)
    eager = cls(D.parameters(), G.parameters(), graph_cg=False, **kw)
    graphed = cls(D2.parameters(), G2.parameters(), capturable=True, max_iter=10_000, **kw)
    step = fastgame.make_graphed_step(graphed, lambda r, z: loss_fn(G2, D2, r, z),
                                      torch.empty_like(batches[0][0]), torch.empty_like(batches[0][1]), warmup=2,
                                      exact_cg=True)
    for n, (real, z) in enumerate(batches):
        eager.step(lambda: loss_fn(G, D, real, z))
        step(real, z)
        assert graphed.info["iter_num"] == eager.info["iter_num"]
        if n == 0 and cg_start == "warm":  # a capturable warm start begins from a stored zero (see the CPU test)
            torch.testing.assert_close(flat(D2, G2), flat(D, G))
            with torch.no_grad():
                for p, q in zip([*D2.parameters(), *G2.parameters()], [*D.parameters(), *G.parameters()]):
                    p.copy_(q)
            step.load_state_dict(eager.state_dict())
            continue
        assert graphed.info["hvp_passes"] == eager.info["hvp_passes"]
        assert torch.equal(flat(D2, G2), flat(D, G)), n
    assert len(step.graphs) == 2 and step.eager_reason is None
    assert int(graphed.state["game"]["step"]) == len(batches)


def test_piecewise_non_finite_step_changes_nothing():
    G, D, batches, loss_fn = cases()["mlp"]
    G, D = G.cuda(), D.cuda()
    batches = [(r.cuda(), z.cuda()) for r, z in batches]
    opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=1e-2, lr_min=1e-2, capturable=True, max_iter=100)
    step = fastgame.make_graphed_step(opt, lambda r, z: loss_fn(G, D, r, z), *[t.clone() for t in batches[0]], warmup=1,
                                      exact_cg=True)
    for real, z in batches[:4]:
        step(real, z)
    before, sd = flat(D, G), opt.state_dict()
    bad = batches[4][0].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        step(bad, batches[4][1])
    assert torch.equal(flat(D, G), before)
    after = opt.state_dict()
    for k in ("max", "min"):
        for key, t in sd["state"][k].items():
            assert torch.equal(after["state"][k][key], t)
    step(*batches[5])  # and the next step goes on


def test_piecewise_trainer_default_on_cuda():
    from fastgame.trainer import steppers
    from fastgame.trainer.batches import Batch
    from fastgame.trainer.methods import make_stepper
    from fastgame.graphs import PiecewiseGraphedStep
    G, D, batches, loss_fn = cases()["mlp"]
    G, D = G.cuda(), D.cuda()
    losses = steppers.GameLosses(G, D, "standard", None, 10.0)
    example = Batch(torch.zeros(128, 2, device="cuda"), torch.zeros(128, 2, device="cuda"), torch.zeros(128, device="cuda"))
    stepper = make_stepper("acgd", G, D, losses, 1e-3, 1e-3, example=example)
    assert isinstance(stepper._graphed.graphed, PiecewiseGraphedStep)  # inside its first-replay check
    eager = make_stepper("acgd", G, D, losses, 1e-3, 1e-3, example=example, eager=True)
    assert eager._graphed is None and not eager.opt.capturable
    t = torch.zeros(128, device="cuda")
    for real, z in batches[:6]:
        stepper.step([Batch(real.cuda(), z.cuda(), t)])
    assert stepper._graphed.graphs and stepper._graphed.reason is None and stepper._graphed.verified == {0, 1}
    assert stepper.path.startswith("piecewise CUDA graphs") and not stepper.notices
