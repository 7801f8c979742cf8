"""Gradient check: lintorch's hand-written backward passes against three references.

Shapes: N examples, D features, C classes, K stacked models (as in lintorch.functional).

Every Function (linear, svm_loss in both forms, hinge and squared, softmax_loss, the
l2/l1/elastic-net penalties) and the total loss L = data loss + lam R(W) through linear,
each also with the K dimension and with class weights (the data loss (1/N) sum_i w_{y_i} L_i),
and the graph-free training step objective_and_grad that train.py uses, is checked three ways:

    autograd   torch autograd on an independent reference from lintorch.references
               (F.cross_entropy, C * F.multi_margin_loss, plain tensor expressions), float32 and float64
    numeric    centered finite differences in float64, the lecture's numeric gradient:
               every coordinate for small shapes, sampled coordinates for N=64, D=3072
    gradcheck  torch.autograd.gradcheck, float64

Relative error is the lecture's |a - b| / max(|a|, |b|) per coordinate (0 where both are 0),
its denominator floored at a fraction of the reference gradient's largest entry: rounding in
a sum is relative to the sum's terms, so an entry that cancels to ~0 is judged against the
gradient's scale (the whole scale for autograd, 1% of it for finite differences, whose
rounding is eps |L| / h). Hinge kinks: a coordinate whose finite-difference step can carry
a margin across zero is counted as a kink and left out, never failed; the strict checks
draw their inputs so that no margin lies within GAP of zero, and one check sits on kinks
on purpose.

The command line is lintorch.gradcheck (python -m lintorch.gradcheck), which imports this module
only once its arguments are parsed.
"""

import logging
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch

from . import functional as LF
from .references import PENALTY_REFS, per_model, softmax_reference, svm_reference

log = logging.getLogger(__name__)

H = 1e-5          # finite-difference step; hinge losses are piecewise linear (squared: quadratic), so exact off kinks
GAP = 1e-3        # strict inputs keep every hinge margin (and |W| for l1) this far from its kink
TOL = {("autograd", torch.float32): 1e-6, ("autograd", torch.float64): 1e-12, ("numeric", torch.float64): 1e-7}
FLOOR = {"autograd": 1.0, "numeric": 1e-2}   # denominator floor, as a fraction of max |reference|
SAMPLES = 15      # coordinates per input for the large-shape numeric check


@dataclass
class Row:
    """One check's result: errors of the analytic gradient a against the reference b."""
    function: str
    method: str
    where: str                    # "float64/cpu"
    max_abs: float
    max_rel: float
    passed: bool
    kinks: Optional[int] = None   # coordinates left out because a hinge kink lies within h


@dataclass
class Case:
    """fn(*inputs) under test against ref(*inputs); gradients w.r.t. inputs[i] for i in wrt.

    inputs are float64 CPU tensors (targets int64); kinks(inputs, h) gives one bool mask per
    wrt input: the coordinates whose finite-difference step crosses a kink.
    """
    name: str
    fn: Callable
    ref: Callable
    inputs: list
    wrt: tuple
    kinks: Optional[Callable] = None
    large: bool = False           # numeric check on sampled coordinates only, no gradcheck


def rel_error(a, b, floor=0.0):
    """|a - b| / max(|a|, |b|, floor) per coordinate; 0 where the denominator is 0."""
    den = torch.maximum(a.abs(), b.abs()).clamp_min(floor)
    return torch.where(den > 0, (a - b).abs() / den, torch.zeros_like(den))


def numeric_gradient(f, x, h=H, coords=None, df=None):
    """Centered differences (f(x + h e_i) - f(x - h e_i)) / 2h, the lecture's numeric gradient.

    f(x) -> a scalar, or any tensor with df (dL/df, its shape): then the gradient of sum(df * f),
    differenced entry by entry before the sum, as cs231n's eval_numerical_gradient_array, so
    entries that do not move cancel exactly. x is perturbed in place and restored. coords: flat
    indices to evaluate (the sampled check) or None for all. Returns x's shape, or (len(coords),).
    """
    flat = x.detach().view(-1)
    idx = range(flat.numel()) if coords is None else [int(i) for i in coords]
    grad = torch.zeros(len(idx), dtype=torch.float64)
    with torch.no_grad():
        for k, i in enumerate(idx):
            old = flat[i].item()
            flat[i] = old + h
            fp = f(x).double()
            flat[i] = old - h
            fm = f(x).double()
            flat[i] = old
            delta = fp - fm if df is None else ((fp - fm) * df).sum()
            grad[k] = float(delta) / (2 * h)
    return grad.view(x.shape) if coords is None else grad


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

def _prepare(case, dtype, device):
    return [t.to(device, dtype, copy=True).requires_grad_(i in case.wrt) if t.is_floating_point()
            else t.to(device) for i, t in enumerate(case.inputs)]


def _cotangent(out):
    """A fixed random dL/dout in [0.5, 1.5), so reduction="none" and (K,) outputs get a non-uniform
    gradient. Uniform, not normal: never equal to the (normal) inputs of the same seed, where
    dW = v^T x would be symmetric and blind to a transposed dW."""
    g = torch.Generator().manual_seed(0)
    return (torch.rand(out.shape, generator=g, dtype=torch.float64) + 0.5).to(out.device, out.dtype)


def _grads(fn, xs, wrt):
    out = fn(*xs)
    return out, list(torch.autograd.grad(out, [xs[i] for i in wrt], _cotangent(out)))


def _max_errors(a, b, floor_frac):
    """Max |a - b| and max rel_error over tensors compared as one vector (a value, or a
    gradient over all inputs); the floor is floor_frac times the largest reference entry."""
    a, b = (torch.cat([t.detach().double().reshape(-1).cpu() for t in ts]) for ts in (a, b))
    if not b.numel():
        return 0.0, 0.0
    return float((a - b).abs().max()), float(rel_error(a, b, floor_frac * float(b.abs().max())).max())


def _row(name, method, dtype, device, groups, tol, kinks=None):
    """groups: (analytic, reference) pairs of tensor lists, each compared as one vector."""
    max_abs, max_rel = (max(e) for e in zip(*(_max_errors(a, b, FLOOR[method]) for a, b in groups)))
    row = Row(name, method, f"{str(dtype).removeprefix('torch.')}/{device}", max_abs, max_rel,
              max_rel <= tol, kinks)   # a nan error compares False: fails
    log.debug("%s", row)
    return row


def check_autograd(case, dtype=torch.float64, device="cpu"):
    """Value and gradients of case.fn against torch autograd through case.ref."""
    xs = _prepare(case, dtype, device)
    out, ga = _grads(case.fn, xs, case.wrt)
    ref, gb = _grads(case.ref, xs, case.wrt)
    return _row(case.name, "autograd", dtype, device, [([out], [ref]), (ga, gb)], TOL["autograd", dtype])


def check_numeric(case, device="cpu", h=H, samples=None, seed=0):
    """Analytic gradients of case.fn against centered finite differences in float64; kink
    coordinates are counted, not compared. samples: coordinates per input (None: all)."""
    xs = _prepare(case, torch.float64, device)
    out, grads = _grads(case.fn, xs, case.wrt)
    v = _cotangent(out)
    masks = case.kinks(xs, h) if case.kinks else [None] * len(case.wrt)
    gen = torch.Generator().manual_seed(seed)
    a, b, kinks = [], [], 0
    for i, g, mask in zip(case.wrt, grads, masks):
        def f(t, i=i):
            return case.fn(*xs[:i], t, *xs[i + 1:])
        n = g.numel()
        coords = torch.arange(n) if samples is None else torch.randperm(n, generator=gen)[:samples]
        keep = torch.ones(len(coords), dtype=torch.bool) if mask is None else ~mask.reshape(-1).cpu()[coords]
        kinks += int((~keep).sum())
        a.append(g.reshape(-1).cpu()[coords][keep])
        b.append(numeric_gradient(f, xs[i], h, coords[keep], df=v))
    return _row(case.name, "numeric", torch.float64, device, [(a, b)], TOL["numeric", torch.float64],
                None if case.kinks is None else kinks)


def check_gradcheck(case, device="cpu"):
    """torch.autograd.gradcheck of case.fn in float64 (its own eps=1e-6, atol=1e-5, rtol=1e-3)."""
    xs = _prepare(case, torch.float64, device)
    ok = torch.autograd.gradcheck(case.fn, xs, raise_exception=False)
    return Row(case.name, "gradcheck", f"float64/{device}", float("nan"), float("nan"), bool(ok))


# --------------------------------------------------------------------------- the cases

def _label(name, *tags):
    tags = [t for t in tags if t]
    return f"{name}[{','.join(tags)}]" if tags else name


def _data_losses(fns, reduction, tag="", class_weight=None):
    """(label, form, fn(s, y), ref(s, y)) for softmax_loss and the four SVM variants
    (form is None for the smooth softmax loss: no kinks), weighted by class_weight (C,) if given."""
    cw = {} if class_weight is None else {"class_weight": class_weight}
    tag = tag if class_weight is None else ",".join(t for t in (tag, "weighted") if t)
    losses = [(_label("softmax_loss", reduction, tag), None, partial(fns["softmax_loss"], reduction=reduction, **cw),
               partial(softmax_reference, reduction=reduction, **cw))]
    for form, short in zip(LF.SVM_FORMS, ("ww", "cs", "ovr")):
        for squared in (False, True):
            kw = dict(margin=1.0, squared=squared, form=form, reduction=reduction, **cw)
            label = _label("svm_loss", short, "squared" if squared else "hinge", reduction, tag)
            losses.append((label, form, partial(fns["svm_loss"], **kw), partial(svm_reference, **kw)))
    return losses


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
    """functional.objective_and_grad, the graph-free training step, seen by autograd: its own
    dW, db (scaled per model by the incoming gradient) are the backward pass under check."""
    @staticmethod
    def forward(ctx, x, W, b, y, loss, form, kind, class_weight):
        _, data, reg, dW, db = LF.objective_and_grad(x, W, b, y, loss, 0.1, kind, 0.5, 1.0, False, form,
                                                     class_weight=class_weight)
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


def make_cases(seed=0, fns=None):
    """The checked cases; fns overrides the Functions under test by name ("linear", "svm_loss",
    "softmax_loss", "penalty"), e.g. with a deliberately broken one."""
    fns = {"linear": LF.linear, "svm_loss": LF.svm_loss, "softmax_loss": LF.softmax_loss,
           "penalty": LF.penalty, **(fns or {})}
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
    """Every case three ways on device -> list[Row]. Large cases skip gradcheck (it is O(inputs)
    backward passes), and so does the case sitting on kinks (gradcheck has no notion of them)."""
    rows = []
    for case in make_cases(seed, fns):
        rows += [check_autograd(case, dtype, device) for dtype in (torch.float32, torch.float64)]
        rows.append(check_numeric(case, device, samples=SAMPLES if case.large else None, seed=seed))
        on_kink = case.kinks is not None and any(m.any() for m in case.kinks(case.inputs, GAP))
        if not case.large and not on_kink:
            rows.append(check_gradcheck(case, device))
    return rows


def _num(v):
    return "-" if v != v else f"{v:.1e}"        # nan: gradcheck reports no errors


def format_table(rows):
    """The rows as a text table with a summary line."""
    fmt = "{:<46} {:<9} {:<13} {:>9} {:>9}  {}"
    lines = [fmt.format("function", "method", "dtype/device", "max abs", "max rel", "result")]
    for r in rows:
        result = ("pass" if r.passed else "FAIL") + ("" if r.kinks is None else f"  kinks={r.kinks}")
        lines.append(fmt.format(r.function, r.method, r.where, _num(r.max_abs), _num(r.max_rel), result))
    failed = sum(not r.passed for r in rows)
    kinks = sum(r.kinks or 0 for r in rows)
    lines.append(f"{len(rows)} checks: {len(rows) - failed} passed, {failed} failed; "
                 f"{kinks} kink coordinates left out")
    return "\n".join(lines)

