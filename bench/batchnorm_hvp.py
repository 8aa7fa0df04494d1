"""What BatchNorm costs the mixed-HVP passes: native vs fastgame.nn.BatchNorm.

On DCGAN-32 a D_xy pass (through the generator's BatchNorm double backward) costs 3.3× a
D_yx pass when graphed on an H100 (bench/results/gpu_*): autograd's double backward of
``native_batch_norm`` is a composite of many small ops (this script's CPU count, in
bench/results/batchnorm_hvp_cpu.txt: 327 arithmetic ops per D_xy pass through DCGAN-32's
three BatchNorm layers, 82 with fastgame.nn.BatchNorm, 36 per D_yx pass). fastgame.nn.BatchNorm keeps
the native forward and plain backward but gives a create_graph backward a short differentiable
formula, so the double backward autograd derives is a fraction of that. Whether it pays is a
GPU question: this script measures, for each model, F (forward + create_graph backward) and
one pass each way (eager; also graphed on CUDA, as bench/run.py's floor), the ops autograd
runs per pass (torch.profiler, leaf aten ops that do arithmetic), and each one's HVP error
against float64.

    python bench/batchnorm_hvp.py                       # CUDA if available, else CPU (small sizes)
    python bench/batchnorm_hvp.py --device cpu --models dcgan32-b8-w32
    python bench/batchnorm_hvp.py --smoke               # CI: the CPU path on the tiny DCGAN-32
"""
from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import os
import sys

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastgame  # noqa: E402
from fastgame.nn import convert_batchnorm  # noqa: E402
from bench.cases import SUITES, Config, build_case  # noqa: E402
from bench.measure import measure_floor  # noqa: E402
from fastgame.linalg.hvp import MixedHVP  # noqa: E402

# layout ops that launch no kernel (views, allocations)
_NO_KERNEL = {"aten::as_strided", "aten::view", "aten::empty", "aten::empty_strided", "aten::resize_",
              "aten::as_strided_", "aten::resolve_conj", "aten::t", "aten::transpose", "aten::expand",
              "aten::unsqueeze", "aten::reshape", "aten::_unsafe_view", "aten::squeeze", "aten::permute",
              "aten::alias", "aten::detach", "aten::_reshape_alias", "aten::lift_fresh"}


def ops_per_pass(case, device: torch.device) -> tuple[dict[int, int], list[torch.Tensor]]:
    """Arithmetic aten ops autograd runs in one D_xy (0) and one D_yx (1) pass, and the products."""
    from torch.profiler import ProfilerActivity, profile

    G, D = case.G, case.D
    opt = fastgame.ACGD(D.parameters(), G.parameters())
    real, z = case.batches[0]
    gx, gy = opt._grads(case.loss_fn(G, D, real, z))
    hvp = MixedHVP(opt.players, (gx, gy))
    gen = torch.Generator().manual_seed(3)
    counts, products = {}, []
    for to in (0, 1):
        v = (1e-3 * torch.randn(opt.players[1 - to].numel, generator=gen, dtype=torch.float64)).to(
            device, opt.players[1 - to].dtype)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            products.append(hvp(to, v))
        counts[to] = sum(1 for e in prof.events() if e.name.startswith("aten::") and e.name not in _NO_KERNEL
                         and not any(c.name.startswith("aten::") for c in e.cpu_children))
    return counts, products


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", nargs="*", help="config labels (default on CUDA: dcgan32-b64, dcgan32-b256, "
                    "dcgan64-b64; on the CPU: dcgan32-b8-w32, dcgan32-b64, dcgan64-b4-w16)")
    ap.add_argument("--passes", type=float, default=12.0, help="HVP passes per step for the floor column (2 + 2k)")
    ap.add_argument("--smoke", action="store_true", help="CI check: CPU, the tiny suite's DCGAN-32 (batch 4, width 8)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.models = "cpu", ["dcgan32-b4-w8"]
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        configs = [Config("dcgan32", 64, 64, 1e-4), Config("dcgan32", 256, 64, 1e-4), Config("dcgan64", 64, 64, 1e-4)]
    else:
        torch.set_num_threads(1)
        configs = [Config("dcgan32", 8, 32, 1e-4), Config("dcgan32", 64, 64, 1e-4), Config("dcgan64", 4, 16, 1e-4)]
    if args.models:  # labels of these defaults or of any suite's configurations
        known = {c.label: c for c in configs + [c for spec in SUITES.values() for c in spec["configs"]]}
        unknown = [m for m in args.models if m not in known]
        if unknown:
            raise SystemExit(f"unknown config labels {unknown}; known: {sorted(known)}")
        configs = [known[m] for m in args.models]
    print(f"# BatchNorm in mixed-HVP passes: native vs fastgame.nn, {dev} "
          f"({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}), torch {torch.__version__}")
    print(f"{'config':<16}{'BatchNorm':<10}{'mode':<9}{'F ms':>8}{'D_xy ms':>9}{'D_yx ms':>9}"
          f"{'floor ms':>10}{'ops D_xy':>9}{'ops D_yx':>9}{'err vs fp64':>14}")
    for cfg in configs:
        base = build_case(cfg, dev, 1)
        cases = {"native": base,
                 "fastgame": dataclasses.replace(base, G=convert_batchnorm(copy.deepcopy(base.G)),
                                              D=convert_batchnorm(copy.deepcopy(base.D)))}
        products: dict[str, list[torch.Tensor]] = {}
        rows = collections.defaultdict(dict)
        for kind, case in cases.items():
            counts, products[kind] = ops_per_pass(dataclasses.replace(
                case, G=copy.deepcopy(case.G), D=copy.deepcopy(case.D)), dev)
            for mode in ("eager", "graphed") if dev.type == "cuda" else ("eager",):
                rows[kind][mode] = (measure_floor(case, dev, graphed=mode == "graphed"), counts)
        _, exact = ops_per_pass(dataclasses.replace(  # float64 products: the reference for both
            base, G=copy.deepcopy(base.G).double(), D=copy.deepcopy(base.D).double(),
            batches=[tuple(t.double() for t in b) for b in base.batches]), dev)
        error = {kind: max(float((p.double() - e).norm() / e.norm()) for p, e in zip(ps, exact))
                 for kind, ps in products.items()}
        for kind, by_mode in rows.items():
            for mode, (f, counts) in by_mode.items():
                floor = f["fwd_bwd_ms"] + args.passes * f["hvp_ms"]
                print(f"{cfg.label:<16}{kind:<10}{mode:<9}{f['fwd_bwd_ms']:8.3f}{f['hvp_xy_ms']:9.3f}"
                      f"{f['hvp_yx_ms']:9.3f}{floor:10.2f}{counts[0]:9d}{counts[1]:9d}{error[kind]:14.1e}")
    print(f"floor = F + {args.passes:g}·(D_xy + D_yx)/2 (passes of a step with k = {(args.passes - 2) / 2:g}); "
          "ops: leaf aten ops that do arithmetic, per pass; err vs fp64: max relative error of the two "
          "products against float64 ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
