"""Data sets as uint8 image tensors, the train/val split, and the preprocessing fitted on train.

Shapes: N images of 3 x S x S (S = image_size), D = 3 * S * S features, C classes.
A data set is decoded once into one uint8 tensor (N, 3, S, S) (cached on disk for image
folders) and split; ``loaders.py`` batches it. Problems a user can cause raise DataError
with a one-line message that says what was expected where.
"""
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional

import torch

log = logging.getLogger(__name__)

DATASETS = ("cifar10", "imagefolder", "synthetic")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_VERSION = 2  # bump when the cache layout or decoding changes: old files are rebuilt


class DataError(Exception):
    """A problem with the user's data: the message is one line that says what to do."""


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
    (cs231n's choice), "channel" one mean per colour channel. Stored in the checkpoint.
    """

    def __init__(self, mean, std=None, mode="pixel"):
        self.mean, self.std, self.mode = mean, std, mode       # (D,), (D,) or None
        inv = torch.ones_like(mean) if std is None else 1.0 / std
        self.scale = inv / 255.0                               # x * scale - shift, one fused op
        self.neg_shift = -(mean * inv)

    @classmethod
    def fit(cls, x, mode="pixel", standardize=False, chunk=4096):
        """x uint8 (N, 3, S, S) -> Preprocess fitted on it.

        The sums are exact with no float64 copy of the data: a float32 sum of at most 4096 uint8
        values is an integer below 2^24; chunk sums accumulate in float64.
        """
        if mode not in ("pixel", "channel"):
            raise ValueError(f"unknown mean mode {mode!r}; expected pixel or channel")
        N, D = x.shape[0], x[0].numel()
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


# --------------------------------------------------------------------------- sources

def image_transform(image_size):
    """PIL image -> uint8 (3, S, S): the one decoding both loaders and predict share."""
    from torchvision import transforms
    return transforms.Compose([transforms.Resize((image_size, image_size)), transforms.PILToTensor()])


def load_image(path):
    """Open any image file as RGB (torchvision's default loader)."""
    from torchvision.datasets.folder import default_loader
    return default_loader(path)


def _scan_folder(root, classes=None):
    """root/<class>/<image> -> (files, labels, classes); DataError if there is nothing to load."""
    if not os.path.isdir(root):
        raise DataError(f"expected a folder of class folders at {root}, found none")
    found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if classes is None:
        classes = found
    if not classes:
        raise DataError(f"{root} has no class folders: expected {root}/<class>/<image files>")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{root} has class folders not in the training set: {', '.join(unknown[:5])}")
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMG_EXTENSIONS))
        files += [os.path.join(folder, n) for n in names]
        labels += [label] * len(names)
    if not files:
        raise DataError(f"no image files ({', '.join(IMG_EXTENSIONS)}) under {root}/<class>/")
    return files, labels, classes


def _decode(files, image_size, skip_bad_images):
    """Decode files into uint8 (N, 3, S, S) with a thread pool (Pillow releases the GIL)."""
    transform = image_transform(image_size)

    def one(path):
        try:
            return transform(load_image(path))
        except Exception as e:  # Pillow raises OSError, UnidentifiedImageError, SyntaxError, ...
            if not skip_bad_images:
                raise DataError(f"cannot read image {path}: {e} (use --skip-bad-images to skip such files)")
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        images = list(pool.map(one, files, chunksize=256))
    keep = [i for i, im in enumerate(images) if im is not None]
    if len(keep) < len(files):
        log.warning("skipped %d unreadable image(s) of %d", len(files) - len(keep), len(files))
    if not keep:
        raise DataError("no readable images")
    return torch.stack([images[i] for i in keep]), keep


def _cache_key(files, image_size, skip_bad_images):
    h = hashlib.sha256(f"v{CACHE_VERSION}:{image_size}:{skip_bad_images}".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cached_folder_split(root, classes, image_size, cache_dir, skip_bad_images, name):
    """Decode root/<class>/* once; reuse the uint8 cache while the files are unchanged."""
    files, labels, classes = _scan_folder(root, classes)
    key = _cache_key(files, image_size, skip_bad_images)
    path = os.path.join(cache_dir, f"{name}-{image_size}px.pt") if cache_dir else None
    if path and os.path.exists(path):
        try:
            c = torch.load(path, weights_only=True)
        except Exception as e:
            log.warning("cache %s is unreadable (%s): rebuilding", path, e)
            c = {}
        x = c.get("x")
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            bad = int((~torch.isfinite(x)).sum())
            if bad:
                raise DataError(f"the data cache {path} holds {bad} NaN/inf values (corrupt): delete it "
                                f"and lintorch rebuilds it from the images")
        if c.get("version") == CACHE_VERSION and c.get("key") == key and x is not None and x.dtype == torch.uint8:
            return Split(x, c["y"], c["files"]), classes
        if c:
            log.info("cache %s is stale (another version, data set or changed files): rebuilding", path)
    x, keep = _decode(files, image_size, skip_bad_images)
    split = Split(x, torch.tensor(labels, dtype=torch.long)[keep], [files[i] for i in keep])
    if path:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{path}.tmp{os.getpid()}"
            torch.save({"version": CACHE_VERSION, "key": key, "x": split.x, "y": split.y,
                        "files": split.files}, tmp)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("could not write the data cache %s (%s); decoding again next time", path, e)
    return split, classes


def _imagefolder(data_dir, image_size, cache_dir, skip_bad_images):
    train_dir, test_dir = os.path.join(data_dir, "train"), os.path.join(data_dir, "test")
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir} does not exist: expected {train_dir}/<class>/<images>")
    if not os.path.isdir(train_dir):
        raise DataError(f"expected {train_dir}/<class>/<images> (ImageFolder layout), found no train folder")
    cache_dir = cache_dir or os.path.join(data_dir, ".lintorch-cache")
    train, classes = _cached_folder_split(train_dir, None, image_size, cache_dir, skip_bad_images, "train")
    test = None
    if os.path.isdir(test_dir):
        test, _ = _cached_folder_split(test_dir, classes, image_size, cache_dir, skip_bad_images, "test")
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
    def split(train):
        ds = open_cifar10(data_dir, train)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()    # (N, 3, 32, 32)
        if image_size != 32:
            x = torch.nn.functional.interpolate(x.float(), size=(image_size, image_size), mode="bilinear",
                                                antialias=True).round().clamp(0, 255).to(torch.uint8)
        return Split(x, torch.tensor(ds.targets, dtype=torch.long)), ds.classes
    train, classes = split(True)
    test, _ = split(False)
    return train, test, classes


def _synthetic(image_size, seed, n_train=4000, n_test=1000, num_classes=10, contrast=0.08, noise=0.25):
    """A learnable toy set: each class a faint smooth random template on grey, each image
    template + strong pixel noise, so a linear model learns it well but not perfectly."""
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
                 skip_bad_images=False):
    """-> DataSet with train/val/test splits as uint8 tensors; val is carved from train (seeded)."""
    if dataset == "cifar10":
        train, test, classes = _cifar10(data_dir, image_size)
    elif dataset == "imagefolder":
        train, test, classes = _imagefolder(data_dir, image_size, cache_dir, skip_bad_images)
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
