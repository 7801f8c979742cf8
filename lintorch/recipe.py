"""One recipe: from a run's config to its data, preprocessing, K-member model, objective and
loaders. train.py and the benchmark both build through it, so what is timed is what runs.

Shapes: N images, D = 3 * S * S features, C classes, K members (a single run is K = 1).
"""
from dataclasses import dataclass
from typing import List, Optional

import torch

from .data import DataSet, Preprocess, load_dataset
from .engine import Objective
from .loaders import TensorLoader, make_loader
from .model import LinearClassifier

# validation, test and evaluate use it: their numbers agree to the bit. 512, not 4096: a 4096-image
# float batch (50 MB) leaves the cache, and validating 5,000 CIFAR-10 images took 87 ms against 36 ms
# (1 CPU thread; python -m lintorch.bench, section "bookkeeping")
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

    @property
    def classes(self):
        return self.data.classes

    @property
    def image_shape(self):
        return tuple(self.data.train.x.shape[1:])


def member_configs(cfg):
    """The sweep's grid, or one member with no overrides."""
    return list(cfg.get("sweep") or [{}])


def eval_loader(split, preprocess, device):
    return TensorLoader(split, preprocess, EVAL_BATCH, device, shuffle=False)


def build(cfg, device, preprocess=None, data=None):
    """cfg: the run's flags as a dict (saved_config). preprocess: a resumed run's (else fitted
    on the training split). data: an already loaded DataSet (else loaded from cfg)."""
    if data is None:
        data = load_dataset(cfg["dataset"], cfg["data_dir"], cfg["image_size"], cfg["val_size"], cfg["seed"],
                            cfg.get("cache_dir"), cfg.get("skip_bad_images", False), cfg.get("cache_check", "stat"))
    cfg["val_size"] = len(data.val)      # the default resolved: evaluate re-carves this very split
    if preprocess is None:
        preprocess = Preprocess.fit(data.train.x, cfg.get("mean", "pixel"), cfg.get("standardize", False))
    configs = member_configs(cfg)
    K, C, D = len(configs), len(data.classes), data.train.x[0].numel()
    torch.manual_seed(cfg["seed"])
    single = LinearClassifier(D, C)                      # every member starts from the same W
    model = LinearClassifier(D, C, num_models=K)
    with torch.no_grad():
        model.weight.copy_(single.weight.expand(K, C, D))
    model = model.to(device)
    reg = torch.tensor([c.get("reg", cfg["reg"]) for c in configs], device=device)
    lr = torch.tensor([c.get("lr", cfg["lr"]) for c in configs], dtype=torch.float64)
    objective = Objective(cfg["loss"], reg, cfg.get("penalty", "l2"), cfg.get("beta", 1.0), cfg.get("margin", 1.0),
                          cfg.get("squared_hinge", False), cfg.get("svm_form", "weston-watkins"))
    batch = len(data.train) if cfg["optimizer"] == "gd" else cfg["batch_size"]
    train_loader = make_loader(cfg.get("loader", "tensor"), data, "train", preprocess, batch, device, cfg["seed"],
                               shuffle=True, workers=cfg.get("workers", 0))
    test = None if data.test is None else eval_loader(data.test, preprocess, device)
    return Recipe(data, preprocess, model, objective, train_loader, eval_loader(data.val, preprocess, device),
                  test, configs, lr)
