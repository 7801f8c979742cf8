"""Precomputed feature files: the folder layout, a validating reader, a streaming loader, a writer.

Shapes: N examples, D features, C classes, B batch size. A feature folder DIR holds
  classes.json                  ["airplane", ...] (C names; labels index it)
  train.npy + train_labels.npy  x (N, D) float16/float32 in NumPy's .npy format, y (N,) int64
  or train.pt                   {"x": (N, D) float16/float32, "y": (N,) int64} (torch.save)
  test.npy + test_labels.npy, or test.pt   optional, same layout
  extractor.json                written by ``python -m lintorch.extract``: how the features were made,
                                and each split's checksum (x's bytes, then y's as int64), checked on every read
.npy is the format for large sets: it is memory-mapped, and the loader drops the pages of each
batch after copying it (madvise DONTNEED), so resident memory is bounded by the batch pipeline,
not by the file. .pt is read with torch.load(mmap=True, weights_only=True).
"""
import contextlib
import errno
import json
import mmap
import os
import re
import stat
import warnings

import numpy as np
import torch

from ..data.loaders import epoch_order
from ..errors import FeatureError
from ..output.atomic import torch_save_atomic, write_atomic
from ..output.checksum import RunningChecksum

FORMATS = ("npy", "pt")
X_DTYPES = {np.dtype("float16"): torch.float16, np.dtype("float32"): torch.float32}


MAX_JSON_BYTES = 16 << 20      # classes.json, extractor.json: far more than any real one holds
KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_size(path, limit=None):
    """The size of path when it is a regular file (symlinks followed) of at most `limit` bytes;
    None when nothing is there. Every file of a feature folder is asked this before it is opened:
    a FIFO or a device would block or stream forever."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise FeatureError(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in KINDS if test(st.st_mode)), "not a file")
        raise FeatureError(f"{path} is {kind}, not a regular file")
    if limit is not None and st.st_size > limit:
        raise FeatureError(f"{path} is {st.st_size} bytes, more than the {limit} a feature folder's JSON may hold")
    return st.st_size


def read_json(path):
    """A feature folder's small JSON file -> its value, None when absent; FeatureError otherwise."""
    if file_size(path, MAX_JSON_BYTES) is None:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise FeatureError(f"{path} is not readable JSON ({e})") from None


def read_classes(folder):
    """folder/classes.json -> C distinct, non-empty class names (labels index them)."""
    path = os.path.join(folder, "classes.json")
    classes = read_json(path)
    if classes is None:
        raise FeatureError(f"no classes.json in {folder}: expected a feature folder written by "
                           f"python -m lintorch.extract")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise FeatureError(f"{path} must be a JSON list of at least 2 class names")
    empty = [i for i, c in enumerate(classes) if not c.strip()]
    if empty:
        raise FeatureError(f"{path}: class {empty[0]} has an empty name; every class needs one")
    seen = set()
    twice = sorted({c for c in classes if c in seen or seen.add(c)})
    if twice:
        raise FeatureError(f"{path} names {', '.join(map(repr, twice[:5]))} more than once: class names must be "
                           f"distinct (labels index the list)")
    return classes


def split_format(folder, split):
    """The one format split is stored in -> "npy", "pt" or None (absent); FeatureError when both
    are there (which would win is a guess) or a file is not a regular file."""
    found = [e for e in FORMATS if file_size(os.path.join(folder, f"{split}.{e}")) is not None]
    if len(found) > 1:
        raise FeatureError(f"{folder} holds both {split}.npy and {split}.pt: one format per folder (remove the "
                           f"stale one, or re-extract with --overwrite)")
    return found[0] if found else None


def write_classes(folder, classes):
    os.makedirs(folder, exist_ok=True)
    write_atomic(os.path.join(folder, "classes.json"), lambda f: json.dump(list(classes), f), mode="w")


def map_npy(path, ndim, dtypes, expected):
    """A .npy file, memory-mapped -> (mmap or None, array view). Regular file, header read, the
    size checked against the header before anything is mapped; dtypes None: any integer dtype."""
    size = file_size(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read[version](f)
            offset = f.tell()
    except (ValueError, OSError) as e:
        raise FeatureError(f"{path} is not a NumPy .npy file ({e})") from None
    ok = dtype in dtypes if dtypes is not None else (np.issubdtype(dtype, np.integer) and not dtype.hasobject)
    if len(shape) != ndim or fortran or not ok:
        raise FeatureError(f"{path} holds {dtype} {shape}{' (Fortran order)' if fortran else ''}; expected {expected}")
    count = int(np.prod(shape))
    if size < offset + count * dtype.itemsize:
        raise FeatureError(f"{path} is truncated: {size} bytes for a {shape} {dtype} array")
    if not count:
        return None, np.zeros(shape, dtype)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return mm, np.frombuffer(mm, dtype, count, offset).reshape(shape)


class FeatureSplit:
    """One split of a feature folder, validated: x (N, D) rows on demand, y (N,) int64 in memory.
    `checksum` (what extract wrote in extractor.json): the files' bytes must match it."""
    streamed = True               # a data.split.Streamed split

    def __init__(self, folder, split="train", check_finite=True, chunk_bytes=16 << 20, classes=None,
                 checksum=None):
        self.folder, self.split = folder, split
        self.classes = read_classes(folder) if classes is None else classes
        fmt = split_format(folder, split)
        if fmt is None:
            raise FeatureError(f"no {split}.npy or {split}.pt in {folder}")
        self.format = fmt
        path = os.path.join(folder, f"{split}.{fmt}")
        self._open_npy(path) if fmt == "npy" else self._open_pt(path)
        self.n, self.d = self.x.shape
        if self.d == 0:
            raise FeatureError(f"{self.where} holds {self.n} rows of D = 0 features: nothing to classify")
        if self.y.shape != (self.n,):
            raise FeatureError(f"{self.where}: {self.n} feature rows but labels of shape {tuple(self.y.shape)}")
        if self.n and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes)):
            raise FeatureError(f"{self.where}: labels span {int(self.y.min())}..{int(self.y.max())}, outside "
                               f"0..{len(self.classes) - 1} for the {len(self.classes)} classes in classes.json")
        self.chunk_rows = max(1, chunk_bytes // max(1, self.d * self.itemsize))
        if check_finite or checksum is not None:
            self.verify(checksum)

    def _open_npy(self, path):
        self.where = path
        self._mmap, self.x = map_npy(path, 2, X_DTYPES, "a C-order (N, D) float16 or float32 array")
        self.itemsize = self.x.dtype.itemsize
        self.dtype = X_DTYPES[self.x.dtype]
        lpath = os.path.join(self.folder, f"{self.split}_labels.npy")
        if file_size(lpath) is None:
            raise FeatureError(f"{path} has no labels file {lpath}")
        _, y = map_npy(lpath, 1, None, "(N,) integer labels")
        self.y = torch.from_numpy(y.astype(np.int64))

    def _open_pt(self, path):
        self.where, self._mmap = path, None
        try:
            with warnings.catch_warnings():       # torch's notes on a sparse tensor's load: refused below anyway
                warnings.simplefilter("ignore")
                d = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise FeatureError(f"{path} is not a readable torch file ({type(e).__name__})") from None
        if not isinstance(d, dict) or not torch.is_tensor(d.get("x")) or not torch.is_tensor(d.get("y")):
            raise FeatureError(f"{path} must hold a dict with tensors 'x' (N, D) and 'y' (N,)")
        x, y = d["x"].detach(), d["y"].detach()          # saved with requires_grad: the values are what count
        for name, t in (("x", x), ("y", y)):
            if t.layout != torch.strided or t.device.type != "cpu" or t.is_nested:
                kind = f"a {t.device.type} tensor" if t.device.type != "cpu" else f"a {str(t.layout)[6:]} tensor"
                raise FeatureError(f"{path}: {name} is {kind}; save it as a dense CPU tensor "
                                   f"({name}.to_dense().cpu())")
        if x.dim() != 2 or x.dtype not in (torch.float16, torch.float32):
            raise FeatureError(f"{path}: x is {x.dtype} {tuple(x.shape)}; expected (N, D) float16 or float32")
        if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise FeatureError(f"{path}: y is {y.dtype} {tuple(y.shape)}; expected (N,) integer labels")
        self.x, self.y, self.dtype, self.itemsize = x, y.long(), x.dtype, x.element_size()

    def __len__(self):
        return self.n

    def release(self):
        """Drop the mapped pages read so far from this process's resident memory (they stay in the page cache)."""
        if self._mmap is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)

    def rows(self, idx):
        """idx (B,) int64 sorted -> x rows (B, D) in the stored dtype, a CPU tensor of its own."""
        if isinstance(self.x, np.ndarray):
            return torch.from_numpy(self.x[idx.numpy()])
        return self.x.index_select(0, idx)

    def stored_chunks(self):
        """Yield (start, x rows as stored: float16/float32 CPU tensor) over all rows, releasing pages as it goes."""
        for i in range(0, self.n, self.chunk_rows):
            xb = self.x[i:i + self.chunk_rows]
            yield i, (torch.from_numpy(np.array(xb)) if isinstance(xb, np.ndarray) else xb)
            self.release()

    def chunks(self):
        """Yield (start, float32 (rows, D)) over all rows."""
        for i, xb in self.stored_chunks():
            yield i, xb.float()

    def verify(self, checksum=None):
        """One pass over the rows: every value finite, and the bytes equal to `checksum` when given."""
        running = RunningChecksum()
        for i, xb in self.stored_chunks():
            bad = ~torch.isfinite(xb)
            if bad.any():
                r = i + int(bad.any(1).nonzero()[0])
                raise FeatureError(f"{self.where}: row {r} holds NaN/inf ({int(bad.sum())} bad value(s) in rows "
                                   f"{i}..{i + len(xb) - 1}); re-extract the features")
            running.update(xb)
        if checksum is not None and running.update(self.y).value() != checksum:
            raise FeatureError(f"{self.where}: its values do not match the checksum extract wrote in extractor.json "
                               f"(changed or damaged since); re-extract the features, or delete extractor.json "
                               f"if you changed them on purpose")


def open_folder(folder):
    """A feature folder, validated whole -> (train FeatureSplit, test FeatureSplit or None).

    Complete and of one kind, or refused: one format for every split, the same D in each, no
    partly written file, every class named in classes.json used by a training row (an unused class
    could never be predicted, as an empty image class folder is refused), and, when extract wrote
    extractor.json, the files it describes."""
    if not os.path.isdir(folder):
        raise FeatureError(f"--data-dir {folder} is not a folder" if os.path.exists(folder) else
                           f"--data-dir {folder} does not exist")
    torn = sorted(f for f in os.listdir(folder) if re.search(r"\.tmp\d+$|^\.\w+\.part\d+\.pt$", f))
    if torn:
        raise FeatureError(f"{folder} holds a partly written file {torn[0]}: an extract stopped there; re-extract")
    classes = read_classes(folder)
    info = read_json(os.path.join(folder, "extractor.json"))
    sums = info.get("checksums") if isinstance(info, dict) and isinstance(info.get("checksums"), dict) else {}
    train = FeatureSplit(folder, "train", classes=classes, checksum=sums.get("train"))
    test = (FeatureSplit(folder, "test", classes=classes, checksum=sums.get("test"))
            if split_format(folder, "test") else None)
    if test is not None and test.format != train.format:
        raise FeatureError(f"{folder} mixes train.{train.format} and test.{test.format}: one format per folder")
    if test is not None and test.d != train.d:
        raise FeatureError(f"{folder}: test.{test.format} has D = {test.d} features, train.{train.format} D = "
                           f"{train.d}: the splits were not extracted together")
    counts = torch.bincount(train.y, minlength=len(classes))
    unused = [c for c, k in zip(classes, counts.tolist()) if k == 0]
    if unused:
        raise FeatureError(f"{train.where}: no row is labelled {', '.join(map(repr, unused[:5]))}"
                           f"{' ...' if len(unused) > 5 else ''} of classes.json: an unused class could never be "
                           f"predicted; remove it from classes.json")
    if info is not None:
        _check_described(folder, info, train, test)
    return train, test


def _check_described(folder, info, train, test):
    """The files against what extract wrote of them in extractor.json."""
    info = info if isinstance(info, dict) else {}
    data = info.get("data") if isinstance(info.get("data"), dict) else {}
    n_test = None if test is None else test.n
    for key, said, found in (("format", info.get("format"), train.format), ("D", info.get("dim"), train.d),
                             ("training rows", data.get("n_train"), train.n), ("test rows", data.get("n_test"), n_test)):
        if said != found and (said is not None or key == "test rows"):
            raise FeatureError(f"{folder}: extractor.json says {key} {said}, the files hold {found}: the folder is "
                               f"incomplete or mixes two extracts; re-extract it")


class FeatureLoader:
    """Batches of a FeatureSplit with TensorLoader's interface: len() and batches(epoch, start) yield
    (x float32 (B, D), y int64 (B,)) on `device`, in the order loaders.epoch_order(N, seed, epoch).
    Under torchrun, shard() gives one rank's part (distributed.ShardedLoader's two ways)."""

    def __init__(self, split, batch_size, device, seed=0, shuffle=True, standardizer=None):
        self.split, self.batch_size, self.seed, self.shuffle = split, batch_size, seed, shuffle
        self.device = torch.device(device)
        self.standardizer = None if standardizer is None else standardizer.to(self.device)
        self.y = split.y.to(self.device)
        self.pin = self.device.type == "cuda"
        self.rank, self.world, self.contiguous = 0, 1, False

    def __len__(self):
        return -(-self.split.n // self.batch_size)

    def shard(self, rank, world, rows=False):
        """-> a copy yielding rank's rows rank::world of each global batch (every rank takes the same
        steps), or with rows=True its contiguous 1/world of the split, in order (evaluation)."""
        import copy
        part = copy.copy(self)
        part.rank, part.world, part.contiguous = rank, world, rows
        return part

    def batches(self, epoch=0, start=0):
        n = self.split.n
        if self.contiguous:
            order = torch.arange(n * self.rank // self.world, n * (self.rank + 1) // self.world)
        else:
            order = epoch_order(n, self.seed, epoch) if self.shuffle else torch.arange(n)
        for i in range(start * self.batch_size, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            if not self.contiguous:
                idx = idx[self.rank::self.world]
            rows, pos = idx.sort()                         # read in file order, then put back in batch order
            xb = self.split.rows(rows)
            self.split.release()
            if self.pin:
                xb = xb.pin_memory()
            x = torch.empty_like(xb, device=self.device).copy_(xb, non_blocking=True)
            x = x.float().index_select(0, torch.argsort(pos).to(self.device, non_blocking=True))
            if self.standardizer is not None:
                x = self.standardizer(x)
            yield x, self.y.index_select(0, idx.to(self.device, non_blocking=True))     # no GPU sync per batch


class SplitWriter:
    """Writes one split chunk by chunk: .npy streams rows to disk, .pt collects them and saves at close.
    Files appear under their final names only when close() succeeds."""

    def __init__(self, folder, split, n, d, fmt="npy", dtype=torch.float32):
        if fmt not in FORMATS:
            raise FeatureError(f"unknown feature file format {fmt!r}; expected one of {', '.join(FORMATS)}")
        os.makedirs(folder, exist_ok=True)
        self.folder, self.split, self.n, self.d, self.fmt, self.dtype = folder, split, n, d, fmt, dtype
        self.done, self.labels, self.running = 0, [], RunningChecksum()
        self.checksum = None           # "crc32:..." of x's bytes then y's, once closed
        self.path = os.path.join(folder, f"{split}.{fmt}")
        self.tmp = f"{self.path}.tmp{os.getpid()}"
        if fmt == "npy":
            self.f = open(self.tmp, "wb")
            np_dtype = np.float16 if dtype == torch.float16 else np.float32
            np.lib.format.write_array_header_1_0(self.f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np_dtype)),
                                                          "fortran_order": False, "shape": (n, d)})
        else:
            self.parts = []

    def write(self, x, y):
        """x (B, D) float, y (B,) integer: the next B rows."""
        if x.shape[1:] != (self.d,) or len(y) != len(x) or self.done + len(x) > self.n:
            raise ValueError(f"chunk {tuple(x.shape)} does not fit rows {self.done}.. of ({self.n}, {self.d})")
        xc = x.detach().to("cpu", self.dtype).contiguous()
        self.running.update(xc)
        if self.fmt == "npy":
            with self._named():
                self.f.write(xc.view(-1).view(torch.uint8).numpy().tobytes())
        else:
            self.parts.append(xc)
        self.labels.append(torch.as_tensor(y).to("cpu", torch.int64))
        self.done += len(x)

    def close(self):
        if self.done != self.n:
            raise ValueError(f"wrote {self.done} of {self.n} rows")
        y = torch.cat(self.labels) if self.labels else torch.zeros(0, dtype=torch.int64)
        self.checksum = self.running.update(y).value()
        with self._named():
            if self.fmt == "npy":          # the rows were streamed to self.tmp: made durable, then renamed
                self.f.flush()
                os.fsync(self.f.fileno())
                self.f.close()
                write_atomic(os.path.join(self.folder, f"{self.split}_labels.npy"), lambda f: np.save(f, y.numpy()))
                os.replace(self.tmp, self.path)
            else:
                x = torch.cat(self.parts) if self.parts else torch.zeros(0, self.d, dtype=self.dtype)
                torch_save_atomic({"x": x, "y": y}, self.path)

    def abort(self):
        """Close and remove the temporary file (a failed or interrupted write)."""
        if self.fmt == "npy":
            self.f.close()
        try:
            os.remove(self.tmp)
        except OSError:
            pass

    @contextlib.contextmanager
    def _named(self):
        """A failed write (a full disk) names the file, and its temporary file is removed."""
        try:
            yield
        except (OSError, RuntimeError) as e:      # torch.save raises RuntimeError on a full disk
            self.abort()
            if isinstance(e, OSError) and e.filename is None:
                raise OSError(e.errno, e.strerror, self.path) from None
            if isinstance(e, RuntimeError):
                raise OSError(errno.EIO, f"cannot write it ({str(e).strip().splitlines()[0][:120]}): a full disk?",
                              self.path) from None
            raise
        except BaseException:
            self.abort()
            raise


def save_split(folder, split, x, y, fmt="npy", dtype=torch.float32, chunk=8192):
    """x (N, D), y (N,) -> DIR/split.{npy,pt} (+ split_labels.npy)."""
    w = SplitWriter(folder, split, x.shape[0], x.shape[1], fmt, dtype)
    for i in range(0, x.shape[0], chunk):
        w.write(x[i:i + chunk], y[i:i + chunk])
    w.close()
