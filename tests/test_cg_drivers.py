"""The CG drivers (fastgame.linalg.cg_drivers): every driver runs the same iterates on a small SPD
system as plain host-checked CG, counts as it says, and a bad choice is refused before anything runs."""
import pytest
import torch

from fastgame.linalg import captured
from fastgame.linalg.cg import run_cg, stop_threshold
from fastgame.linalg.cg_drivers import HostChecked, Masked, Piecewise, Replayed, cg_driver


class Passes:
    """The pass counting of a MixedHVP (all a replay reads of it); the products here take none."""

    def uncounted(self, record):
        record()
        return 0

    def count(self, passes):
        pass


class MatrixSystem:
    """A w = b for a fixed SPD matrix (scale 1, q = p), as run_cg sees a linear system."""

    def __init__(self, A):
        self.A, self.scale, self.hvp = A, torch.ones((), dtype=A.dtype), Passes()

    def products(self, p, sp):
        ap = self.A @ p
        return p.clone(), ap, torch.dot(p, ap)


class RecordedReplay(captured.IterationReplay):
    """A CUDA graph's semantics without CUDA: capture runs nothing, each replay runs the body."""

    def _capture(self, body):
        self._body = body

    def _replay(self):
        self._body()


def _system(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, dtype=torch.float64, generator=g)
    A = torch.eye(n, dtype=torch.float64) + M @ M.T / n
    return MatrixSystem(A), torch.randn(n, dtype=torch.float64, generator=g)


def _solve(driver, tol=1e-20, max_iter=None):
    system, b = _system()
    w, u, r = torch.zeros_like(b), torch.zeros_like(b), b.clone()
    n = driver.bound(max_iter, b.numel())
    count = run_cg(system, w, u, r, stop_threshold(tol, torch.dot(b, b), 0.0), n, driver)
    return w, count, system.A, b


@pytest.mark.parametrize("make", [
    lambda: Masked(1), lambda: Masked(3), lambda: Piecewise(captured.LiveCG(), 1),
    lambda: Piecewise(captured.LiveCG(), 4), lambda: Replayed(RecordedReplay(torch.device("cpu")), 1),
    lambda: Replayed(RecordedReplay(torch.device("cpu")), 5)], ids=["masked1", "masked3", "pieces1", "pieces4",
                                                                    "replay1", "replay5"])
def test_every_driver_runs_plain_cg_iterates(make):
    ref, k, A, b = _solve(HostChecked())
    assert isinstance(k, int) and 0 < k <= b.numel()
    torch.testing.assert_close(A @ ref, b, rtol=0, atol=1e-8)  # converged: the closed-form answer
    driver = make()
    w, count = _solve(driver)[:2]
    assert torch.equal(w, ref)  # the same kernels in the same order; the extra iterations are no-ops
    assert int(count) == k
    host = isinstance(driver, Replayed) or (isinstance(driver, Piecewise) and driver.check_every == 1)
    assert isinstance(count, int) == host


def test_no_host_read_runs_exactly_max_iter():
    ref, k, _, b = _solve(HostChecked())
    w, count, _, _ = _solve(Masked(None), max_iter=b.numel())
    assert isinstance(count, torch.Tensor) and int(count) == k
    torch.testing.assert_close(w, ref, rtol=0, atol=0)
    short, k3, _, _ = _solve(HostChecked(), max_iter=3)
    w3, c3, _, _ = _solve(Masked(None), max_iter=3)
    assert k3 == int(c3) == 3 and torch.equal(w3, short)


def test_bounds():
    assert HostChecked().bound(None, 7) == 7 and HostChecked().bound(50, 7) == 50
    assert Piecewise(captured.LiveCG(), 1).bound(50, 7) == 7  # an eager step's default, never past it
    assert Piecewise(captured.LiveCG(), 1).bound(None, 7) == 7
    assert Masked(2).bound(None, 7) == 7
    with pytest.raises(ValueError, match="needs max_iter"):
        Masked(None).bound(None, 7)


def test_choice_and_refusals():
    replay, pieces = RecordedReplay(torch.device("cpu")), captured.LiveCG()
    assert type(cg_driver(1)) is HostChecked
    assert type(cg_driver(3)) is Masked and cg_driver(3).check_every == 3
    assert type(cg_driver(None)) is Masked and cg_driver(None).check_every is None
    assert type(cg_driver(1, replay=replay)) is Replayed
    assert type(cg_driver(1, replay=replay, pieces=pieces)) is Piecewise
    with pytest.raises(ValueError, match="graph-replayed CG iterations .* give check_every"):
        cg_driver(None, replay=replay)
    with pytest.raises(ValueError, match="CG pieces .* give check_every"):
        cg_driver(None, pieces=pieces)
