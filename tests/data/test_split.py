"""lintorch.data.split: the validation split is seeded."""
import torch

from lintorch.data import load_dataset


def test_val_split_is_seeded():
    a = load_dataset("synthetic", image_size=8, val_size=100, seed=3)
    b = load_dataset("synthetic", image_size=8, val_size=100, seed=3)
    c = load_dataset("synthetic", image_size=8, val_size=100, seed=4)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.source["val_indices"], b.source["val_indices"])
    assert not torch.equal(a.source["val_indices"], c.source["val_indices"])
