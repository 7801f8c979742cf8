"""lintorch: linear image classifiers with hand-written, verified gradients."""
import os

# MKL otherwise picks its thread count per call from the machine's load, which changes float
# rounding from run to run; the same seed and data must give the same weights (resume relies on it).
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

from .functional import linear, softmax_loss, svm_loss, penalty
from .model import LinearClassifier

__all__ = ["linear", "softmax_loss", "svm_loss", "penalty", "LinearClassifier"]
__version__ = "0.1.0"
