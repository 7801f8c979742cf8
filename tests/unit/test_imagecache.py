"""data/imagecache.py: the decoded-image cache is served only while its values match the checksum
written with them; a cache of the right shape and dtype with other values (zeroed, one pixel
changed, rows swapped) is rebuilt, with one line saying why."""
import torch
import pytest

from lintorch.data import load_dataset
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
