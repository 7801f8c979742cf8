"""The run folder: claimed atomically before any slow work, locked while a process uses it, and
the small files written into it (config.json, metrics.json, templates.png), each atomically.

One run per folder: a new run claims its folder by creating config.json exclusively (O_EXCL),
so two runs started together never share one; every process holds an flock on RUN/.lock while
it trains or resumes, so a second resume of the same run is refused (the kernel drops the lock
when a process dies, even by SIGKILL, so no stale lock survives). A process that lets go of a
folder removes RUN/.lock first (release), so a finished folder holds only its results; one that
locked the old file just before that removal finds it gone and locks the new one instead.

A folder made whole by one command (extract's --out) is claimed the same way, by an flock on a
.NAME.lock beside it, and built beside it (.NAME.partialPID), then renamed into place: readers
see no folder, or the old one, or the complete new one (build_beside).
"""
import contextlib
import errno
import fcntl
import json
import os
import shutil
import time

from ..errors import UserError
from .atomic import write_atomic

LOCK = ".lock"
RUN_FILES = ("config.json", "checkpoint.pt", "last.pt", "metrics.json")


def default_folder(dataset, kind, root="runs"):
    return os.path.join(root, f"{time.strftime('%Y%m%d-%H%M%S')}-{dataset}-{kind}")


def _lock(folder):
    """Hold an exclusive flock on folder/.lock for this process's life -> the open fd."""
    path = os.path.join(folder, LOCK)
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(f"{folder} is in use by another lintorch process (one run per folder)") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)        # the holder removed this file as it let go (release): lock the one there now
    raise UserError(f"could not lock {path}: it keeps being replaced")


def release(folder, fd):
    """Let go of a folder locked by _lock: remove its .lock while still holding it, then unlock."""
    try:
        os.remove(os.path.join(folder, LOCK))
    except OSError:
        pass                # gone already (abandon), or a read-only folder: the lock is released all the same
    os.close(fd)


def _describe(folder):
    """Why an existing folder cannot take a new run, and what the user can do."""
    metrics = os.path.join(folder, "metrics.json")
    status = None
    try:
        with open(metrics) as f:
            status = json.load(f).get("status")
    except (OSError, ValueError, AttributeError):
        pass
    if status == "interrupted" and os.path.isfile(os.path.join(folder, "last.pt")):
        return f"{folder} already holds an interrupted run: continue it with --resume {folder}, or give another --logdir"
    return f"{folder} already holds a run ({status or 'unfinished or killed'}): give another --logdir"


def claim_new(folder):
    """Create (or take an empty) folder for a new run and claim it -> (lock fd, whether this call
    created the folder). UserError if the path is a file, or the folder holds a run or anything
    else, or another process claimed it."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--logdir {folder} is a file, not a folder")
    created = not os.path.isdir(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run folder {folder}: {e.strerror}") from None
    fd = _lock(folder)
    leftovers = [n for n in os.listdir(folder) if n != LOCK]
    if leftovers:
        os.close(fd)
        if any(n in RUN_FILES or n.startswith("events.out") for n in leftovers):
            raise UserError(_describe(folder) + " (nothing was overwritten)")
        raise UserError(f"--logdir {folder} is not empty ({', '.join(sorted(leftovers)[:3])}): give an empty or "
                        f"new folder")
    try:
        os.close(os.open(os.path.join(folder, "config.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        os.close(fd)
        raise UserError(f"{folder} was claimed by another run just now: give another --logdir") from None
    return fd, created


def claim_default(dataset, kind):
    """runs/<timestamp>-<dataset>-<kind>, with -2, -3, ... when that name is taken -> (folder, fd, True)."""
    base = default_folder(dataset, kind)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    for n in range(1, 1000):
        folder = base if n == 1 else f"{base}-{n}"
        try:
            os.mkdir(folder)                      # exclusive: two runs in the same second get two folders
        except FileExistsError:
            continue
        fd, _ = claim_new(folder)
        return folder, fd, True
    raise UserError(f"could not create a run folder next to {base}")


def abandon(folder, created):
    """Undo a new run's claim when it failed before training began: if the folder holds only
    the claim (config.json, .lock), remove them, and the folder too when the claim created it,
    so no half-made run is left to be refused later. A folder holding anything more is kept."""
    try:
        names = set(os.listdir(folder))
        if not names <= {"config.json", LOCK}:
            return
        for name in ("config.json", LOCK):
            if name in names:
                os.remove(os.path.join(folder, name))
        if created:
            os.rmdir(folder)
    except OSError:
        pass        # best effort: the error that brought us here is the one to report


def claim_existing(folder):
    """Lock an existing run folder to resume it -> lock fd."""
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: not a run folder")
    return _lock(folder)


def write_json(path, obj):
    """Write obj as JSON atomically; a full disk is one line naming the file."""
    try:
        write_atomic(path, lambda f: json.dump(obj, f, indent=2, default=float), mode="w")
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"cannot write {path}: no space left on the device") from None
        raise


def write_png(image, path):
    """image uint8 (3, H, W) tensor -> a PNG file, written with Pillow (torchvision's encoders are deprecated)."""
    from PIL import Image
    pic = Image.fromarray(image.permute(1, 2, 0).contiguous().cpu().numpy())
    write_atomic(path, lambda f: pic.save(f, format="PNG"))


# --------------------------------------------------------------------------- a folder built whole

def _lock_beside(parent, name, path):
    """An flock on parent/.name.lock, the file checked to be the one on disk (a finisher unlinks
    it) -> (fd, lock path); UserError while another process holds it."""
    lock = os.path.join(parent, f".{name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(f"{path} is being written by another process now: wait for it, or choose "
                            f"another --out") from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd, lock
        except FileNotFoundError:
            pass
        os.close(fd)                        # unlinked by its last holder meanwhile: take the new one


def _remove_dead_builds(parent, name):
    """.name.partialPID / .name.oldPID folders whose process is gone (SIGKILL runs no cleanup)."""
    for entry in os.listdir(parent):
        for kind in ("partial", "old"):
            head = f".{name}.{kind}"
            pid = entry[len(head):] if entry.startswith(head) else ""
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
                except OSError:
                    pass


def _check_target(path, overwrite, marker):
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        raise UserError(f"--out {path} exists and is not a folder")
    names = os.listdir(path)
    if not names:
        return
    if not overwrite:
        what = "features" if marker in names else f"other files ({', '.join(sorted(names)[:3])})"
        raise UserError(f"{path} already holds {what}; choose another --out" +
                        (" or pass --overwrite" if marker in names else ""))
    if marker not in names:
        raise UserError(f"--overwrite replaces a feature folder, but {path} holds other files "
                        f"({', '.join(sorted(names)[:3])}) and no {marker}: choose another --out")


@contextlib.contextmanager
def build_beside(path, overwrite=False, marker="classes.json"):
    """Claim `path` for a folder this process makes whole -> yields the folder to build it in.

    On success the build is renamed to `path` (with overwrite, an existing folder holding `marker`
    is replaced whole: no file of the old one stays); on any failure, Ctrl-C or SystemExit the
    build is removed, and `path` is as it was. UserError, before any work, when path holds
    something (without overwrite), holds what overwrite may not replace, or is claimed now."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {parent}: {e.strerror}") from None
    fd, lock = _lock_beside(parent, name, path)
    build = os.path.join(parent, f".{name}.partial{os.getpid()}")
    try:
        _remove_dead_builds(parent, name)
        _check_target(path, overwrite, marker)
        shutil.rmtree(build, ignore_errors=True)
        os.mkdir(build)
        try:
            yield build
            if os.path.isdir(path) and os.listdir(path):
                old = os.path.join(parent, f".{name}.old{os.getpid()}")
                os.rename(path, old)
                os.rename(build, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(build, path)      # over an empty folder too
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    finally:
        try:
            os.remove(lock)
        except OSError:
            pass
        os.close(fd)
