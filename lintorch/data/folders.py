"""Image folders: scanning root/<class>/**/<image> and decoding the files into one uint8 tensor.

Shapes: N images decoded to (N, 3, S, S) uint8 (S = image_size). Problems a user can cause
raise DataError with a one-line message that says what was expected where.
"""
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor

import torch

from ..errors import DataError
from .split import THREADS, error_reason, list_entries

log = logging.getLogger("lintorch.data")

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def image_transform(image_size):
    """PIL image -> uint8 (3, S, S): the one decoding both loaders and predict share."""
    from torchvision import transforms
    return transforms.Compose([transforms.Resize((image_size, image_size)), transforms.PILToTensor()])


def load_image(path):
    """An image file of any mode -> the PIL RGB image a viewer shows (images.open_rgb: the rules)."""
    from .images import open_rgb
    return open_rgb(path)


def is_folder(path, holding, name=""):
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


def list_images(folder):
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
        for e in list_entries(d):
            if e.is_dir():
                walk(e.path)
            elif e.name.lower().endswith(IMG_EXTENSIONS):
                if e.is_file() or (e.is_symlink() and not os.path.exists(e.path)):
                    files.append(e.path)
                else:
                    log.warning("ignoring %s: not a regular file", e.path)
    walk(folder)
    return files


def scan_folder(root, classes=None):
    """root/<class>/**/<image> -> (files, labels, classes); DataError if there is nothing to load.

    With classes None (the training split) they are root's non-hidden folders, each of which must
    hold at least one image: an empty class could never be predicted, so it is refused by name
    rather than trained on. Given classes (the test split) may be missing or empty there. The
    DataLoader path reads this same list, so both loaders always see the same classes and labels.
    """
    entries = list_entries(root)
    for e in entries:
        if e.is_symlink() and not os.path.exists(e.path):   # a class that silently vanished otherwise
            is_folder(e.path, "<images> of a class")
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
        names = list_images(folder) if name in found else []
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


def decode(files, image_size, skip_bad_images, progress=None):
    """Decode files into uint8 (N, 3, S, S) with a thread pool (Pillow releases the GIL).

    Each image is written into one preallocated tensor: peak memory is the data set once.
    progress: a bar's description (50,000 CIFAR JPEGs take 12-15 s the first time), or None.
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

    from ..output.progress import Progress
    with ThreadPoolExecutor(max_workers=THREADS) as pool, \
            Progress(len(files), progress, disable=progress is None) as bar:
        ok = []
        for good in pool.map(one, range(len(files))):
            ok.append(good)
            bar.update(1)
    keep = [i for i, good in enumerate(ok) if good]
    if len(keep) < len(files):
        log.warning("skipped %d unreadable image(s) of %d", len(files) - len(keep), len(files))
        if not keep:
            raise DataError("no readable images")
        x = x[keep]
    return x, keep


class FileImages(torch.utils.data.Dataset):
    """files[i] decoded per item (image_transform) with labels[i]: an image folder on the DataLoader path.

    Built from the file list and labels lintorch's own scan produced (data._scan_folder), never by
    torchvision's ImageFolder re-scanning the folder: both loaders see the same classes, the same
    files (hidden folders, empty classes, nested folders, symlinks and skipped images included).
    """

    def __init__(self, files, labels, transform):
        self.files, self.labels, self.transform = list(files), list(labels), transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        path = self.files[i]
        try:
            return self.transform(load_image(path)), self.labels[i]
        except Exception as e:  # changed on disk since the data set was loaded
            raise DataError(f"cannot read image {path}: {error_reason(path, e)}") from None
