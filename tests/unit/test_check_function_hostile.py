"""check_function cannot be fooled (issue 27): the five ways the hostile round found, each of
which gave the wrong verdict before, and others of the same kinds.

1. NaN/inf in a value or a gradient fails (rel_error turned a NaN denominator into error 0).
2. A kink is what the one-sided differences say it is as h shrinks, never disagreement alone: a
   steep smooth function, a large step, a function whose value changes between calls.
3. Correct gradients of large sums pass: the numeric tolerance allows the rounding eps |f| / h.
4. The cost is bounded by the Jacobian's size (inputs x outputs), not the input's alone.
5. Every argument is checked: one TypeError/ValueError naming it.
"""
import functools

import pytest
import torch
from torch.autograd import Function

import lintorch
from lintorch import functional as LF
from lintorch.verify import checker
from lintorch.verify.references import softmax_reference, svm_reference


def rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()


def function(forward, backward, counter=None):
    """A custom Function: forward(x), backward(grad, x) -> dx (counter: a list appended to per backward)."""
    class Custom(Function):
        @staticmethod
        def forward(*inputs):
            return forward(*inputs)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, grad):
            if counter is not None:
                counter.append(1)
            return backward(grad, *ctx.saved_tensors)
    return Custom.apply


def square_sum(scale=1.0):
    return function(lambda x: (x * x).sum(), lambda g, x: g * 2 * x * scale)


# --------------------------------------------------------------------------- 1. NaN and inf

@pytest.mark.parametrize("bad", ["nan gradient", "inf gradient", "nan value", "one nan entry"])
def test_a_non_finite_value_or_gradient_fails(bad):
    x = rand(500 if bad == "one nan entry" else 2000)          # the hostile round's: all NaN at 2,000 entries
    fn = {"nan gradient": function(lambda x: (x * x).sum(), lambda g, x: torch.full_like(x, float("nan"))),
          "inf gradient": function(lambda x: (x * x).sum(), lambda g, x: torch.full_like(x, float("inf"))),
          "nan value": function(lambda x: (x * x).sum() * float("nan"), lambda g, x: g * 2 * x),
          "one nan entry": function(lambda x: (x * x).sum(),
                                    lambda g, x: (g * 2 * x).index_fill(0, torch.tensor([123]), float("nan")))}[bad]
    report = lintorch.check_function(fn, x, reference=lambda x: (x * x).sum())
    assert not report.ok, report
    failed = {r.method for r in report.rows if not r.passed}
    assert {"autograd", "numeric"} <= failed, report
    assert checker.rel_error(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, 1.0])).isnan().tolist() == [True,
                                                                                                             False]


# --------------------------------------------------------------------------- 2. kinks, principled

def steep(scale):
    """exp(1e5 x) summed: smooth, its one-sided differences at h = 1e-6 10% apart; backward * scale."""
    return function(lambda x: torch.exp(1e5 * x).sum(), lambda g, x: g * 1e5 * torch.exp(1e5 * x) * scale)


def test_a_steep_smooth_function_has_no_kinks_and_a_wrong_backward_fails():
    x = rand(50, scale=1e-5)
    wrong = lintorch.check_function(steep(1.05), x, checks=("numeric",)).rows[0]
    assert not wrong.passed and wrong.kinks == 0 and wrong.max_rel > 0.04, wrong
    right = lintorch.check_function(steep(1.0), x, checks=("numeric", "gradcheck"))
    assert right.rows[0].kinks == 0 and right.rows[0].passed, right


def test_a_large_step_excuses_nothing():
    """eps = 0.5 puts exp's one-sided slopes 50% apart: a backward 20% off lies between them."""
    x = rand(30)
    exp_sum = lambda scale: function(lambda x: x.exp().sum(), lambda g, x: g * x.exp() * scale)  # noqa: E731
    wrong = lintorch.check_function(exp_sum(1.2), x, checks=("numeric",), eps=0.5).rows[0]
    assert not wrong.passed and wrong.kinks == 0, wrong
    right = lintorch.check_function(exp_sum(1.0), x, checks=("numeric",), eps=0.1).rows[0]
    assert right.passed and right.kinks == 0, right


def test_a_function_whose_value_changes_between_calls_fails():
    noisy = function(lambda x: x.sum() + 1e-3 * torch.rand(()), lambda g, x: g * torch.ones_like(x))
    report = lintorch.check_function(noisy, rand(20), checks=("numeric",))
    assert not report.ok and report.rows[0].kinks is None, report
    assert "changes between two calls" in report.rows[0].note


def test_noise_that_grows_as_h_shrinks_is_no_kink():
    """A deterministic function with a rounding-like wobble: its one-sided gap grows 10x at h / 10,
    which no kink does; the gradient of the smooth part is compared, and fails."""
    wobble = function(lambda x: x.sum() + 1e-9 * torch.sin(1e12 * x).sum(), lambda g, x: g * torch.ones_like(x) * 1.1)
    row = lintorch.check_function(wobble, rand(20), checks=("numeric",)).rows[0]
    assert not row.passed and row.kinks == 0, row


def test_true_kinks_are_still_found_at_any_step():
    x = torch.tensor([-1.5, 0.0, 0.7, 0.0], dtype=torch.float64, requires_grad=True)
    for eps in (1e-6, 1e-3, 0.1):
        row = lintorch.check_function(torch.relu, x, checks=("numeric",), eps=eps).rows[0]
        assert row.passed and row.kinks == 2, (eps, row)


# --------------------------------------------------------------------------- 3. rounding at the function's scale

def test_correct_gradients_of_large_sums_pass():
    report = lintorch.check_function(square_sum(), rand(2000), reference=lambda x: (x * x).sum())
    assert report.ok, report
    assert not lintorch.check_function(square_sum(1.001), rand(2000), checks=("numeric",), samples=2000).ok


@pytest.mark.parametrize("loss", ["softmax", "svm"])
def test_lintorchs_losses_summed_over_5000_examples_pass(loss):
    g = torch.Generator().manual_seed(3)
    s = (3 * torch.randn(5000, 3, generator=g, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, 3, (5000,), generator=g)
    fn, ref = {"softmax": (functools.partial(LF.softmax_loss, reduction="sum"),
                           functools.partial(softmax_reference, reduction="sum")),
               "svm": (functools.partial(LF.svm_loss, reduction="sum"),
                       functools.partial(svm_reference, reduction="sum"))}[loss]
    report = lintorch.check_function(fn, s, y, reference=ref, checks=("numeric",), samples=30)
    assert report.ok, report


# --------------------------------------------------------------------------- 4. cost bounded by the Jacobian

def test_an_outer_product_is_checked_on_samples_not_its_whole_jacobian():
    """u v^T at n = 100: 200 inputs but 10,000 outputs, a 2e6-entry Jacobian: sampled numeric
    differences and gradcheck's fast mode, never one backward per output (before: 10,000)."""
    backwards = []

    class Outer(Function):
        @staticmethod
        def forward(u, v):
            return torch.outer(u, v)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, g):
            backwards.append(1)
            u, v = ctx.saved_tensors
            return g @ v, g.t() @ u

    report = lintorch.check_function(Outer.apply, rand(100), rand(100, seed=1), reference=torch.outer)
    assert report.ok, report
    assert [r.method for r in report.rows] == ["autograd", "numeric", "gradcheck"]
    assert report.rows[1].coords == 2 * checker.SAMPLES and report.rows[2].note == "fast mode"
    assert len(backwards) < 10, len(backwards)


# --------------------------------------------------------------------------- 5. arguments

X = rand(3)


@pytest.mark.parametrize("kwargs,error,name", [
    (dict(eps=0), ValueError, "eps"), (dict(eps=-1e-6), ValueError, "eps"), (dict(eps=float("nan")), ValueError, "eps"),
    (dict(eps="1e-6"), TypeError, "eps"),
    (dict(tol=float("nan")), ValueError, "tol"), (dict(tol=-1), ValueError, "tol"),
    (dict(tol={"numeric": float("inf")}), ValueError, "tol"), (dict(tol={"numerik": 1e-6}), ValueError, "tol"),
    (dict(samples=0), ValueError, "samples"), (dict(samples=2.5), TypeError, "samples"),
    (dict(wrt=()), ValueError, "wrt"), (dict(wrt=0), TypeError, "wrt"), (dict(wrt=(5,)), ValueError, "wrt"),
    (dict(device="garbage"), ValueError, "device"),
    (dict(seed=1.5), TypeError, "seed"), (dict(dtypes=(torch.int64,)), ValueError, "dtypes"),
    (dict(kinks="yes"), TypeError, "kinks"), (dict(reference=3), TypeError, "reference"),
    (dict(checks=("numerik",)), ValueError, "checks"), (dict(name=3), TypeError, "name"),
])
def test_every_bad_argument_raises_one_error_naming_it(kwargs, error, name):
    with pytest.raises(error, match=name):
        lintorch.check_function(torch.sin, X, **kwargs)


def test_a_non_callable_and_cuda_without_cuda_are_refused():
    with pytest.raises(TypeError, match="fn must be callable"):
        lintorch.check_function("sin", X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: cuda"):
            lintorch.check_function(torch.sin, X, device="cuda")
