"""lintorch.data.imagecache: the decoded-image cache is served only while it matches its images, and its writes
fail safely."""
import errno
import os
import shutil
import subprocess

import pytest
import torch

from lintorch.data import load_dataset
from lintorch.errors import DataError
from tests.data.conftest import load_tree, tree
from tests.helpers import image_tree


def load(root):
    return load_dataset("imagefolder", str(root), image_size=8, val_size=2, seed=0)


def tamper_zero(c):
    c["x"] = torch.zeros_like(c["x"])


def tamper_pixel(c):
    c["x"][3, 1, 2, 2] ^= 1


def tamper_swap(c):
    n = len(c["x"])                                     # the first image (red) and the last (green)
    c["x"] = c["x"][[n - 1, *range(1, n - 1), 0]].clone()


@pytest.mark.parametrize("tamper", [tamper_zero, tamper_pixel, tamper_swap])
def test_a_changed_cache_is_rebuilt_not_served(tmp_path, caplog, tamper):
    image_tree(tmp_path)
    good = load(tmp_path)
    path = tmp_path / ".lintorch-cache" / "train-8px.pt"
    c = torch.load(path, weights_only=True)
    tamper(c)
    torch.save(c, path)                                  # same key, shape, dtype, files and labels
    caplog.clear()
    with caplog.at_level("INFO", logger="lintorch.data"):
        ds = load(tmp_path)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "checksum" in lines[0] and "rebuilding" in lines[0], lines
    for a, b in ((ds.train, good.train), (ds.val, good.val)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    caplog.clear()
    with caplog.at_level("INFO", logger="lintorch.data"):
        load(tmp_path)                                   # the rebuilt cache is served quietly
    assert not caplog.records


def test_a_cache_without_a_checksum_is_rebuilt(tmp_path, caplog):
    image_tree(tmp_path)
    good = load(tmp_path)
    path = tmp_path / ".lintorch-cache" / "train-8px.pt"
    c = torch.load(path, weights_only=True)
    del c["checksum"]
    torch.save(c, path)
    with caplog.at_level("INFO", logger="lintorch.data"):
        ds = load(tmp_path)
    assert "checksum" in caplog.text and torch.equal(ds.train.x, good.train.x)


def cache_files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- the cache holds what it claims

def bmp_tree(root):
    """BMP files: a colour change keeps the file size, so size + mtime cannot see an in-place edit."""
    return tree(root, ext="bmp")


def edit_in_place(path, colour):
    """Rewrite path with other pixels, same size, then put its mtime back (as `touch -d` would)."""
    from PIL import Image
    before = os.stat(path)
    Image.new("RGB", (8, 8), colour).save(path, format="BMP")
    assert os.path.getsize(path) == before.st_size
    if shutil.which("touch"):
        sec, ns = divmod(before.st_mtime_ns, 10 ** 9)
        subprocess.run(["touch", "-m", "-d", f"@{sec}.{ns:09d}", str(path)], check=True)
    else:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def all_pixels(ds):
    return torch.cat([ds.train.x, ds.val.x])[:, :, 0, 0]


@pytest.mark.parametrize("cache_check", ["stat", "full"])
def test_in_place_edit_with_restored_mtime_is_seen(tmp_path, cache_check):
    bmp_tree(tmp_path)
    load_tree(tmp_path, cache_check=cache_check)
    edit_in_place(tmp_path / "train" / "c0" / "2.bmp", (1, 2, 3))
    ds = load_tree(tmp_path, cache_check=cache_check)
    assert (all_pixels(ds) == torch.tensor([1, 2, 3], dtype=torch.uint8)).all(1).sum() == 1


def test_full_check_hashes_content_not_metadata(tmp_path, caplog):
    """cache_check="full" keeps the cache through a metadata-only change (chmod, touch) that "stat" rebuilds."""
    bmp_tree(tmp_path)
    load_tree(tmp_path, cache_check="full")
    f = tmp_path / "train" / "c1" / "0.bmp"
    os.chmod(f, 0o600)
    os.utime(f)
    with caplog.at_level("INFO", logger="lintorch.data"):
        load_tree(tmp_path, cache_check="full")
    assert "stale" not in caplog.text
    with caplog.at_level("INFO", logger="lintorch.data"):
        load_tree(tmp_path, cache_check="stat")                           # another mode: its own key
        caplog.clear()
        os.utime(f)
        load_tree(tmp_path, cache_check="stat")
    assert "stale" in caplog.text


def test_unknown_cache_check_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cache.check.*stat.*full"):
        load_tree(tree(tmp_path), cache_check="md5")


def _truncate_rows(c):
    c["x"], c["y"], c["files"] = c["x"][:3], c["y"][:3], c["files"][:3]


LIES = {
    "fewer rows": _truncate_rows,
    "fewer x rows": lambda c: c.update(x=c["x"][:3]),
    "x int16": lambda c: c.update(x=c["x"].to(torch.int16)),
    "x wrong size": lambda c: c.update(x=c["x"][:, :, :4, :4].contiguous()),
    "x flat": lambda c: c.update(x=c["x"].reshape(len(c["x"]), -1)),
    "y int32": lambda c: c.update(y=c["y"].int()),
    "y out of range": lambda c: c.update(y=c["y"] + 5),
    "y other labels": lambda c: c.update(y=1 - c["y"]),
    "files shorter": lambda c: c.update(files=c["files"][:-1]),
    "files reordered": lambda c: c.update(files=c["files"][::-1]),
    "files not a list": lambda c: c.update(files="c0/0.png"),
    "x missing": lambda c: c.pop("x"),
    "not a dict": lambda c: c.clear(),
}


@pytest.mark.parametrize("lie", list(LIES))
def test_cache_that_lies_about_its_contents_is_rebuilt(tmp_path, caplog, lie):
    """A cache with the right key but contents that do not match it: a warning and a rebuild, never an
    IndexError or wrong labels."""
    tree(tmp_path)
    good = load_tree(tmp_path)
    path = tmp_path / ".lintorch-cache" / "train-8px.pt"
    c = torch.load(path, weights_only=True)
    LIES[lie](c)
    torch.save(c if c else [1, 2], path)
    with caplog.at_level("INFO", logger="lintorch.data"):
        ds = load_tree(tmp_path)
    assert "rebuild" in caplog.text
    for a, b in ((ds.train, good.train), (ds.val, good.val)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.files == b.files
    rebuilt = torch.load(path, weights_only=True)
    assert rebuilt["x"].shape == (8, 3, 8, 8) and rebuilt["y"].dtype == torch.int64 and len(rebuilt["files"]) == 8


def test_test_labels_follow_a_changed_class_list(tmp_path):
    """The test split's labels come from the training classes: a new training class shifts them, so
    the test cache (same files, same stats) must not be reused."""
    tree(tmp_path, classes=("b", "c"))
    tree(tmp_path / "t", classes=("b", "c"), n=2)
    shutil.move(tmp_path / "t" / "train", tmp_path / "test")
    before = load_tree(tmp_path)
    assert before.test.y.tolist() == [0, 0, 1, 1]
    tree(tmp_path, classes=("a",))                                 # a new first class
    after = load_tree(tmp_path)
    assert after.classes == ["a", "b", "c"] and after.test.y.tolist() == [1, 1, 2, 2]


# --------------------------------------------------------------------------- storage faults writing the cache

def fail_after_writing(exc):
    """A torch.save that writes 2 MB of its file, then fails with exc (what a full disk does)."""
    def save(obj, f, *a, **kw):
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as out:
                out.write(b"\0" * (2 << 20))
        else:
            f.write(b"\0" * (2 << 20))
        raise exc
    return save


@pytest.mark.parametrize("exc, message", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space"),
    (RuntimeError("File train-8px.pt.tmp1 cannot be opened."), "could not write"),   # torch.save's own error
    (PermissionError(errno.EACCES, "Permission denied"), "could not write"),
])
def test_cache_write_failure_is_one_warning_and_no_temp_file(tmp_path, caplog, monkeypatch, exc, message):
    tree(tmp_path)
    monkeypatch.setattr(torch, "save", fail_after_writing(exc))
    with caplog.at_level("WARNING", logger="lintorch.data"):
        ds = load_tree(tmp_path)                                        # training proceeds without a cache
    assert len(ds.train) + len(ds.val) == 8
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and message in warnings[0].getMessage().lower()
    assert "train-8px.pt" in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()
    if exc.args[0] == errno.ENOSPC:                                 # the space needed is named
        assert "needs about" in warnings[0].getMessage()
    assert cache_files(tmp_path / ".lintorch-cache") == []


def test_interrupt_during_cache_write_leaves_no_temp_file(tmp_path, monkeypatch):
    tree(tmp_path)
    monkeypatch.setattr(torch, "save", fail_after_writing(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        load_tree(tmp_path)
    assert cache_files(tmp_path / ".lintorch-cache") == []


def test_read_only_cache_folder(tmp_path, caplog):
    tree(tmp_path)
    load_tree(tmp_path)
    cache = tmp_path / ".lintorch-cache"
    (cache / "train-8px.pt").unlink()
    os.chmod(cache, 0o555)
    try:
        if os.access(cache, os.W_OK):
            pytest.skip("running as root: chmod does not make the folder read-only (the monkeypatched "
                        "RuntimeError/PermissionError cases above cover it)")
        with caplog.at_level("WARNING", logger="lintorch.data"):
            ds = load_tree(tmp_path)
        assert len(ds.train) + len(ds.val) == 8 and "could not write" in caplog.text
    finally:
        os.chmod(cache, 0o755)


def test_temp_files_of_dead_writers_are_removed(tmp_path):
    """A cache write killed by SIGKILL (no finally runs) leaves name.tmpPID; the next write removes it."""
    tree(tmp_path)
    cache = tmp_path / ".lintorch-cache"
    cache.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (cache / f"train-8px.pt.tmp{dead.pid}").write_bytes(b"\0" * 1000)
    (cache / f"train-8px.pt.tmp{os.getppid()}").write_bytes(b"live writer")   # a live process: kept
    load_tree(tmp_path)
    assert cache_files(cache) == ["train-8px.pt", f"train-8px.pt.tmp{os.getppid()}"]


def test_cache_write_is_fsynced(tmp_path, monkeypatch):
    tree(tmp_path)
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    load_tree(tmp_path)
    assert len(synced) >= 2                                          # the file and its folder


def test_stale_or_foreign_cache_is_rebuilt(tmp_path, caplog):
    import shutil
    from lintorch.data import load_dataset
    a, b = tmp_path / "a", tmp_path / "b"
    image_tree(a)
    image_tree(b)
    from PIL import Image
    Image.new("RGB", (8, 8), (0, 0, 255)).save(b / "train" / "c0" / "0.png")   # b differs from a
    ds_a = load_dataset("imagefolder", str(a), image_size=8, val_size=2)
    (b / ".lintorch-cache").mkdir()
    shutil.copy(a / ".lintorch-cache" / "train-8px.pt", b / ".lintorch-cache" / "train-8px.pt")
    os.utime(b / ".lintorch-cache" / "train-8px.pt")
    with caplog.at_level("INFO", logger="lintorch.data"):
        ds_b = load_dataset("imagefolder", str(b), image_size=8, val_size=2)
    assert "stale" in caplog.text
    blue = torch.tensor([0, 0, 255], dtype=torch.uint8)
    all_b = torch.cat([ds_b.train.x, ds_b.val.x])
    assert (all_b[:, :, 0, 0] == blue).all(1).any()                  # b's own pixels, not a's cache
    assert not (torch.cat([ds_a.train.x, ds_a.val.x])[:, :, 0, 0] == blue).all(1).any()
    cache = torch.load(a / ".lintorch-cache" / "train-8px.pt", weights_only=True)
    cache["version"] = 1                                              # an older lintorch's cache
    torch.save(cache, a / ".lintorch-cache" / "train-8px.pt")
    caplog.clear()
    with caplog.at_level("INFO", logger="lintorch.data"):
        load_dataset("imagefolder", str(a), image_size=8, val_size=2)
    assert "stale" in caplog.text


def test_nan_in_cached_data_is_reported(tmp_path):
    from lintorch.data import load_dataset
    from lintorch.errors import DataError
    image_tree(tmp_path)
    load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2)
    path = tmp_path / ".lintorch-cache" / "train-8px.pt"
    cache = torch.load(path, weights_only=True)
    x = cache["x"].float()
    x[0, 0, :2, :] = float("nan")                                     # 16 corrupt values
    cache["x"] = x
    torch.save(cache, path)
    with pytest.raises(DataError, match="16 NaN/inf values"):
        load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2)


def test_first_run_shows_a_decoding_bar_and_a_cached_one_none(image_folder, tmp_path, monkeypatch):
    from lintorch.data import load_dataset
    from lintorch.output import progress
    bars = []
    real = progress.Progress

    class Bar(real):            # a tqdm bar on a terminal, lines in a log file: either way a Progress
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not self.disable:
                bars.append(self)
    monkeypatch.setattr(progress, "Progress", Bar)
    for _ in range(2):
        load_dataset("imagefolder", str(image_folder), 16, 12, 0, str(tmp_path / "cache"), progress=True)
    shown = [(b.desc, b.total, b.done) for b in bars]
    assert shown == [("decoding train images", 48, 48), ("decoding test images", 15, 15)]   # none when cached
