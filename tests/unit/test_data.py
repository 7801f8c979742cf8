"""Data: the CIFAR-10 and ImageFolder fixtures load through the product's code paths, and the two
loaders (tensor, DataLoader) give identical batches for the same seed and epoch."""
import pytest
import torch

from lintorch.data import Preprocess, load_dataset
from lintorch.errors import DataError
from lintorch.data.loaders import DataLoaderLoader, TensorLoader, make_loader


def all_batches(loader, epoch, start=0):
    return [(x.clone(), y.clone()) for x, y in loader.batches(epoch, start)]


def assert_same_batches(a, b):
    assert len(a) == len(b) > 1
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb)


def test_cifar10_fixture_loads_through_torchvision(cifar10_root, cifar10_files):
    """load_dataset("cifar10") reads the tiny copy with torchvision's CIFAR10: pixels, labels, classes."""
    _, _, written = cifar10_files
    data = load_dataset("cifar10", str(cifar10_root), val_size=20, seed=0)
    assert data.classes[:2] == ["airplane", "automobile"] and len(data.classes) == 10
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 20)
    assert data.train.x.shape == (80, 3, 32, 32) and data.train.x.dtype == torch.uint8
    test_data, test_labels = written["test_batch"]
    assert torch.equal(data.test.x.reshape(20, -1), torch.from_numpy(test_data))
    assert data.test.y.tolist() == test_labels
    # train + val is the whole training set, the val split carved by the seed
    both = torch.cat([data.train.y, data.val.y]).bincount(minlength=10)
    assert both.tolist() == [10] * 10


def test_cifar10_integrity_check_is_not_weakened(cifar10_files):
    """Without the test's md5 patch torchvision refuses these files, and the product says so in one line."""
    root, _, _ = cifar10_files
    with pytest.raises(DataError, match="integrity check"):
        load_dataset("cifar10", str(root), val_size=20)


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


def test_val_split_is_seeded():
    a = load_dataset("synthetic", val_size=100, seed=3)
    b = load_dataset("synthetic", val_size=100, seed=3)
    c = load_dataset("synthetic", val_size=100, seed=4)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.source["val_indices"], b.source["val_indices"])
    assert not torch.equal(a.source["val_indices"], c.source["val_indices"])


def test_preprocess_state_dict_round_trip():
    data = load_dataset("synthetic", val_size=100, seed=0)
    for mode, standardize in (("pixel", False), ("channel", True)):
        pre = Preprocess.fit(data.train.x, mode, standardize)
        again = Preprocess.from_state_dict(pre.state_dict())
        assert torch.equal(pre(data.val.x), again(data.val.x))
    feats = Preprocess.fit(data.train.x)(data.train.x)
    assert feats.shape == (len(data.train), 3 * 32 * 32)
    assert feats.mean(0).abs().max() < 1e-4  # the training mean image is subtracted


def _both_loaders(data, batch_size, seed):
    pre = Preprocess.fit(data.train.x)
    tensor = make_loader("tensor", data, "train", pre, batch_size, "cpu", seed=seed)
    dataloader = make_loader("dataloader", data, "train", pre, batch_size, "cpu", seed=seed)
    assert isinstance(tensor, TensorLoader) and isinstance(dataloader, DataLoaderLoader)
    assert len(tensor) == len(dataloader)
    return tensor, dataloader


def _check_loaders_agree(tensor, dataloader):
    for epoch in (0, 1):
        assert_same_batches(all_batches(tensor, epoch), all_batches(dataloader, epoch))
    # resuming mid-epoch gives the rest of the same epoch
    assert_same_batches(all_batches(tensor, 1, start=2), all_batches(dataloader, 1, start=2))
    # and another epoch is another order
    y0 = torch.cat([y for _, y in all_batches(tensor, 0)])
    y1 = torch.cat([y for _, y in all_batches(tensor, 1)])
    assert not torch.equal(y0, y1)


def test_loaders_give_the_same_batches_imagefolder(image_folder, tmp_path):
    data = load_dataset("imagefolder", str(image_folder), image_size=16, val_size=12, seed=1, cache_dir=str(tmp_path))
    _check_loaders_agree(*_both_loaders(data, batch_size=8, seed=5))


def test_loaders_give_the_same_batches_cifar10(cifar10_root):
    data = load_dataset("cifar10", str(cifar10_root), val_size=20, seed=2)
    _check_loaders_agree(*_both_loaders(data, batch_size=16, seed=5))


def test_loader_kind_is_checked():
    data = load_dataset("synthetic", val_size=100)
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
