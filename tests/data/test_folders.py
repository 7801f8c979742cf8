"""lintorch.data.folders: ImageFolder trees, odd entries, empty classes, links and unreadable files, the same for
both loaders."""
import errno
import os
import re
import shutil

import pytest
import torch

from lintorch.data import Preprocess, load_dataset
from lintorch.data.loaders import make_loader
from lintorch.errors import DataError
from tests.data.conftest import COLOURS, load_tree, tree
from tests.helpers import image_tree


def image(path, colour=(90, 90, 90), size=(8, 8)):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


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


# --------------------------------------------------------------------------- what counts as a class and an image

def test_hidden_folder_is_not_a_class_for_either_loader(tmp_path):
    """train/.hidden/a.png shifted every DataLoader label by one (torchvision counted it as a class)."""
    tree(tmp_path)
    image(tmp_path / "train" / ".hidden" / "a.png")
    image(tmp_path / "train" / ".Trash-0" / "files" / "b.png")
    ds = load_tree(tmp_path)
    assert ds.classes == ["c0", "c1"]
    assert_loaders_agree(ds)


def test_test_split_labels_agree_between_loaders(tmp_path):
    tree(tmp_path)
    tree(tmp_path / "t", n=2)
    shutil.move(tmp_path / "t" / "train", tmp_path / "test")
    image(tmp_path / "test" / ".hidden" / "a.png")
    ds = load_tree(tmp_path)
    assert len(ds.test) == 4
    assert_loaders_agree(ds)


def test_empty_class_folder_is_refused_by_both_loaders(tmp_path):
    """An empty class folder used to train silently with the tensor loader (a class never predicted)."""
    tree(tmp_path)
    (tmp_path / "train" / "b_empty").mkdir()
    (tmp_path / "train" / "d_junk").mkdir()
    (tmp_path / "train" / "d_junk" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="b_empty.*d_junk") as e:
        load_tree(tmp_path)
    assert "\n" not in str(e.value)


def test_class_emptied_by_skipped_images_is_refused(tmp_path):
    tree(tmp_path)
    (tmp_path / "train" / "c2").mkdir()
    (tmp_path / "train" / "c2" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="c2"):
        load_tree(tmp_path, skip_bad_images=True)


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
    ds = load_tree(tmp_path)
    files = sorted(os.path.relpath(f, tmp_path / "train") for f in ds.train.files + ds.val.files)
    assert files == sorted(["c0/0.png", "c0/1.png", "c0/2.png", "c0/3.png", "c0/folder.jpg/inner.png",
                            "c0/sub/deeper/n.png", "c1/0.png", "c1/1.png", "c1/2.png", "c1/3.png",
                            "c1/link.png", "c1/linked_folder/x.png"])
    assert_loaders_agree(ds)


# --------------------------------------------------------------------------- errno messages

def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "data.tar"
    f.write_bytes(b"x")
    with pytest.raises(DataError, match="is a file.*expected a folder"):
        load_tree(f)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train").write_bytes(b"x")
    with pytest.raises(DataError, match="train is a file"):
        load_tree(tmp_path / "d")


def test_dangling_symlink_class_folder_is_named(tmp_path):
    """A class folder that is a broken symlink would otherwise vanish from the classes silently."""
    tree(tmp_path)
    os.symlink(tmp_path / "unmounted" / "c2", tmp_path / "train" / "c2")
    with pytest.raises(DataError, match="train/c2 is a symlink to .*unmounted/c2, which does not exist"):
        load_tree(tmp_path)


def test_dangling_symlink_image_is_named_or_skipped(tmp_path):
    tree(tmp_path)
    link = tmp_path / "train" / "c1" / "gone.png"
    os.symlink(tmp_path / "nowhere.png", link)
    with pytest.raises(DataError, match="gone.png.*nowhere.png.*does not exist.*--skip-bad-images") as e:
        load_tree(tmp_path)
    assert "Errno" not in str(e.value)
    ds = load_tree(tmp_path, skip_bad_images=True)
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
            load_tree(tmp_path)
        assert "Errno" not in str(e.value)
    finally:
        os.chmod(locked, 0o755)


def test_imagefolder_loads_any_size_and_mode(image_folder, tmp_path):
    data = load_dataset("imagefolder", str(image_folder), image_size=16, val_size=12, seed=0, cache_dir=str(tmp_path))
    assert data.classes == ["blue", "green", "red"]
    assert (len(data.train), len(data.val), len(data.test)) == (36, 12, 15)
    assert data.train.x.shape == (36, 3, 16, 16) and data.train.x.dtype == torch.uint8
    # each image is its class's colour: the brightest channel is the class's channel
    brightest = data.test.x.float().mean((2, 3)).argmax(1)        # (N,) 0 red, 1 green, 2 blue
    assert brightest.tolist() == [{0: 2, 1: 1, 2: 0}[int(y)] for y in data.test.y]
    # the cache gives back the same tensors
    again = load_dataset("imagefolder", str(image_folder), image_size=16, val_size=12, seed=0, cache_dir=str(tmp_path))
    assert torch.equal(again.train.x, data.train.x) and again.train.files == data.train.files


def test_imagefolder_without_class_folders_is_a_data_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset("imagefolder", str(tmp_path))


def test_unreadable_image_is_named_or_skipped(tmp_path):
    from lintorch.data import load_dataset
    from lintorch.errors import DataError
    image_tree(tmp_path)
    bad = tmp_path / "train" / "c1" / "broken.png"
    good = (tmp_path / "train" / "c1" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])                          # a truncated PNG
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2)
    ds = load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2, skip_bad_images=True)
    assert len(ds.train) + len(ds.val) == 8
