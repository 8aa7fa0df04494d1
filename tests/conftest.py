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
