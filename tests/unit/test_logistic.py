"""--loss logistic, one-vs-rest logistic regression: L_i = sum_c log(1 + exp(-t_ic s_ic)), t = +-1.
Its hand-written forward and backward against an independent reference (torch's
binary_cross_entropy_with_logits) three ways (autograd, finite differences, gradcheck), stable at
huge scores, in the registry and exported, solved by L-BFGS to scikit-learn's
OneVsRestClassifier(LogisticRegression) optimum, and trained from the command line."""
import math

import pytest
import torch

import lintorch
from lintorch import functional as LF
from lintorch.objective import LOSSES, Objective
from lintorch.optim.lbfgs import full_batch_evaluator, lbfgs
from lintorch.verify.checker import check_function
from lintorch.verify.references import logistic_reference, reference_total
from tests.unit.test_lbfgs import ListLoader, problem, zeros


def draw(N=6, C=4, K=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    lead = () if K is None else (K,)
    return 2 * torch.randn(*lead, N, C, generator=g, dtype=torch.float64), torch.randint(0, C, (N,), generator=g)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("K", [None, 3])
def test_three_way_check_against_an_independent_reference(reduction, K):
    s, y = draw(K=K, seed=1)
    w = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    for cw in (None, w):
        report = check_function(lambda s, y: LF.logistic_loss(s, y, reduction, class_weight=cw), s, y,
                                reference=lambda s, y: torch.stack([logistic_reference(sk, y, reduction, cw)
                                                                    for sk in s]) if s.dim() == 3
                                else logistic_reference(s, y, reduction, cw),
                                wrt=(0,), checks=("autograd", "numeric", "gradcheck"), dtypes=(torch.float64,))
        assert report.ok, report
        assert {row.method for row in report.rows} == {"autograd", "numeric", "gradcheck"}


def test_the_formula_by_hand_and_its_gradient():
    """One example, C = 2: L = log(1 + e^{-s_0}) + log(1 + e^{s_1}); dL/ds = (-sigma(-s_0), sigma(s_1))."""
    s = torch.tensor([[0.3, -1.2]], dtype=torch.float64, requires_grad=True)
    L = lintorch.logistic_loss(s, torch.tensor([0]))
    assert L.item() == pytest.approx(math.log1p(math.exp(-0.3)) + math.log1p(math.exp(-1.2)), rel=1e-15)
    L.backward()
    sig = lambda z: 1 / (1 + math.exp(-z))       # noqa: E731
    assert s.grad.tolist()[0] == pytest.approx([-sig(-0.3), sig(-1.2)], rel=1e-14)


def test_huge_scores_stay_finite_and_exact():
    """softplus written as max(z, 0) + log1p(e^{-|z|}): +-1e4 scores give the exact loss and a
    gradient of 0 or +-1, never inf or NaN."""
    s = torch.tensor([[1e4, -1e4, 3e3], [-1e4, 1e4, 0.0]], dtype=torch.float32, requires_grad=True)
    y = torch.tensor([0, 0])
    L = LF.logistic_loss(s, y, "none")
    assert L.tolist() == pytest.approx([3e3, 1e4 + 1e4 + math.log(2)], rel=1e-6)
    L.sum().backward()
    assert torch.equal(s.grad, torch.tensor([[0.0, 0.0, 1.0], [-1.0, 1.0, 0.5]]))


def test_in_the_registry_smooth_and_sane_at_step_0():
    loss = LOSSES["logistic"]
    assert loss.function == "logistic_loss" and lintorch.logistic_loss is LF.logistic_loss
    assert Objective("logistic").smooth and not loss.exact and not loss.probabilistic
    assert Objective("logistic").expected_initial_loss(10) == pytest.approx(10 * math.log(2))


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


def test_a_run_trains_with_lbfgs_from_the_command_line(tmp_path, train_main, read_json):
    run = tmp_path / "run"
    assert train_main("--dataset", "synthetic", "--image-size", 8, "--loss", "logistic", "--optimizer", "lbfgs",
                      "--val-size", 200, "--quiet", "--device", "cpu", "--logdir", run) == 0
    metrics = read_json(run / "metrics.json")
    assert metrics["status"] == "completed" and metrics["val_acc"] > 0.2      # 10 classes: chance is 0.1
    assert read_json(run / "config.json")["loss"] == "logistic"


def test_dtypes_in_place_use_and_a_non_finite_row():
    """float16 in, float16 out (computed in float32, as torch's own losses); reduction='none' is a
    tensor of its own (L *= 2 works); a NaN score gives a NaN loss and a NaN gradient row, the
    other rows finite."""
    s, y = draw(N=4, C=3, seed=5)
    half = LF.logistic_loss(s.half(), y)
    assert half.dtype == torch.float16 and half.item() == pytest.approx(LF.logistic_loss(s, y).item(), rel=1e-3)
    L = LF.logistic_loss(s.clone().requires_grad_(), y, "none")
    L *= 2
    bad = s.clone()
    bad[1, 2] = float("nan")
    bad.requires_grad_()
    losses = LF.logistic_loss(bad, y, "none")
    losses.sum().backward()
    assert torch.isnan(losses[1]) and torch.isfinite(losses[[0, 2, 3]]).all()
    assert torch.isnan(bad.grad[1]).all() and torch.isfinite(bad.grad[[0, 2, 3]]).all()
