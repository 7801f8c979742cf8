"""The registry of feature extractors: a name and settings -> an Extractor, a state dict back to
one, and extraction batch by batch (the package's names, re-exported by its __init__).

Shapes: N images (N, 3, S, S) uint8, D features.
"""
import torch

from ..errors import FeatureError

NAMES = ("pixels", "kmeans", "hog", "colorhist", "torchvision:<model>")


COMMON = ("image_size", "seed")   # settings that extractors not using them ignore
BATCH = 256     # images per extraction batch: training, evaluate and predict encode alike (the same bits)


def _one(name, settings):
    from . import base, hog, kmeans
    if name.startswith("torchvision:"):
        from . import backbone
        cls, fixed = backbone.TorchvisionBackbone, {"model": name.split(":", 1)[1]}
    else:
        classes = {c.NAME: c for c in (base.Pixels, kmeans.KMeansFeatures, hog.HOG, hog.ColorHist)}
        if name not in classes:
            raise FeatureError(f"unknown features {name!r}; expected one of {', '.join(NAMES)} or a comma list")
        cls, fixed = classes[name], {}
    return cls(**{k: v for k, v in settings.items() if k in cls.DEFAULTS and k not in fixed}, **fixed)


def make_extractor(name, **settings):
    """'kmeans', 'hog,colorhist', 'torchvision:resnet18', ... -> an Extractor.

    Each part takes the settings it knows; None means "the default"; a setting no part knows is an
    error, except image_size and seed, which extractors that do not use them ignore.
    """
    from ..names import feature_parts, repeated_parts
    from .base import Concat
    parts = feature_parts(name)
    if not parts:
        raise FeatureError("no feature extractor named; expected one of " + ", ".join(NAMES))
    if repeated_parts(name):
        raise FeatureError(f"--features {name} names {', '.join(repeated_parts(name))} twice: its columns would be "
                           f"repeated (no new information; a singular Gram for --optimizer exact); name each once")
    made = [_one(p, settings) for p in parts]
    known = set(COMMON).union(*(m.DEFAULTS for m in made))
    unknown = sorted(k for k, v in settings.items() if k not in known and v is not None)
    if unknown:
        raise FeatureError(f"{name} features take no setting(s) {', '.join(unknown)}")
    return made[0] if len(made) == 1 else Concat(made)


def from_state_dict(d):
    """The dict of ``Extractor.state_dict()`` -> the extractor, learned state included."""
    settings = d["settings"]
    if "," in d["name"]:
        flat = {k: v for part in settings.values() for k, v in part.items()}
        ex = make_extractor(d["name"], **flat)
    else:
        ex = make_extractor(d["name"], **{k: v for k, v in settings.items() if k != "model"})
    return ex.load_state(d["state"])


def batches_of_features(extractor, x, batch_size=BATCH, device="cpu"):
    """Yield (start, float32 (B, D) on `device`) for x uint8 (N, 3, S, S) (any device), batch by batch."""
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            f = extractor.transform(x[i:i + batch_size].to(device, non_blocking=True))
            bad = ~torch.isfinite(f).all(1)
            if bad.any():       # every path that makes features comes through here: none is written or trained on
                raise FeatureError(f"{extractor.name} features of image {i + int(bad.nonzero()[0])} (and "
                                   f"{int(bad.sum()) - 1} more in its batch) are NaN/inf: the extractor's settings "
                                   f"do not fit these images; nothing was written or trained on")
            yield i, f


def extract(extractor, x, batch_size=BATCH, device="cpu", progress=None):
    """x uint8 (N, 3, S, S) (any device) -> float32 (N, D) on the CPU, computed batch by batch on `device`.

    progress: optional callable(images done in this batch), e.g. a tqdm's update.
    """
    out = None
    for i, f in batches_of_features(extractor, x, batch_size, device):
        if out is None:
            out = torch.empty(x.shape[0], f.shape[1], dtype=torch.float32)
        out[i:i + f.shape[0]].copy_(f)
        if progress is not None:
            progress(f.shape[0])
    if out is None:
        raise FeatureError("no images to extract features from")
    return out
