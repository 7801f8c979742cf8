"""The math of lintorch: the score function, the four losses and the weight penalties.

Shapes: N examples, D features, C classes, and optionally K stacked models (a
hyperparameter sweep trains K weight matrices at once).

    x       (N, D)                      features, shared by all K models
    weight  (C, D)     or (K, C, D)     nn.Linear's layout everywhere
    bias    (C,)       or (K, C)
    scores  (N, C)     or (K, N, C)
    target  (N,)                        integer class indices in [0, C)
    class_weight (C,)                   optional per-class weights w_c

With class weights the losses weigh example i by w_{y_i} and the mean stays a mean over N:
(1/N) sum_i w_{y_i} L_i. This is NOT torch.nn.functional.cross_entropy(weight=w)'s "mean",
which divides by sum_i w_{y_i}; it equals cross_entropy(weight=w, reduction="sum") / N, and
F.multi_margin_loss(weight=w)'s mean. With balanced weights (balanced_class_weight) the sum of
the w_{y_i} is N, so both normalizations agree, and so does scikit-learn's class_weight="balanced".

Every operation is a ``torch.autograd.Function`` whose backward pass is written
by hand from calculus, next to its forward pass (as plain ``*_forward``/``*_backward``
tensor functions); users call the plain functions (``linear``, ``svm_loss``,
``softmax_loss``, ``squared_loss``, ``logistic_loss``, ``penalty``), never ``.apply``. ``objective.Objective.loss_and_grad`` chains
the same backward functions by hand for training, with no autograd graph.
Nothing here calls autograd or torch's own loss functions: ``lintorch.gradcheck``
checks these gradients against exactly those independent references.

The Functions compose with all of PyTorch (PyTorch's "Extending torch.func with autograd.Function"):

    setup_context   forward computes, setup_context only saves (what torch.func requires)
    vmap            generate_vmap_rule = True: forward, backward and jvp are plain torch operations
                    that never write into their inputs or the incoming gradient, so torch derives the
                    batched rule (torch.func.vmap over stacked scores, gradcheck(check_batched_grad=True))
    jvp             forward-mode AD, written by hand beside backward (torch.func.jvp, jacfwd,
                    gradcheck(check_forward_ad=True))
    double backward each loss returns (loss, aux, L_i): aux (softmax P, SVM margins, squared residuals)
                    and the L_i are differentiable outputs whose backward is written out too, and the
                    backward is differentiable torch operations of them; so autograd differentiates the
                    backward again (torch.func.hessian, Hessian-vector products, gradgradcheck, Newton).
                    The softmax, squared and squared-hinge Hessians are exact; the hinge's is honestly
                    0 almost everywhere (its gradient is piecewise constant: [m > 0] has derivative 0),
                    and so is l1's.
    torch.compile   no host sync inside the Functions: the wrappers' value checks (target range,
                    class_weight values) are skipped while torch.compile traces, so
                    torch.compile(step, fullgraph=True) has no graph break and equals eager.

A new loss copies one block below: its *_forward -> (loss, aux, L_i), its *_backward(aux, L_i, target,
grad, ...) -> dscores, how aux moves with the scores (*_aux_jvp, *_aux_vjp), and a Function whose
backward and jvp are _loss_backward and _loss_jvp on those pieces.

Float16/bfloat16 inputs are computed in float32 and the results cast back, and
under ``torch.autocast`` the losses take float32 scores, as torch's own losses do.
"""
import functools
import math

import torch
from torch.autograd import Function

from .names import PENALTIES, SVM_FORMS

REDUCTIONS = ("mean", "sum", "none")

__all__ = ["linear", "svm_loss", "softmax_loss", "squared_loss", "logistic_loss", "penalty", "l2_penalty", "l1_penalty",
           "elastic_net_penalty", "balanced_class_weight", "check_inputs", "REDUCTIONS", "SVM_FORMS", "PENALTIES"]


# --------------------------------------------------------------------------- checks

def _check_scores_target(scores, target, reduction, validate):
    """Raise ValueError naming the problem; a bad target must never reach gather/scatter."""
    if not isinstance(scores, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("scores and target must be torch.Tensors")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating-point tensor, got dtype {scores.dtype}")
    if scores.dim() not in (2, 3):
        raise ValueError(f"scores must be 2-D (N, C) or 3-D (K, N, C), got shape {tuple(scores.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    N, C = scores.shape[-2:]
    if target.dim() != 1 or target.shape[0] != N:
        raise ValueError(f"target must have shape ({N},) to match scores {tuple(scores.shape)}, "
                         f"got {tuple(target.shape)}")
    if N == 0:
        raise ValueError("empty batch: scores has 0 examples")
    if C == 0:
        raise ValueError("scores has 0 classes")
    if target.device != scores.device:
        raise ValueError(f"target is on {target.device} but scores on {scores.device}")
    if validate:  # one host sync; training validates labels once at load and passes validate=False
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= C:
            bad = lo if lo < 0 else hi
            raise ValueError(f"target value {bad} is out of range [0, {C}) for {C} classes")


def check_inputs(scores, target, reduction="mean", class_weight=None):
    """The losses' argument checks without a host sync (labels and class weights are checked once
    at load): ValueError naming the problem."""
    _check_scores_target(scores, target, reduction, validate=False)
    _check_class_weight(class_weight, scores, validate=False)


def _check_class_weight(class_weight, scores, validate):
    """class_weight None or a floating (C,) tensor on the scores' device; validate: finite, >= 0."""
    if class_weight is None:
        return
    C = scores.shape[-1]
    if not isinstance(class_weight, torch.Tensor) or not class_weight.is_floating_point() \
            or class_weight.shape != (C,):
        raise ValueError(f"class_weight must be a floating-point tensor of shape ({C},), got "
                         f"{getattr(class_weight, 'shape', type(class_weight).__name__)}")
    if class_weight.device != scores.device:
        raise ValueError(f"class_weight is on {class_weight.device} but scores on {scores.device}")
    if class_weight.requires_grad and torch.is_grad_enabled():
        raise ValueError("class_weight requires grad, but the loss treats class weights as constants and gives "
                         "them no gradient; pass class_weight.detach()")
    if validate and not bool((torch.isfinite(class_weight) & (class_weight >= 0)).all()):
        raise ValueError("class_weight must be finite and >= 0")


def balanced_class_weight(target, num_classes):
    """scikit-learn's class_weight="balanced": w_c = N / (C n_c), so that sum_i w_{y_i} = N when
    every class has examples.
    target (N,) -> (C,) float32 on target's device; a class with no examples gets 0 (never used)."""
    counts = torch.bincount(target.long(), minlength=num_classes).float()
    return torch.where(counts > 0, len(target) / (num_classes * counts.clamp_min(1)), torch.zeros_like(counts))


def _example_weight(class_weight, target, dtype):
    """w_{y_i} (N,) in dtype, or None without class weights."""
    return None if class_weight is None else class_weight.to(dtype)[target]


def _compute_dtype(t):
    """Half precisions are computed in float32 (as torch's opmath does)."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def _autocast_float32(t):
    """Losses run in float32 under autocast, like torch's own losses (custom_fwd(cast_inputs=float32))."""
    if torch.is_autocast_enabled(t.device.type) and t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def _index(target, scores):
    """target (N,) -> (..., N, 1) int64, broadcast over a leading K dimension."""
    return target.long().view(-1, 1).expand(*scores.shape[:-1], 1)


def _reduce(losses, reduction):
    """losses (..., N) -> (...) for sum/mean, unchanged for none."""
    if reduction == "sum":
        return losses.sum(-1)
    if reduction == "mean":
        return losses.mean(-1)
    return losses


def _example_grad(grad, reduction, losses, weight=None):
    """dL/dL_i, the incoming gradient of the reduced loss per example (times w_{y_i} with class
    weights (N,)), as (..., N, 1); never written into. It is NaN where L_i is not finite (0 * L_i
    is NaN exactly there), so such an example's gradient row is NaN too, never a finite
    subgradient (a NaN margin is not "inactive")."""
    if reduction == "none":
        g = grad.unsqueeze(-1)
    else:
        g = (grad * (1.0 / losses.shape[-1]) if reduction == "mean" else grad).unsqueeze(-1).unsqueeze(-1)
    if weight is not None:
        g = g * weight.unsqueeze(-1)
    return torch.add(g, losses.unsqueeze(-1), alpha=0.0)              # g + 0 L_i: NaN where L_i is not finite


def _own_outputs(reduction, loss, aux, losses):
    """A Function's outputs must be distinct tensors, each with its own gradient: with
    reduction="none" the loss is the L_i themselves, so it is returned as a copy. The copy is also
    never a view (softmax's L_i are a squeeze of a gather): autograd refuses to let a caller change
    a custom Function's view output in place (L *= 2), which F.cross_entropy allows. (Decided by
    the reduction, not Tensor._is_view, which torch.compile cannot trace.)"""
    return (loss.clone() if reduction == "none" else loss), aux, losses


def _validating(validate):
    """Value checks (a host sync each) run eagerly only: never while torch.compile traces."""
    return validate and not torch.compiler.is_compiling()


def _apply(function, traced, *args):
    """function.apply(*args), or, while torch.compile traces, traced.apply(*args): its twin without
    jvp (_without_jvp), since Dynamo cannot trace a Function with a custom jvp (compiled code
    differentiates its own graph and needs none). Under torch.inference_mode, where autograd records
    nothing (no graph, no forward-mode tangent), function.forward(*args) itself: the same outputs
    without apply's per-call cost (it binds the arguments by inspect.signature, about 0.3 ms a call)."""
    if torch.compiler.is_compiling():       # first: Dynamo cannot trace is_inference_mode_enabled
        return traced.apply(*args)
    if torch.is_inference_mode_enabled():
        return function.forward(*args)
    return function.apply(*args)


def _without_jvp(function):
    """function's subclass with the base Function's jvp: what torch.compile traces."""
    return type(f"{function.__name__}Traced", (function,), {"jvp": staticmethod(Function.jvp), "__module__": __name__,
                                                             "__doc__": _without_jvp.__doc__})


def _save_loss(ctx, inputs, output):
    """A loss Function's setup_context: inputs (scores, target, *settings, reduction, class_weight),
    output (loss, aux, L_i). Saves target, aux, the L_i and class_weight for backward and jvp."""
    scores, target, *settings, reduction, class_weight = inputs
    _, aux, losses = output
    ctx.save_for_backward(target, aux, losses, class_weight)
    ctx.save_for_forward(target, aux, losses, class_weight)
    ctx.reduction, ctx.dtype, ctx.n_inputs = reduction, scores.dtype, len(inputs)
    ctx.set_materialize_grads(False)        # a None for the outputs nobody used: no work for them


def _loss_backward(ctx, backward, grad, grad_losses, grad_through_aux):
    """dL/dscores from the three outputs' incoming gradients (None: unused): the reduced loss's by
    the loss's backward, the L_i's by the same backward with reduction "none", and aux's already
    mapped to the scores (grad_through_aux). backward(grad, reduction) -> dscores."""
    terms = [t for t in (None if grad is None else backward(grad, ctx.reduction),
                         None if grad_losses is None else backward(grad_losses, "none"),
                         grad_through_aux) if t is not None]
    if not terms:                                                          # no output's gradient defined
        return (None,) * ctx.n_inputs
    dscores = terms[0]
    for t in terms[1:]:
        dscores = dscores + t
    return (dscores.to(ctx.dtype),) + (None,) * (ctx.n_inputs - 1)


def _loss_jvp(ctx, backward, dscores, aux_tangent, losses):
    """The three outputs' tangents for a tangent dscores of the scores: dL_i = <dL_i/ds_i, ds_i>
    with the gradient rows backward(ones, "none") (class weights and NaN rows included), the loss's
    by reducing them, and aux's (aux_tangent, the loss's own)."""
    rows = backward(torch.ones_like(losses), "none")                       # dL_i/ds_i (..., N, C)
    dlosses = (rows * dscores.to(rows.dtype)).sum(-1)                      # (..., N)
    return _reduce(dlosses, ctx.reduction).to(ctx.dtype), aux_tangent, dlosses


# --------------------------------------------------------------------------- linear
# Each operation is a pair of plain tensor functions, forward and backward side by side; the
# autograd Function wraps them, and objective.Objective chains the same backward functions by hand.

def linear_forward(x, weight, bias):
    """scores = x W^T + b: (N, D), (C, D) -> (N, C); with K models (K, C, D) -> (K, N, C).

    The K models share x, so they are one GEMM against the (K*C, D) stack. It is computed as
    (W x^T)^T: with C << D, MKL runs W x^T about 2x faster than x W^T (bench/RESULTS.md), so the
    scores are returned as a transposed view (use .reshape, not .view, on them).
    """
    KC, D = math.prod(weight.shape[:-1]), weight.shape[-1]          # shapes spelled out: D or N may be 0
    W = weight.reshape(KC, D)                                          # (K*C, D)
    scores_t = W @ x.t() if bias is None else torch.addmm(bias.reshape(KC, 1), W, x.t())  # (K*C, N)
    if weight.dim() == 3:
        return scores_t.view(weight.shape[0], weight.shape[1], x.shape[0]).transpose(-1, -2)  # (K, N, C) view
    return scores_t.t()                                                # (N, C) view


def linear_backward(x, weight, dscores, need_x=True, need_weight=True, need_bias=True):
    """dx = dS W,  dW = dS^T x,  db = sum_n dS  (dS = dL/dscores, (N, C) or (K, N, C)).

    dW is computed as dS^T x, not (x^T dS)^T: the result is then contiguous in nn.Linear's
    (C, D) layout with no transpose copy. dS^T is taken as the (K*C, N) matrix of dS.mT: a view,
    no copy, for the scores linear_forward returns (and a loss's dscores in their layout).
    """
    KC, D = math.prod(weight.shape[:-1]), weight.shape[-1]
    W = weight.reshape(KC, D)                                          # (K*C, D)
    # under autocast the scores (and so dS) may be half precision while x and W are not
    dS_t = dscores.mT.reshape(KC, x.shape[0]).to(weight.dtype)         # (K*C, N)
    dx = dS_t.t() @ W if need_x else None
    dW = (dS_t @ x).view(weight.shape) if need_weight else None
    db = dS_t.sum(1).view(weight.shape[:-1]) if need_bias else None
    return dx, dW, db


class _Linear(Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias):
        return linear_forward(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.save_for_forward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, dscores):
        """dx = dS W,  dW = dS^T x,  db = sum_n dS (linear_backward). Plain tensor expressions of
        the saved x, W and dS, so autograd differentiates them again: double backward is exact
        (gradgradcheck-tested)."""
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        return linear_backward(x, weight, dscores, need[0], need[1], ctx.has_bias and need[2])

    @staticmethod
    def jvp(ctx, dx, dweight, dbias):
        """d(x W^T + b) = dx W^T + x dW^T + db (linear_forward on the tangents)."""
        x, weight = ctx.saved_tensors
        terms = [linear_forward(dx, weight, None) if dx is not None else None,
                 linear_forward(x, dweight, None) if dweight is not None else None]
        dscores = sum(t for t in terms if t is not None) if any(t is not None for t in terms) else None
        if dbias is not None:
            db = dbias.unsqueeze(-2)                                         # (C,) -> (1, C), (K, C) -> (K, 1, C)
            dscores = db.expand(*weight.shape[:-2], x.shape[0], weight.shape[-2]) if dscores is None else dscores + db
        return dscores


_LinearTraced = _without_jvp(_Linear)


def linear(x, weight, bias=None):
    """The score function f(x, W, b) = x W^T + b.

    x (N, D), weight (C, D) or (K, C, D), bias (C,) or (K, C) or None.
    Returns scores (N, C), or (K, N, C) for K stacked models.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (N, D), got shape {tuple(x.shape)}")
    if weight.dim() not in (2, 3) or weight.shape[-1] != x.shape[1]:
        raise ValueError(f"weight must be (C, D) or (K, C, D) with D = {x.shape[1]}, "
                         f"got shape {tuple(weight.shape)}")
    if bias is not None and bias.shape != weight.shape[:-1]:
        raise ValueError(f"bias must have shape {tuple(weight.shape[:-1])}, got {tuple(bias.shape)}")
    return _apply(_Linear, _LinearTraced, x, weight, bias)


# --------------------------------------------------------------------------- SVM (hinge) loss

def svm_forward(scores, target, margin=1.0, squared=False, form="weston-watkins", reduction="mean",
                class_weight=None):
    """Weston-Watkins: L_i = sum_{j != y_i} h(m_ij);  Crammer-Singer: L_i = h(max_{j != y_i} m_ij);
    m_ij = s_j - s_{y_i} + margin, h(m) = max(0, m), or max(0, m)^2 when squared; times w_{y_i}
    with class weights (C,). One-vs-rest (C binary SVMs, Coates et al.'s L2-SVM when squared):
    L_i = sum_j h(m_ij) with m_ij = margin - t_ij s_j, t_ij = +1 for j = y_i and -1 otherwise.

    scores (..., N, C) -> (reduced loss, margins (..., N, C), losses L_i (..., N)); the margins,
    with the target entry set to 0 (WW) or -inf (CS), and the L_i are what the backward pass needs.
    """
    s = scores.to(_compute_dtype(scores))
    idx = _index(target, s)
    if form == "one-vs-rest":
        margins = (s + margin).scatter_(-1, idx, margin - s.gather(-1, idx))   # margin - t_ij s_j
    else:
        margins = (s - s.gather(-1, idx)).add_(margin)                 # (..., N, C), a new tensor
        margins.scatter_(-1, idx, -math.inf if form == "crammer-singer" else 0.0)
    h = (margins.amax(-1, keepdim=True) if form == "crammer-singer" else margins).clamp_min(0.0)
    losses = (h.square() if squared else h).sum(-1)                    # (..., N)
    if class_weight is not None:
        losses = losses * _example_weight(class_weight, target, s.dtype)
    return _reduce(losses, reduction).to(scores.dtype), margins, losses


def svm_backward(margins, losses, target, grad, squared=False, form="weston-watkins", reduction="mean",
                 class_weight=None):
    """dL_i/ds_j = h'(m_ij) for j != y_i, and dL_i/ds_{y_i} = -sum_{j != y_i} h'(m_ij),
    with h'(m) = [m > 0] (hinge) or 2 max(0, m) (squared), times w_{y_i} and the incoming gradient;
    one-vs-rest: dL_i/ds_j = -t_ij h'(m_ij).

    The indicator is strict, m > 0, so at a kink (m == 0) the subgradient is 0: PyTorch's
    minimum-norm convention. Crammer-Singer has one active wrong class per example, the
    first argmax of m_ij over j != y_i. An example whose L_i is not finite (a NaN score) gets a
    NaN row. -> dscores (..., N, C) in the margins' dtype.
    """
    idx = _index(target, margins)
    if form == "crammer-singer":
        top, arg = margins.max(-1, keepdim=True)                       # (..., N, 1)
        active = (2.0 * top.clamp_min(0.0)) if squared else (top > 0).to(margins.dtype)
        dscores = torch.zeros_like(margins).scatter_(-1, arg, active)
    else:
        dscores = (2.0 * margins.clamp_min(0.0)) if squared else (margins > 0).to(margins.dtype)
    if form == "one-vs-rest":
        dscores.mul_(torch.ones_like(dscores).scatter_(-1, idx, -1.0))  # t = +1 at the target: -h'
    else:
        dscores.scatter_(-1, idx, -dscores.sum(-1, keepdim=True))      # wrong classes' total, negated
    # written into: only dscores, made here (in place keeps the scores' memory layout, and so the
    # training step's GEMMs and their rounding); never the incoming gradient, which vmap may batch
    weight = _example_weight(class_weight, target, margins.dtype)
    return dscores * _example_grad(grad.to(margins.dtype), reduction, losses, weight)


def svm_margins_jvp(dscores, target, form="weston-watkins"):
    """How the margins move with the scores: dm_ij = ds_j - ds_{y_i} (0 at the target, whose
    margin is a constant 0 or -inf); one-vs-rest dm_ij = -t_ij ds_j."""
    idx = _index(target, dscores)
    if form == "one-vs-rest":
        return dscores.scatter(-1, idx, -dscores.gather(-1, idx))
    return (dscores - dscores.gather(-1, idx)).scatter(-1, idx, 0.0)


def svm_margins_vjp(grad_margins, target, form="weston-watkins"):
    """svm_margins_jvp's transpose: dscores_j = g_j for j != y_i, dscores_{y_i} = -sum_{j != y_i} g_j
    (the target's own g ignored); one-vs-rest dscores_j = -t_ij g_j."""
    idx = _index(target, grad_margins)
    if form == "one-vs-rest":
        return grad_margins.scatter(-1, idx, -grad_margins.gather(-1, idx))
    g = grad_margins.scatter(-1, idx, 0.0)
    return g.scatter(-1, idx, -g.sum(-1, keepdim=True))


class _SVMLoss(Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(scores, target, margin, squared, form, reduction, class_weight):
        return _own_outputs(reduction, *svm_forward(scores, target, margin, squared, form, reduction, class_weight))

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_loss(ctx, inputs, output)
        ctx.squared, ctx.form = inputs[3], inputs[4]

    @staticmethod
    def backward(ctx, grad, grad_margins, grad_losses):
        """dL_i/ds_j = h'(m_ij) for j != y_i, -sum of those at y_i (svm_backward); the margins' own
        gradient by svm_margins_vjp. Differentiable in the margins: the squared hinge's second
        derivative 2 [m > 0] is exact, the hinge's is 0 (its [m > 0] is piecewise constant)."""
        target, margins, losses, class_weight = ctx.saved_tensors
        through_margins = None if grad_margins is None else svm_margins_vjp(grad_margins, target, ctx.form)
        return _loss_backward(ctx, functools.partial(_svm_rows, ctx, margins, losses, target, class_weight), grad,
                              grad_losses, through_margins)

    @staticmethod
    def jvp(ctx, dscores, *_):
        """dL_i = <dL_i/ds_i, ds_i>; dm by svm_margins_jvp."""
        target, margins, losses, class_weight = ctx.saved_tensors
        dscores = dscores.to(margins.dtype)
        return _loss_jvp(ctx, functools.partial(_svm_rows, ctx, margins, losses, target, class_weight), dscores,
                         svm_margins_jvp(dscores, target, ctx.form), losses)


_SVMLossTraced = _without_jvp(_SVMLoss)


def _svm_rows(ctx, margins, losses, target, class_weight, grad, reduction):
    return svm_backward(margins, losses, target, grad, ctx.squared, ctx.form, reduction, class_weight)


def svm_loss(scores, target, margin=1.0, squared=False, reduction="mean", form="weston-watkins",
             *, class_weight=None, validate=True):
    """Multiclass SVM (hinge) loss of the lecture: L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + margin).

    scores (N, C) or (K, N, C), target (N,) integer class indices.
    squared=True gives the squared hinge max(0, .)^2 (the lecture's Q6);
    form="crammer-singer" uses the largest wrong-class margin instead of the sum; form="one-vs-rest"
    is C binary SVMs, sum_j h(margin - t_ij s_j) with t_ij = +1 at y_i and -1 elsewhere.
    Unlike torch.nn.functional.multi_margin_loss, the sum over classes is NOT divided by C:
    svm_loss(s, y) == C * F.multi_margin_loss(s, y).
    class_weight (C,) weighs example i by w_{y_i}; the mean stays (1/N) sum_i w_{y_i} L_i, as
    F.multi_margin_loss(weight=w)'s.
    Returns the mean (or sum) over N: a scalar, or (K,); reduction="none" gives (N,) or (K, N).
    validate=False skips the target range and class_weight value checks (host syncs), for labels
    and weights checked once at load; torch.compile skips them too (they would break its graph).
    """
    validate = _validating(validate)
    _check_scores_target(scores, target, reduction, validate)
    _check_svm(form, margin)
    _check_class_weight(class_weight, scores, validate)
    return _apply(_SVMLoss, _SVMLossTraced, _autocast_float32(scores), target, float(margin), bool(squared), form, reduction,
                          class_weight)[0]


def _check_svm(form, margin):
    if form not in SVM_FORMS:
        raise ValueError(f"unknown SVM form {form!r}; expected one of {', '.join(SVM_FORMS)}")
    if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")


# --------------------------------------------------------------------------- softmax loss

def softmax_forward(scores, target, reduction="mean", class_weight=None):
    """L_i = -log(e^{s_{y_i}} / sum_j e^{s_j}) = log sum_j e^{s_j - m} + m - s_{y_i}, m = max_j s_j:
    the max is subtracted before exp, so logits of +-1e4 stay finite; times w_{y_i} with class
    weights (C,).

    scores (..., N, C) -> (reduced loss, P = softmax(s) (..., N, C), losses L_i (..., N)), P and
    the L_i for the backward pass.
    """
    s = scores.to(_compute_dtype(scores))
    shifted = s - s.amax(-1, keepdim=True)                             # (..., N, C), max 0, a new tensor
    shifted_y = shifted.gather(-1, _index(target, s))                  # (..., N, 1), before exp_ overwrites
    P = shifted.exp_()                                                 # unnormalized
    z = P.sum(-1, keepdim=True)                                        # in [1, C]: log z is exact
    losses = z.log().sub_(shifted_y).squeeze(-1)                       # (..., N)
    if class_weight is not None:
        losses = losses * _example_weight(class_weight, target, s.dtype)
    return _reduce(losses, reduction).to(scores.dtype), P.div_(z), losses


def softmax_backward(P, losses, target, grad, reduction="mean", class_weight=None):
    """dL_i/ds_j = softmax(s_i)_j - [j == y_i], i.e. dscores = P - onehot(y), times w_{y_i} and the
    incoming gradient; a NaN row where L_i is not finite (a -inf target score). -> dscores (..., N, C)
    in P's dtype."""
    idx = _index(target, P)
    dscores = P.scatter_add(-1, idx, torch.full_like(idx, -1, dtype=P.dtype))
    weight = _example_weight(class_weight, target, P.dtype)
    return dscores * _example_grad(grad.to(P.dtype), reduction, losses, weight)   # never in place: see svm_backward


def softmax_jvp(P, dscores):
    """How P = softmax(s) moves with the scores: dP = P (ds - <P, ds>), per row; its own transpose
    (the softmax Jacobian diag(P) - P P^T is symmetric), so it is also P's vjp."""
    return P * (dscores - (P * dscores).sum(-1, keepdim=True))


class _SoftmaxLoss(Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(scores, target, reduction, class_weight):
        return _own_outputs(reduction, *softmax_forward(scores, target, reduction, class_weight))

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_loss(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad, grad_P, grad_losses):
        """dL_i/ds = softmax(s_i) - onehot(y_i) (softmax_backward); P's own gradient by softmax_jvp
        (symmetric). Differentiable in P, so the Hessian diag(P) - P P^T comes out exact."""
        target, P, losses, class_weight = ctx.saved_tensors
        rows = functools.partial(softmax_backward, P, losses, target, class_weight=class_weight)
        return _loss_backward(ctx, rows, grad, grad_losses, None if grad_P is None else softmax_jvp(P, grad_P))

    @staticmethod
    def jvp(ctx, dscores, *_):
        """dL_i = <P_i - onehot(y_i), ds_i>; dP = P (ds - <P, ds>)."""
        target, P, losses, class_weight = ctx.saved_tensors
        rows = functools.partial(softmax_backward, P, losses, target, class_weight=class_weight)
        dscores = dscores.to(P.dtype)
        return _loss_jvp(ctx, rows, dscores, softmax_jvp(P, dscores), losses)


_SoftmaxLossTraced = _without_jvp(_SoftmaxLoss)


def softmax_loss(scores, target, reduction="mean", *, class_weight=None, validate=True):
    """Softmax (cross-entropy) loss: L_i = -log(e^{s_{y_i}} / sum_j e^{s_j}), natural log.

    scores (N, C) or (K, N, C), target (N,) integer class indices. Equals
    torch.nn.functional.cross_entropy(scores, target) for 2-D scores.
    class_weight (C,) weighs example i by w_{y_i}, and the mean is (1/N) sum_i w_{y_i} L_i:
    cross_entropy(scores, target, weight=w, reduction="sum") / N, NOT cross_entropy(weight=w)'s
    mean, which divides by sum_i w_{y_i} (the two agree for balanced_class_weight).
    Returns the mean (or sum) over N: a scalar, or (K,); reduction="none" gives (N,) or (K, N).
    """
    validate = _validating(validate)
    _check_scores_target(scores, target, reduction, validate)
    _check_class_weight(class_weight, scores, validate)
    return _apply(_SoftmaxLoss, _SoftmaxLossTraced, _autocast_float32(scores), target, reduction, class_weight)[0]


# --------------------------------------------------------------------------- squared loss (one-vs-rest least squares)

def squared_forward(scores, target, reduction="mean", class_weight=None):
    """L_i = sum_j (s_ij - t_ij)^2 with t_ij = +1 for j = y_i and -1 otherwise: C least-squares
    regressions on +-1 targets (scikit-learn's RidgeClassifier), times w_{y_i} with class weights (C,).

    scores (..., N, C) -> (reduced loss, residuals r = s - t (..., N, C), losses L_i (..., N)); the
    residuals and the L_i are what the backward pass needs.
    """
    s = scores.to(_compute_dtype(scores))
    idx = _index(target, s)
    resid = (s + 1.0).scatter_(-1, idx, s.gather(-1, idx) - 1.0)        # s - t, a new tensor
    losses = resid.square().sum(-1)                                     # (..., N)
    if class_weight is not None:
        losses = losses * _example_weight(class_weight, target, s.dtype)
    return _reduce(losses, reduction).to(scores.dtype), resid, losses


def squared_backward(resid, losses, target, grad, reduction="mean", class_weight=None):
    """dL_i/ds_ij = 2 (s_ij - t_ij) = 2 r_ij, times w_{y_i} and the incoming gradient; a NaN row
    where L_i is not finite. -> dscores (..., N, C) in the residuals' dtype."""
    weight = _example_weight(class_weight, target, resid.dtype)
    return (2.0 * resid) * _example_grad(grad.to(resid.dtype), reduction, losses, weight)   # never in place


class _SquaredLoss(Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(scores, target, reduction, class_weight):
        return _own_outputs(reduction, *squared_forward(scores, target, reduction, class_weight))

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_loss(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad, grad_resid, grad_losses):
        """dL_i/ds_ij = 2 (s_ij - t_ij) (squared_backward); the residuals' own gradient passes
        through (dr = ds). Differentiable in r: the Hessian 2 w_{y_i} I comes out exact."""
        target, resid, losses, class_weight = ctx.saved_tensors
        rows = functools.partial(squared_backward, resid, losses, target, class_weight=class_weight)
        return _loss_backward(ctx, rows, grad, grad_losses, grad_resid)

    @staticmethod
    def jvp(ctx, dscores, *_):
        """dL_i = <2 r_i, ds_i> w_{y_i}; dr = ds."""
        target, resid, losses, class_weight = ctx.saved_tensors
        rows = functools.partial(squared_backward, resid, losses, target, class_weight=class_weight)
        dscores = dscores.to(resid.dtype)
        return _loss_jvp(ctx, rows, dscores, dscores, losses)


_SquaredLossTraced = _without_jvp(_SquaredLoss)


def squared_loss(scores, target, reduction="mean", *, class_weight=None, validate=True):
    """One-vs-rest least squares: L_i = sum_j (s_ij - t_ij)^2, t_ij = +1 for j = y_i, -1 otherwise.

    scores (N, C) or (K, N, C), target (N,) integer class indices. The mean over N plus
    reg * sum W^2 is scikit-learn's RidgeClassifier objective divided by N, at alpha = N * reg.
    class_weight (C,) weighs example i by w_{y_i}; the mean stays (1/N) sum_i w_{y_i} L_i.
    Returns the mean (or sum) over N: a scalar, or (K,); reduction="none" gives (N,) or (K, N).
    """
    validate = _validating(validate)
    _check_scores_target(scores, target, reduction, validate)
    _check_class_weight(class_weight, scores, validate)
    return _apply(_SquaredLoss, _SquaredLossTraced, _autocast_float32(scores), target, reduction, class_weight)[0]


# --------------------------------------------------------------------------- logistic loss (one-vs-rest)

def logistic_forward(scores, target, reduction="mean", class_weight=None):
    """L_i = sum_j log(1 + e^{-m_ij}), m_ij = t_ij s_ij with t_ij = +1 for j = y_i and -1 otherwise:
    C binary logistic regressions (scikit-learn's one-vs-rest LogisticRegression), times w_{y_i}
    with class weights (C,). Each term is softplus(-m) = max(-m, 0) + log(1 + e^{-|m|}): no exp
    of a large number, so scores of +-1e4 stay finite and exact.

    scores (..., N, C) -> (reduced loss, margins m (..., N, C), losses L_i (..., N)); the margins
    and the L_i are what the backward pass needs.
    """
    s = scores.to(_compute_dtype(scores))
    idx = _index(target, s)
    margins = s.neg().scatter_(-1, idx, s.gather(-1, idx))             # t * s, a new tensor
    losses = margins.neg().clamp_min_(0).add_(margins.abs().neg_().exp_().log1p_()).sum(-1)   # (..., N)
    if class_weight is not None:
        losses = losses * _example_weight(class_weight, target, s.dtype)
    return _reduce(losses, reduction).to(scores.dtype), margins, losses


def logistic_backward(margins, losses, target, grad, reduction="mean", class_weight=None):
    """dL_i/ds_ij = -t_ij sigma(-m_ij), sigma the logistic function (1 / (1 + e^{-z}), computed
    without overflow), times w_{y_i} and the incoming gradient; a NaN row where L_i is not finite.
    -> dscores (..., N, C) in the margins' dtype."""
    p = torch.sigmoid(margins.neg())                                   # sigma(-m) in (0, 1)
    idx = _index(target, p)
    # -t sigma(-m): the sign written into p's copy (sigmoid's backward keeps p), never into p or grad
    dscores = p.clone().scatter_(-1, idx, p.gather(-1, idx).neg_())
    weight = _example_weight(class_weight, target, margins.dtype)
    return dscores * _example_grad(grad.to(margins.dtype), reduction, losses, weight)


def logistic_margins_jvp(dscores, target):
    """How the margins m = t s move with the scores: dm = t ds (t = +1 at y_i, -1 elsewhere);
    diagonal, so also the margins' vjp."""
    idx = _index(target, dscores)
    return dscores.neg().scatter(-1, idx, dscores.gather(-1, idx))


class _LogisticLoss(Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(scores, target, reduction, class_weight):
        return _own_outputs(reduction, *logistic_forward(scores, target, reduction, class_weight))

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_loss(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad, grad_margins, grad_losses):
        """dL_i/ds_ij = -t_ij sigma(-t_ij s_ij) (logistic_backward); the margins' own gradient by
        logistic_margins_jvp (diagonal). Differentiable in m: the Hessian sigma(m) sigma(-m) is exact."""
        target, margins, losses, class_weight = ctx.saved_tensors
        rows = functools.partial(logistic_backward, margins, losses, target, class_weight=class_weight)
        return _loss_backward(ctx, rows, grad, grad_losses,
                              None if grad_margins is None else logistic_margins_jvp(grad_margins, target))

    @staticmethod
    def jvp(ctx, dscores, *_):
        """dL_i = <-t_i sigma(-m_i), ds_i> w_{y_i}; dm = t ds."""
        target, margins, losses, class_weight = ctx.saved_tensors
        rows = functools.partial(logistic_backward, margins, losses, target, class_weight=class_weight)
        dscores = dscores.to(margins.dtype)
        return _loss_jvp(ctx, rows, dscores, logistic_margins_jvp(dscores, target), losses)


_LogisticLossTraced = _without_jvp(_LogisticLoss)


def logistic_loss(scores, target, reduction="mean", *, class_weight=None, validate=True):
    """One-vs-rest logistic regression: L_i = sum_j log(1 + exp(-t_ij s_ij)), t_ij = +1 for
    j = y_i, -1 otherwise.

    scores (N, C) or (K, N, C), target (N,) integer class indices. The mean over N plus
    reg * sum W^2 is scikit-learn's OneVsRestClassifier(LogisticRegression(C=C_sk)) objective
    (sum over the C binary problems of 1/2 ||w_c||^2 + C_sk sum_i log(1 + exp(-t_ic s_ic)), the
    intercepts unpenalized) divided by C_sk N, at reg = 1 / (2 C_sk N).
    class_weight (C,) weighs example i by w_{y_i}; the mean stays (1/N) sum_i w_{y_i} L_i.
    Returns the mean (or sum) over N: a scalar, or (K,); reduction="none" gives (N,) or (K, N).
    """
    validate = _validating(validate)
    _check_scores_target(scores, target, reduction, validate)
    _check_class_weight(class_weight, scores, validate)
    return _apply(_LogisticLoss, _LogisticLossTraced, _autocast_float32(scores), target, reduction, class_weight)[0]


# --------------------------------------------------------------------------- penalties R(W)

def penalty_forward(weight, kind="l2", beta=1.0):
    """R(W) summed over each model's (C, D) matrix: -> scalar, or (K,) for (K, C, D).
    l2: sum W^2;  l1: sum |W|;  elasticnet: sum beta W^2 + |W| (the lecture's form)."""
    W = weight.to(_compute_dtype(weight))
    dims = (-2, -1)
    if kind == "l2":
        R = W.square().sum(dims)
    elif kind == "l1":
        R = W.abs().sum(dims)
    else:
        R = beta * W.square().sum(dims) + W.abs().sum(dims)
    return R.to(weight.dtype)


def penalty_backward(weight, grad, kind="l2", beta=1.0):
    """l2: dR/dW = 2W;  l1: sign(W) (0 at W == 0, the minimum-norm subgradient);
    elasticnet: 2 beta W + sign(W); times the incoming gradient (scalar or (K,))."""
    W = weight.to(_compute_dtype(weight))
    if kind == "l2":
        dW = 2.0 * W
    elif kind == "l1":
        dW = torch.sign(W)
    else:
        dW = (2.0 * beta) * W + torch.sign(W)
    grad = grad.to(W.dtype) if isinstance(grad, torch.Tensor) else torch.as_tensor(grad, dtype=W.dtype, device=W.device)
    return dW * grad[..., None, None]                                  # never in place: see svm_backward


class _Penalty(Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(weight, kind, beta):
        return penalty_forward(weight, kind, beta)

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, kind, beta = inputs
        ctx.save_for_backward(weight)
        ctx.save_for_forward(weight)
        ctx.kind, ctx.beta = kind, beta

    @staticmethod
    def jvp(ctx, dweight, _dkind, _dbeta):
        """dR = <dR/dW, dW> per model (penalty_backward with an incoming gradient of 1)."""
        (weight,) = ctx.saved_tensors
        ones = torch.ones(weight.shape[:-2], dtype=_compute_dtype(weight), device=weight.device)
        return (penalty_backward(weight, ones, ctx.kind, ctx.beta) * dweight).sum((-2, -1)).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad):
        """2W, sign(W) or 2 beta W + sign(W) (penalty_backward). Tensor expressions of the saved W,
        so autograd differentiates them again: the Hessian is 2I, 0 or 2 beta I (gradgradcheck-tested)."""
        (weight,) = ctx.saved_tensors
        return penalty_backward(weight, grad, ctx.kind, ctx.beta).to(weight.dtype), None, None


_PenaltyTraced = _without_jvp(_Penalty)


def penalty(weight, kind="l2", beta=1.0):
    """Regularization penalty R(W) of the lecture, for the weights only (never the bias).

    weight (C, D) or (K, C, D) -> scalar or (K,). kind: "l2" sum W^2, "l1" sum |W|,
    "elasticnet" sum beta W^2 + |W|.
    """
    _check_penalty(kind, beta)
    if weight.dim() not in (2, 3) or not weight.is_floating_point():
        raise ValueError(f"weight must be a floating (C, D) or (K, C, D) tensor, got {tuple(weight.shape)}")
    return _apply(_Penalty, _PenaltyTraced, weight, kind, float(beta))


def _check_penalty(kind, beta):
    if kind not in PENALTIES:
        raise ValueError(f"unknown penalty {kind!r}; expected one of {', '.join(PENALTIES)}")
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")


def l2_penalty(weight):
    """R(W) = sum W^2 over the weights (not the bias). weight (C, D) or (K, C, D)."""
    return penalty(weight, "l2")


def l1_penalty(weight):
    """R(W) = sum |W| over the weights (not the bias). weight (C, D) or (K, C, D)."""
    return penalty(weight, "l1")


def elastic_net_penalty(weight, beta=1.0):
    """R(W) = sum beta W^2 + |W| over the weights (not the bias). weight (C, D) or (K, C, D)."""
    return penalty(weight, "elasticnet", beta)

