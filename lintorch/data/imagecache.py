"""The decoded-image cache: an image folder's split decoded once to uint8 (N, 3, S, S) and saved
on disk with a key over its files, reused while the key matches.

N images of 3 x S x S (S = image_size). The key covers the decoding settings and each file's path,
label and fingerprint (its stat or the sha256 of its bytes); a cache that is stale, unreadable or
holds other than its key claims, or values other than the checksum written with them, is rebuilt
with one line saying why, and one that cannot be written is a warning. This
module is the cache's whole policy: where it lives, its file names, its key and layout, and when to
decode (cached_split); sources.py asks it for each split of an image folder.
"""
import errno
import hashlib
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import torch

from ..errors import DataError
from ..output.atomic import remove_dead_temporaries, torch_save_atomic
from ..output.checksum import checksum
from .folders import decode
from .split import Split, THREADS, error_reason, human_bytes

log = logging.getLogger("lintorch.data")   # the data loading's messages, under the name they always had

CACHE_VERSION = 5  # (5: colour profiles applied) bump when the cache layout, its key or decoding changes: old files are rebuilt


def default_dir(data_dir):
    """Where the caches go without --cache-dir: beside the data."""
    return os.path.join(data_dir, ".lintorch-cache")


def cached_split(root, scanned, image_size, cache_dir, skip_bad_images, cache_check, name, progress=False):
    """Decode the scanned (files, labels, classes) of split `name` once; reuse the uint8 cache at
    cache_dir/<name>-<S>px.pt while they are unchanged (cache_dir None: no cache)."""
    files, labels, classes = scanned
    key = cache_key(files, labels, image_size, skip_bad_images, cache_check)
    path = os.path.join(cache_dir, f"{name}-{image_size}px.pt") if cache_dir else None
    if path and os.path.exists(path):
        split = read(path, key, files, labels, image_size, skip_bad_images)
        if split is not None:
            return split
    x, keep = decode(files, image_size, skip_bad_images, f"decoding {name} images" if progress else None)
    split = Split(x, torch.tensor(labels, dtype=torch.long)[keep], [files[i] for i in keep])
    if name == "train" and len(keep) < len(files):
        gone = sorted(set(range(len(classes))) - set(split.y.tolist()))
        if gone:
            raise DataError(f"no readable images left in class folder(s) {', '.join(classes[c] for c in gone)} "
                            f"of {root} after skipping unreadable ones")
    if path:
        write(path, key, split)
    return split


def fingerprint(path, cache_check):
    """What the cache key knows of one file: its stat ("stat") or the sha256 of its bytes ("full").

    "stat" is size, mtime_ns, ctime_ns and inode: an in-place edit whose mtime is put back (touch -d)
    still moves ctime, which no user call can set. Its limits: a file system with coarse or no
    ctime (FAT, some network mounts), or a clock set back, can hide an edit; "full" cannot be fooled
    but reads every byte. A file that cannot be stat'ed or read gets a marker, so decoding names it.
    """
    try:
        if cache_check == "full":
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            return h.hexdigest()
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
    except OSError as e:
        return f"error:{e.errno}"


def cache_key(files, labels, image_size, skip_bad_images, cache_check):
    """sha256 over the decoding settings and each file's path, label and fingerprint."""
    h = hashlib.sha256(f"v{CACHE_VERSION}:{image_size}:{skip_bad_images}:{cache_check}".encode())
    if cache_check == "full":  # reading is the cost: threads, one slice of the files each (no per-file future)
        step = -(-len(files) // (4 * THREADS))
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            parts = pool.map(lambda i: [fingerprint(f, "full") for f in files[i:i + step]], range(0, len(files), step))
            prints = [fp for part in parts for fp in part]
    else:
        prints = [fingerprint(f, "stat") for f in files]
    for f, label, fp in zip(files, labels, prints):
        h.update(f"{f}\0{label}\0{fp}\n".encode())
    return h.hexdigest()


def contents_error(c, files, labels, image_size, skip_bad_images):
    """Why the cache c does not hold what its key claims, or None: x uint8 (N, 3, S, S), y int64 (N,)
    equal to the scanned labels of its N files, which are the scanned files (a subsequence of them
    when unreadable ones were skipped)."""
    x, y, kept = c.get("x"), c.get("y"), c.get("files")
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4 \
            or tuple(x.shape[1:]) != (3, image_size, image_size):
        return f"x is not uint8 (N, 3, {image_size}, {image_size})"
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (len(x),):
        return f"y is not int64 ({len(x)},)"
    if not isinstance(kept, list) or len(kept) != len(x) or not all(isinstance(f, str) for f in kept):
        return f"files is not a list of {len(x)} paths"
    if skip_bad_images:
        where = {f: i for i, f in enumerate(files)}
        idx = [where.get(f, -1) for f in kept]
        if min(idx, default=0) < 0 or idx != sorted(set(idx)):
            return "files are not the scanned files"
    elif kept != files:
        return "files are not the scanned files"
    else:
        idx = range(len(files))
    if y.tolist() != [labels[i] for i in idx]:
        return "y are not the files' labels"
    return None


def read(path, key, files, labels, image_size, skip_bad_images):
    """The cached Split at path if it is this key's and holds what it claims, else None (logged)."""
    try:
        c = torch.load(path, weights_only=True)
    except Exception as e:
        log.warning("cache %s is unreadable (%s): rebuilding", path, e)
        return None
    if not isinstance(c, dict):
        log.warning("cache %s is not a lintorch data cache: rebuilding", path)
        return None
    x = c.get("x")
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise DataError(f"the data cache {path} holds {bad} NaN/inf values (corrupt): delete it "
                            f"and lintorch rebuilds it from the images")
    if c.get("version") != CACHE_VERSION or c.get("key") != key:
        log.info("cache %s is stale (another version, data set or changed files): rebuilding", path)
        return None
    why = contents_error(c, files, labels, image_size, skip_bad_images)
    if why:
        log.warning("cache %s does not hold what its key claims (%s): rebuilding", path, why)
        return None
    if c.get("checksum") != checksum((x, c["y"])):
        log.warning("cache %s: its images do not match the checksum written with them (changed or damaged "
                    "since): rebuilding", path)
        return None
    return Split(x, c["y"], c["files"])


def remove_dead_temp_files(path):
    """path.tmpPID files whose writer is gone (SIGKILL runs no cleanup) would hold disk space forever."""
    folder, name = os.path.split(path)
    remove_dead_temporaries(folder, name)


def write(path, key, split):
    """Save split (with files) as key's cache at path; a failure (full disk, read-only folder, ...) is
    one warning: the data is in memory."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        remove_dead_temp_files(path)
        torch_save_atomic({"version": CACHE_VERSION, "key": key, "x": split.x, "y": split.y,
                           "files": split.files, "checksum": checksum((split.x, split.y))}, path)
    except Exception as e:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            need = split.x.numel() + split.y.numel() * 8
            try:
                free = f", {human_bytes(shutil.disk_usage(os.path.dirname(path)).free)} free"
            except OSError:
                free = ""
            log.warning("no space left to write the data cache %s (it needs about %s%s): going on without "
                        "a cache; free space or point --cache-dir elsewhere", path, human_bytes(need), free)
        else:
            log.warning("could not write the data cache %s (%s); decoding again next time", path,
                        error_reason(path, e))
