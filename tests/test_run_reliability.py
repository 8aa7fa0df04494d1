"""Reliability of trainer runs (issue 19): no silent loss of history or corruption, one owner
per run folder, data read in its real range, one-line errors, resumable dead ends, comparisons
that survive a diverging run, and data-parallel ranks that end together when a peer is gone."""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch

from fastgame.trainer.checkpoint import CheckpointError, RunLock, load_checkpoint, save_checkpoint
from fastgame.trainer.cli import main
from fastgame.trainer.data import DataError, load_dataset

TINY = ["--steps", "4", "--batch", "16", "--width", "8", "--eval-samples", "64", "--eval-every", "2",
        "--checkpoint-every", "2", "-q", "--threads", "1"]
LONG = ["--data", "ring8", "--steps", "1000000", "--batch", "16", "--width", "8", "--eval-samples", "64",
        "--eval-every", "1000000", "--checkpoint-every", "1000000", "-q", "--threads", "1"]


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return dict(env, OMP_NUM_THREADS="1", FASTGAME_CACHE=str(tmp_path / "cache"), **extra)


def _spawn(args, tmp_path, **env):
    return subprocess.Popen([sys.executable, "-m", "fastgame", "train"] + args, env=_env(tmp_path, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=120):
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.1)


def _one_line(err):
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _json_steps(run):
    with open(run / "metrics.json") as f:
        return [r["step"] for r in json.load(f)]


def _csv_steps(run):
    with open(run / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def _tree(folder):
    return {os.path.relpath(os.path.join(r, f), folder): open(os.path.join(r, f), "rb").read()
            for r, _, files in os.walk(folder) for f in files}


@pytest.fixture()
def run4(tmp_path):
    """A finished 4-step run with rows at steps 2 and 4."""
    out = tmp_path / "run"
    assert main(["train", "--data", "ring8", "--out", str(out)] + TINY) == 0
    return out


# ---- 1. a damaged metrics.json keeps the history --------------------------------------------
def test_truncated_metrics_keep_history(run4, capsys):
    with open(run4 / "metrics.json", "r+") as f:
        f.truncate(10)
    assert main(["train", "--resume", str(run4), "--steps", "6", "-q"]) == 0
    assert _json_steps(run4) == [2, 4, 6] and _csv_steps(run4) == [2, 4, 6]


def test_old_checkpoint_history_from_csv_or_refused(run4, capsys):
    """A checkpoint from before it kept the rows: a damaged metrics.json is read from metrics.csv;
    both damaged is one line, and nothing is rewritten."""
    st = torch.load(run4 / "checkpoint.pt", weights_only=True)
    del st["rows"], st["sha256"]  # as an older fastgame wrote it
    torch.save(st, run4 / "checkpoint.pt")
    (run4 / "metrics.json").write_text('[{"step": 2, "loss')
    assert main(["train", "--resume", str(run4), "--steps", "6", "-q"]) == 0
    assert _json_steps(run4) == [2, 4, 6]
    torch.save({**st, "step": 6, "config": {**st["config"], "steps": 6}}, run4 / "checkpoint.pt")
    (run4 / "metrics.json").write_text("[")
    (run4 / "metrics.csv").write_text("")
    capsys.readouterr()
    before = _tree(run4)
    assert main(["train", "--resume", str(run4), "--steps", "8", "-q"]) == 2
    assert "metric history is damaged" in _one_line(capsys.readouterr().err)
    assert _tree(run4) == before


# ---- 2. a flipped bit in the checkpoint is refused --------------------------------------------
def _data_ranges(path):
    """(start, end) byte ranges of the tensor data records inside a torch zip checkpoint."""
    out = []
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if "/data/" in info.filename and info.file_size > 0:
                f.seek(info.header_offset + 26)
                name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
                start = info.header_offset + 30 + name_len + extra_len
                out.append((start, start + info.file_size))
    return out


def test_flipped_bit_in_checkpoint_refused(run4, capsys):
    path = run4 / "checkpoint.pt"
    good = path.read_bytes()
    ranges = _data_ranges(path)
    rng = random.Random(0)
    for _ in range(25):
        lo, hi = rng.choice(ranges)
        pos, bit = rng.randrange(lo, hi), rng.randrange(8)
        bad = bytearray(good)
        bad[pos] ^= 1 << bit
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError):
            load_checkpoint(str(path))
    capsys.readouterr()
    assert main(["train", "--resume", str(run4), "--steps", "6", "-q"]) == 2
    assert "SHA-256" in _one_line(capsys.readouterr().err)
    path.write_bytes(good)
    assert main(["train", "--resume", str(run4), "--steps", "6", "-q"]) == 0


# ---- 3 and 12. one process per run folder; a killed owner leaves no lock and no temporaries --------
def test_second_process_refused_and_killed_owners_lock_free(tmp_path):
    out = tmp_path / "run"
    owner = _spawn(["--out", str(out)] + LONG, tmp_path)
    try:
        _wait_for(out / "config.json", owner)
        second = subprocess.run([sys.executable, "-m", "fastgame", "train", "--resume", str(out), "-q"],
                                env=_env(tmp_path), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        line = _one_line(second.stderr)
        assert str(out) in line and "in use" in line
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.communicate()
    stale = out / ".checkpoint.pt.tmp99999"  # what a kill during a checkpoint write leaves
    stale.write_bytes(b"half a checkpoint")
    r = subprocess.run([sys.executable, "-m", "fastgame", "train", "--resume", str(out), "--steps", "3", "-q"],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not stale.exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3


def test_lock_refuses_in_process_too(run4, capsys):
    lock = RunLock(str(run4))
    try:
        assert main(["train", "--resume", str(run4), "--steps", "6", "-q"]) == 2
        assert "in use by another fastgame process" in _one_line(capsys.readouterr().err)
    finally:
        lock.release()


# ---- 4. data in its real range ----------------------------------------------------------------------
def test_image_dtypes_scaled_by_their_range_or_refused(tmp_path):
    from PIL import Image
    u16 = (np.arange(2 * 64).reshape(2, 8, 8) * 500).astype(np.uint16)
    np.save(tmp_path / "u16.npy", u16)
    x = load_dataset(str(tmp_path / "u16.npy")).tensor
    torch.testing.assert_close(x, torch.from_numpy(u16.astype(np.float64) / 32767.5 - 1).float().unsqueeze(1))
    folder = tmp_path / "png16"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)).save(folder / f"{i}.png")
    png = load_dataset(str(folder), image_size=8).tensor
    assert png.shape == (2, 1, 8, 8)
    torch.testing.assert_close(png[0, 0], torch.from_numpy(np.arange(64).reshape(8, 8) * 1000 / 32767.5 - 1).float(),
                               atol=1e-5, rtol=0)
    np.save(tmp_path / "b.npy", np.arange(2 * 64).reshape(2, 8, 8) % 2 == 0)
    assert load_dataset(str(tmp_path / "b.npy")).tensor.unique().tolist() == [-1.0, 1.0]  # bool: 0/1
    for arr, message in ((np.arange(128).reshape(2, 8, 8) % 17, r"int64 images with values in \[0, 16\]"),
                         (-np.ones((2, 8, 8), np.int16), r"int16 images with values in \[-1, -1\]"),
                         (np.ones((4, 2)) * 1j, "complex values")):
        np.save(tmp_path / "a.npy", arr)
        with pytest.raises(DataError, match=message):
            load_dataset(str(tmp_path / "a.npy"))
    torch.save(torch.eye(4).to_sparse(), tmp_path / "s.pt")
    with pytest.raises(DataError, match="sparse"):
        load_dataset(str(tmp_path / "s.pt"))


# ---- 8. one line instead of a traceback ---------------------------------------------------------
def test_bad_config_types_and_rows_are_one_line(run4, capsys):
    cfg = json.loads((run4 / "config.json").read_text())
    (run4 / "config.json").write_text(json.dumps({**cfg, "batch": "16"}))
    capsys.readouterr()
    assert main(["train", "--resume", str(run4), "--steps", "6", "-q"]) == 2
    assert "batch is '16', not int" in _one_line(capsys.readouterr().err)
    (run4 / "config.json").write_text(json.dumps(cfg))
    (run4 / "metrics.json").write_text('[{"step": "x"}]')  # the checkpoint's own rows are used
    assert main(["train", "--resume", str(run4), "--steps", "6", "-q"]) == 0
    assert _json_steps(run4) == [2, 4, 6]


def test_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = os.fsync

    def fsync(fd):  # the disk fills up after the first checkpoint
        name = os.readlink(f"/proc/self/fd/{fd}").split("/")[-1]
        if name.startswith(".metrics.json") and (out / "checkpoint.pt").exists():
            raise OSError(28, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(["train", "--data", "ring8", "--out", str(out)] + TINY + ["--steps", "8"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "metrics.json" in line and "No space left on device" in line and "last checkpoint (step" in line
    monkeypatch.setattr(os, "fsync", real)
    load_checkpoint(str(out / "checkpoint.pt"))  # intact


def test_compare_reuses_a_run_whose_metrics_json_is_empty(tmp_path, capsys):
    argv = ["compare", "--data", "ring8", "--optimizers", "acgd", "adam", "--seeds", "0", "--out",
            str(tmp_path / "cmp")] + TINY
    assert main(argv) == 0
    (tmp_path / "cmp" / "adam-seed0" / "metrics.json").write_text("{}")
    assert main(argv) == 0
    assert "finished earlier" in capsys.readouterr().out


# ---- 9. resume compares what was typed -----------------------------------------------------------
def test_resume_refuses_typed_settings_that_differ(run4, capsys):
    capsys.readouterr()
    assert main(["train", "--resume", str(run4), "--steps", "6", "--batch", "256"]) == 2
    assert "--batch 256 differs from the run's 16" in _one_line(capsys.readouterr().err)
    assert main(["train", "--resume", str(run4), "--steps", "6", "--batch", "16", "--threads", "1", "-q"]) == 0


# ---- 10. no dead end after an early kill; a signal checkpoints; the real folder is named -----------
def test_run_without_checkpoint_resumes_from_step_zero(tmp_path, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", "--data", "ring8", "--out", str(full)] + TINY) == 0
    assert main(["train", "--data", "ring8", "--out", str(cut)] + TINY) == 0
    os.remove(cut / "checkpoint.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(cut), "-q"]) == 0
    assert "from its first checkpoint" not in capsys.readouterr().err
    a, b = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (full, cut))
    assert a["step"] == b["step"] == 4
    for k in a["G"]:
        assert torch.equal(a["G"][k], b["G"][k])


@pytest.mark.parametrize("sig,rc", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_before_exit(tmp_path, sig, rc):
    out = tmp_path / "run"
    proc = _spawn(["--out", str(out)] + LONG, tmp_path)
    try:
        _wait_for(out / "config.json", proc)
        time.sleep(1.0)  # a few steps
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == rc, err
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    line = _one_line(err)
    assert f"step {step}" in line and str(out) in line and "RUN_DIR" not in line
    assert step >= 1


# ---- 11. compare records a diverging run and goes on -------------------------------------------------
def test_compare_records_a_failed_run_and_goes_on(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "ring8", "--optimizers", "acgd:lr_d=1e30,lr_g=1e30", "adam", "--seeds", "0",
                 "--out", str(out)] + TINY) == 0
    failed = json.loads((out / "acgd_lr_d=1e30_lr_g=1e30-seed0" / "failed.json").read_text())
    assert failed["step"] == 1 and "non-finite" in failed["reason"]
    assert (out / "adam-seed0" / "checkpoint.pt").is_file()
    md = (out / "compare.md").read_text()
    assert "| failed |" in md and "seed 0: step 1 (" in md
    with open(out / "compare.csv") as f:
        rows = {r["optimizer"]: r for r in csv.DictReader(f)}
    assert rows["acgd:lr_d=1e30,lr_g=1e30"]["failed"].startswith("seed 0: step 1") and rows["adam"]["failed"] == ""


def test_failure_at_step_one_says_there_is_no_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "ring8", "--lr-d", "1e30", "--lr-g", "1e30", "--out", str(out)] + TINY) == 1
    line = _one_line(capsys.readouterr().err)
    assert "holds no checkpoint yet" in line and "the last checkpoint is in" not in line


# ---- 12. negative step refused; --max-iter follows the optimizer's validator -------------------------
def test_negative_step_refused(run4, capsys):
    st = load_checkpoint(str(run4 / "checkpoint.pt"))
    save_checkpoint(str(run4 / "checkpoint.pt"), {k: v for k, v in st.items() if k not in ("format", "sha256")}
                    | {"step": -40})
    capsys.readouterr()
    assert main(["train", "--resume", str(run4), "--steps", "6", "-q"]) == 2
    assert "step is -40" in _one_line(capsys.readouterr().err)


def test_max_iter_follows_the_optimizer(tmp_path, capsys):
    """--max-iter takes what the optimizer's validator takes: GACGD's 0 (CGDs' meaning: the step
    is the right-hand side), not ACGD's (zero CG iterations would leave the solved player unmoved)."""
    assert main(["train", "--data", "ring8", "--optimizer", "gacgd", "--max-iter", "0",
                 "--out", str(tmp_path / "zero")] + TINY) == 0
    capsys.readouterr()
    assert main(["train", "--data", "ring8", "--max-iter", "0", "--out", str(tmp_path / "acgd0")] + TINY) == 2
    assert "invalid max_iter: 0" in _one_line(capsys.readouterr().err)
    assert main(["train", "--data", "ring8", "--max-iter", "-1", "--out", str(tmp_path / "neg")] + TINY) == 2
    assert "invalid max_iter" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "neg").exists()


# ---- 7. a gone or stopped peer ends the run with one line -----------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_gone_peer_ends_the_run_within_the_timeout(tmp_path, how):
    """Two gloo ranks (started as torchrun would); rank 1 is stopped (SIGSTOP) or killed while
    they train: rank 0 ends with one line (rc 1) within the process-group timeout, set to 5 s."""
    port, out = str(_free_port()), tmp_path / "run"
    ranks = [_spawn(["--out", str(out)] + LONG, tmp_path, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                    MASTER_ADDR="127.0.0.1", MASTER_PORT=port, FASTGAME_DIST_BACKEND="gloo",
                    FASTGAME_DIST_TIMEOUT="5") for r in range(2)]
    try:
        _wait_for(out / "config.json", ranks[0])
        time.sleep(1.0)
        ranks[1].send_signal(signal.SIGSTOP if how == "stopped" else signal.SIGKILL)
        _, err = ranks[0].communicate(timeout=90)
    finally:
        for p in ranks:
            p.kill()
            p.communicate()
    assert ranks[0].returncode == 1, err
    line = [l for l in err.strip().splitlines() if l.startswith("fastgame")]
    assert len(line) == 1 and "Traceback" not in err, err
    assert "gone or stopped answering" in line[0] and str(out) in line[0]
