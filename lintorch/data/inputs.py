"""A caller's X and y as LinearProbe takes them, checked: features (N, D) of real numbers from a
tensor, an array, a memory-mapped array or anything np.asarray reads; labels (N,) of any kind
scikit-learn classifies; examples of any shape flattened the way training flattened them; what a
checkpoint records of them. Every refusal is a ValueError/TypeError naming the argument.

Shapes: N examples, D features, C classes (labels sorted as np.unique sorts them).
"""
import warnings

import numpy as np
import torch
import torch.utils.data

CHUNK_ROWS = 8192          # rows per block where a memory-mapped X is read (finiteness, predictions)
COUNTED_SPAN = 1 << 16     # integer labels spanning fewer values are counted by sorted_classes, not sorted


def as_features(X, y, name="X"):
    """X (N, D) tensor or array (or anything np.asarray reads: lists, pandas frames), y (N,) labels
    or None -> (X as a detached floating torch tensor, or the np.memmap itself; y as a 1-D NumPy
    array or None), checked: ValueError/TypeError naming the argument."""
    X = as_matrix(X, name)
    if y is None:
        return X, None
    y = as_labels(y, X.shape[0], "y" + name[1:], name)
    check_finite(X, name)
    return X, y


def as_matrix(X, name="X"):
    """X (N, D) of real numbers -> a detached floating torch tensor (float16/32/64 kept, integers and
    bools as float32), or the np.memmap itself (read in blocks later); N >= 1, D >= 1. TypeError for
    what holds no real numbers (sparse, complex, strings), ValueError for the wrong shape."""
    if X is None:
        raise TypeError(f"{name} is None; expected (N, D) features")
    if _is_scipy_sparse(X):
        raise TypeError(f"{name} is a scipy.sparse matrix; LinearProbe takes dense features: pass {name}.toarray()")
    if isinstance(X, np.memmap):
        if X.ndim != 2:
            raise ValueError(f"{name} has shape {X.shape}; expected (N, D) features")
        if X.dtype not in (np.float16, np.float32, np.float64):
            raise ValueError(f"{name} holds {X.dtype}; expected floating-point features")
        _check_size(X.shape, name)
        return X
    if isinstance(X, torch.Tensor):
        if X.layout != torch.strided:
            raise TypeError(f"{name} is a sparse tensor ({X.layout}); LinearProbe takes dense features: "
                            f"pass {name}.to_dense()")
        if X.is_meta:
            raise ValueError(f"{name} is on the meta device: it has a shape but no values")
    else:
        X = _numeric_array(X, name)
    if X.is_complex():
        raise TypeError(f"{name} holds complex numbers ({X.dtype}); expected real features")
    if X.dim() != 2:
        hint = (f": {name}.reshape(-1, 1) for one feature, {name}.reshape(1, -1) for one example"
                if X.dim() == 1 else "")
        raise ValueError(f"{name} has shape {tuple(X.shape)}; expected (N, D) features{hint}")
    _check_size(tuple(X.shape), name)
    if not X.is_floating_point():
        X = X.float()
    return X.detach()


def _check_size(shape, name):
    if shape[0] == 0:
        raise ValueError(f"{name} has 0 rows; expected at least one example")
    if shape[1] == 0:
        raise ValueError(f"{name} has 0 features per row")


def _is_scipy_sparse(X):
    return type(X).__module__.startswith("scipy.sparse") or hasattr(X, "tocsr")


def _numeric_array(X, name):
    """Anything np.asarray reads -> a torch tensor sharing its memory where it can (a byte-swapped,
    reversed or object array copied). TypeError for strings, objects that are not numbers, ragged
    lists."""
    try:
        a = np.asarray(X)
    except (ValueError, TypeError) as e:     # ragged nested lists
        raise ValueError(f"{name} cannot be read as an (N, D) array: {e}") from None
    if a.dtype.kind == "O":
        try:
            a = a.astype(np.float64)
        except (ValueError, TypeError):
            raise TypeError(f"{name} holds Python objects that are not numbers; expected (N, D) real "
                            f"features") from None
    if a.dtype.kind not in "biufc":
        raise TypeError(f"{name} holds {a.dtype} values; expected (N, D) real features")
    if a.dtype.kind == "c":
        raise TypeError(f"{name} holds complex numbers ({a.dtype}); expected real features")
    if not a.dtype.isnative or any(s < 0 for s in a.strides):
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
    with warnings.catch_warnings():         # a read-only array: read, never written
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(a)


def as_labels(y, n, name="y", rows_name="X"):
    """y: n labels of any kind scikit-learn classifies (integers, bools, integral floats, strings,
    Python objects that are strings or integers), a tensor, array, list or pandas Series -> a 1-D
    NumPy array. ValueError/TypeError naming `name` for another shape, length or kind."""
    if y is None:
        raise TypeError(f"{name} is None; expected ({n},) class labels")
    if isinstance(y, torch.Tensor):
        if y.layout != torch.strided or y.is_meta:
            raise TypeError(f"{name} is a {'meta' if y.is_meta else 'sparse'} tensor; expected dense labels")
        y = y.detach().cpu().numpy()
    elif _is_scipy_sparse(y):
        raise TypeError(f"{name} is a scipy.sparse matrix; expected (N,) labels")
    y = np.asarray(y)
    if y.ndim != 1:
        hint = f" (a column: pass {name}.ravel())" if y.ndim == 2 and y.shape[1] == 1 else ""
        raise ValueError(f"{name} has shape {y.shape}; expected ({n},) labels, one per row of {rows_name}{hint}")
    if len(y) != n:
        raise ValueError(f"{name} has {len(y)} labels for {n} rows of {rows_name}")
    label_kind(y, name)
    return y


def label_kind(y, name="y"):
    """-> "number" or "string": what the labels y (1-D array) are, checked: integers, bools,
    finite integral floats, strings, or objects that are all strings or all integers (scikit-learn's
    classification targets). ValueError for continuous or mixed labels."""
    kind = y.dtype.kind
    if kind in "biu":
        return "number"
    if kind == "f":
        if not np.isfinite(y).all():
            raise ValueError(f"{name} holds NaN or infinite labels")
        if (y != np.round(y)).any():
            raise ValueError(f"{name} holds non-integral floats (e.g. {y[y != np.round(y)][0]!r}): a classifier "
                             f"needs discrete labels, not a continuous target")
        return "number"
    if kind in "US":
        return "string"
    if kind == "O":
        if all(isinstance(v, str) for v in y):
            return "string"
        if all(isinstance(v, (int, np.integer)) for v in y):
            return "number"
        raise ValueError(f"{name} holds labels of mixed or unsupported types "
                         f"({', '.join(sorted({type(v).__name__ for v in y}))}); expected all strings or all integers")
    raise ValueError(f"{name} holds {y.dtype} labels; expected integers, bools, integral floats or strings")


def row_blocks(X):
    """X (N, D) tensor or memmap -> its rows as float tensors of at most CHUNK_ROWS rows (a memmap's
    blocks copied: its pages are read-only)."""
    for i in range(0, X.shape[0], CHUNK_ROWS):
        xb = X[i:i + CHUNK_ROWS]
        yield torch.from_numpy(np.array(xb)) if isinstance(xb, np.ndarray) else xb


def sorted_classes(y, name="y"):
    """y (N,) labels -> (classes (C,) sorted as np.unique sorts them, their indices (N,) int64);
    ValueError for fewer than 2 classes. Integer labels spanning fewer than COUNTED_SPAN values are
    counted, not sorted (np.unique's answer in one pass)."""
    if y.dtype.kind in "iu" and y.dtype != np.uint64 and len(y) and int(y.max()) - int(y.min()) < COUNTED_SPAN:
        lo = int(y.min())
        offset = y.astype(np.intp) - lo                               # (N,) in [0, span)
        present = np.bincount(offset) > 0
        classes = (np.flatnonzero(present) + lo).astype(y.dtype)
        index = (np.cumsum(present) - 1)[offset]                      # each value's rank among the present ones
    else:
        classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"{name} holds one class only ({classes[:1].tolist()[0]!r}); a classifier needs at least 2")
    return classes, index.astype(np.int64).reshape(-1)


def class_index(classes, labels, name, source):
    """labels (M,) -> their int64 indices into classes (C,); ValueError naming `name` for a label
    `source` never held, or labels of another kind (strings against numbers)."""
    if label_kind(labels, name) != label_kind(classes, source):
        raise ValueError(f"{name} holds {label_kind(labels, name)}s, {source} held {label_kind(classes, source)}s "
                         f"({labels[:3].tolist()} against {classes[:3].tolist()})")
    index = np.searchsorted(classes, labels)          # classes is sorted: a label is known where it is found there
    known = classes[np.minimum(index, len(classes) - 1)] == labels
    if not known.all():
        unknown = np.unique(labels[~known])
        raise ValueError(f"{name} holds labels not in {source}: {', '.join(map(repr, unknown[:5].tolist()))}")
    return index.astype(np.int64)


def input_record(classes, sample_shape):
    """What a checkpoint keeps of a probe's inputs (its header's features dict; plain types, so
    torch.load(weights_only=True) reads it): the labels (C,) as given and their dtype, and the shape
    of one example before flattening (a DataLoader's images) or (D,)."""
    return {"name": "tensor", "labels": classes.tolist(), "labels_dtype": classes.dtype.str,
            "sample_shape": [int(s) for s in sample_shape]}


def recorded_classes(record):
    """input_record's labels -> the classes array (C,) in their own dtype, or None (not recorded)."""
    if not isinstance(record, dict) or "labels" not in record:
        return None
    return np.array(record["labels"], dtype=np.dtype(record.get("labels_dtype", None)))


def check_finite(X, name):
    """ValueError naming the first row of X (N, D) that holds NaN or inf; a memmap read in blocks."""
    if isinstance(X, np.ndarray):
        for i in range(0, X.shape[0], CHUNK_ROWS):
            if not np.isfinite(X[i:i + CHUNK_ROWS]).all():
                raise ValueError(f"{name} holds NaN or infinite values (row {i + _first_bad(X[i:i + CHUNK_ROWS])})")
        return
    # a finite sum has no NaN or inf term (either makes every sum holding it NaN or inf); the sum
    # reads X once, without isfinite's (N, D) mask (~10x faster on 2,000 x 64); an overflowed sum
    # of finite values falls through to the element test
    if not bool(X.sum().isfinite()) and not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name} holds NaN or infinite values (row {_first_bad(X)})")


def _first_bad(x):
    ok = torch.isfinite(torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x).all(1)
    return int((~ok).nonzero()[0, 0])


def as_examples(X, name="X"):
    """X (N, ...) examples of any shape (images) -> a tensor (a memmap kept as it is), for flatten."""
    if isinstance(X, (torch.Tensor, np.memmap)) or _is_scipy_sparse(X):
        return X
    return _numeric_array(X, name)


def flatten(X, sample_shape, name="X"):
    """X (N, *sample_shape) -> (N, D) flattened as training flattened its examples (row-major, one
    row per example); X (N, D) is taken as already flattened. ValueError for another example shape:
    flattening it would silently mix up the features."""
    shape = tuple(sample_shape)
    if X.ndim <= 2 or tuple(X.shape[1:]) == shape and len(shape) == 1:
        return X
    if tuple(X.shape[1:]) != shape:
        raise ValueError(f"{name} has examples of shape {tuple(X.shape[1:])}; this probe was trained on examples "
                         f"of shape {shape} (flattened to {int(np.prod(shape))} features)")
    return X.reshape(X.shape[0], -1)


def batch_labels(yb):
    """A batch's labels as a DataLoader collates them (a tensor, or a list of strings) -> 1-D NumPy."""
    if isinstance(yb, torch.Tensor):
        return yb.detach().cpu().numpy().reshape(-1) if yb.dim() <= 1 else yb.detach().cpu().numpy()
    return np.asarray(yb)


class FeatureBlocks:
    """What a fitted probe is asked to predict, as checked blocks of rows: X (N, D) features, (N, ...)
    examples shaped as in training (flattened the same way), or a DataLoader of x or (x, y)
    batches. Iterating yields float tensors (B, D); ValueError naming the first row that holds
    NaN/inf, or another width. labels: a DataLoader's labels (N,) once iterated (else None)."""

    def __init__(self, X, sample_shape, width, name="X"):
        self.X, self.shape, self.width, self.name, self.labels = X, tuple(sample_shape), width, name, None

    def matrix(self, X, name):
        X = as_matrix(flatten(as_examples(X, name), self.shape, name), name)
        if X.shape[1] != self.width:
            raise ValueError(f"{name} has {X.shape[1]} features per row; this probe was fitted on {self.width}")
        return X

    def __iter__(self):
        if isinstance(self.X, torch.utils.data.DataLoader):
            labels, row = [], 0
            for i, batch in enumerate(self.X):
                xb, yb = batch if isinstance(batch, (list, tuple)) and len(batch) == 2 else (batch, None)
                xb = self.matrix(xb, f"{self.name}: batch {i}")
                yield self._finite(xb, f"{self.name}: batch {i}", 0)
                labels.append(None if yb is None else batch_labels(yb))
                row += len(xb)
            self.labels = np.concatenate(labels) if labels and all(v is not None for v in labels) else None
            return
        X = self.matrix(self.X, self.name)
        for i, xb in enumerate(row_blocks(X)):
            yield self._finite(xb, self.name, i * CHUNK_ROWS)

    @staticmethod
    def _finite(xb, name, first_row):
        bad = ~torch.isfinite(xb).all(1)
        if bool(bad.any()):
            raise ValueError(f"{name} holds NaN or infinite values (row {first_row + int(bad.nonzero()[0, 0])})")
        return xb
