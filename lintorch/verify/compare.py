"""What check_function compares and how: copies of the inputs, fn's floating outputs, the seeded
upstream gradient v, the gradients of sum(v * fn), and the relative error of one vector against
its reference (a NaN or inf anywhere is the worst error of all). Shared by verify/checker.py and
verify/properties.py.
"""
import math

import torch

__all__ = ["rel_error", "prepared", "float_outputs", "cotangents", "outputs_and_grads", "part", "finite_max",
           "compare", "flat"]


def rel_error(a, b, floor=0.0, allowance=0.0):
    """(|a - b| - allowance)+ / max(|a|, |b|, floor) per coordinate; 0 where that is 0 (0 / 0), and
    nan where a or b is not finite, so that a NaN or inf in a value or gradient always fails.
    allowance: the error the reference itself carries (finite differences' rounding), or 0."""
    den = torch.maximum(a.abs(), b.abs()).clamp_min(floor)
    excess = ((a - b).abs() - allowance).clamp_min(0.0)
    rel = torch.where(excess > 0, excess / den, torch.zeros_like(den))
    return torch.where(torch.isfinite(a) & torch.isfinite(b), rel, torch.full_like(rel, math.nan))


# --------------------------------------------------------------------------- the checks

def prepared(inputs, wrt, dtype, device):
    """Copies of the inputs: floating tensors in dtype (requiring grad where checked), on device."""
    def copy(i, t):
        if not isinstance(t, torch.Tensor):
            return t
        dev = t.device if device is None else device
        if not t.is_floating_point():
            return t.to(dev)
        return t.detach().to(dev, dtype, copy=True).requires_grad_(i in wrt)
    return [copy(i, t) for i, t in enumerate(inputs)]


def float_outputs(out):
    """fn's result as a list of its floating-point tensors (integer outputs carry no gradient)."""
    outs = [out] if isinstance(out, torch.Tensor) else list(out) if isinstance(out, (tuple, list)) else None
    if outs is None or not all(isinstance(o, torch.Tensor) for o in outs):
        raise TypeError(f"the function must return a tensor or a tuple of tensors, not {type(out).__name__}")
    outs = [o for o in outs if o.is_floating_point()]
    if not outs:
        raise TypeError("the function returns no floating-point tensor: nothing to differentiate")
    return outs


def cotangents(outs, seed):
    """A fixed random dL/dout in [0.5, 1.5) per output, so reduction="none" and (K,) outputs get a
    non-uniform gradient and a scalar one other than 1. Uniform, not normal: never equal to
    (normal) inputs of the same seed, where dW = v^T x would be symmetric and blind to a
    transposed dW."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(o.shape, generator=g, dtype=torch.float64) + 0.5).to(o.device, o.dtype) for o in outs]


def outputs_and_grads(fn, xs, wrt, seed):
    """fn's outputs and the gradients of sum(v * outputs) w.r.t. xs[i] for i in wrt (zeros where
    an input is unused)."""
    outs = float_outputs(fn(*xs))
    pairs = [(o, v) for o, v in zip(outs, cotangents(outs, seed)) if o.requires_grad]
    grads = [None] * len(wrt)
    if pairs:
        grads = torch.autograd.grad([o for o, _ in pairs], [xs[i] for i in wrt], [v for _, v in pairs],
                                    allow_unused=True)
    return outs, [torch.zeros_like(xs[i]) if g is None else g for i, g in zip(wrt, grads)]


def part(label, a, b, shape=None, coords=None, allowance=None):
    """One tensor's share of a compared vector: a and b flattened (float64, CPU), where each entry
    sits in a tensor of `shape` (coords: its flat indices there; None: all, in order), and the
    error b itself may carry per entry (allowance; None: none)."""
    a, b = (t.detach().double().reshape(-1).cpu() for t in (a, b))
    allowance = torch.zeros_like(b) if allowance is None else allowance.double().reshape(-1).cpu()
    return label, a, b, tuple(shape if shape is not None else ()), coords, allowance


def finite_max(t):
    t = t[torch.isfinite(t)]
    return float(t.abs().max()) if t.numel() else 0.0


def compare(groups, floor_frac):
    """Max |a - b|, max rel_error and a line naming the worst entry (a non-finite one first), over
    groups, each a list of parts compared as one vector (a value, or a gradient over all inputs);
    the floor is floor_frac times the group's largest finite reference entry."""
    max_abs, max_rel, worst = 0.0, 0.0, None
    for parts in groups:
        a, b, allowance = (torch.cat([p[k] for p in parts]) for k in (1, 2, 5))
        if not b.numel():
            continue
        rel = rel_error(a, b, floor_frac * finite_max(b), allowance)
        max_abs = max(max_abs, float((a - b).abs().nan_to_num(math.inf).max()))
        k = int(rel.isnan().nonzero()[0]) if rel.isnan().any() else int(rel.argmax())
        if worst is not None and not (float(rel[k]) > max_rel or math.isnan(float(rel[k])) > math.isnan(max_rel)):
            continue                                        # a NaN error is the worst of all
        max_rel, value, ref = float(rel[k]), float(a[k]), float(b[k])
        for label, pa, _, shape, coords, _ in parts:          # the part holding entry k
            if k < pa.numel():
                i = k if coords is None else int(coords[k])
                at = [int(j) for j in torch.unravel_index(torch.tensor(i), shape)] if shape else [i]
                worst = f"worst: {label} at {at}: {value:.6g}, reference {ref:.6g}"
                break
            k -= pa.numel()
    return max_abs, max_rel, worst


def flat(outs):
    """fn's outputs as one vector."""
    return torch.cat([o.reshape(-1) for o in outs])
