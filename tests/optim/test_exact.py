"""lintorch.optim.exact: the least-squares path against the normal equations solved directly in float64,
primal against dual, eigh against Cholesky, the gradient at the solution, float32 blocks."""
import pytest
import torch

from lintorch.optim import exact


def problem(n, d, c=4, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3, d, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    X[torch.arange(n), y % d] += 1.5                                  # a learnable signal
    return X + offset, y


def normal_equations(X, y, c, reg):
    """[W b] from the augmented normal equations ([X 1]^T [X 1] / N + reg diag(1.., 0)) theta = [X 1]^T T / N."""
    N, D = X.shape
    Xa = torch.cat([X, torch.ones(N, 1, dtype=X.dtype)], 1)
    P = torch.eye(D + 1, dtype=X.dtype)
    P[D, D] = 0
    theta = torch.linalg.solve(Xa.T @ Xa / N + reg * P, Xa.T @ exact.targets(y, c) / N)   # (D + 1, C)
    return theta[:D].T, theta[D]


@pytest.mark.parametrize("n,d", [(60, 9), (40, 25)])
@pytest.mark.parametrize("method", ["eigh", "cholesky"])
def test_primal_path_is_the_normal_equations_solution(n, d, method):
    X, y = problem(n, d)
    regs = [1e-3, 0.1, 2.0]
    batches = [(X[i:i + 7], y[i:i + 7]) for i in range(0, n, 7)]       # uneven row blocks
    W, b, f = exact.primal_path(exact.gram_stats(batches, 4, block=4), regs, method)
    assert W.shape == (3, 4, d) and b.shape == (3, 4) and f.shape == (3,)
    for r, reg in enumerate(regs):
        W0, b0 = normal_equations(X, y, 4, reg)
        assert torch.allclose(W[r], W0, atol=1e-10) and torch.allclose(b[r], b0, atol=1e-10)
        assert f[r].item() == pytest.approx(exact.objective(W0, b0, X, y, reg), rel=1e-10)


@pytest.mark.parametrize("n,d", [(30, 50), (50, 20)])
def test_dual_equals_primal_in_both_shapes(n, d):
    X, y = problem(n, d, seed=1)
    regs = [0.01, 0.3]
    Wp, bp, fp = exact.primal_path(exact.gram_stats([(X, y)], 4), regs, "cholesky")
    blocks = lambda: (X[:, j:j + 8] for j in range(0, d, 8))        # noqa: E731  (column blocks)
    for method in ("eigh", "cholesky"):
        Wd, bd, fd = exact.dual_path(blocks, y, 4, regs, method)
        assert torch.allclose(Wd, Wp, atol=1e-9) and torch.allclose(bd, bp, atol=1e-9)
        assert torch.allclose(fd, fp, rtol=1e-9)
    W, b, f = exact.path(X, y, 4, regs)                             # picks the dual when D > N
    assert torch.allclose(W, Wp, atol=1e-9)


def test_gradient_vanishes_at_the_solution():
    X, y = problem(80, 12, seed=2)
    (W,), (b,), _ = exact.path(X, y, 4, [0.05])
    W, b = W.clone().requires_grad_(), b.clone().requires_grad_()
    T = exact.targets(y, 4)
    f = ((X @ W.T + b - T).square().sum() / 80) + 0.05 * W.square().sum()
    gW, gb = torch.autograd.grad(f, (W, b))
    assert gW.abs().max() < 1e-12 and gb.abs().max() < 1e-12
    with torch.no_grad():                                            # and it is a minimum
        assert exact.objective(W + 1e-3 * torch.randn_like(W), b, X, y, 0.05) > float(f)


def test_float32_blocks_with_a_large_offset_match_float64():
    """The first block's mean is subtracted before the float32 products, so an offset of 1e3 costs nothing."""
    X, y = problem(400, 16, seed=3, offset=1e3)
    W64, b64, _ = exact.path(X, y, 4, [0.1])
    X32 = X.float()
    W32, b32, _ = exact.primal_path(exact.gram_stats([(X32[i:i + 64], y[i:i + 64]) for i in range(0, 400, 64)], 4),
                                    [0.1])
    assert torch.allclose(W32, W64, atol=1e-4 * W64.abs().max().item())
    assert torch.allclose(b32, b64, atol=1e-4 * b64.abs().max().item())


def test_auto_picks_by_the_measured_cost_and_bad_input_is_refused():
    assert exact._check([1.0] * 3, "auto")[1] == "cholesky"
    assert exact._check([1.0] * exact.EIGH_COST, "auto")[1] == "eigh"
    X, y = problem(20, 30)                                           # D > N: the Gram is singular
    for regs, match in [([-1.0], ">= 0"), ([float("nan")], "finite"), ([], "finite")]:
        with pytest.raises(ValueError, match=match):
            exact.path(X, y, 4, regs)
    with pytest.raises(ValueError, match="singular"):
        exact.primal_path(exact.gram_stats([(X, y)], 4), [0.0], "cholesky")
    with pytest.raises(ValueError, match="singular"):
        exact.primal_path(exact.gram_stats([(X, y)], 4), [0.0], "eigh")
    with pytest.raises(ValueError, match="unknown exact method"):
        exact.path(X, y, 4, [1.0], method="qr")


def test_gram_stats_takes_batches_of_any_size_in_any_order():
    """A later block larger than the first (the float64 copy is made again, larger), a tiny one, and
    the column block chosen from D: the same statistics as one block."""
    X, y = problem(300, 20, seed=4)
    X32 = X.float()
    one = exact.gram_stats([(X32, y)], 4)
    cuts = [0, 7, 8, 200, 300]
    many = exact.gram_stats([(X32[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])], 4)
    assert one.n == many.n == 300
    for name in ("mean", "A", "B", "t_mean"):
        torch.testing.assert_close(getattr(many, name), getattr(one, name), rtol=1e-5, atol=1e-5)
    assert many.tt == pytest.approx(one.tt, rel=1e-12)


def test_gram_stats_reads_labels_of_any_integer_dtype():
    X, y = problem(120, 6, seed=6)
    a, b = exact.gram_stats([(X, y)], 4), exact.gram_stats([(X, y.to(torch.int32))], 4)
    assert torch.equal(a.B, b.B) and torch.equal(a.t_mean, b.t_mean) and a.tt == b.tt


def test_class_sums_by_index_on_the_cpu_equal_the_one_hot_product_used_on_cuda():
    X, y = problem(90, 5, seed=7)
    S, counts = torch.zeros(4, 5, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    exact.add_class_sums(S, counts, X, y)
    onehot = torch.nn.functional.one_hot(y, 4).double()
    torch.testing.assert_close(S, onehot.T @ X, rtol=1e-14, atol=1e-14)
    assert torch.equal(counts, onehot.sum(0))
