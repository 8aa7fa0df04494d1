import os

import pytest
import torch


@pytest.fixture
def float64():
    """Run a test with float64 as the default dtype (CGDs needs it to run in float64)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="session")
def fastgame_cache(tmp_path_factory):
    """One FASTGAME_CACHE for the session: the digit classifier is trained once for all modules."""
    old = os.environ.get("FASTGAME_CACHE")
    os.environ["FASTGAME_CACHE"] = str(tmp_path_factory.getbasetemp() / "fastgame-cache")
    yield os.environ["FASTGAME_CACHE"]
    if old is None:
        del os.environ["FASTGAME_CACHE"]
    else:
        os.environ["FASTGAME_CACHE"] = old


HEARTBEAT_S = float(os.environ.get("FASTGAME_TEST_HEARTBEAT_S", "30"))
"""A test still running after this many seconds gets a line saying so (and again every period),
so that a slow file's line is never silent for longer (the default output prints a dot per
finished test only)."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    import contextlib
    import threading
    import time
    reporter = item.config.pluginmanager.get_plugin("terminalreporter")
    capture = item.config.pluginmanager.get_plugin("capturemanager")
    done = threading.Event()

    def beat() -> None:
        start = time.monotonic()
        while not done.wait(HEARTBEAT_S):
            line = f"  ... {item.nodeid} still running ({time.monotonic() - start:.0f} s)"
            # While a test runs, pytest captures file descriptor 1: the line must bypass that
            # capture (as pytest's own live output does) or it would land in the test's output.
            with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
                reporter.write_line(line)

    thread = threading.Thread(target=beat, daemon=True) if reporter is not None else None
    if thread is not None:
        thread.start()
    try:
        yield
    finally:
        done.set()
        if thread is not None:
            thread.join()
