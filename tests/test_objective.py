"""lintorch.objective: the loss registry and the graph-free training step against autograd."""
import itertools
import math

import pytest
import torch

import lintorch
from lintorch import functional as LF
from lintorch.config import get_args_parser, parse_args
from lintorch.objective import LOSSES, Objective, exact_applies, nonsmooth_parts, objective_and_grad
from lintorch.verify.references import REFERENCES, per_model, reference_total


NAMES = sorted(LOSSES)


def test_every_loss_is_exported_referenced_and_a_choice():
    loss_flag = next(a for a in get_args_parser()._actions if a.dest == "loss")
    assert tuple(loss_flag.choices) == tuple(LOSSES)
    assert set(REFERENCES) == set(LOSSES)
    for loss in LOSSES.values():
        assert callable(getattr(lintorch, loss.function)) and loss.function in lintorch.__all__


@pytest.mark.parametrize("name", NAMES)
def test_settings_are_flags_and_tuned_defaults_fill_in(name):
    loss = LOSSES[name]
    flags = {a.dest for a in get_args_parser()._actions}
    assert set(loss.settings) <= flags
    cfg = parse_args(["--loss", name])
    assert (cfg.base_lr(3072, standardized=False), cfg.reg) == (loss.tuned["lr"], loss.tuned["reg"])


@pytest.mark.parametrize("name", NAMES)
def test_the_initial_loss_with_tiny_weights_is_the_lecture_value(name):
    """10 classes, W ~ 1e-4 N(0, 1): the data loss is within 1% of Loss.initial (log C, (C-1) margin, C, ...)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 30, generator=g, dtype=torch.float64), torch.randint(0, 10, (500,), generator=g)
    W = 1e-4 * torch.randn(10, 30, generator=g, dtype=torch.float64)
    o = Objective(name)
    data = o.loss_and_grad(x, W, torch.zeros(10, dtype=torch.float64), y)[1]
    assert float(data) == pytest.approx(o.expected_initial_loss(10), rel=1e-2)


@pytest.mark.parametrize("name", NAMES)
def test_loss_and_grad_matches_autograd_through_the_reference(name):
    """The graph-free step against autograd on REFERENCES[name] plus reg sum W^2, K = 2 models."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randint(0, 4, (12,), generator=g)
    W = torch.randn(2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    o = Objective(name, reg=0.1, squared=True)          # the squared hinge: the svm off its kinks
    s = x @ W.transpose(-1, -2) + b.unsqueeze(-2)
    ref = per_model(REFERENCES[name])(s, y, margin=o.margin, squared=o.squared, form=o.form)
    (ref + 0.1 * (W ** 2).sum((-2, -1))).sum().backward()
    _, data, _, dW, db = o.loss_and_grad(x, W.detach(), b.detach(), y)
    assert torch.allclose(data, ref.detach(), rtol=1e-12, atol=1e-12)
    assert torch.allclose(dW, W.grad, rtol=1e-10, atol=1e-12) and torch.allclose(db, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_data_and_grad_is_loss_and_grad_without_the_penalty(name):
    """L-BFGS's data pass: the same data loss and gradients as the graph-free step at reg 0, class weights given
    explicitly (the objective's own are not used), K = 2 models, summed."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randint(0, 4, (12,), generator=g)
    W, b = torch.randn(2, 4, 5, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g, dtype=torch.float64)
    w = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    _, data, _, dW, db = Objective(name, reg=0.0, squared=True, class_weight=w).loss_and_grad(x, W, b, y, reduction="sum")
    got = Objective(name, reg=0.3, squared=True).data_and_grad(x, W, b, y, class_weight=w, reduction="sum")
    for a, e in zip(got, (data, dW, db), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-13, atol=1e-13)


def test_smoothness_and_exactness_are_asked_of_the_loss():
    assert nonsmooth_parts("svm", False, "l2") == ["the hinge loss (use squared=True)"]
    assert nonsmooth_parts("svm", True, "l1") == ["the l1 penalty (use l2)"]
    for name, loss in LOSSES.items():
        assert Objective(name, squared=True).smooth            # every loss has a smooth form with l2
        assert exact_applies(name, "l2", False) == loss.exact
        assert not exact_applies(name, "l1", False) and not exact_applies(name, "l2", True)
    assert [name for name, loss in LOSSES.items() if loss.probabilistic] == ["softmax"]


CASES = list(itertools.product(
    [("softmax", False, "weston-watkins"), ("svm", False, "weston-watkins"), ("svm", True, "weston-watkins"),
     ("svm", False, "crammer-singer"), ("svm", True, "crammer-singer"), ("svm", True, "one-vs-rest")],
    ["l2", "l1", "elasticnet"],
    [None, 3],
    [False, True]))


@pytest.mark.parametrize("loss_spec, kind, K, weighted", CASES)
def test_objective_and_grad_matches_autograd(loss_spec, kind, K, weighted, device):
    loss, squared, form = loss_spec
    g = torch.Generator().manual_seed(7)
    N, D, C = 16, 11, 5
    lead = () if K is None else (K,)
    x = torch.randn(N, D, generator=g, dtype=torch.float64).to(device)
    W = (0.5 * torch.randn(*lead, C, D, generator=g, dtype=torch.float64)).to(device)
    b = (0.1 * torch.randn(*lead, C, generator=g, dtype=torch.float64)).to(device)
    y = torch.randint(0, C, (N,), generator=g).to(device)
    reg = 0.3 if K is None else torch.tensor([0.0, 0.1, 1.0], dtype=torch.float64, device=device)
    w = (torch.rand(C, generator=g, dtype=torch.float64) + 0.25).to(device) if weighted else None
    scores, data, reg_term, dW, db = objective_and_grad(x, W, b, y, loss=loss, reg=reg, penalty=kind, beta=0.7,
                                                        margin=1.0, squared=squared, form=form, class_weight=w)

    # 1. autograd through lintorch's own Functions
    Wa, ba = W.clone().requires_grad_(), b.clone().requires_grad_()
    s = LF.linear(x, Wa, ba)
    d = LF.softmax_loss(s, y, class_weight=w) if loss == "softmax" else \
        LF.svm_loss(s, y, 1.0, squared, form=form, class_weight=w)
    total = d + reg * LF.penalty(Wa, kind, 0.7)
    gW, gb = torch.autograd.grad(total.sum(), (Wa, ba))
    torch.testing.assert_close(scores, s.detach())
    torch.testing.assert_close(data, d.detach())
    torch.testing.assert_close(data + reg_term, total.detach())
    torch.testing.assert_close(dW, gW, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(db, gb, rtol=1e-12, atol=1e-12)

    # 2. autograd through independent torch references
    Wr, br = W.clone().requires_grad_(), b.clone().requires_grad_()
    ref = reference_total(x, Wr, br, y, loss, squared, form, kind, reg, 0.7, 1.0, class_weight=w)
    rW, rb = torch.autograd.grad(ref, (Wr, br))
    torch.testing.assert_close((data + reg_term).sum(), ref.detach())
    torch.testing.assert_close(dW, rW, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(db, rb, rtol=1e-10, atol=1e-12)

    # 3. reduction="sum" is N times the mean data loss and its gradient, the penalty added once
    _, data_s, reg_s, dW_s, db_s = objective_and_grad(x, W, b, y, loss=loss, reg=reg, penalty=kind, beta=0.7,
                                                      margin=1.0, squared=squared, form=form, class_weight=w,
                                                      reduction="sum")
    torch.testing.assert_close(data_s, N * data)
    torch.testing.assert_close(reg_s, reg_term)
    dreg = LF.penalty_backward(W, reg * torch.ones(lead, dtype=W.dtype, device=device), kind, 0.7)
    torch.testing.assert_close(dW_s - dreg, N * (dW - dreg))
    torch.testing.assert_close(db_s, N * db)


def test_objective_and_grad_builds_no_graph():
    W = torch.randn(3, 4, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    out = objective_and_grad(torch.randn(5, 4), W, b, torch.tensor([0, 1, 2, 0, 1]))
    assert all(t is None or t.grad_fn is None for t in out)


@pytest.mark.parametrize("loss", ["softmax", "svm"])
def test_objective_and_grad_empty_batch_raises_the_losses_value_error(loss):
    W, b = torch.randn(3, 4), torch.zeros(3)
    with pytest.raises(ValueError, match="empty batch"):
        objective_and_grad(torch.randn(0, 4), W, b, torch.zeros(0, dtype=torch.long), loss=loss)


def test_objective_and_grad_nan_example_gives_a_nan_gradient():
    """A NaN feature makes the loss NaN: the gradient must not pretend to be finite."""
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    x[2, 1] = float("nan")
    for loss in ("softmax", "svm"):
        _, data, _, dW, db = objective_and_grad(x, torch.randn(3, 4, dtype=torch.float64),
                                                torch.zeros(3, dtype=torch.float64), y, loss=loss)
        assert torch.isnan(data) and torch.isnan(dW).all() and torch.isnan(db).all()


def test_in_the_registry_smooth_and_sane_at_step_0():
    loss = LOSSES["logistic"]
    assert loss.function == "logistic_loss" and lintorch.logistic_loss is LF.logistic_loss
    assert Objective("logistic").smooth and not loss.exact and not loss.probabilistic
    assert Objective("logistic").expected_initial_loss(10) == pytest.approx(10 * math.log(2))


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
