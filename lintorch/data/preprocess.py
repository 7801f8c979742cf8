"""The preprocessing fitted on the training split and stored in the checkpoint: uint8 images
(N, 3, S, S) or float features (N, D) -> float32 inputs (N, D), D = 3 S S for images.
"""
import torch

FIT_CHUNK_VALUES = 1 << 24                      # Preprocess.fit's float chunk: 64 MB float32 at most


class Preprocess:
    """uint8 images (N, 3, S, S) -> float features (N, D): x / 255 - mean, optionally / std.

    mean/std come from the training split only. mode "pixel" subtracts a (D,) mean image
    (cs231n's choice), "channel" one mean per colour channel; "feature" standardizes float
    features (x - mean) / std, with no 1/255. Stored in the checkpoint.
    """

    def __init__(self, mean, std=None, mode="pixel"):
        self.mean, self.std, self.mode = mean, std, mode       # (D,), (D,) or None
        inv = torch.ones_like(mean) if std is None else 1.0 / std
        self.scale = inv if mode == "feature" else inv / 255.0  # x * scale - shift, one fused op
        self.neg_shift = -(mean * inv)
        self._on = {}          # device -> (scale, neg_shift) there: each copied once, not per batch
        # features as given (LinearProbe's standardize=False: a zero mean, no std): x * 1 + 0 is x itself,
        # so the batches are copied without the arithmetic (asked on the host only, never with a sync)
        self.passes_through = (mode == "feature" and std is None and mean.device.type == "cpu"
                               and not bool(mean.any()))

    @classmethod
    def fit_features(cls, chunks, eps=1e-6):
        """chunks: an iterable of float (n, D) row blocks of the training split -> a "feature"
        Preprocess (x - mean) / std, sums in float64, streamed (the split need not fit in memory)."""
        s = s2 = None
        n = 0
        for xb in chunks:
            xd = xb.double()
            s = xd.sum(0) if s is None else s + xd.sum(0)
            xd.square_()                 # in place: a second (n, D) float64 temporary costs its page faults
            s2 = xd.sum(0) if s2 is None else s2 + xd.sum(0)
            n += len(xb)
        mean = s / max(n, 1)
        std = ((s2 / max(n, 1) - mean.square()).clamp_min(0) + eps).sqrt()
        return cls(mean.float(), std.float(), "feature")

    @classmethod
    def fit(cls, x, mode="pixel", standardize=False, chunk=4096):
        """x uint8 (N, 3, S, S) -> Preprocess fitted on it.

        The sums are exact with no float64 copy of the data: a float32 sum of at most 4096 uint8
        values is an integer below 2^24; chunk sums accumulate in float64. Chunks hold at most
        2^24 values, so large images do not need a huge float temporary.
        """
        if mode not in ("pixel", "channel"):
            raise ValueError(f"unknown mean mode {mode!r}; expected pixel or channel")
        N, D = x.shape[0], x[0].numel()
        chunk = max(1, min(chunk, FIT_CHUNK_VALUES // D))
        flat = x.reshape(N, D)
        s = torch.zeros(D, dtype=torch.float64)
        s2 = torch.zeros(D, dtype=torch.float64)
        for i in range(0, N, chunk):
            xb = flat[i:i + chunk].float()                             # (chunk, D)
            s += xb.sum(0)
            if standardize:
                s2 += xb.double().square_().sum(0)
        s /= 255.0
        s2 /= 255.0 ** 2
        if mode == "channel":
            per = D // 3
            s = s.view(3, per).sum(1, keepdim=True).expand(3, per).reshape(D) / per
            s2 = s2.view(3, per).sum(1, keepdim=True).expand(3, per).reshape(D) / per
        mean = s / N
        std = (s2 / N - mean.square()).clamp_min(1e-12).sqrt() if standardize else None
        return cls(mean.float(), None if std is None else std.float(), mode)

    def to(self, device):
        """This preprocessing on `device` (itself where it is there already: it is never changed)."""
        if self.mean.device == torch.device(device):
            return self
        return Preprocess(self.mean.to(device), None if self.std is None else self.std.to(device), self.mode)

    def __call__(self, x):
        """x uint8 (N, 3, S, S) or (N, D) -> float32 (N, D) on x's device (fitted on one device, applied on any).
        Features that pass through as given come back as x itself where x is float32 already (a view:
        batches are read, never written)."""
        if self.passes_through:
            return x.reshape(x.shape[0], -1).float()
        xf = x.reshape(x.shape[0], -1).to(torch.float32, copy=True)   # our own buffer
        scale, neg_shift = self._constants(x.device)
        # in place: a second batch-sized temporary per step costs page faults on CPU
        return torch.addcmul(neg_shift, xf, scale, out=xf)

    def _constants(self, device):
        if self.scale.device == device:
            return self.scale, self.neg_shift
        if device not in self._on:
            self._on[device] = self.scale.to(device), self.neg_shift.to(device)
        return self._on[device]

    def state_dict(self):
        return {"mean": self.mean.cpu(), "std": None if self.std is None else self.std.cpu(), "mode": self.mode}

    @classmethod
    def from_state_dict(cls, d):
        return cls(d["mean"], d["std"], d["mode"])

