"""objective_and_grad (Objective.loss_and_grad), the graph-free training step, equals backpropagation through lintorch's
Functions and through independent torch references (the same hand-written formulas, chained by hand)."""
import itertools

import pytest
import torch

from lintorch import functional as LF
from lintorch.objective import objective_and_grad
from lintorch.verify.references import reference_total

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
