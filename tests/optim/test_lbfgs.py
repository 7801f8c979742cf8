"""lintorch.optim.lbfgs: batched L-BFGS equals K single runs, reaches Newton's and scikit-learn's optima,
preconditioners, host syncs."""
import math

import pytest
import torch

from lintorch import functional as LF
from lintorch.objective import Objective
from lintorch.optim.lbfgs import full_batch_evaluator, lbfgs
from lintorch.optim.precondition import Preconditioner
from lintorch.verify.references import reference_total, softmax_objective
from tests.optim.conftest import ListLoader, wide_problem


@pytest.fixture(autouse=True)
def one_thread():
    """The problems are tiny: thread hand-offs, not flops, would dominate on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    assert not (batched.W.is_inference() or batched.b.is_inference())    # the rounds ran under inference_mode
    batched.W.add_(0)                                                 # ordinary tensors: in place, autograd
    for k in range(3):
        single = lbfgs(full_batch_evaluator(loader, Objective(reg=float(regs[k]))), *zeros(1, 4, 6), tol=1e-6,
                       line_search=line_search)
        assert single.iterations[0] == batched.iterations[k] and single.evaluations[0] == batched.evaluations[k]
        torch.testing.assert_close(torch.tensor(single.traces[0]), torch.tensor(batched.traces[k]),
                                   rtol=1e-12, atol=0)
        torch.testing.assert_close(single.W[0], batched.W[k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(single.b[0], batched.b[k], rtol=1e-9, atol=1e-12)


class Ascent(Preconditioner):
    """M^-1 = -I, the bias's corner included: with no pairs, H0 = M^-1 points uphill; with pairs, H0 =
    gamma M^-1 and gamma = s.y / y.M^-1 y < 0 cancel the sign."""

    def solve(self, W, members):
        return -W


def test_a_direction_that_does_not_descend_turns_to_steepest_descent():
    """The first direction, -M^-1 g = +g, climbs: the member drops it (one wasted evaluation), steps along -g,
    and still reaches Newton's optimum; a member whose -g does not descend either stalls instead of looping."""
    x, y = problem(seed=1)
    W_n, b_n, f_n = newton(x, y, 1e-2, 4)
    evaluate = full_batch_evaluator(ListLoader(x, y, 50), Objective(reg=1e-2))
    trials = []

    def recorded(W, b, active):
        trials.append(torch.cat([W, b[..., None]], -1).clone())
        return evaluate(W, b, active)
    climbing = lbfgs(recorded, *zeros(1, 4, 6), tol=1e-8, ftol=0.0, precondition=Ascent(4, 6, 1))
    assert climbing.status == ["converged"]
    torch.testing.assert_close(climbing.W[0], W_n, rtol=0, atol=1e-6)
    torch.testing.assert_close(climbing.b[0] - climbing.b[0].mean(), b_n - b_n.mean(), rtol=0, atol=1e-6)
    assert abs(float(climbing.f[0]) - f_n) < 1e-12
    _, gW, gb = evaluate(*zeros(1, 4, 6), torch.tensor([0]))
    g = torch.cat([gW, gb[..., None]], -1)                            # at the start, theta 0
    torch.testing.assert_close(trials[1], g)                          # the two-loop's d = -M^-1 g = +g, step 1
    torch.testing.assert_close(trials[2], -g)                         # dropped: -g, step 1
    assert int(climbing.evaluations[0]) == len(trials)

    def flat_then_nan(W, b, active):                                  # g.d is NaN along any direction
        f = (W.square().sum((1, 2)) + b.square().sum(1)) * math.nan
        return f, W * math.nan, b * math.nan
    assert lbfgs(flat_then_nan, *zeros(1, 2, 3)).status == ["nonfinite"]


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


def textbook_direction(g, pairs, Minv=None):
    """Nocedal & Wright's Algorithm 7.4 for one member, pairs [(s, y)] oldest first, H0 = gamma M^-1
    (M^-1 dense, the identity when None), gamma = s.y / y.M^-1 y of the newest pair, 1 without pairs."""
    Minv = torch.eye(len(g), dtype=g.dtype) if Minv is None else Minv
    q, alphas = g.clone(), []
    for s, y in reversed(pairs):
        alphas.append((s @ q) / (s @ y))
        q = q - alphas[-1] * y
    gamma = (pairs[-1][0] @ pairs[-1][1]) / (pairs[-1][1] @ Minv @ pairs[-1][1]) if pairs else 1.0
    r = gamma * (Minv @ q)
    for (s, y), a in zip(pairs, reversed(alphas)):
        r = r + (a - (y @ r) / (s @ y)) * s
    return -r


class DensePreconditioner(Preconditioner):
    """M_k^-1 given as dense (K, D, D) matrices, on each class's weights; the bias copied."""

    def __init__(self, Minv, C):
        super().__init__(C, Minv.shape[-1], len(Minv))
        self.Minv = Minv

    def solve(self, W, members):                                      # rows of D + 1: weights, bias
        return torch.cat([W[..., :-1] @ self.Minv[members], W[..., -1:]], -1)

    def full(self, k):                                                # the (P, P) operator of member k
        one = torch.ones(1, 1, dtype=torch.float64)
        return torch.block_diag(*[torch.block_diag(self.Minv[k], one)] * self.C)


@pytest.mark.parametrize("preconditioned", [False, True])
def test_the_batched_two_loop_recursion_is_each_members_own(preconditioned):
    """Members with 4, 2 and 0 pairs in one (K, m, P) history (empty slots first, not live) get the direction
    each would get alone, from the textbook recursion."""
    from lintorch.optim.lbfgs import two_loop
    g = torch.Generator().manual_seed(0)
    K, m, C, D = 3, 4, 2, 5
    P = C * D + C
    S = torch.randn(K, m, P, generator=g, dtype=torch.float64)
    Y = S + 0.2 * torch.randn(K, m, P, generator=g, dtype=torch.float64)
    rho = 1 / torch.linalg.vecdot(S, Y)
    held = [4, 2, 0]
    for k, n in enumerate(held):
        rho[k, :m - n] = 0
    grad = torch.randn(K, P, generator=g, dtype=torch.float64)
    A = torch.randn(K, D, D, generator=g, dtype=torch.float64)
    pre = DensePreconditioner(torch.linalg.inv(A @ A.mT + torch.eye(D, dtype=torch.float64)), C)
    d = two_loop(grad, S, Y, rho > 0, pre if preconditioned else None, list(range(K)))
    for k, n in enumerate(held):
        pairs = list(zip(S[k, m - n:], Y[k, m - n:]))
        expected = textbook_direction(grad[k], pairs, pre.full(k) if preconditioned else None)
        torch.testing.assert_close(d[k], expected, rtol=1e-10, atol=1e-12)
    full = two_loop(grad[:1], S[:1], Y[:1], None, pre if preconditioned else None, [0])   # live=None: all hold pairs
    torch.testing.assert_close(full[0], d[0], rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- --precondition gram

def correlated_problem(N=300, D=12, C=3, seed=5):
    """Inputs with strongly correlated columns (condition number of X^T X about 1e5)."""
    x, y = problem(N, D, C, seed)
    g = torch.Generator().manual_seed(seed)
    A = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0]
    return (x @ torch.diag(torch.logspace(0, -2.5, D, dtype=torch.float64)) @ A) * 3, y


@pytest.mark.parametrize("factor", [True, False], ids=["cholesky-factor", "inverse"])
def test_gram_preconditioner_solves_the_regularized_gram_system(factor, monkeypatch):
    """M_k^-1 v by the Cholesky factor's two triangular solves (large D), or by M_k^-1 itself (small D)."""
    from lintorch.optim import precondition
    monkeypatch.setattr(precondition, "INVERSE_MAX_D", 11 if factor else 12)
    x, y = correlated_problem()
    regs = torch.tensor([1e-4, 1e-1], dtype=torch.float64)
    pre, why = precondition.gram_preconditioners(ListLoader(x, y, 70), regs, 3, block=5)   # 12 columns: blocks 5, 5, 2
    assert why is None and len(pre) == 2 and pre.factor == factor
    v = torch.randn(3 * 13, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for k, r in enumerate(regs.tolist()):
        M = x.T @ x / len(y) + 2 * r * torch.eye(12, dtype=torch.float64)
        u = pre(v[None, None], [k])[0, 0].view(3, 13)                  # each class: 12 weights, its bias
        torch.testing.assert_close(u[:, :12], torch.linalg.solve(M, v.view(3, 13)[:, :12].T).T)
        assert torch.equal(u[:, 12], v.view(3, 13)[:, 12])              # the bias is left as it is
    assert precondition.gram_preconditioners(ListLoader(x, y, 70), regs, 3, memory=1000)[0] is None   # too big: refused


def test_gram_preconditioners_apply_to_any_members_together():
    """Every member, most of them (the others' factors idle) or a few (theirs gathered): each row gets its own
    member's M^-1."""
    from lintorch.optim.precondition import gram_preconditioners
    x, y = correlated_problem()
    regs = torch.logspace(-4, -1, 5, dtype=torch.float64)
    pre, _ = gram_preconditioners(ListLoader(x, y, 70), regs, 3)
    v = torch.randn(5, 2, 3 * 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for members in ([0, 1, 2, 3, 4], [0, 2, 3, 4], [1, 3], [4]):
        u = pre(v[members], members)
        for j, k in enumerate(members):
            M = x.T @ x / len(y) + 2 * float(regs[k]) * torch.eye(12, dtype=torch.float64)
            rows_v, rows_u = v[k].view(2, 3, 13), u[j].view(2, 3, 13)
            Wv = rows_v[..., :12].reshape(-1, 12)
            torch.testing.assert_close(rows_u[..., :12].reshape(-1, 12), torch.linalg.solve(M, Wv.T).T)
            assert torch.equal(rows_u[..., 12], rows_v[..., 12])
        torch.testing.assert_close(pre[members](v[members], list(range(len(members)))), u)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["softmax", "squared_hinge"])
def test_preconditioning_reaches_the_same_optimum_in_far_fewer_iterations(loss):
    from lintorch.optim.precondition import gram_preconditioners
    x, y = correlated_problem()
    kw = dict(loss="svm", squared=True) if loss == "squared_hinge" else {}
    # plain L-BFGS takes 100-900 iterations here, preconditioned 23-29 (at reg 1e-5 and 1e-3: 250-2,100 against
    # 27-33, 3x the time); one batch: each batch costs Python time (sums over batches:
    # test_batched_equals_independent_single_runs); 5 batches of 70 took 3x as long
    regs = torch.tensor([1e-3, 1e-2], dtype=torch.float64)
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
                       ftol=0.0, max_iter=5000, precondition=pre[[k]])
        assert int(single.iterations[0]) == int(fast.iterations[k])
        torch.testing.assert_close(single.W[0], fast.W[k], rtol=1e-9, atol=1e-12)


def test_preconditioned_lbfgs_reaches_newtons_optimum():
    from lintorch.optim.precondition import gram_preconditioners
    x, y = problem(seed=1)
    W_n, b_n, f_n = newton(x, y, 1e-2, 4)
    loader = ListLoader(x, y, 40)
    pre, _ = gram_preconditioners(loader, [1e-2], 4)
    res = lbfgs(full_batch_evaluator(loader, Objective(reg=1e-2)), *zeros(1, 4, 6), tol=1e-8, ftol=0.0, precondition=pre)
    assert res.status == ["converged"] and abs(res.f[0].item() - f_n) <= 1e-14 * abs(f_n)
    torch.testing.assert_close(res.W[0], W_n, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rank", [256, 12])
def test_kernel_preconditioning_reaches_the_same_optimum_in_fewer_iterations_where_n_is_below_d(rank):
    from lintorch.optim.kernel import kernel_preconditioners
    x, y = wide_problem()
    regs = torch.tensor([1e-2, 1e-1], dtype=torch.float64)
    loader = ListLoader(x, y, len(y))        # one batch: the iterations cost Python time per batch (4 batches of 16: 1.6x as long)
    pre, _ = kernel_preconditioners(loader, regs, 3, rank=rank)
    plain = lbfgs(full_batch_evaluator(loader, Objective(reg=regs)), *zeros(2, 3, 90), tol=1e-7, ftol=0.0, max_iter=5000)
    fast = lbfgs(full_batch_evaluator(loader, Objective(reg=regs)), *zeros(2, 3, 90), tol=1e-7, ftol=0.0,
                 max_iter=5000, precondition=pre)
    assert plain.status == fast.status == ["converged"] * 2
    torch.testing.assert_close(fast.f, plain.f, rtol=1e-6, atol=0)        # both within tol of the optimum
    # fewer on this toy (about 1.4x to 3x; 7x on 2,667 CIFAR-10 rows, where it is meant to pay)
    assert (fast.iterations < plain.iterations).all(), (fast.iterations, plain.iterations)


def test_an_lbfgs_evaluation_makes_no_host_sync_at_any_n(emulated):
    from lintorch.data import Preprocess
    from lintorch.data.loaders import TensorLoader
    from lintorch.data.split import Split
    from lintorch.objective import Objective
    from lintorch.optim.lbfgs import full_batch_evaluator
    counts = {}
    for N in (1024, 4096):                          # 2 and 8 batches of 512
        g = torch.Generator().manual_seed(0)
        x, y = torch.randint(0, 256, (N, 3, 4, 4), dtype=torch.uint8, generator=g), torch.randint(0, 3, (N,), generator=g)
        with emulated() as mode:
            loader = TensorLoader(Split(x, y), Preprocess.fit(x), 512, "cuda", shuffle=False)
            evaluate = full_batch_evaluator(loader, Objective("softmax", reg=torch.tensor([1e-3, 1e-2])))
            W = torch.zeros(2, 3, 48, device="cuda", dtype=torch.float64)
            b = torch.zeros(2, 3, device="cuda", dtype=torch.float64)
            with mode.counting() as inside:
                f, dW, db = evaluate(W, b, torch.tensor([0, 1]))
            assert f.device.type == dW.device.type == "cuda"
        counts[N] = sum(inside.values())
    assert counts == {1024: 0, 4096: 0}, counts


def test_lbfgs_reads_each_evaluations_values_once(emulated):
    """The driver: one read of the K objective values per evaluation, not one per member."""
    from lintorch.optim.lbfgs import lbfgs
    def quadratic(W, b, active):                    # f = w^T A w / 2 per member, W (A, 1, 2), b (A, 1)
        w = W.reshape(len(active), 2)
        return 0.5 * ((w @ A) * w).sum(1) + b.square().sum(1), (w @ A).reshape(W.shape), 2 * b
    with emulated() as mode:
        A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64).to("cuda")
        W0, b0 = torch.ones(3, 1, 2, device="cuda", dtype=torch.float64), torch.ones(3, 1, device="cuda")
        result = lbfgs(quadratic, W0, b0, tol=1e-8)
    assert set(result.status) == {"converged"}
    reads = sum(n for (kind, w), n in mode.syncs.items() if kind == "tolist" and w.startswith("lintorch/optim/lbfgs"))
    assert reads == result.calls, mode.table()


def test_the_lbfgs_two_loop_recursion_makes_no_host_sync(emulated):
    """optim.lbfgs.two_loop: -H g for all members at once from their histories; nothing read back."""
    from lintorch.optim.lbfgs import two_loop
    g = torch.Generator().manual_seed(0)
    S = torch.randn(3, 5, 20, generator=g, dtype=torch.float64)
    Y = S + 0.1 * torch.randn(3, 5, 20, generator=g, dtype=torch.float64)
    rho = 1 / torch.linalg.vecdot(S, Y)
    rho[1, :2] = 0                                       # member 1 holds 3 pairs
    grad = torch.randn(3, 20, generator=g, dtype=torch.float64)
    expected = two_loop(grad, S, Y, rho > 0)
    with emulated() as mode:
        Sc, Yc, rc, gc = (t.to("cuda") for t in (S, Y, rho, grad))
        with mode.counting() as inside:
            d = two_loop(gc, Sc, Yc, rc > 0)
        assert sum(inside.values()) == 0, mode.table()
        torch.testing.assert_close(d.cpu(), expected)


def test_an_lbfgs_round_makes_one_host_sync_whatever_k_and_n(emulated):
    """A round (one evaluate call of all live members, their line searches' decisions, the new directions of
    those that accepted a step) reads its numbers back once, whatever K and N (reading the line searches' and
    curvature tests' floats member by member made 5 to 37 per round at K 1 to 16)."""
    from lintorch.data import Preprocess
    from lintorch.data.loaders import TensorLoader
    from lintorch.data.split import Split
    from lintorch.objective import Objective
    from lintorch.optim.lbfgs import full_batch_evaluator, lbfgs
    for N, K in ((1000, 1), (1000, 6), (3000, 6)):
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 3, (N,), generator=g)
        x = (torch.randint(0, 200, (N, 3, 4, 4), dtype=torch.uint8, generator=g) + 20 * y.view(-1, 1, 1, 1)).to(torch.uint8)
        regs = torch.logspace(-4, -1, K, dtype=torch.float64)
        with emulated() as mode:
            loader = TensorLoader(Split(x, y), Preprocess.fit(x), 512, "cuda", shuffle=False)
            evaluate = full_batch_evaluator(loader, Objective("softmax", reg=regs))
            W0, b0 = torch.zeros(K, 3, 48, device="cuda", dtype=torch.float64), torch.zeros(K, 3, device="cuda")
            with mode.counting() as inside:
                result = lbfgs(evaluate, W0, b0, tol=1e-5)
        assert int(result.iterations.sum()) >= 5 * K and result.calls >= 15, (N, K, result.iterations)
        assert sum(inside.values()) == result.calls, f"N {N} K {K}, {result.calls} rounds:\n{mode.table()}"


def test_cholesky_of_a_nan_gram_is_an_error_not_a_hang(deadline):
    from lintorch.optim.precondition import _cholesky
    G = torch.eye(3, dtype=torch.float64)
    G[1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN/inf"):
        _cholesky(G, 1e-8)
    G[1, 2] = float("inf")
    with pytest.raises(FloatingPointError):
        _cholesky(G, 1e-8)
    with pytest.raises(FloatingPointError, match="no Cholesky factor"):      # finite but hopeless: bounded
        _cholesky(-1e300 * torch.eye(3, dtype=torch.float64), 1e-8)
    L = _cholesky(torch.zeros(3, 3, dtype=torch.float64), 1e-8)           # singular: shifted until it exists
    assert torch.allclose(L @ L.T, 1e-8 * torch.eye(3, dtype=torch.float64))


def test_gram_preconditioner_on_non_finite_inputs_is_an_error():
    from lintorch.optim.precondition import gram_preconditioners

    class Loader:
        def batches(self, epoch=0):
            x = torch.randn(8, 3)
            x[2, 1] = float("inf")
            yield x, torch.zeros(8, dtype=torch.long)
    with pytest.raises(FloatingPointError):
        gram_preconditioners(Loader(), [1e-3], 2)


def test_lbfgs_reaches_scikit_learns_one_vs_rest_logistic_regression():
    """The mapping: scikit-learn's one-vs-rest LogisticRegression(C=C_sk) minimizes, for each class c
    on its own, 1/2 ||w_c||^2 + C_sk sum_i log(1 + exp(-t_ic (w_c x_i + b_c))) (b_c unpenalized).
    Summed over c and divided by C_sk N that is lintorch's (1/N) sum_i L_i + reg ||W||^2 at
    reg = 1 / (2 C_sk N); the classes do not interact, so the joint optimum is the C binary ones."""
    sk_multiclass = pytest.importorskip("sklearn.multiclass", reason="scikit-learn not installed")
    from sklearn.linear_model import LogisticRegression
    torch.set_num_threads(1)
    x, y = problem(N=300, D=8, C=3, seed=2)
    C_sk, N = 0.5, len(y)
    reg = 1 / (2 * C_sk * N)
    sk = sk_multiclass.OneVsRestClassifier(LogisticRegression(C=C_sk, tol=1e-10, max_iter=10000)).fit(x.numpy(),
                                                                                                       y.numpy())
    W_sk = torch.stack([torch.from_numpy(e.coef_[0]) for e in sk.estimators_])           # (C, D)
    b_sk = torch.stack([torch.from_numpy(e.intercept_) for e in sk.estimators_])[:, 0]   # (C,)
    f_sk = reference_total(x, W_sk, b_sk, y, "logistic", reg=reg).item()
    res = lbfgs(full_batch_evaluator(ListLoader(x, y, 128), Objective("logistic", reg=reg)), *zeros(1, 3, 8),
                tol=1e-8, ftol=0.0)
    assert res.status == ["converged"]
    assert res.f[0].item() <= f_sk * (1 + 1e-10)
    torch.testing.assert_close(res.W[0], W_sk, rtol=0, atol=1e-5)
    torch.testing.assert_close(res.b[0], b_sk, rtol=0, atol=1e-5)


def ridge_problem(N=300, D=8, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = (x[:, :C] + 0.8 * torch.randn(N, C, generator=g, dtype=torch.float64)).argmax(1)
    return x, y


class Batches:
    def __init__(self, x, y, size):
        self.x, self.y, self.size = x, y, size

    def batches(self, epoch=0, start=0):
        for i in range(0, len(self.y), self.size):
            yield self.x[i:i + self.size], self.y[i:i + self.size]


def test_lbfgs_reaches_scikit_learns_ridge_classifier():
    """(1/N) sum_i sum_c (s_ic - t_ic)^2 + reg sum W^2 is RidgeClassifier's objective divided by N at
    alpha = N reg (bias unpenalized in both): the minima must agree."""
    linear_model = pytest.importorskip("sklearn.linear_model", reason="scikit-learn is a test-only comparison")
    x, y = ridge_problem()
    N, reg = len(y), 1e-2
    res = lbfgs(full_batch_evaluator(Batches(x, y, 128), Objective("squared", reg=reg)),
                torch.zeros(1, 3, 8, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64), tol=1e-10,
                ftol=0.0, max_iter=500)
    assert res.status == ["converged"]
    ridge = linear_model.RidgeClassifier(alpha=N * reg, solver="cholesky").fit(x.numpy(), y.numpy())
    torch.testing.assert_close(res.W[0], torch.from_numpy(ridge.coef_), rtol=0, atol=1e-7)
    torch.testing.assert_close(res.b[0], torch.from_numpy(ridge.intercept_), rtol=0, atol=1e-7)
