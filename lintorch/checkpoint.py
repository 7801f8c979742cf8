"""Checkpoints: plain types and tensors only, so torch.load(weights_only=True) reads them anywhere.

A checkpoint is a dict: format, version, model (state_dict), preprocess, classes, image_size,
in_features, num_classes, loss, config (vars(args)), epoch, step, global_step, optimizer,
best_val_acc. Writes are atomic (temp file, fsync, rename): a killed process leaves the old
file or the new one, never a torn one.
"""
import os
import pickle
import zipfile

import torch

FORMAT = "lintorch-checkpoint"
VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be used: the message names the file and the problem."""


def save_atomic(obj, path):
    """torch.save obj to path via a temp file in the same folder, fsync'd, then renamed."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    try:  # make the rename itself durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def resolve(path):
    """A run folder means its last.pt; a file means itself."""
    return os.path.join(path, "last.pt") if os.path.isdir(path) else path


def load_checkpoint(path, map_location="cpu"):
    """-> the checkpoint dict; CheckpointError naming the file if it is missing, truncated,
    not lintorch's, or a pickle that would run code (refused by weights_only=True)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise CheckpointError(f"{path}: refused, not a plain-data checkpoint (weights_only load: {first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or not a torch checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lintorch checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')} is not supported "
                              f"(this lintorch reads version {VERSION})")
    return ckpt


def check_compatible(ckpt, path, classes, image_size):
    """CheckpointError when the data does not fit the model (class count or image size)."""
    if image_size != ckpt["image_size"]:
        raise CheckpointError(f"{path}: trained on {ckpt['image_size']}px images, the data is {image_size}px "
                              f"(use --image-size {ckpt['image_size']})")
    if len(classes) != ckpt["num_classes"]:
        raise CheckpointError(f"{path}: the model has {ckpt['num_classes']} classes, the data has {len(classes)}")
