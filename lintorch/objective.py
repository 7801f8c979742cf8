"""The objective as one object, passed whole (scikit-learn's LinearModelLoss shape), and each data
loss as one class in one registry, LOSSES (scikit-learn's BaseLoss shape): its math, its own
settings and their defaults, its tuned lr and reg, whether it is smooth, solvable exactly or
probabilistic, and the lecture's step-0 value. The flags, the doctor, the benchmark, hparams,
LinearProbe, predict and the checkpoint ask LOSSES; none compares loss names. SGD, L-BFGS,
evaluation, random search and the benchmark all ask the Objective.

Shapes: N examples, D features, C classes, K stacked models (weight (K, C, D), per-model values (K,)).

    L = (1/N) sum_i w_{y_i} L_i + reg * R(W)

loss_and_grad chains functional's hand-written backward passes by hand, with no autograd graph, so
a training step costs little more than its two GEMMs; it equals backpropagating through the
linear, loss and penalty Functions (tested), which lintorch.gradcheck proves against independent
references. This module imports torch only when it computes: the torch-free command line reads LOSSES.

Adding a loss: its forward/backward pair and public function in functional.py, one class here,
its reference in verify/references.REFERENCES, and its export in lintorch/__init__.py.
"""
import dataclasses
import math
from dataclasses import dataclass


class Loss:
    """One data loss L_i(s_i, y_i) of an example's scores s_i (C,). A subclass sets:

    name           the --loss value (and the checkpoint's)
    formula        L_i, as the doctor and the docs print it
    function       its public function, lintorch.<function>(scores, target, ...)
    defaults       its own settings (by their flags' names) and their defaults, beyond reg, the
                   penalty and the class weights: what hparams log and LinearProbe passes on
    tuned          lr and reg chosen with --sweep lr x reg on CIFAR-10 pixels (SGD)
    probabilistic  softmax(scores) are class probabilities (predict_proba)
    exact          with the l2 penalty and no class weights, solved in closed form (optim/exact.py)
    """
    name = formula = function = ""
    defaults = {}
    tuned = {}
    probabilistic = exact = False

    @property
    def settings(self):
        return tuple(self.defaults)

    def kink(self, o):
        """What makes this loss nonsmooth in objective o, in words ("" when it is smooth)."""
        return ""

    def initial(self, o, C):
        """The lecture's sanity value: the mean loss at tiny weights (scores ~ 0), C classes."""
        raise NotImplementedError

    def huge(self, o):
        """The flag of a setting far above the scores' scale (a likely cause of a huge loss), or None."""
        return None

    def forward_backward(self, o, scores, target, grad, reduction, class_weight):
        """scores (..., N, C) -> (reduced data loss, dscores (..., N, C), or None when grad is None)."""
        raise NotImplementedError


class Softmax(Loss):
    name, function, probabilistic = "softmax", "softmax_loss", True
    formula = "-log softmax(s)_y"
    tuned = {"lr": 0.03, "reg": 3e-4}

    def initial(self, o, C):
        return math.log(C)

    def forward_backward(self, o, scores, target, grad, reduction, class_weight):
        from . import functional as LF
        data, P, losses = LF.softmax_forward(scores, target, reduction, class_weight)
        return data, None if grad is None else LF.softmax_backward(P, losses, target, grad, reduction, class_weight)


class SVM(Loss):
    name, function = "svm", "svm_loss"
    formula = "sum_{j != y} max(0, s_j - s_y + margin) (Weston-Watkins; squared: each term squared)"
    defaults = {"svm_form": "weston-watkins", "margin": 1.0, "squared_hinge": False}
    tuned = {"lr": 0.003, "reg": 1e-3}

    def kink(self, o):
        return "" if o.squared else "the hinge loss (use squared=True)"

    def initial(self, o, C):
        """(C - 1) * margin (one term for crammer-singer, C for one-vs-rest); margin^2 squared."""
        terms = {"weston-watkins": C - 1, "one-vs-rest": C}.get(o.form, 1)
        return terms * (o.margin ** 2 if o.squared else o.margin)

    def huge(self, o):
        return "--margin" if o.margin > 1e3 else None

    def forward_backward(self, o, scores, target, grad, reduction, class_weight):
        from . import functional as LF
        data, margins, losses = LF.svm_forward(scores, target, o.margin, o.squared, o.form, reduction, class_weight)
        return data, None if grad is None else LF.svm_backward(margins, losses, target, grad, o.squared, o.form,
                                                               reduction, class_weight)


class Squared(Loss):
    name, function, exact = "squared", "squared_loss", True
    formula = "sum_j (s_j - t_j)^2, t_j = +1 for j = y, -1 otherwise"
    tuned = {"lr": 1e-3, "reg": 1e-4}

    def initial(self, o, C):
        return float(C)           # scores ~ 0 against C targets of +-1

    def forward_backward(self, o, scores, target, grad, reduction, class_weight):
        from . import functional as LF
        data, resid, losses = LF.squared_forward(scores, target, reduction, class_weight)
        return data, None if grad is None else LF.squared_backward(resid, losses, target, grad, reduction,
                                                                   class_weight)


class Logistic(Loss):
    name, function = "logistic", "logistic_loss"
    formula = "sum_j log(1 + exp(-t_j s_j)), t_j = +1 for j = y, -1 otherwise"
    # --sweep lr=0.003,0.01,0.03,0.1 reg=1e-4,3e-4,1e-3, CIFAR-10 pixels, SGD 10 epochs: 41.24% val
    # (5,000 carved); the 12 members 39.28-41.24%, reg 3e-4 at lr 0.03 41.22%
    tuned = {"lr": 0.03, "reg": 1e-4}

    def initial(self, o, C):
        return C * math.log(2.0)  # scores ~ 0: each of the C binary terms is log 2

    def forward_backward(self, o, scores, target, grad, reduction, class_weight):
        from . import functional as LF
        data, margins, losses = LF.logistic_forward(scores, target, reduction, class_weight)
        return data, None if grad is None else LF.logistic_backward(margins, losses, target, grad, reduction,
                                                                    class_weight)


LOSSES = {loss.name: loss for loss in (Softmax(), SVM(), Squared(), Logistic())}

# Every objective setting's default: the flags' and Objective.from_config's for configs that lack a key.
LOSS_DEFAULTS = {"penalty": "l2", "beta": 1.0, "class_weight": "none",
                 **{k: v for loss in LOSSES.values() for k, v in loss.defaults.items()}}


def nonsmooth_parts(loss, squared, penalty):
    """The one smoothness rule L-BFGS needs, for the torch-free command line: what makes this
    objective nonsmooth, in words ([] when it is smooth; [] for a name that is no loss, which the
    parser refuses). Objective.nonsmooth."""
    return Objective(loss, penalty=penalty, squared=squared).nonsmooth() if loss in LOSSES else []


def exact_applies(loss, penalty, weighted):
    """The exact solver's one rule: an exact loss (squared) with the l2 penalty and no class
    weights (weighted False) is solved in closed form; every other objective is not."""
    return loss in LOSSES and LOSSES[loss].exact and penalty == "l2" and not weighted


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
        """The only reader of a config's loss settings (a TrainConfig's). reg: overrides cfg.reg (a
        sweep's (K,) tensor).
        class_weight "balanced" is scikit-learn's N / (C n_c), from train_labels (N,); without
        them the objective is unweighted (validation and evaluation report the unweighted loss).
        The class weights go to `device`."""
        def get(key):
            return getattr(cfg, key)
        from . import functional as LF
        class_weight = None
        if get("class_weight") == "balanced" and train_labels is not None:
            class_weight = LF.balanced_class_weight(train_labels, num_classes).to(device)
        return cls(cfg.loss, cfg.reg if reg is None else reg, get("penalty"), get("beta"), get("margin"),
                   get("squared_hinge"), get("svm_form"), class_weight)

    # ------------------------------------------------------------------ what the loss says

    @property
    def data_term(self):
        """The Loss (LOSSES[self.loss]) this objective's data term is."""
        return LOSSES[self.loss]

    def nonsmooth(self):
        """What makes this objective nonsmooth, in words ([] when L-BFGS may be used): the loss's
        kink (the hinge; its square has none), or the l1 / elastic-net penalty."""
        return [what for what in (self.data_term.kink(self), self.penalty != "l2" and
                                  f"the {self.penalty} penalty (use l2)") if what]

    @property
    def smooth(self):
        """Whether L-BFGS may be used: no kink in the loss or the penalty."""
        return not self.nonsmooth()

    def expected_initial_loss(self, num_classes):
        """The lecture's sanity check with tiny weights: log C (softmax), (C - 1) * margin (SVM),
        C (squared), C log 2 (logistic): each Loss's initial."""
        return self.data_term.initial(self, num_classes)

    @property
    def huge_margin(self):
        """A setting far above the scores' scale (the likely cause of a huge or non-finite loss)."""
        return self.data_term.huge(self) is not None

    # ------------------------------------------------------------------ values and gradients

    def data(self, scores, y, reduction="mean"):
        """scores (B, C) or (K, B, C), y (B,) -> mean (or summed) data loss () or (K,), unweighted
        (labels were checked once at load; class weights shape training only)."""
        from . import functional as LF
        LF.check_inputs(scores, y, reduction)
        return self.data_term.forward_backward(self, scores, y, None, reduction, None)[0]

    def regularization(self, weight):
        """weight (C, D) or (K, C, D) -> reg * R(W): () or (K,)."""
        from . import functional as LF
        return self.reg * LF.penalty(weight, self.penalty, self.beta)

    def loss_and_grad(self, x, weight, bias, target, *, reduction="mean"):
        """L = data loss of scores = x W^T + b, plus reg * R(W), and its gradients, by the chain
        rule written out with functional's backward functions: no autograd graph.

        x (N, D), weight (C, D) or (K, C, D), bias (C,)/(K, C) or None, target (N,). With K models
        the gradient is that of sum_k L_k: each model's own. class_weight values are not checked
        (no host sync). reduction "sum" gives sum_i w_{y_i} L_i and its gradient instead of the mean
        (to stream a data set in batches: sum, then divide by N once); the penalty is added either way.
        -> scores (N, C)/(K, N, C), data loss ()/(K,), reg * R(W) ()/(K,), dW, db (None without bias).
        """
        import torch
        from . import functional as LF
        if reduction not in ("mean", "sum"):
            raise ValueError(f"loss_and_grad reduction must be mean or sum, got {reduction!r}")
        with torch.no_grad():
            scores = LF.linear_forward(x, weight, bias)
            LF.check_inputs(scores, target, reduction, self.class_weight)   # no host sync
            data, dW, db = self._data_grad(x, weight, scores, target, reduction, self.class_weight, bias is not None)
            dtype = torch.promote_types(weight.dtype, torch.float32)           # half precisions in float32
            ones = torch.ones(weight.shape[:-2], dtype=dtype, device=weight.device)   # dL/dL_k
            reg_term = self.reg * LF.penalty_forward(weight, self.penalty, self.beta)
            dW.add_(LF.penalty_backward(weight, self.reg * ones, self.penalty, self.beta).to(dW.dtype))
            return scores, data, reg_term, dW, db

    def data_and_grad(self, x, weight, bias, target, *, class_weight, reduction="mean"):
        """The data term alone, as loss_and_grad computes it, with neither the penalty nor the checks
        of the inputs: for a caller that checked them once and adds the penalty itself (L-BFGS's
        passes over a data set, optim.lbfgs). class_weight: the objective's class weights (C,) on x's
        device and in its dtype, or None where it has none. -> data loss ()/(K,), dW, db (None without bias)."""
        import torch
        from . import functional as LF
        with torch.no_grad():
            scores = LF.linear_forward(x, weight, bias)
            return self._data_grad(x, weight, scores, target, reduction, class_weight, bias is not None)

    def _data_grad(self, x, weight, scores, target, reduction, class_weight, need_bias):
        """The chain rule from the scores back to W and b -> (data loss, dW, db)."""
        import torch
        from . import functional as LF
        dtype = torch.promote_types(weight.dtype, torch.float32)           # half precisions in float32
        ones = torch.ones(weight.shape[:-2], dtype=dtype, device=weight.device)   # dL/dL_k
        data, dscores = self.data_term.forward_backward(self, scores, target, ones, reduction, class_weight)
        _, dW, db = LF.linear_backward(x, weight, dscores, need_x=False, need_bias=need_bias)
        return data, dW, db


def objective_and_grad(x, weight, bias, target, *, loss="softmax", reg=0.0, penalty="l2", beta=1.0, margin=1.0,
                       squared=False, form="weston-watkins", class_weight=None, reduction="mean"):
    """Objective(loss, reg, ...).loss_and_grad(x, weight, bias, target): the graph-free step as one call."""
    return Objective(loss, reg, penalty, beta, margin, squared, form, class_weight).loss_and_grad(
        x, weight, bias, target, reduction=reduction)
