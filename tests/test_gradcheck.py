"""lintorch.gradcheck: its helpers, proof that it catches a wrong backward, the command on CUDA."""
import math

import pytest
import torch
from torch.autograd import Function

from lintorch import functional as LF, gradcheck as G
from tests.conftest import REAL_CUDA, one_case_of_each_kind


# --------------------------------------------------------------------------- helpers

def test_rel_error_is_the_lectures_with_0_over_0_as_0():
    a, b = torch.tensor([1.0, 0.0, -2.0, 3.0]), torch.tensor([1.5, 0.0, 2.0, 3.0])
    assert G.rel_error(a, b).tolist() == pytest.approx([0.5 / 1.5, 0.0, 2.0, 0.0])
    assert G.rel_error(b, a).tolist() == G.rel_error(a, b).tolist()
    assert G.rel_error(torch.tensor([1e-9]), torch.tensor([0.0]), floor=1.0).item() == pytest.approx(1e-9)


def test_numeric_gradient_full_sampled_and_array():
    """Centered differences of sum(x^3) give 3x^2 to O(h^2), and x is restored afterwards."""
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before = x.clone()
    grad = G.numeric_gradient(lambda t: (t ** 3).sum(), x, h=1e-5)
    torch.testing.assert_close(grad, 3 * x ** 2, rtol=1e-8, atol=1e-9)
    coords = torch.tensor([0, 5, 11])
    sampled = G.numeric_gradient(lambda t: (t ** 3).sum(), x, h=1e-5, coords=coords)
    torch.testing.assert_close(sampled, (3 * x ** 2).reshape(-1)[coords], rtol=1e-8, atol=1e-9)
    df = torch.rand(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    array = G.numeric_gradient(lambda t: t ** 3, x, h=1e-5, df=df)        # of sum(df * x^3)
    torch.testing.assert_close(array, 3 * df * x ** 2, rtol=1e-8, atol=1e-9)
    assert torch.equal(x, before)


def test_hinge_kinks_marks_margins_within_tol_of_zero():
    s = torch.tensor([[2.0, 1.0, -3.0], [2.0, 0.5, -3.0], [0.0, 1.0, 1.0 + 1e-9]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0])
    assert G.hinge_kinks(s, y, tol=1e-6).tolist() == [True, False, False]
    # Crammer-Singer: also where the two largest wrong-class scores (nearly) tie and the max switches
    assert G.hinge_kinks(s, y, form="crammer-singer", tol=1e-6).tolist() == [True, False, True]


@pytest.mark.slow
def test_every_check_passes_for_another_seed(device, monkeypatch):
    """Its [cuda] variant is the one run of every check on emulated CUDA; the emulated gradcheck command
    (below) and doctor (tests/test_doctor.py) check one case of each kind (conftest.one_case_of_each_kind).
    Emulated CUDA computes the CPU's values, which [cpu] checks at every coordinate: there every case is
    checked on a few sampled coordinates, gradcheck in its fast mode (the case on kinks whole), which
    meets CUDA's device rules in every call all the same."""
    if device == "cuda" and not REAL_CUDA:
        from lintorch.verify import gradients
        every = gradients.make_cases

        def sampled(seed=0, fns=None):
            cases = every(seed, fns)
            for c in cases:
                c.large = "on kinks" not in c.name
            return cases
        monkeypatch.setattr(gradients, "make_cases", sampled)
        monkeypatch.setattr(gradients, "SAMPLES", 3)
    rows = G.run_checks(device, seed=1)
    failed = [r for r in rows if not r.passed]
    assert not failed, G.format_table(failed)
    assert {r.method for r in rows} == {"autograd", "numeric", "gradcheck"}
    names = {r.function.split("[")[0] for r in rows}
    assert names == {"linear", "penalty", "softmax_loss", "svm_loss", "logistic_loss", "total", "objective_and_grad"}
    assert any("K=3" in r.function for r in rows) and any("D=3072" in r.function for r in rows)
    weighted = {r.function.split("[")[0] for r in rows if "weighted" in r.function}
    assert weighted == {"softmax_loss", "svm_loss", "total", "objective_and_grad"}
    assert {r.where.split("/")[0] for r in rows} == {"float32", "float64"}


def test_kinks_are_counted_not_failed():
    """The case sitting on a kink passes with its kink coordinates left out; without the kink
    mask the same finite differences disagree there (a one-sided slope against a subgradient of 0).
    The mask names all 3 scores of the row whose margin is 0; 2 of them move that margin (the
    target's and the wrong class's), and only those are kinks (their one-sided slopes stay apart
    at h / 10); the third, whose margin is -4, is compared."""
    case = next(c for c in G.make_cases(0) if "on kinks" in c.name)
    row = G.check_numeric(case)
    assert row.passed and row.kinks == 2
    case.kinks = None
    unmasked = G.check_numeric(case)
    assert not unmasked.passed and unmasked.max_rel == pytest.approx(1.0)


# --------------------------------------------------------------------------- broken Functions

class _SoftmaxMissingOnehot(Function):
    """softmax_loss whose backward forgets the -onehot(y) term: dscores = P, not P - onehot."""

    @staticmethod
    def forward(scores, target, reduction, class_weight):
        return LF.softmax_loss(scores, target, reduction, class_weight=class_weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.reduction = inputs[2]

    @staticmethod
    def backward(ctx, grad):
        (s,) = ctx.saved_tensors
        scale = {"mean": 1 / s.shape[-2], "sum": 1.0, "none": 1.0}[ctx.reduction]
        g = grad.unsqueeze(-1) if ctx.reduction == "none" else grad[..., None, None]
        return torch.softmax(s, -1) * g * scale, None, None, None


def softmax_missing_onehot(scores, target, reduction="mean", class_weight=None):
    return _SoftmaxMissingOnehot.apply(scores, target, reduction, class_weight)


class _LinearTransposedDW(Function):
    """linear whose backward returns (x^T dS) instead of dS^T x for dW: the transpose, which has
    the right shape when C == D (as in the checker's small cases), so only the values can tell."""

    @staticmethod
    def forward(x, weight, bias):
        return LF.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])

    @staticmethod
    def backward(ctx, dS):                                            # dS (N, C) or (K, N, C)
        x, W = ctx.saved_tensors
        dx = torch.einsum("...nc,...cd->nd", dS, W)
        dW = torch.einsum("...nc,nd->...dc", dS, x)                   # should be ...cd
        return dx, dW, dS.sum(-2)


def linear_transposed_dW(x, weight, bias=None):
    return _LinearTransposedDW.apply(x, weight, bias)


class _LogisticSignFlipped(Function):
    """logistic_loss whose backward returns +t sigma(-t s) instead of -t sigma(-t s)."""

    @staticmethod
    def forward(scores, target, reduction, class_weight):
        return LF.logistic_loss(scores, target, reduction, class_weight=class_weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.reduction = inputs[2]

    @staticmethod
    def backward(ctx, grad):
        s, y = ctx.saved_tensors
        t = 2 * torch.nn.functional.one_hot(y, s.shape[-1]).to(s.dtype) - 1
        scale = {"mean": 1 / s.shape[-2], "sum": 1.0, "none": 1.0}[ctx.reduction]
        g = grad.unsqueeze(-1) if ctx.reduction == "none" else grad[..., None, None]
        return t * torch.sigmoid(-t * s) * g * scale, None, None, None


def logistic_sign_flipped(scores, target, reduction="mean", class_weight=None):
    return _LogisticSignFlipped.apply(scores, target, reduction, class_weight)


@pytest.mark.parametrize("name,broken,hit", [
    ("softmax_loss", softmax_missing_onehot, ("softmax_loss", "total[softmax_loss")),
    ("linear", linear_transposed_dW, ("linear", "total[")),
    ("logistic_loss", logistic_sign_flipped, ("logistic_loss", "total[logistic_loss")),
])
@pytest.mark.slow
def test_checker_catches_a_wrong_backward(name, broken, hit):
    """Every check of every case that goes through the broken Function FAILs (autograd, numeric
    and gradcheck alike), alone and inside total[...], with one model and with K=3 members (the K=3
    totals, the costliest cases, repeat both paths and are left out); cases that do not use it (a
    sample of the single-model ones) still pass."""
    cases = [c for c in G.make_cases(0, fns={name: broken}) if not c.large]   # large: D != C, shape error
    assert {(c.inputs[1].shape[-2:]) for c in cases if c.name.startswith("linear")} == {(4, 4)}
    bystanders = [c for c in cases if not c.name.startswith(hit) and "K=" not in c.name]
    hits = [c for c in cases if c.name.startswith(hit) and not (c.name.startswith("total[") and "K=" in c.name)]
    assert any(c.name.startswith("total[") for c in hits) and any("K=3" in c.name for c in hits)
    cases = hits + bystanders[::4]
    for case in cases:
        rows = [G.check_autograd(case, torch.float32), G.check_autograd(case), G.check_numeric(case)]
        if "on kinks" not in case.name:
            rows.append(G.check_gradcheck(case))
        uses_broken = case.name.startswith(hit)
        for row in rows:
            assert row.passed != uses_broken, (case.name, row)
    failing = [G.check_numeric(c) for c in cases if c.name.startswith(hit)]
    assert all(r.max_rel > 1e-3 and math.isfinite(r.max_abs) for r in failing)


def test_class_weighted_gradient_checks_pass_on_cuda(emulated):
    """`lintorch gradcheck --device cuda` failed every class-weighted check: the weights stayed on the CPU.
    (All 201 checks on emulated CUDA: test_gradcheck.py's [cuda] variant, slow.)"""
    from lintorch.verify.gradients import _check, make_cases
    cases = [c for c in make_cases(seed=1) if "weighted" in c.name and "K=" not in c.name]
    with emulated():
        rows = [row for case in cases for row in _check(case, ("autograd",), "cuda", seed=1)]
    assert len(rows) == 2 * len(cases) >= 8 and all(r.where.endswith("/cuda") for r in rows)
    assert all(r.passed for r in rows), [(r.function, r.note) for r in rows if not r.passed][:3]


def test_gradient_checks_run_with_tf32_off_and_restore_it(tf32_restored):
    """TF32 (on for every CUDA command) rounds float32 GEMMs to a 10-bit mantissa: the checks' float32
    tolerance (1e-5) would fail by 100x, so check_function turns it off while it runs."""
    from lintorch import check_function
    seen = []

    def linear(x, W):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return x @ W.T
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    g = torch.Generator().manual_seed(0)
    x, W = torch.randn(3, 4, generator=g), torch.randn(2, 4, generator=g, requires_grad=True)
    assert check_function(linear, x, W, reference=lambda x, W: x @ W.T, wrt=(1,)).ok
    assert seen and not any(a or b for a, b in seen)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


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


def test_gradcheck_command_on_cuda(emulated, monkeypatch, capsys):
    """The command's path on cuda, with one_case_of_each_kind."""
    from lintorch import gradcheck
    one_case_of_each_kind(monkeypatch)
    with emulated():
        assert gradcheck.main(["--device", "cuda"]) == 0
    assert "cuda" in capsys.readouterr().out
