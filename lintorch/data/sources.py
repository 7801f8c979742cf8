"""The data sets lintorch trains on, as uint8 image tensors: CIFAR-10, an image folder (decoded
once and cached, imagecache.py) or a synthetic toy set, with the validation split carved from train
and a memory check before anything is decoded.

Shapes: N images of 3 x S x S (S = image_size), C classes.
"""
import os

import torch

from . import imagecache
from ..errors import DataError
from ..names import CACHE_CHECKS, IMAGE_DATASETS as DATASETS
from .folders import is_folder, scan_folder
from .preprocess import FIT_CHUNK_VALUES
from .split import DataSet, Split, carve_val, human_bytes, take


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


def memory_needed(n_images, image_size, work_bytes=0):
    """The decoded set plus its train/val copy (2x), Preprocess.fit's float32 + float64 chunk, work_bytes."""
    D = 3 * image_size * image_size
    fit = 12 * D * max(1, min(n_images, 4096, FIT_CHUNK_VALUES // D))
    return 2 * decoded_bytes(n_images, image_size) + fit + work_bytes


def check_memory(n_images, image_size, work_bytes=0):
    """DataError naming the memory needed and available when the decoded set cannot fit."""
    avail = available_memory()
    need = memory_needed(n_images, image_size, work_bytes)
    if avail is None or need <= avail:
        return
    fits = image_size
    while fits > 1 and memory_needed(n_images, fits, work_bytes * fits ** 2 // image_size ** 2) > avail:
        fits = fits * 9 // 10
    raise DataError(f"--image-size {image_size} needs about {human_bytes(need)} of memory for {n_images:,} images "
                    f"({human_bytes(decoded_bytes(n_images, image_size))} decoded), more than the {human_bytes(avail)} "
                    f"available: use a smaller --image-size (at most about {fits})")



# --------------------------------------------------------------------------- sources

def _imagefolder(data_dir, image_size, cache_dir, skip_bad_images, cache_check, splits=("train", "test"),
                 progress=False):
    train_dir, test_dir = os.path.join(data_dir, "train"), os.path.join(data_dir, "test")
    if not is_folder(data_dir, "train/<class>/<images> (ImageFolder layout)", "--data-dir "):
        raise DataError(f"--data-dir {data_dir} does not exist: expected {train_dir}/<class>/<images>")
    if not is_folder(train_dir, "<class>/<images>"):
        raise DataError(f"expected {train_dir}/<class>/<images> (ImageFolder layout), found no train folder")
    train_scan = scan_folder(train_dir)
    classes = train_scan[2]
    test_scan = scan_folder(test_dir, classes) if is_folder(test_dir, "<class>/<images>") else None
    check_memory(len(train_scan[0]) + (len(test_scan[0]) if test_scan else 0), image_size)
    cache_dir = cache_dir or imagecache.default_dir(data_dir)
    train = test = None       # the train folder is scanned for its classes, decoded only when asked for
    if "train" in splits:
        train = imagecache.cached_split(train_dir, train_scan, image_size, cache_dir, skip_bad_images, cache_check,
                                        "train", progress)
    if test_scan:
        test = imagecache.cached_split(test_dir, test_scan, image_size, cache_dir, skip_bad_images, cache_check,
                                       "test", progress)
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
    check_memory(sum(len(ds) for ds in sets), image_size)

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
    check_memory(n_train + n_test, image_size, work_bytes=16 * decoded_bytes(n_train, image_size))
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
                 skip_bad_images=False, cache_check="stat", splits=("train", "test"), progress=False):
    """-> DataSet with train/val/test splits as uint8 tensors; val is carved from train (seeded).
    splits=("test",): an image folder's test split alone (train and val None; the train folder is
    only listed, for its classes). progress: a bar while images decode.

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
        train, test, classes = _imagefolder(data_dir, image_size, cache_dir, skip_bad_images, cache_check, splits,
                                            progress)
    elif dataset == "synthetic":
        train, test, classes = _synthetic(image_size, seed)
    else:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if len(classes) < 2:
        raise DataError(f"need at least 2 classes, found {len(classes)} ({', '.join(classes)})")
    if train is None:
        return DataSet(None, None, test, classes, image_size, {"dataset": dataset, "data_dir": data_dir,
                                                              "image_size": image_size})
    train_idx, val_idx = carve_val(len(train), val_size, seed)
    source = {"dataset": dataset, "data_dir": data_dir, "image_size": image_size,
              "train_indices": train_idx, "val_indices": val_idx}
    return DataSet(take(train, train_idx), take(train, val_idx), test, classes, image_size, source)

