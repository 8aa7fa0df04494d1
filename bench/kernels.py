"""Kernel benchmark of the fused ops: time, GB/s, % of the copy roof, and speed-up over the
unfused torch sequence (fastgame.ops.reference) they replace, per op and backend.

    python bench/kernels.py                      # CPU: C++ vs torch at 2^20, 2 threads
    python bench/kernels.py --sizes 20 24        # GPU: CUDA, Triton vs torch at 2^20 and 2^24
    python bench/kernels.py --sizes 20 --graphs  # also each op replayed from a CUDA graph
    python bench/kernels.py --csv bench/results/kernels.csv
    python bench/kernels.py --smoke              # CI: every backend at 2^10, 3 reps, on the CPU

Bytes are those an op must move (each operand read once, each output written once); the roof
is the measured device-to-device copy bandwidth (bytes read + written) on the same device.
Times are medians: CUDA events around each call (L2 flushed by triton.testing.do_bench when
Triton is installed) on a GPU, perf_counter on the CPU.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastgame  # noqa: E402
from fastgame.linalg.captured import on_side_stream  # noqa: E402

# Elements each op reads + writes, per element of the vectors (u, q the same size as w here).
MOVED = {
    "precondition": 6,   # read g, v; write v', eta, sqrt(eta), eta g
    "cg_matvec": 4,      # read p, sqrt(eta), t; write A p (+ a scalar)
    "cg_step_": 9,       # read w, u, r, p, q, A p; write w, u, r (+ a scalar)
    "cg_direction_": 5,  # read p, r, sqrt(eta); write p, sqrt(eta) p
}
TARGETS = {"roof_pct_at_2^24": 80.0, "gpu_speedup_at_2^20": 3.0, "cpu_speedup_at_2^20": 1.0}


def make_inputs(n: int, dtype: torch.dtype, device: torch.device) -> dict:
    """Fresh operands for every op; scalars chosen so repeated in-place calls stay finite."""
    gen = torch.Generator().manual_seed(0)
    v = {k: torch.randn(n, generator=gen, dtype=dtype).to(device) for k in "g w u r p q t ap".split()}
    v["sq"] = torch.rand(n, generator=gen, dtype=dtype).to(device)
    v["s"] = v["sq"].sqrt()
    s = lambda x, dt=dtype: torch.tensor(x, dtype=dt, device=device)  # noqa: E731
    v.update(lr=s(1e-3, torch.float64), step=s(5.0, torch.float64), rr=s(1e-6), pap=s(1.0), one=s(1.0))
    return v


def op_calls(impl, v: dict) -> dict:
    return {
        "precondition": lambda: impl.precondition(v["g"], v["sq"], v["lr"], v["step"], 0.99, 1e-5),
        "cg_matvec": lambda: impl.cg_matvec(v["p"], v["s"], v["t"]),
        "cg_step_": lambda: impl.cg_step_(v["w"], v["u"], v["r"], v["p"], v["q"], v["ap"], v["rr"], v["pap"]),
        "cg_direction_": lambda: impl.cg_direction_(v["p"], v["r"], v["rr"], v["one"], v["s"]),
    }


def timer(device: torch.device, reps: int):
    """fn -> median seconds per call."""
    if device.type == "cuda":
        try:
            from triton.testing import do_bench

            return lambda fn: do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e-3
        except ImportError:
            pass

        def cuda_time(fn):
            for _ in range(5):
                fn()
            times = []
            for _ in range(reps):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) * 1e-3)
            return statistics.median(times)
        return cuda_time

    def cpu_time(fn):
        for _ in range(3):
            fn()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    return cpu_time


def graphed(fn, device: torch.device, calls: int = 20):
    """``fn`` repeated ``calls`` times, captured once as a CUDA graph: a callable that replays
    it. Times the GPU work alone, as inside fastgame's graphed step (no Python, no launches)."""
    with on_side_stream(device):  # fastgame's one side stream (a new one per op would add a cuBLAS workspace each)
        for _ in range(3):
            fn()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return graph.replay, calls


def copy_bandwidth(n: int, dtype: torch.dtype, device: torch.device, measure) -> float:
    """Device-to-device copy: bytes read + written per second."""
    src = torch.randn(n, dtype=dtype, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * src.element_size() / measure(lambda: dst.copy_(src))


def run(device: torch.device, sizes: list[int], dtypes: list[torch.dtype], backends: list[str], reps: int,
        with_graphs: bool = False, roof_log_n: int = 24):
    measure = timer(device, reps)
    with_graphs = with_graphs and device.type == "cuda"
    rows = []
    for dtype in dtypes:
        roof = copy_bandwidth(1 << max(max(sizes), roof_log_n), dtype, device, measure)
        for log_n in sizes:
            n = 1 << log_n
            base, base_graph = {}, {}
            for backend in ["torch"] + backends:
                impl = fastgame.backends()[backend].ops
                for op, call in op_calls(impl, make_inputs(n, dtype, device)).items():
                    sec = measure(call)
                    if backend == "torch":
                        base[op] = sec
                    gbs = MOVED[op] * n * torch.empty((), dtype=dtype).element_size() / sec / 1e9
                    row = dict(op=op, backend=backend, n=f"2^{log_n}", dtype=str(dtype)[6:],
                               us=sec * 1e6, gbs=gbs, roof_pct=100 * gbs * 1e9 / roof,
                               speedup=base[op] / sec, roof_gbs=roof / 1e9)
                    if with_graphs:
                        replay, calls = graphed(call, device)
                        gsec = measure(replay) / calls
                        if backend == "torch":
                            base_graph[op] = gsec
                        row.update(graph_us=gsec * 1e6, graph_speedup=base_graph[op] / gsec)
                    rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    graphs = "graph_us" in rows[0]
    head = f"{'op':<14} {'backend':<8} {'n':>5} {'dtype':<8} {'time us':>10} {'GB/s':>9} {'% roof':>7} {'vs torch':>9}"
    head += f" {'graphed us':>11} {'vs torch':>9}" if graphs else ""
    print(head)
    print("-" * len(head))
    for r in rows:
        line = (f"{r['op']:<14} {r['backend']:<8} {r['n']:>5} {r['dtype']:<8} {r['us']:>10.1f} {r['gbs']:>9.1f} "
                f"{r['roof_pct']:>6.1f}% {r['speedup']:>8.2f}x")
        if graphs:
            line += f" {r['graph_us']:>11.1f} {r['graph_speedup']:>8.2f}x"
        print(line)
    if graphs:
        print("graphed: per call, 20 calls captured in one CUDA graph and replayed (GPU work only, "
              "as inside a graphed step); vs torch: the torch sequence graphed the same way")


def check_targets(rows: list[dict], device: torch.device) -> list[str]:
    """PASS/FAIL of the targets (TARGETS) for the float32 fused rows this run has: on a GPU at least
    80% of the copy roof at 2^24 elements and at least 3x the unfused torch sequence at 2^20; on
    the CPU faster than the torch sequence (more than 1x) at 2^20."""
    lines = []
    for r in rows:
        if r["backend"] == "torch" or r["dtype"] != "float32":
            continue
        if device.type == "cuda" and r["n"] == "2^24":
            ok = r["roof_pct"] >= TARGETS["roof_pct_at_2^24"]
            lines.append(f"{'PASS' if ok else 'FAIL'} {r['op']} {r['backend']} 2^24: {r['roof_pct']:.1f}% of roof (>= 80%)")
        if r["n"] == "2^20":
            need = TARGETS["gpu_speedup_at_2^20" if device.type == "cuda" else "cpu_speedup_at_2^20"]
            ok = r["speedup"] >= need if device.type == "cuda" else r["speedup"] > need
            lines.append(f"{'PASS' if ok else 'FAIL'} {r['op']} {r['backend']} 2^20: {r['speedup']:.2f}x vs torch "
                         f"({'>=' if device.type == 'cuda' else '>'} {need:g}x)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", help="log2 sizes (default: 20 on CPU, 20 24 on GPU)")
    ap.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "float64"])
    ap.add_argument("--backends", nargs="+", help="default: every available kernel backend for the device")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--graphs", action="store_true", help="also time each op replayed from a CUDA graph")
    ap.add_argument("--csv", help="write the rows to this CSV file")
    ap.add_argument("--json", help="write rows, environment and target checks to this JSON file")
    ap.add_argument("--smoke", action="store_true",
                    help="CI check of this script: CPU, 2^10 elements, 3 reps, both dtypes, no target checks")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.sizes, args.reps, args.threads, args.dtypes = "cpu", [10], 3, 1, ["float32", "float64"]

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    sizes = args.sizes or ([20, 24] if device.type == "cuda" else [20])
    backends = args.backends or [b.name for b in fastgame.backends().values()  # interpreter: no timing
                                 if b.name != "torch" and b.auto and b.serves(device) is None]
    env = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
               or platform.machine(), torch=torch.__version__, fastgame=fastgame.__version__,
               threads=torch.get_num_threads(), python=platform.python_version(),
               backends={name: str(b) for name, b in fastgame.backends().items()})
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        pass
    print("# fastgame kernel benchmark:", json.dumps(env))
    rows = run(device, sizes, [getattr(torch, d) for d in args.dtypes], backends, args.reps, args.graphs,
               roof_log_n=10 if args.smoke else 24)
    print(f"# roof: device-to-device copy {rows[0]['roof_gbs']:.1f} GB/s (read + written)")
    print_table(rows)
    checks = [] if args.smoke else check_targets(rows, device)
    print("\n".join(["", "# targets"] + checks))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) + ["device"])
            writer.writeheader()
            writer.writerows(dict(r, device=env["device"]) for r in rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(env=env, rows=rows, targets=checks), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
