"""The fastgame benchmark suite: ACGD (or BCGD, ``--algo``) step time of fastgame (eager and CUDA-graphed, each fused-op
backend) vs CGDs 0.4.5 vs simultaneous Adam (eager and fused), on the same model, initial
parameters, batches and tolerance, in one process (DESIGN.md §7).

    python -m bench --suite quick                    # CPU, small sizes, < 2 minutes
    python -m bench --suite cpu  --out bench/results/
    python -m bench --suite gpu  --out bench/results/   # CUDA: eager + graphed rows, CUDA-event timing
    python -m bench --suite cpu --models mlp --optimizers cgds fastgame adam

Each row reports the median ms/step (warm-up steps excluded), CG iterations k and mixed-HVP
passes per step, the peak memory, the speed-up over CGDs and the cost relative to Adam. Each
model also gets its *floor* measured in the same run and mode: one forward + create_graph
backward (F) and one mixed HVP pass (H, the mean of D_xy and D_yx); a fastgame step doing
P = 2 + 2k passes has floor F + P·H, and ``step/floor`` says how close the step gets to it.

Timing: on CUDA, per-step CUDA events with no host sync between steps (the graphed step is run
with check_finite=False), torch.backends.cudnn.benchmark on, rows one after another; on the
CPU, time.perf_counter, and the rows' timed steps interleaved round-robin (step j of every row
before step j + 1 of any, the floor sampled in the same loop), so a shared machine's drifting
load hits every row alike (--no-interleave: one row after another). Every row starts from a
deep copy of one seeded model and steps through the same batches; CGDs and fastgame get the
same tol/atol. CGDs' CG iterations come from a second, untimed run with collect_info=True;
mixed-HVP passes are counted by wrapping torch.autograd.grad/backward (fastgame's also from
``opt.get_info()``, and the two are checked against each other). Graphed rows (CUDA, when
``fastgame.make_graphed_step`` exists) run CG for exactly max_iter = the most iterations the
eager fastgame step needed, so they compute the same numbers.
Mixed precision (the -bf16 rows, backend auto): the loss is computed under torch.autocast(bfloat16),
so the forward, the create_graph backward and every mixed HVP run in bf16 where autocast allows,
while gradients, step sizes and CG state stay fp32. Their accuracy: ``step_err_vs_fp32``, the
median (and max) over the timed steps of ‖Δθ_bf16 − Δθ_fp32‖/‖Δθ_fp32‖ for one step taken from
the same point of the fp32 trajectory (untimed run, :func:`mixed_step_errors`), and
``dtheta_vs_cgds`` after the whole run. The floor columns are fp32's and left empty for them.
Memory: CUDA torch.cuda.max_memory_allocated from the end of the warm-up (cuDNN autotuning
done) over the timed steps -- graphed rows from the first capture, so the graphs' memory pool
counts (``peak_mb`` absolute, ``extra_mb`` above what was allocated when the row started:
models, batches, earlier rows' leftovers);
CPU the process's peak-RSS growth during the row (VmHWM reset through /proc/self/clear_refs
after malloc_trim; approximate: the allocator may reuse memory freed by earlier rows), or
n/a where the kernel does not allow it.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import ctypes
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Callable, Optional

import torch
from torch import nn

import fastgame

from .models import (DCGAN64Discriminator, DCGAN64Generator, WGANGPDiscriminator, WGANGPGenerator, gan_loss,
                     image_data, mlp_gan, ring_data, wgan_loss)

OPTIMIZERS = ("cgds", "fastgame", "fastgame-graphed", "fastgame-bf16", "fastgame-graphed-bf16", "adam", "adam-fused")
MIXED_DTYPE = torch.bfloat16  # the -bf16 rows: forward and HVPs under autocast, CG state in fp32
COLUMNS = ["suite", "config", "model", "batch", "device", "optimizer", "algo", "backend", "mode", "status",
           "ms_median", "ms_mean", "ms_min", "ms_iqr", "steps", "cg_iters", "cg_iters_max", "hvp_passes",
           "grad_passes", "floor_ms", "step_over_floor", "fwd_bwd_ms", "hvp_ms", "peak_mb", "extra_mb",
           "mem_method", "speedup_vs_cgds", "cost_vs_adam", "dtheta_vs_cgds", "step_err_vs_fp32",
           "step_err_vs_fp32_max", "params_G", "params_D", "tol",
           "lr", "max_iter", "note"]


# ---- configurations -------------------------------------------------------------------------

@dataclasses.dataclass
class Config:
    """One benchmark case: a model, its size knobs, batch size, loss and learning rate."""
    model: str                      # "mlp", "dcgan32" or "dcgan64"
    batch: int
    width: int                      # mlp: hidden width; dcgan32: dim; dcgan64: ngf = ndf
    lr: float
    depth: int = 3                  # mlp hidden layers
    latent: int = 0                 # 0: the model's default

    @property
    def label(self) -> str:
        return f"{self.model}-b{self.batch}" + ("" if self.width == _FULL_WIDTH[self.model] else f"-w{self.width}")


_FULL_WIDTH = {"mlp": 128, "dcgan32": 64, "dcgan64": 64}

SUITES: dict[str, dict[str, Any]] = {
    # the issue's configurations (a), (b), (c) at full size, for one GPU
    "gpu": dict(device="cuda", warmup=10, steps=50, configs=[
        Config("mlp", 512, 128, 1e-3), Config("dcgan32", 64, 64, 1e-4), Config("dcgan32", 256, 64, 1e-4),
        Config("dcgan64", 64, 64, 1e-4)]),
    # the same models on the CPU; conv models at smaller batch and width
    "cpu": dict(device="cpu", warmup=3, steps=10, configs=[
        Config("mlp", 512, 128, 1e-3), Config("dcgan32", 16, 64, 1e-4), Config("dcgan64", 8, 32, 1e-4)]),
    # a couple of minutes on a 2-core CPU
    "quick": dict(device="cpu", warmup=2, steps=6, threads=1, configs=[
        Config("mlp", 256, 128, 1e-3), Config("dcgan32", 8, 32, 1e-4), Config("dcgan64", 4, 16, 1e-4)]),
    # seconds: the smoke test (tests/test_bench_suite.py)
    "tiny": dict(device="cpu", warmup=1, steps=3, threads=1, configs=[
        Config("mlp", 64, 32, 1e-3, depth=2), Config("dcgan32", 4, 8, 1e-4)]),
}


@dataclasses.dataclass
class Case:
    G: nn.Module
    D: nn.Module
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    loss_fn: Callable[[nn.Module, nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    loss_name: str


# image models: generator, discriminator, image size, default latent size, loss, its name
_IMAGE_MODELS = {
    "dcgan32": (WGANGPGenerator, WGANGPDiscriminator, 32, 128, wgan_loss, "WGAN (zero-sum, no penalty)"),
    "dcgan64": (DCGAN64Generator, DCGAN64Discriminator, 64, 100, gan_loss, "minimax GAN"),
}


def build_case(cfg: Config, device: torch.device, n_batches: int, seed: int = 0) -> Case:
    """Seeded models (each row deep-copies these) and a fixed list of batches on ``device``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    if cfg.model == "mlp":
        latent = cfg.latent or 2
        G, D = mlp_gan(cfg.width, cfg.depth, latent)
        batches = [(ring_data(cfg.batch, gen), torch.randn(cfg.batch, latent, generator=gen)) for _ in range(n_batches)]
        loss_fn, loss_name = gan_loss, "minimax GAN"
    elif cfg.model in _IMAGE_MODELS:
        make_g, make_d, size, default_latent, loss_fn, loss_name = _IMAGE_MODELS[cfg.model]
        latent = cfg.latent or default_latent
        G, D = make_g(cfg.width, latent), make_d(cfg.width)
        batches = [(image_data(cfg.batch, size, gen), torch.randn(cfg.batch, latent, generator=gen))
                   for _ in range(n_batches)]
    else:
        raise ValueError(f"unknown model {cfg.model!r}")
    G, D = G.to(device), D.to(device)
    batches = [(r.to(device), z.to(device)) for r, z in batches]
    return Case(G, D, batches, loss_fn, loss_name)


# ---- timing, counting, memory ---------------------------------------------------------------

class StepTimer:
    """Per-step times in ms: CUDA events (no host sync between steps) or perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.events: list = []
        self.cpu_ms: list[float] = []

    @contextlib.contextmanager
    def __call__(self):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events.append((start, end))
        else:
            t = time.perf_counter()
            yield
            self.cpu_ms.append((time.perf_counter() - t) * 1e3)

    def ms(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [s.elapsed_time(e) for s, e in self.events]
        return list(self.cpu_ms)


class PassCounter:
    """Counts autograd calls while active: create_graph ones (gradient passes) and the others
    (mixed-HVP passes for CGD methods, the plain backward for Adam). Patches the module
    attributes torch.autograd.grad/backward, which CGDs and fastgame both call through."""

    def __init__(self) -> None:
        self.create_graph = 0
        self.other = 0

    def _wrap(self, fn):
        def wrapped(*args, **kwargs):
            if kwargs.get("create_graph", False):
                self.create_graph += 1
            else:
                self.other += 1
            return fn(*args, **kwargs)
        return wrapped

    @contextlib.contextmanager
    def active(self):
        grad, backward = torch.autograd.grad, torch.autograd.backward
        torch.autograd.grad, torch.autograd.backward = self._wrap(grad), self._wrap(backward)
        try:
            yield self
        finally:
            torch.autograd.grad, torch.autograd.backward = grad, backward

    def take(self) -> tuple[int, int]:
        out = (self.create_graph, self.other)
        self.create_graph = self.other = 0
        return out


def _proc_status(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{key}:\s+(\d+)\s+kB", f.read(), re.M)
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


class PeakMemory:
    """Peak memory of one row: CUDA allocator statistics, or the CPU process's peak-RSS growth."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = "n/a"

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            self.method = "cuda max_memory_allocated"
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except (OSError, AttributeError):
                pass
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
                self.base = _proc_status("VmRSS")
                self.method = "rss growth (VmHWM)" if self.base is not None else "n/a"
            except OSError:
                self.base = None
        return self

    def reset(self) -> None:
        """Start the CUDA peak afresh (kept: the row's base), e.g. once warm-up steps have run
        cuDNN's autotuning, whose trial workspaces are not the optimizer's memory."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def __exit__(self, *exc) -> None:
        self.peak_mb = self.extra_mb = None
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            self.peak_mb, self.extra_mb = peak / 2**20, (peak - self.base) / 2**20
        elif self.base is not None:
            hwm = _proc_status("VmHWM")
            if hwm is not None:
                self.extra_mb = max(hwm - self.base, 0) / 2**20


def _median_block_ms(fn: Callable[[], Any], device: torch.device, reps: int, inner: int) -> float:
    """Median over ``reps`` blocks of the per-call time of ``inner`` back-to-back calls."""
    out = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(inner):
                fn()
            e.record()
            e.synchronize()
            out.append(s.elapsed_time(e) / inner)
        else:
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            out.append((time.perf_counter() - t) * 1e3 / inner)
    return statistics.median(out)


# ---- the floor: one forward + create_graph backward, one mixed HVP pass ----------------------

def _floor_program(G, D, case: Case, real, z, vecs, n_xy: int, n_yx: int):
    pD, pG = list(D.parameters()), list(G.parameters())
    loss = case.loss_fn(G, D, real, z)
    g = torch.autograd.grad(loss, pD + pG, create_graph=True, materialize_grads=True)
    gD, gG = g[:len(pD)], g[len(pD):]
    vD, vG = vecs
    liveD = [i for i, t in enumerate(gD) if t.requires_grad]
    liveG = [i for i, t in enumerate(gG) if t.requires_grad]
    out = []
    for _ in range(n_xy):  # D_xy v: differentiate g_y·v w.r.t. x (the max player, D)
        out.append(torch.autograd.grad([gG[i] for i in liveG], pD, [vG[i] for i in liveG], retain_graph=True,
                                       allow_unused=True, materialize_grads=True))
    for _ in range(n_yx):  # D_yx v: differentiate g_x·v w.r.t. y (G)
        out.append(torch.autograd.grad([gD[i] for i in liveD], pG, [vD[i] for i in liveD], retain_graph=True,
                                       allow_unused=True, materialize_grads=True))
    return loss, (gD, gG, liveD, liveG), out


def measure_floor(case: Case, device: torch.device, graphed: bool, reps: int = 7) -> dict[str, float]:
    """Time of one forward + create_graph backward (``fwd_bwd_ms``) and of one mixed HVP pass
    in each direction (``hvp_xy_ms``, ``hvp_yx_ms``; ``hvp_ms`` their mean), on a copy of the
    case's models, eager or captured as CUDA graphs (graph(F + m passes) - graph(F), over m)."""
    G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
    real, z = case.batches[0]
    gen = torch.Generator().manual_seed(7)
    vecs = ([1e-3 * torch.randn(p.shape, generator=gen).to(device) for p in D.parameters()],
            [1e-3 * torch.randn(p.shape, generator=gen).to(device) for p in G.parameters()])
    if not graphed:
        inner = 5 if device.type == "cuda" else 1
        fwd_bwd = _median_block_ms(lambda: _floor_program(G, D, case, real, z, vecs, 0, 0), device, reps, inner)
        _, (gD, gG, liveD, liveG), _ = _floor_program(G, D, case, real, z, vecs, 0, 0)
        pD, pG = list(D.parameters()), list(G.parameters())
        vD, vG = vecs
        xy = _median_block_ms(lambda: torch.autograd.grad(
            [gG[i] for i in liveG], pD, [vG[i] for i in liveG], retain_graph=True, allow_unused=True,
            materialize_grads=True), device, reps, inner)
        yx = _median_block_ms(lambda: torch.autograd.grad(
            [gD[i] for i in liveD], pG, [vD[i] for i in liveD], retain_graph=True, allow_unused=True,
            materialize_grads=True), device, reps, inner)
        del gD, gG
    else:
        m = 4
        times = {}
        for key, (nxy, nyx) in {"f": (0, 0), "xy": (m, 0), "yx": (0, m)}.items():
            fn = lambda: _floor_program(G, D, case, real, z, vecs, nxy, nyx)  # noqa: E731
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    fn()
            torch.cuda.current_stream().wait_stream(s)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                keep = fn()  # noqa: F841  (outputs live in the pool while the graph is replayed)
            times[key] = _median_block_ms(graph.replay, device, reps, 5)
            del graph, keep
        fwd_bwd = times["f"]
        xy, yx = (times["xy"] - times["f"]) / m, (times["yx"] - times["f"]) / m
    return {"fwd_bwd_ms": fwd_bwd, "hvp_xy_ms": xy, "hvp_yx_ms": yx, "hvp_ms": (xy + yx) / 2}


# ---- the rows -------------------------------------------------------------------------------

def _flat(*modules: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double().cpu() for m in modules for p in m.parameters()])


def _available_backends(device: torch.device) -> list[str]:
    serves = {"torch": ("cpu", "cuda"), "cpp": ("cpu",), "cuda": ("cuda",), "triton": ("cuda",)}
    out = []
    for name, state in fastgame.backends().items():
        if state.startswith("available") and device.type in serves.get(name, ()):
            if name == "triton" and "interpreter" in state:
                continue  # the Triton interpreter is for tests, not timing
            out.append(name)
    return out


def _row_base(suite: str, cfg: Config, case: Case, device: torch.device, tol: float) -> dict[str, Any]:
    return {"suite": suite, "config": cfg.label, "model": cfg.model, "batch": cfg.batch, "device": device.type,
            "params_G": sum(p.numel() for p in case.G.parameters()),
            "params_D": sum(p.numel() for p in case.D.parameters()), "tol": tol, "lr": cfg.lr}


def _summarise(row: dict[str, Any], ms: list[float]) -> None:
    row["steps"] = len(ms)
    row["ms_median"] = statistics.median(ms)
    row["ms_mean"] = statistics.fmean(ms)
    row["ms_min"] = min(ms)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    row["ms_iqr"] = q[2] - q[0]


class Runner:
    """One row: an optimizer on its own deep copy of the models, stepping through ``batches``
    (the first ``warmup`` untimed). ``step`` is what is timed; ``enter`` runs untimed before
    each step (e.g. selecting the fused-op backend); ``record`` runs after each timed step
    with the (create_graph, other) autograd call counts of that step; ``finish`` fills the row."""

    def __init__(self, row: dict[str, Any], G: nn.Module, D: nn.Module, batches, warmup: int,
                 count_calls: bool = True) -> None:
        self.row, self.G, self.D, self.batches, self.warmup = row, G, D, batches, warmup
        self.counter = PassCounter() if count_calls else None
        self.peak_from = warmup  # steps before the peak-memory window (see PeakMemory.reset)
        self.calls: list[tuple[int, int]] = []
        self.mem: Optional[PeakMemory] = None
        self.final_params: Optional[torch.Tensor] = None

    def enter(self) -> None:
        pass

    def step(self, real: torch.Tensor, z: torch.Tensor) -> None:
        raise NotImplementedError

    def record(self, calls: tuple[int, int]) -> None:
        self.calls.append(calls)

    def finish(self) -> None:
        pass

    def final(self) -> Optional[torch.Tensor]:
        return _flat(self.G, self.D)


class AdamRunner(Runner):
    """Simultaneous gradient descent-ascent with two Adam optimizers (D ascends: maximize=True)."""

    def __init__(self, case: Case, cfg: Config, warmup: int, fused: bool) -> None:
        G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
        super().__init__({"optimizer": "adam-fused" if fused else "adam", "algo": "Adam SimGDA",
                          "backend": "fused" if fused else "default", "mode": "eager"}, G, D, case.batches, warmup)
        kw = dict(lr=cfg.lr, betas=(0.5, 0.999), **({"fused": True} if fused else {}))
        self.opt_d = torch.optim.Adam(D.parameters(), maximize=True, **kw)  # raises where fused is unsupported
        self.opt_g = torch.optim.Adam(G.parameters(), **kw)
        self.loss_fn = case.loss_fn

    def step(self, real, z):
        loss = self.loss_fn(self.G, self.D, real, z)
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        self.opt_g.step()

    def finish(self):
        self.row.update(grad_passes=statistics.fmean(a + b for a, b in self.calls), hvp_passes=0)


class CGDsRunner(Runner):
    """CGDs 0.4.5 ACGD or BCGD with collect_info=False (its iterations: :func:`cgds_iterations`)."""

    def __init__(self, case: Case, cfg: Config, warmup: int, tol: float, atol: float, algo: str = "ACGD") -> None:
        import CGDs

        G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
        super().__init__({"optimizer": "cgds", "algo": f"CGDs 0.4.5 {algo}", "backend": "-", "mode": "eager"},
                         G, D, case.batches, warmup)
        self.opt = getattr(CGDs, algo)(max_params=D.parameters(), min_params=G.parameters(), lr_max=cfg.lr, lr_min=cfg.lr,
                             tol=tol, atol=atol, collect_info=False)
        self.loss_fn = case.loss_fn

    def step(self, real, z):
        self.opt.step(self.loss_fn(self.G, self.D, real, z))

    def finish(self):
        self.row.update(hvp_passes=statistics.fmean(c[1] for c in self.calls),
                        grad_passes=statistics.fmean(c[0] for c in self.calls))


def cgds_iterations(case: Case, cfg: Config, warmup: int, steps: int, tol: float, atol: float,
                    algo: str = "ACGD") -> tuple[list[int], bool]:
    """CG iterations of CGDs' ``algo`` per step, from an untimed run with collect_info=True on the
    same init and batches (steps ``warmup`` .. ``warmup + steps``), and whether its autograd calls
    matched 2 create_graph backwards + (5 + 2k) HVP passes on every step."""
    import CGDs

    G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
    opt = getattr(CGDs, algo)(max_params=D.parameters(), min_params=G.parameters(), lr_max=cfg.lr, lr_min=cfg.lr,
                              tol=tol, atol=atol, collect_info=True)
    counter = PassCounter()
    iters, ok = [], True
    with counter.active():
        for i, (real, z) in enumerate(case.batches[:warmup + steps]):
            opt.step(case.loss_fn(G, D, real, z))
            cg, other = counter.take()
            k = int(opt.get_info()["iter_num"])
            if i >= warmup:
                iters.append(k)
                ok &= (cg == 2 and other == 5 + 2 * k)
    return iters, ok


def autocast_loss(loss_fn: Callable, dtype: torch.dtype) -> Callable:
    """``loss_fn`` computed under ``torch.autocast(dtype)``: the forward, the create_graph
    backward and so every mixed HVP run in ``dtype`` where autocast allows; gradients, step
    sizes and the CG state stay in the parameters' dtype (README, "Mixed precision")."""
    def mixed(G: nn.Module, D: nn.Module, real: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(real.device.type, dtype=dtype):
            return loss_fn(G, D, real, z)
    return mixed


def mixed_step_errors(case: Case, cfg: Config, warmup: int, steps: int, tol: float, atol: float,
                      algo: str = "ACGD", dtype: torch.dtype = MIXED_DTYPE) -> list[float]:
    """Accuracy of mixed-precision steps: along the fp32 fastgame trajectory (same init and
    batches), each timed step is also taken under autocast from the same point (models,
    buffers and optimizer state copied), and ‖Δθ_mixed − Δθ_fp32‖ / ‖Δθ_fp32‖ recorded."""
    G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
    G2, D2 = copy.deepcopy(case.G), copy.deepcopy(case.D)
    kw = dict(lr_max=cfg.lr, lr_min=cfg.lr, tol=tol, atol=atol)
    ref = getattr(fastgame, algo)(max_params=D.parameters(), min_params=G.parameters(), **kw)
    mixed = getattr(fastgame, algo)(max_params=D2.parameters(), min_params=G2.parameters(), **kw)
    loss_mixed = autocast_loss(case.loss_fn, dtype)
    errors = []
    for i, (real, z) in enumerate(case.batches[:warmup + steps]):
        if i >= warmup:
            G2.load_state_dict(G.state_dict())
            D2.load_state_dict(D.state_dict())
            mixed.load_state_dict(ref.state_dict())
            mixed.step(loss_mixed(G2, D2, real, z))
        start = _flat(G, D)
        ref.step(case.loss_fn(G, D, real, z))
        if i >= warmup:
            d_ref = _flat(G, D) - start
            errors.append(float((_flat(G2, D2) - start - d_ref).norm() / d_ref.norm()) if d_ref.norm() > 0 else 0.0)
    return errors


class FastgameRunner(Runner):
    """fastgame.ACGD (or ``algo``) with fused-op backend ``backend``: eager ``opt.step(loss)``, or a
    ``fastgame.make_graphed_step`` step (capturable: CG runs exactly ``max_iter`` iterations)."""

    def __init__(self, case: Case, cfg: Config, warmup: int, tol: float, atol: float, backend: str,
                 graphed: bool, max_iter: Optional[int], algo: str = "ACGD", mixed: bool = False) -> None:
        G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
        name = ("fastgame-graphed" if graphed else "fastgame") + ("-bf16" if mixed else "")
        row = {"optimizer": name, "algo": f"fastgame {algo}", "backend": backend,
               "mode": "graphed" if graphed else "eager"}
        super().__init__(row, G, D, case.batches, max(warmup, 6) if graphed else warmup, count_calls=not graphed)
        self.backend, self.graphed = backend, graphed
        self.loss_fn = autocast_loss(case.loss_fn, MIXED_DTYPE) if mixed else case.loss_fn
        self.iters: list = []
        self.passes: list[int] = []
        kw = dict(lr_max=cfg.lr, lr_min=cfg.lr, tol=tol, atol=atol)
        if graphed:
            row["max_iter"] = max_iter
            self.opt = getattr(fastgame, algo)(max_params=D.parameters(), min_params=G.parameters(), capturable=True,
                                     max_iter=max_iter, **kw)
            real0, z0 = case.batches[0]
            # warm-up >= 6: make_graphed_step's 3 eager steps, then one capture per solve phase
            self.graphed_step = fastgame.make_graphed_step(
                self.opt, lambda r, zz: self.loss_fn(self.G, self.D, r, zz), torch.empty_like(real0),
                torch.empty_like(z0), check_finite=False)
            self.peak_from = self.graphed_step.warmup  # the captures allocate the graphs' pool: count them
        else:
            self.opt = getattr(fastgame, algo)(max_params=D.parameters(), min_params=G.parameters(), **kw)

    def enter(self):
        fastgame.set_backend(self.backend)

    def step(self, real, z):
        if self.graphed:
            self.graphed_step(real, z)
        else:
            self.opt.step(self.loss_fn(self.G, self.D, real, z))

    def record(self, calls):
        super().record(calls)
        info = self.opt.info
        it = info["iter_num"]
        self.iters.append(it.clone() if isinstance(it, torch.Tensor) else it)  # no host read while timing
        self.passes.append(info["hvp_passes"])

    def finish(self):
        fastgame.set_backend("auto")
        if self.graphed and not self.iters:
            raise RuntimeError("no timed steps")
        if self.graphed:
            self.opt.raise_if_nonfinite()
        iters = [int(t) for t in self.iters]
        self.row.update(cg_iters=statistics.fmean(iters), cg_iters_max=max(iters),
                        hvp_passes=statistics.fmean(self.passes), grad_passes=1)
        if self.graphed:
            self.row["note"] = (f"CG runs max_iter={self.row['max_iter']} masked iterations; "
                                "cg_iters = the effective ones")
        elif any(c != (1, p) for c, p in zip(self.calls, self.passes)):
            self.row["note"] = "autograd call count disagrees with get_info()['hvp_passes']"


class FloorRunner(Runner):
    """The eager floor as a row of the interleaved CPU loop: each step times one forward +
    create_graph backward and one mixed HVP pass each way on its own model copy (perf_counter)."""

    def __init__(self, case: Case, warmup: int) -> None:
        G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
        super().__init__({"optimizer": "floor"}, G, D, case.batches, warmup, count_calls=False)
        self.case = case
        gen = torch.Generator().manual_seed(7)
        dev = next(D.parameters()).device
        self.vecs = ([1e-3 * torch.randn(p.shape, generator=gen).to(dev) for p in D.parameters()],
                     [1e-3 * torch.randn(p.shape, generator=gen).to(dev) for p in G.parameters()])
        self.samples: dict[str, list[float]] = {"fwd_bwd_ms": [], "hvp_xy_ms": [], "hvp_yx_ms": []}

    def step(self, real, z):
        t0 = time.perf_counter()
        _, (gD, gG, liveD, liveG), _ = _floor_program(self.G, self.D, self.case, real, z, self.vecs, 0, 0)
        t1 = time.perf_counter()
        pD, pG = list(self.D.parameters()), list(self.G.parameters())
        vD, vG = self.vecs
        torch.autograd.grad([gG[i] for i in liveG], pD, [vG[i] for i in liveG], retain_graph=True,
                            allow_unused=True, materialize_grads=True)
        t2 = time.perf_counter()
        torch.autograd.grad([gD[i] for i in liveD], pG, [vD[i] for i in liveD], retain_graph=True,
                            allow_unused=True, materialize_grads=True)
        t3 = time.perf_counter()
        self._last = ((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)

    def record(self, calls):
        for key, v in zip(self.samples, self._last):
            self.samples[key].append(v)

    def floor(self) -> dict[str, float]:
        out = {k: statistics.median(v) for k, v in self.samples.items()}
        out["hvp_ms"] = (out["hvp_xy_ms"] + out["hvp_yx_ms"]) / 2
        return out


def drive(runners: list[Runner], device: torch.device, steps: int, interleave: bool) -> None:
    """Run the rows and fill their timing and memory columns.

    Sequential: each row runs its warm-up and timed steps in turn, its peak memory taken over
    both. Interleaved (for a shared, noisy CPU): each row runs its warm-up on its own (peak
    memory taken over the warm-up), then timed step j of every row runs before step j + 1 of
    any, so load from other processes hits all rows alike. A row that raises gets status
    "error" and the others go on."""
    timers = {id(r): StepTimer(device) for r in runners}
    failed: dict[int, str] = {}

    def guarded(rn: Runner, fn: Callable[[], None]) -> None:
        if id(rn) in failed:
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001  (a broken backend must not lose the other rows)
            failed[id(rn)] = f"{type(exc).__name__}: {exc}"[:300]

    def one(rn: Runner, real, z, timer: Optional[StepTimer]) -> None:
        rn.enter()
        ctx = rn.counter.active() if rn.counter else contextlib.nullcontext()
        with ctx:
            if timer is None:
                rn.step(real, z)
            else:
                with timer():
                    rn.step(real, z)
        calls = rn.counter.take() if rn.counter else (0, 0)
        if timer is not None:
            rn.record(calls)

    def warm(rn: Runner) -> None:
        for i, (real, z) in enumerate(rn.batches[:rn.warmup]):
            if i == rn.peak_from:
                rn.mem.reset()
            one(rn, real, z, None)
        if rn.peak_from >= rn.warmup:
            rn.mem.reset()

    def timed(rn: Runner, j: int) -> None:
        real, z = rn.batches[rn.warmup + j]
        one(rn, real, z, timers[id(rn)])

    def close(rn: Runner) -> None:
        """Fill the row, keep the final parameters, drop the models and optimizer state."""
        if id(rn) not in failed:
            guarded(rn, rn.finish)
        if id(rn) in failed:
            rn.row.update(status="error", note=failed[id(rn)])
        else:
            _summarise(rn.row, timers[id(rn)].ms())
            rn.row.update(status="ok", peak_mb=rn.mem.peak_mb, extra_mb=rn.mem.extra_mb,
                          mem_method=rn.mem.method + (" over the warm-up" if interleave else ""))
            rn.final_params = rn.final()
        for attr in ("opt", "opt_d", "opt_g", "graphed_step", "G", "D", "batches"):
            rn.__dict__.pop(attr, None)

    if interleave:
        for rn in runners:
            with PeakMemory(device) as rn.mem:
                guarded(rn, lambda: warm(rn))
        for j in range(steps):
            for rn in runners:
                guarded(rn, lambda: timed(rn, j))
        for rn in runners:
            close(rn)
    else:
        for rn in runners:
            with PeakMemory(device) as rn.mem:
                guarded(rn, lambda: warm(rn))
                for j in range(steps):
                    guarded(rn, lambda: timed(rn, j))
            close(rn)  # frees its memory before the next row is measured
    fastgame.set_backend("auto")


# ---- the suite ------------------------------------------------------------------------------

def environment(device: torch.device) -> dict[str, Any]:
    try:
        from importlib.metadata import version
        cgds_version = version("CGDs")
    except Exception:  # noqa: BLE001
        cgds_version = "not installed"
    meta = {"time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": device.type, "torch": torch.__version__, "cgds": cgds_version,
            "fastgame": getattr(fastgame, "__version__", "?"), "python": platform.python_version(),
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "fastgame_backends": fastgame.backends(),
            "graphed_api": hasattr(fastgame, "make_graphed_step")}
    try:
        import subprocess
        meta["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        meta["git"] = "?"
    if hasattr(os, "getloadavg"):
        meta["loadavg"] = os.getloadavg()
    if device.type == "cuda":
        meta.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), cudnn_benchmark=torch.backends.cudnn.benchmark,
                    cudnn_tf32=torch.backends.cudnn.allow_tf32, matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
        try:
            import triton
            meta["triton"] = triton.__version__
        except ImportError:
            meta["triton"] = "not installed"
    return meta


def _matches(cfg: Config, models: Optional[list[str]]) -> bool:
    return not models or any(m in (cfg.model, cfg.label) for m in models)


def run_suite(suite: str = "quick", out: Optional[str] = "bench/results", models: Optional[list[str]] = None,
              optimizers: Optional[list[str]] = None, steps: Optional[int] = None, warmup: Optional[int] = None,
              tol: float = 1e-10, atol: float = 1e-20, device: Optional[str] = None, threads: Optional[int] = None,
              graph_max_iter: Optional[int] = None, count_steps: Optional[int] = -1, floor: bool = True,
              tag: Optional[str] = None, verbose: bool = True, interleave: Optional[bool] = None,
              algo: str = "ACGD") -> dict[str, Any]:
    """Run a suite; write ``<out>/<suite>_<UTC time>.json`` and ``.csv`` (``out`` None: nothing)
    and return ``{"meta", "floors", "rows", "files"}``. ``interleave`` (default: on the CPU) runs
    the timed steps of all rows round-robin (see :func:`drive`)."""
    spec = SUITES[suite]
    dev = torch.device(device or spec["device"])
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("the gpu suite needs CUDA (torch.cuda.is_available() is False); try --suite cpu")
    threads = threads or spec.get("threads")
    if threads:  # quick/tiny: 1 thread, robust on a shared 2-core machine (2 OpenMP threads under load stall)
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    warmup = spec["warmup"] if warmup is None else warmup
    steps = spec["steps"] if steps is None else steps
    if interleave is None:  # a shared CPU's load drifts over minutes: let it hit every row alike
        interleave = dev.type == "cpu"
    if count_steps == -1:  # default: every timed step, so CGDs' k covers the steps fastgame's k does
        count_steps = None
    optimizers = list(optimizers or OPTIMIZERS)
    unknown = set(optimizers) - set(OPTIMIZERS)
    if unknown:
        raise ValueError(f"unknown optimizers {sorted(unknown)}; choose from {OPTIMIZERS}")
    log = print if verbose else (lambda *a, **k: None)
    meta = environment(dev)
    meta.update(suite=suite, algo=algo, steps=steps, warmup=warmup, tol=tol, atol=atol, tag=tag, interleaved=interleave,
                timing="CUDA events per step, no host sync between steps" if dev.type == "cuda"
                else "time.perf_counter per step", statistic="median over timed steps (warm-up excluded)")
    log(f"# fastgame bench --suite {suite} --algo {algo}: {dev.type} {meta.get('gpu', meta['cpu'])}, torch {meta['torch']}, "
        f"CGDs {meta['cgds']}, fastgame {meta['fastgame']}, {meta['threads']} threads, "
        f"{steps} timed steps after {warmup} warm-up, tol {tol:g}, {'interleaved' if interleave else 'sequential'} rows")
    rows: list[dict[str, Any]] = []
    floors: dict[str, dict[str, Any]] = {}
    t_suite = time.perf_counter()
    for cfg in spec["configs"]:
        if not _matches(cfg, models):
            continue
        n_batches = max(warmup, 6) + steps  # graphed rows warm up for at least 6 steps
        full = build_case(cfg, dev, n_batches)
        case = dataclasses.replace(full, batches=full.batches[:warmup + steps])  # eager rows: warmup + steps
        base = _row_base(suite, cfg, case, dev, tol)
        log(f"## {cfg.label}: G {base['params_G']:,} D {base['params_D']:,} params, {case.loss_name}, lr {cfg.lr:g}")
        cfg_rows: list[dict[str, Any]] = []
        finals: dict[str, torch.Tensor] = {}
        theta0 = _flat(case.G, case.D)

        def add(row: dict[str, Any]) -> None:
            row = {**base, **row}
            cfg_rows.append(row)
            if row.get("status") == "ok":
                log(f"   {row['optimizer']:<22}{row['backend']:<8}{row['ms_median']:9.2f} ms"
                    + (f"  k {row['cg_iters']:.2f}  passes {row['hvp_passes']:.1f}" if row.get("cg_iters") is not None
                       else ""))
            else:
                log(f"   {row['optimizer']:<22}{row['backend']:<8} {row['status']}: {row.get('note', '')}")

        mk: list[tuple[str, Callable[[], Runner]]] = []
        if "adam" in optimizers:
            mk.append(("adam", lambda: AdamRunner(case, cfg, warmup, fused=False)))
        if "adam-fused" in optimizers:
            mk.append(("adam-fused", lambda: AdamRunner(case, cfg, warmup, fused=True)))
        if "cgds" in optimizers:
            mk.append(("cgds", lambda: CGDsRunner(case, cfg, warmup, tol, atol, algo)))
        backends_here = _available_backends(dev)
        if "fastgame" in optimizers:
            for backend in backends_here:
                mk.append((f"fastgame/{backend}",
                           lambda b=backend: FastgameRunner(case, cfg, warmup, tol, atol, b, False, None, algo)))
        if "fastgame-bf16" in optimizers and backends_here:  # one row: the mixed part is autograd's, not the ops'
            mk.append(("fastgame-bf16/auto",
                       lambda: FastgameRunner(case, cfg, warmup, tol, atol, "auto", False, None, algo, mixed=True)))
        want_floor = floor and backends_here and ("fastgame" in optimizers or "fastgame-graphed" in optimizers)
        fl: dict[str, Any] = {}
        if want_floor and not interleave:  # measured right before the rows
            fl["eager"] = measure_floor(case, dev, graphed=False)
        runners: list[Runner] = []
        for key, make in mk:
            try:
                rn = make()
                rn.key = key
                runners.append(rn)
            except ImportError as exc:
                add({"optimizer": key, "backend": "-", "mode": "eager", "status": "skipped",
                     "note": f"not importable: {exc}"})
            except (RuntimeError, ValueError, TypeError) as exc:  # e.g. fused Adam unsupported here
                add({"optimizer": key.split("/")[0], "backend": key.split("/")[-1], "mode": "eager",
                     "status": "skipped", "note": f"{type(exc).__name__}: {exc}"[:300]})
        floor_runner = FloorRunner(case, warmup) if want_floor and interleave else None
        drive(runners + ([floor_runner] if floor_runner else []), dev, steps, interleave)
        if floor_runner is not None and floor_runner.row.get("status") == "ok":
            fl["eager"] = floor_runner.floor()
        for rn in runners:
            if rn.row.get("status") == "ok":
                finals[rn.key] = rn.final_params
            if rn.key == "cgds" and rn.row.get("status") == "ok":
                iters, formula_ok = cgds_iterations(case, cfg, warmup, steps if count_steps is None else
                                                    min(steps, count_steps), tol, atol, algo)
                rn.row.update(cg_iters=statistics.fmean(iters) if iters else None,
                              cg_iters_max=max(iters) if iters else None,
                              note=f"k from an untimed collect_info run ({len(iters)} steps)"
                                   + ("" if formula_ok else "; its passes != 5+2k"))
            if rn.key.startswith("fastgame-bf16") and rn.row.get("status") == "ok":
                errors = mixed_step_errors(case, cfg, warmup, steps, tol, atol, algo)
                rn.row.update(step_err_vs_fp32=statistics.median(errors), step_err_vs_fp32_max=max(errors))
            add(rn.row)
        del runners
        # graphed rows (CUDA): CG runs as many iterations as the eager fastgame step needed at most
        def eager_kmax(name: str) -> int:
            return max((r["cg_iters_max"] for r in cfg_rows if r["optimizer"] == name and r.get("status") == "ok"),
                       default=0)

        graphed_rows = [(f"fastgame-graphed/{b}", b, False) for b in backends_here if "fastgame-graphed" in optimizers]
        if "fastgame-graphed-bf16" in optimizers and backends_here:
            graphed_rows.append(("fastgame-graphed-bf16/auto", "auto", True))
        if graphed_rows:
            graph_rows: list[Runner] = []
            for key, backend, mixed in graphed_rows:
                name = key.split("/")[0]
                if not hasattr(fastgame, "make_graphed_step"):
                    add({"optimizer": name, "backend": backend, "mode": "graphed", "status": "skipped",
                         "note": "fastgame.make_graphed_step does not exist in this fastgame"})
                elif dev.type != "cuda":
                    add({"optimizer": name, "backend": backend, "mode": "graphed", "status": "skipped",
                         "note": "CUDA graphs need a CUDA device"})
                else:
                    k = graph_max_iter or eager_kmax("fastgame-bf16" if mixed else "fastgame") or eager_kmax(
                        "fastgame") or 8
                    try:
                        rn = FastgameRunner(full, cfg, warmup, tol, atol, backend, True, k, algo, mixed=mixed)
                        rn.key = key
                        graph_rows.append(rn)
                    except Exception as exc:  # noqa: BLE001
                        add({"optimizer": name, "backend": backend, "mode": "graphed",
                             "status": "error", "note": f"{type(exc).__name__}: {exc}"[:300]})
            if graph_rows:
                if want_floor:
                    try:
                        fl["graphed"] = measure_floor(case, dev, graphed=True)
                    except Exception as exc:  # noqa: BLE001
                        fl["graphed_error"] = f"{type(exc).__name__}: {exc}"[:300]
                drive(graph_rows, dev, steps, interleave)
                eager_bf16 = next((r for r in cfg_rows if r["optimizer"] == "fastgame-bf16"), {})
                for rn in graph_rows:
                    if rn.row.get("status") == "ok" and warmup >= 6:  # same number of steps as CGDs
                        finals[rn.key] = rn.final_params
                    if rn.key.startswith("fastgame-graphed-bf16"):  # the same steps, measured eagerly
                        rn.row.update({k: eager_bf16.get(k) for k in ("step_err_vs_fp32", "step_err_vs_fp32_max")})
                    add(rn.row)
                del graph_rows
        for mode in ("eager", "graphed"):
            if mode in fl:
                f = fl[mode]
                log(f"   floor ({mode}): forward + create_graph backward {f['fwd_bwd_ms']:.3f} ms, "
                    f"one HVP pass {f['hvp_ms']:.3f} ms (D_xy {f['hvp_xy_ms']:.3f}, D_yx {f['hvp_yx_ms']:.3f})")
        floors[cfg.label] = fl
        # ratios
        ref = {r["optimizer"]: r for r in cfg_rows if r.get("status") == "ok"}
        for r in cfg_rows:
            if r.get("status") != "ok":
                continue
            if "cgds" in ref:
                r["speedup_vs_cgds"] = ref["cgds"]["ms_median"] / r["ms_median"]
            if "adam" in ref:
                r["cost_vs_adam"] = r["ms_median"] / ref["adam"]["ms_median"]
            f = fl.get(r["mode"])
            if r["optimizer"] in ("fastgame", "fastgame-graphed") and f:  # the floor is fp32's
                r["fwd_bwd_ms"], r["hvp_ms"] = f["fwd_bwd_ms"], f["hvp_ms"]
                r["floor_ms"] = f["fwd_bwd_ms"] + r["hvp_passes"] * f["hvp_ms"]
                r["step_over_floor"] = r["ms_median"] / r["floor_ms"]
            key = r["optimizer"] + ("" if r["optimizer"] == "cgds" else f"/{r['backend']}")
            if r["algo"] != "Adam SimGDA" and "cgds" in finals and key in finals:
                moved = (finals["cgds"] - theta0).norm()
                r["dtheta_vs_cgds"] = float((finals[key] - finals["cgds"]).norm() / moved) if moved > 0 else 0.0
        rows.extend(cfg_rows)
        del case, full
        gc.collect()
    meta["suite_seconds"] = time.perf_counter() - t_suite
    result = {"meta": meta, "floors": floors, "rows": rows, "files": []}
    log("")
    log(format_table(rows, floors))
    if out:
        os.makedirs(out, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        stem = os.path.join(out, f"{suite}_{stamp}" + (f"_{tag}" if tag else ""))
        with open(stem + ".json", "w") as f:
            json.dump({"meta": meta, "floors": floors, "rows": rows}, f, indent=1, default=str)
        with open(stem + ".csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: _csv_value(r.get(k)) for k in COLUMNS})
        result["files"] = [stem + ".json", stem + ".csv"]
        log(f"wrote {stem}.json and {stem}.csv ({meta['suite_seconds']:.0f} s)")
    return result


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def _fmt(v: Any, spec: str, missing: str = "-") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    return format(v, spec)


def format_table(rows: list[dict[str, Any]], floors: dict[str, Any]) -> str:
    head = (f"{'config':<16}{'optimizer':<22}{'backend':<8}{'mode':<8}{'ms/step':>9}{'k':>6}{'passes':>7}"
            f"{'floor':>8}{'/floor':>7}{'mem MB':>9}{'vs CGDs':>8}{'vs Adam':>8}{'dθ/CGDs':>9}{'Δ/fp32':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r['config']:<16}{r['optimizer']:<22}{r['backend']:<8}{r['mode']:<8}"
                         f"  {r.get('status')}: {r.get('note', '')}")
            continue
        mem = r.get("extra_mb") if r.get("extra_mb") is not None else r.get("peak_mb")
        lines.append(
            f"{r['config']:<16}{r['optimizer']:<22}{r['backend']:<8}{r['mode']:<8}{r['ms_median']:>9.2f}"
            f"{_fmt(r.get('cg_iters'), '.2f'):>6}{_fmt(r.get('hvp_passes'), '.1f'):>7}"
            f"{_fmt(r.get('floor_ms'), '.2f'):>8}{_fmt(r.get('step_over_floor'), '.2f'):>7}"
            f"{_fmt(mem, '.1f', 'n/a'):>9}{_fmt(r.get('speedup_vs_cgds'), '.2f'):>8}"
            f"{_fmt(r.get('cost_vs_adam'), '.2f'):>8}{_fmt(r.get('dtheta_vs_cgds'), '.1e'):>9}"
            f"{_fmt(r.get('step_err_vs_fp32'), '.1e'):>9}")
    method = next((r.get("mem_method") for r in rows if r.get("mem_method")), "n/a")
    lines.append(f"k: mean CG iterations/step; passes: mixed-HVP passes/step; floor = F + passes·H (ms, same mode); "
                 f"mem MB: peak above the row's start (models, batches), {method}{' (growth during the row)' if method.startswith('rss') else ''}; "
                 f"vs CGDs: speed-up; vs Adam: cost; dθ/CGDs: ‖θ−θ_CGDs‖/‖θ_CGDs−θ0‖ after the run; "
                 f"Δ/fp32 (-bf16 rows): median ‖Δθ−Δθ_fp32‖/‖Δθ_fp32‖ of one step from the same point")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), default="quick")
    ap.add_argument("--out", default="bench/results", help="folder for the JSON/CSV ('' to write nothing)")
    ap.add_argument("--models", nargs="*", help="model names (mlp dcgan32 dcgan64) or config labels (dcgan32-b64)")
    ap.add_argument("--optimizers", nargs="*", choices=OPTIMIZERS)
    ap.add_argument("--steps", type=int, help="timed steps (default: the suite's)")
    ap.add_argument("--warmup", type=int, help="untimed warm-up steps (default: the suite's)")
    ap.add_argument("--algo", choices=("ACGD", "BCGD"), default="ACGD", help="the competitive optimizer compared")
    ap.add_argument("--tol", type=float, default=1e-10, help="CG tolerance, the same for CGDs and fastgame")
    ap.add_argument("--atol", type=float, default=1e-20)
    ap.add_argument("--device", help="override the suite's device (cpu, cuda, cuda:1)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads")
    ap.add_argument("--graph-max-iter", type=int,
                    help="CG iterations of the graphed step (default: the most the eager fastgame step needed)")
    ap.add_argument("--count-steps", type=int, default=-1,
                    help="timed steps covered by the untimed CGDs run that reads its iteration counts (default: all)")
    ap.add_argument("--no-floor", action="store_true", help="skip measuring the F + P·H floor")
    ap.add_argument("--tag", help="suffix for the output file names")
    ap.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                    help="time the rows' steps round-robin (default: on for CPU, off for CUDA)")
    args = ap.parse_args(argv)
    run_suite(args.suite, args.out or None, args.models, args.optimizers, args.steps, args.warmup, args.tol,
              args.atol, args.device, args.threads, args.graph_max_iter, args.count_steps, not args.no_floor, args.tag,
              interleave=args.interleave, algo=args.algo)
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):  # python bench/run.py
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from bench.run import main as _main
        sys.exit(_main())
    sys.exit(main())
