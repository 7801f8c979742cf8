"""A caller's own features as the core's DataSet: what LinearProbe.fit is given (X, y, X_val,
y_val as torch tensors, NumPy arrays, memory-mapped arrays or a DataLoader of (x, y) batches),
checked and turned into the splits train.py's recipe trains on.

Shapes: N examples, D features; labels (N,) integers of any values, mapped to class indices
0..C-1 by their sorted order (`classes`, (C,)).

    data = fit_data(X, y, X_val, y_val, validation_fraction=0.2, seed=0, standardize=True)
    data.dataset, data.classes, data.in_memory, data.preprocess, data.loader
"""
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.utils.data

from .preprocess import Preprocess
from .split import DataSet, Split

CHUNK_ROWS = 8192          # rows per block where a memory-mapped X is read (finiteness, predictions)


class FitData(NamedTuple):
    """What fit_data makes of the caller's input: the DataSet, the sorted labels (C,), whether the
    training split lives in memory (the full-batch solvers need it), a fixed Preprocess (None: the
    recipe fits the standardization on the training split) and the caller's DataLoader (or None)."""
    dataset: DataSet
    classes: np.ndarray
    in_memory: bool
    preprocess: Optional[Preprocess]
    loader: Optional[torch.utils.data.DataLoader]


def fit_data(X, y, X_val, y_val, *, validation_fraction, seed, standardize):
    """X (N, D) tensor / array / memmap, or a DataLoader of (x, y) batches (y None), y (N,) -> FitData;
    ValueError naming the argument for input it refuses."""
    if isinstance(X, torch.utils.data.DataLoader):
        data, classes, pre = loader_dataset(X, y, X_val, y_val, standardize)
        return FitData(data, classes, False, pre, X)
    data, in_memory, classes = array_dataset(X, y, X_val, y_val, validation_fraction, seed)
    pre = None if standardize else Preprocess(torch.zeros(width(data.train)), None, "feature")
    return FitData(data, classes, in_memory, pre, None)


# --------------------------------------------------------------------------- tensors and arrays

def as_features(X, y, name="X"):
    """X (N, D) tensor or array, y (N,) integers or None -> (X as a detached float torch tensor, or the
    np.memmap itself, y as a NumPy int array or None), checked."""
    if isinstance(X, np.memmap):
        if X.ndim != 2:
            raise ValueError(f"{name} has shape {X.shape}; expected (N, D) features")
        if X.dtype not in (np.float16, np.float32, np.float64):
            raise ValueError(f"{name} holds {X.dtype}; expected floating-point features")
    else:
        if not isinstance(X, torch.Tensor):
            X = torch.as_tensor(np.asarray(X)) if not isinstance(X, np.ndarray) else torch.from_numpy(X)
        if X.dim() != 2:
            raise ValueError(f"{name} has shape {tuple(X.shape)}; expected (N, D) features")
        if not X.is_floating_point():
            X = X.float()
        X = X.detach()
    if X.shape[1] == 0:
        raise ValueError(f"{name} has 0 features per row")
    if y is None:
        return X, None
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y{name[1:]} has shape {y.shape}; expected (N,) labels")
    if len(y) != X.shape[0]:
        raise ValueError(f"y{name[1:]} has {len(y)} labels for {X.shape[0]} rows of {name}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        raise ValueError(f"y{name[1:]} holds {y.dtype}; expected integer class labels")
    check_finite(X, name)
    return X, y


def row_blocks(X):
    """X (N, D) tensor or memmap -> its rows as float tensors of at most CHUNK_ROWS rows (a memmap's
    blocks copied: its pages are read-only)."""
    for i in range(0, X.shape[0], CHUNK_ROWS):
        xb = X[i:i + CHUNK_ROWS]
        yield torch.from_numpy(np.array(xb)) if isinstance(xb, np.ndarray) else xb


def array_dataset(X, y, X_val, y_val, validation_fraction, seed):
    """-> (DataSet of Splits or streamed Rows, whether it lives in memory, the sorted labels (C,)).
    Without X_val, validation_fraction of the rows is carved out by a seeded permutation."""
    X, y = as_features(X, y)
    classes, labels = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y holds one class only ({classes[0]!r}); a classifier needs at least 2")
    labels = torch.from_numpy(labels.astype(np.int64).reshape(-1))
    names, n = [str(c) for c in classes], X.shape[0]
    if X_val is None:
        train_idx, val_idx = _carve(n, validation_fraction, seed)
    else:
        Xv, yv = as_features(X_val, y_val, "X_val")
        if Xv.shape[1] != X.shape[1]:
            raise ValueError(f"X_val has {Xv.shape[1]} features per row, X has {X.shape[1]}")
        val_labels = torch.from_numpy(_class_index(classes, yv, "y"))
    if isinstance(X, np.memmap):
        from .featurize import Rows
        whole = ArraySplit(X, labels)
        if X_val is None:
            train, val = Rows(whole, train_idx), Rows(whole, val_idx)
        else:
            train = Rows(whole, torch.arange(n))
            val = Rows(ArraySplit(Xv, val_labels), torch.arange(len(val_labels))) if isinstance(Xv, np.memmap) \
                else Split(Xv, val_labels)
        return DataSet(train, val, None, names, 32), False, classes
    if X_val is None:
        dev = X.device
        train = Split(X.index_select(0, train_idx.to(dev)), labels[train_idx])
        val = Split(X.index_select(0, val_idx.to(dev)), labels[val_idx])
    else:
        if isinstance(Xv, np.memmap):
            Xv = torch.from_numpy(np.asarray(Xv))
        train, val = Split(X, labels), Split(Xv, val_labels)
    return DataSet(train, val, None, names, 32), True, classes


def _carve(n, fraction, seed):
    """-> (train indices, validation indices), each sorted: a seeded share `fraction` of n rows."""
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise ValueError(f"validation_fraction {fraction!r} must be between 0 and 1 (or give X_val, y_val)")
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise ValueError(f"validation_fraction {fraction!r} leaves no training rows of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _class_index(classes, labels, source):
    """Validation labels -> their int64 class indices; ValueError for a label `source` does not hold."""
    unknown = np.setdiff1d(labels, classes)
    if len(unknown):
        raise ValueError(f"y_val holds labels not in {source}: {', '.join(map(repr, unknown[:5].tolist()))}")
    return np.searchsorted(classes, labels).astype(np.int64)


class ArraySplit:
    """A NumPy array's rows (a memory-mapped file larger than memory included) with the interface
    of a feature folder's split (features.store.FeatureSplit): n, d, y, rows(idx), release()."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.n, self.d = x.shape
        self.dtype = torch.float16 if x.dtype == np.float16 else torch.float32

    def rows(self, idx):
        return torch.from_numpy(np.ascontiguousarray(self.x[idx.numpy()]))

    def release(self):
        pass


def width(split):
    """A split's D: a streamed split's d, else its tensor's width."""
    return split.d if hasattr(split, "d") else split.x.shape[1]


def check_finite(X, name):
    """ValueError naming the first row of X (N, D) that holds NaN or inf; a memmap read in blocks."""
    if isinstance(X, np.ndarray):
        for i in range(0, X.shape[0], CHUNK_ROWS):
            if not np.isfinite(X[i:i + CHUNK_ROWS]).all():
                raise ValueError(f"{name} holds NaN or infinite values (row {i + _first_bad(X[i:i + CHUNK_ROWS])})")
        return
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name} holds NaN or infinite values (row {_first_bad(X)})")


def _first_bad(x):
    ok = torch.isfinite(torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x).all(1)
    return int((~ok).nonzero()[0, 0])


def merged(data):
    """train + validation as one training split (refit), validation kept for the run's bookkeeping."""
    tr, va = data.train, data.val
    if not hasattr(tr, "x"):
        raise ValueError("refit=True needs X in memory (not a memory-mapped array)")
    x = torch.cat([tr.x, va.x.to(tr.x.device)])
    return DataSet(Split(x, torch.cat([tr.y, va.y])), va, None, data.classes, data.image_size)


# --------------------------------------------------------------------------- DataLoaders

def loader_dataset(loader, y, X_val, y_val, standardize):
    """A DataLoader of (x, y) batches -> (DataSet, classes (C,), its Preprocess): one pass for the
    labels, shapes and finiteness, one for the standardization; validation from X_val (tensors, or a
    DataLoader with y_val None)."""
    if y is not None:
        raise ValueError("y: a DataLoader yields its own labels; pass y=None")
    if X_val is None:
        raise ValueError("X_val: a DataLoader cannot be split; give X_val, y_val (tensors or a DataLoader with "
                         "y_val=None)")
    n, d, labels = scan_loader(loader)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"the DataLoader's labels hold one class only ({classes[0]!r}); a classifier needs 2")
    mapped = torch.from_numpy(np.searchsorted(classes, labels).astype(np.int64))
    train = LoaderSplit(loader, n, d, mapped)
    if isinstance(X_val, torch.utils.data.DataLoader):
        if y_val is not None:
            raise ValueError("y_val: a DataLoader yields its own labels; pass y_val=None")
        xs, ys = zip(*[(xb.reshape(len(xb), -1), torch.as_tensor(yb)) for xb, yb in X_val])
        X_val, y_val = torch.cat(xs), torch.cat(ys)
    elif y_val is None:
        raise ValueError("give both X_val and y_val")
    Xv, yv = as_features(X_val.reshape(len(X_val), -1) if hasattr(X_val, "reshape") else X_val, y_val, "X_val")
    if Xv.shape[1] != d:
        raise ValueError(f"X_val has {Xv.shape[1]} features per row, the DataLoader's batches {d}")
    val = Split(torch.as_tensor(Xv), torch.from_numpy(_class_index(classes, yv, "the DataLoader's")))
    pre = Preprocess.fit_features(train.chunks()) if standardize else Preprocess(torch.zeros(d), None, "feature")
    return DataSet(train, val, None, [str(c) for c in classes], 32), classes, pre


def scan_loader(loader):
    """One pass over a DataLoader of (x, y) -> (N, D, labels (N,) as given): shapes and values checked."""
    n, d, labels = 0, None, []
    for i, batch in enumerate(loader):
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            raise ValueError("X: a DataLoader must yield (x, y) batches")
        xb, yb = batch
        xb, yb = torch.as_tensor(xb), torch.as_tensor(yb)
        width = xb[0].numel() if len(xb) else 0
        if d is None:
            d = width
        if width != d or width == 0:
            raise ValueError(f"X: batch {i} has {width} features per example, the first had {d}")
        if yb.shape != (len(xb),) or yb.is_floating_point():
            raise ValueError(f"X: batch {i} has labels of shape {tuple(yb.shape)} ({yb.dtype}) for {len(xb)} examples; "
                             f"expected (B,) integers")
        if not bool(torch.isfinite(xb).all()):
            raise ValueError(f"X: batch {i} holds NaN or infinite values")
        n += len(xb)
        labels.append(yb.cpu())
    if not n:
        raise ValueError("X: the DataLoader yields no examples")
    return n, d, torch.cat(labels).numpy()


class LoaderSplit:
    """The training split of a DataLoader, as the recipe sees it: n, d, y (mapped labels), chunks()
    (the flattened batches, for the standardization's one streamed pass). Batches come from
    DataLoaderBatches, never by row."""

    def __init__(self, loader, n, d, y):
        self.loader, self.n, self.d, self.y = loader, n, d, y

    def __len__(self):
        return self.n

    def chunks(self):
        for xb, _ in self.loader:
            yield xb.reshape(len(xb), -1).float()

    def rows(self, idx):
        raise TypeError("a DataLoader's rows are read in its own batches")

    def release(self):
        pass


class DataLoaderBatches:
    """A DataLoader of (x, y) batches with the training loaders' interface: len() and
    batches(epoch, start) of (x float32 (B, D) standardized on `device`, y int64 (B,) class indices).
    The order is the DataLoader's own (its sampler shuffles)."""

    def __init__(self, loader, preprocess, classes, device):
        self.loader, self.device = loader, torch.device(device)
        self.preprocess = preprocess.to(self.device)
        self.classes = torch.as_tensor(classes, device=self.device)

    def __len__(self):
        return len(self.loader)

    def batches(self, epoch=0, start=0):
        for i, (xb, yb) in enumerate(self.loader):
            if i < start:
                continue
            x = self.preprocess(xb.reshape(len(xb), -1).to(self.device, non_blocking=True))
            yield x, torch.searchsorted(self.classes, torch.as_tensor(yb).to(self.device))
