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
               numeric gradient (verify/numeric.py), each allowed the rounding its difference
               carries (eps_machine |f| / h): every coordinate when the Jacobian is small (at most
               FULL checked entries and FULL_JACOBIAN inputs x outputs), else SAMPLES seeded random
               ones per input (or `samples` of every input)
    gradcheck  torch.autograd.gradcheck on float64 copies: in full when every coordinate is
               differenced, else in its fast mode (one random projection; cheap at any size, but
               it passed a gradient 1% off at 5,000 entries: the sampled numeric row is the check)

Every output entry is weighted by a random upstream gradient v, uniform in [0.5, 1.5) and seeded,
so the gradients compared are those of sum(v * fn(*inputs)): a backward that ignores its incoming
gradient or reduces with the wrong scale fails even for a scalar output. Relative error is the
lecture's |a - b| / max(|a|, |b|) per coordinate (0 where both are 0; NaN, so a FAIL, where either
is not finite), its denominator floored at a fraction of the reference's largest entry (all of it
for autograd, 1% for finite differences): an entry that cancels to ~0 is judged against the
gradient's scale. A function whose value changes between two calls with the same inputs fails.

Kinks (relu or abs at 0, a hinge's margin at 0) are found by verify/numeric.py: one-sided
differences that stay apart as h shrinks; there fn's gradient is counted and left out, never failed,
if it lies between them (a subgradient), else compared. kinks=callable(inputs, h) -> one bool mask
per checked input limits where they may be found. At such a kink fn and the reference may each pass
another subgradient (relu's 0, torch.maximum(x, 0)'s 1/2): the autograd rows leave it out, counted,
when both lie between the slopes. gradcheck and the second-order check, which have no notion of
kinks, are skipped when the numeric check found any. The opt-in properties (second order, forward
mode, vmap, torch.compile, devices) are verify/properties.py's; the table is verify/table.py's.
"""
import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..training.devices import full_precision
from . import properties
from .arguments import METHODS, PROPERTIES, check_arguments, check_device, checked_inputs
from .compare import (compare, cotangents, finite_max, flat, float_outputs, outputs_and_grads, part, prepared,
                      rel_error)
from .numeric import Differences, differences, numeric_gradient, refine
from .table import Report, Row, format_table

__all__ = ["check_function", "Report", "Row", "rel_error", "numeric_gradient", "format_table"]

H = 1e-6          # finite-difference step (torch.autograd.gradcheck's default)
TOL = {("autograd", torch.float64): 1e-10, ("autograd", torch.float32): 1e-5,
       ("autograd", torch.float16): 1e-2, ("autograd", torch.bfloat16): 5e-2, ("numeric", torch.float64): 1e-6}
FLOOR = {"autograd": 1.0, "numeric": 1e-2}   # denominator floor, as a fraction of max |reference|
KINK = 1e-3       # one-sided differences this far apart (relative) are differenced again at h / 10
FULL = 1000       # inputs with at most this many entries are differenced in full ...
FULL_JACOBIAN = 10 ** 6   # ... when the Jacobian (inputs x outputs) has at most this many entries;
SAMPLES = 100     # otherwise this many seeded random coordinates, and gradcheck's fast mode


def _tol(tol, method, dtype):
    """The relative-error bound of a check: tol itself, or tol's (method, dtype) or method entry, or TOL's."""
    if isinstance(tol, (int, float)):
        return float(tol)
    for table in (tol or {}, TOL):
        for key in ((method, dtype), method):
            if key in table:
                return float(table[key])
    return 1e-6


def _interval(left, right, floor):
    """The one-sided differences as an interval [lo, hi], and the scale den = max(|lo|, |hi|, floor)."""
    lo, hi = torch.minimum(left, right), torch.maximum(left, right)
    return lo, hi, torch.maximum(lo.abs(), hi.abs()).clamp_min(floor)


def _between(a, lo, hi, den, tol):
    return (a >= lo - tol * den) & (a <= hi + tol * den)


def _same(a, b):
    """Equal values, NaN equal to NaN: a deterministic function's two calls."""
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def _subset(d, at):
    return Differences(d.h, d.centered[at], d.left[at], d.right[at], d.noise[at])


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
    size: Optional[tuple] = None                 # (entries checked, output entries), once known

    def where(self, dtype):
        return f"{str(dtype).removeprefix('torch.')}/{self.device or self.inputs[self.wrt[0]].device}"

    def row(self, method, dtype, groups, kinks=None, coords=None):
        max_abs, max_rel, worst = compare(groups, FLOOR[method])
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

    def jacobian(self):
        """(entries of the checked inputs, entries of fn's floating outputs): the Jacobian's shape,
        which decides what the checks can afford (one call of fn, the first time)."""
        if self.size is None:
            with torch.no_grad():
                outs = float_outputs(self.fn(*prepared(self.inputs, (), torch.float64, self.device)))
            self.size = sum(self.inputs[i].numel() for i in self.wrt), sum(o.numel() for o in outs)
        return self.size

    def full(self):
        """Every coordinate differenced and torch's full gradcheck: no samples asked for, at most
        FULL input entries and a Jacobian of at most FULL_JACOBIAN entries (inputs x outputs);
        otherwise SAMPLES coordinates per input and gradcheck's fast mode."""
        if self.samples is not None:
            return False
        n_in, n_out = self.jacobian()
        return n_in <= FULL and n_in * n_out <= FULL_JACOBIAN

    def autograd(self, reference, dtype):
        """fn against reference; where the numeric check found a kink, the two may give different
        gradients (two conventions for a subgradient) as long as both lie between the one-sided
        differences: such coordinates are counted as kinks and left out."""
        xs = prepared(self.inputs, self.wrt, dtype, self.device)
        out, ga = outputs_and_grads(self.fn, xs, self.wrt, self.seed)
        ref, gb = outputs_and_grads(reference, xs, self.wrt, self.seed)
        if [o.shape for o in out] != [r.shape for r in ref]:
            raise ValueError(f"outputs of shapes {[tuple(o.shape) for o in out]}, the reference's "
                             f"{[tuple(r.shape) for r in ref]}")
        values = [part(f"output {k}", o, r, o.shape) for k, (o, r) in enumerate(zip(out, ref))]
        grads, excused, tol = [], 0, max(_tol(self.tol, "autograd", dtype), _tol(self.tol, "numeric", torch.float64))
        for i, a, b in zip(self.wrt, ga, gb):
            label, a, b, shape, _, _ = part(f"gradient of input {i}", a, b, a.shape)
            keep = torch.ones(a.numel(), dtype=torch.bool)
            if i in self.found:
                coords, lo, hi, den = self.found[i]
                drop = (_between(a[coords], lo, hi, den, tol) & _between(b[coords], lo, hi, den, tol)
                        & ((a[coords] - b[coords]).abs() > tol * den))
                keep[coords[drop]] = False
                excused += int(drop.sum())
            grads.append(part(label, a[keep], b[keep], shape, torch.arange(a.numel())[keep]))
        return self.row("autograd", dtype, [values, grads], excused or None)

    def numeric(self):
        """fn's gradients against finite differences (verify/numeric.py), each allowed the rounding
        its difference carries. A coordinate whose one-sided differences disagree is differenced
        again at h / 10: a kink (counted, left out, and kept in self.found for the autograd rows)
        only where they stay apart and fn's gradient lies between them."""
        fn, wrt, f64 = self.fn, self.wrt, torch.float64
        xs = prepared(self.inputs, wrt, f64, self.device)
        outs, grads = outputs_and_grads(fn, xs, wrt, self.seed)
        v = flat(cotangents(outs, self.seed))
        with torch.no_grad():
            f0, again = (flat(float_outputs(fn(*xs))) for _ in range(2))
        if not _same(f0, again):
            raise ValueError(f"fn's value changes between two calls with the same inputs (by up to "
                             f"{float((f0 - again).abs().nan_to_num(math.inf).max()):.3g}): a random or stateful "
                             f"function has no gradient to check; fix its seed or state")
        masks = self.kinks(xs, self.eps) if callable(self.kinks) else [None] * len(wrt)
        tol = _tol(self.tol, "numeric", f64)
        gen = torch.Generator().manual_seed(self.seed)
        full = self.full()
        parts, n_kinks = [], 0
        for i, g, mask in zip(wrt, grads, masks):
            def f(t, i=i):                     # fn's outputs as one vector, input i replaced by t
                return flat(float_outputs(fn(*xs[:i], t, *xs[i + 1:])))
            n = g.numel()
            coords = torch.arange(n) if full else torch.randperm(n, generator=gen)[:self.samples or SAMPLES]
            a = g.detach().double().reshape(-1).cpu()[coords]
            d = differences(f, xs[i], self.eps, coords, df=v, f0=f0)
            num, noise = d.centered.clone(), d.noise.clone()
            kink = torch.zeros(len(coords), dtype=torch.bool)
            if self.kinks is not False:
                den = torch.maximum(a.abs(), num.abs()).clamp_min(FLOOR["numeric"] * finite_max(num))
                apart = d.gap > KINK * den + 4 * d.noise                 # the one-sided slopes disagree
                if mask is not None:
                    apart &= mask.reshape(-1).cpu()[coords]
                if apart.any():
                    at = apart.nonzero().squeeze(1)
                    num[at], noise[at], fine_kink, fine = refine(f, xs[i], _subset(d, at), coords[at], v, f0)
                    lo, hi, den = _interval(fine.left, fine.right, FLOOR["numeric"] * finite_max(num))
                    fine_kink &= _between(a[at], lo, hi, den, tol)       # a subgradient: counted, not compared
                    kink[at] = fine_kink
                    self.found[i] = coords[at][fine_kink], lo[fine_kink], hi[fine_kink], den[fine_kink]
                n_kinks += int(kink.sum())
            parts.append(part(f"gradient of input {i}", a[~kink], num[~kink], g.shape, coords[~kink], noise[~kink]))
        return self.row("numeric", f64, [parts], None if self.kinks is False else n_kinks,
                        sum(len(p[4]) for p in parts) + n_kinks)

    def gradcheck(self):
        """torch.autograd.gradcheck in float64: in full, or in its fast mode (one random
        projection of the Jacobian) when the Jacobian is too large to build (see full)."""
        xs = prepared(self.inputs, self.wrt, torch.float64, self.device)
        fast = not self.full()
        torch.autograd.gradcheck(lambda *a: tuple(float_outputs(self.fn(*a))), xs, eps=self.eps,   # raises on a mismatch
                                 fast_mode=fast)
        return Row(self.name, "gradcheck", self.where(torch.float64), math.nan, math.nan, True,
                   note="fast mode" if fast else None)


def _name(fn):
    owner = getattr(fn, "__self__", None)                    # MyFunction.apply
    if isinstance(owner, type):
        return f"{owner.__name__}.{fn.__name__}"
    return getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", type(fn).__name__)


@full_precision()   # TF32 GEMMs (10-bit mantissa) would miss float32's tolerances by 100x
def check_function(fn, *inputs, reference=None, wrt=None, checks=METHODS, dtypes=None, tol=None, eps=H,
                   samples=None, seed=0, device=None, kinks=True, name=None, backend="inductor"):
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
    checks      a subset of ("autograd", "numeric", "gradcheck") and the opt-in properties
                ("second", "forward", "batched", "compiled", "devices": verify/properties.py), or one
    dtypes      the dtypes of the autograd rows (default: the first checked input's and float64);
                the numeric check and gradcheck always run in float64
    tol         the largest relative error that passes: a number >= 0 for every check, or a dict by
                method or (method, dtype) over TOL (autograd float64 1e-10, float32 1e-5, float16
                1e-2, bfloat16 5e-2; numeric 1e-6); the numeric check allows on top the rounding
                its differences carry (about eps_machine |f| / h)
    eps         the finite-difference step h > 0 (numeric, kinks and gradcheck)
    samples     coordinates differenced per input: None for all when the Jacobian is small (at
                most FULL (1,000) checked entries and FULL_JACOBIAN (10^6) inputs x outputs),
                else SAMPLES (100); an int >= 1 for that many of every input. A sampled check
                runs gradcheck in its fast mode (one random projection of the Jacobian).
    seed        seeds the upstream gradient v and the sampled coordinates
    device      where the copies run (default: where each input is); "cuda" needs CUDA
    kinks       True: find kinks (one-sided differences that stay apart as h shrinks); False:
                none, compare every coordinate; or kinks(inputs, h) -> one bool mask per checked
                input, the only coordinates where a kink may be found
    name        the rows' function name (default: fn's)
    backend     the torch.compile backend of the "compiled" check

    Every argument is checked first: a TypeError or ValueError names the one that is wrong. A
    NaN or inf in fn's value or gradients fails; so does a value that changes between two calls.

    Example, lintorch's softmax loss against torch's cross-entropy (your Function's .apply goes
    where lintorch.softmax_loss is):

        >>> import torch, torch.nn.functional as F, lintorch
        >>> scores = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)   # (N, C), checked
        >>> labels = torch.randint(0, 5, (8,))                                     # (N,), a constant
        >>> report = lintorch.check_function(lintorch.softmax_loss, scores, labels, reference=F.cross_entropy)
        >>> report.ok, [row.method for row in report.rows]
        (True, ['autograd', 'numeric', 'gradcheck'])
    """
    checks = check_arguments(fn, reference, checks, eps, tol, samples, seed, dtypes, kinks, name, backend)
    device = check_device(device)
    wrt = checked_inputs(inputs, wrt)
    c = _Checks(fn, inputs, wrt, device, seed, tol, float(eps), samples, kinks, name or _name(fn))
    numeric = [c.guarded("numeric", torch.float64, c.numeric)] if "numeric" in checks else []
    rows = []                                                # the autograd rows first, told the kinks found
    if "autograd" in checks and reference is not None:
        for dtype in dtypes or dict.fromkeys((inputs[wrt[0]].dtype, torch.float64)):
            rows.append(c.guarded("autograd", dtype, c.autograd, reference, dtype))
    rows += numeric
    kinked = bool(numeric and numeric[0].kinks)              # no gradcheck, no second order, at a kink
    if "gradcheck" in checks and not kinked:
        rows.append(c.guarded("gradcheck", torch.float64, c.gradcheck))
    for prop in (p for p in PROPERTIES if p in checks and not (p == "second" and kinked)):
        check = (lambda c: properties.compiled(c, backend)) if prop == "compiled" else getattr(properties, prop)
        rows.append(c.guarded(prop, torch.float64, check, c))
    if not rows:
        why = "autograd needs a reference" if reference is None else "gradcheck is left out where kinks were found"
        raise ValueError(f"nothing to check: checks={checks}; {why}")
    return Report(rows)
