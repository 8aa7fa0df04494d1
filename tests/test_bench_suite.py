"""Smoke test of the benchmark suite (bench/run.py): the tiny CPU configuration runs in
seconds and writes JSON/CSV with the expected columns and sane values."""
import csv
import json
import math
import statistics

import pytest
import torch

run = pytest.importorskip("bench.run")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    try:
        res = run.run_suite("tiny", out=str(out), models=["mlp"], steps=2, warmup=1, verbose=False)
    finally:
        torch.set_num_threads(threads)
    return res


def test_files_written_with_columns(result):
    js, cs, txt = result["files"][:3]
    assert js.endswith(".json") and cs.endswith(".csv") and txt.endswith(".txt")
    with open(txt) as f:
        text = f.read()
    assert text.startswith("verdict") and "ms/step" in text  # the verdict first, then the full table
    with open(js) as f:
        data = json.load(f)
    for key in ("device", "torch", "cgds", "fastgame", "threads", "fastgame_backends", "suite"):
        assert key in data["meta"]
    with open(cs) as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0].keys()) == run.COLUMNS
    assert len(rows) == len(data["rows"])


def test_rows_sane(result):
    rows = {(r["optimizer"], r["backend"]): r for r in result["rows"]}
    ok = [r for r in rows.values() if r["status"] == "ok"]
    names = {r["optimizer"] for r in ok}
    assert {"adam", "cgds", "fastgame"} <= names
    for r in ok:
        assert r["ms_median"] > 0 and r["steps"] == 2
        assert r["params_G"] > 0 and r["params_D"] > 0
    for r in ok:
        if r["optimizer"] == "fastgame":
            k = r["cg_iters"]
            passes = 2 + 2 * k if r["cg_start"] == "warm" else 1 + 2 * k  # warm-started steps: 2 + 2k
            assert k >= 1 and r["hvp_passes"] == pytest.approx(passes)
            assert r["floor_ms"] > 0 and r["step_over_floor"] > 0
            assert r["speedup_vs_cgds"] > 0 and r["cost_vs_adam"] > 0
            assert r["dtheta_vs_cgds"] < 1e-3  # the same numbers as CGDs, to solver tolerance
            assert "autograd call count disagrees" not in (r.get("note") or "")
        if r["optimizer"] == "cgds":
            assert r["hvp_passes"] == pytest.approx(5 + 2 * r["cg_iters"]) and r["grad_passes"] == 2
        if r["optimizer"] == "fastgame-bf16":  # autocast forward and HVPs, fp32 CG state (zero start)
            assert r["hvp_passes"] == pytest.approx(1 + 2 * r["cg_iters"])
            assert 0 < r["step_err_vs_fp32"] <= r["step_err_vs_fp32_max"] < 0.1  # bf16-sized, not garbage
            assert 1e-4 < r["dtheta_vs_cgds"] < 0.5
            assert r.get("floor_ms") is None  # the floor is fp32's
    assert "fastgame-bf16" in names
    # graphed rows need CUDA: skipped with a reason here
    graphed = [r for r in rows.values() if r["optimizer"].startswith("fastgame-graphed")]
    assert len(graphed) >= 2  # each backend, and bf16
    assert all(r["status"] in ("skipped", "ok") for r in graphed)
    floor = result["floors"]["mlp-b64-w32"]["eager"]
    assert all(v > 0 and math.isfinite(v) for k, v in floor.items() if k != "per_step")
    assert len(floor["per_step"]) == 2 and all(f > 0 and h > 0 for f, h in floor["per_step"])
    fast = next(r for r in ok if r["optimizer"] == "fastgame")  # median over steps of F_j + P·H_j
    assert fast["floor_ms"] == pytest.approx(statistics.median(f + fast["hvp_passes"] * h for f, h in floor["per_step"]))


def test_table_and_cli(result, tmp_path, capsys):
    table = run.format_table(result["rows"], result["floors"])
    assert "ms/step" in table and "fastgame" in table
    threads = torch.get_num_threads()
    try:
        assert run.main(["--suite", "tiny", "--models", "mlp", "--optimizers", "adam", "--steps", "2", "--warmup", "1",
                         "--out", str(tmp_path), "--no-floor"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert len(list(tmp_path.glob("tiny_*.csv"))) == 1
    assert "verdict" in capsys.readouterr().out
    assert "adam" in next(tmp_path.glob("tiny_*.txt")).read_text()


def test_bcgd_rows(tmp_path):
    threads = torch.get_num_threads()
    try:
        res = run.run_suite("tiny", out=None, models=["mlp"], optimizers=["cgds", "fastgame"], steps=2, warmup=1,
                            verbose=False, algo="BCGD")
    finally:
        torch.set_num_threads(threads)
    rows = [r for r in res["rows"] if r["status"] == "ok"]
    assert {r["algo"] for r in rows} >= {"CGDs 0.4.5 BCGD", "fastgame BCGD"}
    for r in rows:
        k = r["cg_iters"]
        passes = 5 + 2 * k if r["optimizer"] == "cgds" else 1 + 2 * k
        assert r["hvp_passes"] == pytest.approx(passes)
        if r["optimizer"] == "fastgame":
            assert r["dtheta_vs_cgds"] < 1e-3


def test_plain_batchnorm_rows():
    """--batchnorm fastgame: every row's models converted; fastgame still matches CGDs."""
    threads = torch.get_num_threads()
    try:
        res = run.run_suite("tiny", out=None, models=["dcgan32"], optimizers=["cgds", "fastgame"], steps=2, warmup=1,
                            verbose=False, batchnorm="fastgame", floor=False)
    finally:
        torch.set_num_threads(threads)
    assert res["meta"]["batchnorm"] == "fastgame"
    rows = [r for r in res["rows"] if r["status"] == "ok"]
    assert {r["optimizer"] for r in rows} == {"cgds", "fastgame"}
    for r in rows:
        if r["optimizer"] == "fastgame":
            assert r["dtheta_vs_cgds"] < 1e-3
    with pytest.raises(ValueError, match="batchnorm"):
        run.run_suite("tiny", out=None, models=["mlp"], optimizers=["adam"], steps=1, warmup=1, verbose=False,
                      batchnorm="fused")


def test_variant_rows(monkeypatch):
    """A case with ``variants``: a fastgame row per (cg_start, tolerance preset) and a CGDs row per
    tolerance, each fastgame row compared with CGDs at its own tolerance; the verdict only uses
    rows at the suite's (CGDs') tolerance."""
    import dataclasses

    from bench.cases import VARIANTS
    tiny = run.SUITES["tiny"]
    monkeypatch.setitem(run.SUITES, "tiny", {**tiny, "configs": [dataclasses.replace(tiny["configs"][0], variants=True)]})
    threads = torch.get_num_threads()
    try:
        res = run.run_suite("tiny", out=None, optimizers=["cgds", "fastgame"], steps=2, warmup=1, verbose=False,
                            floor=False)
    finally:
        torch.set_num_threads(threads)
    rows = [r for r in res["rows"] if r["status"] == "ok"]
    cgds = {r["tol"]: r for r in rows if r["optimizer"] == "cgds"}
    assert set(cgds) == {1e-10, 1e-6}
    variants = {(r["cg_start"], r["tol"]): r for r in rows if r["key"].startswith("fastgame@")}
    assert set(variants) == {(s, 1e-10 if t is None else t) for s, t in VARIANTS}
    for (start, tol), r in variants.items():
        k = r["cg_iters"]
        if start == "warm":
            assert r["hvp_passes"] == pytest.approx(2 + 2 * k)
        elif start == "zero":
            assert r["hvp_passes"] == pytest.approx(1 + 2 * k)
        else:
            assert r["hvp_passes"] >= 1 + 2 * k - 1e-9
        assert r["speedup_vs_cgds"] == pytest.approx(cgds[tol]["ms_median"] / r["ms_median"])
        assert r["dtheta_vs_cgds"] < 1e-3
    assert run._fastest(res["rows"], rows[0]["config"], ("fastgame",))["tol"] == 1e-10
    assert "recycle" in run.format_table(res["rows"], res["floors"])


# ---- smoke modes (bench/smoke.sh runs them in CI) ------------------------------------------

def test_smoke_configs_shrink_each_model_of_the_suite():
    for suite in run.SUITES:
        configs = run.smoke_configs(suite)
        assert [c.model for c in configs] == list(dict.fromkeys(c.model for c in run.SUITES[suite]["configs"]))
        assert all(c.batch <= 4 and c.width <= 16 and (c.warmup, c.steps) == (1, 2) for c in configs)
    assert any(c.variants for c in run.smoke_configs("quick"))  # the variant rows stay in the smoke run


def test_smoke_mode_writes_to_a_temporary_folder(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(run, "run_suite", lambda suite, out, *a, configs=None, **k: seen.update(out=out, configs=configs))
    assert run.main(["--suite", "tiny", "--smoke"]) == 0
    assert seen["out"] and not seen["out"].startswith(("bench", "fastgame-runs")) and seen["configs"]
    assert run.main(["--suite", "tiny", "--smoke", "--out", str(tmp_path)]) == 0 and seen["out"] == str(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_gpu_suite_smoke_without_cuda_says_skipped(capsys):
    assert run.main(["--suite", "gpu", "--smoke"]) == 0
    assert "needs CUDA, skipped" in capsys.readouterr().out


def test_bench_scripts_import():
    """Every bench script imports (bench/kernels.py once imported a name fastgame no longer has)."""
    import importlib
    for name in ("bench.kernels", "bench.batchnorm_hvp", "bench.eager_graph", "bench.gacgd_cpu", "bench.solve_start",
                 "bench.pinn"):
        assert callable(importlib.import_module(name).main)


def test_pinn_bench_rows_agree_and_write_their_files(tmp_path):
    """bench.pinn in its smoke size: fastgame's GACGD follows CGDs' on the PINN game (third-order
    passes) to solver tolerance, with one create_graph backward where CGDs takes two, and the
    results land in the JSON and Markdown files; a row whose package is missing is skipped."""
    import json

    from bench import pinn
    rows = ["CGDs GACGD", "fastgame GACGD", "fastgame GACGD, two backward (before)"]
    assert pinn.main(["--smoke", "--rows", *rows, "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("pinn_cpu_*.json")
    assert len(list(tmp_path.glob("pinn_cpu_*.md"))) == 1
    res = json.loads(js.read_text())["results"]
    ours, before, ref = res["fastgame GACGD"], res["fastgame GACGD, two backward (before)"], res["CGDs GACGD"]
    assert ours["param_diff_vs_cgds_gacgd"] < 1e-7 and abs(ours["rel_l2"] - ref["rel_l2"]) < 1e-7
    assert (ours["create_graph_passes"], before["create_graph_passes"], ref["create_graph_passes"]) == (1, 2, 2)
    assert ours["rel_l2"] == before["rel_l2"] and ours["other_passes"] == 1 + 2 * ours["solver_iters"]
    assert "pip install no-such-package" in pinn._available("no_such_package")
