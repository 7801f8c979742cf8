"""The data a run holds: a split (uint8 images or features and their labels, in memory: Split; or
rows read on demand: the Streamed protocol), the data set of splits, the seeded validation carve,
and the file-system helpers every data module shares.

Shapes: N examples, images (N, 3, S, S) uint8 (S = image_size), labels (N,) int64.
"""
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Protocol

import torch

from ..errors import DataError

THREADS = max(1, min(8, os.cpu_count() or 1))   # decoding and hashing threads (Pillow, hashlib release the GIL)
DEFAULT_VAL_SIZE = 5000


@dataclass
class Split:
    """A split in memory: x (N, 3, S, S) uint8 images or (N, D) features, y (N,) int64; files (N,)
    source paths where there are any. streamed False: a run batches x itself (data.loaders)."""
    x: torch.Tensor
    y: torch.Tensor
    files: Optional[List[str]] = None
    streamed = False

    def __len__(self):
        return len(self.y)

    @property
    def n(self):
        return len(self.y)

    @property
    def d(self):
        """D: one example's values (3 S S for images)."""
        return self.x[0].numel()


class Streamed(Protocol):
    """A split whose (N, D) feature rows are read on demand, never held whole: a feature folder's
    split (features.store.FeatureSplit), a subset of its rows (data.featurize.Rows), a NumPy array
    (data.arrays.ArraySplit), a DataLoader's training split (data.arrays.LoaderSplit, read in its
    own batches). A run tells the two kinds apart by streamed, never by the attributes present."""
    streamed: bool          # True
    n: int
    d: int
    y: torch.Tensor         # (N,) int64, in memory

    def __len__(self) -> int: ...

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B,) sorted row indices -> (B, D) float rows on the CPU."""

    def chunks(self) -> Iterator[torch.Tensor]:
        """Every row once, in order, in (B, D) float chunks (the standardization's one pass)."""

    def release(self) -> None:
        """Let go of the pages read so far (memory-mapped files)."""


@dataclass
class DataSet:
    train: Split
    val: Split
    test: Optional[Split]
    classes: List[str]
    image_size: int
    source: Optional[dict] = None  # how to rebuild torchvision datasets for the DataLoader path



def carve_val(n, val_size, seed, *, unit="images"):
    """The validation split carved from n training examples, seeded: -> (train_idx, val_idx),
    each sorted. val_size None is the default, 5,000 examples or a fifth of a smaller set;
    DataError unless 1 <= val_size < n. Image data sets and feature folders carve the same way."""
    if val_size is None:
        val_size = max(1, min(DEFAULT_VAL_SIZE, n // 5))
    if not 1 <= val_size < n:
        raise DataError(f"--val-size {val_size} must be between 1 and {n - 1} (the training split has {n} {unit})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def take(split, idx):
    """The rows idx (a sorted index tensor) of a Split, its file names with them."""
    return Split(split.x[idx], split.y[idx], None if split.files is None else [split.files[i] for i in idx.tolist()])


def human_bytes(n):
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000


def error_reason(path, e):
    """One readable reason why path could not be used: no bare '[Errno N]'."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"it is a symlink to {os.readlink(path)}, which does not exist"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    return str(e) or type(e).__name__


def list_entries(folder):
    """scandir(folder) sorted by name, hidden names left out; DataError naming the folder if it cannot be read."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"cannot list {folder}: {error_reason(folder, e)}") from None

