"""check_function beyond first order: the properties a core PyTorch op has (OpInfo's checks,
torch.library.opcheck, JAX's check_grads(order=2, modes=("fwd", "rev"))), each opt-in by name in
check_function(checks=...) and reported as a row of the same table:

    second     gradgradcheck: the backward's own gradient against finite differences (float64),
               for a smooth function (left out where the numeric check found a kink)
    forward    forward mode against reverse mode: v^T (J u) by forward AD (the Function's jvp)
               equals (J^T v)^T u by backward, for PROJECTIONS seeded random pairs (u, v)
    batched    torch.func.vmap over BATCH stacked copies of the checked inputs equals a loop, in
               value and in gradient (a vmap'd sweep), and so do BATCH incoming gradients at one
               input (gradcheck's check_batched_grad: a backward that writes them into its own
               unbatched tensors fails)
    compiled   torch.compile(fn, fullgraph=True) equals eager, in value and gradient: no graph break
               (a host sync, a .item(), a custom jvp Dynamo cannot trace) and the same numbers
    devices    the same on CUDA as on the CPU (float64), in value and gradient; "not run" without CUDA

Each check takes checker._Checks (the call's settings) and returns a Row; its errors become FAIL
rows through _Checks.guarded.
"""
import math

import torch

from .compare import compare, flat, float_outputs, outputs_and_grads, part, prepared
from .table import Row

__all__ = ["PROPERTIES", "PROJECTIONS", "BATCH", "second", "forward", "batched", "compiled", "devices"]

PROPERTIES = ("second", "forward", "batched", "compiled", "devices")
PROJECTIONS = 3   # random (u, v) pairs for the forward-mode check
BATCH = 3         # stacked copies for the batched check
TOL = {"second": None, "forward": 1e-10, "batched": 1e-10, "compiled": {torch.float64: 1e-10, torch.float32: 1e-5},
       "devices": 1e-10}


def _row(c, method, dtype, a, b, note=None):
    """a against b (lists of tensors, compared as one vector) -> Row, rel error as the checker's."""
    parts = [part(f"output/gradient {k}", x, y, x.shape) for k, (x, y) in enumerate(zip(a, b))]
    max_abs, max_rel, worst = compare([parts], 1.0)
    tol = TOL[method][dtype] if isinstance(TOL[method], dict) else TOL[method]
    tol = c.tol if isinstance(c.tol, (int, float)) else (c.tol or {}).get(method, tol)
    passed = max_rel <= tol
    return Row(c.name, method, c.where(dtype), max_abs, max_rel, passed, None, note if passed else worst)


def _values_and_grads(fn, xs, wrt, seed):
    outs, grads = outputs_and_grads(fn, xs, wrt, seed)
    return [o.detach() for o in outs] + [g.detach() for g in grads]


def second(c):
    xs = prepared(c.inputs, c.wrt, torch.float64, c.device)
    torch.autograd.gradgradcheck(lambda *a: tuple(float_outputs(c.fn(*a))), xs, eps=c.eps, fast_mode=not c.full())
    return Row(c.name, "second", c.where(torch.float64), math.nan, math.nan, True,
               note=None if c.full() else "fast mode")


def forward(c):
    """v^T J u two ways, for PROJECTIONS seeded (u, v): forward AD of fn along u, and backward of
    sum(v * fn) dotted with u."""
    import torch.autograd.forward_ad as fwAD
    gen = torch.Generator().manual_seed(c.seed)
    fwd, rev = [], []
    for _ in range(PROJECTIONS):
        xs = prepared(c.inputs, c.wrt, torch.float64, c.device)
        us = {i: torch.randn(xs[i].shape, generator=gen, dtype=torch.float64).to(xs[i].device) for i in c.wrt}
        with fwAD.dual_level():
            duals = [fwAD.make_dual(x.detach(), us[i]) if i in us else x for i, x in enumerate(xs)]
            outs = float_outputs(c.fn(*duals))
            tangents = [fwAD.unpack_dual(o).tangent for o in outs]
        if any(t is None for t in tangents):
            raise RuntimeError("an output has no forward-mode tangent (no jvp for it)")
        outs = float_outputs(c.fn(*xs))
        v = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device) for o in outs]
        grads = torch.autograd.grad(outs, [xs[i] for i in c.wrt], [vk.clone() for vk in v], allow_unused=True)
        fwd.append(sum((vk * tk).sum() for vk, tk in zip(v, tangents)).reshape(1))
        rev.append(sum((g * us[i]).sum() for i, g in zip(c.wrt, grads) if g is not None).reshape(1)
                   if any(g is not None for g in grads) else torch.zeros(1, dtype=torch.float64))
    return _row(c, "forward", torch.float64, [flat(fwd)], [flat(rev)])


def batched(c):
    """vmap over BATCH perturbed copies of the checked inputs (the others shared) against a loop:
    the outputs, and the gradients of sum(v * fn) for one v per copy."""
    gen = torch.Generator().manual_seed(c.seed)
    xs = prepared(c.inputs, (), torch.float64, c.device)
    stacks = {i: torch.stack([xs[i] + 0.1 * b * torch.randn(xs[i].shape, generator=gen, dtype=torch.float64)
                              .to(xs[i].device) for b in range(BATCH)]) for i in c.wrt}
    in_dims = tuple(0 if i in stacks else None for i in range(len(xs)))
    args = [stacks.get(i, x) for i, x in enumerate(xs)]

    def values(*a):
        return tuple(float_outputs(c.fn(*a)))

    def loss(v, *a):                              # sum(v * fn(*a)) for one copy
        return sum((vk * o).sum() for vk, o in zip(v, float_outputs(c.fn(*a))))

    batched_out = torch.func.vmap(values, in_dims)(*args)
    looped = [torch.stack(t) for t in zip(*[values(*[stacks[i][b] if i in stacks else x for i, x in enumerate(xs)])
                                              for b in range(BATCH)])]
    vs = [torch.rand(o.shape, generator=gen, dtype=torch.float64).to(o.device) + 0.5 for o in batched_out]
    argnums = tuple(1 + i for i in c.wrt)
    batched_grads = torch.func.vmap(torch.func.grad(loss, argnums), (0,) + in_dims)(vs, *args)
    looped_grads = []
    for b in range(BATCH):
        copy = [stacks[i][b].clone().requires_grad_() if i in stacks else x for i, x in enumerate(xs)]
        value = loss([v[b] for v in vs], *copy)
        looped_grads.append(torch.autograd.grad(value, [copy[i] for i in c.wrt], allow_unused=True))
    looped_grads = [torch.stack([g[k] for g in looped_grads]) for k in range(len(c.wrt))]
    # gradcheck's check_batched_grad: one input, BATCH incoming gradients (only they are batched)
    x0 = [stacks[i][0].clone().requires_grad_() if i in stacks else x for i, x in enumerate(xs)]
    outs = float_outputs(c.fn(*x0))
    one_input = torch.autograd.grad(outs, [x0[i] for i in c.wrt], [v.clone() for v in vs], is_grads_batched=True,
                                    retain_graph=True, allow_unused=True)
    per_grad = [torch.autograd.grad(outs, [x0[i] for i in c.wrt], [v[b].clone() for v in vs], retain_graph=True,
                                    allow_unused=True) for b in range(BATCH)]
    per_grad = [torch.stack([g[k] for g in per_grad]) for k in range(len(c.wrt))]
    return _row(c, "batched", torch.float64, list(batched_out) + list(batched_grads) + list(one_input),
                looped + looped_grads + per_grad)


def compiled(c, backend="inductor"):
    """torch.compile(fn, fullgraph=True) against eager in the first checked input's dtype."""
    dtype = c.inputs[c.wrt[0]].dtype
    torch._dynamo.reset()
    fn = torch.compile(c.fn, fullgraph=True, backend=backend)
    a = _values_and_grads(fn, prepared(c.inputs, c.wrt, dtype, c.device), c.wrt, c.seed)
    b = _values_and_grads(c.fn, prepared(c.inputs, c.wrt, dtype, c.device), c.wrt, c.seed)
    return _row(c, "compiled", dtype, a, b, note=f"backend {backend}")


def devices(c):
    """CUDA against the CPU, float64, values and gradients; a row marked "not run" without CUDA."""
    if not torch.cuda.is_available():
        return Row(c.name, "devices", "float64/cuda", math.nan, math.nan, True, note="not run: no CUDA here")
    a = _values_and_grads(c.fn, prepared(c.inputs, c.wrt, torch.float64, torch.device("cuda")), c.wrt, c.seed)
    b = _values_and_grads(c.fn, prepared(c.inputs, c.wrt, torch.float64, torch.device("cpu")), c.wrt, c.seed)
    return _row(c, "devices", torch.float64, [t.cpu() for t in a], b)
