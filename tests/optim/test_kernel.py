"""lintorch.optim.kernel: the kernel preconditioner applies the regularized Gram inverse."""
import pytest
import torch

from tests.optim.conftest import ListLoader, wide_problem


@pytest.mark.parametrize("rank", [256, 12])
def test_kernel_preconditioner_applies_the_regularized_gram_inverse(rank):
    """rank >= N: exactly (X^T X / N + 2 reg I)^-1 on each class's weight row, as the D x D factor
    gives it (computed here by a dense solve); rank < N: the same on the kept top directions (the
    rest at the smallest kept eigenvalue), a symmetric positive definite operator."""
    from lintorch.optim.kernel import kernel_preconditioners
    x, y = wide_problem()
    regs = torch.tensor([1e-4, 1e-1], dtype=torch.float64)
    pre, why = kernel_preconditioners(ListLoader(x, y, 16), regs, 3, rank=rank)
    assert why is None and len(pre) == 2
    v = torch.randn(5, 3 * 91, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for k, r in enumerate(regs.tolist()):
        M = x.T @ x / len(y) + 2 * r * torch.eye(90, dtype=torch.float64)
        u = pre(v[:, None], [k] * len(v))[:, 0]
        rows_v, rows_u = v.view(5, 3, 91), u.view(5, 3, 91)               # each class: 90 weights, its bias
        assert torch.equal(rows_u[..., 90], rows_v[..., 90])               # the bias is left as it is
        Wv, Wu = rows_v[..., :90].reshape(-1, 90), rows_u[..., :90].reshape(-1, 90)
        if rank >= len(y):
            torch.testing.assert_close(Wu, torch.linalg.solve(M, Wv.T).T, rtol=1e-6, atol=1e-8)
        else:
            E = torch.zeros(90, 273, dtype=torch.float64)
            E[:, :90] = torch.eye(90, dtype=torch.float64)                # unit vectors in class 0's weights
            A = pre(E[:, None], [k] * 90)[:, 0, :90]                                      # the operator on one class's row
            torch.testing.assert_close(A, A.T, rtol=1e-8, atol=1e-10)
            assert torch.linalg.eigvalsh(A).min() > 0
    assert kernel_preconditioners(ListLoader(x, y, 16), regs, 3, memory=1000)[0] is None    # too big: refused
