"""A fitted LinearProbe's model and its checkpoint: set_model (the weights a probe predicts with)
and read (a probe's save() or run folder, or a train.py checkpoint -> what a fitted LinearProbe holds).

Shapes: D features, C classes.
"""
import os

import numpy as np

from .keywords import api_device


def read(path, device="cpu"):
    """A lintorch checkpoint (a probe's save(), or a train.py run folder / checkpoint.pt; a probe's
    logdir included) -> (its model file, the classes (C,) in the dtype fit was given, the
    Preprocess, the device). ValueError naming `device` where it is not usable; FileNotFoundError /
    ValueError for a path that holds no lintorch model."""
    from ..data import Preprocess
    from ..data.inputs import recorded_classes
    from ..errors import CheckpointError
    from ..output.checkpoint import best_path, load_model
    device = api_device(device)
    try:
        saved = load_model(best_path(os.fspath(path)))
    except CheckpointError as e:
        if not os.path.exists(os.fspath(path)):
            raise FileNotFoundError(f"path: no such file or run folder: {os.fspath(path)}") from None
        raise ValueError(str(e)) from None
    classes = recorded_classes(saved.header.features)
    if classes is None:      # a train.py run, or a probe saved before the labels' dtype was recorded
        labels = saved.header.config.get("probe_classes")
        classes = np.array(labels if labels is not None else saved.header.classes)
    return saved, classes, Preprocess.from_state_dict(saved.header.preprocess), device


def set_model(probe, W, b, preprocess, cfg, inputs=None):
    """A fitted probe's model: W (C, D), b (C,) on the standardized features, the Preprocess,
    config (the checkpoint header's) and inputs (its features record: labels, an example's shape);
    coef_ (C, D) and intercept_ (C,) on the features as given."""
    probe._W, probe._b, probe._preprocess, probe._cfg = W, b, preprocess.to(W.device), cfg
    probe._inputs = inputs if isinstance(inputs, dict) else {"name": "tensor"}
    probe._sample_shape = tuple(probe._inputs.get("sample_shape") or (W.shape[1],))
    probe.n_features_in_ = W.shape[1]
    scale, shift = probe._preprocess.scale.double(), probe._preprocess.neg_shift.double()   # x' = x*scale + shift
    probe.coef_ = (W.double() * scale).float()
    probe.intercept_ = (b.double() + W.double() @ shift).float()


def save_probe(probe, path):
    """A fitted probe -> a lintorch checkpoint at path (its header records the labels' values and
    dtype and an example's shape, for read)."""
    from ..output.checkpoint import Header, ModelFile, model_dict, save
    cfg = probe._cfg
    h = Header([str(c) for c in probe.classes_], cfg["image_size"], probe.n_features_in_, cfg["loss"],
               probe._preprocess.state_dict(), cfg, probe._inputs)
    save(model_dict(ModelFile(h, probe._W.cpu(), probe._b.cpu(), 1)), os.fspath(path))
