"""check_function beyond first order (lintorch.verify.properties): second order, forward
mode, vmap, torch.compile and devices, each opt-in and a row of the same table. A correct complete
Function passes each; a Function broken in exactly that property fails exactly that row."""
import pytest
import torch
from torch.autograd import Function

import lintorch
from lintorch import functional as LF
from lintorch.verify import gradients as G


def sin_function(jvp_scale=1.0, backward=None, vmap=True):
    """sin as a complete Function (the README's worked example): forward, backward and jvp side by
    side. jvp_scale != 1: a wrong jvp; backward: replaces the backward (grad, x) -> dx; vmap=False:
    no vmap support."""
    class Sin(Function):
        generate_vmap_rule = vmap

        @staticmethod
        def forward(x):
            return x.sin()

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])
            ctx.save_for_forward(inputs[0])

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * x.cos() if backward is None else backward(grad, x)

        @staticmethod
        def jvp(ctx, dx):
            (x,) = ctx.saved_tensors
            return dx * x.cos() * jvp_scale
    return Sin.apply


def x64(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)


FAST = ("second", "forward", "batched")


def test_a_complete_function_passes_every_property():
    report = lintorch.check_function(sin_function(), x64(), reference=torch.sin, checks=("autograd", "numeric") + FAST)
    assert report.ok, report
    assert [r.method for r in report.rows] == ["autograd", "numeric", "second", "forward", "batched"]


def _in_place(grad, x):
    return x.cos().mul_(grad)                            # writes the (batched) gradient into its own tensor


@pytest.mark.parametrize("broken,failing", [
    (dict(jvp_scale=1.01), "forward"),
    (dict(backward=lambda g, x: g * x.detach().cos()), "second"),      # a backward autograd cannot differentiate
    (dict(vmap=False), "batched"),
    (dict(backward=_in_place), "batched"),
])
def test_a_function_broken_in_one_property_fails_that_row_only(broken, failing):
    report = lintorch.check_function(sin_function(**broken), x64(), checks=("numeric",) + FAST)
    verdicts = {r.method: r.passed for r in report.rows}
    assert verdicts == {m: m != failing for m in ("numeric",) + FAST}, report


def test_second_order_is_left_out_at_a_kink_and_devices_says_not_run_without_cuda():
    x = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    report = lintorch.check_function(torch.relu, x, checks=("numeric", "second"))
    assert [r.method for r in report.rows] == ["numeric"] and report.rows[0].kinks == 1
    if not torch.cuda.is_available():
        row = lintorch.check_function(torch.sin, x64(), checks=("devices",)).rows[0]
        assert row.note == "not run: no CUDA here" and "skip" in str(lintorch.check_function(
            torch.sin, x64(), checks=("devices",)))


def test_unknown_property_and_backend_are_refused():
    with pytest.raises(ValueError, match="checks"):
        lintorch.check_function(torch.sin, x64(), checks=("hessian",))
    with pytest.raises(TypeError, match="backend"):
        lintorch.check_function(torch.sin, x64(), checks=("compiled",), backend=None)


@pytest.mark.slow
def test_compiled_passes_lintorch_and_fails_a_host_sync():
    """torch.compile(fullgraph=True) (aot_eager: no code generation) equals eager for lintorch's
    total loss; a function that reads a value back to Python (.item()) breaks the graph: FAIL."""
    x, W, b = (t.double() for t in (torch.randn(6, 4), torch.randn(3, 4), torch.randn(3)))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    total = lambda W, b: LF.softmax_loss(LF.linear(x, W, b), y) + 0.1 * LF.penalty(W)   # noqa: E731
    report = lintorch.check_function(total, W.requires_grad_(), b.requires_grad_(), checks=("compiled",),
                                     backend="aot_eager")
    assert report.ok, report
    synced = lambda W, b: total(W, b) * (2.0 if W.sum().item() > 0 else 1.0)   # noqa: E731
    report = lintorch.check_function(synced, W, b, checks=("compiled",), backend="aot_eager")
    assert not report.ok, report


@pytest.mark.slow
def test_lintorchs_functions_pass_every_property():
    """python -m lintorch.gradcheck --properties: about 70 s at load 11."""
    rows = G.run_properties()
    assert rows and all(r.passed for r in rows), G.format_table([r for r in rows if not r.passed])
    assert {r.method for r in rows} >= {"second", "forward", "batched", "compiled"}


def test_the_property_cases_cover_every_function():
    names = {c.name.split("[")[0] for c in G.property_cases()}
    assert names == {"linear", "penalty", "softmax_loss", "svm_loss", "total", "logistic_loss"}
    totals = {c.name for c in G.property_cases() if c.name.startswith("total")}
    assert any("squared_loss" in t for t in totals)          # the squared loss, through its total
