"""Where a run's tensors live and at what matmul precision, decided in one place.

- resolve(name): every command's --device ("auto" | "cpu" | "cuda" | "cuda:N") -> torch.device, with TF32
  matmuls switched on for CUDA (training, evaluation, prediction, extraction and the benchmarks agree);
  a device that is not usable here is one line (UserError), never a traceback.
- full_precision(): TF32 off inside, restored after: gradient checks compare float32 against tolerances
  (1e-6) that TF32's 10-bit mantissa would miss by 100x.
- moved(obj, device): every tensor in a nested dict/list/tuple on `device`. The rule for a run's tensors:
  they live on the run's device, so whatever comes in from the host (state loaded from a checkpoint, which
  torch.load maps to the CPU; numbers the caller passed; a generator's draws) is moved once, where it
  enters, and constants are created with device= of the tensor they meet.
- precision_key(device): what a cached result computed on `device` depends on besides its inputs (the
  device type and whether TF32 was on): part of the feature cache's key.
"""
import contextlib
import dataclasses

import torch

from ..errors import UserError


def resolve(name):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device; UserError if it is not usable here.
    On CUDA, TF32 matmuls are switched on here, the one place."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} asked for CUDA, but torch.cuda.is_available() is False here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        use_tf32(True)
    elif device.type != "cpu":
        raise UserError(f"--device {name}: lintorch runs on cpu or cuda")
    return device


def use_tf32(on):
    torch.backends.cuda.matmul.allow_tf32 = bool(on)
    torch.backends.cudnn.allow_tf32 = bool(on)


@contextlib.contextmanager
def full_precision():
    """TF32 off for CUDA matmuls and convolutions inside; the caller's setting restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    use_tf32(False)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def moved(obj, device):
    """obj with every tensor in it (nested dicts, lists, tuples, dataclasses) on device; the rest unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: moved(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(moved(v, device) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: moved(getattr(obj, f.name), device)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def precision_key(device):
    """-> "cpu" or "cuda+tf32" / "cuda": results on different kinds of device or precision differ in
    their last bits, so a cache keeps them apart."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    return "cuda+tf32" if torch.backends.cuda.matmul.allow_tf32 else "cuda"
