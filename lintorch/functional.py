"""The math of lintorch: the score function, the two losses and the weight penalties.

Shapes: N examples, D features, C classes, and optionally K stacked models (a
hyperparameter sweep trains K weight matrices at once).

    x       (N, D)                      features, shared by all K models
    weight  (C, D)     or (K, C, D)     nn.Linear's layout everywhere
    bias    (C,)       or (K, C)
    scores  (N, C)     or (K, N, C)
    target  (N,)                        integer class indices in [0, C)

Every operation is a ``torch.autograd.Function`` whose backward pass is written
by hand from calculus, next to its forward pass; users call the plain functions
(``linear``, ``svm_loss``, ``softmax_loss``, ``penalty``), never ``.apply``.
Nothing here calls autograd or torch's own loss functions: ``lintorch.gradcheck``
checks these gradients against exactly those independent references.

Float16/bfloat16 inputs are computed in float32 and the results cast back, and
under ``torch.autocast`` the losses take float32 scores, as torch's own losses do.
"""
import math

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable

REDUCTIONS = ("mean", "sum", "none")
SVM_FORMS = ("weston-watkins", "crammer-singer")
PENALTIES = ("l2", "l1", "elasticnet")

__all__ = ["linear", "svm_loss", "softmax_loss", "penalty", "l2_penalty", "l1_penalty",
           "elastic_net_penalty", "REDUCTIONS", "SVM_FORMS", "PENALTIES"]


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


def _expand_grad(grad, reduction, N):
    """The incoming gradient of the reduced loss as (..., N, 1) per example; never written into."""
    if reduction == "none":
        return grad.unsqueeze(-1)
    scale = 1.0 / N if reduction == "mean" else 1.0
    return (grad * scale).unsqueeze(-1).unsqueeze(-1)


# --------------------------------------------------------------------------- linear

class _Linear(Function):
    @staticmethod
    def forward(x, weight, bias):
        """scores = x W^T + b: (N, D), (C, D) -> (N, C); with K models (K, C, D) -> (K, N, C).

        The K models share x, so they are one GEMM against the (K*C, D) stack.
        """
        W = weight.reshape(-1, weight.shape[-1])                      # (K*C, D)
        scores = x @ W.t() if bias is None else torch.addmm(bias.reshape(-1), x, W.t())
        if weight.dim() == 3:
            scores = scores.view(x.shape[0], weight.shape[0], -1).transpose(0, 1)  # (K, N, C) view
        return scores

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    @once_differentiable
    def backward(ctx, dscores):
        """dx = dS W,  dW = dS^T x,  db = sum_n dS  (dS = dL/dscores).

        dW is computed as dS^T x, not (x^T dS)^T: the result is then contiguous in
        nn.Linear's (C, D) layout with no transpose copy.
        """
        x, weight = ctx.saved_tensors
        D = weight.shape[-1]
        W = weight.reshape(-1, D)                                      # (K*C, D)
        if weight.dim() == 3:
            dscores = dscores.transpose(0, 1)                          # (N, K, C)
        # under autocast the scores (and so dS) may be half precision while x and W are not
        dS = dscores.reshape(x.shape[0], -1).to(weight.dtype)          # (N, K*C)
        dx = dW = db = None
        if ctx.needs_input_grad[0]:
            dx = dS @ W
        if ctx.needs_input_grad[1]:
            dW = (dS.t() @ x).view(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dS.sum(0).view(weight.shape[:-1])
        return dx, dW, db


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
    return _Linear.apply(x, weight, bias)


# --------------------------------------------------------------------------- SVM (hinge) loss

class _SVMLoss(Function):
    @staticmethod
    def forward(scores, target, margin, squared, form, reduction):
        """Weston-Watkins: L_i = sum_{j != y_i} h(s_j - s_{y_i} + margin);
        Crammer-Singer:   L_i = h(max_{j != y_i} s_j - s_{y_i} + margin);
        h(m) = max(0, m), or max(0, m)^2 when squared."""
        s = scores.to(_compute_dtype(scores))
        idx = _index(target, s)
        margins = s - s.gather(-1, idx) + margin                       # (..., N, C)
        if form == "crammer-singer":
            margins = margins.scatter(-1, idx, -math.inf).amax(-1, keepdim=True)  # (..., N, 1)
        else:
            margins = margins.scatter(-1, idx, 0.0)
        margins = margins.clamp_min(0.0)
        losses = (margins.square() if squared else margins).sum(-1)   # (..., N)
        return _reduce(losses, reduction).to(scores.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        scores, target, margin, squared, form, reduction = inputs
        ctx.save_for_backward(scores, target)
        ctx.margin, ctx.squared, ctx.form, ctx.reduction = margin, squared, form, reduction

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        """dL_i/ds_j = h'(m_ij) for j != y_i, and dL_i/ds_{y_i} = -sum_{j != y_i} h'(m_ij),
        where m_ij = s_j - s_{y_i} + margin and h'(m) = [m > 0] (hinge) or 2 max(0, m) (squared).

        The indicator is strict, m > 0, so at a kink (m == 0) the subgradient is 0:
        PyTorch's minimum-norm convention. Crammer-Singer has one active wrong class per
        example, the first argmax of s_j over j != y_i.
        """
        scores, target = ctx.saved_tensors
        s = scores.to(_compute_dtype(scores))
        idx = _index(target, s)
        margins = s - s.gather(-1, idx) + ctx.margin
        margins = margins.scatter(-1, idx, -math.inf if ctx.form == "crammer-singer" else 0.0)
        if ctx.form == "crammer-singer":
            top, arg = margins.max(-1, keepdim=True)                   # (..., N, 1)
            active = (2.0 * top.clamp_min(0.0)) if ctx.squared else (top > 0).to(s.dtype)
            dscores = torch.zeros_like(s).scatter_(-1, arg, active)
        else:
            dscores = (2.0 * margins.clamp_min(0.0)) if ctx.squared else (margins > 0).to(s.dtype)
        dscores.scatter_(-1, idx, -dscores.sum(-1, keepdim=True))      # wrong classes' total, negated
        dscores = dscores * _expand_grad(grad.to(s.dtype), ctx.reduction, s.shape[-2])
        return dscores.to(scores.dtype), None, None, None, None, None


def svm_loss(scores, target, margin=1.0, squared=False, reduction="mean", form="weston-watkins",
             *, validate=True):
    """Multiclass SVM (hinge) loss of the lecture: L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + margin).

    scores (N, C) or (K, N, C), target (N,) integer class indices.
    squared=True gives the squared hinge max(0, .)^2 (the lecture's Q6);
    form="crammer-singer" uses the largest wrong-class margin instead of the sum.
    Unlike torch.nn.functional.multi_margin_loss, the sum over classes is NOT divided by C:
    svm_loss(s, y) == C * F.multi_margin_loss(s, y).
    Returns the mean (or sum) over N: a scalar, or (K,); reduction="none" gives (N,) or (K, N).
    validate=False skips the target range check (a host sync), for labels checked once at load.
    """
    _check_scores_target(scores, target, reduction, validate)
    if form not in SVM_FORMS:
        raise ValueError(f"unknown SVM form {form!r}; expected one of {', '.join(SVM_FORMS)}")
    if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    return _SVMLoss.apply(_autocast_float32(scores), target, float(margin), bool(squared), form, reduction)


# --------------------------------------------------------------------------- softmax loss

class _SoftmaxLoss(Function):
    @staticmethod
    def forward(scores, target, reduction):
        """L_i = -log(e^{s_{y_i}} / sum_j e^{s_j}) = logsumexp(s) - s_{y_i},
        with the max subtracted before exp so logits of +-1e4 stay finite."""
        s = scores.to(_compute_dtype(scores))
        # lse is of the max-shifted scores z, in [0, log C]: logsumexp(s) itself rounds to ulp(max s),
        # which would cost P = exp(s - lse) a relative error of eps * |max s| (1e-5 at logits ~100)
        z = s - s.amax(-1, keepdim=True)                               # (..., N, C)
        lse = torch.logsumexp(z, -1)                                   # (..., N)
        losses = lse - z.gather(-1, _index(target, s)).squeeze(-1)
        return _reduce(losses, reduction).to(scores.dtype), lse

    @staticmethod
    def setup_context(ctx, inputs, output):
        scores, target, reduction = inputs
        ctx.save_for_backward(scores, target, output[1])
        ctx.reduction = reduction
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_lse):
        """dL_i/ds_j = softmax(s_i)_j - [j == y_i], i.e. dscores = P - onehot(y)."""
        scores, target, lse = ctx.saved_tensors
        s = scores.to(_compute_dtype(scores))
        dscores = torch.exp(s - s.amax(-1, keepdim=True) - lse.unsqueeze(-1))   # P, (..., N, C)
        idx = _index(target, s)
        dscores.scatter_add_(-1, idx, torch.full_like(idx, -1, dtype=s.dtype))
        dscores = dscores * _expand_grad(grad.to(s.dtype), ctx.reduction, s.shape[-2])
        return dscores.to(scores.dtype), None, None


def softmax_loss(scores, target, reduction="mean", *, validate=True):
    """Softmax (cross-entropy) loss: L_i = -log(e^{s_{y_i}} / sum_j e^{s_j}), natural log.

    scores (N, C) or (K, N, C), target (N,) integer class indices. Equals
    torch.nn.functional.cross_entropy(scores, target) for 2-D scores.
    Returns the mean (or sum) over N: a scalar, or (K,); reduction="none" gives (N,) or (K, N).
    """
    _check_scores_target(scores, target, reduction, validate)
    return _SoftmaxLoss.apply(_autocast_float32(scores), target, reduction)[0]


# --------------------------------------------------------------------------- penalties R(W)

class _Penalty(Function):
    @staticmethod
    def forward(weight, kind, beta):
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

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, kind, beta = inputs
        ctx.save_for_backward(weight)
        ctx.kind, ctx.beta = kind, beta

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        """l2: dR/dW = 2W;  l1: sign(W) (0 at W == 0, the minimum-norm subgradient);
        elasticnet: 2 beta W + sign(W)."""
        (weight,) = ctx.saved_tensors
        W = weight.to(_compute_dtype(weight))
        if ctx.kind == "l2":
            dW = 2.0 * W
        elif ctx.kind == "l1":
            dW = torch.sign(W)
        else:
            dW = (2.0 * ctx.beta) * W + torch.sign(W)
        return (dW * grad.to(W.dtype)[..., None, None]).to(weight.dtype), None, None


def penalty(weight, kind="l2", beta=1.0):
    """Regularization penalty R(W) of the lecture, for the weights only (never the bias).

    weight (C, D) or (K, C, D) -> scalar or (K,). kind: "l2" sum W^2, "l1" sum |W|,
    "elasticnet" sum beta W^2 + |W|.
    """
    if kind not in PENALTIES:
        raise ValueError(f"unknown penalty {kind!r}; expected one of {', '.join(PENALTIES)}")
    if weight.dim() not in (2, 3) or not weight.is_floating_point():
        raise ValueError(f"weight must be a floating (C, D) or (K, C, D) tensor, got {tuple(weight.shape)}")
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    return _Penalty.apply(weight, kind, float(beta))


def l2_penalty(weight):
    """R(W) = sum W^2 over the weights (not the bias). weight (C, D) or (K, C, D)."""
    return penalty(weight, "l2")


def l1_penalty(weight):
    """R(W) = sum |W| over the weights (not the bias). weight (C, D) or (K, C, D)."""
    return penalty(weight, "l1")


def elastic_net_penalty(weight, beta=1.0):
    """R(W) = sum beta W^2 + |W| over the weights (not the bias). weight (C, D) or (K, C, D)."""
    return penalty(weight, "elasticnet", beta)
