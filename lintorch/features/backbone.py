"""torchvision:<model>: a torchvision classifier with its head removed, as a frozen feature extractor.

Shapes: N images (N, 3, S, S) uint8 -> (N, D) float32, D the width of the layer before the head
(resnet18 512, vit_b_16 768, convnext_tiny 768, mobilenet_v3_small 1024, ...).

The head is found generically: the model's `fc`, `classifier`, `heads` or `head`; a Linear head
becomes Identity, a Sequential head loses its last Linear (so convnext keeps its LayerNorm and
mobilenet_v3 its hidden layer). Weights (setting ``weights``):
  None                 random initialisation (seeded): for tests and baselines
  DEFAULT, IMAGENET1K_V2, ...  torchvision's named weights: downloaded once into torch's hub cache,
                       which needs network; preprocessing is the weights' own transforms()
  a file path          a state_dict saved with torch.save, read with weights_only=True; its sha256
                       is recorded (it is part of the fingerprint)
Without named weights the preprocessing is a documented default: resize to ``input_size`` (224)
with antialiasing, scale to 0..1, normalise with ImageNet's mean and std.
"""
import hashlib
import logging
import os

import torch
import torch.nn.functional as F

from ..errors import BackboneError
from .base import Extractor
from .settings import TORCHVISION, defaults

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HEADS = ("fc", "classifier", "heads", "head")


def file_sha256(path, block=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_head(model, name):
    """model -> the same model whose classification head is Identity (in place); BackboneError if none."""
    for attr in HEADS:
        head = getattr(model, attr, None)
        if isinstance(head, torch.nn.Linear):
            setattr(model, attr, torch.nn.Identity())
            return model
        if isinstance(head, torch.nn.Sequential):
            linear = [i for i, m in enumerate(head) if isinstance(m, torch.nn.Linear)]
            if linear:
                head[linear[-1]] = torch.nn.Identity()
                return model
    raise BackboneError(f"torchvision:{name} has no Linear head in {', '.join(HEADS)}: cannot use it as "
                        f"a feature extractor")


class DefaultTransform(torch.nn.Module):
    """uint8 (N, 3, S, S) -> float (N, 3, size, size): resize (antialiased), / 255, ImageNet mean/std."""

    def __init__(self, size=224):
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x):
        x = x.float() / 255.0
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)
        return (x - self.mean) / self.std


def _load_weights(model, model_name, path):
    """A state_dict file into model; BackboneError saying in one line what is wrong with it: not a
    torch file, a pickle of Python objects (weights_only=True refuses to run it, and lintorch never
    suggests turning that off), or keys and shapes that do not match (counted, with examples)."""
    import pickle
    where = f"--backbone-weights {path}"
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():   # garbage bytes, not a pickle of objects
            raise BackboneError(f"{where} is not a readable torch file (UnpicklingError)") from None
        raise BackboneError(f"{where} holds Python objects, not plain tensors, and is not loaded (weights_only=True); "
                            f"save it as torch.save(model.state_dict(), FILE)") from None
    except Exception as e:
        raise BackboneError(f"{where} is not a readable torch file ({type(e).__name__})") from None
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise BackboneError(f"{where} is not a state_dict (a dict of tensors)")
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shaped = [f"{k} {tuple(sd[k].shape)} vs {tuple(want[k].shape)}" for k in want if k in sd and
              sd[k].shape != want[k].shape]
    problems = [f"{len(v)} {what} (e.g. {v[0]})" for v, what in ((missing, "missing key(s)"),
                (unexpected, "unexpected key(s)"), (shaped, "of another shape")) if v]
    if problems:
        raise BackboneError(f"{where} does not fit torchvision:{model_name}: {'; '.join(problems)}")
    model.load_state_dict(sd)


def build(model_name, weights=None, input_size=224, seed=0):
    """-> (model without head in eval mode, preprocessing module, weights record dict)."""
    from torchvision import models
    if model_name not in models.list_models(module=models):
        raise BackboneError(f"unknown torchvision model {model_name!r}; see torchvision.models.list_models()")
    record = {"weights": weights}
    if weights is None or os.path.isfile(str(weights)):
        with torch.random.fork_rng(devices=[]):        # seeded init without touching the caller's RNG
            torch.manual_seed(seed)
            model = models.get_model(model_name, weights=None)
        transform = DefaultTransform(input_size)
        if weights is not None:
            _load_weights(model, model_name, weights)
            record["sha256"] = file_sha256(weights)
    else:
        try:
            w = models.get_model_weights(model_name)[str(weights)]
        except KeyError:
            names = ", ".join(["DEFAULT"] + [m.name for m in models.get_model_weights(model_name)])
            raise BackboneError(f"torchvision:{model_name} has no weights {weights!r} and no such file exists; "
                                f"named weights: {names}") from None
        try:
            model = models.get_model(model_name, weights=w)
        except Exception as e:
            raise BackboneError(f"torchvision:{model_name} weights {w.name} are not in torch's hub cache and "
                                f"the download failed ({type(e).__name__}): no network? pass a state_dict "
                                f"file with --backbone-weights FILE") from None
        transform = w.transforms()
        record.update(weights=w.name, url=w.url)
    return remove_head(model, model_name).eval(), transform, record


class TorchvisionBackbone(Extractor):
    """features "torchvision:<model>": the pooled penultimate layer of a frozen classifier."""

    NAME = "torchvision"
    SETTINGS = TORCHVISION
    DEFAULTS = {"model": "resnet18", **defaults(TORCHVISION), "seed": 0}

    def __init__(self, **settings):
        super().__init__(**settings)
        self._model = self._transform = None
        self._dim = None

    @property
    def name(self):
        return f"torchvision:{self.settings['model']}"

    def _ready(self, device):
        if self._model is None:
            s = self.settings
            self._model, self._transform, record = build(s["model"], s["weights"], s["input_size"], s["seed"])
            self.state = {"weights": record}
        self._model.to(device)
        if isinstance(self._transform, torch.nn.Module):
            self._transform.to(device)

    def fit(self, x, device="cpu"):
        self._ready(device)
        return self

    @property
    def dim(self):
        if self._dim is None:
            self._ready("cpu")
            self._dim = self.transform(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape[1]
        return self._dim

    def check_settings(self, image_size):
        """The model is built and one image goes through it: a model that cannot take the input size
        (vit_b_16 takes only 224 px, alexnet's pooling needs more than 16 px) says so here."""
        try:
            self.dim
        except BackboneError:
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            size = self.settings["input_size"] if self.settings["weights"] is None or \
                os.path.isfile(str(self.settings["weights"])) else None
            what = f"--input-size {size} images" if size else "images"
            raise BackboneError(f"{self.name} cannot take {what} ({type(e).__name__}: {first})") from None

    def transform(self, x):
        self.check_images(x)
        self._ready(x.device)
        with torch.inference_mode(), torch.autocast("cuda", enabled=x.device.type == "cuda"):
            f = self._model(self._transform(x))
        return f.float().flatten(1)

    def load_state(self, state):
        self.state = dict(state)
        rec = state.get("weights", {})
        if rec.get("sha256") and self.settings["weights"] and os.path.isfile(self.settings["weights"]):
            if file_sha256(self.settings["weights"]) != rec["sha256"]:
                raise BackboneError(f"{self.settings['weights']} changed since these features were made "
                                    f"(sha256 differs)")
        return self
