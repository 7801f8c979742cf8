"""lintorch's Functions compose with all of PyTorch (issue 27): vmap, forward mode (jvp), double
backward, torch.func.grad/hessian and torch.compile, each against an independent reference
(autograd through plain torch ops: lintorch.verify.references) or against eager."""
import functools

import pytest
import torch
from torch.func import grad, hessian, jacfwd, jvp, vmap

from lintorch import functional as LF
from lintorch.verify.references import (PENALTY_REFS, logistic_reference, softmax_reference, squared_reference,
                                       svm_expression)

TOL = dict(rtol=1e-10, atol=1e-12)
LOSSES = {   # name: (lintorch's loss, the plain-op reference, smooth)
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


def scores(*lead, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(*lead, 8, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (8,), generator=g)


def bind(loss, y, reduction="mean", weighted=False):
    ours, ref, _ = LOSSES[loss]
    kw = dict(reduction=reduction, class_weight=WEIGHT if weighted else None)
    return functools.partial(ours, target=y, **kw), functools.partial(ref, y=y, **kw)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_vmap_over_stacked_scores_equals_the_reference_and_the_K_call(loss, reduction):
    S, y = scores(3)
    ours, ref = bind(loss, y, reduction, weighted=True)
    batched = vmap(lambda s: ours(s))(S)
    torch.testing.assert_close(batched, torch.stack([ref(s) for s in S]), **TOL)
    torch.testing.assert_close(batched, ours(S), **TOL)                         # lintorch's own K stacking
    gv = vmap(grad(lambda s: ours(s).sum()))(S)                                # per-member gradients
    torch.testing.assert_close(gv, torch.stack([torch.func.grad(lambda s: ref(s).sum())(s) for s in S]), **TOL)


@pytest.mark.parametrize("loss", LOSSES)
def test_gradcheck_forward_mode_and_batched_gradients(loss):
    S, y = scores()
    ours, _ = bind(loss, y, "none", weighted=True)
    assert torch.autograd.gradcheck(ours, (S.requires_grad_(),), check_forward_ad=True, check_batched_grad=True,
                                     check_batched_forward_grad=True)


@pytest.mark.parametrize("loss", LOSSES)
def test_jvp_equals_the_references(loss):
    S, y = scores()
    ours, ref = bind(loss, y, "sum", weighted=True)
    t = torch.randn_like(S)
    (value, tangent), (ref_value, ref_tangent) = jvp(ours, (S,), (t,)), jvp(ref, (S,), (t,))
    torch.testing.assert_close(value, ref_value, **TOL)
    torch.testing.assert_close(tangent, ref_tangent, **TOL)
    torch.testing.assert_close(jacfwd(ours)(S), torch.func.jacrev(ref)(S), **TOL)


@pytest.mark.parametrize("loss", LOSSES)
def test_hessian_equals_the_references_and_the_hinges_is_zero(loss):
    """torch.func.hessian (forward over reverse) and torch.autograd.functional.hessian (reverse over
    reverse) through lintorch's loss equal autograd's Hessian of the plain-op reference; the hinge's
    is 0 almost everywhere (its gradient is piecewise constant), on both sides."""
    S, y = scores()
    ours, ref = bind(loss, y, "mean", weighted=True)
    expected = torch.autograd.functional.hessian(ref, S)
    torch.testing.assert_close(hessian(ours)(S), expected, **TOL)
    torch.testing.assert_close(torch.autograd.functional.hessian(ours, S), expected, **TOL)
    assert bool(expected.abs().sum() == 0) == (loss == "hinge")
    smooth = LOSSES[loss][2]
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
    torch.testing.assert_close(H, torch.autograd.functional.hessian(reference, W).reshape(12, 12), **TOL)
    v = torch.randn(3, 4, generator=g, dtype=torch.float64)
    hvp = torch.autograd.functional.hvp(total, W, v)[1]
    torch.testing.assert_close(hvp, torch.autograd.functional.hvp(reference, W, v)[1], **TOL)
    newton = torch.linalg.solve(H, grad(total)(W).reshape(12))
    torch.testing.assert_close(newton, torch.linalg.solve(torch.autograd.functional.hessian(reference, W).reshape(12, 12),
                                                          torch.func.grad(reference)(W).reshape(12)), **TOL)


@pytest.mark.parametrize("kind", LF.PENALTIES)
def test_linear_and_penalty_under_vmap_jvp_and_gradcheck(kind):
    g = torch.Generator().manual_seed(2)
    x, W, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((6, 4), (3, 4), (3,)))
    Ws = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(vmap(lambda W: LF.linear(x, W, b))(Ws), x @ Ws.mT + b, **TOL)
    torch.testing.assert_close(vmap(lambda W: LF.penalty(W, kind, 0.5))(Ws),
                               PENALTY_REFS[kind](Ws, 0.5), **TOL)
    t = tuple(torch.randn_like(a) for a in (x, W, b))
    torch.testing.assert_close(jvp(LF.linear, (x, W, b), t)[1], jvp(lambda x, W, b: x @ W.T + b, (x, W, b), t)[1],
                               **TOL)
    torch.testing.assert_close(jvp(lambda W: LF.penalty(W, kind, 0.5), (W,), (t[1],))[1],
                               jvp(lambda W: PENALTY_REFS[kind](W, 0.5), (W,), (t[1],))[1], **TOL)
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
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(3)
    x, W, b = (torch.randn(*s, generator=g) for s in ((16, 8), (4, 8), (4,)))
    y = torch.randint(0, 4, (16,), generator=g)
    for loss in losses:
        def objective(x, W, b, y):
            return loss(LF.linear(x, W, b), y) + 0.1 * LF.penalty(W)
        Wg, bg = W.clone().requires_grad_(), b.clone().requires_grad_()
        compiled = torch.compile(objective, fullgraph=True, backend=backend)    # fullgraph: no graph break
        value = compiled(x, Wg, bg, y)
        grads = torch.autograd.grad(value, (Wg, bg))
        eager = objective(x, Wg, bg, y)
        torch.testing.assert_close(value, eager)
        torch.testing.assert_close(grads, torch.autograd.grad(eager, (Wg, bg)))
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
