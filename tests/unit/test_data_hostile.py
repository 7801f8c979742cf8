"""Hostile inputs to the data layer (issue 12): odd folder trees, stale or lying caches, storage faults
while writing the cache, bare errno messages and image sizes that cannot fit in memory. Each problem a
user can cause ends in a one-line DataError or a warning, never a traceback, a silent label shift or
a temporary file left behind."""
import errno
import os
import re
import shutil
import subprocess

import pytest
import torch

from lintorch.data import imagecache, sources
from lintorch.data import Preprocess, decoded_bytes, load_dataset
from lintorch.errors import DataError
from lintorch.data.loaders import make_loader

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def tree(root, classes=("c0", "c1"), n=4, ext="png"):
    """root/train/<class>/<i>.<ext>: solid colour 8x8 images, one colour per class -> root."""
    from PIL import Image
    for c, name in enumerate(classes):
        folder = root / "train" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8), COLOURS[c % 3]).save(folder / f"{i}.{ext}")
    return root


def image(path, colour=(90, 90, 90), size=(8, 8)):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def load(root, **kw):
    kw = {"image_size": 8, "val_size": 2, "seed": 0, **kw}
    return load_dataset("imagefolder", str(root), **kw)


def batches(loader, epoch=0):
    return [(x.clone(), y.clone()) for x, y in loader.batches(epoch)]


def assert_loaders_agree(ds, batch_size=3):
    """Both loaders give the same batches, labels included, for each split that exists."""
    pre = Preprocess.fit(ds.train.x)
    for split in ("train", "val") + (("test",) if ds.test is not None else ()):
        a = batches(make_loader("tensor", ds, split, pre, batch_size, "cpu", seed=1))
        b = batches(make_loader("dataloader", ds, split, pre, batch_size, "cpu", seed=1))
        assert len(a) == len(b) >= 1
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(ya, yb), split
            assert torch.equal(xa, xb), split


def cache_files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- 6. what counts as a class and an image

def test_hidden_folder_is_not_a_class_for_either_loader(tmp_path):
    """train/.hidden/a.png shifted every DataLoader label by one (torchvision counted it as a class)."""
    tree(tmp_path)
    image(tmp_path / "train" / ".hidden" / "a.png")
    image(tmp_path / "train" / ".Trash-0" / "files" / "b.png")
    ds = load(tmp_path)
    assert ds.classes == ["c0", "c1"]
    assert_loaders_agree(ds)


def test_test_split_labels_agree_between_loaders(tmp_path):
    tree(tmp_path)
    tree(tmp_path / "t", n=2)
    shutil.move(tmp_path / "t" / "train", tmp_path / "test")
    image(tmp_path / "test" / ".hidden" / "a.png")
    ds = load(tmp_path)
    assert len(ds.test) == 4
    assert_loaders_agree(ds)


def test_empty_class_folder_is_refused_by_both_loaders(tmp_path):
    """An empty class folder used to train silently with the tensor loader (a class never predicted)."""
    tree(tmp_path)
    (tmp_path / "train" / "b_empty").mkdir()
    (tmp_path / "train" / "d_junk").mkdir()
    (tmp_path / "train" / "d_junk" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="b_empty.*d_junk") as e:
        load(tmp_path)
    assert "\n" not in str(e.value)


def test_class_emptied_by_skipped_images_is_refused(tmp_path):
    tree(tmp_path)
    (tmp_path / "train" / "c2").mkdir()
    (tmp_path / "train" / "c2" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="c2"):
        load(tmp_path, skip_bad_images=True)


def test_odd_entries_in_class_folders(tmp_path):
    """Folders named like images, nested folders, symlinked files and folders, a symlink loop, hidden
    files (macOS ._ files): only real images count, nested ones under their class, same for both loaders."""
    tree(tmp_path)
    c0, c1 = tmp_path / "train" / "c0", tmp_path / "train" / "c1"
    (c0 / "folder.jpg").mkdir()                                   # a folder with an image extension
    image(c0 / "folder.jpg" / "inner.png", COLOURS[0])             # ... holding an image: nested, counts
    image(c0 / "sub" / "deeper" / "n.png", COLOURS[0])             # nested folders count (ImageFolder does)
    (c0 / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # hidden junk with an image extension
    os.symlink(c1 / "0.png", c1 / "link.png")                      # a symlinked file is an image
    outside = tmp_path / "elsewhere"
    image(outside / "x.png", COLOURS[1])
    os.symlink(outside, c1 / "linked_folder")                      # a symlinked folder is followed
    os.symlink(c1, c1 / "loop")                                    # ... but a loop only once
    os.mkfifo(c1 / "pipe.png")                                     # never opened: it would block
    ds = load(tmp_path)
    files = sorted(os.path.relpath(f, tmp_path / "train") for f in ds.train.files + ds.val.files)
    assert files == sorted(["c0/0.png", "c0/1.png", "c0/2.png", "c0/3.png", "c0/folder.jpg/inner.png",
                            "c0/sub/deeper/n.png", "c1/0.png", "c1/1.png", "c1/2.png", "c1/3.png",
                            "c1/link.png", "c1/linked_folder/x.png"])
    assert_loaders_agree(ds)


# --------------------------------------------------------------------------- 7. the cache holds what it claims

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
    load(tmp_path, cache_check=cache_check)
    edit_in_place(tmp_path / "train" / "c0" / "2.bmp", (1, 2, 3))
    ds = load(tmp_path, cache_check=cache_check)
    assert (all_pixels(ds) == torch.tensor([1, 2, 3], dtype=torch.uint8)).all(1).sum() == 1


def test_full_check_hashes_content_not_metadata(tmp_path, caplog):
    """cache_check="full" keeps the cache through a metadata-only change (chmod, touch) that "stat" rebuilds."""
    bmp_tree(tmp_path)
    load(tmp_path, cache_check="full")
    f = tmp_path / "train" / "c1" / "0.bmp"
    os.chmod(f, 0o600)
    os.utime(f)
    with caplog.at_level("INFO", logger="lintorch.data"):
        load(tmp_path, cache_check="full")
    assert "stale" not in caplog.text
    with caplog.at_level("INFO", logger="lintorch.data"):
        load(tmp_path, cache_check="stat")                           # another mode: its own key
        caplog.clear()
        os.utime(f)
        load(tmp_path, cache_check="stat")
    assert "stale" in caplog.text


def test_unknown_cache_check_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cache.check.*stat.*full"):
        load(tree(tmp_path), cache_check="md5")


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
    good = load(tmp_path)
    path = tmp_path / ".lintorch-cache" / "train-8px.pt"
    c = torch.load(path, weights_only=True)
    LIES[lie](c)
    torch.save(c if c else [1, 2], path)
    with caplog.at_level("INFO", logger="lintorch.data"):
        ds = load(tmp_path)
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
    before = load(tmp_path)
    assert before.test.y.tolist() == [0, 0, 1, 1]
    tree(tmp_path, classes=("a",))                                 # a new first class
    after = load(tmp_path)
    assert after.classes == ["a", "b", "c"] and after.test.y.tolist() == [1, 1, 2, 2]


# --------------------------------------------------------------------------- 10. storage faults writing the cache

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
        ds = load(tmp_path)                                        # training proceeds without a cache
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
        load(tmp_path)
    assert cache_files(tmp_path / ".lintorch-cache") == []


def test_read_only_cache_folder(tmp_path, caplog):
    tree(tmp_path)
    load(tmp_path)
    cache = tmp_path / ".lintorch-cache"
    (cache / "train-8px.pt").unlink()
    os.chmod(cache, 0o555)
    try:
        if os.access(cache, os.W_OK):
            pytest.skip("running as root: chmod does not make the folder read-only (the monkeypatched "
                        "RuntimeError/PermissionError cases above cover it)")
        with caplog.at_level("WARNING", logger="lintorch.data"):
            ds = load(tmp_path)
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
    load(tmp_path)
    assert cache_files(cache) == ["train-8px.pt", f"train-8px.pt.tmp{os.getppid()}"]


def test_cache_write_is_fsynced(tmp_path, monkeypatch):
    tree(tmp_path)
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    load(tmp_path)
    assert len(synced) >= 2                                          # the file and its folder


# --------------------------------------------------------------------------- 15. errno messages

def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "data.tar"
    f.write_bytes(b"x")
    with pytest.raises(DataError, match="is a file.*expected a folder"):
        load(f)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train").write_bytes(b"x")
    with pytest.raises(DataError, match="train is a file"):
        load(tmp_path / "d")


def test_dangling_symlink_class_folder_is_named(tmp_path):
    """A class folder that is a broken symlink would otherwise vanish from the classes silently."""
    tree(tmp_path)
    os.symlink(tmp_path / "unmounted" / "c2", tmp_path / "train" / "c2")
    with pytest.raises(DataError, match="train/c2 is a symlink to .*unmounted/c2, which does not exist"):
        load(tmp_path)


def test_dangling_symlink_image_is_named_or_skipped(tmp_path):
    tree(tmp_path)
    link = tmp_path / "train" / "c1" / "gone.png"
    os.symlink(tmp_path / "nowhere.png", link)
    with pytest.raises(DataError, match="gone.png.*nowhere.png.*does not exist.*--skip-bad-images") as e:
        load(tmp_path)
    assert "Errno" not in str(e.value)
    ds = load(tmp_path, skip_bad_images=True)
    assert len(ds.train) + len(ds.val) == 8
    assert_loaders_agree(ds)


def test_folder_that_cannot_be_listed(tmp_path, monkeypatch):
    tree(tmp_path)
    locked = tmp_path / "train" / "c1"
    os.chmod(locked, 0)
    try:
        if os.access(locked, os.R_OK):                               # root: simulate what chmod would do
            real = os.scandir

            def scandir(path="."):
                if os.fspath(path).rstrip("/") == str(locked):
                    raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
                return real(path)
            monkeypatch.setattr(os, "scandir", scandir)
            monkeypatch.setattr(os, "listdir", lambda path=".": list(e.name for e in scandir(path)))
        with pytest.raises(DataError, match=re.escape(f"cannot list {locked}: permission denied")) as e:
            load(tmp_path)
        assert "Errno" not in str(e.value)
    finally:
        os.chmod(locked, 0o755)


# --------------------------------------------------------------------------- 8. image sizes that cannot fit

def test_decoded_bytes():
    assert decoded_bytes(50_000, 32) == 50_000 * 3 * 32 * 32
    assert decoded_bytes(60_000, 2000) == 720_000_000_000


def test_image_size_beyond_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    """--image-size 2000 on CIFAR-10 asked the allocator for 720 GB; now a one-line DataError that
    names the memory needed and available, before anything is decoded or allocated."""
    with pytest.raises(DataError, match=r"--image-size 20000 needs about .* available.*smaller --image-size"):
        load_dataset("synthetic", image_size=20000)
    tree(tmp_path)
    monkeypatch.setattr(imagecache, "decode", lambda *a: pytest.fail("decoded before the memory check"))
    monkeypatch.setattr(sources, "available_memory", lambda: 50_000_000)     # a 50 MB machine
    with pytest.raises(DataError, match=r"--image-size 2000 needs about 336.0 MB .*50.0 MB available.*at most about"):
        load(tmp_path, image_size=2000)


def test_image_size_that_fits_still_loads(tmp_path, monkeypatch):
    tree(tmp_path)
    monkeypatch.setattr(sources, "available_memory", lambda: 50_000_000)
    assert load(tmp_path, image_size=64).train.x.shape[-1] == 64
