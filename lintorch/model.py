"""LinearClassifier: scores = W x + b as an nn.Module over lintorch's hand-written Functions.

Shapes: N examples, D = in_features, C = num_classes, K = num_models (a sweep's stack).
The weight is (C, D) like nn.Linear, or (K, C, D) when K models train at once.
"""
import torch
from torch import nn

from . import functional as LF

WEIGHT_SCALE = 1e-3      # the initial weights' std: the first loss is about log C (softmax), C - 1 (SVM)


class LinearClassifier(nn.Module):
    """A linear classifier f(x, W, b) = W x + b.

    in_features D, num_classes C; num_models K stacks K independent classifiers
    that share each batch (weight (K, C, D), bias (K, C), scores (K, N, C)).
    weight_scale is the std of the initial weights: small, so the first loss is
    about log C (softmax) or C - 1 (SVM), the lecture's sanity check; 0 starts from zeros,
    drawing nothing from torch's global RNG (a model about to be overwritten).
    """

    def __init__(self, in_features, num_classes, bias=True, num_models=None, weight_scale=WEIGHT_SCALE):
        super().__init__()
        if in_features < 1 or num_classes < 2:
            raise ValueError(f"need in_features >= 1 and num_classes >= 2, got {in_features}, {num_classes}")
        lead = () if num_models is None else (num_models,)
        self.in_features, self.num_classes, self.num_models = in_features, num_classes, num_models
        shape = (*lead, num_classes, in_features)
        self.weight = nn.Parameter(self.initial_weight(shape, weight_scale))
        self.bias = nn.Parameter(torch.zeros(*lead, num_classes)) if bias else None

    @staticmethod
    def initial_weight(shape, weight_scale=WEIGHT_SCALE, generator=None):
        """A starting weight of `shape`: normal draws of std weight_scale from `generator` (None:
        torch's global RNG), or zeros for weight_scale 0 (nothing drawn)."""
        return torch.randn(shape, generator=generator) * weight_scale if weight_scale else torch.zeros(shape)

    @classmethod
    def from_weights(cls, weight, bias):
        """A single classifier holding copies of weight (C, D) and bias (C,), on weight's device."""
        model = cls(weight.shape[1], weight.shape[0], weight_scale=0).to(weight.device)
        with torch.no_grad():
            model.weight.copy_(weight)
            model.bias.copy_(bias)
        return model

    def forward(self, x):
        """x (N, D) or images (N, ...) flattened to D -> scores (N, C), or (K, N, C)."""
        return LF.linear(x.flatten(1), self.weight, self.bias)

    @torch.inference_mode()
    def predict(self, x):
        """x (N, D) -> predicted class indices (N,) (or (K, N)): the largest score."""
        return self(x).argmax(-1)

    @torch.inference_mode()
    def predict_proba(self, x):
        """x (N, D) -> class probabilities softmax(scores), (N, C) (or (K, N, C))."""
        return torch.softmax(self(x), -1)

    def templates(self, shape=(3, 32, 32)):
        """The weight rows as images, the lecture's visual viewpoint: (C, *shape) (or (K, C, *shape))."""
        return self.weight.detach().reshape(*self.weight.shape[:-1], *shape)

    def extra_repr(self):
        k = "" if self.num_models is None else f", num_models={self.num_models}"
        return f"in_features={self.in_features}, num_classes={self.num_classes}, bias={self.bias is not None}{k}"
