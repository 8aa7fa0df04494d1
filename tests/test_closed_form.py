"""One ACGD/BCGD step on the bilinear game f = xᵀAy equals the dense solve of docs/design.md §2."""
import pytest
import torch

import fastgame


def dense_step(A, x, y, eta_x, eta_y, solve_max):
    """The CGD step of docs/design.md §2 with dense matrices (D_xy = A, D_yx = Aᵀ)."""
    gx, gy = A @ y, A.T @ x
    if solve_max:
        s = eta_x.sqrt()
        M = torch.eye(len(x)) + s[:, None] * A @ torch.diag(eta_y) @ A.T * s[None, :]
        w = torch.linalg.solve(M, s * (gx - A @ (eta_y * gy)))
        dx = s * w
        dy = -eta_y * (gy + A.T @ dx)
    else:
        s = eta_y.sqrt()
        M = torch.eye(len(y)) + s[:, None] * A.T @ torch.diag(eta_x) @ A * s[None, :]
        w = torch.linalg.solve(M, s * (gy + A.T @ (eta_x * gx)))
        dy = -s * w
        dx = eta_x * (gx + A @ dy)
    return dx, dy


def rmsprop_eta(g, lr, beta, eps, v=None, t=1):
    v = (1 - beta) * g * g if v is None else beta * v + (1 - beta) * g * g
    return lr * (1 - beta ** t) ** 0.5 / (v.sqrt() + eps), v


@pytest.mark.parametrize("shape", [(3, 4), (5, 2), (1, 1)])
def test_acgd_two_steps_match_dense_solve(float64, shape):
    torch.manual_seed(1)
    A = torch.randn(*shape)
    x = torch.randn(shape[0], requires_grad=True)
    y = torch.randn(shape[1], requires_grad=True)
    lr_x, lr_y, beta, eps = 0.3, 0.2, 0.9, 1e-5
    opt = fastgame.ACGD([x], [y], lr_max=lr_x, lr_min=lr_y, beta=beta, eps=eps, tol=1e-20, atol=1e-40)
    vx = vy = None
    for t, solve_max in [(1, True), (2, False)]:
        x0, y0 = x.detach().clone(), y.detach().clone()
        eta_x, vx = rmsprop_eta(A @ y0, lr_x, beta, eps, vx, t)
        eta_y, vy = rmsprop_eta(A.T @ x0, lr_y, beta, eps, vy, t)
        dx, dy = dense_step(A, x0, y0, eta_x, eta_y, solve_max)
        opt.step(x @ A @ y)
        torch.testing.assert_close(x.detach() - x0, dx, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(y.detach() - y0, dy, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 4), (4, 3)])
def test_bcgd_two_steps_match_dense_solve(float64, shape):
    torch.manual_seed(2)
    A = torch.randn(*shape)
    x = torch.randn(shape[0], requires_grad=True)
    y = torch.randn(shape[1], requires_grad=True)
    opt = fastgame.BCGD([x], [y], lr_max=0.5, lr_min=0.25, tol=1e-20, atol=1e-40)
    for solve_max in (True, False):
        x0, y0 = x.detach().clone(), y.detach().clone()
        dx, dy = dense_step(A, x0, y0, torch.full(x0.shape, 0.5), torch.full(y0.shape, 0.25), solve_max)
        opt.step(x @ A @ y)
        torch.testing.assert_close(x.detach() - x0, dx, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(y.detach() - y0, dy, rtol=1e-10, atol=1e-12)


def test_bcgd_update_max_moves_one_player(float64):
    torch.manual_seed(3)
    A = torch.randn(3, 3)
    x = torch.randn(3, requires_grad=True)
    y = torch.randn(3, requires_grad=True)
    x0, y0 = x.detach().clone(), y.detach().clone()
    fastgame.BCGD([x], [y], lr_max=0.5, lr_min=0.5, update_max=True, tol=1e-20).step(x @ A @ y)
    dx, _ = dense_step(A, x0, y0, torch.full((3,), 0.5), torch.full((3,), 0.5), True)
    torch.testing.assert_close(x.detach() - x0, dx, rtol=1e-10, atol=1e-12)
    assert torch.equal(y.detach(), y0)
