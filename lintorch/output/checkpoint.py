"""Checkpoints, the one module that knows their keys: schema, building, validation, atomic
saving, loading, "best" (checkpoint.pt) vs "last" (last.pt), and the state a resume restores.

Shapes: D features, C classes, K members (a single run is K = 1).
A file holds only plain types and tensors, so torch.load(weights_only=True) reads it anywhere:
    format, version, kind ("model" | "resume"), classes [C], image_size, in_features D,
    num_classes C, loss, preprocess {mean (D,), std (D,) | None, mode}, features {...} | None,
    config {flags}, and
    kind "model":  model {weight (C, D), bias (C,)}, epoch, best_val_acc, best_epoch, history
    kind "resume": state {weight (K, C, D), bias (K, C), momentum {weight, bias} | None,
                   best_weight, best_bias, epoch, step, partial, members [{name, config,
                   best_val, best_epoch, status, history, patience_left}]}
                   and, when K = 1, model {weight, bias} (the current weights) too.
Every field is checked on load (type, shape, consistency); a bad one is refused in one line
naming the file and the field.
"""
import errno
import io
import json
import logging
import math
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from ..errors import CheckpointError
from ..objective import LOSSES
from .atomic import write_atomic

log = logging.getLogger("lintorch")

FORMAT = "lintorch-checkpoint"
VERSION = 2
BEST, LAST = "checkpoint.pt", "last.pt"


# --------------------------------------------------------------------------- what a file holds

@dataclass
class Header:
    """What every checkpoint says about the data and the model's input."""
    classes: List[str]
    image_size: int
    in_features: int
    loss: str
    preprocess: dict
    config: dict
    features: Optional[dict] = None

    @property
    def num_classes(self):
        return len(self.classes)


@dataclass
class ModelFile:
    """A trained model: weight (C, D), bias (C,) and how its inputs were made."""
    header: Header
    weight: torch.Tensor
    bias: torch.Tensor
    epoch: int = 0
    best_val_acc: Optional[float] = None
    best_epoch: Optional[int] = None
    history: list = field(default_factory=list)
    path: str = ""


@dataclass
class TrainState:
    """Everything a resume restores: the K members' current and best weights, momentum,
    position in training and per-member bookkeeping (members: list of plain dicts)."""
    weight: torch.Tensor
    bias: torch.Tensor
    momentum: Optional[dict]
    best_weight: torch.Tensor
    best_bias: torch.Tensor
    epoch: int
    step: int
    members: list
    partial: Optional[dict] = None


# --------------------------------------------------------------------------- building and saving

def _header_dict(h):
    return {"format": FORMAT, "version": VERSION, "classes": list(h.classes), "image_size": int(h.image_size),
            "in_features": int(h.in_features), "num_classes": len(h.classes), "loss": h.loss,
            "preprocess": h.preprocess, "features": h.features, "config": dict(h.config)}


def model_dict(m):
    """ModelFile -> the plain dict saved as checkpoint.pt."""
    return {**_header_dict(m.header), "kind": "model",
            "model": {"weight": m.weight.detach().cpu().clone(), "bias": m.bias.detach().cpu().clone()},
            "epoch": int(m.epoch), "best_val_acc": m.best_val_acc, "best_epoch": m.best_epoch,
            "history": list(m.history)}


def resume_dict(header, s):
    """(Header, TrainState) -> the plain dict saved as last.pt."""
    cpu = lambda t: None if t is None else t.detach().cpu().clone()
    state = {"weight": cpu(s.weight), "bias": cpu(s.bias), "best_weight": cpu(s.best_weight),
             "best_bias": cpu(s.best_bias), "epoch": int(s.epoch), "step": int(s.step), "members": s.members,
             "momentum": None if s.momentum is None else {k: cpu(v) for k, v in s.momentum.items()},
             "partial": s.partial}
    d = {**_header_dict(header), "kind": "resume", "state": state}
    if s.weight.shape[0] == 1:
        d["model"] = {"weight": state["weight"][0], "bias": state["bias"][0]}
    return d


def save(obj, path):
    """torch.save obj to path atomically: serialized in memory, written to a temp file in the
    same folder, fsync'd, renamed. Any failure (a full disk, Ctrl-C) removes the temp file and
    leaves the old file as it was; a full disk is one line naming the path and the size needed."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getbuffer()
    try:
        write_atomic(path, lambda f: f.write(data))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(f"cannot write {path}: no space left on the device (needs "
                                  f"{len(data) / 1e6:.1f} MB); what was saved before is intact") from None
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None


class NullSaver:
    """Saves nothing: a data-parallel rank > 0 (rank 0 holds the same weights), or a run in memory."""

    def save(self, obj, path):
        pass

    def flush(self):
        pass

    def drain(self):
        pass


class Saver:
    """Writes checkpoints on a background thread, so the epoch's bookkeeping does not wait for
    fsync: save(obj, path) queues a snapshot (obj must hold copies, as model_dict and
    resume_dict make), flush() waits for all writes and re-raises the first failure."""

    def __init__(self):
        import queue
        import threading
        self.queue, self.error = queue.Queue(), None
        self.thread = threading.Thread(target=self._work, daemon=True, name="lintorch-saver")
        self.thread.start()

    def _work(self):
        while True:
            obj, path = self.queue.get()
            try:
                if self.error is None:
                    save(obj, path)
            except BaseException as e:      # kept for flush(); later writes are skipped
                self.error = e
            finally:
                self.queue.task_done()

    def save(self, obj, path):
        if self.error is not None:
            self.flush()
        self.queue.put((obj, path))

    def flush(self):
        self.queue.join()
        if self.error is not None:
            e, self.error = self.error, None
            raise e

    def drain(self):
        """flush() for a run stopping on another error (a DataLoader raising mid-epoch, Ctrl-C):
        the finished epochs' checkpoints are written whole before the process can exit (the
        thread is a daemon: exiting mid-write would lose them and leave a .tmpPID file), and a
        write's own failure is logged, so the error that stopped training stays the one raised."""
        try:
            self.flush()
        except Exception as e:
            log.warning(f"warning: a checkpoint could not be written ({e})")


# --------------------------------------------------------------------------- loading and checking

def _read(path):
    if not path:
        raise CheckpointError("no checkpoint path given")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which would run the file's code: not relayed
        raise CheckpointError(f"{path}: refused, not a plain-data checkpoint (loading it would run code "
                              f"or needs types lintorch never writes)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError,
            AttributeError, IndexError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: truncated or not a torch checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lintorch checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')} is not supported "
                              f"(this lintorch reads version {VERSION})")
    return ckpt


class _Checker:
    """Field checks that raise CheckpointError naming the file and the field."""

    def __init__(self, path):
        self.path = path

    def fail(self, name, problem):
        raise CheckpointError(f"{self.path}: field {name!r} {problem} (damaged or edited checkpoint)")

    def get(self, d, key, kinds, name=None):
        name = name or key
        if not isinstance(d, dict) or key not in d:
            self.fail(name, "is missing")
        v = d[key]
        if not isinstance(v, kinds) or isinstance(v, bool) and bool not in (kinds if isinstance(kinds, tuple)
                                                                            else (kinds,)):
            self.fail(name, f"is a {type(v).__name__}, expected {getattr(kinds, '__name__', kinds)}")
        return v

    def tensor(self, d, key, shape, name=None, finite=True):
        name = name or key
        t = self.get(d, key, torch.Tensor, name)
        if not t.is_floating_point():
            self.fail(name, f"has dtype {t.dtype}, expected a float tensor")
        if tuple(t.shape) != tuple(shape):
            self.fail(name, f"has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if finite and not torch.isfinite(t).all():
            self.fail(name, "holds NaN or infinite values")
        return t


def _header(ckpt, c):
    classes = c.get(ckpt, "classes", list)
    if not classes or not all(isinstance(n, str) for n in classes):
        c.fail("classes", "is not a list of class names")
    if c.get(ckpt, "num_classes", int) != len(classes) or len(classes) < 2:
        c.fail("num_classes", f"is {ckpt['num_classes']} but the class list has {len(classes)} names")
    S = c.get(ckpt, "image_size", int)
    D = c.get(ckpt, "in_features", int)
    if not 1 <= S <= 4096 or D < 1:
        c.fail("image_size", f"is {S} (in_features {D})")
    features = ckpt.get("features")
    if features is not None and not isinstance(features, dict):
        c.fail("features", "is not a dict")
    if features is None and D != 3 * S * S:
        c.fail("image_size", f"is {S}, but in_features {D} is not 3 x {S} x {S}")
    loss = c.get(ckpt, "loss", str)
    if loss not in LOSSES:
        c.fail("loss", f"is {loss!r}, expected one of {', '.join(LOSSES)}")
    pre = c.get(ckpt, "preprocess", dict)
    c.tensor(pre, "mean", (D,), "preprocess.mean")
    if pre.get("std") is not None:
        std = c.tensor(pre, "std", (D,), "preprocess.std")
        if not (std > 0).all():
            c.fail("preprocess.std", "has values <= 0")
    if pre.get("mode") not in ("pixel", "channel", "feature"):
        c.fail("preprocess.mode", f"is {pre.get('mode')!r}")
    return Header(list(classes), S, D, loss, pre, c.get(ckpt, "config", dict), features)


def _number_or_none(c, d, key):
    v = d.get(key)
    if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)):
        c.fail(key, f"is {v!r}, expected a number")
    return v


def load_model(path):
    """A model file (or a resume file of a single run) -> ModelFile; CheckpointError otherwise."""
    ckpt = _read(path)
    c = _Checker(path)
    h = _header(ckpt, c)
    if ckpt.get("kind") == "resume" and "model" not in ckpt:
        raise CheckpointError(f"{path}: a sweep's last.pt holds all its members; use a member's checkpoint.pt "
                              f"or the sweep's checkpoint.pt (its best member)")
    model = c.get(ckpt, "model", dict)
    W = c.tensor(model, "weight", (h.num_classes, h.in_features), "model.weight")
    b = c.tensor(model, "bias", (h.num_classes,), "model.bias")
    if ckpt.get("kind") == "resume":
        return ModelFile(h, W, b, int(ckpt["state"]["epoch"]), path=path)
    best = _number_or_none(c, ckpt, "best_val_acc")
    return ModelFile(h, W, b, c.get(ckpt, "epoch", int), best, ckpt.get("best_epoch"),
                     ckpt.get("history") or [], path)


def load_resume(path):
    """A run's last.pt -> (Header, TrainState); CheckpointError naming the file otherwise."""
    ckpt = _read(path)
    c = _Checker(path)
    h = _header(ckpt, c)
    if ckpt.get("kind") != "resume":
        raise CheckpointError(f"{path}: not a resumable training checkpoint (use a run's last.pt)")
    s = c.get(ckpt, "state", dict)
    members = c.get(s, "members", list, "state.members")
    K, C, D = len(members), h.num_classes, h.in_features
    if K < 1 or not all(isinstance(m, dict) and isinstance(m.get("name"), str) for m in members):
        c.fail("state.members", "is not a list of members")
    W = c.tensor(s, "weight", (K, C, D), "state.weight", finite=False)
    b = c.tensor(s, "bias", (K, C), "state.bias", finite=False)
    momentum = s.get("momentum")
    if momentum is not None:
        momentum = {"weight": c.tensor(momentum, "weight", (K, C, D), "state.momentum.weight", finite=False),
                    "bias": c.tensor(momentum, "bias", (K, C), "state.momentum.bias", finite=False)}
    state = TrainState(W, b, momentum, c.tensor(s, "best_weight", (K, C, D), "state.best_weight", finite=False),
                       c.tensor(s, "best_bias", (K, C), "state.best_bias", finite=False),
                       c.get(s, "epoch", int, "state.epoch"), c.get(s, "step", int, "state.step"), members,
                       s.get("partial"))
    return h, state


def best_path(path):
    """A run folder means its best model, checkpoint.pt; a file means itself."""
    if os.path.isdir(path):
        best = os.path.join(path, BEST)
        if not os.path.isfile(best):
            raise CheckpointError(f"{path}: no {BEST} in this run folder (it kept no model; see its metrics.json)")
        return best
    return path


def last_path(path):
    """A run folder means its last.pt; a file means itself. CheckpointError for a run folder that
    has no last.pt because its optimizer never writes one (lbfgs, random search: no resume)."""
    if not os.path.isdir(path):
        return path
    last = os.path.join(path, LAST)
    if not os.path.exists(last):
        try:
            with open(os.path.join(path, "config.json")) as f:
                optimizer = json.load(f).get("optimizer")
        except (OSError, ValueError, AttributeError):
            optimizer = None
        from ..names import SEARCHES
        if optimizer in ("lbfgs", *SEARCHES):
            raise CheckpointError(f"{path} was trained with --optimizer {optimizer}, which keeps no resumable state "
                                  f"(it ran to its end or kept its best so far in checkpoint.pt): start a new run")
    return last


def check_compatible(header, path, classes, image_size, in_features=None):
    """CheckpointError when the data does not fit the model: image size, feature count D (when
    given), class count or names."""
    if image_size != header.image_size:
        raise CheckpointError(f"{path}: trained on {header.image_size}px images, the data is {image_size}px "
                              f"(use --image-size {header.image_size})")
    if in_features is not None and in_features != header.in_features:
        raise CheckpointError(f"{path}: the model takes D = {header.in_features} features, the data has "
                              f"{in_features}: it was trained on other features (see its config.json)")
    if len(classes) != header.num_classes:
        raise CheckpointError(f"{path}: the model has {header.num_classes} classes, the data has {len(classes)}")
    if list(classes) != list(header.classes):
        diff = [f"{a}->{b}" for a, b in zip(header.classes, classes) if a != b]
        raise CheckpointError(f"{path}: the data's class folders differ from the model's "
                              f"({', '.join(diff[:3])}{', ...' if len(diff) > 3 else ''}): labels would be "
                              f"permuted")
