"""`torchrun --nproc_per_node 2 -m fastgame train` (gloo, CPU) equals one process with the full batch."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

ARGS = ["--data", "ring8", "--batch", "16", "--width", "8", "--steps", "3", "--dtype", "float64",
        "--eval-samples", "64", "--eval-every", "3", "-q"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", FASTGAME_CACHE=str(tmp_path / "cache"))
    env.pop("WORLD_SIZE", None)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("optimizer, extra", [("acgd", []), ("adam", []),
                                              ("apcgd", ["--discriminators", "2", "--loss", "wgan"])],
                         ids=["acgd", "adam", "apcgd-2-discriminators"])
def test_two_gloo_processes_equal_one_process(tmp_path, optimizer, extra):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--optimizer", optimizer] + extra + ARGS
    r1 = _run([sys.executable, "-m", "fastgame", "train", "--out", str(one)] + args, tmp_path)
    assert r1.returncode == 0, r1.stderr
    r2 = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "fastgame", "train", "--out", str(two)] + args, tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    # Only rank 0 prints and writes.
    assert r2.stdout.count("fastgame: run folder") == 1, r2.stdout
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))
    a = torch.load(one / "checkpoint.pt", weights_only=True)
    b = torch.load(two / "checkpoint.pt", weights_only=True)
    assert b["config"]["extra"]["world_size"] == 2
    assert b["config"]["discriminators"] == a["config"]["discriminators"] == (2 if extra else 1)
    # Equal up to float64 rounding (a mean of two half-batch means is not bitwise the full mean,
    # and Adam's g/sqrt(v) amplifies that for tiny gradients); a wrong shard, or gradients not
    # averaged across ranks, differs by about the learning rate (1e-3).
    for k in ("G", "D"):
        for name in a[k]:
            torch.testing.assert_close(b[k][name], a[k][name], rtol=1e-6, atol=1e-8, msg=f"{k}.{name}")
    # ...and training moved them (the comparison is not between two untouched initialisations).
    from fastgame.trainer.config import TrainConfig
    from fastgame.trainer.train import prepare
    init = prepare(TrainConfig(data="ring8", width=8, batch=16, dtype="float64", out=str(tmp_path / "init")))
    assert any(not torch.equal(init.G.state_dict()[n], a["G"][n]) for n in a["G"])


def test_batch_must_split_evenly(tmp_path):
    r = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
              "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
              "-m", "fastgame", "train", "--out", str(tmp_path / "x"), "--batch", "15", "--steps", "1"], tmp_path)
    assert r.returncode != 0
    assert "divisible" in r.stderr
    assert not (tmp_path / "x").exists()
