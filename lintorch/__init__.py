"""lintorch: linear image classifiers with hand-written, verified gradients.

The public functions are imported on first use, so `import lintorch.config` (argument parsing)
does not import torch.
"""
import os

# MKL otherwise picks its thread count per call from the machine's load, which changes float
# rounding from run to run; the same seed and data must give the same weights (resume relies on it).
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

from .objective import LOSSES as _LOSSES  # noqa: E402  (torch-free: each loss names its public function)

_FUNCTIONS = ("linear", *(loss.function for loss in _LOSSES.values()), "penalty")
__all__ = [*_FUNCTIONS, "LinearClassifier", "LinearProbe", "load", "check_function"]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _FUNCTIONS:
        from . import functional
        return getattr(functional, name)
    if name in ("LinearProbe", "load"):
        from . import probe
        return getattr(probe, name)
    if name == "LinearClassifier":
        from .model import LinearClassifier
        return LinearClassifier
    if name == "check_function":
        from .verify.checker import check_function
        return check_function
    raise AttributeError(f"module 'lintorch' has no attribute {name!r}")
