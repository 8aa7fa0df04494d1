"""The test run's heartbeat (tests/conftest.py): a test running past the period gets a line on
the terminal, not in its own captured output."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_long_test_prints_a_heartbeat_line(tmp_path):
    (tmp_path / "test_slow.py").write_text("import time\n\ndef test_slow():\n    time.sleep(3.5)\n")
    env = dict(os.environ, FASTGAME_TEST_HEARTBEAT_S="1", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           str(tmp_path / "test_slow.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    beats = [line for line in proc.stdout.splitlines() if "test_slow.py::test_slow still running" in line]
    assert len(beats) >= 2 and beats[0].startswith("  ... "), proc.stdout  # one a second, on the terminal
