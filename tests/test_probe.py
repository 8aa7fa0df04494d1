"""The ICR probe on a tiny run folder: both cases recorded, a CSV and a PNG written, the run untouched."""
from __future__ import annotations

import csv
import hashlib
import os

import pytest

from fastgame.trainer import probe
from fastgame.trainer.checkpoint import CheckpointError
from fastgame.trainer.config import ConfigError, TrainConfig
from fastgame.trainer.train import train


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module", params=["acgd", "adam"])
def run_dir(request, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / request.param)
    train(TrainConfig(data="ring8", optimizer=request.param, steps=20, batch=32, width=16, out=out, loss="wgan",
                      eval_every=10, eval_samples=200, threads=1), quiet=True)
    return out


def test_probe_writes_csv_and_png_and_leaves_the_run(run_dir):
    before = {f: _digest(os.path.join(run_dir, f)) for f in ("checkpoint.pt", "config.json", "metrics.csv")}
    result = probe.probe_run(run_dir, steps=8)
    assert {f: _digest(os.path.join(run_dir, f)) for f in before} == before
    assert os.path.getsize(result.png) > 1000
    with open(result.csv) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(9))
    for case in ("d_only", "both"):
        change = [float(r[f"{case}_output_change"]) for r in rows]
        assert change[0] == 0.0 and change[-1] > 0  # D moves away from its checkpoint outputs
    # Alone, D lowers its loss on the fixed samples (it is trained on fresh batches of the same data).
    assert float(rows[-1]["d_only_loss_d_fixed"]) < float(rows[0]["d_only_loss_d_fixed"])
    # Both cases start from the same checkpoint: the same first record.
    assert rows[0]["d_only_loss_d_fixed"] == rows[0]["both_loss_d_fixed"]
    # Deterministic for a fixed seed.
    again = probe.probe_run(run_dir, steps=8)
    assert again.probe.both.output_change.tolist() == result.probe.both.output_change.tolist()


def test_probe_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        probe.probe_run(str(tmp_path))


def test_probe_without_a_checkpoint(run_dir, tmp_path):
    (tmp_path / "config.json").write_bytes(open(os.path.join(run_dir, "config.json"), "rb").read())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        probe.probe_run(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


@pytest.mark.parametrize("method", ["gacgd", "extragradient"])
def test_probe_of_a_method_it_cannot_continue(tmp_path, method):
    """A run of a method the probe does not continue gets one ConfigError naming the ones it does,
    before anything is loaded or written."""
    out = str(tmp_path / method)
    train(TrainConfig(data="ring8", optimizer=method, steps=2, batch=32, width=16, out=out, eval_every=2,
                      eval_samples=100, threads=1), quiet=True)
    before = sorted(os.listdir(out))
    with pytest.raises(ConfigError, match=f"the probe continues runs of acgd, bcgd, .*not '{method}'"):
        probe.probe_run(out, steps=2)
    assert sorted(os.listdir(out)) == before
