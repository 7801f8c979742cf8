"""What every feature extractor is: settings, optional learned tensors, a fingerprint.

Shapes: N images (N, 3, S, S) uint8, D features. An extractor maps a batch of uint8 images on
the device to float32 (N, D) on the same device; ``fit`` learns whatever it needs from training
images only. ``state_dict()`` holds plain types and tensors only, so ``torch.load(weights_only=True)``
reads it back.
"""
import hashlib
import json

import torch

from ..errors import FeatureError


class Extractor:
    """Base class: subclasses set NAME and DEFAULTS and define transform (and fit, learned, dim);
    SETTINGS, the settings a command line sets (features.settings), are part of DEFAULTS."""

    NAME = ""
    SETTINGS = ()
    DEFAULTS = {}
    RUNTIME = ()          # settings that change speed, not the features: left out of the fingerprint
    LEARNS = False        # fit learns state from the training images (worth caching)

    def __init__(self, **settings):
        unknown = sorted(set(settings) - set(self.DEFAULTS))
        if unknown:
            raise FeatureError(f"{self.NAME} features take no setting(s) {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(self.DEFAULTS)) or 'none'}")
        self.settings = {**self.DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
        self.state = {}

    @property
    def name(self):
        return self.NAME

    @property
    def dim(self):
        raise NotImplementedError

    def check_settings(self, image_size):
        """FeatureError naming the flags when these settings cannot work on image_size px images;
        asked before any work (loading, fitting, writing). Nothing to ask by default."""

    def fit(self, x, device="cpu"):
        """x uint8 (N, 3, S, S) training images -> self (nothing to learn by default)."""
        return self

    def transform(self, x):
        """x uint8 (N, 3, S, S) on the device -> float32 (N, D) on the device."""
        raise NotImplementedError

    def check_images(self, x):
        if x.dim() != 4 or x.shape[1] != 3 or x.dtype != torch.uint8:
            raise FeatureError(f"{self.name} expects uint8 images (N, 3, S, S), got {x.dtype} "
                               f"{tuple(x.shape)}")

    def state_dict(self):
        return {"name": self.name, "settings": dict(self.settings),
                "state": {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in self.state.items()}}

    def load_state(self, state):
        self.state = dict(state)
        return self

    def fingerprint(self):
        """sha256 hex of the name, the settings that shape the output, and the learned tensors."""
        h = hashlib.sha256()
        kept = {k: v for k, v in self.settings.items() if k not in self.RUNTIME}
        h.update(json.dumps({"name": self.name, "settings": kept}, sort_keys=True, default=str).encode())
        for k in sorted(self.state):
            v = self.state[k]
            if torch.is_tensor(v):
                t = v.detach().cpu().contiguous()
                h.update(f"\0{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(f"\0{k}\0{json.dumps(v, sort_keys=True, default=str)}".encode())
        return h.hexdigest()


class Pixels(Extractor):
    """The raw pixels 0..255 as float32 (N, 3 S S): the baseline every other extractor must beat."""

    NAME = "pixels"
    DEFAULTS = {"image_size": 32}

    @property
    def dim(self):
        return 3 * self.settings["image_size"] ** 2

    def transform(self, x):
        self.check_images(x)
        return x.reshape(x.shape[0], -1).float()


class Concat(Extractor):
    """Several extractors side by side: features [f1(x), f2(x), ...]; settings go to every part that
    knows them."""

    def __init__(self, parts):
        self.parts = parts
        self.settings = {p.name: dict(p.settings) for p in parts}
        self.state = {}

    @property
    def name(self):
        return ",".join(p.name for p in self.parts)

    @property
    def LEARNS(self):
        return any(p.LEARNS for p in self.parts)

    @property
    def dim(self):
        return sum(p.dim for p in self.parts)

    def check_settings(self, image_size):
        for p in self.parts:
            p.check_settings(image_size)

    def fit(self, x, device="cpu"):
        for p in self.parts:
            p.fit(x, device)
        return self

    def transform(self, x):
        return torch.cat([p.transform(x) for p in self.parts], 1)

    def state_dict(self):
        d = super().state_dict()
        d["state"] = {p.name: p.state_dict()["state"] for p in self.parts}
        return d

    def load_state(self, state):
        for p in self.parts:
            p.load_state(state.get(p.name, {}))
        return self

    def fingerprint(self):
        return hashlib.sha256("".join(p.fingerprint() for p in self.parts).encode()).hexdigest()
