"""Helpers shared by the tests of lintorch.data: image trees, loaders compared batch by batch."""
import torch

from lintorch.data import load_dataset


def all_batches(loader, epoch, start=0):
    return [(x.clone(), y.clone()) for x, y in loader.batches(epoch, start)]


def assert_same_batches(a, b):
    assert len(a) == len(b) > 1
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb)


def _check_loaders_agree(tensor, dataloader):
    for epoch in (0, 1):
        assert_same_batches(all_batches(tensor, epoch), all_batches(dataloader, epoch))
    # resuming mid-epoch gives the rest of the same epoch
    assert_same_batches(all_batches(tensor, 1, start=2), all_batches(dataloader, 1, start=2))
    # and another epoch is another order
    y0 = torch.cat([y for _, y in all_batches(tensor, 0)])
    y1 = torch.cat([y for _, y in all_batches(tensor, 1)])
    assert not torch.equal(y0, y1)


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


def load_tree(root, **kw):
    kw = {"image_size": 8, "val_size": 2, "seed": 0, **kw}
    return load_dataset("imagefolder", str(root), **kw)
