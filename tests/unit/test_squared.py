"""The squared loss (one-vs-rest least squares on +-1 targets): its hand-written backward against an
independent reference, finite differences and torch.autograd.gradcheck; the objective's step-0 value;
the trained minimum against scikit-learn's RidgeClassifier (alpha = N * reg); train.py with sgd, gd
and lbfgs."""
import math

import pytest
import torch

from lintorch import functional as LF
from lintorch import gradcheck as G
from lintorch.optim.lbfgs import full_batch_evaluator, lbfgs
from lintorch.objective import Objective
from lintorch.verify.references import per_model, squared_reference
from tests.helpers import read_json, train


def scores(*lead, N=7, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, N, C, generator=g, dtype=torch.float64), torch.randint(0, C, (N,), generator=g)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("weighted", [False, True])
def test_forward_and_backward_match_the_reference(reduction, lead, weighted):
    s, y = scores(*lead)
    w = torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=torch.float64) if weighted else None
    v = torch.rand(LF.squared_loss(s, y, reduction, class_weight=w).shape, dtype=torch.float64) + 0.5
    a, r = s.clone().requires_grad_(), s.clone().requires_grad_()
    ours = LF.squared_loss(a, y, reduction, class_weight=w)
    ref = per_model(squared_reference)(r, y, reduction, class_weight=w)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (ga,), (gr,) = torch.autograd.grad((ours * v).sum(), a), torch.autograd.grad((ref * v).sum(), r)
    torch.testing.assert_close(ga, gr, rtol=1e-12, atol=1e-12)


def test_the_formula_by_hand():
    """s = 0 against +-1 targets: every L_i = C; one score moved to its target lowers L_i by 1."""
    s, y = torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 2])
    assert LF.squared_loss(s, y, "none").tolist() == [3.0, 3.0]
    s[0, 0], s[1, 0] = 1.0, -1.0
    assert LF.squared_loss(s, y, "none").tolist() == [2.0, 2.0]


def test_backward_matches_finite_differences():
    s, y = scores(N=6, C=5, seed=1)
    a = s.clone().requires_grad_()
    (grad,) = torch.autograd.grad(LF.squared_loss(a, y), a)
    # centered differences are exact on a quadratic: only rounding (eps |L| / h ~ 1e-11) is left
    numeric = G.numeric_gradient(lambda t: LF.squared_loss(t, y), s.clone(), h=1e-4)
    assert float(G.rel_error(grad, numeric).max()) < 1e-8


def test_gradcheck():
    s, y = scores(2, N=5, C=3, seed=2)
    w = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(lambda t: LF.squared_loss(t, y, reduction, class_weight=w),
                                        (s.clone().requires_grad_(),))


def test_the_gradient_check_catches_a_wrong_squared_backward():
    """lintorch.gradcheck's squared cases fail when the backward is off by 10%."""
    class Off(torch.autograd.Function):
        @staticmethod
        def forward(s, y, reduction, class_weight):
            return LF.squared_forward(s, y, reduction, class_weight)[0]

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])
            ctx.y, ctx.reduction, ctx.w = inputs[1], inputs[2], inputs[3]

        @staticmethod
        def backward(ctx, grad):
            (s,) = ctx.saved_tensors
            _, resid, losses = LF.squared_forward(s, ctx.y, ctx.reduction, ctx.w)
            return 1.1 * LF.squared_backward(resid, losses, ctx.y, grad, ctx.reduction, ctx.w), None, None, None

    broken = {"squared_loss": lambda s, y, reduction="mean", class_weight=None: Off.apply(s, y, reduction,
                                                                                          class_weight)}
    cases = [c for c in G.make_cases(0, broken) if c.name.startswith("total[squared_loss")]
    assert cases and all(not G.check_autograd(c, torch.float64).passed for c in cases)
    assert all(G.check_autograd(c, torch.float64).passed for c in G.make_cases(0)
               if c.name.startswith("total[squared_loss"))


def test_objective_step_zero_value_and_smoothness():
    """With tiny weights the scores are ~0, so the mean loss is about C (train.py's step-0 check)."""
    obj = Objective("squared", reg=0.0)
    assert obj.smooth and obj.expected_initial_loss(10) == 10.0
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 30, generator=g), torch.randint(0, 10, (200,), generator=g)
    W, b = 1e-4 * torch.randn(10, 30, generator=g), torch.zeros(10)
    _, data, _, dW, db = obj.loss_and_grad(x, W, b, y)
    assert math.isclose(float(data), 10.0, rel_tol=1e-2)
    # the bias gradient at s = 0 is 2 (0 - t) averaged over N: -2 (2 n_c / N - 1) ... = 2 - 4 n_c / N
    counts = torch.bincount(y, minlength=10).float()
    torch.testing.assert_close(db, 2 - 4 * counts / 200, rtol=0, atol=2e-3)


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


@pytest.mark.parametrize("optimizer", ["sgd", "gd", "lbfgs"])
def test_train_py_trains_the_squared_loss(optimizer, tmp_path, capsys):
    extra = {"sgd": ["--epochs", "2"], "gd": ["--epochs", "5"], "lbfgs": ["--max-iter", "30"]}[optimizer]
    assert train("--dataset", "synthetic", "--image-size", "16", "--val-size", "500", "--loss", "squared", "--quiet",
                 "--optimizer", optimizer, *extra, "--logdir", tmp_path / optimizer) == 0
    out = capsys.readouterr().out
    assert "warning" not in out
    assert ("expected about 10 for squared" in out) == (optimizer != "lbfgs")    # the gradient loop's step-0 check
    metrics = read_json(tmp_path / optimizer / "metrics.json")
    # 10 classes, chance 0.1; measured: sgd 0.284, gd (5 full-batch steps) 0.156, lbfgs 0.406
    assert metrics["status"] == "completed" and metrics["val_acc"] > {"sgd": 0.2, "gd": 0.12, "lbfgs": 0.3}[optimizer]
