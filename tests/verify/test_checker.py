"""lintorch.check_function (verify.checker) on anyone's function of tensors: it passes correct ones and cannot be
fooled."""
import functools
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import Function

import lintorch
from lintorch import functional as LF
from lintorch.verify import checker
from lintorch.verify.references import softmax_reference, svm_reference
from tests.verify.conftest import scaled_rand


README = Path(__file__).resolve().parents[2] / "README.md"


def rand(*shape, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device).requires_grad_()


def function(forward, backward, counter=None):
    """A custom autograd Function: forward(*inputs) computes, backward(grad, *inputs) returns one
    gradient per input (inputs saved as given); counter: a list appended to per backward call."""
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


def _silu_grad(x):
    s = torch.sigmoid(x)
    return s + x * s * (1 - s)


silu = function(lambda x: x * torch.sigmoid(x), lambda g, x: g * _silu_grad(x))
matmul = function(lambda a, b: a @ b, lambda g, a, b: (g @ b.mT, a.mT @ g))

class _SinExpSecondWrong(Function):
    """(sin x, exp x), whose backward gets the second output's gradient wrong (exp x + x)."""

    @staticmethod
    def forward(x):
        return x.sin(), x.exp()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g_sin, g_exp):
        (x,) = ctx.saved_tensors
        return g_sin * x.cos() + g_exp * (x.exp() + x)


BROKEN = {   # name: (fn, reference, inputs)
    "1% off": (function(lambda x: x * torch.sigmoid(x), lambda g, x: g * _silu_grad(x) * 1.01), F.silu, [rand(6, 3)]),
    "wrong sign": (function(lambda x: x * torch.sigmoid(x), lambda g, x: -g * _silu_grad(x)), F.silu, [rand(6, 3)]),
    "missing term": (function(lambda x: x * torch.sigmoid(x), lambda g, x: g * torch.sigmoid(x)),   # no x s (1 - s)
                     F.silu, [rand(6, 3)]),
    "ignores the incoming gradient": (function(lambda x: (x ** 2).sum(), lambda g, x: 2 * x),
                                      lambda x: (x ** 2).sum(), [rand(6, 3)]),
    "sum's scale for a mean": (function(lambda x: (x ** 2).mean(), lambda g, x: g * 2 * x),
                               lambda x: (x ** 2).mean(), [rand(6, 3)]),
    "gradients of the wrong inputs": (function(lambda a, b: a @ b, lambda g, a, b: (a.mT @ g, g @ b.mT)),
                                      torch.matmul, [rand(4, 4), rand(4, 4, seed=1)]),
    "one of two outputs wrong": (_SinExpSecondWrong.apply, lambda x: (x.sin(), x.exp()), [rand(5)]),
}


# --------------------------------------------------------------------------- correct Functions pass

def test_a_custom_function_passes_every_check_and_prints_the_commands_table(device):
    x = rand(6, 3, device=device)
    report = lintorch.check_function(silu, x, reference=F.silu)
    assert report.ok is True, report
    assert [r.method for r in report.rows] == ["autograd", "numeric", "gradcheck"]
    assert all(r.where == f"float64/{x.device}" for r in report.rows)
    assert report.rows[1].kinks == 0 and report.rows[1].max_rel < 1e-6 and report.rows[1].coords == 18
    assert str(report) == repr(report) == checker.format_table(report.rows)
    lines = str(report).splitlines()
    assert lines[0].split()[:3] == ["function", "method", "dtype/device"] and lines[-1].startswith("3 checks: 3 passed")


def test_float32_inputs_get_a_float32_and_a_float64_autograd_row():
    a, b = (t.detach().float().requires_grad_() for t in (rand(4, 3), rand(3, 5, seed=1)))
    report = lintorch.check_function(matmul, a, b, reference=torch.matmul)
    assert report.ok, report
    assert [r.where.split("/")[0] for r in report.rows] == ["float32", "float64", "float64", "float64"]


def test_lintorchs_own_functions_with_targets_and_plain_arguments():
    """Integer targets (no grad) and non-tensor arguments (a margin, a form, a reduction) are constants."""
    s, y = rand(8, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    report = lintorch.check_function(LF.svm_loss, s, y, 0.5, True, "sum", "crammer-singer",
                                     reference=lambda s, y, m, sq, red, form: svm_reference(s, y, m, sq, form, red))
    assert report.ok, report
    x, W, b = rand(5, 3), rand(4, 3, seed=1), rand(4, seed=2)
    assert lintorch.check_function(LF.linear, x, W, b, reference=lambda x, W, b: x @ W.T + b).ok


def test_which_inputs_are_checked():
    a, b = rand(3, 3), rand(3, 3, seed=1).detach()                   # b a constant: no grad
    report = lintorch.check_function(matmul, a, b, reference=torch.matmul)
    assert report.ok and report.rows[0].function == "Custom.apply"
    wrong_b = function(lambda a, b: a @ b, lambda g, a, b: (g @ b.mT, torch.zeros_like(b)))
    assert lintorch.check_function(wrong_b, a, b, reference=torch.matmul).ok              # b not checked
    assert not lintorch.check_function(wrong_b, a, b, reference=torch.matmul, wrt=(0, 1)).ok
    with pytest.raises(ValueError, match="no input requires grad"):
        lintorch.check_function(matmul, a.detach(), b)
    with pytest.raises(ValueError, match="input 1"):
        lintorch.check_function(LF.svm_loss, rand(4, 3), torch.tensor([0, 1, 2, 0]), wrt=(0, 1))
    with pytest.raises(ValueError, match="nothing to check"):
        lintorch.check_function(silu, a, checks=("autograd",))                          # no reference


# --------------------------------------------------------------------------- broken Functions fail

@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_broken_backward_fails_every_check(broken):
    fn, reference, inputs = BROKEN[broken]
    report = lintorch.check_function(fn, *inputs, reference=reference)
    assert [r.method for r in report.rows] == ["autograd", "numeric", "gradcheck"]
    assert not report.ok and not any(r.passed for r in report.rows), report
    assert all(r.max_rel > 1e-3 for r in report.rows if r.method != "gradcheck")
    assert "FAIL" in str(report) and "worst: gradient of input" in str(report)


def test_a_reference_that_disagrees_in_value_fails_autograd_only():
    """silu + 1 has silu's gradient: only the value comparison can tell."""
    report = lintorch.check_function(silu, rand(6, 3), reference=lambda x: F.silu(x) + 1)
    assert [r.passed for r in report.rows] == [False, True, True]
    assert "worst: output 0" in str(report)


def test_a_gradient_of_the_wrong_shape_is_a_fail_row_not_a_traceback():
    fn = function(lambda x: x * 2, lambda g, x: (g * 2).sum(0))
    report = lintorch.check_function(fn, rand(4, 3), reference=lambda x: 2 * x)
    assert not report.ok and all(not r.passed for r in report.rows)
    assert all(r.note.startswith("RuntimeError:") and "shape" in r.note for r in report.rows)
    assert f"    {report.rows[0].note}" in str(report).splitlines()


@pytest.mark.parametrize("fn", [lambda x: x.argmax(), lambda x: 3.0, lambda x: (x * 2).detach()])
def test_no_differentiable_output_fails(fn):
    """An integer or non-tensor result, or one cut from the graph: FAIL rows, never a pass."""
    report = lintorch.check_function(fn, rand(4, 3), reference=lambda x: 2 * x)
    assert not report.ok and not any(r.passed for r in report.rows), report


# --------------------------------------------------------------------------- kinks

@pytest.mark.parametrize("fn", [torch.relu, torch.abs])
def test_kinks_at_zero_are_reported_not_failed(fn):
    x = torch.tensor([-1.5, 0.0, 0.7, 0.0, -0.2, 2.0], dtype=torch.float64, requires_grad=True)
    reference = {torch.relu: lambda t: t * (t > 0), torch.abs: lambda t: t * t.sign()}[fn]   # torch's 0 at 0
    report = lintorch.check_function(fn, x, reference=reference)
    assert report.ok, report
    assert [r.method for r in report.rows] == ["autograd", "numeric"]        # gradcheck: no notion of kinks
    assert report.rows[1].kinks == 2 and "2 kink coordinates left out" in str(report)
    assert all(r.kinks in (None, 0) for r in lintorch.check_function(fn, x.detach().add(0.1).requires_grad_()).rows)


def test_a_reference_with_another_subgradient_at_the_kink_passes():
    """torch.maximum(t, 0) passes 1/2 at 0 where relu passes 0: both lie between the one-sided
    slopes 0 and 1."""
    x = torch.tensor([-1.5, 0.0, 0.7, 0.0], dtype=torch.float64, requires_grad=True)
    maximum = lambda t: torch.maximum(t, torch.zeros_like(t))   # noqa: E731
    report = lintorch.check_function(torch.relu, x, reference=maximum)
    assert report.ok, report
    assert [r.kinks for r in report.rows] == [2, 2]                  # autograd, numeric
    strict = lintorch.check_function(torch.relu, x, reference=maximum, kinks=False)
    assert not strict.rows[0].passed and re.search(r"worst: gradient of input 0 at \[[13]\]", str(strict))
    outside = lintorch.check_function(torch.relu, x, reference=lambda t: 3 * maximum(t) - 2 * t.relu())
    assert not outside.rows[0].passed                                # the reference's 3/2 at 0 is no subgradient


def test_without_kink_detection_relu_at_zero_fails():
    x = torch.tensor([-1.5, 0.0, 0.7], dtype=torch.float64, requires_grad=True)
    report = lintorch.check_function(torch.relu, x, kinks=False)
    assert not report.ok and report.rows[0].kinks is None
    assert report.rows[0].max_rel == pytest.approx(1.0)          # a slope of 0 against 1/2


def test_a_gradient_outside_the_one_sided_slopes_fails_even_at_a_kink():
    """relu with a gradient of 2 at 0: not between the slopes 0 and 1, so compared, and failed."""
    bad = function(torch.relu, lambda g, x: g * torch.where(x == 0, 2.0, (x > 0).double()))
    x = torch.tensor([-1.5, 0.0, 0.7], dtype=torch.float64, requires_grad=True)
    report = lintorch.check_function(bad, x)
    assert not report.ok and report.rows[0].kinks == 0


def test_the_hinge_on_its_kinks_found_without_a_mask():
    """The lecture's scores plus a row whose margin is exactly 0: the kinks are found from the
    one-sided differences alone (lintorch's own check masks all 3 scores of that row)."""
    s = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1], [2.0, 1.0, -3.0]],
                     dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    report = lintorch.check_function(LF.svm_loss, s, y, 1.0, False, "sum", "weston-watkins",
                                     reference=lambda s, y, *_: 3 * F.multi_margin_loss(s, y, reduction="sum"))
    assert report.ok, report
    assert report.rows[-1].method == "numeric" and report.rows[-1].kinks == 2


# --------------------------------------------------------------------------- large inputs

def _counting(fn):
    calls = []

    def counted(*a):
        calls.append(1)
        return fn(*a)
    return counted, calls


def test_large_inputs_are_sampled_with_a_stated_count_and_seed():
    x = rand(200, 50)                                                    # 10,000 > FULL entries
    fn, calls = _counting(silu)
    report = lintorch.check_function(fn, x, checks=("numeric",))
    assert [r.method for r in report.rows] == ["numeric"] and report.ok
    assert report.rows[0].coords == checker.SAMPLES
    # the Jacobian's size, backward, f(x) twice (a deterministic function), 2 per coordinate
    assert len(calls) == 4 + 2 * checker.SAMPLES
    calls.clear()
    lintorch.check_function(fn, x, checks=("numeric",), samples=7)
    assert len(calls) == 3 + 2 * 7                                       # samples given: no size needed
    calls.clear()
    fast = lintorch.check_function(fn, x, checks=("gradcheck",)).rows   # no O(inputs) full gradcheck
    assert [(r.method, r.note, r.passed) for r in fast] == [("gradcheck", "fast mode", True)] and len(calls) < 10
    broken = BROKEN["1% off"][0]
    rows = [lintorch.check_function(broken, x, checks=("numeric",), seed=s).rows[0] for s in (0, 0, 1)]
    assert not any(r.passed for r in rows) and rows[0].note == rows[1].note != rows[2].note


# --------------------------------------------------------------------------- the README's example

def test_the_readmes_example_runs(capsys):
    text = README.read_text()
    section = text[text.index("## Proving a gradient"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    assert "0 failed" in capsys.readouterr().out


def test_tolerances_and_the_step_are_the_callers():
    fn, reference, (x,) = BROKEN["1% off"]
    loose = lintorch.check_function(fn, x, reference=reference, checks=("autograd", "numeric"),
                                    tol={"autograd": 0.02, ("numeric", torch.float64): 0.02})
    assert loose.ok, loose
    assert not lintorch.check_function(fn, x, reference=reference, tol=0.005, checks=("numeric",)).ok
    coarse = lintorch.check_function(silu, x, checks=("numeric",), eps=1e-3).rows[0]
    fine = lintorch.check_function(silu, x, checks=("numeric",), eps=1e-5).rows[0]
    assert fine.max_abs < 1e-8 < coarse.max_abs                          # centered differences: O(h^2)


def square_sum(scale=1.0):
    return function(lambda x: (x * x).sum(), lambda g, x: g * 2 * x * scale)


# --------------------------------------------------------------------------- NaN and inf

@pytest.mark.parametrize("bad", ["nan gradient", "inf gradient", "nan value", "one nan entry"])
def test_a_non_finite_value_or_gradient_fails(bad):
    x = scaled_rand(500 if bad == "one nan entry" else 2000)          # all NaN at 2,000 entries, one NaN among 500
    fn = {"nan gradient": function(lambda x: (x * x).sum(), lambda g, x: torch.full_like(x, float("nan"))),
          "inf gradient": function(lambda x: (x * x).sum(), lambda g, x: torch.full_like(x, float("inf"))),
          "nan value": function(lambda x: (x * x).sum() * float("nan"), lambda g, x: g * 2 * x),
          "one nan entry": function(lambda x: (x * x).sum(),
                                    lambda g, x: (g * 2 * x).index_fill(0, torch.tensor([123]), float("nan")))}[bad]
    # the two checks asserted on (torch's gradcheck over 2,000 inputs, 1.7 s, is asserted nothing here)
    report = lintorch.check_function(fn, x, reference=lambda x: (x * x).sum(), checks=("autograd", "numeric"))
    assert not report.ok, report
    failed = {r.method for r in report.rows if not r.passed}
    assert {"autograd", "numeric"} <= failed, report
    assert checker.rel_error(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, 1.0])).isnan().tolist() == [True,
                                                                                                             False]


# --------------------------------------------------------------------------- kinks, principled

def steep(scale):
    """exp(1e5 x) summed: smooth, its one-sided differences at h = 1e-6 10% apart; backward * scale."""
    return function(lambda x: torch.exp(1e5 * x).sum(), lambda g, x: g * 1e5 * torch.exp(1e5 * x) * scale)


def test_a_steep_smooth_function_has_no_kinks_and_a_wrong_backward_fails():
    x = scaled_rand(50, scale=1e-5)
    wrong = lintorch.check_function(steep(1.05), x, checks=("numeric",)).rows[0]
    assert not wrong.passed and wrong.kinks == 0 and wrong.max_rel > 0.04, wrong
    right = lintorch.check_function(steep(1.0), x, checks=("numeric", "gradcheck"))
    assert right.rows[0].kinks == 0 and right.rows[0].passed, right


def test_a_large_step_excuses_nothing():
    """eps = 0.5 puts exp's one-sided slopes 50% apart: a backward 20% off lies between them."""
    x = scaled_rand(30)
    exp_sum = lambda scale: function(lambda x: x.exp().sum(), lambda g, x: g * x.exp() * scale)  # noqa: E731
    wrong = lintorch.check_function(exp_sum(1.2), x, checks=("numeric",), eps=0.5).rows[0]
    assert not wrong.passed and wrong.kinks == 0, wrong
    right = lintorch.check_function(exp_sum(1.0), x, checks=("numeric",), eps=0.1).rows[0]
    assert right.passed and right.kinks == 0, right


def test_a_function_whose_value_changes_between_calls_fails():
    noisy = function(lambda x: x.sum() + 1e-3 * torch.rand(()), lambda g, x: g * torch.ones_like(x))
    report = lintorch.check_function(noisy, scaled_rand(20), checks=("numeric",))
    assert not report.ok and report.rows[0].kinks is None, report
    assert "changes between two calls" in report.rows[0].note


def test_noise_that_grows_as_h_shrinks_is_no_kink():
    """A deterministic function with a rounding-like wobble: its one-sided gap grows 10x at h / 10,
    which no kink does; the gradient of the smooth part is compared, and fails."""
    wobble = function(lambda x: x.sum() + 1e-9 * torch.sin(1e12 * x).sum(), lambda g, x: g * torch.ones_like(x) * 1.1)
    row = lintorch.check_function(wobble, scaled_rand(20), checks=("numeric",)).rows[0]
    assert not row.passed and row.kinks == 0, row


def test_true_kinks_are_still_found_at_any_step():
    x = torch.tensor([-1.5, 0.0, 0.7, 0.0], dtype=torch.float64, requires_grad=True)
    for eps in (1e-6, 1e-3, 0.1):
        row = lintorch.check_function(torch.relu, x, checks=("numeric",), eps=eps).rows[0]
        assert row.passed and row.kinks == 2, (eps, row)


# --------------------------------------------------------------------------- rounding at the function's scale

def test_correct_gradients_of_large_sums_pass():
    report = lintorch.check_function(square_sum(), scaled_rand(2000), reference=lambda x: (x * x).sum())
    assert report.ok, report
    assert not lintorch.check_function(square_sum(1.001), scaled_rand(2000), checks=("numeric",), samples=2000).ok


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


# --------------------------------------------------------------------------- cost bounded by the Jacobian

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

    report = lintorch.check_function(Outer.apply, scaled_rand(100), scaled_rand(100, seed=1), reference=torch.outer)
    assert report.ok, report
    assert [r.method for r in report.rows] == ["autograd", "numeric", "gradcheck"]
    assert report.rows[1].coords == 2 * checker.SAMPLES and report.rows[2].note == "fast mode"
    assert len(backwards) < 10, len(backwards)
