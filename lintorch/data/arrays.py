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

from .inputs import (as_examples, as_features, batch_labels, class_index, flatten, input_record,
                     label_kind, sorted_classes)
from .preprocess import Preprocess
from .split import DataSet, Split

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

def array_dataset(X, y, X_val, y_val, validation_fraction, seed):
    """-> (DataSet of Splits or streamed Rows, whether it lives in memory, the sorted labels (C,)).
    Without X_val, validation_fraction of the rows is carved out by a seeded permutation; None:
    nothing is carved, every row trains (the validation split is the training split itself)."""
    X, y = as_features(X, y)
    classes, labels = sorted_classes(y, "y")
    labels = torch.from_numpy(labels)
    names, n = [str(c) for c in classes], X.shape[0]
    source = input_record(classes, (X.shape[1],))
    if X_val is None:
        train_idx, val_idx = (torch.arange(n),) * 2 if validation_fraction is None else \
            _carve(n, validation_fraction, seed)
    else:
        Xv, yv = as_features(X_val, y_val, "X_val")
        if Xv.shape[1] != X.shape[1]:
            raise ValueError(f"X_val has {Xv.shape[1]} features per row, X has {X.shape[1]}")
        val_labels = torch.from_numpy(class_index(classes, yv, "y_val", "y"))
    if isinstance(X, np.memmap):
        from .featurize import Rows
        whole = ArraySplit(X, labels)
        if X_val is None:
            train, val = Rows(whole, train_idx), Rows(whole, val_idx)
        else:
            train = Rows(whole, torch.arange(n))
            val = Rows(ArraySplit(Xv, val_labels), torch.arange(len(val_labels))) if isinstance(Xv, np.memmap) \
                else Split(Xv, val_labels)
        return DataSet(train, val, None, names, 32, source), False, classes
    if X_val is None and validation_fraction is None:
        train = val = Split(X, labels)
    elif X_val is None:
        dev = X.device
        train = Split(X.index_select(0, train_idx.to(dev)), labels[train_idx])
        val = Split(X.index_select(0, val_idx.to(dev)), labels[val_idx])
    else:
        if isinstance(Xv, np.memmap):
            Xv = torch.from_numpy(np.asarray(Xv))
        train, val = Split(X, labels), Split(Xv, val_labels)
    return DataSet(train, val, None, names, 32, source), True, classes


def _carve(n, fraction, seed):
    """-> (train indices, validation indices), each sorted: a seeded share `fraction` of n rows."""
    if isinstance(fraction, bool) or not (isinstance(fraction, (int, float, np.floating)) and 0 < fraction < 1):
        raise ValueError(f"validation_fraction {fraction!r} must be between 0 and 1 (or give X_val, y_val)")
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise ValueError(f"validation_fraction {fraction!r} leaves no training rows of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class ArraySplit:
    """A NumPy array's rows (a memory-mapped file larger than memory included) with the interface
    of a feature folder's split (data.split.Streamed): n, d, y, rows(idx), release()."""
    streamed = True

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.n, self.d = x.shape
        self.dtype = torch.float16 if x.dtype == np.float16 else torch.float32

    def rows(self, idx):
        return torch.from_numpy(np.ascontiguousarray(self.x[idx.numpy()]))

    def release(self):
        pass


def width(split):
    """A split's D (Split.d or a streamed split's)."""
    return split.d


def merged(data):
    """train + validation as one training split (refit), validation kept for the run's bookkeeping."""
    tr, va = data.train, data.val
    if tr.streamed:
        raise ValueError("refit=True needs X in memory (not a memory-mapped array)")
    x = torch.cat([tr.x, va.x.to(tr.x.device)])
    return DataSet(Split(x, torch.cat([tr.y, va.y])), va, None, data.classes, data.image_size, data.source)


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
    n, shape, labels = scan_loader(loader)
    d = int(np.prod(shape))
    classes, mapped = sorted_classes(labels, "the DataLoader's labels")
    train = LoaderSplit(loader, n, shape, torch.from_numpy(mapped))
    if isinstance(X_val, torch.utils.data.DataLoader):
        if y_val is not None:
            raise ValueError("y_val: a DataLoader yields its own labels; pass y_val=None")
        xs, ys = zip(*[(flatten(torch.as_tensor(xb), shape, f"X_val batch {i}"), batch_labels(yb))
                       for i, (xb, yb) in enumerate(_pairs(X_val, "X_val"))])
        X_val, y_val = torch.cat(xs), np.concatenate(ys)
    elif y_val is None:
        raise ValueError("give both X_val and y_val")
    else:
        X_val = flatten(as_examples(X_val, "X_val"), shape, "X_val")
    Xv, yv = as_features(X_val, y_val, "X_val")
    val = Split(torch.as_tensor(Xv), torch.from_numpy(class_index(classes, yv, "y_val", "the DataLoader's labels")))
    pre = Preprocess.fit_features(train.chunks()) if standardize else Preprocess(torch.zeros(d), None, "feature")
    data = DataSet(train, val, None, [str(c) for c in classes], 32, input_record(classes, shape))
    return data, classes, pre


def _pairs(loader, name):
    for batch in loader:
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            raise ValueError(f"{name}: a DataLoader must yield (x, y) batches")
        yield batch


def scan_loader(loader):
    """One pass over a DataLoader of (x, y) -> (N, the shape of one example, labels (N,) as given):
    shapes and values checked."""
    n, shape, labels = 0, None, []
    for i, (xb, yb) in enumerate(_pairs(loader, "X")):
        xb, yb = torch.as_tensor(xb), batch_labels(yb)
        if xb.dim() < 2 or xb.is_complex() or xb.layout != torch.strided:
            raise ValueError(f"X: batch {i} is a {xb.layout} {xb.dtype} tensor of shape {tuple(xb.shape)}; expected "
                             f"(B, ...) real examples")
        if shape is None:
            shape = tuple(xb.shape[1:])
        if tuple(xb.shape[1:]) != shape or not np.prod(shape):
            raise ValueError(f"X: batch {i} has examples of shape {tuple(xb.shape[1:])}, the first had {shape}")
        if yb.shape != (len(xb),):
            raise ValueError(f"X: batch {i} has labels of shape {yb.shape} for {len(xb)} examples; expected (B,)")
        label_kind(yb, f"X: batch {i}'s labels")
        if not bool(torch.isfinite(xb).all()):
            raise ValueError(f"X: batch {i} holds NaN or infinite values")
        n += len(xb)
        labels.append(yb)
    if not n:
        raise ValueError("X: the DataLoader yields no examples")
    return n, shape, np.concatenate(labels)


class LoaderSplit:
    """The training split of a DataLoader, as the recipe sees it: n, d, y (mapped labels), chunks()
    (the flattened batches, for the standardization's one streamed pass). Batches come from
    DataLoaderBatches, never by row."""
    streamed = True

    def __init__(self, loader, n, shape, y):
        self.loader, self.n, self.shape, self.y = loader, n, shape, y
        self.d = int(np.prod(shape))

    def __len__(self):
        return self.n

    def chunks(self):
        for i, (xb, _) in enumerate(_pairs(self.loader, "X")):
            yield flatten(torch.as_tensor(xb), self.shape, f"X: batch {i} (standardization pass)").float()

    def rows(self, idx):
        raise TypeError("a DataLoader's rows are read in its own batches")

    def release(self):
        pass


class DataLoaderBatches:
    """A DataLoader of (x, y) batches with the training loaders' interface: len() and
    batches(epoch, start) of (x float32 (B, D) standardized on `device`, y int64 (B,) class indices).
    The order is the DataLoader's own (its sampler shuffles). A batch whose examples change shape,
    or whose labels the first pass never saw, is a ValueError naming it (checked on the CPU, before
    the copy to `device`)."""

    def __init__(self, loader, preprocess, classes, device, shape):
        self.loader, self.device, self.shape = loader, torch.device(device), tuple(shape)
        self.preprocess = preprocess.to(self.device)
        self.classes = classes

    def __len__(self):
        return len(self.loader)

    def batches(self, epoch=0, start=0):
        for i, (xb, yb) in enumerate(_pairs(self.loader, "X")):
            if i < start:
                continue
            where = f"X: epoch {epoch + 1}, batch {i}"
            xb = torch.as_tensor(xb)
            if tuple(xb.shape[1:]) != self.shape:
                raise ValueError(f"{where} has examples of shape {tuple(xb.shape[1:])}, the first pass had "
                                 f"{self.shape}")
            y = class_index(self.classes, batch_labels(yb), f"{where}'s labels", "the DataLoader's first pass")
            x = self.preprocess(xb.reshape(len(xb), -1).to(self.device, non_blocking=True))
            yield x, torch.from_numpy(y).to(self.device, non_blocking=True)
