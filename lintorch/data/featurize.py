"""From a data set to the inputs a run trains on: raw pixels, features extracted on the fly
(fitted on the training split, every split encoded once and cached on disk), or a folder of
precomputed features (--dataset features), streamed from memory-mapped files; and a split's
images encoded batch by batch as they are evaluated (EncodedImages: evaluate never holds them whole).

Shapes: N examples, D features, C classes; images (N, 3, S, S) uint8, features (N, D) float32.
The feature cache is keyed by the extractor's fingerprint (name, settings, learned state), a
sha256 of each split's images and labels, and the device kind and precision it was computed at
(training.devices.precision_key), so it is rebuilt whenever any of them changes; each cache file
(features, a fitted extractor) holds a checksum of its values (output/checksum.py), checked on
every read: one that does not match is rebuilt, with one line saying why.
"""
import hashlib
import logging
import os

import torch

from ..output.atomic import remove_dead_temporaries, torch_save_atomic
from ..output.checksum import checksum
from .imagecache import default_dir
from .sources import SOURCES
from .split import DataSet, Split, carve_val

log = logging.getLogger("lintorch")


def extractor_settings(cfg):
    """A TrainConfig's (or extract's arguments') extractor settings, by each declared setting's key
    (features.settings; None: the extractor's own default), and the image size and seed."""
    from ..features.settings import by_flag
    return {**{s.key: getattr(cfg, name) for name, (_, s) in by_flag().items()},
            "image_size": cfg.image_size, "seed": cfg.seed}


def extractor_for(cfg, state=None):
    """cfg's --features as an extractor (unfitted; its settings checked against --image-size), or
    the one saved in a checkpoint (state)."""
    from ..features import from_state_dict, make_extractor
    if state is not None:
        return from_state_dict(state)
    settings = {k: v for k, v in extractor_settings(cfg).items() if v is not None}
    extractor = make_extractor(cfg.features, **settings)
    extractor.check_settings(cfg.image_size)
    return extractor


def _images_hash(split):
    h = hashlib.sha256()
    h.update(split.x.contiguous().view(-1).numpy().tobytes())
    h.update(split.y.contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_cache(obj, cache_dir, path, what):
    """torch_save_atomic(obj, path) into cache_dir; a failure (full disk, read-only folder) is one
    warning: the run has what it needs in memory."""
    try:
        os.makedirs(cache_dir, exist_ok=True)
        remove_dead_temporaries(cache_dir)         # a SIGKILLed run's half-written caches
        torch_save_atomic(obj, path)
    except (OSError, RuntimeError) as e:           # torch.save raises RuntimeError on a full disk
        from ..cli import one_line
        why = one_line(e) if isinstance(e, OSError) else f"{str(e).strip().splitlines()[0][:120]}: a full disk?"
        log.warning("could not write the %s cache %s (%s); going on without it", what, path, why)


def _encode(extractor, split, name, cache_dir, device, batch_size, digest, quiet=False):
    """split's images (digest: their _images_hash) -> Split of float32 features, from the cache
    when it holds this exact pair."""
    from ..features import extract
    from ..training.devices import precision_key       # CUDA (and TF32) features differ from the CPU's in the last bits
    key = hashlib.sha256(f"{extractor.fingerprint()}:{digest}:{precision_key(device)}".encode()).hexdigest()[:24]
    from ..output.progress import Progress
    path = None if cache_dir is None else os.path.join(cache_dir, f"features-{name}-{key}.pt")
    if path and os.path.isfile(path):
        try:
            saved = torch.load(path, weights_only=True)
            x = saved.get("x") if isinstance(saved, dict) else None
            if not (isinstance(x, torch.Tensor) and tuple(x.shape) == (len(split), extractor.dim) and
                    x.dtype == torch.float32 and bool(torch.isfinite(x).all())):
                log.warning("feature cache %s holds other features: extracting again", path)
            elif saved.get("checksum") != checksum(x):
                log.warning("feature cache %s: its values do not match the checksum written with them (changed or "
                            "damaged since): extracting again", path)
            else:
                return Split(x, split.y, split.files)
        except Exception as e:       # unreadable or torn: encode again
            log.warning("feature cache %s is unreadable (%s): extracting again", path, type(e).__name__)
    with Progress(len(split), f"{extractor.name} features ({name})", disable=quiet) as bar:
        x = extract(extractor, split.x, batch_size, device, progress=bar.update)
    if path:
        _save_cache({"x": x, "checksum": checksum(x)}, cache_dir, path, "feature")
    return Split(x, split.y, split.files)


def _shaping(settings, extractor):
    """The settings that shape the features (runtime ones such as the encoding method left out)."""
    runtime = getattr(extractor, "RUNTIME", ())
    return {k: v for k, v in (settings or {}).items() if k not in runtime}


def _fit(extractor, train, cache_dir, device, digest):
    """Fit extractor on the training split, or load the state it learned from this exact split
    with these settings before (cache_dir/extractor-<key>.pt, key = sha256 of the unfitted
    extractor's fingerprint and digest, the split's _images_hash): k-means at K = 1600 learns for a
    minute, which a second run with other classifier flags should not repeat."""
    if not extractor.LEARNS:
        extractor.fit(train.x, device)
        return extractor
    from ..training.devices import precision_key
    key = hashlib.sha256(f"fit:{extractor.fingerprint()}:{digest}:{precision_key(device)}".encode()).hexdigest()[:24]
    path = None if cache_dir is None else os.path.join(cache_dir, f"extractor-{extractor.name}-{key}.pt")
    if path and os.path.isfile(path):
        try:
            saved = torch.load(path, weights_only=True)
            if not (saved.get("name") == extractor.name and _shaping(saved.get("settings"), extractor) ==
                    _shaping(extractor.settings, extractor)):
                log.warning("extractor cache %s holds another extractor: fitting again", path)
            elif saved.get("checksum") != checksum(saved.get("state")):
                log.warning("extractor cache %s: its learned state does not match the checksum written with it "
                            "(changed or damaged since): fitting again", path)
            else:
                log.info(f"{extractor.name} features: learned state from {path}")
                return extractor.load_state(saved["state"])
        except Exception as e:       # unreadable or torn: fit again
            log.warning("extractor cache %s is unreadable (%s): fitting again", path, type(e).__name__)
    log.info(f"fitting {extractor.name} features on {len(train)} training images")
    extractor.fit(train.x, device)
    if path:
        state = extractor.state_dict()
        _save_cache({**state, "checksum": checksum(state.get("state"))}, cache_dir, path, "extractor")
    return extractor


def featurize(data, cfg, device, state=None, batch_size=None, extractor=None):
    """Images -> features for every split. The extractor (made from cfg unless given) is fitted on
    data.train only (unless a saved state is given; a fit is cached like the features)
    -> (DataSet of float features, extractor)."""
    from ..features import BATCH
    batch_size = batch_size or BATCH
    extractor = extractor_for(cfg, state) if extractor is None else extractor
    on_disk = SOURCES[cfg.dataset].on_disk
    cache_dir = cfg.cache_dir or (default_dir(cfg.data_dir) if on_disk else None)
    splits = {"train": data.train, "val": data.val, "test": data.test}
    digests = {name: _images_hash(split) for name, split in splits.items() if split is not None}   # once each
    if state is None:
        extractor = _fit(extractor, data.train, cache_dir, device, digests["train"])
    parts = {name: None if split is None else
             _encode(extractor, split, name, cache_dir, device, batch_size, digests[name], cfg.quiet)
             for name, split in splits.items()}
    if cfg.flip and cfg.features != "pixels" and data.train is not None:   # None: evaluate
        # every training image and its mirror image, each encoded once (and cached): N doubles
        mirror = Split(data.train.x.flip(-1), data.train.y)
        m = _encode(extractor, mirror, "train-mirror", cache_dir, device, batch_size, _images_hash(mirror),
                    cfg.quiet)
        t = parts["train"]
        parts["train"] = Split(torch.cat([t.x, m.x]), torch.cat([t.y, m.y]))
        del m
    if cfg.flip_eval:
        # each evaluated image's features averaged with its mirror image's (the scores' mean: W is linear)
        for name in ("val", "test"):
            if parts[name] is not None:
                mirror = Split(splits[name].x.flip(-1), splits[name].y)
                m = _encode(extractor, mirror, f"{name}-mirror", cache_dir, device, batch_size, _images_hash(mirror),
                            cfg.quiet)
                p = parts[name]
                parts[name] = Split((p.x + m.x).mul_(0.5), p.y, p.files)
    if parts["train"] is not None:          # None: evaluate and predict read no training split
        check_informative(parts["train"].x, extractor, cfg)
    out = DataSet(parts["train"], parts["val"], parts["test"], data.classes, data.image_size, None)
    return out, extractor


class EncodedImages:
    """A Split of uint8 images (N, 3, S, S) as evaluation batches of features, encoded only when
    asked for: yields (inputs(x_b) (B, D) on the device, y_b) for consecutive batches of batch_size,
    so at most one batch's features exist at a time. inputs: the images' pipeline to the model's
    inputs (predict.FeaturePipeline: extractor, flip_eval, standardization). The loader interface
    of loaders.TensorLoader (len, batches); progress: optional callable(images done)."""

    def __init__(self, split, inputs, batch_size, device, progress=None):
        self.x, self.y, self.inputs = split.x, split.y, inputs
        self.batch_size, self.device, self.progress = batch_size, device, progress

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    def batches(self, epoch=0, start=0):
        for i in range(start * self.batch_size, len(self.y), self.batch_size):
            xb = self.x[i:i + self.batch_size].to(self.device)
            yb = self.y[i:i + self.batch_size].to(self.device)
            out = self.inputs(xb)
            if self.progress is not None:
                self.progress(len(yb))
            yield out, yb


def check_informative(x, extractor, cfg):
    """x (N, D) training features: FeatureError when every column is the same for all N rows (a
    classifier on them can only guess the most frequent class: --encoding soft with a huge --alpha,
    a huge --zca-eps, --power near 0, ...), a warning when most columns are. The message names the
    extractor settings given, and which of them a --features preset set."""
    if x is None or len(x) < 2:
        return
    constant = (x.amax(0) == x.amin(0))                           # (D,)
    n = int(constant.sum())
    if n * 2 < len(constant):
        return
    from ..config import flag
    from ..features.settings import by_flag
    preset = (cfg.preset_text() or "").split()
    values = {k: getattr(cfg, k, None) for k in by_flag() if getattr(cfg, k, None) is not None}
    named = ", ".join((f"{flag(k)} {v:g}" if isinstance(v, float) else f"{flag(k)} {v}") +
                      (f" (set by the --features {cfg.features} preset)" if flag(k) in preset else "")
                      for k, v in values.items()) or "its defaults"
    if n == len(constant):
        from ..errors import FeatureError
        raise FeatureError(f"every one of the {n} {extractor.name} features is the same for all {len(x)} training "
                           f"images (with {named}): a classifier on them can only guess; change those settings")
    log.warning(f"warning: {n} of the {len(constant)} {extractor.name} features are the same for every training "
                f"image (with {named}): they carry nothing")


# --------------------------------------------------------------------------- precomputed feature folders

class Rows:
    """A subset of a feature file's rows (sorted indices), a data.split.Streamed split:
    n, d, y, rows(sorted idx), chunks(), release()."""
    streamed = True

    def __init__(self, split, indices):
        self.split, self.idx = split, indices
        self.n, self.d, self.y = len(indices), split.d, split.y[indices]

    def __len__(self):
        return self.n

    def rows(self, idx):
        return self.split.rows(self.idx[idx])

    def release(self):
        self.split.release()

    def chunks(self, rows=8192):
        for i in range(0, self.n, rows):
            yield self.split.rows(self.idx[i:i + rows]).float()
            self.release()


def feature_folder(cfg):
    """--dataset features: DIR/train.{npy,pt} (+ test) -> DataSet whose splits are Rows views of
    the (memory-mapped) files, validated whole by store.open_folder; validation is carved from
    train like images are (seeded)."""
    from ..errors import DataError
    from ..features.store import open_folder
    train, t = open_folder(cfg.data_dir)
    n = len(train)
    if n < 2:
        raise DataError(f"{train.where} has {n} row(s): at least 2 are needed, one to train on and one to validate")
    train_idx, val_idx = carve_val(n, cfg.val_size, cfg.seed, unit="rows")
    test = None if t is None else Rows(t, torch.arange(len(t)))
    return DataSet(Rows(train, train_idx), Rows(train, val_idx), test, train.classes, cfg.image_size, None)
