"""Finite differences that know their own error: the lecture's centered numeric gradient, the
rounding it carries, and the test that tells a kink from a steep or noisy function.

    f(x) -> a tensor; with df (dL/df, f's shape) the function differenced is sum(df * f(x)),
    entry by entry before the sum, so output entries that do not move cancel exactly.

Rounding: a difference f(x + h) - f(x - h) of two values computed to about eps |f| each is off by
up to ROUNDING * eps (|f(x + h)| + |f(x - h)|), so the centered difference carries
ROUNDING * eps (|f+| + |f-|) / 2h of noise (eps the float64 machine epsilon), summed over the
output entries that moved, plus the largest entry's (one whose change was lost to rounding). The checker adds it to its tolerance: the correct gradient of a
large sum passes at any size.

Kinks (relu at 0, a hinge's margin at 0): the one-sided differences (f(x) - f(x - h)) / h and
(f(x + h) - f(x)) / h of a smooth function differ by about h f''(x), so they converge together
as h shrinks; at a kink they converge to two different slopes; for a function whose value is
noise they drift apart like 1 / h. A coordinate whose one-sided differences disagree at h is
differenced again at h / 10 (refine):

    gap(h/10) / gap(h) in [1/3, 3]   a kink: the two slopes stay apart
    below 1/3                        smooth at this scale: compared at h / 10, Richardson-extrapolated
                                     when the gap shrank like h (ratio about 1/10)
    above 3                          noise, not a kink: compared (and fails)

so a kink is never declared on a smooth function however steep, nor by disagreement alone.
"""
from dataclasses import dataclass

import torch

__all__ = ["numeric_gradient", "Differences", "differences", "refine", "ROUNDING", "SHRINK"]

EPS = torch.finfo(torch.float64).eps
ROUNDING = 8.0     # a computed value is within ROUNDING * eps |f| of exact (sums, logs, exps of a few terms)
SHRINK = 10.0      # the second step is h / SHRINK
KINK_RATIO = 3.0   # a kink's gap changes by less than this factor between h and h / SHRINK


@dataclass
class Differences:
    """Finite differences at step h for each coordinate differenced: centered, left
    (f(x) - f(x - h)) / h, right (f(x + h) - f(x)) / h, and noise, the rounding the centered
    difference carries (the one-sided ones carry about twice it). All float64 (len(coords),)."""
    h: float
    centered: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    noise: torch.Tensor

    @property
    def gap(self):
        return (self.right - self.left).abs()


def differences(f, x, h, coords=None, df=None, f0=None):
    """Centered and one-sided differences of f at x along the flat coordinates coords (None: all)
    -> Differences. x is perturbed in place and restored; f0 = f(x), computed when not given."""
    flat = x.detach().view(-1)
    idx = range(flat.numel()) if coords is None else [int(i) for i in coords]
    out = torch.zeros(4, len(idx), dtype=torch.float64)            # centered, left, right, noise
    w = None if df is None else df.detach().double().abs()

    def total(t):                                                  # sum(df * t), or t for a scalar f
        return t.sum() if df is None else (t * df).sum()

    with torch.no_grad():
        f0 = (f(x) if f0 is None else f0).double()
        for k, i in enumerate(idx):
            old = flat[i].item()
            flat[i] = old + h
            fp = f(x).double()
            flat[i] = old - h
            fm = f(x).double()
            flat[i] = old
            size = fp.abs() + fm.abs()
            if w is not None:
                size = size * w
            # entries that moved carry rounding; of those that did not, one (the largest) may be a
            # dependent entry whose change was below its rounding (a scalar f: f itself)
            size = (size * (fp != fm)).sum() + size.max()
            out[0, k] = float(total(fp - fm)) / (2 * h)
            out[1, k] = float(total(f0 - fm)) / h
            out[2, k] = float(total(fp - f0)) / h
            out[3, k] = ROUNDING * EPS * float(size) / (2 * h)
    return Differences(h, *out)


def numeric_gradient(f, x, h=1e-6, coords=None, df=None, one_sided=False):
    """Centered differences (f(x + h e_i) - f(x - h e_i)) / 2h, the lecture's numeric gradient.

    f(x) -> a scalar, or any tensor with df (dL/df, its shape): then the gradient of sum(df * f).
    x is perturbed in place and restored. coords: flat indices to evaluate (the sampled check) or
    None for all. Returns x's shape, or (len(coords),); one_sided=True: (centered, left, right).
    """
    d = differences(f, x, h, coords, df)
    grads = torch.stack([d.centered, d.left, d.right])
    grads = grads.view(3, *x.shape) if coords is None else grads
    return tuple(grads) if one_sided else grads[0]


def refine(f, x, coarse, coords, df=None, f0=None):
    """Difference the coordinates coords (flat indices; coarse: their Differences at h) again at
    h / SHRINK -> (numeric gradient, noise, kink mask), each (len(coords),): a kink where the
    one-sided gap stays within a factor KINK_RATIO; otherwise the finer centered difference,
    Richardson-extrapolated where the gap shrank like h (a smooth function, whose centered
    difference is off by c h^2)."""
    fine = differences(f, x, coarse.h / SHRINK, coords, df, f0)
    ratio = fine.gap / coarse.gap.clamp_min(torch.finfo(torch.float64).tiny)
    significant = fine.gap > 4 * fine.noise                          # above the rounding at h / SHRINK
    kink = significant & (ratio >= 1 / KINK_RATIO) & (ratio <= KINK_RATIO)
    smooth = (ratio > 0.5 / SHRINK) & (ratio < 2 / SHRINK)          # gap ~ h: the c h^2 error is there too
    richardson = fine.centered + (fine.centered - coarse.centered) / (SHRINK ** 2 - 1)
    numeric = torch.where(smooth, richardson, fine.centered)
    return numeric, fine.noise, kink, fine
