"""Gradient check: lintorch's hand-written backward passes against three references.

Shapes: N examples, D features, C classes, K stacked models (as in lintorch.functional).

Every Function (linear, svm_loss in its three forms, hinge and squared, softmax_loss, logistic_loss,
the l2/l1/elastic-net penalties; squared_loss inside a total) and the total loss L = data loss + lam R(W) through linear,
each also with the K dimension and with class weights (the data loss (1/N) sum_i w_{y_i} L_i),
and the graph-free training step objective_and_grad that train.py uses, is one Case, checked by
lintorch.check_function (lintorch.verify.checker, which holds the comparisons) three ways:

    autograd   torch autograd on an independent reference from lintorch.verify.references
               (F.cross_entropy, C * F.multi_margin_loss, F.mse_loss, F.binary_cross_entropy_with_logits,
               plain tensor expressions), float32 and float64
    numeric    centered finite differences in float64, the lecture's numeric gradient:
               every coordinate for small shapes, SAMPLES sampled coordinates for N=64, D=3072
    gradcheck  torch.autograd.gradcheck, float64 (its fast mode for the sampled shapes)

with lintorch's tolerances (TOL) and step H. Hinge kinks: each case names the coordinates whose
finite-difference step can carry a margin across zero (hinge_kinks); check_function counts them
as kinks and leaves them out, never fails them; the strict checks draw their inputs so that no
margin lies within GAP of zero, and one check sits on kinks on purpose.

The command line is lintorch.gradcheck (python -m lintorch.gradcheck), which imports this module
only once its arguments are parsed.
"""

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch

from .. import functional as LF
# Report, Row, format_table, numeric_gradient, rel_error: also lintorch.gradcheck's names
from .checker import METHODS, Report, Row, check_function, format_table, numeric_gradient, rel_error  # noqa: F401
from ..objective import objective_and_grad
from .references import (PENALTY_REFS, logistic_reference, per_model, softmax_reference, squared_reference,
                         svm_reference)

H = 1e-5          # finite-difference step; hinge losses are piecewise linear (squared: quadratic), so exact off kinks
GAP = 1e-3        # strict inputs keep every hinge margin (and |W| for l1) this far from its kink
TOL = {("autograd", torch.float32): 1e-6, ("autograd", torch.float64): 1e-12, ("numeric", torch.float64): 1e-7}
SAMPLES = 15      # coordinates per input for the large-shape numeric check


@dataclass
class Case:
    """fn(*inputs) under test against ref(*inputs); gradients w.r.t. inputs[i] for i in wrt.

    inputs are float64 CPU tensors (targets int64); kinks(inputs, h) gives one bool mask per
    wrt input: the coordinates whose finite-difference step may cross a kink.
    """
    name: str
    fn: Callable
    ref: Callable
    inputs: list
    wrt: tuple
    kinks: Optional[Callable] = None
    large: bool = False           # numeric check on sampled coordinates only, gradcheck in fast mode


def hinge_kinks(scores, target, margin=1.0, form="weston-watkins", tol=H):
    """bool (..., N): examples with a wrong-class margin within tol of zero (Crammer-Singer: the
    largest one, or the two largest within tol of each other, where the max switches; one-vs-rest:
    any margin - t_j s_j). C >= 2."""
    idx = target.view(-1, 1).expand(*scores.shape[:-1], 1)
    if form == "one-vs-rest":
        return ((scores + margin).scatter(-1, idx, margin - scores.gather(-1, idx)).abs() < tol).any(-1)
    wrong = torch.ones_like(scores, dtype=torch.bool).scatter(-1, idx, False)
    m = (scores - scores.gather(-1, idx) + margin).masked_fill(~wrong, -float("inf"))
    if form == "weston-watkins":
        return (m.abs() < tol).any(-1)
    top = m.topk(2, -1).values                     # with C = 2 the second is -inf: never a tie
    return (top[..., 0].abs() < tol) | (top[..., 0] - top[..., 1] < tol)


# --------------------------------------------------------------------------- the three checks

def _check(case, methods, device="cpu", seed=0, dtypes=(torch.float32, torch.float64)):
    """check_function on one case -> its rows: the case's own kink masks (none: compare every
    coordinate), lintorch's tolerances and step, sampled coordinates for a large case."""
    return check_function(case.fn, *case.inputs, reference=case.ref, wrt=case.wrt, checks=methods, dtypes=dtypes,
                          tol=TOL, eps=H, samples=SAMPLES if case.large else None, seed=seed, device=device,
                          kinks=case.kinks or False, name=case.name).rows


def check_autograd(case, dtype=torch.float64, device="cpu"):
    """Value and gradients of case.fn against torch autograd through case.ref -> Row."""
    return _check(case, ("autograd",), device, dtypes=(dtype,))[0]


def check_numeric(case, device="cpu", seed=0):
    """Analytic gradients of case.fn against centered finite differences in float64 -> Row;
    kink coordinates are counted, not compared."""
    return _check(case, ("numeric",), device, seed)[0]


def check_gradcheck(case, device="cpu"):
    """torch.autograd.gradcheck of case.fn in float64 -> Row."""
    return _check(case, ("gradcheck",), device)[0]


# --------------------------------------------------------------------------- the cases

def _label(name, *tags):
    tags = [t for t in tags if t]
    return f"{name}[{','.join(tags)}]" if tags else name


def _data_losses(fns, reduction, tag="", class_weight=None):
    """(label, form, fn(s, y), ref(s, y)) for softmax_loss, the six SVM variants, squared_loss and
    logistic_loss (form is None for the smooth losses: no kinks), weighted by class_weight (C,) if given."""
    tag = tag if class_weight is None else ",".join(t for t in (tag, "weighted") if t)
    bind = partial(_weighted, class_weight=class_weight)
    losses = [(_label("softmax_loss", reduction, tag), None, bind(fns["softmax_loss"], reduction=reduction),
               bind(softmax_reference, reduction=reduction))]
    for form, short in zip(LF.SVM_FORMS, ("ww", "cs", "ovr")):
        for squared in (False, True):
            kw = dict(margin=1.0, squared=squared, form=form, reduction=reduction)
            label = _label("svm_loss", short, "squared" if squared else "hinge", reduction, tag)
            losses.append((label, form, bind(fns["svm_loss"], **kw), bind(svm_reference, **kw)))
    losses.append((_label("squared_loss", reduction, tag), None, bind(fns["squared_loss"], reduction=reduction),
                   bind(squared_reference, reduction=reduction)))
    losses.append((_label("logistic_loss", reduction, tag), None, bind(fns["logistic_loss"], reduction=reduction),
                   bind(logistic_reference, reduction=reduction)))
    return losses


def _weighted(fn, class_weight=None, **kw):
    """fn(s, y, **kw), with class_weight (C,) if given moved to the scores' device (the checks run anywhere)."""
    if class_weight is None:
        return partial(fn, **kw)
    return lambda s, y: fn(s, y, class_weight=class_weight.to(s.device), **kw)


def _score_kinks(xs, h, form):
    """Every score of an example that sits within h of a kink (a score step h moves a margin by h)."""
    s, y = xs
    return [hinge_kinks(s, y, 1.0, form, h)[..., None].expand_as(s)]


def _resample(draw, ok, tries=100):
    for _ in range(tries):
        t = draw()
        if ok(t):
            return t
    raise RuntimeError("could not draw inputs away from the kinks")


def _total(loss, kind, fns, x, y, lead, C, randn, tag="", scale=0.5, large=False, lam=0.1):
    """L = loss(linear(x, W, b), y) + lam R(W), gradients w.r.t. W and b, drawn off the kinks.
    loss is a _data_losses entry; R is the penalty `kind` (elasticnet with beta 0.5)."""
    label, form, data_loss, ref = loss

    def fn(x, W, b, y):
        return data_loss(fns["linear"](x, W, b), y) + lam * fns["penalty"](W, kind, 0.5)

    def reference(x, W, b, y):
        return per_model(ref)(x @ W.mT + b.unsqueeze(-2), y) + lam * PENALTY_REFS[kind](W, 0.5)

    def near(x, W, b, y, tol):   # per model: does any example sit within tol of a hinge kink
        if form is None:
            return torch.zeros(W.shape[:-2], dtype=torch.bool, device=W.device)
        return hinge_kinks(x @ W.mT + b.unsqueeze(-2), y, 1.0, form, tol).any(-1)

    def kinks(xs, h):   # a weight step h moves every example's scores by up to h max|x|
        x, W, b, y = xs
        k = near(x, W, b, y, h * max(1.0, float(x.abs().max())))
        return [k[..., None, None].expand_as(W) | ((W.abs() < h) & (kind != "l2")), k[..., None].expand_as(b)]

    def draw():
        return scale * randn(*lead, C, x.shape[1]), randn(*lead, C)

    def off_kinks(Wb):
        return not near(x, *Wb, y, GAP).any() and (kind == "l2" or bool((Wb[0].abs() >= GAP).all()))

    name = _label("total", f"{label.split('[')[0]}+{lam}*{kind}", tag)
    return Case(name, fn, reference, [x, *_resample(draw, off_kinks), y], (1, 2), kinks, large)


class _StepAsFunction(torch.autograd.Function):
    """objective.Objective.loss_and_grad, the graph-free training step, seen by autograd: its own
    dW, db (scaled per model by the incoming gradient) are the backward pass under check."""
    @staticmethod
    def forward(ctx, x, W, b, y, loss, form, kind, class_weight):
        cw = None if class_weight is None else class_weight.to(x.device)        # the checks run on any device
        _, data, reg, dW, db = objective_and_grad(x, W, b, y, loss=loss, reg=0.1, penalty=kind, beta=0.5,
                                                  margin=1.0, squared=False, form=form, class_weight=cw)
        ctx.save_for_backward(dW, db)
        return data + reg

    @staticmethod
    def backward(ctx, grad):
        dW, db = ctx.saved_tensors
        return None, dW * grad[..., None, None], db * grad[..., None], None, None, None, None, None


def _step(total_case, loss, form, kind, tag, class_weight=None):
    """The training step's gradient, checked against the same references as the total loss."""
    total_case.fn = lambda x, W, b, y: _StepAsFunction.apply(x, W, b, y, loss, form, kind, class_weight)
    tag = tag if class_weight is None else ",".join(t for t in (tag, "weighted") if t)
    total_case.name = _label("objective_and_grad", f"{loss}+0.1*{kind}", tag)
    return total_case


def _logistic_cases(fns, x, y, lead, C, randn, tag):
    """The one-vs-rest logistic loss: each reduction, its Function in a total, and the training step."""
    cases = []
    for reduction in ("mean", "sum", "none"):
        label, _, fn, ref = _data_losses(fns, reduction, tag)[8]
        cases.append(Case(label, fn, per_model(ref), [2 * randn(*lead, x.shape[0], C), y], (0,)))
    loss = _data_losses(fns, "mean")[8]
    return cases + [_total(loss, "l2", fns, x, y, lead, C, randn, tag),
                    _step(_total(loss, "l2", fns, x, y, lead, C, randn, tag), "logistic", "weston-watkins", "l2", tag)]


def make_cases(seed=0, fns=None):
    """The checked cases; fns overrides the Functions under test by name ("linear", "svm_loss",
    "softmax_loss", "penalty"), e.g. with a deliberately broken one."""
    fns = {"linear": LF.linear, "svm_loss": LF.svm_loss, "softmax_loss": LF.softmax_loss,
           "squared_loss": LF.squared_loss, "logistic_loss": LF.logistic_loss, "penalty": LF.penalty, **(fns or {})}
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    N, D, C, K = 5, 4, 4, 3
    x, y = randn(N, D), torch.randint(0, C, (N,), generator=gen)
    cases = []
    for lead, tag in (((), ""), ((K,), f"K={K}")):          # one model, then K stacked ones
        cases.append(Case(_label("linear", tag), fns["linear"], lambda x, W, b: x @ W.mT + b.unsqueeze(-2),
                          [x, randn(*lead, C, D), randn(*lead, C)], (0, 1, 2)))
        W = _resample(lambda: randn(*lead, C, D), lambda W: bool((W.abs() >= GAP).all()))
        for kind, ref in PENALTY_REFS.items():
            cases.append(Case(_label("penalty", kind, tag), partial(fns["penalty"], kind=kind, beta=0.5),
                              partial(ref, beta=0.5), [W], (0,),
                              None if kind == "l2" else lambda xs, h: [xs[0].abs() < h]))
        for j, reduction in enumerate(("mean", "sum", "none", "mean", "sum", "none", "mean")):   # cycled
            label, form, fn, ref = _data_losses(fns, reduction, tag)[j]
            s = _resample(lambda: 2 * randn(*lead, N, C),
                          lambda s: form is None or not hinge_kinks(s, y, 1.0, form, GAP).any())
            cases.append(Case(label, fn, per_model(ref), [s, y], (0,),
                              None if form is None else partial(_score_kinks, form=form)))
        losses = _data_losses(fns, "mean")
        cases += [_total(losses[1], "l2", fns, x, y, lead, C, randn, tag),
                  _total(losses[0], "elasticnet", fns, x, y, lead, C, randn, tag)]
        cases += [_step(_total(losses[1], "l2", fns, x, y, lead, C, randn, tag), "svm", "weston-watkins", "l2", tag),
                  _step(_total(losses[0], "elasticnet", fns, x, y, lead, C, randn, tag), "softmax",
                        "weston-watkins", "elasticnet", tag)]
        # the squared loss (one-vs-rest least squares): its Function in a total, and the training step
        cases += [_total(losses[7], "l2", fns, x, y, lead, C, randn, tag),
                  _step(_total(losses[7], "l2", fns, x, y, lead, C, randn, tag), "squared", "weston-watkins", "l2", tag)]
        cases += _logistic_cases(fns, x, y, lead, C, randn, tag)
        # class weights: three data losses (the reductions cycled), a total and both training steps
        w = torch.rand(C, generator=gen, dtype=torch.float64) * 1.5 + 0.25
        for j, reduction in ((0, "mean"), (1, "sum"), (4, "none")):
            label, form, fn, ref = _data_losses(fns, reduction, tag, w)[j]
            s = _resample(lambda: 2 * randn(*lead, N, C),
                          lambda s: form is None or not hinge_kinks(s, y, 1.0, form, GAP).any())
            cases.append(Case(label, fn, per_model(ref), [s, y], (0,),
                              None if form is None else partial(_score_kinks, form=form)))
        weighted = _data_losses(fns, "mean", tag, w)
        cases += [_total(weighted[0], "l2", fns, x, y, lead, C, randn, f"{tag},weighted".lstrip(",")),
                  _step(_total(weighted[0], "l2", fns, x, y, lead, C, randn, tag), "softmax", "weston-watkins",
                        "l2", tag, w),
                  _step(_total(weighted[3], "l2", fns, x, y, lead, C, randn, tag), "svm", "crammer-singer",
                        "l2", tag, w),
                  _step(_total(weighted[7], "l2", fns, x, y, lead, C, randn, tag), "squared", "weston-watkins",
                        "l2", tag, w),
                  _step(_total(weighted[8], "l2", fns, x, y, lead, C, randn, tag), "logistic", "weston-watkins",
                        "l2", tag, w)]
    # the lecture's numeric gradient on a CIFAR-sized batch, on sampled coordinates
    x, y = randn(64, 3072), torch.randint(0, 10, (64,), generator=gen)
    cases += [_total(loss, "l2", fns, x, y, (), 10, randn, "N=64,D=3072", scale=1e-2, large=True)
              for loss in _data_losses(fns, "mean")[1::-1]]
    # on kinks on purpose: the lecture's scores plus a row whose margin is exactly 0
    s = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1], [2.0, 1.0, -3.0]], dtype=torch.float64)
    label, form, fn, ref = _data_losses(fns, "sum", "on kinks")[1]
    cases.append(Case(label, fn, ref, [s, torch.tensor([0, 1, 2, 0])], (0,),
                      partial(_score_kinks, form=form)))
    return cases


def run_checks(device="cpu", seed=0, fns=None):
    """Every case three ways on device -> list[Row]. check_function runs gradcheck in its fast mode
    for the large cases (their numeric check samples coordinates) and leaves it out for the case
    found on kinks."""
    return [row for case in make_cases(seed, fns) for row in _check(case, METHODS, device, seed)]


PROPERTIES = ("second", "forward", "batched")     # on every Function's case; "compiled" on one total


def property_cases(seed=0):
    """One case per Function and form (linear, the penalties, each loss, the totals through linear),
    for the properties beyond first order: not the graph-free step (a first-order Function by
    design), the K-stacked and weighted repeats, the large or the on-kink cases."""
    return [c for c in make_cases(seed) if not c.large and not c.name.startswith("objective_and_grad")
            and not any(tag in c.name for tag in ("K=", "weighted", "on kinks"))]


def run_properties(device="cpu", seed=0, backend="aot_eager"):
    """Second order, forward mode and vmap on each property case, torch.compile (fullgraph, backend)
    on the softmax total, CPU against CUDA on each case where CUDA is present -> list[Row]."""
    cuda = ("devices",) if torch.cuda.is_available() else ()
    rows = []
    for case in property_cases(seed):
        checks = PROPERTIES + cuda + (("compiled",) if case.name.startswith("total[softmax_loss") else ())
        rows += check_function(case.fn, *case.inputs, wrt=case.wrt, checks=checks, eps=H, seed=seed, device=device,
                               kinks=case.kinks or False, name=case.name, backend=backend).rows
    return rows
