"""Restarted GMRES against dense solves."""
import pytest
import torch

from fastgame.linalg.gmres import gmres


def dense_op(M):
    return lambda v: M @ v


def ill_conditioned(n, cond, gen):
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    s = torch.logspace(0, -torch.log10(torch.tensor(float(cond))).item(), n, dtype=torch.float64)
    return u @ torch.diag(s) @ v.T


@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_nonsymmetric_dense_systems(n):
    gen = torch.Generator().manual_seed(n)
    M = torch.eye(n, dtype=torch.float64) + 0.3 * torch.randn(n, n, generator=gen, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    res = gmres(dense_op(M), b, tol=1e-12, atol=0.0, restart=n)
    torch.testing.assert_close(res.solution, torch.linalg.solve(M, b), rtol=1e-9, atol=1e-10)
    assert res.converged and res.iterations <= n
    assert (M @ res.solution - b).norm() < 1e-11 * b.norm()


def test_ill_conditioned_system():
    gen = torch.Generator().manual_seed(0)
    M = ill_conditioned(30, 1e6, gen)
    b = torch.randn(30, generator=gen, dtype=torch.float64)
    res = gmres(dense_op(M), b, tol=1e-10, atol=0.0, restart=30, max_iter=200)
    assert res.converged
    # attainable true residual ~ eps·‖M‖·‖x‖ (‖x‖ ~ 1e5 here), forward error ~ cond·tol
    assert (M @ res.solution - b).norm() <= 1e-9 * b.norm()
    x = torch.linalg.solve(M, b)
    assert ((res.solution - x).norm() / x.norm()) < 1e-3


def test_restarts_converge_and_cost_more_iterations():
    gen = torch.Generator().manual_seed(1)
    n = 60
    M = torch.eye(n, dtype=torch.float64) + 0.5 * torch.randn(n, n, generator=gen, dtype=torch.float64) / n ** 0.5
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    full = gmres(dense_op(M), b, tol=1e-10, atol=0.0, restart=n)
    restarted = gmres(dense_op(M), b, tol=1e-10, atol=0.0, restart=4, max_iter=2000)
    assert full.converged and restarted.converged
    assert restarted.iterations > full.iterations
    torch.testing.assert_close(restarted.solution, torch.linalg.solve(M, b), rtol=1e-7, atol=1e-8)


def test_warm_start_from_solution_needs_no_iterations():
    gen = torch.Generator().manual_seed(2)
    M = torch.eye(10, dtype=torch.float64) + 0.2 * torch.randn(10, 10, generator=gen, dtype=torch.float64)
    b = torch.randn(10, generator=gen, dtype=torch.float64)
    x = torch.linalg.solve(M, b)
    assert gmres(dense_op(M), b, x0=x, tol=1e-8, atol=0.0).iterations == 0
    near = gmres(dense_op(M), b, x0=x + 1e-6 * torch.randn(10, generator=gen, dtype=torch.float64), tol=1e-8, atol=0)
    cold = gmres(dense_op(M), b, tol=1e-8, atol=0.0)
    assert near.iterations < cold.iterations


def test_zero_rhs_and_max_iter():
    M = torch.eye(3, dtype=torch.float64) * 2
    res = gmres(dense_op(M), torch.zeros(3, dtype=torch.float64), tol=0.0, atol=0.0)
    assert res.iterations == 0 and torch.equal(res.solution, torch.zeros(3, dtype=torch.float64))
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(20, 20, generator=gen, dtype=torch.float64) + 5 * torch.eye(20, dtype=torch.float64)
    capped = gmres(dense_op(A), torch.randn(20, generator=gen, dtype=torch.float64), tol=1e-14, atol=0, max_iter=3)
    assert capped.iterations == 3 and not capped.converged


def test_float32_and_bad_input():
    gen = torch.Generator().manual_seed(4)
    M = torch.eye(16) + 0.2 * torch.randn(16, 16, generator=gen)
    b = torch.randn(16, generator=gen)
    res = gmres(dense_op(M), b, tol=1e-6, atol=0.0)
    assert res.solution.dtype == torch.float32
    assert (M @ res.solution - b).norm() < 1e-5 * b.norm()
    with pytest.raises(ValueError, match="flat"):
        gmres(dense_op(M), b.reshape(4, 4))
    with pytest.raises(ValueError, match="restart"):
        gmres(dense_op(M), b, restart=0)


def test_restart_count_and_true_residual_at_restart():
    gen = torch.Generator().manual_seed(5)
    n = 50
    M = torch.eye(n, dtype=torch.float64) + 0.6 * torch.randn(n, n, generator=gen, dtype=torch.float64) / n ** 0.5
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    calls = []
    res = gmres(lambda v: calls.append(1) or M @ v, b, tol=1e-9, atol=0.0, restart=3, max_iter=500)
    assert res.converged and res.restarts >= 2
    # every cycle after the first starts from one product for b - A x
    assert len(calls) == res.iterations + res.restarts
    assert (M @ res.solution - b).norm() < 1e-9 * b.norm() * 1.01
    assert abs(res.residual_norm - (M @ res.solution - b).norm().item()) < 1e-10 * b.norm().item()


def test_tracked_map_applied_to_the_solution():
    """A tracking matvec returns (A v, T v); the result carries T x, across restarts and x0."""
    gen = torch.Generator().manual_seed(6)
    M = torch.eye(12, dtype=torch.float64) + 0.1 * torch.randn(12, 12, generator=gen, dtype=torch.float64)
    T = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    b = torch.randn(12, generator=gen, dtype=torch.float64)
    x0 = torch.randn(12, generator=gen, dtype=torch.float64)
    for kw in (dict(), dict(x0=x0), dict(restart=2, max_iter=400)):
        res = gmres(lambda v: (M @ v, T @ v), b, tol=1e-11, atol=0.0, track_like=torch.zeros(5, dtype=torch.float64),
                    **kw)
        assert res.converged
        torch.testing.assert_close(res.tracked, T @ res.solution, rtol=1e-10, atol=1e-12)
    assert gmres(dense_op(M), b).tracked is None


def test_min_iter_takes_a_step_even_when_the_start_meets_the_tolerance():
    """CGDs' GMRES always takes one step; min_iter=1 reproduces it (atol above ‖b‖)."""
    M = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    b = torch.tensor([1e-7, 1e-7, 1e-7], dtype=torch.float64)
    lazy = gmres(dense_op(M), b, tol=0.0, atol=1e-6)
    assert lazy.iterations == 0 and lazy.converged and torch.equal(lazy.solution, torch.zeros_like(b))
    one = gmres(dense_op(M), b, tol=0.0, atol=1e-6, min_iter=1)
    assert one.iterations == 1 and one.converged
    # one step = the minimal-residual multiple of b
    Mb = M @ b
    torch.testing.assert_close(one.solution, (b @ Mb) / (Mb @ Mb) * b)
    assert gmres(dense_op(M), b, tol=0.0, atol=1e-6, min_iter=1, max_iter=0).iterations == 0


def test_invariant_subspace_breakdown_is_exact():
    """b in a 2-D invariant subspace: GMRES stops after 2 steps with the exact solution."""
    M = torch.diag(torch.tensor([3.0, 3.0, 5.0, 5.0, 7.0], dtype=torch.float64))
    M[0, 1] = 1.0
    b = torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    res = gmres(dense_op(M), b, tol=0.0, atol=0.0, restart=5)
    assert res.iterations == 2 and res.restarts == 0 and res.converged
    torch.testing.assert_close(res.solution, torch.linalg.solve(M, b), rtol=1e-14, atol=1e-14)


def test_memory_is_linear_in_n_when_max_iter_is_none():
    """CGDs allocates (max_iter+1)^2, i.e. (n+1)^2 = 720 GB here; GMRES(m) needs (m+1)·n."""
    n = 300_000
    d = torch.linspace(1.0, 1.5, n, dtype=torch.float64)
    b = torch.ones(n, dtype=torch.float64)
    res = gmres(lambda v: d * v, b, tol=1e-8, atol=0.0, restart=4, max_iter=None)
    assert res.converged
    torch.testing.assert_close(res.solution, b / d, rtol=1e-7, atol=0.0)


def test_non_finite_operator_stops_without_raising():
    b = torch.ones(4, dtype=torch.float64)
    res = gmres(lambda v: v * float("nan"), b, tol=1e-8, atol=0.0)
    assert not res.converged and res.iterations == 1
    assert not torch.isfinite(res.solution).all()


def test_more_bad_inputs():
    b = torch.ones(4)
    with pytest.raises(ValueError, match="x0"):
        gmres(lambda v: v, b, x0=torch.ones(5))
    with pytest.raises(ValueError, match="max_iter"):
        gmres(lambda v: v, b, max_iter=-1)
    with pytest.raises(ValueError, match="min_iter"):
        gmres(lambda v: v, b, min_iter=-2)
    with pytest.raises(ValueError, match="tol"):
        gmres(lambda v: v, b, tol=float("nan"))
    with pytest.raises(ValueError, match="floating"):
        gmres(lambda v: v, torch.ones(4, dtype=torch.int64))
