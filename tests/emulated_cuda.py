"""CUDA emulated on the CPU, for the tests: lintorch's CUDA code paths run on a machine without a GPU,
with real values and CUDA's device rules.

A tensor "on cuda" is a real CPU tensor of the subclass `CudaTensor`, whose `.device` says cuda:0. While
`emulated_cuda()` is active a TorchFunctionMode sees every torch call and
  * moves: `device="cuda"` in factories, `.to("cuda")`, `.cuda()` give CudaTensors; `.cpu()` plain tensors;
  * device rules: a non-scalar CPU tensor meeting a cuda one raises torch's own "Expected all tensors to be
    on the same device" error (0-dim CPU tensors, CPU index tensors in x[idx] and copy_ are allowed, as on
    CUDA); `.numpy()` of a cuda tensor raises torch's TypeError; a CPU generator given to a cuda factory
    raises; a custom autograd.Function whose backward returns a gradient on the wrong device raises;
  * host synchronisations a GPU would make are counted with the lintorch file:line that asked for them:
    item/bool/float/int/tolist/format, D2H copies (.cpu(), .to("cpu")), blocking H2D copies (non_blocking
    from pageable memory is noted, not counted: it is an ordinary copy, not a wait on the GPU's queue),
    torch.tensor(data, device="cuda"), nonzero, boolean-mask indexing, bincount/unique/masked_select,
    equal/allclose and linalg's error checks (cholesky, eigh, solve, inv);
  * ops that add with atomics on CUDA, so in an order (a float rounding) that changes from run to run
    (index_add_, scatter_add_, index_put_ with accumulate=True, ...), recorded in mode.atomics.
`torch.cuda.is_available()` and friends say one GPU while it is active (mem_get_info: an 80 GiB card, all free).

What it cannot see (say so wherever a result rests on it): CUDA kernels and their numerics (cuBLAS/cuDNN
algorithms, TF32 rounding, split-K, atomics' order: values are the CPU's), memory (no limit, no
fragmentation), streams and events (everything is in order), NCCL and several GPUs, the autograd engine's
device threads, and speed (a sync counted is a request, not a measured stall).

It leans on torch's private APIs (DisableTorchFunction, _disabled_torch_function_impl, BackwardCFunction);
written against torch 2.14.
"""
import collections
import contextlib
import os
import sys
import warnings

import torch
from torch.overrides import TorchFunctionMode, resolve_name

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
_REPO_PACKAGE = os.sep + "lintorch" + os.sep


class CudaTensor(torch.Tensor):
    """A CPU tensor that says it is on cuda:0."""
    __torch_function__ = torch._C._disabled_torch_function_impl

    @property
    def device(self):
        return CUDA

    @property
    def is_cuda(self):
        return True

    def __repr__(self, **kw):
        with torch._C.DisableTorchFunction():
            return "emulated cuda " + torch.Tensor.__repr__(torch.Tensor.as_subclass(self, torch.Tensor))


def on_cuda(t):
    """t as a CudaTensor (the same storage); anything else unchanged."""
    if isinstance(t, CudaTensor) or not isinstance(t, torch.Tensor):
        return t
    with torch._C.DisableTorchFunction():
        return _as_cuda(t)


def _as_cuda(t):
    """A plain tensor as a CudaTensor, where no torch function mode is active (inside the mode's handler)."""
    out = torch.Tensor.as_subclass(t, CudaTensor)
    if issubclass(type(t), torch.nn.Parameter) or getattr(t, "_is_param", False):     # isinstance(t, Parameter)
        out._is_param = True
    return out


def on_cpu(t):
    if not isinstance(t, CudaTensor):
        return t
    with torch._C.DisableTorchFunction():
        return torch.Tensor.as_subclass(t, torch.Tensor)


def device_of(t):
    if isinstance(t, CudaTensor):
        return CUDA
    with torch._C.DisableTorchFunction():
        return t.device


def _is_cuda(d):
    if isinstance(d, torch.device):
        return d.type == "cuda"
    if isinstance(d, str):
        return d.startswith("cuda")
    return isinstance(d, int) and not isinstance(d, bool)       # a bare index means cuda:N


def _tensors(obj, out):
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _tensors(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _tensors(o, out)
    return out


def _map(fn, obj):
    if type(obj) is torch.Tensor:
        return fn(obj)
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and type(obj).__module__ == "torch.return_types":      # (values, indices)
        return type(obj)([_map(fn, o) for o in obj])
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_map(fn, o) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map(fn, o) for o in obj)
    return obj


def caller():
    """The innermost frame in the lintorch package as "lintorch/path.py:line" (else the innermost test
    frame): where a sync or a device error comes from. Walks frames without reading source (fast)."""
    fallback = None
    frame = sys._getframe(1)
    while frame is not None:
        f = frame.f_code.co_filename
        if f != __file__:
            if _REPO_PACKAGE in f and "site-packages" not in f:
                return "lintorch" + os.sep + f.rsplit(_REPO_PACKAGE, 1)[-1] + f":{frame.f_lineno}"
            if fallback is None and "site-packages" not in f and "/lib/python" not in f:
                fallback = f"{os.path.basename(f)}:{frame.f_lineno}"
        frame = frame.f_back
    return fallback or "?"


SYNC_METHODS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__complex__", "__format__"}
SYNC_OPS = {"nonzero", "bincount", "unique", "masked_select", "equal", "allclose", "histc", "repeat_interleave",
            "cov", "cholesky", "eigh", "solve", "inv", "cholesky_solve"}
# ops whose CUDA kernels add with atomics (torch.use_deterministic_algorithms' list): nondeterministic sums
ATOMIC_OPS = {"index_add", "index_add_", "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_",
              "index_reduce", "index_reduce_", "put", "put_", "histc", "bincount"}
# calls that may mix a cuda tensor with CPU tensors on CUDA (CPU index tensors, copies between devices)
MIXED_OK = {"copy_", "__getitem__", "__setitem__", "index_put_", "index_put", "__reduce_ex__", "__deepcopy__",
            "__setstate__", "grad.__set__", "data.__set__", "set_"}


_NAMES = {}
# what the mode does with a call, decided once per function (_names): one of the special cases, or the
# device rules for ordinary ops (INDEXING: only the indexed tensor's device counts; MIXED: the first tensor's)
(AUTOGRAD, TO, TO_CUDA, TO_CPU, NUMPY, PIN, IS_PINNED, SYNC_METHOD, INDEXING, MIXED, OP) = range(11)


def _names(func):
    """func -> ("torch.Tensor.add", "add", kind, a sync op?): torch's resolve_name is slow, and every call asks."""
    try:
        return _NAMES[func]
    except (KeyError, TypeError):
        pass
    name = resolve_name(func) or f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', func)}"
    short = name.split(".", 2)[-1] if name.startswith("torch.Tensor.") else name.rsplit(".", 1)[-1]
    kind = {"torch.autograd.grad": AUTOGRAD, "torch.autograd.backward": AUTOGRAD, "torch.Tensor.backward": AUTOGRAD,
            "torch.Tensor.to": TO, "torch.Tensor.cuda": TO_CUDA, "torch.Tensor.cpu": TO_CPU,
            "torch.Tensor.numpy": NUMPY, "torch.Tensor.pin_memory": PIN, "torch.Tensor.is_pinned": IS_PINNED}.get(name)
    if kind is None:
        if name.startswith("torch.Tensor.") and short in SYNC_METHODS:
            kind = SYNC_METHOD
        elif short in ("__getitem__", "index_put_", "index_put", "__setitem__"):
            kind = INDEXING
        elif short in MIXED_OK or "_has_compatible_shallow_copy_type" in name or "swap_tensors" in name:
            kind = MIXED
        else:
            kind = OP
    names = name, short, kind, short.rsplit(".", 1)[-1] in SYNC_OPS
    try:
        _NAMES[func] = names
    except TypeError:          # an unhashable callable: named every time
        pass
    return names


def _flat_tensors(args, kwargs):
    """The tensors among args and kwargs' values, one level of lists, tuples and dicts inlined (_tensors
    below that): the common calls' arguments without a call per argument."""
    ts = []
    for group in (args, kwargs.values() if kwargs else ()):
        for a in group:
            if isinstance(a, torch.Tensor):
                ts.append(a)
            elif isinstance(a, (list, tuple, dict)):
                _tensors(a, ts)
    return ts


class EmulatedCuda(TorchFunctionMode):
    """The mode: CUDA's device rules and a count of host syncs.
    syncs: Counter {(kind, "lintorch/file.py:line"): n}; notes: Counter of things worth knowing that are
    not syncs (non_blocking from pageable memory, emulated generators)."""

    def __init__(self):
        super().__init__()
        self.syncs = collections.Counter()
        self.notes = collections.Counter()
        self.cuda_generators = set()
        self.pinned = {}
        self.warn_on_sync = False
        self.collectives = collections.Counter()     # {(device type, file:line): n} of torch.distributed's
        self.atomics = collections.Counter()         # {(op, file:line): n}: sums whose order varies on CUDA

    # ------------------------------------------------------------------ what was counted
    def sync(self, kind):
        where = caller()
        self.syncs[(kind, where)] += 1
        if self.warn_on_sync:
            warnings.warn(f"called a synchronizing CUDA operation ({kind} at {where})")

    def total(self, where=""):
        """Syncs counted so far whose file:line starts with `where` ("" for all)."""
        return sum(n for (_, w), n in self.syncs.items() if w.startswith(where))

    def table(self):
        """One line per (kind, file:line), most first: the text a failed budget shows."""
        rows = sorted(self.syncs.items(), key=lambda kv: (-kv[1], kv[0]))
        return "\n".join(f"{n:6d} x {kind:40s} {w}" for (kind, w), n in rows) or "(none)"

    @contextlib.contextmanager
    def counting(self):
        """with mode.counting() as c: ... -> c: a Counter of the syncs made inside only."""
        before = collections.Counter(self.syncs)
        inside = collections.Counter()
        try:
            yield inside
        finally:
            inside.update(self.syncs - before)

    # ------------------------------------------------------------------ rules
    def mismatch(self, name, devices):
        a, b = sorted({str(d) for d in devices}, reverse=True)[:2]
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, {a} "
                           f"and {b}! (emulated cuda: {name} at {caller()})")

    def _move(self, t, target, dtype=None, non_blocking=False, copy=False, memory_format=None):
        src = device_of(t)
        dst = CUDA if _is_cuda(target) else (torch.device(target) if target is not None else src)
        kw = {k: v for k, v in (("dtype", dtype), ("memory_format", memory_format)) if v is not None}
        if copy:
            kw["copy"] = True
        base = on_cpu(t) if src != dst else t
        with torch._C.DisableTorchFunction():
            out = torch.Tensor.to(base, **kw) if kw else base
        if src == dst:
            return t if out is base else (on_cuda(out) if dst == CUDA else out)
        fresh = out is not base
        with torch._C.DisableTorchFunction():
            out = out if fresh else torch.Tensor.clone(out)
        if src.type == "cuda":
            self.sync("D2H copy" + (" (non_blocking)" if non_blocking else ""))
            return out
        if not non_blocking:
            self.sync("H2D copy, blocking")
        elif id(t) not in self.pinned:
            self.notes[("H2D non_blocking from pageable memory", caller())] += 1
        return on_cuda(out)

    def _to(self, args, kwargs):
        t, rest, kwargs = args[0], list(args[1:]), dict(kwargs)
        target, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        non_blocking, copy = kwargs.pop("non_blocking", False), kwargs.pop("copy", False)
        memory_format = kwargs.pop("memory_format", None)
        if rest and isinstance(rest[0], torch.Tensor):                    # .to(other)
            other = rest.pop(0)
            target, dtype = device_of(other), other.dtype
        flags = []
        for a in rest:
            if isinstance(a, torch.dtype):
                dtype = a
            elif isinstance(a, bool):
                flags.append(a)
            elif isinstance(a, (torch.device, str, int)):
                target = a
        if flags:
            non_blocking = flags[0]
        if len(flags) > 1:
            copy = flags[1]
        return self._move(t, target, dtype, non_blocking, copy, memory_format)

    def _autograd(self, name, func, args, kwargs):
        """backward and autograd.grad with this mode pushed again, so Python backward code is checked;
        autograd's own torch-function dispatch is off meanwhile (it would call back here)."""
        import torch.autograd as A
        orig = A.has_torch_function
        A.has_torch_function = lambda *a: False
        try:
            with self:
                if name == "torch.Tensor.backward":
                    kw = dict(zip(("gradient", "retain_graph", "create_graph", "inputs"), args[1:]), **kwargs)
                    return A.backward(args[0], kw.get("gradient"), kw.get("retain_graph"),
                                      kw.get("create_graph", False), inputs=kw.get("inputs"))
                res = func(*args, **kwargs)
                if name == "torch.autograd.grad":                  # gradients on their inputs' devices
                    ins = args[1] if len(args) > 1 else kwargs["inputs"]
                    ins = (ins,) if isinstance(ins, torch.Tensor) else tuple(ins)
                    res = tuple(on_cuda(g) if isinstance(g, torch.Tensor) and device_of(i) == CUDA else g
                                for g, i in zip(res, ins))
                return res
        finally:
            A.has_torch_function = orig

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name, short, kind, sync_op = _names(func)
        if kind < INDEXING:                                                 # the special cases
            if kind == AUTOGRAD:
                return self._autograd(name, func, args, kwargs)
            if kind == TO:
                return self._to(args, kwargs)
            if kind == TO_CUDA:
                return self._move(args[0], CUDA, non_blocking=kwargs.get("non_blocking", False))
            if kind == TO_CPU:
                return self._move(args[0], CPU)
            if kind == NUMPY:
                if isinstance(args[0], CudaTensor):
                    raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the "
                                    f"tensor to host memory first. (emulated cuda at {caller()})")
                return func(*args, **kwargs)
            if kind == PIN:
                return self.pin(args[0])
            if kind == IS_PINNED:
                return id(args[0]) in self.pinned
            if isinstance(args[0], CudaTensor):                             # SYNC_METHOD
                self.sync(short)
            return func(*args, **kwargs)

        if "device" in kwargs and _is_cuda(kwargs["device"]):              # a factory on cuda
            kwargs = dict(kwargs, device="cpu")
            gen = kwargs.get("generator")
            if gen is not None and id(gen) not in self.cuda_generators:
                raise RuntimeError(f"Expected a 'cuda' device type for generator but found 'cpu' (emulated cuda: "
                                   f"{name} at {caller()})")
            if name in ("torch.tensor", "torch.as_tensor", "torch.Tensor.new_tensor"):
                data = args[0] if args else kwargs.get("data")
                if not isinstance(data, torch.Tensor) or device_of(data).type == "cpu":
                    self.sync("H2D copy, blocking (torch.tensor on cuda)")
            args = tuple(on_cpu(a) if isinstance(a, torch.Tensor) else a for a in args)
            return _map(on_cuda, func(*args, **kwargs))

        ts = _flat_tensors(args, kwargs)
        if kind == OP:
            # CUDA's rule: a cuda tensor meets only cuda tensors and 0-dim CPU ones; with no cuda tensor in
            # the call there is nothing to check or move (torch itself refuses other device mixes)
            on = [isinstance(t, CudaTensor) for t in ts]
            if not any(on):
                return func(*args, **kwargs)
            devices = {CUDA}
            for t, c in zip(ts, on):
                if not c and (t.dim() > 0 or device_of(t).type != "cpu"):
                    devices.add(device_of(t))
        else:
            devices = {device_of(ts[0])} if ts else set()
            if kind == INDEXING:
                if short == "__setitem__" and len(args) > 2 and isinstance(args[2], torch.Tensor) and args[2].dim() > 0:
                    devices.add(device_of(args[2]))
                if CUDA in devices and any(i.dtype == torch.bool for i in _tensors(args[1:2], [])):
                    self.sync("boolean-mask indexing (nonzero)")
        if len(devices) > 1:
            self.mismatch(name, devices)
        if CUDA not in devices:
            return func(*args, **kwargs)
        if sync_op:
            self.sync(short)
        if short.rsplit(".", 1)[-1] in ATOMIC_OPS or kind == INDEXING and short.startswith("index_put") and (
                kwargs.get("accumulate") or (len(args) > 2 and args[-1] is True)):
            self.atomics[(short, caller())] += 1
        out = func(*args, **kwargs)
        if type(out) is torch.Tensor:
            return _as_cuda(out)
        return out if type(out) is CudaTensor else _map(on_cuda, out)

    def pin(self, t):
        if isinstance(t, CudaTensor):
            raise RuntimeError("cannot pin 'torch.cuda.FloatTensor' only dense CPU tensors can be pinned")
        with torch._C.DisableTorchFunction():
            p = torch.Tensor.clone(t)
        self.pinned[id(p)] = p
        return p


# --------------------------------------------------------------------------- custom autograd Functions

_HOOKED = []


def install_autograd_hooks():
    """Every custom autograd.Function's backward sees its incoming gradients and saved tensors on the devices
    they had in forward, and a gradient returned on the wrong device raises autograd's own error. Permanent
    and idempotent, a no-op for plain CPU tensors; install before test modules bind Function.apply."""
    if _HOOKED:
        return
    _HOOKED.append(True)
    from torch.autograd import function as F
    apply_descriptor = F.Function.__dict__["apply"]

    def apply(cls, *args, **kwargs):
        ins = [device_of(a) if isinstance(a, torch.Tensor) else None for a in args]
        out = apply_descriptor.__get__(None, cls)(*args, **kwargs)
        outs = out if isinstance(out, tuple) else (out,)
        node = next((o.grad_fn for o in outs if isinstance(o, torch.Tensor) and o.grad_fn is not None), None)
        if isinstance(node, F.BackwardCFunction):
            node._emu_in = ins
            node._emu_out = [device_of(o) if isinstance(o, torch.Tensor) else None for o in outs]
        return out
    F.Function.apply = classmethod(apply)
    backward_apply = F.BackwardCFunction.apply

    def backward(self, *grads):
        outs = getattr(self, "_emu_out", None)
        if outs:
            grads = tuple(on_cuda(g) if isinstance(g, torch.Tensor) and d == CUDA else g for g, d in zip(grads, outs))
        res = backward_apply(self, *grads)
        for i, (g, d) in enumerate(zip(res if isinstance(res, tuple) else (res,), getattr(self, "_emu_in", None) or ())):
            if isinstance(g, torch.Tensor) and d is not None and device_of(g) != d:
                raise RuntimeError(f"Function {type(self).__name__} returned an invalid gradient at index {i} - "
                                   f"expected device {d} but got {device_of(g)}")
        return res
    F.BackwardCFunction.apply = backward
    save = F.FunctionCtx.save_for_backward

    def save_for_backward(self, *tensors):
        self._emu_saved = [None if t is None else device_of(t) for t in tensors]
        return save(self, *tensors)
    F.FunctionCtx.save_for_backward = save_for_backward
    saved = torch._C._FunctionBase.saved_tensors

    def saved_tensors(self):
        ts = saved.__get__(self)
        devices = getattr(self, "_emu_saved", None)
        if devices:
            ts = tuple(on_cuda(t) if t is not None and d == CUDA else t for t, d in zip(ts, devices))
        return ts
    F.BackwardCFunction.saved_tensors = property(saved_tensors)


# --------------------------------------------------------------------------- torch.cuda says one GPU

class _Card:
    name, major, minor, total_memory, multi_processor_count = "emulated cuda (CPU)", 9, 0, 80 * 2**30, 132


@contextlib.contextmanager
def emulated_cuda():
    """with emulated_cuda() as mode: ... -> CUDA code runs on the CPU under CUDA's device rules;
    mode.syncs counts the host syncs (see EmulatedCuda)."""
    mode = EmulatedCuda()
    saved = []

    def patch(obj, attr, value):
        saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    real_generator = torch.Generator

    class _IsGenerator(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, real_generator)

    class Generator(metaclass=_IsGenerator):
        """torch.Generator(device="cuda"): a CPU generator that cuda factories accept."""
        def __new__(cls, device="cpu"):
            if not _is_cuda(device):
                return real_generator(device)
            g = real_generator()
            mode.cuda_generators.add(id(g))
            mode.notes[("torch.Generator(device='cuda') emulated by a CPU generator", caller())] += 1
            return g

    def synchronize(device=None):
        mode.notes[("torch.cuda.synchronize", caller())] += 1

    for attr, value in {"is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
                        "set_device": lambda d: None, "synchronize": synchronize,
                        "set_sync_debug_mode": lambda m: setattr(mode, "warn_on_sync", m not in (0, "default")),
                        "get_sync_debug_mode": lambda: int(mode.warn_on_sync),
                        "max_memory_allocated": lambda device=None: 0, "reset_peak_memory_stats": lambda d=None: None,
                        "mem_get_info": lambda device=None: (_Card.total_memory, _Card.total_memory),
                        "get_device_properties": lambda device=None: _Card(),
                        "get_device_name": lambda device=None: _Card.name,
                        "is_bf16_supported": lambda *a, **k: True, "manual_seed": lambda s: None,
                        "manual_seed_all": lambda s: None, "empty_cache": lambda: None}.items():
        patch(torch.cuda, attr, value)
    for attr, value in {"is_available": lambda: True, "current_accelerator": lambda check_available=False: CUDA,
                        "current_device_index": lambda: 0, "set_device_index": lambda i: None,
                        "device_count": lambda: 1}.items():
        patch(torch.accelerator, attr, value)
    import torch.distributed as td

    def recorded(op):
        """A collective of a tensor: which device it was on, and where (a job whose ranks give it tensors on
        different devices splits between gloo and NCCL and hangs; with one emulated rank that is visible only here)."""
        def run(tensor, *args, **kwargs):
            mode.collectives[(device_of(tensor).type, caller())] += 1
            return op(on_cpu(tensor), *args, **kwargs)
        return run
    for attr in ("all_reduce", "broadcast", "reduce"):
        patch(td, attr, recorded(getattr(td, attr)))
    real_init = td.init_process_group

    def init_process_group(backend=None, *args, **kwargs):
        """NCCL needs a GPU: the emulated "cuda" tensors are CPU tensors underneath, so gloo carries them."""
        if backend and "nccl" in backend:
            mode.notes[(f"backend {backend!r} emulated by gloo", caller())] += 1
            backend = "gloo"
        return real_init(backend, *args, **kwargs)
    patch(td, "init_process_group", init_process_group)
    patch(torch, "Generator", Generator)
    patch(torch.Tensor, "pin_memory", lambda t, device=None: mode.pin(t))     # the loaders' pinning threads too
    patch(torch.Tensor, "is_pinned", lambda t, device=None: id(t) in mode.pinned)
    real_autocast, real_enabled = torch.autocast, torch.is_autocast_enabled

    def autocast(device_type, dtype=None, enabled=True, cache_enabled=None):
        """autocast("cuda") as CPU autocast in the same dtype (CPU autocast's op lists are not CUDA's;
        both run mm, addmm and convolutions in the low precision)."""
        if device_type == "cuda":
            device_type, dtype = "cpu", dtype or torch.float16
        return real_autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    def is_autocast_enabled(device_type=None):
        if device_type is None:
            return real_enabled()
        return real_enabled("cpu" if device_type == "cuda" else device_type)
    patch(torch, "autocast", autocast)
    patch(torch, "is_autocast_enabled", is_autocast_enabled)
    install_autograd_hooks()
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)        # Module.to("cuda"): cuda parameters
    try:
        with mode:
            yield mode
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)
