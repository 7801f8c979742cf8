"""lintorch.optim.lbfgs: batched full-batch L-BFGS equals K single runs, reaches the optimum of Newton's
method and of scikit-learn's LogisticRegression (also with balanced class weights), and freezes a
non-finite member without disturbing the others. Shapes: N examples, D features, C classes, K members."""
import math

import pytest
import torch

from lintorch import functional as LF
from lintorch.optim.lbfgs import full_batch_evaluator, lbfgs
from lintorch.objective import Objective
from lintorch.verify.references import softmax_objective


@pytest.fixture(autouse=True)
def one_thread():
    """The problems are tiny: thread hand-offs, not flops, would dominate on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ListLoader:
    """Any object with batches(epoch) of (x (B, D), y (B,)) will do; this one slices tensors."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size

    def batches(self, epoch=0):
        for i in range(0, len(self.y), self.batch_size):
            yield self.x[i:i + self.batch_size], self.y[i:i + self.batch_size]


def problem(N=120, D=6, C=4, seed=0, imbalance=False):
    """Seeded float64 data with some signal: x (N, D), y (N,)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (N,), generator=g)
    if imbalance:                                                     # class 0 four times as frequent
        y = torch.where(torch.rand(N, generator=g) < 0.6, torch.zeros_like(y), y)
    centers = torch.randn(C, D, generator=g, dtype=torch.float64)
    x = centers[y] + 1.5 * torch.randn(N, D, generator=g, dtype=torch.float64)
    return x, y


def zeros(K, C, D):
    return torch.zeros(K, C, D, dtype=torch.float64), torch.zeros(K, C, dtype=torch.float64)


def newton(x, y, reg, C, class_weight=None, tol=1e-10):
    """Newton's method with the exact Hessian of the plain torch objective (references.py)."""
    D = x.shape[1]
    theta = torch.zeros(C * D + C, dtype=torch.float64)

    def f(t):
        return softmax_objective(t[:C * D].view(C, D), t[C * D:], x, y, reg, class_weight)
    for _ in range(50):
        g = torch.autograd.functional.jacobian(f, theta)
        if g.abs().max() < tol:
            break
        H = torch.autograd.functional.hessian(f, theta)
        H += 1e-12 * torch.eye(len(theta), dtype=torch.float64)       # b's softmax shift direction is flat
        theta = theta - torch.linalg.solve(H, g)
    assert g.abs().max() < tol
    return theta[:C * D].view(C, D), theta[C * D:], f(theta).item()


@pytest.mark.parametrize("line_search", ["strong_wolfe", "armijo"])
def test_batched_equals_independent_single_runs(line_search):
    x, y = problem()
    regs = torch.tensor([1e-3, 1e-2, 1e-1], dtype=torch.float64)
    loader = ListLoader(x, y, 50)
    batched = lbfgs(full_batch_evaluator(loader, Objective(reg=regs)), *zeros(3, 4, 6), tol=1e-6, line_search=line_search)
    assert batched.status == ["converged"] * 3
    assert batched.calls == int(batched.evaluations.max())           # one call per round, shared
    for k in range(3):
        single = lbfgs(full_batch_evaluator(loader, Objective(reg=float(regs[k]))), *zeros(1, 4, 6), tol=1e-6,
                       line_search=line_search)
        assert single.iterations[0] == batched.iterations[k] and single.evaluations[0] == batched.evaluations[k]
        torch.testing.assert_close(torch.tensor(single.traces[0]), torch.tensor(batched.traces[k]),
                                   rtol=1e-12, atol=0)
        torch.testing.assert_close(single.W[0], batched.W[k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(single.b[0], batched.b[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("line_search", ["strong_wolfe", "armijo"])
def test_reaches_newtons_optimum(line_search):
    x, y = problem(seed=1)
    W_n, b_n, f_n = newton(x, y, 1e-2, 4)
    # ftol=0: no stop on a relative decrease of f below 64 eps (f's rounding is reached near 1e-8)
    res = lbfgs(full_batch_evaluator(ListLoader(x, y, 40), Objective(reg=1e-2)), *zeros(1, 4, 6), tol=1e-8, ftol=0.0,
                line_search=line_search)
    assert res.status == ["converged"] and res.grad_max[0] <= 1e-8
    assert abs(res.f[0].item() - f_n) <= 1e-14 * abs(f_n)
    torch.testing.assert_close(res.W[0], W_n, rtol=0, atol=1e-6)
    b = res.b[0] - res.b[0].mean()                                    # the bias is fixed up to a constant
    torch.testing.assert_close(b, b_n - b_n.mean(), rtol=0, atol=1e-6)
    f_ref = softmax_objective(res.W[0], res.b[0], x, y, 1e-2).item()  # lintorch's f is the reference's
    assert abs(res.f[0].item() - f_ref) <= 1e-14 * abs(f_ref)


@pytest.mark.parametrize("balanced", [False, True])
def test_reaches_scikit_learns_logistic_regression_objective(balanced):
    """reg = 1 / (2 C N) makes lintorch's (1/N) sum w L + reg ||W||^2 scikit-learn's objective
    scaled by 1 / (C N); with class_weight='balanced' the weights sum to N, same scaling."""
    linear_model = pytest.importorskip("sklearn.linear_model", reason="scikit-learn not installed")
    x, y = problem(N=300, D=8, C=3, seed=2, imbalance=balanced)
    C_sk, N = 0.5, len(y)
    reg = 1 / (2 * C_sk * N)
    w = LF.balanced_class_weight(y, 3).double() if balanced else None
    sk = linear_model.LogisticRegression(C=C_sk, tol=1e-10, max_iter=10000,
                                         class_weight="balanced" if balanced else None).fit(x.numpy(), y.numpy())
    W_sk, b_sk = torch.from_numpy(sk.coef_), torch.from_numpy(sk.intercept_)
    f_sk = softmax_objective(W_sk, b_sk, x, y, reg, w).item()
    res = lbfgs(full_batch_evaluator(ListLoader(x, y, 128), Objective(reg=reg, class_weight=w)), *zeros(1, 3, 8), tol=1e-8,
                ftol=0.0)
    assert res.status == ["converged"]
    assert res.f[0].item() <= f_sk * (1 + 1e-10)
    torch.testing.assert_close(res.W[0], W_sk, rtol=0, atol=1e-5)
    if balanced:                                                      # the weights moved the optimum
        plain = lbfgs(full_batch_evaluator(ListLoader(x, y, 128), Objective(reg=reg)), *zeros(1, 3, 8), tol=1e-6)
        assert (plain.W[0] - res.W[0]).abs().max() > 1e-2
        assert (res.b[0] - res.b[0].mean())[0] < (plain.b[0] - plain.b[0].mean())[0]   # the frequent class down


def test_a_non_finite_member_is_frozen_and_the_others_unaffected():
    x, y = problem(seed=3)
    regs = torch.tensor([1e-2, 1e-2, 1e-1, 1e-3], dtype=torch.float64)
    inner = full_batch_evaluator(ListLoader(x, y, 64), Objective(reg=regs))
    seen = []

    def evaluate(W, b, active):                                       # member 2 blows up at its 6th evaluation
        seen.append(active.tolist())
        f, dW, db = inner(W, b, active)
        calls_2 = sum(2 in a for a in seen)
        if 2 in active.tolist() and calls_2 >= 6:
            j = active.tolist().index(2)
            f[j], dW[j] = math.nan, math.nan
        return f, dW, db
    W0, b0 = zeros(4, 4, 6)
    W0[1] = math.nan                                                  # member 1 is NaN from the start
    res = lbfgs(evaluate, W0, b0, tol=1e-6)
    assert res.status == ["converged", "nonfinite", "nonfinite", "converged"]
    assert res.evaluations[1] == 1 and all(1 not in a for a in seen[1:])   # frozen: never evaluated again
    assert 2 not in seen[-1] and math.isfinite(res.f[2]) and res.iterations[2] >= 1   # its last good iterate
    clean = lbfgs(full_batch_evaluator(ListLoader(x, y, 64), Objective(reg=regs[[0, 3]])), *zeros(2, 4, 6), tol=1e-6)
    torch.testing.assert_close(res.W[[0, 3]], clean.W, rtol=1e-9, atol=1e-12)
    assert res.iterations[[0, 3]].tolist() == clean.iterations.tolist()


def test_stops_on_request_and_at_max_iter():
    x, y = problem(seed=4)
    ev = full_batch_evaluator(ListLoader(x, y, 64), Objective(reg=torch.tensor([1e-3, 1e-3], dtype=torch.float64)))
    assert lbfgs(ev, *zeros(2, 4, 6), max_iter=3, tol=0.0).status == ["max_iter"] * 2
    calls = []
    res = lbfgs(ev, *zeros(2, 4, 6), tol=0.0, on_iter=lambda n, recs: calls.append(n),
                should_stop=lambda: len(calls) >= 5)
    assert res.status == ["stopped"] * 2 and res.calls == 5 == calls[-1]
    state = res.state_dict()
    assert set(state) >= {"W", "b", "f", "status"} and state["W"].shape == (2, 4, 6)


@pytest.mark.parametrize("kw,match", [({"loss": "svm"}, "hinge"), ({"penalty": "l1"}, "l1"),
                                      ({"loss": "svm", "penalty": "elasticnet"}, "hinge loss .* and the elasticnet")])
def test_nonsmooth_objectives_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        full_batch_evaluator(ListLoader(*problem(), 64), Objective(reg=1e-3, **kw))


def test_squared_hinge_converges():
    x, y = problem(seed=5)
    res = lbfgs(full_batch_evaluator(ListLoader(x, y, 64), Objective(reg=1e-2, loss="svm", squared=True)),
                *zeros(1, 4, 6), tol=1e-6)
    assert res.status == ["converged"]


# --------------------------------------------------------------------------- --precondition gram

def correlated_problem(N=300, D=12, C=3, seed=5):
    """Inputs with strongly correlated columns (condition number of X^T X about 1e5)."""
    x, y = problem(N, D, C, seed)
    g = torch.Generator().manual_seed(seed)
    A = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0]
    return (x @ torch.diag(torch.logspace(0, -2.5, D, dtype=torch.float64)) @ A) * 3, y


def test_gram_preconditioner_solves_the_regularized_gram_system():
    from lintorch.optim.lbfgs import gram_preconditioners
    x, y = correlated_problem()
    regs = torch.tensor([1e-4, 1e-1], dtype=torch.float64)
    pre, why = gram_preconditioners(ListLoader(x, y, 70), regs, 3, block=5)    # 12 columns: blocks 5, 5, 2
    assert why is None and len(pre) == 2
    v = torch.randn(3 * 12 + 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for k, r in enumerate(regs.tolist()):
        M = x.T @ x / len(y) + 2 * r * torch.eye(12, dtype=torch.float64)
        u = pre[k](v[None])[0]
        torch.testing.assert_close(u[:36].view(3, 12), torch.linalg.solve(M, v[:36].view(3, 12).T).T)
        assert torch.equal(u[36:], v[36:])                              # the bias is left as it is
    assert gram_preconditioners(ListLoader(x, y, 70), regs, 3, memory=1000)[0] is None   # too big: refused


@pytest.mark.parametrize("loss", ["softmax", "squared_hinge"])
def test_preconditioning_reaches_the_same_optimum_in_far_fewer_iterations(loss):
    from lintorch.optim.lbfgs import gram_preconditioners
    x, y = correlated_problem()
    kw = dict(loss="svm", squared=True) if loss == "squared_hinge" else {}
    regs = torch.tensor([1e-5, 1e-3], dtype=torch.float64)
    # one batch: plain L-BFGS takes 1,300-2,100 iterations here and each batch costs Python time (sums over
    # batches: test_batched_equals_independent_single_runs); 5 batches of 70 took 3x as long
    loader = ListLoader(x, y, len(y))
    pre, _ = gram_preconditioners(loader, regs, 3)
    plain = lbfgs(full_batch_evaluator(loader, Objective(reg=regs, **kw)), *zeros(2, 3, 12), tol=1e-7, ftol=0.0, max_iter=5000)
    fast = lbfgs(full_batch_evaluator(loader, Objective(reg=regs, **kw)), *zeros(2, 3, 12), tol=1e-7, ftol=0.0, max_iter=5000,
                 precondition=pre)
    assert plain.status == fast.status == ["converged"] * 2
    torch.testing.assert_close(fast.f, plain.f, rtol=1e-10, atol=0)
    assert (fast.iterations * 3 <= plain.iterations).all(), (fast.iterations, plain.iterations)
    for k in range(2):                                    # batched == single, preconditioned too
        single = lbfgs(full_batch_evaluator(loader, Objective(reg=float(regs[k]), **kw)), *zeros(1, 3, 12), tol=1e-7,
                       ftol=0.0, max_iter=5000, precondition=[pre[k]])
        assert int(single.iterations[0]) == int(fast.iterations[k])
        torch.testing.assert_close(single.W[0], fast.W[k], rtol=1e-9, atol=1e-12)


def test_preconditioned_lbfgs_reaches_newtons_optimum():
    from lintorch.optim.lbfgs import gram_preconditioners
    x, y = problem(seed=1)
    W_n, b_n, f_n = newton(x, y, 1e-2, 4)
    loader = ListLoader(x, y, 40)
    pre, _ = gram_preconditioners(loader, [1e-2], 4)
    res = lbfgs(full_batch_evaluator(loader, Objective(reg=1e-2)), *zeros(1, 4, 6), tol=1e-8, ftol=0.0, precondition=pre)
    assert res.status == ["converged"] and abs(res.f[0].item() - f_n) <= 1e-14 * abs(f_n)
    torch.testing.assert_close(res.W[0], W_n, rtol=0, atol=1e-6)


def wide_problem(N=60, D=90, C=3, seed=2):
    """N < D, correlated columns (a low-rank mix plus noise), as pixels are, classes overlapping
    (on a tiny separable set the Gram is a poor model of the softmax's curvature, which vanishes
    on confident rows: 1,535 preconditioned iterations against 65 plain at N 40, reg 1e-3):
    x (N, D) float64, y (N,)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (N,), generator=g)
    mix = torch.randn(8, D, generator=g, dtype=torch.float64)
    z = 0.5 * torch.randn(C, 8, generator=g, dtype=torch.float64)[y] + torch.randn(N, 8, generator=g, dtype=torch.float64)
    return z @ mix + torch.randn(N, D, generator=g, dtype=torch.float64), y


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
    v = torch.randn(5, 3 * 90 + 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for k, r in enumerate(regs.tolist()):
        M = x.T @ x / len(y) + 2 * r * torch.eye(90, dtype=torch.float64)
        u = pre[k](v)
        assert torch.equal(u[:, 270:], v[:, 270:])                         # the bias is left as it is
        Wv, Wu = v[:, :270].reshape(-1, 90), u[:, :270].reshape(-1, 90)
        if rank >= len(y):
            torch.testing.assert_close(Wu, torch.linalg.solve(M, Wv.T).T, rtol=1e-6, atol=1e-8)
        else:
            E = torch.zeros(90, 273, dtype=torch.float64)
            E[:, :90] = torch.eye(90, dtype=torch.float64)                # unit vectors in class 0's row
            A = pre[k](E)[:, :90]                                         # the operator on one class's row
            torch.testing.assert_close(A, A.T, rtol=1e-8, atol=1e-10)
            assert torch.linalg.eigvalsh(A).min() > 0
    assert kernel_preconditioners(ListLoader(x, y, 16), regs, 3, memory=1000)[0] is None    # too big: refused


@pytest.mark.parametrize("rank", [256, 12])
def test_kernel_preconditioning_reaches_the_same_optimum_in_fewer_iterations_where_n_is_below_d(rank):
    from lintorch.optim.kernel import kernel_preconditioners
    x, y = wide_problem()
    regs = torch.tensor([1e-2, 1e-1], dtype=torch.float64)
    loader = ListLoader(x, y, 16)
    pre, _ = kernel_preconditioners(loader, regs, 3, rank=rank)
    plain = lbfgs(full_batch_evaluator(loader, Objective(reg=regs)), *zeros(2, 3, 90), tol=1e-7, ftol=0.0, max_iter=5000)
    fast = lbfgs(full_batch_evaluator(loader, Objective(reg=regs)), *zeros(2, 3, 90), tol=1e-7, ftol=0.0,
                 max_iter=5000, precondition=pre)
    assert plain.status == fast.status == ["converged"] * 2
    torch.testing.assert_close(fast.f, plain.f, rtol=1e-6, atol=0)        # both within tol of the optimum
    # fewer on this toy (about 1.4x to 3x; 7x on 2,667 CIFAR-10 rows, where it is meant to pay)
    assert (fast.iterations < plain.iterations).all(), (fast.iterations, plain.iterations)
