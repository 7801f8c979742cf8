"""One recipe: from a run's config to its data, preprocessing, K-member model, objective and
loaders. train.py and the benchmark both build through it, so what is timed is what runs.

Shapes: N images, D = 3 * S * S features, C classes, K members (a single run is K = 1).
"""
import logging
import os
from dataclasses import dataclass
from typing import List, Optional

import torch

from ..data import DataSet, Preprocess, load_dataset
from ..data.featurize import extractor_for, feature_folder, featurize
from ..data.loaders import KeptBatches, TensorLoader, make_loader
from ..features.store import FeatureLoader
from ..model import LinearClassifier
from ..names import FULL_BATCH
from ..objective import Objective

log = logging.getLogger("lintorch")

# validation, test and evaluate use it: their numbers agree to the bit. 512, not 4096: a batch that stays
# in the cache (bench/README.md, "Per-epoch bookkeeping")
EVAL_BATCH = 512


@dataclass
class Recipe:
    data: DataSet
    preprocess: Preprocess
    model: LinearClassifier          # weight (K, C, D), bias (K, C)
    objective: Objective
    train_loader: object
    val_loader: TensorLoader
    test_loader: Optional[TensorLoader]
    configs: List[dict]              # each member's overrides of the run's config ({} for a single run)
    lr: torch.Tensor                 # (K,) each member's base learning rate
    base_lr: float = None            # the run's, before a sweep's overrides (TrainConfig.base_lr)
    in_features: int = 0             # D
    extractor: object = None         # the fitted feature extractor, or None for raw pixels and feature files

    @property
    def classes(self):
        return self.data.classes

    @property
    def image_shape(self):
        """(3, S, S) when the inputs are raw pixels (the weights are pictures), else None."""
        x = getattr(self.data.train, "x", None)
        return tuple(x.shape[1:]) if x is not None and x.dim() == 4 else None

    def features_header(self, cfg):
        """What a checkpoint records about the inputs: None for raw pixels; the extractor (name,
        settings, learned state, fingerprint) or the feature folder otherwise."""
        if self.extractor is not None:
            return {"name": cfg.features, "extractor": self.extractor.state_dict(),
                    "fingerprint": self.extractor.fingerprint()}
        if cfg.dataset == "features":
            return {"name": "file", "folder": os.path.abspath(cfg.data_dir)}
        if cfg.dataset == "tensor":      # LinearProbe.fit: its labels' values and dtype, an example's shape
            return dict(self.data.source or {"name": "tensor"})
        return None


def member_configs(cfg):
    """The sweep's grid, or one member with no overrides."""
    return list(cfg.sweep or [{}])


def input_dim(split):
    """D: the feature count of a split's examples (a feature file's width, or one image's numel)."""
    return split.d


def mirrors_on_the_fly(cfg):
    """--flip over raw pixels mirrors images as they are batched; with --features the training
    split already holds every image's mirrored encoding (featurize)."""
    return cfg.flip and cfg.features == "pixels"


# L-BFGS's passes over the training split (each evaluation) go in batches of about this many values
# (16 MB of float32): in batches of EVAL_BATCH rows each batch costs Python and dispatch, not
# arithmetic (20,000 x 256, 10 classes, 1 thread: 1.73x scikit-learn's time in batches of 512 rows,
# 1.25x in batches of 16,384; python -m lintorch.bench.probe_compare --n 20000 --d 256). A split
# that fits one such batch is made once, preprocessed, and kept.
PASS_VALUES = 2 ** 22


def full_batch_loader(split, preprocess, device):
    """The training split for L-BFGS's passes: batches of PASS_VALUES / D rows (at least
    EVAL_BATCH), the whole split as one batch made once and kept when it holds at most PASS_VALUES values."""
    D = input_dim(split)
    rows = max(EVAL_BATCH, PASS_VALUES // max(D, 1))
    if split.streamed:
        return FeatureLoader(split, rows, device, shuffle=False, standardizer=preprocess)
    if len(split) * D <= PASS_VALUES:
        return KeptBatches(TensorLoader(split, preprocess, len(split), device, shuffle=False))
    return TensorLoader(split, preprocess, rows, device, shuffle=False)


def kept_eval_loader(split, preprocess, device):
    """eval_loader's batches, made once and kept when the split holds at most PASS_VALUES values (a
    solver that passes over them more than once preprocesses them once), else eval_loader. The exact
    solver's Gram takes these: its float64 accumulation is faster on cache-sized batches (20,000 x 256:
    151 ms in batches of 8,192 rows, 110 ms in batches of 512)."""
    if not split.streamed and len(split) * input_dim(split) <= PASS_VALUES:
        return KeptBatches(eval_loader(split, preprocess, device))
    return eval_loader(split, preprocess, device)


def eval_loader(split, preprocess, device):
    if split.streamed:
        return FeatureLoader(split, EVAL_BATCH, device, shuffle=False, standardizer=preprocess)
    return TensorLoader(split, preprocess, EVAL_BATCH, device, shuffle=False)


def load_inputs(cfg, device, features_state=None, splits=("train", "test")):
    """The DataSet a run trains on: images, images turned into features, or a feature folder
    -> (DataSet, extractor or None). splits=("test",): an image folder's test split only (evaluate)."""
    if cfg.dataset == "features":
        return feature_folder(cfg), None
    pixels = cfg.features == "pixels"
    extractor = None if pixels else extractor_for(cfg, features_state)     # its settings asked before any work
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.image_size, cfg.val_size, cfg.seed,
                        cfg.cache_dir, cfg.skip_bad_images, cfg.cache_check, splits, progress=not cfg.quiet)
    if pixels:
        return data, None
    return featurize(data, cfg, device, features_state, extractor=extractor)


def _fit_preprocess(cfg, train):
    if train.streamed:
        return Preprocess.fit_features(train.chunks())
    if train.x.dim() == 2:               # extracted features: standardized per dimension
        return Preprocess.fit_features(train.x[i:i + 8192] for i in range(0, len(train), 8192))
    return Preprocess.fit(train.x, cfg.mean, cfg.standardize)


def build(cfg, device, preprocess=None, data=None, features_state=None):
    """cfg: the run's TrainConfig (read, never changed). preprocess: a resumed run's (else fitted
    on the training split). data: an already loaded DataSet (else loaded from cfg).
    features_state: a resumed run's fitted extractor (else fitted on the training split). What it
    resolves (the validation split's size, the base lr) the Recipe holds: len(data.val), base_lr."""
    extractor = None
    if data is None:
        data, extractor = load_inputs(cfg, device, features_state)
    if preprocess is None:
        preprocess = _fit_preprocess(cfg, data.train)
    D = input_dim(data.train)
    base_lr = cfg.base_lr(D, preprocess.mode == "feature")
    if cfg.lr is None and base_lr != cfg.base_lr(D, False):
        log.info(f"default lr scaled to {base_lr:.3g} for {D} standardized features (--lr sets it)")
    configs = member_configs(cfg)
    K, C = len(configs), len(data.classes)
    # every member starts from the same W, drawn on the CPU from the run's own seeded generator (the
    # global RNG is neither read nor changed; the draws are those of torch.manual_seed(seed), randn)
    W0 = LinearClassifier.initial_weight((C, D), generator=torch.Generator().manual_seed(cfg.seed))
    model = LinearClassifier(D, C, num_models=K, weight_scale=0)
    with torch.no_grad():
        model.weight.copy_(W0.expand(K, C, D))
    if torch.device(device).type != "cpu":         # built there (Module.to walks it even where it is)
        model = model.to(device)
    reg = torch.tensor([c.get("reg", cfg.reg) for c in configs], device=device)
    lr = torch.tensor([c.get("lr", base_lr) for c in configs], dtype=torch.float64)
    objective = Objective.from_config(cfg, reg=reg, train_labels=data.train.y, num_classes=C, device=device)
    batch = len(data.train) if cfg.optimizer in FULL_BATCH else cfg.batch_size
    if data.train.streamed:
        train_loader = FeatureLoader(data.train, batch, device, cfg.seed, shuffle=True, standardizer=preprocess)
    else:
        train_loader = make_loader(cfg.loader, data, "train", preprocess, batch, device,
                                   cfg.seed, shuffle=True, workers=cfg.workers,
                                   flip=mirrors_on_the_fly(cfg))
    test = None if data.test is None else eval_loader(data.test, preprocess, device)
    return Recipe(data, preprocess, model, objective, train_loader, eval_loader(data.val, preprocess, device),
                  test, configs, lr, base_lr, D, extractor)
