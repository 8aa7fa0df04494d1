"""Restarted GMRES against dense solves."""
import pytest
import torch

from fastgame.gmres import gmres


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
