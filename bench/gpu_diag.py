"""GPU measurements behind two defaults (run by hand on a GPU; results in bench/results/gpu_diag_*.txt):

* B: the warm-start pair of mixed HVPs as one batched pass (``is_grads_batched``) vs two
  passes, eager (fastgame keeps the batched pass: 14-15% faster for the pair on an H100);
* C: eager ACGD ms/step by ``check_every`` (1 is fastest eagerly: the default);
* D: a torch.profiler table of three eager MLP-GAN steps (where the host time goes);
* E: peak memory of one warm-started eager ACGD step on DCGAN-32 b256 with the batched pair vs
  two passes, and CGDs' (the suite measured fastgame +8% over CGDs there; a CPU probe of the
  allocations shows no difference between the two, so the GPU's comes from cuDNN/vmap);
* F: CUDA-graph IF nodes (torch 2.13's only conditional node): does a mixed-HVP pass capture
  into an IF body, and what do n guarded passes cost when skipped / run, against n plain graphed
  passes and the piecewise path's host loop (n replays of a one-pass graph, a flag read each)?

    python bench/gpu_diag.py
    python bench/gpu_diag.py --only-conditional   # section F alone
    python bench/gpu_diag.py --smoke   # CI: imports everything, then says it needs CUDA
"""
import argparse, copy, statistics, sys, time, traceback, os
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch
import fastgame
from fastgame.linalg.hvp import MixedHVP
from bench.models import (WGANGPDiscriminator, WGANGPGenerator, gan_loss,
                          image_data, mlp_gan, ring_data, wgan_loss)

_args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
_args.add_argument("--smoke", action="store_true", help="import everything and stop (CI; the measurements need a GPU)")
_args.add_argument("--only-conditional", action="store_true", help="run section F (conditional nodes) only")
_opts = _args.parse_args()
if _opts.smoke or not torch.cuda.is_available():
    print("bench/gpu_diag.py: needs CUDA, skipped (imports ok)")
    sys.exit(0)
dev = torch.device("cuda")
# CUDA-graph conditional nodes would let a graphed CG skip its iterations after convergence
print("torch", torch.__version__, "conditional-node API:", hasattr(torch._C._CUDAGraph, "begin_capture_to_if_node"))

def flat(*ms):
    return torch.cat([p.detach().reshape(-1).double() for m in ms for p in m.parameters()])

# ---- B. batched vs single passes ----
def tm(fn, reps=20):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize(); out.append(a.elapsed_time(b))
    return statistics.median(out)

torch.backends.cudnn.benchmark = True
def case(name):
    torch.manual_seed(0); gen = torch.Generator().manual_seed(1)
    if name == "mlp":
        G, D = mlp_gan(128, 3, 2); real, z = ring_data(512, gen), torch.randn(512, 2, generator=gen); lf = gan_loss
    else:
        G, D = WGANGPGenerator(), WGANGPDiscriminator(); real, z = image_data(64, 32, gen), torch.randn(64, 128, generator=gen); lf = wgan_loss
    return G.to(dev), D.to(dev), real.to(dev), z.to(dev), lf

# ---- F. CUDA-graph IF nodes: could CG's loop run on the device? ----
def conditional_probe():
    print("## F. IF-node-guarded mixed-HVP passes (MLP GAN b512, D_xy pass), ms per replay")
    G, D, real, z, lf = case("mlp")
    opt = fastgame.ACGD(D.parameters(), G.parameters())
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # autograd's nodes off the default stream, so that they can be captured
        loss = lf(G, D, real, z)
        gx, gy = opt._grads(loss)
        hvp = MixedHVP(opt.players, (gx, gy))
        vy = torch.randn(opt.players[1].numel, device=dev) * 1e-3
        out = torch.zeros(opt.players[0].numel, device=dev)
        for _ in range(3):
            out.copy_(hvp(0, vy))
    torch.cuda.synchronize()

    def capture(n, pred=None):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=s):
            for _ in range(n):
                if pred is not None:
                    torch.cuda.CUDAGraph.get_currently_capturing_graph().begin_capture_to_if_node(pred)
                out.copy_(hvp(0, vy))
                if pred is not None:
                    torch.cuda.CUDAGraph.get_currently_capturing_graph().end_capture_to_conditional_node()
        return g
    one = capture(1)
    flag = torch.ones((), dtype=torch.bool, device=dev)
    for n in (1, 8, 32):
        row = [f"n={n:2d}", f"plain {tm(capture(n).replay):7.3f}"]
        for value in (True, False):
            try:
                row.append(f"IF {'run ' if value else 'skip'} {tm(capture(n, torch.tensor(value, device=dev)).replay):7.3f}")
            except Exception as exc:  # noqa: BLE001
                row.append(f"IF capture failed ({type(exc).__name__}: {str(exc)[:120]})")
        def host_loop():
            for _ in range(n):
                one.replay()
                bool(flag)
        row.append(f"host loop {tm(host_loop):7.3f}")
        print("  ".join(row))

try:
    conditional_probe()
except Exception:  # noqa: BLE001
    traceback.print_exc()
if _opts.only_conditional:
    sys.exit(0)

print("## B. HVP passes (ms): single D_xy, single D_yx, 2 singles D_xy, batched pair D_xy; eager")
for name in ("mlp", "dcgan32"):
    G, D, real, z, lf = case(name)
    opt = fastgame.ACGD(D.parameters(), G.parameters())
    loss = lf(G, D, real, z)
    gx, gy = opt._grads(loss)
    hvp = MixedHVP(opt.players, (gx, gy))
    vy = torch.randn(opt.players[1].numel, device=dev) * 1e-3
    vx = torch.randn(opt.players[0].numel, device=dev) * 1e-3
    vv = torch.stack([vy, 2 * vy])
    r = [tm(lambda: hvp(0, vy)), tm(lambda: hvp(1, vx)), tm(lambda: (hvp(0, vy), hvp(0, 2 * vy))),
         tm(lambda: hvp.batched(0, vv))]
    print(name, "eager  ", " ".join(f"{x:.3f}" for x in r))
    del gx, gy, hvp, loss

# ---- C. eager check_every ----
print("## C. eager ACGD ms/step by check_every (cuda backend), 15 steps after 5")
for name in ("mlp", "dcgan32"):
    G0, D0, real, z, lf = case(name)
    lr = 1e-3 if name == "mlp" else 1e-4
    gen = torch.Generator().manual_seed(5)
    for ce in (1, 2, 4):
        G, D = copy.deepcopy(G0), copy.deepcopy(D0)
        opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=lr, lr_min=lr, tol=1e-10, check_every=ce)
        ts = []
        for i in range(20):
            torch.cuda.synchronize(); t = time.perf_counter()
            opt.step(lf(G, D, real, z)); torch.cuda.synchronize()
            if i >= 5: ts.append((time.perf_counter() - t) * 1e3)
        print(name, "check_every", ce, f"{statistics.median(ts):.2f} ms", "k", opt.info["iter_num"])

# ---- D. eager profile (MLP) ----
from torch.profiler import profile, ProfilerActivity
G, D, real, z, lf = case("mlp")
opt = fastgame.ACGD(D.parameters(), G.parameters(), tol=1e-10)
for _ in range(3): opt.step(lf(G, D, real, z))
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(3): opt.step(lf(G, D, real, z))
    torch.cuda.synchronize()
print("## D. eager MLP profile, 3 steps")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


# ---- E. peak memory: batched warm-start pair vs two passes vs CGDs (DCGAN-32 b256) ----
print("## E. peak MB above the start of one warm-started eager ACGD step, DCGAN-32 b256 (cudnn.benchmark on)")
torch.manual_seed(0); gen = torch.Generator().manual_seed(1)
G0, D0 = WGANGPGenerator().to(dev), WGANGPDiscriminator().to(dev)
batches = [(image_data(256, 32, gen).to(dev), torch.randn(256, 128, generator=gen).to(dev)) for _ in range(4)]
batched = MixedHVP.batched
for kind in ("cgds", "fastgame batched pair", "fastgame two passes"):
    try:
        MixedHVP.batched = batched if kind != "fastgame two passes" else (
            lambda self, to, vecs: torch.stack([self(to, v) for v in vecs]))
        G, D = copy.deepcopy(G0), copy.deepcopy(D0)
        if kind == "cgds":
            import CGDs
            opt = CGDs.ACGD(max_params=D.parameters(), min_params=G.parameters(), lr_max=1e-4, lr_min=1e-4, tol=1e-10)
        else:
            opt = fastgame.ACGD(D.parameters(), G.parameters(), lr_max=1e-4, lr_min=1e-4, tol=1e-10)
        for real, z in batches[:3]:  # warm-up: cuDNN autotuning, warm starts
            opt.step(wgan_loss(G, D, real, z))
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
        opt.step(wgan_loss(G, D, *batches[3]))
        torch.cuda.synchronize()
        print(f"{kind:<24} {(torch.cuda.max_memory_allocated() - base) / 2**20:8.1f} MB")
        del opt, G, D
    except Exception:  # noqa: BLE001
        traceback.print_exc()
MixedHVP.batched = batched
