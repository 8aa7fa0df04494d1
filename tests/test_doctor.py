"""python -m fastgame.doctor on the CPU, and the op self-check it runs (fastgame/ops/selfcheck.py):
what applies here runs and passes, the CUDA-graph rows say why they are skipped, and an injected
op or step failure shows as 'failed' with its error and a nonzero exit."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from fastgame import doctor
from fastgame.ops import reference
from fastgame.ops.backends import Backend
from fastgame.ops.interface import SCHEMAS
from fastgame.ops.selfcheck import TOLERANCES, check_op

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module(**overrides):
    """A backend module: the torch twins, with ``overrides`` in place of some ops."""
    return SimpleNamespace(**{**{s.name: getattr(reference, s.name) for s in SCHEMAS}, **overrides})


def _wrong_direction(p, r, rr_new, rr, sqrt_eta):
    out = reference.cg_direction_(p, r, rr_new, rr, sqrt_eta)
    p[0] += 1.0  # the in-place argument is off, the output right
    return out


def _wrong_dot(p, sqrt_eta, t):
    ap, pap = reference.cg_matvec(p, sqrt_eta, t)
    return ap, pap * (1 + 1e-3)


def _raising(*args):
    raise RuntimeError("kernel exploded")


@pytest.mark.parametrize("dtype", list(TOLERANCES))
def test_selfcheck_passes_the_twins_and_catches_wrong_kernels(dtype):
    for schema in SCHEMAS:
        assert check_op(reference, schema, 1023, dtype, "cpu") is None
    assert "cg_direction_ argument p (written in place)" in check_op(_module(cg_direction_=_wrong_direction),
                                                                      "cg_direction_", 7, dtype, "cpu")
    assert "cg_matvec output 1: |error|" in check_op(_module(cg_matvec=_wrong_dot), "cg_matvec", 7, dtype, "cpu")
    with pytest.raises(ValueError, match="unknown fused op 'cg_nothing'"):
        check_op(reference, "cg_nothing", 7, dtype, "cpu")


def test_cpu_run_passes_and_says_what_it_skipped():
    """The whole command in a fresh process, as a user runs it."""
    out = subprocess.run([sys.executable, "-m", "fastgame.doctor", "--device", "cpu"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env=dict(os.environ, TRITON_INTERPRET=""))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert f"torch: {torch.__version__}" in lines and any(l.startswith("triton: ") for l in lines)
    rows = {l.split("  ")[0]: l for l in lines if l.startswith(("ops: ", "step: "))}
    assert "ok" in rows["step: eager step(closure)"] and "ok" in rows["step: piecewise host loop, no graphs"]
    for name in ("piecewise graphs (make_graphed_step(exact_cg=True))", "whole-step graph (make_graphed_step)",
                 "piecewise graphs under bf16 autocast", "graph_cg (CG iterations replayed per solve)"):
        assert "skipped  CUDA graphs need a CUDA device (this run: cpu)" in rows[f"step: {name}"]
    assert "skipped" in rows["ops: triton"] and "skipped" in rows["ops: cuda"]
    assert lines[-1].startswith("# ") and " 0 failed" in lines[-1]


def test_injected_op_failures_show_as_failed_with_the_error(monkeypatch, tmp_path, capsys):
    broken = Backend("broken", ("cpu",), None, _module(cg_step_=_raising, cg_direction_=_wrong_direction))
    absent = Backend("absent", ("cuda",), "no GPU here", reference)
    monkeypatch.setattr(doctor, "backend_records", lambda: {"torch": Backend("torch", ("any",), None, reference),
                                                            "broken": broken, "absent": absent})
    monkeypatch.setattr(doctor, "OP_SIZES", (1, 7))
    path = tmp_path / "report.json"
    assert doctor.main(["--device", "cpu", "--json", str(path)]) == 1
    text = capsys.readouterr().out
    rows = {l.split("  ")[0]: l.split() for l in text.splitlines() if l.startswith("ops: ")}
    assert rows["ops: broken cg_step_ float32"][4:] == ["failed", "RuntimeError:", "kernel", "exploded"]
    assert rows["ops: broken cg_direction_ float64"][4] == "failed"
    assert rows["ops: broken precondition float32"][4] == "ok"
    assert rows["ops: absent"][2:] == ["skipped", "no", "GPU", "here"]
    assert "send this output with a bug report" in text.splitlines()[-1]
    report = json.loads(path.read_text())
    assert report["ok"] is False and report["backends"]["absent"] == "unavailable: no GPU here"
    failed = {c["name"]: c["detail"] for c in report["checks"] if c["status"] == "failed"}
    assert failed["ops: broken cg_step_ float64"] == "RuntimeError: kernel exploded"
    assert failed["ops: broken cg_direction_ float32"].startswith("n=1: cg_direction_ argument p")


def test_a_step_that_raises_or_differs_is_failed_and_the_others_still_run(monkeypatch):
    def broken(name, device):
        raise RuntimeError("the step broke")
    monkeypatch.setattr(doctor, "_eager_check", broken)
    rows = {c.name: c for c in doctor.step_checks(torch.device("cpu"))}
    assert (rows["step: eager step(closure)"].status, rows["step: eager step(closure)"].detail) == \
        ("failed", "RuntimeError: the step broke")
    assert rows["step: piecewise host loop, no graphs"].status == "ok"

    def off(game, opt, real, z):  # a path whose steps are not the eager ones
        opt.step(lambda: game.loss(real, z))
        with torch.no_grad():
            opt.players[1].flat.mul_(1.01)
    check = doctor._stepwise("step: wrong", torch.device("cpu"), off)
    assert check.status == "failed" and check.detail.startswith("largest relative difference from eager")


@pytest.mark.parametrize("device, message", [("meta", "the doctor checks cpu or cuda"),
                                             ("tpu", "--device 'tpu' is not a device torch knows")]
                         + ([] if torch.cuda.is_available() else [("cuda", "torch sees no CUDA device here")]))
def test_bad_device_is_one_error(device, message, capsys):
    with pytest.raises(SystemExit) as exc:
        doctor.main(["--device", device])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_fastgame_doctor_subcommand(capsys, monkeypatch):
    """``fastgame doctor`` is the same command; a bad option is the CLI's one error line."""
    from fastgame.trainer.cli import main
    monkeypatch.setattr(doctor, "OP_SIZES", (1, 7))
    assert main(["doctor", "--device", "cpu"]) == 0
    assert "step: eager step(closure)" in capsys.readouterr().out
    assert main(["doctor", "--device", "meta"]) == 2
    assert capsys.readouterr().err.strip() == "fastgame: error: --device 'meta': the doctor checks cpu or cuda"
