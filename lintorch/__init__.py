"""lintorch: linear image classifiers with hand-written, verified gradients."""
from .functional import linear, softmax_loss, svm_loss, penalty
from .model import LinearClassifier

__all__ = ["linear", "softmax_loss", "svm_loss", "penalty", "LinearClassifier"]
__version__ = "0.1.0"
