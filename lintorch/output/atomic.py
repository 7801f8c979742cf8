"""Atomic file writes, the one way lintorch writes a file: to PATH.tmpPID in the same folder,
flushed and fsync'd, renamed over PATH, the folder fsync'd. Readers see the old file or the new
one, never a torn one; the temporary file is removed on any failure (a full disk, Ctrl-C).
"""
import os


def write_atomic(path, write, mode="wb"):
    """write(f) writes the contents to an open file f; -> None. OSError as raised by the write."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        try:
            os.remove(tmp)
        except OSError:
            pass  # renamed: nothing left
    try:  # make the rename itself durable
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def copy_atomic(src, dst):
    """dst becomes a copy of src's bytes, atomically (as write_atomic)."""
    import shutil
    with open(src, "rb") as f:
        write_atomic(dst, lambda out: shutil.copyfileobj(f, out))


def remove_dead_temporaries(folder, prefix=""):
    """Remove folder's NAME.tmpPID files (NAME starting with prefix) whose writer is gone: SIGKILL
    runs no cleanup, and they would hold disk space forever. Files of live processes stay."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        head, sep, pid = name.rpartition(".tmp")
        if not (sep and head.startswith(prefix) and pid.isdigit()) or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
        except OSError:
            pass  # alive, another user's


def torch_save_atomic(obj, path):
    """torch.save obj to path atomically."""
    import torch
    write_atomic(path, lambda f: torch.save(obj, f))
