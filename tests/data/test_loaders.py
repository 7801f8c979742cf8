"""lintorch.data.loaders: the tensor and DataLoader loaders give the same batches, flips included."""
import pytest
import torch

from lintorch.data import Preprocess, load_dataset
from lintorch.data.loaders import DataLoaderLoader, TensorLoader, make_loader
from lintorch.errors import DataError
from tests.data.conftest import _check_loaders_agree


def _both_loaders(data, batch_size, seed):
    pre = Preprocess.fit(data.train.x)
    tensor = make_loader("tensor", data, "train", pre, batch_size, "cpu", seed=seed)
    dataloader = make_loader("dataloader", data, "train", pre, batch_size, "cpu", seed=seed)
    assert isinstance(tensor, TensorLoader) and isinstance(dataloader, DataLoaderLoader)
    assert len(tensor) == len(dataloader)
    return tensor, dataloader


def test_loaders_give_the_same_batches_imagefolder(image_folder, tmp_path):
    data = load_dataset("imagefolder", str(image_folder), image_size=16, val_size=12, seed=1, cache_dir=str(tmp_path))
    _check_loaders_agree(*_both_loaders(data, batch_size=8, seed=5))


def test_loaders_give_the_same_batches_cifar10(cifar10_root):
    data = load_dataset("cifar10", str(cifar10_root), val_size=20, seed=2)
    _check_loaders_agree(*_both_loaders(data, batch_size=16, seed=5))


def test_loader_kind_is_checked():
    data = load_dataset("synthetic", image_size=8, val_size=100)
    with pytest.raises(DataError, match="unknown loader"):
        make_loader("fast", data, "train", Preprocess.fit(data.train.x), 8, "cpu")


def test_flip_mirrors_a_seeded_half_and_both_loaders_agree(image_folder):
    """--flip: about half of each batch is mirrored left-right, the same images in both loaders
    and in a repeat of the epoch; without it the batches are untouched."""
    from lintorch.data.loaders import flip_half
    data = load_dataset("imagefolder", str(image_folder), image_size=16, val_size=12, seed=0)
    pre = Preprocess(torch.zeros(3 * 16 * 16))          # x / 255 alone: mirroring commutes with it
    plain = TensorLoader(data.train, pre, 8, "cpu", seed=3)
    flipped = TensorLoader(data.train, pre, 8, "cpu", seed=3, flip=True)
    dl = DataLoaderLoader(data, "train", pre, 8, "cpu", seed=3, flip=True)
    n_flipped = 0
    for (xa, _), (xb, _), (xc, _) in zip(plain.batches(1), flipped.batches(1), dl.batches(1)):
        a, b = xa.view(-1, 3, 16, 16), xb.view(-1, 3, 16, 16)
        same, mirrored = (a == b).flatten(1).all(1), (a.flip(-1) == b).flatten(1).all(1)
        assert (same | mirrored).all()
        n_flipped += int((mirrored & ~same).sum())
        assert torch.equal(xb, xc)
    assert 0.25 * len(data.train) < n_flipped < 0.75 * len(data.train)
    assert torch.equal(torch.cat([x for x, _ in flipped.batches(1)]), torch.cat([x for x, _ in flipped.batches(1)]))
    assert torch.equal(data.train.x, load_dataset("imagefolder", str(image_folder), image_size=16, val_size=12,
                                                  seed=0).train.x)           # the data itself is not flipped
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.uint8).view(2, 12)
    y = flip_half(x.clone(), 0, 0, 0).view(2, 3, 2, 2)
    for i in range(2):
        assert torch.equal(y[i], x.view(2, 3, 2, 2)[i]) or torch.equal(y[i], x.view(2, 3, 2, 2)[i].flip(-1))


def test_kept_batches_are_the_loaders_epoch_0_batches_made_once():
    """A small split's full-batch passes reread its batches: the loader's epoch-0 batches, made by one pass."""
    from lintorch.data.loaders import KeptBatches
    from lintorch.data.split import Split
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (10, 3, 2, 2), dtype=torch.uint8, generator=g), torch.randint(0, 3, (10,), generator=g)
    loader = TensorLoader(Split(x, y), Preprocess.fit(x), 4, "cpu", shuffle=False)

    class Counting:
        passes = 0

        def batches(self, epoch=0, start=0):
            Counting.passes += 1
            yield from loader.batches(epoch, start)
    kept = KeptBatches(Counting())
    assert len(kept) == len(loader) == 3
    for _ in range(2):
        for (xk, yk), (xb, yb) in zip(kept.batches(0), loader.batches(0), strict=True):
            assert torch.equal(xk, xb) and torch.equal(yk, yb)
    assert Counting.passes == 1
    assert [len(yb) for _, yb in kept.batches(0, start=1)] == [4, 2]
