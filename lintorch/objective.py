"""The objective as one object, passed whole (scikit-learn's LinearModelLoss shape): which data
loss, its settings, the penalty and its strength, read from a run's config in one place, and the
one dispatch on the loss name. SGD, L-BFGS, evaluation, random search and the benchmark all ask it.

Shapes: N examples, D features, C classes, K stacked models (weight (K, C, D), per-model values (K,)).

    L = (1/N) sum_i w_{y_i} L_i + reg * R(W)

loss_and_grad chains functional's hand-written backward passes by hand, with no autograd graph, so
a training step costs little more than its two GEMMs; it equals backpropagating through the
linear, loss and penalty Functions (tested), which lintorch.gradcheck proves against independent
references.
"""
import dataclasses
import math
from dataclasses import dataclass

import torch

from . import functional as LF
from .names import LOSSES, LOSS_DEFAULTS, nonsmooth_parts


@dataclass
class Objective:
    """reg is a number, or a (K,) tensor of per-model strengths; class_weight (C,) or None (every
    w_c = 1). margin, squared and form shape the SVM only."""
    loss: str = "softmax"
    reg: object = 0.0
    penalty: str = LOSS_DEFAULTS["penalty"]
    beta: float = LOSS_DEFAULTS["beta"]
    margin: float = LOSS_DEFAULTS["margin"]
    squared: bool = LOSS_DEFAULTS["squared_hinge"]
    form: str = LOSS_DEFAULTS["svm_form"]
    class_weight: object = None

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")

    @classmethod
    def from_config(cls, cfg, *, reg=None, train_labels=None, num_classes=None, device=None):
        """The only reader of a config's loss settings (missing ones take names.LOSS_DEFAULTS,
        which are also the flags' defaults). reg: overrides cfg["reg"] (a sweep's (K,) tensor).
        class_weight "balanced" is scikit-learn's N / (C n_c), from train_labels (N,); without
        them the objective is unweighted (validation and evaluation report the unweighted loss).
        The class weights go to `device`."""
        def get(key):
            return cfg.get(key, LOSS_DEFAULTS[key])
        class_weight = None
        if get("class_weight") == "balanced" and train_labels is not None:
            class_weight = LF.balanced_class_weight(train_labels, num_classes).to(device)
        return cls(cfg["loss"], cfg["reg"] if reg is None else reg, get("penalty"), get("beta"), get("margin"),
                   get("squared_hinge"), get("svm_form"), class_weight)

    def unregularized(self, class_weight=None):
        """The data term alone (reg 0), class weights optionally moved (L-BFGS's float64 pass)."""
        return dataclasses.replace(self, reg=0.0, class_weight=self.class_weight if class_weight is None
                                   else class_weight)

    # ------------------------------------------------------------------ the one dispatch on the loss name

    def _forward_backward(self, scores, target, grad, reduction, class_weight):
        """scores (..., N, C) -> (reduced data loss, dscores (..., N, C), or None when grad is None)."""
        if self.loss == "softmax":
            data, P, losses = LF.softmax_forward(scores, target, reduction, class_weight)
            back = None if grad is None else LF.softmax_backward(P, losses, target, grad, reduction, class_weight)
        elif self.loss == "svm":
            data, margins, losses = LF.svm_forward(scores, target, self.margin, self.squared, self.form, reduction,
                                                   class_weight)
            back = None if grad is None else LF.svm_backward(margins, losses, target, grad, self.squared, self.form,
                                                             reduction, class_weight)
        elif self.loss == "squared":
            data, resid, losses = LF.squared_forward(scores, target, reduction, class_weight)
            back = None if grad is None else LF.squared_backward(resid, losses, target, grad, reduction, class_weight)
        return data, back

    @property
    def smooth(self):
        """Whether L-BFGS may be used: no kink in the loss or the penalty (names.nonsmooth_parts)."""
        return not nonsmooth_parts(self.loss, self.squared, self.penalty)

    def expected_initial_loss(self, num_classes):
        """The lecture's sanity check with tiny weights: log C (softmax), (C - 1) * margin (SVM;
        one term for crammer-singer, C for one-vs-rest); margin^2 for the squared hinge; C for the
        squared loss (scores ~ 0 against C targets of +-1)."""
        if self.loss == "softmax":
            return math.log(num_classes)
        if self.loss == "squared":
            return float(num_classes)
        terms = {"weston-watkins": num_classes - 1, "one-vs-rest": num_classes}.get(self.form, 1)
        return terms * (self.margin ** 2 if self.squared else self.margin)

    @property
    def huge_margin(self):
        """An SVM margin far above the scores' scale (the likely cause of a huge or non-finite loss)."""
        return self.loss == "svm" and self.margin > 1e3

    # ------------------------------------------------------------------ values and gradients

    def data(self, scores, y, reduction="mean"):
        """scores (B, C) or (K, B, C), y (B,) -> mean (or summed) data loss () or (K,), unweighted
        (labels were checked once at load; class weights shape training only)."""
        LF.check_inputs(scores, y, reduction)
        return self._forward_backward(scores, y, None, reduction, None)[0]

    def regularization(self, weight):
        """weight (C, D) or (K, C, D) -> reg * R(W): () or (K,)."""
        return self.reg * LF.penalty(weight, self.penalty, self.beta)

    @torch.no_grad()
    def loss_and_grad(self, x, weight, bias, target, *, reduction="mean"):
        """L = data loss of scores = x W^T + b, plus reg * R(W), and its gradients, by the chain
        rule written out with functional's backward functions: no autograd graph.

        x (N, D), weight (C, D) or (K, C, D), bias (C,)/(K, C) or None, target (N,). With K models
        the gradient is that of sum_k L_k: each model's own. class_weight values are not checked
        (no host sync). reduction "sum" gives sum_i w_{y_i} L_i and its gradient instead of the mean
        (to stream a data set in batches: sum, then divide by N once); the penalty is added either way.
        -> scores (N, C)/(K, N, C), data loss ()/(K,), reg * R(W) ()/(K,), dW, db (None without bias).
        """
        if reduction not in ("mean", "sum"):
            raise ValueError(f"loss_and_grad reduction must be mean or sum, got {reduction!r}")
        scores = LF.linear_forward(x, weight, bias)
        LF.check_inputs(scores, target, reduction, self.class_weight)   # no host sync
        dtype = torch.promote_types(weight.dtype, torch.float32)           # half precisions in float32
        ones = torch.ones(weight.shape[:-2], dtype=dtype, device=weight.device)   # dL/dL_k
        data, dscores = self._forward_backward(scores, target, ones, reduction, self.class_weight)
        _, dW, db = LF.linear_backward(x, weight, dscores, need_x=False, need_bias=bias is not None)
        reg_term = self.reg * LF.penalty_forward(weight, self.penalty, self.beta)
        dW.add_(LF.penalty_backward(weight, self.reg * ones, self.penalty, self.beta).to(dW.dtype))
        return scores, data, reg_term, dW, db


def objective_and_grad(x, weight, bias, target, *, loss="softmax", reg=0.0, penalty="l2", beta=1.0, margin=1.0,
                       squared=False, form="weston-watkins", class_weight=None, reduction="mean"):
    """Objective(loss, reg, ...).loss_and_grad(x, weight, bias, target): the graph-free step as one call."""
    return Objective(loss, reg, penalty, beta, margin, squared, form, class_weight).loss_and_grad(
        x, weight, bias, target, reduction=reduction)
