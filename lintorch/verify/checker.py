"""check_function: the three-way gradient check for anyone's differentiable function of tensors.

    fn(*inputs) -> a tensor (a scalar or any shape) or a tuple of tensors: a custom autograd
                   Function's .apply, a thin wrapper around one, or any differentiable callable
    inputs         tensors and plain values (numbers, strings, None), passed to fn as given; the
                   tensors that require grad (or those picked by wrt) are checked, every other
                   one (integer targets, a mask) is a constant

Checked three ways, each a row of the report:

    autograd   fn's value and every checked input's gradient against torch autograd through
               reference(*inputs), an independent implementation of the same function, in each
               dtype of dtypes (the inputs' own and float64 unless told)
    numeric    the gradients against centered finite differences in float64, the lecture's
               numeric gradient: every coordinate of an input with at most FULL entries, SAMPLES
               seeded random ones of a larger input (or `samples` of every input)
    gradcheck  torch.autograd.gradcheck on float64 copies, when every coordinate is differenced
               (it costs O(inputs) evaluations, and its fast mode passed a gradient 1% off at
               5,000 entries: its tolerance grows with the input)

Every output entry is weighted by a random upstream gradient v, uniform in [0.5, 1.5) and seeded,
so the gradients compared are those of sum(v * fn(*inputs)): a backward that ignores its incoming
gradient or reduces with the wrong scale fails even for a scalar output. Relative error is the
lecture's |a - b| / max(|a|, |b|) per coordinate (0 where both are 0), its denominator floored at
a fraction of the reference's largest entry (all of it for autograd, 1% for finite differences,
whose rounding is eps |L| / h): an entry that cancels to ~0 is judged against the gradient's scale.

Kinks (relu or abs at 0, a hinge's margin at 0): a coordinate whose one-sided differences
(f(x) - f(x - h)) / h and (f(x + h) - f(x)) / h disagree by more than KINK of their size, and whose
analytic gradient lies between them (a valid subgradient), is counted as a kink and left out of the
comparison, never failed; an analytic gradient outside that interval is compared and fails. A
caller that knows its kinks passes kinks=callable(inputs, h) -> one bool mask per checked input
instead. At a kink the numeric check found, fn and the reference may each pass a different
subgradient (relu's 0, torch.maximum(x, 0)'s 1/2 at 0): the autograd rows leave such a coordinate
out, and count it, when both lie between the one-sided differences. gradcheck, which has no notion
of kinks, is skipped when the numeric check found any. The Report, its Rows and their table are
verify/table.py's.
"""
import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from .table import Report, Row, format_table

__all__ = ["check_function", "Report", "Row", "rel_error", "numeric_gradient", "format_table"]

METHODS = ("autograd", "numeric", "gradcheck")
H = 1e-6          # finite-difference step (torch.autograd.gradcheck's default)
TOL = {("autograd", torch.float64): 1e-10, ("autograd", torch.float32): 1e-5,
       ("autograd", torch.float16): 1e-2, ("autograd", torch.bfloat16): 5e-2, ("numeric", torch.float64): 1e-6}
FLOOR = {"autograd": 1.0, "numeric": 1e-2}   # denominator floor, as a fraction of max |reference|
KINK = 1e-3       # one-sided differences this far apart (relative) mark a kink
FULL = 1000       # inputs with at most this many entries are differenced in full ...
SAMPLES = 100     # ... larger ones on this many seeded random coordinates


def rel_error(a, b, floor=0.0):
    """|a - b| / max(|a|, |b|, floor) per coordinate; 0 where the denominator is 0."""
    den = torch.maximum(a.abs(), b.abs()).clamp_min(floor)
    return torch.where(den > 0, (a - b).abs() / den, torch.zeros_like(den))


def numeric_gradient(f, x, h=H, coords=None, df=None, one_sided=False):
    """Centered differences (f(x + h e_i) - f(x - h e_i)) / 2h, the lecture's numeric gradient.

    f(x) -> a scalar, or any tensor with df (dL/df, its shape): then the gradient of sum(df * f),
    differenced entry by entry before the sum, as cs231n's eval_numerical_gradient_array, so
    entries that do not move cancel exactly. x is perturbed in place and restored. coords: flat
    indices to evaluate (the sampled check) or None for all. Returns x's shape, or (len(coords),);
    one_sided=True: (centered, left, right), left (f(x) - f(x - h e_i)) / h and right
    (f(x + h e_i) - f(x)) / h, which disagree at a kink.
    """
    flat = x.detach().view(-1)
    idx = range(flat.numel()) if coords is None else [int(i) for i in coords]
    grads = torch.zeros(3, len(idx), dtype=torch.float64)          # centered, left, right
    with torch.no_grad():
        f0 = f(x).double() if one_sided else None
        for k, i in enumerate(idx):
            old = flat[i].item()
            flat[i] = old + h
            fp = f(x).double()
            flat[i] = old - h
            fm = f(x).double()
            flat[i] = old
            delta = fp - fm if df is None else ((fp - fm) * df).sum()
            grads[0, k] = float(delta) / (2 * h)
            if one_sided:
                left, right = (f0 - fm, fp - f0) if df is None else (((f0 - fm) * df).sum(), ((fp - f0) * df).sum())
                grads[1, k], grads[2, k] = float(left) / h, float(right) / h
    grads = grads.view(3, *x.shape) if coords is None else grads
    return tuple(grads) if one_sided else grads[0]


# --------------------------------------------------------------------------- the checks

def _tol(tol, method, dtype):
    """The relative-error bound of a check: tol itself, or tol's (method, dtype) or method entry, or TOL's."""
    if isinstance(tol, (int, float)):
        return float(tol)
    for table in (tol or {}, TOL):
        for key in ((method, dtype), method):
            if key in table:
                return float(table[key])
    return 1e-6


def _prepare(inputs, wrt, dtype, device):
    """Copies of the inputs: floating tensors in dtype (requiring grad where checked), on device."""
    def copy(i, t):
        if not isinstance(t, torch.Tensor):
            return t
        dev = t.device if device is None else device
        if not t.is_floating_point():
            return t.to(dev)
        return t.detach().to(dev, dtype, copy=True).requires_grad_(i in wrt)
    return [copy(i, t) for i, t in enumerate(inputs)]


def _outputs(out):
    """fn's result as a list of its floating-point tensors (integer outputs carry no gradient)."""
    outs = [out] if isinstance(out, torch.Tensor) else list(out) if isinstance(out, (tuple, list)) else None
    if outs is None or not all(isinstance(o, torch.Tensor) for o in outs):
        raise TypeError(f"the function must return a tensor or a tuple of tensors, not {type(out).__name__}")
    outs = [o for o in outs if o.is_floating_point()]
    if not outs:
        raise TypeError("the function returns no floating-point tensor: nothing to differentiate")
    return outs


def _cotangents(outs, seed):
    """A fixed random dL/dout in [0.5, 1.5) per output, so reduction="none" and (K,) outputs get a
    non-uniform gradient and a scalar one other than 1. Uniform, not normal: never equal to
    (normal) inputs of the same seed, where dW = v^T x would be symmetric and blind to a
    transposed dW."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(o.shape, generator=g, dtype=torch.float64) + 0.5).to(o.device, o.dtype) for o in outs]


def _grads(fn, xs, wrt, seed):
    """fn's outputs and the gradients of sum(v * outputs) w.r.t. xs[i] for i in wrt (zeros where
    an input is unused)."""
    outs = _outputs(fn(*xs))
    pairs = [(o, v) for o, v in zip(outs, _cotangents(outs, seed)) if o.requires_grad]
    grads = [None] * len(wrt)
    if pairs:
        grads = torch.autograd.grad([o for o, _ in pairs], [xs[i] for i in wrt], [v for _, v in pairs],
                                    allow_unused=True)
    return outs, [torch.zeros_like(xs[i]) if g is None else g for i, g in zip(wrt, grads)]


def _part(label, a, b, shape=None, coords=None):
    """One tensor's share of a compared vector: a and b flattened (float64, CPU), and where each
    entry sits in a tensor of `shape` (coords: its flat indices there; None: all, in order)."""
    a, b = (t.detach().double().reshape(-1).cpu() for t in (a, b))
    return label, a, b, tuple(shape if shape is not None else ()), coords


def _compare(groups, floor_frac):
    """Max |a - b|, max rel_error and a line naming the worst entry, over groups, each a list of
    _parts compared as one vector (a value, or a gradient over all inputs); the floor is
    floor_frac times the group's largest reference entry."""
    max_abs, max_rel, worst = 0.0, 0.0, None
    for parts in groups:
        a, b = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
        if not b.numel():
            continue
        rel = rel_error(a, b, floor_frac * float(b.abs().max()))
        max_abs = max(max_abs, float((a - b).abs().max()))
        k = int(rel.isnan().nonzero()[0]) if rel.isnan().any() else int(rel.argmax())
        if worst is not None and float(rel[k]) <= max_rel:
            continue
        max_rel, value, ref = float(rel[k]), float(a[k]), float(b[k])
        for label, pa, _, shape, coords in parts:          # the part holding entry k
            if k < pa.numel():
                i = k if coords is None else int(coords[k])
                at = [int(j) for j in torch.unravel_index(torch.tensor(i), shape)] if shape else [i]
                worst = f"worst: {label} at {at}: {value:.6g}, reference {ref:.6g}"
                break
            k -= pa.numel()
    return max_abs, max_rel, worst


def _interval(left, right, floor):
    """The one-sided differences as an interval [lo, hi], and the scale den = max(|lo|, |hi|, floor)."""
    lo, hi = torch.minimum(left, right), torch.maximum(left, right)
    return lo, hi, torch.maximum(lo.abs(), hi.abs()).clamp_min(floor)


def _between(a, lo, hi, den, tol):
    return (a >= lo - tol * den) & (a <= hi + tol * den)


def _flat(outs):
    """fn's outputs as one vector."""
    return torch.cat([o.reshape(-1) for o in outs])


@dataclass
class _Checks:
    """One check_function call's settings; each method is one check -> Row."""
    fn: object
    inputs: tuple
    wrt: tuple
    device: Optional[torch.device]
    seed: int
    tol: object
    eps: float
    samples: Optional[int]
    kinks: object
    name: str
    found: dict = field(default_factory=dict)    # input index -> its kinks: (coords, lo, hi, den)

    def where(self, dtype):
        return f"{str(dtype).removeprefix('torch.')}/{self.device or self.inputs[self.wrt[0]].device}"

    def row(self, method, dtype, groups, kinks=None, coords=None):
        max_abs, max_rel, worst = _compare(groups, FLOOR[method])
        passed = max_rel <= _tol(self.tol, method, dtype)       # a nan error compares False: fails
        return Row(self.name, method, self.where(dtype), max_abs, max_rel, passed, kinks, None if passed else worst,
                   coords)

    def guarded(self, method, dtype, check, *args):
        """check(*args) -> Row, or a FAIL row naming the error that a broken forward or backward
        (a gradient of the wrong shape, say) or gradcheck's mismatch raised."""
        try:
            return check(*args)
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0]
            return Row(self.name, method, self.where(dtype), math.nan, math.nan, False,
                       note=f"{type(e).__name__}: {first}")

    def autograd(self, reference, dtype):
        """fn against reference; where the numeric check found a kink, the two may give different
        gradients (two conventions for a subgradient) as long as both lie between the one-sided
        differences: such coordinates are counted as kinks and left out."""
        xs = _prepare(self.inputs, self.wrt, dtype, self.device)
        out, ga = _grads(self.fn, xs, self.wrt, self.seed)
        ref, gb = _grads(reference, xs, self.wrt, self.seed)
        if [o.shape for o in out] != [r.shape for r in ref]:
            raise ValueError(f"outputs of shapes {[tuple(o.shape) for o in out]}, the reference's "
                             f"{[tuple(r.shape) for r in ref]}")
        values = [_part(f"output {k}", o, r, o.shape) for k, (o, r) in enumerate(zip(out, ref))]
        grads, excused, tol = [], 0, max(_tol(self.tol, "autograd", dtype), _tol(self.tol, "numeric", torch.float64))
        for i, a, b in zip(self.wrt, ga, gb):
            label, a, b, shape, _ = _part(f"gradient of input {i}", a, b, a.shape)
            keep = torch.ones(a.numel(), dtype=torch.bool)
            if i in self.found:
                coords, lo, hi, den = self.found[i]
                drop = (_between(a[coords], lo, hi, den, tol) & _between(b[coords], lo, hi, den, tol)
                        & ((a[coords] - b[coords]).abs() > tol * den))
                keep[coords[drop]] = False
                excused += int(drop.sum())
            grads.append((label, a[keep], b[keep], shape, torch.arange(a.numel())[keep]))
        return self.row("autograd", dtype, [values, grads], excused or None)

    def numeric(self):
        """Also keeps, in self.found, each input's kink coordinates and their one-sided intervals."""
        fn, wrt, f64 = self.fn, self.wrt, torch.float64
        xs = _prepare(self.inputs, wrt, f64, self.device)
        outs, grads = _grads(fn, xs, wrt, self.seed)
        v = _flat(_cotangents(outs, self.seed))
        masks = self.kinks(xs, self.eps) if callable(self.kinks) else [None] * len(wrt)
        tol = _tol(self.tol, "numeric", f64)
        gen = torch.Generator().manual_seed(self.seed)
        parts, n_kinks = [], 0
        for i, g, mask in zip(wrt, grads, masks):
            def f(t, i=i):                     # fn's outputs as one vector, input i replaced by t
                return _flat(_outputs(fn(*xs[:i], t, *xs[i + 1:])))
            n = g.numel()
            full = self.samples is None and n <= FULL
            coords = torch.arange(n) if full else torch.randperm(n, generator=gen)[:self.samples or SAMPLES]
            a = g.detach().double().reshape(-1).cpu()[coords]
            kink = torch.zeros(len(coords), dtype=torch.bool)
            if self.kinks is False:
                num = numeric_gradient(f, xs[i], self.eps, coords, df=v)
            else:
                num, left, right = numeric_gradient(f, xs[i], self.eps, coords, df=v, one_sided=True)
                lo, hi, den = _interval(left, right, FLOOR["numeric"] * float(num.abs().max()) if n else 0.0)
                apart = (hi - lo > KINK * den) if mask is None else mask.reshape(-1).cpu()[coords]
                kink = apart & _between(a, lo, hi, den, tol)      # a subgradient: counted, not compared
                self.found[i] = coords[kink], lo[kink], hi[kink], den[kink]
                n_kinks += int(kink.sum())
            parts.append(_part(f"gradient of input {i}", a[~kink], num[~kink], g.shape, coords[~kink]))
        return self.row("numeric", f64, [parts], None if self.kinks is False else n_kinks,
                        sum(len(p[4]) for p in parts) + n_kinks)

    def gradcheck(self):
        xs = _prepare(self.inputs, self.wrt, torch.float64, self.device)
        torch.autograd.gradcheck(lambda *a: tuple(_outputs(self.fn(*a))), xs, eps=self.eps)   # raises on a mismatch
        return Row(self.name, "gradcheck", self.where(torch.float64), math.nan, math.nan, True)

    def sampled(self):
        return self.samples is not None or any(self.inputs[i].numel() > FULL for i in self.wrt)


def _checked_inputs(inputs, wrt):
    tensors = [i for i, t in enumerate(inputs) if isinstance(t, torch.Tensor)]
    if wrt is None:
        wrt = tuple(i for i in tensors if inputs[i].requires_grad)
        if not wrt:
            raise ValueError("no input requires grad: call .requires_grad_() on the tensors to check, or pass wrt")
    bad = [i for i in wrt if i not in tensors or not inputs[i].is_floating_point()]
    if bad:
        raise ValueError(f"wrt names input {bad[0]}, which is not a floating-point tensor")
    return tuple(wrt)


def _name(fn):
    owner = getattr(fn, "__self__", None)                    # MyFunction.apply
    if isinstance(owner, type):
        return f"{owner.__name__}.{fn.__name__}"
    return getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", type(fn).__name__)


def check_function(fn, *inputs, reference=None, wrt=None, checks=METHODS, dtypes=None, tol=None, eps=H,
                   samples=None, seed=0, device=None, kinks=True, name=None):
    """Check fn's gradients three ways -> Report (.ok a bool, .rows one Row per check, str() the
    table `python -m lintorch.gradcheck` prints).

    fn(*inputs) -> a tensor of any shape or a tuple of tensors; inputs are passed positionally
    as given (wrap keyword arguments with functools.partial or a lambda). Shapes are fn's own:
    nothing is assumed about them. The inputs are copied, never modified.

    reference   an independent implementation, reference(*inputs) -> fn's outputs, differentiated
                by torch autograd: its values and gradients are compared with fn's (the autograd
                rows). None: no autograd rows.
    wrt         indices of the inputs to check (default: the tensors that require grad); every
                other input is a constant
    checks      a subset of ("autograd", "numeric", "gradcheck"), or one of them
    dtypes      the dtypes of the autograd rows (default: the first checked input's and float64);
                the numeric check and gradcheck always run in float64
    tol         the largest relative error that passes: a number for every check, or a dict by
                method or (method, dtype) over TOL (autograd float64 1e-10, float32 1e-5, float16
                1e-2, bfloat16 5e-2; numeric 1e-6)
    eps         the finite-difference step h (numeric, kinks and gradcheck)
    samples     coordinates differenced per input: None for all of an input with at most FULL
                (1,000) entries and SAMPLES (100) of a larger one; an int for that many of every input
    seed        seeds the upstream gradient v and the sampled coordinates
    device      where the copies run (default: where each input is)
    kinks       True: find kinks from the one-sided differences; False: none, compare every
                coordinate; or kinks(inputs, h) -> one bool mask per checked input, the
                coordinates that may sit on a kink
    name        the rows' function name (default: fn's)

    Example, lintorch's softmax loss against torch's cross-entropy (your Function's .apply goes
    where lintorch.softmax_loss is):

        >>> import torch, torch.nn.functional as F, lintorch
        >>> scores = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)   # (N, C), checked
        >>> labels = torch.randint(0, 5, (8,))                                     # (N,), a constant
        >>> report = lintorch.check_function(lintorch.softmax_loss, scores, labels, reference=F.cross_entropy)
        >>> report.ok, [row.method for row in report.rows]
        (True, ['autograd', 'numeric', 'gradcheck'])
    """
    wrt = _checked_inputs(inputs, wrt)
    checks = (checks,) if isinstance(checks, str) else tuple(checks)
    unknown = set(checks) - set(METHODS)
    if unknown:
        raise ValueError(f"checks: unknown {sorted(unknown)}; choose from {METHODS}")
    c = _Checks(fn, inputs, wrt, None if device is None else torch.device(device), seed, tol, eps, samples, kinks,
                name or _name(fn))
    numeric = [c.guarded("numeric", torch.float64, c.numeric)] if "numeric" in checks else []
    rows = []                                                # the autograd rows first, told the kinks found
    if "autograd" in checks and reference is not None:
        for dtype in dtypes or dict.fromkeys((inputs[wrt[0]].dtype, torch.float64)):
            rows.append(c.guarded("autograd", dtype, c.autograd, reference, dtype))
    rows += numeric
    if "gradcheck" in checks and not c.sampled() and not (numeric and numeric[0].kinks):
        rows.append(c.guarded("gradcheck", torch.float64, c.gradcheck))
    if not rows:
        why = "autograd needs a reference" if reference is None else "gradcheck needs every coordinate differenced"
        raise ValueError(f"nothing to check: checks={checks}; {why}")
    return Report(rows)
