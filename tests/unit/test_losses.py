"""The loss registry (objective.LOSSES): every registered loss is exported, has an independent
reference, is a --loss choice with its settings as flags and its tuned defaults filled in, passes
the lecture's step-0 sanity value, agrees with its reference through Objective.loss_and_grad, and
says truthfully whether L-BFGS may solve it."""
import pytest
import torch

import lintorch
from lintorch.config import get_args_parser, parse_args
from lintorch.objective import LOSSES, Objective, exact_applies, nonsmooth_parts
from lintorch.verify.references import REFERENCES, per_model

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


def test_smoothness_and_exactness_are_asked_of_the_loss():
    assert nonsmooth_parts("svm", False, "l2") == ["the hinge loss (use squared=True)"]
    assert nonsmooth_parts("svm", True, "l1") == ["the l1 penalty (use l2)"]
    for name, loss in LOSSES.items():
        assert Objective(name, squared=True).smooth            # every loss has a smooth form with l2
        assert exact_applies(name, "l2", False) == loss.exact
        assert not exact_applies(name, "l1", False) and not exact_applies(name, "l2", True)
    assert [name for name, loss in LOSSES.items() if loss.probabilistic] == ["softmax"]
