"""lintorch.functional: the losses, linear and penalties against the lecture's numbers, independent references and
PyTorch's transforms."""
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, hessian, jacfwd, jvp, vmap

import lintorch
from lintorch import functional as LF, gradcheck as G
from lintorch.verify.checker import check_function
from lintorch.verify.references import PENALTY_REFS, logistic_reference, per_model, softmax_reference
from lintorch.verify.references import squared_reference, svm_expression, svm_reference


LECTURE_SCORES = [[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]]   # rows: the cat, car, frog images
LECTURE_TARGETS = [0, 1, 2]
REDUCTIONS = ("mean", "sum", "none")


def _svm(**kw):
    return (lambda s, y, r: LF.svm_loss(s, y, reduction=r, **kw),
            lambda s, y, r: svm_reference(s, y, reduction=r, **kw))


# name -> (lintorch's loss, independent reference), both called as f(scores, target, reduction)
LOSSES = {
    "softmax": (lambda s, y, r: LF.softmax_loss(s, y, reduction=r),
                lambda s, y, r: softmax_reference(s, y, reduction=r)),
    "hinge": _svm(),
    "squared-hinge": _svm(squared=True),
    "hinge-margin-2.5": _svm(margin=2.5),
    "hinge-margin-0": _svm(margin=0.0),
    "crammer-singer": _svm(form="crammer-singer"),
    "crammer-singer-squared": _svm(form="crammer-singer", squared=True),
    "one-vs-rest": _svm(form="one-vs-rest"),
    "one-vs-rest-squared": _svm(form="one-vs-rest", squared=True),
    "one-vs-rest-margin-2.5": _svm(form="one-vs-rest", margin=2.5),
}
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}


def tensor(data, device="cpu", dtype=torch.float64):
    return torch.tensor(data, dtype=dtype, device=device)


def random_scores(N, C, seed, device="cpu", dtype=torch.float64, scale=3.0):
    """Seeded scores (N, C) and targets (N,)."""
    g = torch.Generator().manual_seed(seed)
    s = scale * torch.randn(N, C, generator=g, dtype=torch.float64)
    return s.to(device, dtype), torch.randint(0, C, (N,), generator=g).to(device)


def loss_and_grad(fn, s, y, reduction="mean", v=None):
    """fn(s, y, reduction) and d(sum(v * loss))/ds (v = 1 when None) -> (loss, grad)."""
    s = s.detach().clone().requires_grad_()
    loss = fn(s, y, reduction)
    (grad,) = torch.autograd.grad(loss, s, torch.ones_like(loss) if v is None else v)
    return loss.detach(), grad


def cotangent(shape, device, dtype=torch.float64, seed=99):
    """A seeded, non-uniform dL/dloss for reduction="none" and stacked outputs."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)


# --------------------------------------------------------------------------- the lecture's numbers

def test_lecture_hinge_losses(device):
    s, y = tensor(LECTURE_SCORES, device), torch.tensor(LECTURE_TARGETS, device=device)
    assert lintorch.svm_loss(s, y, reduction="none").tolist() == pytest.approx([2.9, 0.0, 12.9], abs=1e-12)
    assert round(lintorch.svm_loss(s, y).item(), 2) == 5.27
    assert lintorch.svm_loss(s, y, reduction="sum").item() == pytest.approx(15.8, abs=1e-12)


def test_lecture_scores_squared_and_crammer_singer(device):
    """Squared hinge (Q6): 2.9^2 and 6.3^2 + 6.6^2; Crammer-Singer keeps the largest margin only."""
    s, y = tensor(LECTURE_SCORES, device), torch.tensor(LECTURE_TARGETS, device=device)
    squared = lintorch.svm_loss(s, y, squared=True, reduction="none")
    assert squared.tolist() == pytest.approx([8.41, 0.0, 83.25], abs=1e-12)
    cs = lintorch.svm_loss(s, y, form="crammer-singer", reduction="none")
    assert cs.tolist() == pytest.approx([2.9, 0.0, 6.6], abs=1e-12)


def test_lecture_softmax_loss(device):
    loss = lintorch.softmax_loss(tensor(LECTURE_SCORES[:1], device), torch.tensor([0], device=device))
    assert round(loss.item(), 2) == 2.04
    assert loss.item() == pytest.approx(-math.log(torch.softmax(tensor(LECTURE_SCORES[0]), 0)[0].item()))


def test_lecture_second_example_and_the_slides_base_10_slip(device):
    """[-2.85, 0.86, 0.28], target 2: hinge 1.58, cross-entropy 1.04 (natural log). The slide's
    0.452 is -log10(0.353), the same probability in base 10."""
    s, y = tensor([[-2.85, 0.86, 0.28]], device), torch.tensor([2], device=device)
    assert round(lintorch.svm_loss(s, y).item(), 2) == 1.58
    ce = lintorch.softmax_loss(s, y).item()
    p = torch.softmax(s, 1)[0, 2].item()
    assert round(ce, 2) == 1.04 and ce == pytest.approx(-math.log(p))
    assert round(p, 3) == 0.353 and round(-math.log10(p), 3) == 0.452


@pytest.mark.parametrize("C", [2, 3, 10, 100])
def test_all_zero_scores_give_C_minus_1_and_log_C(C, device):
    s, y = torch.zeros(4, C, device=device), torch.arange(4, device=device) % C
    assert lintorch.svm_loss(s, y).item() == pytest.approx(C - 1)
    assert lintorch.softmax_loss(s, y).item() == pytest.approx(math.log(C))
    stacked = torch.zeros(3, 4, C, device=device)
    assert lintorch.svm_loss(stacked, y).tolist() == pytest.approx([C - 1] * 3)


def test_doubling_W_keeps_a_zero_loss_example_at_zero(device):
    """The lecture's car, scores [1.3, 4.9, 2.0], has zero hinge loss; so does 2W's [2.6, 9.8, 4.0]."""
    x, y = tensor([[1.0, 2.0]], device), torch.tensor([1], device=device)
    W = tensor([[1.3, 0.0], [0.9, 2.0], [1.0, 0.5]], device)
    assert lintorch.linear(x, W)[0].tolist() == pytest.approx([1.3, 4.9, 2.0])
    for scale in (1, 2, 4):
        assert lintorch.svm_loss(lintorch.linear(x, scale * W), y).item() == 0.0


def test_lecture_2d_example_scores(device):
    W, b, x = tensor([[1, 4], [5, 3]], device), tensor([-12, 0], device), tensor([[2, 2]], device)
    assert lintorch.linear(x, W, b).tolist() == [[-2.0, 16.0]]


def test_l2_penalty_prefers_spread_weights(device):
    """w1 = [1, 0, 0, 0] and w2 = [1/4] * 4 score x = [1, 1, 1, 1] the same; L2 prefers w2 (L1 cannot tell)."""
    x, w1, w2 = tensor([[1, 1, 1, 1]], device), tensor([[1, 0, 0, 0]], device), tensor([[0.25] * 4], device)
    assert lintorch.linear(x, w1).item() == lintorch.linear(x, w2).item() == 1.0
    assert lintorch.penalty(w2, "l2").item() == 0.25 < lintorch.penalty(w1, "l2").item() == 1.0
    assert lintorch.penalty(w1, "l1").item() == lintorch.penalty(w2, "l1").item() == 1.0


# --------------------------------------------------------------------------- gradients vs references

@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("N,C,seed", [(1, 2, 0), (7, 2, 1), (16, 10, 2), (5, 100, 3)])
def test_loss_and_gradient_match_reference(loss, reduction, dtype, N, C, seed, device):
    ours, ref = LOSSES[loss]
    s, y = random_scores(N, C, seed, device, dtype)
    v = cotangent((N,), device, dtype) if reduction == "none" else None
    la, ga = loss_and_grad(ours, s, y, reduction, v)
    lb, gb = loss_and_grad(ref, s, y, reduction, v)
    assert la.dtype == ga.dtype == dtype
    torch.testing.assert_close(la, lb, **TOL[dtype])
    torch.testing.assert_close(ga, gb, **TOL[dtype])


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)], ids=["float16", "bfloat16"])
def test_half_precision_against_float64_reference(loss, dtype, tol, device):
    """Half inputs compute in float32 and come back in their dtype, within their rounding."""
    ours, ref = LOSSES[loss]
    s, y = random_scores(16, 10, 5, device, dtype)
    for reduction in REDUCTIONS:
        la, ga = loss_and_grad(ours, s, y, reduction)
        lb, gb = loss_and_grad(ref, s.double(), y, reduction)      # the same rounded scores, in float64
        assert la.dtype == ga.dtype == dtype
        torch.testing.assert_close(la.double(), lb, rtol=tol, atol=tol)
        torch.testing.assert_close(ga.double(), gb, rtol=tol, atol=tol * gb.abs().max().item())


@pytest.mark.parametrize("loss", LOSSES)
def test_ties_in_scores(loss, device):
    """Integer scores tie often and put hinge margins exactly on their kinks: both sides take the
    strict-inequality subgradient, and Crammer-Singer's max goes to the first of equal classes."""
    ours, ref = LOSSES[loss]
    g = torch.Generator().manual_seed(6)
    s = torch.randint(-2, 3, (12, 5), generator=g).double().to(device)
    s[0] = 1.0                                                        # a row of equal scores
    y = torch.randint(0, 5, (12,), generator=g).to(device)
    for reduction in REDUCTIONS:
        la, ga = loss_and_grad(ours, s, y, reduction)
        lb, gb = loss_and_grad(ref, s, y, reduction)
        torch.testing.assert_close(la, lb, **TOL[torch.float64])
        torch.testing.assert_close(ga, gb, **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_extreme_logits_give_finite_loss_and_gradient(dtype, device):
    s = tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3], [-1e4, -1e4, -1e4]], device, dtype)
    y = torch.tensor([1, 1, 2], device=device)
    for name, (ours, ref) in LOSSES.items():
        la, ga = loss_and_grad(ours, s, y, "none")
        lb, gb = loss_and_grad(ref, s, y, "none")
        assert torch.isfinite(la).all() and torch.isfinite(ga).all(), name
        torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-6)
    la, ga = loss_and_grad(LOSSES["softmax"][0], s, y, "none")
    assert la.tolist() == pytest.approx([2e4, 0.0, math.log(3)], rel=1e-6)
    assert ga[0].tolist() == pytest.approx([1.0, -1.0, 0.0])


@pytest.mark.parametrize("scale", [30.0, 1e3])
def test_softmax_gradient_keeps_float32_accuracy_for_large_logits(scale, device):
    """P = softmax(s) to float32 rounding (as torch's own) even when |s| is large: the lse is taken
    of the max-shifted scores (logsumexp(s) alone rounds to ulp(max s): errors of 1e-5 at s ~ 1e3)."""
    s, y = random_scores(64, 10, 15, device, torch.float32, scale)
    _, ga = loss_and_grad(LOSSES["softmax"][0], s, y, "sum")
    _, gb = loss_and_grad(LOSSES["softmax"][1], s.double(), y, "sum")
    assert (ga.double() - gb).abs().max().item() < 2.5e-7


@pytest.mark.parametrize("loss", LOSSES)
def test_non_contiguous_scores(loss, device):
    ours, ref = LOSSES[loss]
    s, y = random_scores(9, 6, 7, device)
    for strided in (s.t().contiguous().t(), torch.stack([s, s], -1)[..., 0]):
        assert not strided.is_contiguous()
        la, ga = loss_and_grad(ours, strided, y)
        lb, gb = loss_and_grad(ref, s, y)
        torch.testing.assert_close(la, lb, **TOL[torch.float64])
        torch.testing.assert_close(ga, gb, **TOL[torch.float64])


@pytest.mark.parametrize("loss", LOSSES)
def test_expanded_and_non_contiguous_grad_output(loss, device):
    """reduction="none" then .sum() hands backward an expanded (stride 0) gradient; a transposed
    (K, N) loss hands it a non-contiguous one. Both give the reference's gradients."""
    ours, ref = LOSSES[loss]
    s, y = random_scores(8, 5, 8, device)
    stacked = torch.stack([s, 2 * s, -s])                              # (K, N, C)
    w = cotangent((8, 3), device)                                      # (N, K)

    def grads(fn):
        a = s.detach().clone().requires_grad_()
        fn(a, y, "none").sum().backward()
        k = stacked.detach().clone().requires_grad_()
        (fn(k, y, "none").t() * w).sum().backward()
        return a.grad, k.grad

    got = grads(ours)
    for g_ours, g_ref in zip(got, grads(per_model(ref))):
        torch.testing.assert_close(g_ours, g_ref, **TOL[torch.float64])
    _, g_sum = loss_and_grad(ours, s, y, "sum")
    torch.testing.assert_close(got[0], g_sum, rtol=0, atol=0)
    # handed in directly: 2 * ones expanded (stride 0) and every other entry of a longer vector
    for v in (torch.full((1,), 2.0, device=device, dtype=torch.float64).expand(8), cotangent((16,), device)[::2]):
        torch.testing.assert_close(loss_and_grad(ours, s, y, "none", v)[1], loss_and_grad(ref, s, y, "none", v)[1],
                                   **TOL[torch.float64])


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_stacked_models_equal_per_model(loss, reduction, device):
    """Scores (K, N, C) give each model's loss and gradient exactly as K separate calls."""
    ours, _ = LOSSES[loss]
    g = torch.Generator().manual_seed(9)
    s = (3 * torch.randn(3, 6, 4, generator=g, dtype=torch.float64)).to(device)
    y = torch.randint(0, 4, (6,), generator=g).to(device)
    v = cotangent((3, 6) if reduction == "none" else (3,), device)
    la, ga = loss_and_grad(ours, s, y, reduction, v)
    for k in range(3):
        lk, gk = loss_and_grad(ours, s[k], y, reduction, v[k])
        torch.testing.assert_close(la[k], lk, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(ga[k], gk, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("K", [None, 3])
def test_linear_matches_reference(dtype, bias, K, device):
    """dx = dS W, dW = dS^T x, db = sum dS, also for non-contiguous x and W and K stacked models."""
    g = torch.Generator().manual_seed(10)
    lead = () if K is None else (K,)
    x = torch.randn(7, 6, generator=g, dtype=torch.float64).to(device, dtype).t().contiguous().t()  # non-contiguous
    W = torch.randn(*lead, 6, 5, generator=g, dtype=torch.float64).to(device, dtype).transpose(-1, -2)  # (C, D) view
    b = torch.randn(*lead, 5, generator=g, dtype=torch.float64).to(device, dtype) if bias else None
    v = cotangent((*lead, 7, 5), device, dtype)
    results = []
    for fn in (LF.linear, lambda x, W, b: x @ W.mT + (0 if b is None else b.unsqueeze(-2))):
        ins = [t.detach().clone().requires_grad_() for t in (x, W, b) if t is not None]
        out = fn(*ins, *([None] if b is None else []))
        results.append([out, *torch.autograd.grad(out, ins, v)])
    for a, r in zip(*results):
        torch.testing.assert_close(a, r, **TOL[dtype])
    if K is not None:                                                 # each model as a separate call
        for k in range(K):
            torch.testing.assert_close(results[0][0][k], LF.linear(x, W[k], None if b is None else b[k]),
                                       rtol=1e-14, atol=1e-5 if dtype == torch.float32 else 1e-14)


@pytest.mark.parametrize("kind", LF.PENALTIES)
@pytest.mark.parametrize("shape", [(4, 6), (3, 4, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_penalties_match_reference(kind, shape, dtype, device):
    g = torch.Generator().manual_seed(11)
    W = torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)
    v = cotangent(shape[:-2], device, dtype)
    ra, ga = loss_and_grad(lambda W, _, beta: LF.penalty(W, kind, beta), W, None, 0.3, v)
    rb, gb = loss_and_grad(lambda W, _, beta: PENALTY_REFS[kind](W, beta), W, None, 0.3, v)
    torch.testing.assert_close(ra, rb, **TOL[dtype])
    torch.testing.assert_close(ga, gb, **TOL[dtype])
    W0 = torch.zeros(3, 2, device=device, dtype=dtype)
    _, g0 = loss_and_grad(lambda W, _, beta: LF.penalty(W, kind, beta), W0, None, 0.3)
    assert (g0 == 0).all()                                            # sign(0) = 0, the minimum-norm subgradient


def test_autocast_losses_compute_in_float32(device):
    """Under autocast linear gives half-precision scores, the losses float32, and backward works."""
    half = torch.bfloat16 if device == "cpu" else torch.float16
    torch.manual_seed(12)
    model = lintorch.LinearClassifier(12, 5).to(device)
    x, y = torch.randn(8, 12, device=device), torch.randint(0, 5, (8,), device=device)
    for loss_fn in (lintorch.softmax_loss, lintorch.svm_loss):
        model.zero_grad()
        with torch.autocast(device, dtype=half):
            scores = model(x)
            loss = loss_fn(scores, y)
        assert scores.dtype == half and loss.dtype == torch.float32
        assert loss.item() == pytest.approx(loss_fn(scores.float(), y).item(), rel=1e-6)
        loss.backward()
        assert model.weight.grad.dtype == torch.float32 and torch.isfinite(model.weight.grad).all()
        assert model.weight.grad.abs().sum() > 0


def test_hinge_kink_subgradient_is_zero(device):
    """A margin of exactly 0 contributes nothing (strict m > 0): PyTorch's minimum-norm convention."""
    s, y = tensor([[2.0, 1.0, -3.0]], device), torch.tensor([0], device=device)    # m_1 = 1 - 2 + 1 = 0
    for squared in (False, True):
        loss, grad = loss_and_grad(lambda s, y, r: LF.svm_loss(s, y, squared=squared, reduction=r), s, y)
        assert loss.item() == 0.0 and grad.tolist() == [[0.0, 0.0, 0.0]]
        _, ref = loss_and_grad(lambda s, y, r: 3 * F.multi_margin_loss(s, y, p=1 + squared, reduction=r), s, y)
        assert ref.tolist() == [[0.0, 0.0, 0.0]]
    _, grad = loss_and_grad(lambda s, y, r: LF.svm_loss(s, y, margin=1.0 + 2 ** -20, reduction=r), s, y)
    assert grad.tolist() == [[-1.0, 1.0, 0.0]]                        # just past the kink: active


# --------------------------------------------------------------------------- sanity checks

def test_initial_loss_is_log_C_and_C_minus_1_with_tiny_weights():
    torch.manual_seed(13)
    model = lintorch.LinearClassifier(3072, 10)
    x, y = torch.randn(256, 3072), torch.randint(0, 10, (256,))
    with torch.no_grad():
        scores = model(x)
    assert lintorch.softmax_loss(scores, y).item() == pytest.approx(math.log(10), abs=0.05)
    assert lintorch.svm_loss(scores, y).item() == pytest.approx(9.0, abs=0.5)


@pytest.mark.parametrize("loss_fn", [lintorch.softmax_loss, lintorch.svm_loss])
def test_overfits_20_examples(loss_fn):
    """Plain SGD on the hand-written gradients drives 20 random examples to 100% train accuracy."""
    torch.manual_seed(14)
    x, y = torch.randn(20, 30), torch.randint(0, 5, (20,))
    model = lintorch.LinearClassifier(30, 5)
    for _ in range(200):
        model.zero_grad()
        loss_fn(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    assert (model.predict(x) == y).all()
    assert loss_fn(model(x), y).item() < 0.1


# --------------------------------------------------------------------------- bad input

S, Y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
BAD_SCORES_TARGETS = [
    ("target out of range", S, torch.tensor([0, 1, 3, 1]), {}, "out of range"),
    ("negative target", S, torch.tensor([0, -1, 2, 1]), {}, "out of range"),
    ("float target", S, Y.float(), {}, "integer class indices"),
    ("wrong length", S, Y[:3], {}, "target must have shape"),
    ("1-D scores", S[0], Y[:1], {}, "2-D"),
    ("4-D scores", S[None, None], Y, {}, "2-D"),
    ("empty batch", S[:0], Y[:0], {}, "empty batch"),
    ("integer scores", S.long(), Y, {}, "floating-point"),
    ("unknown reduction", S, Y, {"reduction": "avg"}, "unknown reduction"),
]


@pytest.mark.parametrize("loss_fn", [lintorch.svm_loss, lintorch.softmax_loss])
@pytest.mark.parametrize("case", BAD_SCORES_TARGETS, ids=[c[0] for c in BAD_SCORES_TARGETS])
def test_bad_scores_or_target_raise_value_error(loss_fn, case, device):
    _, s, y, kw, match = case
    with pytest.raises(ValueError, match=match):
        loss_fn(s.to(device), y.to(device), **kw)


@pytest.mark.parametrize("call,match", [
    (lambda: lintorch.svm_loss(S, Y, margin=-1.0), "margin must be"),
    (lambda: lintorch.svm_loss(S, Y, form="one-vs-all"), "unknown SVM form"),
    (lambda: lintorch.penalty(S, "l3"), "unknown penalty"),
    (lambda: lintorch.penalty(S, "elasticnet", beta=-1.0), "beta must be"),
    (lambda: lintorch.linear(S[0], S), "x must be 2-D"),
    (lambda: lintorch.linear(S, torch.randn(3, 5)), "weight must be"),
    (lambda: lintorch.linear(S, torch.randn(2, 3), torch.randn(3)), "bias must have shape"),
], ids=["negative margin", "unknown form", "unknown penalty", "negative beta", "x not 2-D", "weight D",
        "bias shape"])
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- second derivatives, NaN, kinks

SECOND_ORDER_LOSSES = {"softmax": lambda s, y: LF.softmax_loss(s, y),
                       "hinge": lambda s, y: LF.svm_loss(s, y),
                       "squared-hinge": lambda s, y: LF.svm_loss(s, y, squared=True),
                       "crammer-singer": lambda s, y: LF.svm_loss(s, y, form="crammer-singer")}


@pytest.mark.parametrize("loss", SECOND_ORDER_LOSSES)
def test_second_derivatives_of_a_loss_are_the_references(loss, device):
    """The losses' backward passes are themselves differentiable (none raises "first-order"):
    the Hessian and a Hessian-vector product through a loss, and through the total loss (linear and
    the penalty), equal autograd's through plain tensor ops; the hinge's is honestly 0 (its
    gradient is piecewise constant), never an error."""
    s, y = random_scores(4, 3, 20, device)
    fn = SECOND_ORDER_LOSSES[loss]
    ref = {"softmax": lambda s, y: softmax_reference(s, y),
           "hinge": lambda s, y: svm_expression(s, y),
           "squared-hinge": lambda s, y: svm_expression(s, y, squared=True),
           "crammer-singer": lambda s, y: svm_expression(s, y, form="crammer-singer")}[loss]
    H = torch.autograd.functional.hessian(lambda s: fn(s, y), s)
    torch.testing.assert_close(H, torch.autograd.functional.hessian(lambda s: ref(s, y), s), **TOL[torch.float64])
    assert (H.abs().sum() == 0) == (loss in ("hinge", "crammer-singer"))
    v = torch.ones_like(s)
    torch.testing.assert_close(torch.autograd.functional.hvp(lambda s: fn(s, y), s, v)[1],
                               torch.autograd.functional.hvp(lambda s: ref(s, y), s, v)[1], **TOL[torch.float64])
    x, W = torch.randn(4, 5, dtype=torch.float64, device=device), torch.randn(3, 5, dtype=torch.float64, device=device)
    total = torch.autograd.functional.hessian(lambda W: fn(LF.linear(x, W), y) + 0.1 * LF.penalty(W), W)
    expected = torch.autograd.functional.hessian(lambda W: ref(x @ W.T, y) + 0.1 * (W ** 2).sum(), W)
    torch.testing.assert_close(total, expected, **TOL[torch.float64])


@pytest.mark.parametrize("kind", LF.PENALTIES)
def test_linear_and_penalty_are_twice_differentiable(kind, device):
    """linear and the penalties are polynomials whose backward passes are tensor expressions of
    the saved inputs: gradgradcheck passes, and the l2 Hessian is 2I (l1's is 0 off W == 0)."""
    g = torch.Generator().manual_seed(21)
    x, W, b = (torch.randn(*shape, generator=g, dtype=torch.float64).to(device).requires_grad_()
               for shape in ((4, 5), (3, 5), (3,)))
    assert torch.autograd.gradgradcheck(LF.linear, (x, W, b))
    assert torch.autograd.gradgradcheck(lambda W: LF.penalty(W, kind, 0.5), (W,))
    H = torch.autograd.functional.hessian(lambda W: LF.penalty(W, kind, 0.5), W.detach()).reshape(15, 15)
    expected = {"l2": 2.0, "l1": 0.0, "elasticnet": 1.0}[kind] * torch.eye(15, dtype=torch.float64, device=device)
    torch.testing.assert_close(H, expected, rtol=0, atol=0)
    # the mixed second derivative of sum(x W^T): d/dW of dx = 1 W is not zero
    Hx = torch.autograd.functional.hessian(lambda x, W: LF.linear(x, W).sum(), (x.detach(), W.detach()))
    torch.testing.assert_close(Hx[0][1].sum(), torch.tensor(4 * 15.0, dtype=torch.float64, device=device))


@pytest.mark.parametrize("loss", LOSSES)
def test_non_finite_loss_gives_a_nan_gradient_row(loss, device):
    """A NaN score (or a -inf target score) makes that example's loss non-finite; its gradient row
    is NaN too, never a finite subgradient, while the other examples keep the reference's."""
    ours, ref = LOSSES[loss]
    s, y = random_scores(5, 4, 22, device)
    s[1, (y[1] + 1) % 4] = float("nan")                               # a wrong-class score
    s[3, y[3]] = float("nan")                                         # the target's score
    s[4, y[4]] = -float("inf")                                        # an infinitely wrong example
    bad = torch.tensor([False, True, False, True, True], device=device)
    for reduction in REDUCTIONS:
        la, ga = loss_and_grad(ours, s, y, reduction)
        if reduction == "none":
            assert (~torch.isfinite(la) == bad).all()
        assert torch.isnan(ga[bad]).all(), (reduction, ga)
        lb, gb = loss_and_grad(ref, s[~bad], y[~bad], "sum")
        scale = 1 / 5 if reduction == "mean" else 1.0
        torch.testing.assert_close(ga[~bad], gb * scale, **TOL[torch.float64])


def test_crammer_singer_kink_subgradient_is_zero(device):
    """Crammer-Singer's largest wrong-class margin exactly 0 contributes nothing (strict top > 0):
    a `>=` would give [-1, 1, 0]. Just past the kink the example is active."""
    s, y = tensor([[2.0, 1.0, -3.0]], device), torch.tensor([0], device=device)    # top margin 1 - 2 + 1 = 0
    for squared in (False, True):
        fn = lambda s, y, r: LF.svm_loss(s, y, squared=squared, reduction=r, form="crammer-singer")  # noqa: E731
        loss, grad = loss_and_grad(fn, s, y)
        assert loss.item() == 0.0 and grad.tolist() == [[0.0, 0.0, 0.0]]
    _, grad = loss_and_grad(lambda s, y, r: LF.svm_loss(s, y, margin=1.0 + 2 ** -20, reduction=r,
                                                        form="crammer-singer"), s, y)
    assert grad.tolist() == [[-1.0, 1.0, 0.0]]


# --------------------------------------------------------------------------- class weights

def _weighted(loss, w):
    ours, ref = LOSSES[loss]
    if loss == "softmax":
        return (lambda s, y, r: LF.softmax_loss(s, y, r, class_weight=w),
                lambda s, y, r: softmax_reference(s, y, r, class_weight=w))
    kw = dict(margin=2.5 if loss.endswith("margin-2.5") else 0.0 if loss.endswith("margin-0") else 1.0,
              squared="squared" in loss,
              form=next((f for f in ("crammer-singer", "one-vs-rest") if loss.startswith(f)), "weston-watkins"))
    return (lambda s, y, r: LF.svm_loss(s, y, reduction=r, class_weight=w, **kw),
            lambda s, y, r: svm_reference(s, y, reduction=r, class_weight=w, **kw))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("K", [None, 3])
def test_class_weight_matches_reference(loss, reduction, K, device):
    """Weighted loss (1/N) sum_i w_{y_i} L_i and its gradient, one model and K stacked, against
    F.cross_entropy(weight=w, reduction="sum") / N and C * F.multi_margin_loss(weight=w)."""
    g = torch.Generator().manual_seed(23)
    lead = () if K is None else (K,)
    s = (3 * torch.randn(*lead, 9, 4, generator=g, dtype=torch.float64)).to(device)
    y = torch.randint(0, 4, (9,), generator=g).to(device)
    w = (torch.rand(4, generator=g, dtype=torch.float64) * 2).to(device)
    ours, ref = _weighted(loss, w)
    v = cotangent((*lead, 9) if reduction == "none" else lead, device)
    la, ga = loss_and_grad(ours, s, y, reduction, v)
    lb, gb = loss_and_grad(per_model(ref), s, y, reduction, v)
    torch.testing.assert_close(la, lb, **TOL[torch.float64])
    torch.testing.assert_close(ga, gb, **TOL[torch.float64])
    unweighted, _ = loss_and_grad(LOSSES[loss][0], s, y, "none")
    torch.testing.assert_close(loss_and_grad(ours, s, y, "none")[0], unweighted * w[y])


def test_class_weight_mean_divides_by_N_not_the_weights_and_the_docs_say_so():
    s, y = random_scores(8, 3, 24)
    w = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    ours = LF.softmax_loss(s, y, class_weight=w)
    torch.testing.assert_close(ours, F.cross_entropy(s, y, weight=w, reduction="sum") / 8)
    torch_mean = F.cross_entropy(s, y, weight=w)                       # divides by sum_i w_{y_i}
    torch.testing.assert_close(torch_mean * w[y].sum() / 8, ours)
    assert abs(torch_mean.item() - ours.item()) > 1e-3
    doc = " ".join(LF.softmax_loss.__doc__.split())
    assert 'cross_entropy(scores, target, weight=w, reduction="sum") / N' in doc
    assert "NOT cross_entropy(weight=w)'s mean, which divides by sum_i w_{y_i}" in doc
    assert "(1/N) sum_i w_{y_i} L_i" in " ".join(LF.__doc__.split())


def test_balanced_class_weight_is_scikit_learns():
    y = torch.tensor([0, 0, 0, 1, 2, 2, 0, 1])
    w = LF.balanced_class_weight(y, 4)                                 # class 3 absent: weight 0
    assert w.tolist() == pytest.approx([8 / 16, 8 / 8, 8 / 8, 0.0])
    assert LF.balanced_class_weight(y, 3)[y].sum().item() == pytest.approx(len(y))   # every class present
    sklearn = pytest.importorskip("sklearn.utils.class_weight", reason="scikit-learn not installed")
    ref = sklearn.compute_class_weight("balanced", classes=torch.arange(3).numpy(), y=y.numpy())
    assert LF.balanced_class_weight(y, 3).tolist() == pytest.approx(ref.tolist())


@pytest.mark.parametrize("w,match", [
    (torch.ones(4), "shape"), (torch.ones(3, dtype=torch.long), "floating-point"), ([1.0, 1.0, 1.0], "tensor"),
    (torch.tensor([1.0, -1.0, 1.0]), "finite and >= 0"), (torch.tensor([1.0, float("nan"), 1.0]), "finite"),
], ids=["wrong length", "integer", "list", "negative", "nan"])
def test_bad_class_weight_raises_value_error(w, match):
    for loss_fn in (lintorch.svm_loss, lintorch.softmax_loss):
        with pytest.raises(ValueError, match=match):
            loss_fn(S, Y, class_weight=w)


TRANSFORM_TOL = dict(rtol=1e-10, atol=1e-12)
TRANSFORM_LOSSES = {   # name: (lintorch's loss, the plain-op reference, smooth)
    "softmax": (LF.softmax_loss, softmax_reference, True),
    "squared": (LF.squared_loss, squared_reference, True),
    "logistic": (LF.logistic_loss, logistic_reference, True),
    "hinge": (LF.svm_loss, svm_expression, False),
    "squared-hinge": (functools.partial(LF.svm_loss, squared=True), functools.partial(svm_expression, squared=True),
                      True),
    "crammer-singer-squared": (functools.partial(LF.svm_loss, squared=True, form="crammer-singer"),
                               functools.partial(svm_expression, squared=True, form="crammer-singer"), False),
    "one-vs-rest-squared": (functools.partial(LF.svm_loss, squared=True, form="one-vs-rest"),
                            functools.partial(svm_expression, squared=True, form="one-vs-rest"), True),
}
WEIGHT = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.75], dtype=torch.float64)


def transform_scores(*lead, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(*lead, 8, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (8,), generator=g)


def bind(loss, y, reduction="mean", weighted=False):
    ours, ref, _ = TRANSFORM_LOSSES[loss]
    kw = dict(reduction=reduction, class_weight=WEIGHT if weighted else None)
    return functools.partial(ours, target=y, **kw), functools.partial(ref, y=y, **kw)


@pytest.mark.parametrize("loss", TRANSFORM_LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_vmap_over_stacked_scores_equals_the_reference_and_the_K_call(loss, reduction):
    S, y = transform_scores(3)
    ours, ref = bind(loss, y, reduction, weighted=True)
    batched = vmap(lambda s: ours(s))(S)
    torch.testing.assert_close(batched, torch.stack([ref(s) for s in S]), **TRANSFORM_TOL)
    torch.testing.assert_close(batched, ours(S), **TRANSFORM_TOL)                         # lintorch's own K stacking
    gv = vmap(grad(lambda s: ours(s).sum()))(S)                                # per-member gradients
    torch.testing.assert_close(gv, torch.stack([torch.func.grad(lambda s: ref(s).sum())(s) for s in S]), **TRANSFORM_TOL)


@pytest.mark.parametrize("loss", TRANSFORM_LOSSES)
def test_gradcheck_forward_mode_and_batched_gradients(loss):
    S, y = transform_scores()
    ours, _ = bind(loss, y, "none", weighted=True)
    assert torch.autograd.gradcheck(ours, (S.requires_grad_(),), check_forward_ad=True, check_batched_grad=True,
                                     check_batched_forward_grad=True)


@pytest.mark.parametrize("loss", TRANSFORM_LOSSES)
def test_jvp_equals_the_references(loss):
    S, y = transform_scores()
    ours, ref = bind(loss, y, "sum", weighted=True)
    t = torch.randn_like(S)
    (value, tangent), (ref_value, ref_tangent) = jvp(ours, (S,), (t,)), jvp(ref, (S,), (t,))
    torch.testing.assert_close(value, ref_value, **TRANSFORM_TOL)
    torch.testing.assert_close(tangent, ref_tangent, **TRANSFORM_TOL)
    torch.testing.assert_close(jacfwd(ours)(S), torch.func.jacrev(ref)(S), **TRANSFORM_TOL)


@pytest.mark.parametrize("loss", TRANSFORM_LOSSES)
def test_hessian_equals_the_references_and_the_hinges_is_zero(loss):
    """torch.func.hessian (forward over reverse) and torch.autograd.functional.hessian (reverse over
    reverse) through lintorch's loss equal autograd's Hessian of the plain-op reference; the hinge's
    is 0 almost everywhere (its gradient is piecewise constant), on both sides."""
    S, y = transform_scores()
    ours, ref = bind(loss, y, "mean", weighted=True)
    expected = torch.autograd.functional.hessian(ref, S)
    torch.testing.assert_close(hessian(ours)(S), expected, **TRANSFORM_TOL)
    torch.testing.assert_close(torch.autograd.functional.hessian(ours, S), expected, **TRANSFORM_TOL)
    assert bool(expected.abs().sum() == 0) == (loss == "hinge")
    smooth = TRANSFORM_LOSSES[loss][2]
    if smooth:
        assert torch.autograd.gradgradcheck(ours, (S.requires_grad_(),), check_fwd_over_rev=True)


def test_hessian_vector_products_through_the_total_loss_equal_the_references():
    """The total loss L(W) = softmax(linear(x, W, b)) + 0.1 R(W) (elastic net): its Hessian, a
    Hessian-vector product and so a Newton direction, through linear, the loss and the penalty,
    equal the reference's (l1's part of the Hessian is 0 off W = 0 on both sides)."""
    g = torch.Generator().manual_seed(1)
    x, W, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((12, 4), (3, 4), (3,)))
    y = torch.randint(0, 3, (12,), generator=g)

    def total(W):
        return LF.softmax_loss(LF.linear(x, W, b), y) + 0.1 * LF.elastic_net_penalty(W, 0.5)

    def reference(W):
        return softmax_reference(x @ W.T + b, y) + 0.1 * PENALTY_REFS["elasticnet"](W, 0.5)

    H = hessian(total)(W).reshape(12, 12)
    torch.testing.assert_close(H, torch.autograd.functional.hessian(reference, W).reshape(12, 12), **TRANSFORM_TOL)
    v = torch.randn(3, 4, generator=g, dtype=torch.float64)
    hvp = torch.autograd.functional.hvp(total, W, v)[1]
    torch.testing.assert_close(hvp, torch.autograd.functional.hvp(reference, W, v)[1], **TRANSFORM_TOL)
    newton = torch.linalg.solve(H, grad(total)(W).reshape(12))
    torch.testing.assert_close(newton, torch.linalg.solve(torch.autograd.functional.hessian(reference, W).reshape(12, 12),
                                                          torch.func.grad(reference)(W).reshape(12)), **TRANSFORM_TOL)


@pytest.mark.parametrize("kind", LF.PENALTIES)
def test_linear_and_penalty_under_vmap_jvp_and_gradcheck(kind):
    g = torch.Generator().manual_seed(2)
    x, W, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((6, 4), (3, 4), (3,)))
    Ws = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(vmap(lambda W: LF.linear(x, W, b))(Ws), x @ Ws.mT + b, **TRANSFORM_TOL)
    torch.testing.assert_close(vmap(lambda W: LF.penalty(W, kind, 0.5))(Ws),
                               PENALTY_REFS[kind](Ws, 0.5), **TRANSFORM_TOL)
    t = tuple(torch.randn_like(a) for a in (x, W, b))
    torch.testing.assert_close(jvp(LF.linear, (x, W, b), t)[1], jvp(lambda x, W, b: x @ W.T + b, (x, W, b), t)[1],
                               **TRANSFORM_TOL)
    torch.testing.assert_close(jvp(lambda W: LF.penalty(W, kind, 0.5), (W,), (t[1],))[1],
                               jvp(lambda W: PENALTY_REFS[kind](W, 0.5), (W,), (t[1],))[1], **TRANSFORM_TOL)
    inputs = tuple(a.clone().requires_grad_() for a in (x, W, b))
    assert torch.autograd.gradcheck(LF.linear, inputs, check_forward_ad=True, check_batched_grad=True)
    assert torch.autograd.gradcheck(lambda W: LF.penalty(W, kind, 0.5), (inputs[1],), check_forward_ad=True,
                                    check_batched_grad=True)


def test_the_graph_free_step_is_untouched_by_the_transforms():
    """Objective.loss_and_grad reuses the same *_forward/*_backward: its gradient still equals
    autograd's through the Functions, exactly."""
    from lintorch.objective import objective_and_grad
    g = torch.Generator().manual_seed(4)
    x, W, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((10, 6), (4, 6), (4,)))
    y = torch.randint(0, 4, (10,), generator=g)
    for loss, fn in (("softmax", LF.softmax_loss), ("squared", LF.squared_loss), ("svm", LF.svm_loss)):
        _, data, reg, dW, db = objective_and_grad(x, W, b, y, loss=loss, reg=0.1)
        Wg, bg = W.clone().requires_grad_(), b.clone().requires_grad_()
        total = fn(LF.linear(x, Wg, bg), y) + 0.1 * LF.penalty(Wg)
        aW, ab = torch.autograd.grad(total, (Wg, bg))
        torch.testing.assert_close(data + reg, total.detach(), rtol=0, atol=0)
        torch.testing.assert_close((dW, db), (aW, ab), rtol=1e-14, atol=1e-15)


def _compiled_step(backend, losses):
    """One graph holds every loss's total (one compile, not one per loss); each value and each loss's
    gradients are compared with eager's."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(3)
    x, W, b = (torch.randn(*s, generator=g) for s in ((16, 8), (4, 8), (4,)))
    y = torch.randint(0, 4, (16,), generator=g)

    def objectives(x, W, b, y):
        scores, reg = LF.linear(x, W, b), 0.1 * LF.penalty(W)
        return tuple(loss(scores, y) + reg for loss in losses)
    Wg, bg = W.clone().requires_grad_(), b.clone().requires_grad_()
    compiled = torch.compile(objectives, fullgraph=True, backend=backend)      # fullgraph: no graph break
    values, eager = compiled(x, Wg, bg, y), objectives(x, Wg, bg, y)
    assert len(values) == len(eager) == len(losses)
    for value, expected in zip(values, eager):
        torch.testing.assert_close(value, expected)
        torch.testing.assert_close(torch.autograd.grad(value, (Wg, bg), retain_graph=True),
                                   torch.autograd.grad(expected, (Wg, bg), retain_graph=True))
    with pytest.raises(ValueError, match="out of range"):                     # eager calls still validate
        LF.softmax_loss(LF.linear(x, W, b), torch.full((16,), 7))


@pytest.mark.slow
def test_torch_compile_fullgraph_traces_the_functions_and_equals_eager():
    """Dynamo and AOTAutograd trace linear, the three losses and the penalty with no graph break
    (aot_eager: no code generation; 20 s at load 12); the value checks' host syncs are skipped
    while compiling, and eager calls still make them."""
    _compiled_step("aot_eager", (LF.softmax_loss, functools.partial(LF.svm_loss, squared=True), LF.squared_loss))


@pytest.mark.slow
def test_torch_compile_inductor_equals_eager():
    """The default backend (inductor's generated code): about 2.5 min cold on 2 loaded cores."""
    _compiled_step("inductor", (LF.softmax_loss,))


S_Y = (torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
       torch.tensor([0, 1, 2, 3, 0, 1]))


def grads_of(fn, S):
    S = S.clone().requires_grad_()
    fn(S).sum().backward()
    return S.grad


@pytest.mark.parametrize("stacked", [False, True])
def test_softmax_none_output_can_be_scaled_in_place(stacked):
    S, y = S_Y
    S = S.expand(3, 6, 4).clone() if stacked else S

    def in_place(s):
        L = lintorch.softmax_loss(s, y, reduction="none")
        L *= 2
        return L
    ref = grads_of(lambda s: 2 * F.cross_entropy(s.reshape(-1, 4), y.repeat(3 if stacked else 1),
                                                 reduction="none"), S)
    assert torch.allclose(grads_of(in_place, S), ref)
    L = lintorch.softmax_loss(S, y, reduction="none")
    assert not L._is_view()


def test_svm_none_output_can_be_scaled_in_place_too():
    S, y = S_Y

    def in_place(s):
        L = lintorch.svm_loss(s, y, reduction="none")
        L.mul_(3)
        return L
    assert torch.allclose(grads_of(in_place, S), 3 * grads_of(lambda s: lintorch.svm_loss(s, y, reduction="none"), S))


@pytest.mark.parametrize("shape", [(4, 0, 3, None), (0, 5, 3, None), (4, 0, 3, 2), (0, 0, 3, None)])
def test_linear_with_no_features_or_no_rows_is_f_linear(shape):
    N, D, C, K = shape
    g = torch.Generator().manual_seed(1)
    lead = (C,) if K is None else (K, C)
    x = torch.randn(N, D, dtype=torch.float64, generator=g).requires_grad_()
    W = torch.randn(*lead, D, dtype=torch.float64, generator=g).requires_grad_()
    b = torch.randn(*lead, dtype=torch.float64, generator=g).requires_grad_()
    s = lintorch.linear(x, W, b)
    ref = F.linear(x, W, b) if K is None else torch.stack([F.linear(x, W[k], b[k]) for k in range(K)])
    assert s.shape == ref.shape and torch.equal(s, ref)
    up = torch.randn(s.shape, dtype=torch.float64, generator=g)
    got = torch.autograd.grad(s, (x, W, b), up)
    want = torch.autograd.grad(ref, (x, W, b), up)
    for a, r in zip(got, want):
        assert a.shape == r.shape and torch.allclose(a, r)


@pytest.mark.parametrize("loss", [lintorch.softmax_loss, lintorch.svm_loss])
def test_class_weight_that_requires_grad_is_refused_by_name(loss):
    S, y = S_Y
    w = torch.ones(4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="class_weight requires grad.*detach"):
        loss(S.clone().requires_grad_(), y, class_weight=w)
    plain = loss(S, y, class_weight=w.detach())
    with torch.no_grad():                                   # no graph asked for: nothing is lost
        assert torch.equal(loss(S, y, class_weight=w), plain)


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


def test_under_inference_mode_each_function_gives_its_autograd_outputs():
    """_apply's shortcut (the forward itself under inference_mode) returns what apply returns under no_grad."""
    g = torch.Generator().manual_seed(0)
    x, W, b = torch.randn(7, 5, generator=g), torch.randn(2, 4, 5, generator=g), torch.randn(2, 4, generator=g)
    y = torch.randint(0, 4, (7,), generator=g)
    calls = [lambda: LF.linear(x, W, b), lambda: LF.linear(x, W[0], None),
             lambda: LF.softmax_loss(x @ W[0].t(), y, reduction="none"),
             lambda: LF.svm_loss(x @ W[0].t(), y, reduction="sum"),
             lambda: LF.squared_loss(x @ W[0].t(), y), lambda: LF.logistic_loss(x @ W[0].t(), y)]
    for call in calls:
        with torch.no_grad():
            expected = call()
        with torch.inference_mode():
            got = call()
        assert got.is_inference() and not got.requires_grad
        assert torch.equal(got, expected)
