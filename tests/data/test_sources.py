"""lintorch.data.sources: CIFAR-10/100, MNIST, Fashion-MNIST, SVHN and STL-10 read from their files; a missing set
is one line."""
import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch

from lintorch.data import Preprocess, load_dataset
from lintorch.data.loaders import make_loader
from lintorch.data.sources import SOURCES
from lintorch.errors import DataError
from lintorch.names import IMAGE_DATASETS
from tests.data.conftest import _check_loaders_agree


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def images(n, c, h, w, labels, seed):
    """Class-dependent uint8 images (n, c, h, w): each class its own brightness, plus noise."""
    g = torch.Generator().manual_seed(seed)
    base = 40 + 20 * torch.tensor(labels, dtype=torch.float32).view(n, 1, 1, 1)
    return (base + 15 * torch.randn(n, c, h, w, generator=g)).clamp(0, 255).round().to(torch.uint8).numpy()


def labels_for(n, classes, offset=0):
    return [(offset + 3 * i) % classes for i in range(n)]


# --------------------------------------------------------------------------- each set's own format

@pytest.fixture
def cifar100_root(tmp_path, monkeypatch):
    """cifar-100-python/{train,test,meta}: pickles of (N, 3072) channel-major rows and fine labels."""
    from torchvision.datasets import CIFAR100
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    written = {}
    for name, n in (("train", 40), ("test", 10)):
        fine = labels_for(n, 100, offset=len(name))
        data = images(n, 3, 32, 32, [f % 10 for f in fine], seed=n).reshape(n, 3072)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                         "filenames": [f"{name}_{i}.png" for i in range(n)]}, f)
        written[name] = (data, fine)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"fine{i}" for i in range(100)],
                     "coarse_label_names": [f"coarse{i}" for i in range(20)]}, f)
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5(folder / "train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5(folder / "test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5(folder / "meta")})
    return tmp_path, written


def write_idx(path, array, compress):
    """array (uint8) in the idx format MNIST uses: magic 0x08 (ubyte) | ndim, big-endian dims, bytes."""
    raw = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def mnist_like(root, folder, compress):
    """<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (gzipped or not) -> written arrays."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    written = {}
    for prefix, n in (("train", 30), ("t10k", 10)):
        y = np.array(labels_for(n, 10, offset=n), dtype=np.uint8)
        x = images(n, 1, 28, 28, y.tolist(), seed=n)[:, 0]
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, compress)
        written[prefix] = (x, y)
    return written


@pytest.fixture
def svhn_root(tmp_path, monkeypatch):
    """{train,test}_32x32.mat: X (32, 32, 3, N) uint8 and y (N, 1) in 1..10, 10 meaning the digit 0."""
    sio = pytest.importorskip("scipy.io", reason="torchvision reads SVHN's .mat files with scipy")
    from torchvision.datasets import SVHN
    written, split_list = {}, dict(SVHN.split_list)
    for split, n in (("train", 30), ("test", 10)):
        digits = labels_for(n, 10, offset=n)
        x = images(n, 3, 32, 32, digits, seed=n)                                        # (N, 3, H, W)
        sio.savemat(tmp_path / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0),     # (H, W, 3, N)
                                                      "y": np.array([[d or 10] for d in digits], dtype=np.uint8)})
        split_list[split] = [split_list[split][0], f"{split}_32x32.mat", md5(tmp_path / f"{split}_32x32.mat")]
        written[split] = (x, digits)
    monkeypatch.setattr(SVHN, "split_list", split_list)
    return tmp_path, written


@pytest.fixture
def stl10_root(tmp_path, monkeypatch):
    """stl10_binary/{train,test}_{X,y}.bin and unlabeled_X.bin: raw uint8 images stored column-major
    (N, 3, W, H) and labels 1..10."""
    from torchvision.datasets import STL10
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    written = {}
    for split, n in (("train", 20), ("test", 10), ("unlabeled", 2)):
        y = labels_for(n, 10, offset=n)
        x = images(n, 3, 96, 96, y, seed=n)                                              # (N, 3, H, W)
        (folder / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes((np.array(y, dtype=np.uint8) + 1).tobytes())
        written[split] = (x, y)
    monkeypatch.setattr(STL10, "train_list", [[f, md5(folder / f)] for f in ("train_X.bin", "train_y.bin",
                                                                               "unlabeled_X.bin")])
    monkeypatch.setattr(STL10, "test_list", [[f, md5(folder / f)] for f in ("test_X.bin", "test_y.bin")])
    return tmp_path, written


# --------------------------------------------------------------------------- tests

def test_the_parsers_names_are_the_registrys():
    assert tuple(SOURCES) == IMAGE_DATASETS


def test_cifar100_loads_through_torchvision(cifar100_root):
    root, written = cifar100_root
    data = load_dataset("cifar100", str(root), val_size=8, seed=0)
    assert len(data.classes) == 100 and data.classes[:2] == ["fine0", "fine1"]
    assert (len(data.train), len(data.val), len(data.test)) == (32, 8, 10)
    assert data.train.x.shape == (32, 3, 32, 32) and data.train.x.dtype == torch.uint8
    test_x, test_y = written["test"]
    assert torch.equal(data.test.x.reshape(10, -1), torch.from_numpy(test_x)) and data.test.y.tolist() == test_y


@pytest.mark.parametrize("name,folder,compress", [("mnist", "MNIST", False), ("fashion-mnist", "FashionMNIST", True)])
def test_mnist_idx_files_gzipped_or_not_load_as_three_equal_channels(tmp_path, name, folder, compress):
    written = mnist_like(tmp_path, folder, compress)
    data = load_dataset(name, str(tmp_path), image_size=28, val_size=6, seed=0)
    assert len(data.classes) == 10 and data.test.x.shape == (10, 3, 28, 28)
    x, y = written["t10k"]
    for c in range(3):                       # grayscale repeated: every channel is the written image
        assert torch.equal(data.test.x[:, c], torch.from_numpy(x))
    assert data.test.y.tolist() == y.tolist()
    resized = load_dataset(name, str(tmp_path), val_size=6, seed=0)                # default --image-size 32
    assert resized.test.x.shape == (10, 3, 32, 32)
    assert torch.equal(resized.test.x[:, 0], resized.test.x[:, 2])


def test_svhn_mat_files_load_with_the_digit_zero_as_class_0(svhn_root):
    root, written = svhn_root
    data = load_dataset("svhn", str(root), val_size=6, seed=0)
    assert data.classes == [str(d) for d in range(10)]
    x, digits = written["test"]
    assert torch.equal(data.test.x, torch.from_numpy(x)) and data.test.y.tolist() == digits
    assert 0 in data.test.y.tolist()


def test_stl10_binary_files_load_at_96_or_resized(stl10_root):
    root, written = stl10_root
    data = load_dataset("stl10", str(root), image_size=96, val_size=5, seed=0)
    assert data.classes[:2] == ["airplane", "bird"] and len(data.classes) == 10
    x, y = written["test"]
    assert torch.equal(data.test.x, torch.from_numpy(x)) and data.test.y.tolist() == y
    small = load_dataset("stl10", str(root), image_size=32, val_size=5, seed=0)
    assert small.train.x.shape == (15, 3, 32, 32)
    # a resize keeps each image's mean brightness (the class signal) within a grey level or two
    assert (small.test.x.float().mean((1, 2, 3)) - data.test.x.float().mean((1, 2, 3))).abs().max() < 2


def test_grayscale_both_loaders_give_the_same_batches(tmp_path):
    mnist_like(tmp_path, "MNIST", compress=False)
    data = load_dataset("mnist", str(tmp_path), image_size=28, val_size=6, seed=2)
    pre = Preprocess.fit(data.train.x)
    tensor, dataloader = (make_loader(kind, data, "train", pre, 4, "cpu", seed=5) for kind in ("tensor", "dataloader"))
    _check_loaders_agree(tensor, dataloader)


@pytest.mark.parametrize("name,expected", [("mnist", "MNIST/raw/train-images-idx3-ubyte"),
                                           ("cifar100", "cifar-100-python/train"),
                                           ("svhn", "train_32x32.mat"), ("stl10", "stl10_binary/train_X.bin")])
def test_a_missing_set_is_one_line_naming_the_folder_and_the_files(tmp_path, name, expected):
    with pytest.raises(DataError) as e:
        load_dataset(name, str(tmp_path / "nowhere"))
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "nowhere") in message and expected in message
    assert "downloads nothing" in message


def test_a_missing_set_on_the_command_line_is_exit_2_and_one_line(tmp_path, train_main, capsys):
    assert train_main("--dataset", "fashion-mnist", "--data-dir", tmp_path, "--logdir", tmp_path / "run",
                      "--quiet") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FashionMNIST/raw/t10k-images-idx3-ubyte" in err, err


def test_a_tiny_run_trains_on_mnist_at_28_pixels(tmp_path, train_main, read_json):
    mnist_like(tmp_path / "data", "MNIST", compress=True)
    run = tmp_path / "run"
    assert train_main("--dataset", "mnist", "--data-dir", tmp_path / "data", "--image-size", 28, "--val-size", 6,
                      "--batch-size", 8, "--epochs", 3, "--quiet", "--device", "cpu", "--logdir", run) == 0
    metrics = read_json(run / "metrics.json")
    assert metrics["status"] == "completed" and metrics["val_acc"] is not None
    config = read_json(run / "config.json")
    assert config["dataset"] == "mnist" and config["image_size"] == 28
    from tests.helpers import events
    assert "templates" in events(run).Tags()["images"]           # the weights drawn as 28 x 28 pictures


def test_the_weights_are_drawn_at_96_pixels(stl10_root):
    """STL-10 kept at 96 x 96: a (C, 3 * 96 * 96) weight is drawn as C pictures, one per class."""
    from lintorch.output.visualize import template_grid
    root, _ = stl10_root
    data = load_dataset("stl10", str(root), image_size=96, val_size=5, seed=0)
    W = torch.randn(len(data.classes), 3 * 96 * 96, generator=torch.Generator().manual_seed(0))
    grid = template_grid(W, data.classes, tuple(data.train.x.shape[1:]))
    assert grid.dim() == 3 and grid.shape[0] == 3 and grid.shape[1] > 96 and grid.float().std() > 0


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
