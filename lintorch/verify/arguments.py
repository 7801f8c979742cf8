"""check_function's arguments, checked before any work: one TypeError or ValueError naming the
argument that is wrong (eps=0, tol=nan, samples=0, wrt=(), a non-callable fn, device="garbage",
device="cuda" without CUDA, ...)."""
import math

import torch

__all__ = ["METHODS", "PROPERTIES", "check_arguments", "check_device", "checked_inputs"]

METHODS = ("autograd", "numeric", "gradcheck")                               # the default checks
PROPERTIES = ("second", "forward", "batched", "compiled", "devices")         # opt-in: verify/properties.py


def _number(name, value, positive):
    """A finite real number (> 0 when positive, else >= 0), or TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _check_tol(tol):
    if tol is None:
        return
    if not isinstance(tol, dict):
        _number("tol", tol, positive=False)
        return
    for key, value in tol.items():
        method = key[0] if isinstance(key, tuple) else key
        if method not in METHODS + PROPERTIES:
            raise ValueError(f"tol: unknown key {key!r}; use a method of {METHODS} or a (method, dtype) pair")
        _number(f"tol[{key!r}]", value, positive=False)


def check_device(device):
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"device: {device!r} is not a torch device ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device} asked for CUDA, but torch.cuda.is_available() is False here")
    return device


def checked_inputs(inputs, wrt):
    tensors = [i for i, t in enumerate(inputs) if isinstance(t, torch.Tensor)]
    if wrt is None:
        wrt = tuple(i for i in tensors if inputs[i].requires_grad)
        if not wrt:
            raise ValueError("no input requires grad: call .requires_grad_() on the tensors to check, or pass wrt")
    if isinstance(wrt, (int, str)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in wrt):
        raise TypeError(f"wrt must be a sequence of input indices, got {wrt!r}")
    if not wrt:
        raise ValueError("wrt is empty: name at least one input to check (or None: those that require grad)")
    bad = [i for i in wrt if i not in tensors or not inputs[i].is_floating_point()]
    if bad:
        raise ValueError(f"wrt names input {bad[0]}, which is not a floating-point tensor")
    return tuple(dict.fromkeys(wrt))


def check_arguments(fn, reference, checks, eps, tol, samples, seed, dtypes, kinks, name, backend):
    """check_function's plain arguments: a TypeError or ValueError naming the one that is wrong.
    -> checks as a tuple of METHODS."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if reference is not None and not callable(reference):
        raise TypeError(f"reference must be callable or None, got {type(reference).__name__}")
    _number("eps", eps, positive=True)
    _check_tol(tol)
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)):
        raise TypeError(f"samples must be an int or None, got {type(samples).__name__}")
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be >= 1 (or None for the default), got {samples}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if dtypes is not None and (not dtypes or not all(isinstance(d, torch.dtype) and d.is_floating_point
                                                     for d in dtypes)):
        raise ValueError(f"dtypes must be floating-point torch dtypes, got {dtypes!r}")
    if not (isinstance(kinks, bool) or callable(kinks)):
        raise TypeError(f"kinks must be True, False or a callable, got {type(kinks).__name__}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a torch.compile backend's name, got {type(backend).__name__}")
    checks = (checks,) if isinstance(checks, str) else tuple(checks)
    unknown = set(checks) - set(METHODS + PROPERTIES)
    if unknown or not checks:
        raise ValueError(f"checks: unknown {sorted(unknown)}; choose from {METHODS + PROPERTIES}")
    return checks
