"""bench/batchnorm_hvp.py, the native-vs-fastgame.nn BatchNorm measurement, runs and reports."""
import torch

from bench.batchnorm_hvp import main


def test_batchnorm_experiment_runs(capsys):
    threads = torch.get_num_threads()
    try:
        assert main(["--device", "cpu", "--models", "dcgan32-b4-w8"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "native" in out and "fastgame" in out and "ops D_xy" in out and "err vs fp64" in out


def test_batchnorm_experiment_rejects_unknown_labels():
    import pytest

    with pytest.raises(SystemExit, match="unknown config labels"):
        main(["--device", "cpu", "--models", "dcgan32-b3-w5"])
