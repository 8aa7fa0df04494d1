"""The suite's rows: one optimizer each (Adam, CGDs 0.4.5, fastgame eager/graphed/bf16, the
eager floor), stepping through the same batches from the same initial models, and
:func:`drive`, which runs them and fills their timing and memory columns."""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from typing import Any, Callable, Optional

import torch
from torch import nn

import fastgame
from fastgame.linalg.hvp import mixed_hvp

from .cases import Case, Config
from .measure import PassCounter, PeakMemory, StepTimer, _floor_program

MIXED_DTYPE = torch.bfloat16  # the -bf16 rows: forward and HVPs under autocast, CG state in fp32


def _flat(*modules: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double().cpu() for m in modules for p in m.parameters()])


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
        super().__init__({"optimizer": "cgds", "algo": f"CGDs 0.4.5 {algo}", "backend": "-", "mode": "eager",
                          "cg_start": "warm", "tol": tol}, G, D, case.batches, warmup)
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
                 graphed: bool, max_iter: Optional[int], algo: str = "ACGD", mixed: bool = False,
                 cg_start: Optional[str] = None) -> None:
        G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
        name = ("fastgame-graphed" if graphed else "fastgame") + ("-bf16" if mixed else "")
        row = {"optimizer": name, "algo": f"fastgame {algo}" + (" (bf16 autocast)" if mixed else ""),
               "backend": backend, "mode": "graphed" if graphed else "eager", "tol": tol}
        super().__init__(row, G, D, case.batches, max(warmup, 6) if graphed else warmup, count_calls=not graphed)
        self.backend, self.graphed = backend, graphed
        self.loss_fn = autocast_loss(case.loss_fn, MIXED_DTYPE) if mixed else case.loss_fn
        self.iters: list = []
        self.passes: list[int] = []
        # collect_info off, as in the CGDs rows (BCGD defaults to on in both packages: its norms cost
        # fastgame one more mixed pass a step)
        kw = dict(lr_max=cfg.lr, lr_min=cfg.lr, tol=tol, atol=atol, collect_info=False,
                  **({"cg_start": cg_start} if cg_start else {}))
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
        row["cg_start"] = self.opt.param_groups[0]["cg_start"]

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
    create_graph backward (F) and then ``pairs`` mixed HVP passes each way, alternating as in
    CG (perf_counter), on its own model copy.

    A row's floor is the median over steps of F_j + P·H_j, H_j the mean pass time of step j, so
    that it is a median of per-step sums like the rows' own times: on a shared CPU some passes
    run at a fraction of full speed, and F + P·median(H) (a sum of medians) would leave those
    out of the floor while every row's step pays for its share of them."""

    def __init__(self, case: Case, warmup: int, pairs: int = 6) -> None:
        G, D = copy.deepcopy(case.G), copy.deepcopy(case.D)
        super().__init__({"optimizer": "floor"}, G, D, case.batches, warmup, count_calls=False)
        self.case, self.pairs = case, pairs
        gen = torch.Generator().manual_seed(7)
        dev = next(D.parameters()).device
        self.vecs = ([1e-3 * torch.randn(p.shape, generator=gen).to(dev) for p in D.parameters()],
                     [1e-3 * torch.randn(p.shape, generator=gen).to(dev) for p in G.parameters()])
        self.samples: dict[str, list[float]] = {"fwd_bwd_ms": [], "hvp_xy_ms": [], "hvp_yx_ms": []}

    def step(self, real, z):
        t0 = time.perf_counter()
        _, (gD, gG), _ = _floor_program(self.G, self.D, self.case, real, z, self.vecs, 0, 0)
        f = (time.perf_counter() - t0) * 1e3
        pD, pG = list(self.D.parameters()), list(self.G.parameters())
        vD, vG = self.vecs
        xy = yx = 0.0
        for _ in range(self.pairs):
            t1 = time.perf_counter()
            mixed_hvp(gG, pD, vG)  # D_xy v
            t2 = time.perf_counter()
            mixed_hvp(gD, pG, vD)  # D_yx v
            t3 = time.perf_counter()
            xy, yx = xy + (t2 - t1) * 1e3, yx + (t3 - t2) * 1e3
        self._last = (f, xy / self.pairs, yx / self.pairs)

    def record(self, calls):
        for key, v in zip(self.samples, self._last):
            self.samples[key].append(v)

    def floor(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: statistics.median(v) for k, v in self.samples.items()}
        out["hvp_ms"] = statistics.median((a + b) / 2 for a, b in zip(self.samples["hvp_xy_ms"],
                                                                        self.samples["hvp_yx_ms"]))
        out["per_step"] = [(f, (a + b) / 2) for f, a, b in zip(*self.samples.values())]
        return out


def floor_ms(floor: dict[str, Any], passes: float) -> float:
    """The floor of a step doing ``passes`` mixed HVP passes: the median over the floor's steps
    of F_j + passes·H_j where it has per-step samples (:class:`FloorRunner`), else F + passes·H."""
    if floor.get("per_step"):
        return statistics.median(f + passes * h for f, h in floor["per_step"])
    return floor["fwd_bwd_ms"] + passes * floor["hvp_ms"]


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
