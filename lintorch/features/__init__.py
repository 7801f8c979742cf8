"""Fixed feature extractors for linear classifiers: their settings (declared once, in settings), a
registry and batched extraction.

Shapes: N images (N, 3, S, S) uint8, D features. Names:
  pixels                 raw pixels (3 S S)
  kmeans                 Coates et al. 2011 k-means triangle features (4 K), learned by fit
  hog, colorhist         cs231n's HOG ((S // 8)^2 * 9) and hue histogram (nbin)
  hog,colorhist          any comma-separated list: the parts side by side
  torchvision:<model>    a torchvision classifier without its head (pretrained or random weights)

    ex = make_extractor("kmeans", k=1600)
    ex.fit(train_x, device)                # learns only from the images given
    feats = extract(ex, x, 256, device)    # (N, D) float32 on the CPU
"""
from ..errors import BackboneError, FeatureError
from .settings import SETTINGS, Setting

_REGISTRY = ("BATCH", "COMMON", "NAMES", "batches_of_features", "extract", "from_state_dict", "make_extractor")
__all__ = ["BackboneError", "FeatureError", "SETTINGS", "Setting", *_REGISTRY]


def __getattr__(name):
    """The registry's names, imported on first use: the extractors import torch, and the commands'
    parsers read the torch-free settings (features.settings) before torch loads."""
    if name in _REGISTRY:
        from . import registry
        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
