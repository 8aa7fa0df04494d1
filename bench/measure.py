"""How the suite measures: per-step timers, autograd pass counters, peak memory, and the
floor (one forward + create_graph backward, one mixed HVP pass each way)."""
from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import re
import statistics
import time
from typing import Any, Callable, Optional

import torch

from fastgame.linalg.hvp import mixed_hvp

from .cases import Case


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
    out = []
    for _ in range(n_xy):  # D_xy v: differentiate g_y·v w.r.t. x (the max player, D)
        out.append(mixed_hvp(gG, pD, vG))
    for _ in range(n_yx):  # D_yx v: differentiate g_x·v w.r.t. y (G)
        out.append(mixed_hvp(gD, pG, vD))
    return loss, (gD, gG), out


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
        _, (gD, gG), _ = _floor_program(G, D, case, real, z, vecs, 0, 0)
        pD, pG = list(D.parameters()), list(G.parameters())
        vD, vG = vecs
        xy = _median_block_ms(lambda: mixed_hvp(gG, pD, vG), device, reps, inner)
        yx = _median_block_ms(lambda: mixed_hvp(gD, pG, vD), device, reps, inner)
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


def gpu_script_parser(doc: Optional[str], steps: int, warmup: int, tol_help: str) -> Any:
    """The arguments every GPU timing script shares (steps, warmup, tol, device, json, --smoke)."""
    import argparse
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--tol", type=float, default=1e-10, help=tol_help)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test of the script on small models")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true", help="CI check: --device cpu --steps 2 --warmup 1")
    return ap


def script_device(args: Any, script: str) -> Optional[torch.device]:
    """The device a GPU timing script measures on (``--smoke``: the CPU, 2 steps after 1), or
    None, after saying so, when CUDA is asked for and there is none."""
    if args.smoke:
        args.device, args.steps, args.warmup = "cpu", 2, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"{script}: needs a CUDA GPU (or --device cpu / --smoke); nothing measured")
        return None
    return device
