"""Data sets as uint8 image tensors, the train/val split, and the preprocessing fitted on train.

Shapes: N images of 3 x S x S (S = image_size), D = 3 * S * S features, C classes.
A data set is decoded once into one uint8 tensor (N, 3, S, S) (cached on disk for image
folders, ``imagecache.py``) and split; ``loaders.py`` batches it. Problems a user can cause
raise DataError with a one-line message that says what was expected where.
"""
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional

import torch

from .errors import DataError
from .names import CACHE_CHECKS, IMAGE_DATASETS as DATASETS

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_THREADS = max(1, min(8, os.cpu_count() or 1))   # decoding and hashing threads (Pillow, hashlib release the GIL)
_FIT_CHUNK_VALUES = 1 << 24                      # Preprocess.fit's float chunk: 64 MB float32 at most


@dataclass
class Split:
    """x (N, 3, S, S) uint8, y (N,) int64; files (N,) source paths where there are any."""
    x: torch.Tensor
    y: torch.Tensor
    files: Optional[List[str]] = None

    def __len__(self):
        return len(self.y)


@dataclass
class DataSet:
    train: Split
    val: Split
    test: Optional[Split]
    classes: List[str]
    image_size: int
    source: Optional[dict] = None  # how to rebuild torchvision datasets for the DataLoader path


# --------------------------------------------------------------------------- preprocessing

class Preprocess:
    """uint8 images (N, 3, S, S) -> float features (N, D): x / 255 - mean, optionally / std.

    mean/std come from the training split only. mode "pixel" subtracts a (D,) mean image
    (cs231n's choice), "channel" one mean per colour channel; "feature" standardizes float
    features (x - mean) / std, with no 1/255. Stored in the checkpoint.
    """

    def __init__(self, mean, std=None, mode="pixel"):
        self.mean, self.std, self.mode = mean, std, mode       # (D,), (D,) or None
        inv = torch.ones_like(mean) if std is None else 1.0 / std
        self.scale = inv if mode == "feature" else inv / 255.0  # x * scale - shift, one fused op
        self.neg_shift = -(mean * inv)

    @classmethod
    def fit_features(cls, chunks, eps=1e-6):
        """chunks: an iterable of float (n, D) row blocks of the training split -> a "feature"
        Preprocess (x - mean) / std, sums in float64, streamed (the split need not fit in memory)."""
        s = s2 = None
        n = 0
        for xb in chunks:
            xd = xb.double()
            s = xd.sum(0) if s is None else s + xd.sum(0)
            s2 = xd.square().sum(0) if s2 is None else s2 + xd.square().sum(0)
            n += len(xb)
        mean = s / max(n, 1)
        std = ((s2 / max(n, 1) - mean.square()).clamp_min(0) + eps).sqrt()
        return cls(mean.float(), std.float(), "feature")

    @classmethod
    def fit(cls, x, mode="pixel", standardize=False, chunk=4096):
        """x uint8 (N, 3, S, S) -> Preprocess fitted on it.

        The sums are exact with no float64 copy of the data: a float32 sum of at most 4096 uint8
        values is an integer below 2^24; chunk sums accumulate in float64. Chunks hold at most
        2^24 values, so large images do not need a huge float temporary.
        """
        if mode not in ("pixel", "channel"):
            raise ValueError(f"unknown mean mode {mode!r}; expected pixel or channel")
        N, D = x.shape[0], x[0].numel()
        chunk = max(1, min(chunk, _FIT_CHUNK_VALUES // D))
        flat = x.reshape(N, D)
        s = torch.zeros(D, dtype=torch.float64)
        s2 = torch.zeros(D, dtype=torch.float64)
        for i in range(0, N, chunk):
            xb = flat[i:i + chunk].float()                             # (chunk, D)
            s += xb.sum(0)
            if standardize:
                s2 += xb.double().square_().sum(0)
        s /= 255.0
        s2 /= 255.0 ** 2
        if mode == "channel":
            per = D // 3
            s = s.view(3, per).sum(1, keepdim=True).expand(3, per).reshape(D) / per
            s2 = s2.view(3, per).sum(1, keepdim=True).expand(3, per).reshape(D) / per
        mean = s / N
        std = (s2 / N - mean.square()).clamp_min(1e-12).sqrt() if standardize else None
        return cls(mean.float(), None if std is None else std.float(), mode)

    def to(self, device):
        return Preprocess(self.mean.to(device), None if self.std is None else self.std.to(device), self.mode)

    def __call__(self, x):
        """x uint8 (N, 3, S, S) or (N, D) -> float32 (N, D) on x's device."""
        xf = x.reshape(x.shape[0], -1).to(torch.float32, copy=True)   # our own buffer
        # in place: a second batch-sized temporary per step costs page faults on CPU
        return torch.addcmul(self.neg_shift, xf, self.scale, out=xf)

    def state_dict(self):
        return {"mean": self.mean.cpu(), "std": None if self.std is None else self.std.cpu(), "mode": self.mode}

    @classmethod
    def from_state_dict(cls, d):
        return cls(d["mean"], d["std"], d["mode"])


# --------------------------------------------------------------------------- memory

def decoded_bytes(n_images, image_size):
    """Bytes of n_images decoded as uint8 (n, 3, S, S): what a data set costs in memory, once."""
    return n_images * 3 * image_size * image_size


def available_memory():
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup v2 limit; None if unknown."""
    avail = []
    try:
        with open("/proc/meminfo") as f:
            avail += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        try:
            avail.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            limit = f.read().strip()
            if limit != "max":
                avail.append(int(limit) - int(g.read()))
    except (OSError, ValueError):
        pass
    return min(avail) if avail else None


def _human(n):
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000


def _memory_needed(n_images, image_size, work_bytes=0):
    """The decoded set plus its train/val copy (2x), Preprocess.fit's float32 + float64 chunk, work_bytes."""
    D = 3 * image_size * image_size
    fit = 12 * D * max(1, min(n_images, 4096, _FIT_CHUNK_VALUES // D))
    return 2 * decoded_bytes(n_images, image_size) + fit + work_bytes


def _check_memory(n_images, image_size, work_bytes=0):
    """DataError naming the memory needed and available when the decoded set cannot fit."""
    avail = available_memory()
    need = _memory_needed(n_images, image_size, work_bytes)
    if avail is None or need <= avail:
        return
    fits = image_size
    while fits > 1 and _memory_needed(n_images, fits, work_bytes * fits ** 2 // image_size ** 2) > avail:
        fits = fits * 9 // 10
    raise DataError(f"--image-size {image_size} needs about {_human(need)} of memory for {n_images:,} images "
                    f"({_human(decoded_bytes(n_images, image_size))} decoded), more than the {_human(avail)} "
                    f"available: use a smaller --image-size (at most about {fits})")


# --------------------------------------------------------------------------- sources

def image_transform(image_size):
    """PIL image -> uint8 (3, S, S): the one decoding both loaders and predict share."""
    from torchvision import transforms
    return transforms.Compose([transforms.Resize((image_size, image_size)), transforms.PILToTensor()])


def load_image(path):
    """Open any image file as RGB (torchvision's default loader)."""
    from torchvision.datasets.folder import default_loader
    return default_loader(path)


def error_reason(path, e):
    """One readable reason why path could not be used: no bare '[Errno N]'."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"it is a symlink to {os.readlink(path)}, which does not exist"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    return str(e) or type(e).__name__


def _entries(folder):
    """scandir(folder) sorted by name, hidden names left out; DataError naming the folder if it cannot be read."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"cannot list {folder}: {error_reason(folder, e)}") from None


def _list_images(folder):
    """Image files under folder, nested folders included (as torchvision's ImageFolder), sorted.

    Hidden names (.x, macOS ._x) are skipped; symlinked files and folders are followed, each folder
    once (no loop); a dangling symlink with an image extension is kept, so decoding names it (or
    --skip-bad-images skips it); folders named like images are folders; FIFOs, sockets and devices
    are never opened.
    """
    files, seen = [], set()

    def walk(d):
        try:
            st = os.stat(d)
        except OSError as e:
            raise DataError(f"cannot list {d}: {error_reason(d, e)}") from None
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        for e in _entries(d):
            if e.is_dir():
                walk(e.path)
            elif e.name.lower().endswith(IMG_EXTENSIONS):
                if e.is_file() or (e.is_symlink() and not os.path.exists(e.path)):
                    files.append(e.path)
                else:
                    log.warning("ignoring %s: not a regular file", e.path)
    walk(folder)
    return files


def _scan_folder(root, classes=None):
    """root/<class>/**/<image> -> (files, labels, classes); DataError if there is nothing to load.

    With classes None (the training split) they are root's non-hidden folders, each of which must
    hold at least one image: an empty class could never be predicted, so it is refused by name
    rather than trained on. Given classes (the test split) may be missing or empty there. The
    DataLoader path reads this same list, so both loaders always see the same classes and labels.
    """
    entries = _entries(root)
    for e in entries:
        if e.is_symlink() and not os.path.exists(e.path):   # a class that silently vanished otherwise
            _is_folder(e.path, "<images> of a class")
    found = sorted(e.name for e in entries if e.is_dir())
    discover = classes is None
    if discover:
        classes = found
    if not classes:
        raise DataError(f"{root} has no class folders: expected {root}/<class>/<image files>")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{root} has class folders not in the training set: {', '.join(unknown[:5])}")
    files, labels, empty = [], [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        names = _list_images(folder) if name in found else []
        if not names:
            empty.append(name)
        files += names
        labels += [label] * len(names)
    if not files:
        raise DataError(f"no image files ({', '.join(IMG_EXTENSIONS)}) under {root}/<class>/")
    if discover and empty:
        raise DataError(f"class folder(s) with no image files in {root}: {', '.join(empty[:10])}; put images "
                        f"in them or remove them (a class with no training images can never be predicted)")
    return files, labels, classes


def _decode(files, image_size, skip_bad_images):
    """Decode files into uint8 (N, 3, S, S) with a thread pool (Pillow releases the GIL).

    Each image is written into one preallocated tensor: peak memory is the data set once.
    -> (x, keep) where keep lists the indices of the files that decoded.
    """
    transform = image_transform(image_size)
    x = torch.empty(len(files), 3, image_size, image_size, dtype=torch.uint8)

    def one(i):
        path = files[i]
        try:
            x[i] = transform(load_image(path))
            return True
        except Exception as e:  # Pillow raises OSError, UnidentifiedImageError, SyntaxError, ...
            if not skip_bad_images:
                raise DataError(f"cannot read image {path}: {error_reason(path, e)} "
                                f"(use --skip-bad-images to skip such files)") from None
            return False

    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        ok = list(pool.map(one, range(len(files))))
    keep = [i for i, good in enumerate(ok) if good]
    if len(keep) < len(files):
        log.warning("skipped %d unreadable image(s) of %d", len(files) - len(keep), len(files))
        if not keep:
            raise DataError("no readable images")
        x = x[keep]
    return x, keep


# --------------------------------------------------------------------------- the decoded-image cache (imagecache.py)

def _cached_folder_split(root, scanned, image_size, cache_dir, skip_bad_images, cache_check, name):
    """Decode the scanned (files, labels, classes) once; reuse the uint8 cache while they are unchanged."""
    from . import imagecache   # it imports this module's names: imported on use, no cycle at load time
    files, labels, classes = scanned
    key = imagecache.cache_key(files, labels, image_size, skip_bad_images, cache_check)
    path = os.path.join(cache_dir, f"{name}-{image_size}px.pt") if cache_dir else None
    if path and os.path.exists(path):
        split = imagecache.read(path, key, files, labels, image_size, skip_bad_images)
        if split is not None:
            return split
    x, keep = _decode(files, image_size, skip_bad_images)
    split = Split(x, torch.tensor(labels, dtype=torch.long)[keep], [files[i] for i in keep])
    if name == "train" and len(keep) < len(files):
        gone = sorted(set(range(len(classes))) - set(split.y.tolist()))
        if gone:
            raise DataError(f"no readable images left in class folder(s) {', '.join(classes[c] for c in gone)} "
                            f"of {root} after skipping unreadable ones")
    if path:
        imagecache.write(path, key, split)
    return split


def _is_folder(path, holding, name=""):
    """True if path is a folder, False if nothing is there; DataError if it is a file, a broken
    symlink or cannot be looked at, saying it should be a folder `holding` what."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            raise DataError(f"{name}{path} is a symlink to {os.readlink(path)}, which does not exist: "
                            f"expected a folder holding {holding}") from None
        return False
    except OSError as e:
        raise DataError(f"cannot access {name}{path}: {error_reason(path, e)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(f"{name}{path} is a file: expected a folder holding {holding}")
    return True


def _imagefolder(data_dir, image_size, cache_dir, skip_bad_images, cache_check):
    train_dir, test_dir = os.path.join(data_dir, "train"), os.path.join(data_dir, "test")
    if not _is_folder(data_dir, "train/<class>/<images> (ImageFolder layout)", "--data-dir "):
        raise DataError(f"--data-dir {data_dir} does not exist: expected {train_dir}/<class>/<images>")
    if not _is_folder(train_dir, "<class>/<images>"):
        raise DataError(f"expected {train_dir}/<class>/<images> (ImageFolder layout), found no train folder")
    train_scan = _scan_folder(train_dir)
    classes = train_scan[2]
    test_scan = _scan_folder(test_dir, classes) if _is_folder(test_dir, "<class>/<images>") else None
    _check_memory(len(train_scan[0]) + (len(test_scan[0]) if test_scan else 0), image_size)
    cache_dir = cache_dir or os.path.join(data_dir, ".lintorch-cache")
    train = _cached_folder_split(train_dir, train_scan, image_size, cache_dir, skip_bad_images, cache_check, "train")
    test = None
    if test_scan:
        test = _cached_folder_split(test_dir, test_scan, image_size, cache_dir, skip_bad_images, cache_check, "test")
    return train, test, classes


def open_cifar10(data_dir, train, transform=None):
    """torchvision's CIFAR10 under data_dir, downloading on first use; DataError when that fails."""
    from torchvision.datasets import CIFAR10
    folder = os.path.join(data_dir, CIFAR10.base_folder)
    if os.path.isdir(folder):
        try:
            return CIFAR10(data_dir, train=train, transform=transform, download=False)
        except RuntimeError:
            raise DataError(f"the CIFAR-10 copy in {folder} fails torchvision's integrity check (corrupt or "
                            f"incomplete): delete that folder to re-download it") from None
    try:
        return CIFAR10(data_dir, train=train, transform=transform, download=True)
    except Exception as e:
        raise DataError(f"no CIFAR-10 under {folder} and the download failed ({type(e).__name__}); put "
                        f"cifar-10-batches-py there, or use --dataset imagefolder --data-dir DIR") from None


def _cifar10(data_dir, image_size):
    sets = [open_cifar10(data_dir, train) for train in (True, False)]
    _check_memory(sum(len(ds) for ds in sets), image_size)

    def split(ds):
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()    # (N, 3, 32, 32)
        if image_size != 32:  # in chunks: a float copy of the resized set would need 4x its memory
            out = torch.empty(len(x), 3, image_size, image_size, dtype=torch.uint8)
            for i in range(0, len(x), 1024):
                out[i:i + 1024] = torch.nn.functional.interpolate(
                    x[i:i + 1024].float(), size=(image_size, image_size), mode="bilinear",
                    antialias=True).round().clamp(0, 255).to(torch.uint8)
            x = out
        return Split(x, torch.tensor(ds.targets, dtype=torch.long))
    return split(sets[0]), split(sets[1]), sets[0].classes


def _synthetic(image_size, seed, n_train=4000, n_test=1000, num_classes=10, contrast=0.08, noise=0.25):
    """A learnable toy set: each class a faint smooth random template on grey, each image
    template + strong pixel noise, so a linear model learns it well but not perfectly."""
    # float temporaries of the largest split: noise, template gather, sum, scaled copy (4 bytes each)
    _check_memory(n_train + n_test, image_size, work_bytes=16 * decoded_bytes(n_train, image_size))
    g = torch.Generator().manual_seed(1000 + seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g) - 0.5
    templates = 0.5 + contrast * torch.nn.functional.interpolate(coarse, size=(image_size, image_size),
                                                                 mode="bilinear")

    def split(n):
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = templates[y] + noise * torch.randn(n, 3, image_size, image_size, generator=g)
        return Split((x.clamp(0, 1) * 255).round().to(torch.uint8), y)
    return split(n_train), split(n_test), [f"class{i}" for i in range(num_classes)]


def load_dataset(dataset, data_dir="./data", image_size=32, val_size=1000, seed=0, cache_dir=None,
                 skip_bad_images=False, cache_check="stat"):
    """-> DataSet with train/val/test splits as uint8 tensors; val is carved from train (seeded).

    Image folders are decoded once into cache_dir (default data_dir/.lintorch-cache) and reused
    while the cache key matches: cache_check "stat" (default, train.py --cache-check) keys each file
    by path, size, mtime_ns, ctime_ns and inode, which sees in-place edits even with the mtime put
    back, but not on file systems without a real ctime (FAT, some network mounts) or with a clock
    set back; "full" keys by the sha256 of every file's bytes and is never fooled (50,000 CIFAR
    JPEGs, 46 MB in the page cache, 2 cores: key 0.9 s against 0.3 s, a cache hit 1.55 s against
    1.1 s, decoding 11 s). Switching modes rebuilds the cache once. A cache whose contents do not match its key is rebuilt.
    DataError before anything is decoded when the decoded set would not fit in memory.
    """
    if cache_check not in CACHE_CHECKS:
        raise DataError(f"unknown cache check {cache_check!r}; expected one of {', '.join(CACHE_CHECKS)}")
    if dataset == "cifar10":
        train, test, classes = _cifar10(data_dir, image_size)
    elif dataset == "imagefolder":
        train, test, classes = _imagefolder(data_dir, image_size, cache_dir, skip_bad_images, cache_check)
    elif dataset == "synthetic":
        train, test, classes = _synthetic(image_size, seed)
    else:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if len(classes) < 2:
        raise DataError(f"need at least 2 classes, found {len(classes)} ({', '.join(classes)})")
    if val_size is None:  # the default: 5,000 images, or a fifth of a smaller training set
        val_size = max(1, min(5000, len(train) // 5))
    if not 1 <= val_size < len(train):
        raise DataError(f"--val-size {val_size} must be between 1 and {len(train) - 1} "
                        f"(the training split has {len(train)} images)")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values

    def take(s, idx):
        return Split(s.x[idx], s.y[idx], None if s.files is None else [s.files[i] for i in idx.tolist()])
    source = {"dataset": dataset, "data_dir": data_dir, "image_size": image_size,
              "train_indices": train_idx, "val_indices": val_idx}
    return DataSet(take(train, train_idx), take(train, val_idx), test, classes, image_size, source)
