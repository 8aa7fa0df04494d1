"""Experiment: what BatchNorm costs the mixed-HVP passes, native vs written as plain torch ops.

On DCGAN-32 a D_xy pass (through the generator's BatchNorm double backward) costs 3.3× a
D_yx pass when graphed on an H100 (bench/results/gpu_*): autograd's double backward of
``native_batch_norm`` is a composite of about 120 ops per layer. Writing BatchNorm's training
forward as plain ops (mean, subtract, rsqrt, scale) gives autograd a double backward with
about half the ops, at the price of a longer forward and D_yx pass. Whether that pays is a
GPU question: this script measures, for each model, F (forward + create_graph backward) and
one pass each way (eager; also graphed on CUDA, as bench/run.py's floor), the ops autograd
runs per pass (torch.profiler, leaf aten ops that do arithmetic), and each one's HVP error
against float64. It changes nothing in fastgame; if plain BatchNorm wins on the GPU it
belongs in the library as an opt-in module conversion.

    python bench/batchnorm_hvp.py                       # CUDA if available, else CPU (small sizes)
    python bench/batchnorm_hvp.py --device cpu --models dcgan32-b8-w32
"""
from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import os
import sys

import torch
from torch import nn

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastgame  # noqa: E402
from bench.cases import Config, build_case  # noqa: E402
from bench.measure import measure_floor  # noqa: E402
from fastgame.hvp import MixedHVP  # noqa: E402

# layout ops that launch no kernel (views, allocations)
_NO_KERNEL = {"aten::as_strided", "aten::view", "aten::empty", "aten::empty_strided", "aten::resize_",
              "aten::as_strided_", "aten::resolve_conj", "aten::t", "aten::transpose", "aten::expand",
              "aten::unsqueeze", "aten::reshape", "aten::_unsafe_view", "aten::squeeze", "aten::permute",
              "aten::alias", "aten::detach", "aten::_reshape_alias", "aten::lift_fresh"}


class PlainBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training forward is plain torch ops (so autograd derives a short
    double backward); eval mode and the running statistics behave as nn.BatchNorm*d."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training or self.running_mean is None):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dims, keepdim=True)
        xc = x - mean
        var = (xc * xc).mean(dims, keepdim=True)
        if self.track_running_stats and self.training:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = x.numel() / x.shape[1]
                self.running_mean.lerp_(mean.reshape(-1), m)
                self.running_var.lerp_(var.reshape(-1) * (n / max(n - 1, 1)), m)
        y = xc * torch.rsqrt(var + self.eps)
        return y * self.weight.reshape(shape) + self.bias.reshape(shape) if self.affine else y


def to_plain_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every nn.BatchNorm{1,2,3}d in ``module`` (in place) by a PlainBatchNorm with
    the same parameters and buffers."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, PlainBatchNorm):
            plain = PlainBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            like = next((t for t in list(child.parameters()) + list(child.buffers()) if t.is_floating_point()), None)
            if like is not None:
                plain.to(like.device, like.dtype)
            plain.load_state_dict(child.state_dict())
            plain.train(child.training)
            setattr(module, name, plain)
        else:
            to_plain_batchnorm(child)
    return module


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
    ap.add_argument("--models", nargs="*", help="config labels (default: the issue's on CUDA, small on the CPU)")
    ap.add_argument("--passes", type=float, default=12.0, help="HVP passes per step for the floor column (2 + 2k)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        configs = [Config("dcgan32", 64, 64, 1e-4), Config("dcgan32", 256, 64, 1e-4), Config("dcgan64", 64, 64, 1e-4)]
    else:
        torch.set_num_threads(1)
        configs = [Config("dcgan32", 8, 32, 1e-4), Config("dcgan32", 64, 64, 1e-4), Config("dcgan64", 4, 16, 1e-4)]
    if args.models:
        configs = [c for c in configs if c.label in args.models] or [
            Config(m.split("-")[0], int(m.split("-b")[1].split("-")[0]), int(m.split("-w")[1]) if "-w" in m else 64,
                   1e-4) for m in args.models]
    print(f"# BatchNorm in mixed-HVP passes: native vs plain ops, {dev} "
          f"({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}), torch {torch.__version__}")
    print(f"{'config':<16}{'BatchNorm':<10}{'mode':<9}{'F ms':>8}{'D_xy ms':>9}{'D_yx ms':>9}"
          f"{'floor ms':>10}{'ops D_xy':>9}{'ops D_yx':>9}{'err vs fp64':>14}")
    for cfg in configs:
        base = build_case(cfg, dev, 1)
        cases = {"native": base,
                 "plain": dataclasses.replace(base, G=to_plain_batchnorm(copy.deepcopy(base.G)),
                                              D=to_plain_batchnorm(copy.deepcopy(base.D)))}
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
