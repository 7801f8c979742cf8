"""The data sets lintorch trains on, as uint8 image tensors, one SOURCES entry each: torchvision's
classification sets read from their own files (CIFAR-10/100, MNIST, Fashion-MNIST, KMNIST, SVHN,
STL-10; grayscale as 3 equal channels, any size resized to S), an image folder (decoded once and
cached, imagecache.py) or a synthetic toy set, with the validation split carved from train and a
memory check before anything is decoded.

Shapes: N images of 3 x S x S (S = image_size), C classes.
"""
import os

import numpy as np
import torch

from . import imagecache
from ..errors import DataError
from ..names import CACHE_CHECKS
from .folders import FileImages, is_folder, scan_folder
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



def free_memory(device):
    """Bytes free for new tensors on `device`: torch.cuda.mem_get_info's free bytes on a GPU (its own memory,
    not the host's), available_memory() (host RAM) on the CPU; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_memory()


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


class Source:
    """One data set by name: load() -> (train Split or None, test Split or None, classes), and the
    per-image Dataset of a split for the DataLoader path. A DataSet's .source names its entry."""
    on_disk = True           # decoded caches and feature caches go beside it (featurize)

    def load(self, data_dir, image_size, *, seed, cache_dir, skip_bad_images, cache_check, splits, progress):
        raise NotImplementedError

    def per_image(self, dataset, split_name, transform):
        """-> (a per-image torch Dataset behind the split, indices into it or None for all)."""
        return torch.utils.data.TensorDataset(getattr(dataset, split_name).x, getattr(dataset, split_name).y), None


def as_rgb(image):
    """A PIL image in RGB: grayscale sets enter as 3 equal channels, as on the tensor path."""
    return image.convert("RGB")


def resized(x, image_size):
    """x uint8 (N, 3, H, W) -> (N, 3, S, S), bilinear with antialiasing, in chunks (a float copy
    of a whole resized set would need 4x its memory); x itself when it already has that size."""
    if tuple(x.shape[2:]) == (image_size, image_size):
        return x
    out = torch.empty(len(x), 3, image_size, image_size, dtype=torch.uint8)
    for i in range(0, len(x), 1024):
        out[i:i + 1024] = torch.nn.functional.interpolate(
            x[i:i + 1024].float(), size=(image_size, image_size), mode="bilinear",
            antialias=True).round().clamp(0, 255).to(torch.uint8)
    return out


class Torchvision(Source):
    """A torchvision classification data set read from its own files under --data-dir by
    torchvision's own class (download=False: lintorch fetches nothing, except CIFAR-10 as before).

    cls: the torchvision.datasets class name; files: what must be under data_dir (an idx file may
    also be there gzipped: it is unpacked beside itself, as torchvision's download does); layout:
    how the class's .data holds images ("NHWC", "NCHW", or "NHW" for grayscale, which enters as 3
    equal channels); labels: the attribute holding them; split_kw: "train" (train=True/False) or
    "split" (split="train"/"test"); classes: names when the class has none."""

    def __init__(self, cls, title, files, layout, labels="targets", split_kw="train", classes=None,
                 download=False):
        self.cls, self.title, self.files, self.layout, self.labels = cls, title, files, layout, labels
        self.split_kw, self.classes, self.download = split_kw, classes, download

    def _missing(self, data_dir):
        missing = []
        for name in self.files:
            path = os.path.join(data_dir, name)
            if os.path.exists(path):
                continue
            if os.path.exists(path + ".gz"):
                _gunzip(path + ".gz", path)
            else:
                missing.append(name)
        return missing

    def open(self, data_dir, train, transform=None):
        """torchvision's dataset object for one split; DataError naming the folder and the files
        expected when they are not there or fail torchvision's integrity check."""
        import torchvision.datasets
        cls = getattr(torchvision.datasets, self.cls)
        kw = {"train": train} if self.split_kw == "train" else {"split": "train" if train else "test"}
        missing = self._missing(data_dir)
        if missing and self.download and not os.path.isdir(os.path.join(data_dir, os.path.dirname(self.files[0]))):
            try:
                return cls(data_dir, transform=transform, download=True, **kw)
            except Exception as e:
                raise DataError(f"no {self.title} under {os.path.join(data_dir, os.path.dirname(self.files[0]))} "
                                f"and the download failed ({type(e).__name__}); put "
                                f"{os.path.dirname(self.files[0])} there, or use --dataset imagefolder "
                                f"--data-dir DIR") from None
        if missing:
            lacking = "" if len(missing) == len(self.files) else f"; missing {', '.join(missing)}"
            raise DataError(f"no {self.title} in {os.path.abspath(data_dir)}: expected {', '.join(self.files)} "
                            f"there (lintorch downloads nothing{lacking})")
        try:
            return cls(data_dir, transform=transform, download=False, **kw)
        except ImportError as e:
            raise DataError(f"reading {self.title} needs {e.name} (pip install {e.name})") from None
        except RuntimeError:
            folder = os.path.join(data_dir, os.path.dirname(self.files[0]))
            raise DataError(f"the {self.title} copy in {folder} fails torchvision's integrity check (corrupt or "
                            f"incomplete): {'delete that folder to re-download it' if self.download else 'replace its files'}"
                            ) from None

    def images(self, ds):
        """The dataset's images as uint8 (N, 3, H, W) and labels (N,) int64."""
        x = torch.as_tensor(np.asarray(ds.data))
        if self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        elif self.layout == "NHW":
            x = x.unsqueeze(1).expand(-1, 3, -1, -1)
        y = torch.as_tensor(np.asarray(getattr(ds, self.labels)), dtype=torch.long)
        return x.contiguous(), y

    def load(self, data_dir, image_size, **_):
        sets = [self.open(data_dir, train) for train in (True, False)]
        check_memory(sum(len(ds) for ds in sets), image_size)
        train, test = (Split(resized(x, image_size), y) for x, y in map(self.images, sets))
        classes = list(getattr(sets[0], "classes", None) or self.classes)
        return train, test, classes

    def per_image(self, dataset, split_name, transform):
        from torchvision import transforms
        src = dataset.source
        ds = self.open(src["data_dir"], split_name != "test", transforms.Compose([as_rgb, transform]))
        return ds, None if split_name == "test" else src[f"{split_name}_indices"].tolist()


def _gunzip(gz, path):
    """gz unpacked to path (written whole, then renamed); DataError when that cannot be written."""
    import gzip
    import shutil
    try:
        with gzip.open(gz, "rb") as f, open(path + ".part", "wb") as out:
            shutil.copyfileobj(f, out)
        os.replace(path + ".part", path)
    except OSError as e:
        raise DataError(f"cannot unpack {gz} to {path}: {e.strerror or e}") from None


class ImageFolder(Source):
    """train/<class>/<images> (and optionally test/<class>/<images>), decoded once and cached."""

    def load(self, data_dir, image_size, *, cache_dir, skip_bad_images, cache_check, splits, progress, **_):
        return _imagefolder(data_dir, image_size, cache_dir, skip_bad_images, cache_check, splits, progress)

    def per_image(self, dataset, split_name, transform):
        part = getattr(dataset, split_name)
        return FileImages(part.files, part.y.tolist(), transform), None


class Synthetic(Source):
    """A learnable toy set made from the seed (no files)."""
    on_disk = False

    def load(self, data_dir, image_size, *, seed, **_):
        return _synthetic(image_size, seed)


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]

# Every data set --dataset names (names.IMAGE_DATASETS lists the same names for the torch-free parser).
SOURCES = {
    "cifar10": Torchvision("CIFAR10", "CIFAR-10", tuple(f"cifar-10-batches-py/{f}" for f in (
        *(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")), "NHWC", download=True),
    "cifar100": Torchvision("CIFAR100", "CIFAR-100", ("cifar-100-python/train", "cifar-100-python/test",
                                                      "cifar-100-python/meta"), "NHWC"),
    "mnist": Torchvision("MNIST", "MNIST", tuple(f"MNIST/raw/{f}" for f in MNIST_FILES), "NHW"),
    "fashion-mnist": Torchvision("FashionMNIST", "Fashion-MNIST", tuple(f"FashionMNIST/raw/{f}" for f in MNIST_FILES),
                                 "NHW"),
    "kmnist": Torchvision("KMNIST", "KMNIST", tuple(f"KMNIST/raw/{f}" for f in MNIST_FILES), "NHW"),
    "svhn": Torchvision("SVHN", "SVHN", ("train_32x32.mat", "test_32x32.mat"), "NCHW", labels="labels",
                        split_kw="split", classes=[str(d) for d in range(10)]),
    "stl10": Torchvision("STL10", "STL-10", tuple(f"stl10_binary/{f}" for f in (
        "train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin")), "NCHW", labels="labels",
                         split_kw="split", classes=STL10_CLASSES),
    "imagefolder": ImageFolder(),
    "synthetic": Synthetic(),
}


def open_cifar10(data_dir, train, transform=None):
    """torchvision's CIFAR10 under data_dir, downloading on first use; DataError when that fails."""
    return SOURCES["cifar10"].open(data_dir, train, transform)


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
    if dataset not in SOURCES:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(SOURCES)}")
    train, test, classes = SOURCES[dataset].load(data_dir, image_size, seed=seed, cache_dir=cache_dir,
                                                 skip_bad_images=skip_bad_images, cache_check=cache_check,
                                                 splits=splits, progress=progress)
    if len(classes) < 2:
        raise DataError(f"need at least 2 classes, found {len(classes)} ({', '.join(classes)})")
    if train is None:
        return DataSet(None, None, test, classes, image_size, {"dataset": dataset, "data_dir": data_dir,
                                                              "image_size": image_size})
    train_idx, val_idx = carve_val(len(train), val_size, seed)
    source = {"dataset": dataset, "data_dir": data_dir, "image_size": image_size,
              "train_indices": train_idx, "val_indices": val_idx}
    return DataSet(take(train, train_idx), take(train, val_idx), test, classes, image_size, source)

