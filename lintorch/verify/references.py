"""Independent references for lintorch's math: torch's own losses and plain tensor expressions,
differentiated by autograd. lintorch.gradcheck, the tests and the L-BFGS checks compare
lintorch's hand-written forward and backward passes against these, so nothing here may call
lintorch.functional.

Shapes: N examples, D features, C classes, K stacked models.

    s       (N, C)                scores of one model (per_model lifts a reference to (K, N, C))
    y       (N,)                  integer class indices
    x       (N, D), W (C, D) or (K, C, D), b (C,) or (K, C)
    w       (C,)                  class weights, or None

Class weights follow lintorch's convention: the weighted mean is (1/N) sum_i w_{y_i} L_i.
F.cross_entropy(weight=w) with reduction="mean" divides by sum_i w_{y_i} instead, so the
softmax reference uses its "sum" divided by N; F.multi_margin_loss(weight=w)'s mean divides by N.
"""
import torch
import torch.nn.functional as F

__all__ = ["softmax_reference", "svm_reference", "svm_expression", "squared_reference", "logistic_reference", "REFERENCES",
           "PENALTY_REFS", "per_model", "reference_total", "softmax_objective"]


def _reduce(losses, reduction):
    return {"mean": losses.mean, "sum": losses.sum, "none": lambda: losses}[reduction]()


def softmax_reference(s, y, reduction="mean", class_weight=None):
    """F.cross_entropy, with class weights as (1/N) sum_i w_{y_i} L_i for the mean (torch's own
    weighted mean divides by sum_i w_{y_i}: used here only through reduction "sum" and "none")."""
    class_weight = None if class_weight is None else class_weight.to(s.dtype)
    if class_weight is None or reduction != "mean":
        return F.cross_entropy(s, y, weight=class_weight, reduction=reduction)
    return F.cross_entropy(s, y, weight=class_weight, reduction="sum") / s.shape[0]


def svm_reference(s, y, margin=1.0, squared=False, form="weston-watkins", reduction="mean", class_weight=None):
    """The SVM loss by torch autograd: Weston-Watkins as C * F.multi_margin_loss (torch divides
    by C; its weighted mean divides by N, as lintorch's), Crammer-Singer and one-vs-rest as plain
    tensor ops (svm_expression)."""
    if form != "weston-watkins":
        return svm_expression(s, y, margin, squared, form, reduction, class_weight)
    class_weight = None if class_weight is None else class_weight.to(s.dtype)
    return s.shape[1] * F.multi_margin_loss(s, y, p=2 if squared else 1, margin=margin,
                                            weight=class_weight, reduction=reduction)


def svm_expression(s, y, margin=1.0, squared=False, form="weston-watkins", reduction="mean", class_weight=None):
    """Every SVM form as plain tensor ops, which torch differentiates to any order and in forward
    mode (F.multi_margin_loss has neither a double backward nor forward AD)."""
    class_weight = None if class_weight is None else class_weight.to(s.dtype)
    onehot = F.one_hot(y, s.shape[1]).bool()
    if form == "one-vs-rest":                    # C binary SVMs with labels t = 2 one_hot - 1
        t = 2 * onehot.to(s.dtype) - 1
        h = (margin - t * s).clamp_min(0)
        losses = (h ** 2 if squared else h).sum(1)
    elif form == "weston-watkins":
        h = (s - s.gather(1, y[:, None]) + margin).clamp_min(0).masked_fill(onehot, 0)
        losses = (h ** 2 if squared else h).sum(1)
    else:
        m = s - s.gather(1, y[:, None]) + margin
        losses = m.masked_fill(onehot, -float("inf")).max(1).values.clamp_min(0)
        losses = losses ** 2 if squared else losses
    if class_weight is not None:
        losses = losses * class_weight[y]
    return _reduce(losses, reduction)


def squared_reference(s, y, reduction="mean", class_weight=None):
    """One-vs-rest least squares by torch: C * F.mse_loss against t = 2 one_hot(y) - 1 per example
    (mse averages over the C classes; the loss sums them)."""
    t = 2 * F.one_hot(y, s.shape[1]).to(s.dtype) - 1
    losses = s.shape[1] * F.mse_loss(s, t, reduction="none").mean(1)
    if class_weight is not None:
        losses = losses * class_weight.to(s.dtype)[y]
    return _reduce(losses, reduction)


def logistic_reference(s, y, reduction="mean", class_weight=None):
    """One-vs-rest logistic regression by torch: C * F.binary_cross_entropy_with_logits against the
    0/1 targets one_hot(y) per example (it averages over the C classes; the loss sums them)."""
    onehot = F.one_hot(y, s.shape[1]).to(s.dtype)
    losses = s.shape[1] * F.binary_cross_entropy_with_logits(s, onehot, reduction="none").mean(1)
    if class_weight is not None:
        losses = losses * class_weight.to(s.dtype)[y]
    return _reduce(losses, reduction)


# Each registered loss's reference (objective.LOSSES' names): (s, y, margin, squared, form,
# class_weight) -> mean data loss, the settings a loss has not ignored.
REFERENCES = {
    "softmax": lambda s, y, class_weight=None, **_: softmax_reference(s, y, class_weight=class_weight),
    "svm": lambda s, y, margin=1.0, squared=False, form="weston-watkins", class_weight=None, **_:
        svm_reference(s, y, margin, squared, form, class_weight=class_weight),
    "squared": lambda s, y, class_weight=None, **_: squared_reference(s, y, class_weight=class_weight),
    "logistic": lambda s, y, class_weight=None, **_: logistic_reference(s, y, class_weight=class_weight),
}

PENALTY_REFS = {"l2": lambda W, beta: (W ** 2).sum((-2, -1)), "l1": lambda W, beta: W.abs().sum((-2, -1)),
                "elasticnet": lambda W, beta: beta * (W ** 2).sum((-2, -1)) + W.abs().sum((-2, -1))}


def per_model(ref):
    """A 2-D reference ref(s, y, ...) applied to each of K stacked models: (K, N, C) -> stacked results."""
    return lambda s, y, *a, **kw: (torch.stack([ref(sk, y, *a, **kw) for sk in s]) if s.dim() == 3
                                   else ref(s, y, *a, **kw))


def reference_total(x, W, b, y, loss="softmax", squared=False, form="weston-watkins", kind="l2", reg=0.0,
                    beta=1.0, margin=1.0, class_weight=None):
    """Sum over models of (mean data loss + reg R(W)), plain torch expressions differentiated by
    autograd (the gradient of the sum is each model's own). reg a number or a (K,) tensor."""
    s = x @ W.transpose(-1, -2) + b.unsqueeze(-2)                        # (N, C) or (K, N, C)
    data = per_model(REFERENCES[loss])(s, y, margin=margin, squared=squared, form=form, class_weight=class_weight)
    return (data + reg * PENALTY_REFS[kind](W, beta)).sum()


def softmax_objective(W, b, x, y, reg=0.0, class_weight=None):
    """L(W, b) = (1/N) sum_i w_{y_i} L_i + reg sum W^2 for one model: the smooth, strongly convex
    (reg > 0) objective that Newton's method and scikit-learn's LogisticRegression minimize too
    (at reg = 1 / (2 C_sklearn N)). W (C, D), b (C,) -> scalar."""
    return reference_total(x, W, b, y, "softmax", reg=reg, class_weight=class_weight)

