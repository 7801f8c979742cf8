"""lintorch.features.store: feature folders written, read and streamed; malformed or inconsistent folders, and
files that are not regular files (FIFOs, links to devices), refused in one line."""
import json
import os
import warnings

import numpy as np
import pytest
import torch

from lintorch.config import TrainConfig
from lintorch.data import Preprocess, featurize
from lintorch.data.loaders import epoch_order
from lintorch.errors import FeatureError
from lintorch.features import store
from tests.conftest import FEATURES_ARGS, features_of_width
from tests.helpers import assert_one_line_error, train


def folder(root, n=30, d=4, classes=("a", "b", "c"), fmt="npy", test=True, seed=0):
    """root/ with classes.json, train (+ test) of n rows, every class used -> root."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=g), torch.arange(n) % len(classes)
    root.mkdir(parents=True, exist_ok=True)
    store.write_classes(root, classes)
    store.save_split(root, "train", x, y, fmt=fmt)
    if test:
        store.save_split(root, "test", x[:10], y[:10], fmt=fmt)
    return root


def refused(root, *words):
    with pytest.raises(FeatureError) as e:
        store.open_folder(str(root))
    msg = str(e.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_a_well_formed_folder_opens(tmp_path):
    train, test = store.open_folder(str(folder(tmp_path / "f")))
    assert (train.n, train.d, test.n, test.d, train.classes) == (30, 4, 10, 4, ["a", "b", "c"])


# --------------------------------------------------------------------------- D is checked

def test_a_test_split_of_another_dimension_is_refused(tmp_path):
    root = folder(tmp_path / "f", test=False)
    store.save_split(root, "test", torch.randn(6, 5), torch.arange(6) % 3)
    refused(root, "D = 5", "D = 4")


@pytest.mark.parametrize("fmt", store.FORMATS)
def test_zero_features_are_refused(tmp_path, fmt):
    root = tmp_path / "f"
    root.mkdir()
    store.write_classes(root, ["a", "b"])
    store.save_split(root, "train", torch.zeros(4, 0), torch.tensor([0, 1, 0, 1]), fmt=fmt)
    refused(root, "D = 0")


# --------------------------------------------------------------------------- only regular files are opened

@pytest.mark.parametrize("name", ["classes.json", "train_labels.npy", "train.npy", "test.npy", "test_labels.npy",
                                  "extractor.json"])
def test_a_fifo_anywhere_is_refused_not_waited_on(tmp_path, deadline, name):
    root = folder(tmp_path / "f")
    (root / name).unlink(missing_ok=True)
    os.mkfifo(root / name)
    refused(root, name, "FIFO")


@pytest.mark.parametrize("name", ["classes.json", "train_labels.npy", "extractor.json", "train.npy"])
def test_a_link_to_dev_zero_is_refused_not_read(tmp_path, deadline, name):
    root = folder(tmp_path / "f")
    (root / name).unlink(missing_ok=True)
    os.symlink("/dev/zero", root / name)
    refused(root, name, "character device")


def test_a_directory_named_like_a_split_is_named_as_one(tmp_path):
    root = folder(tmp_path / "f", test=False)
    (root / "train.npy").unlink()
    (root / "train.npy").mkdir()
    refused(root, "train.npy is a directory")


def test_a_huge_classes_json_is_refused_before_it_is_read(tmp_path):
    root = folder(tmp_path / "f")
    with open(root / "classes.json", "r+b") as f:
        f.truncate(store.MAX_JSON_BYTES + 1)              # sparse: no disk used
    refused(root, "classes.json", "bytes")


def test_truncated_labels_are_refused(tmp_path):
    root = folder(tmp_path / "f", n=300, test=False)
    os.truncate(root / "train_labels.npy", 200)
    refused(root, "train_labels.npy is truncated")


def test_tensors_saved_with_requires_grad_are_read_as_values(tmp_path):
    root = tmp_path / "f"
    root.mkdir()
    store.write_classes(root, ["a", "b"])
    torch.save({"x": torch.randn(6, 3, requires_grad=True), "y": torch.tensor([0, 1] * 3)}, root / "train.pt")
    train, _ = store.open_folder(str(root))
    loader = store.FeatureLoader(train, 4, "cpu")
    xb, _ = next(iter(loader.batches()))
    assert not xb.requires_grad and not train.x.requires_grad


# --------------------------------------------------------------------------- complete, unambiguous, one format

@pytest.mark.parametrize("classes, words", [(["a", "a", "b"], ["'a'", "more than once"]),
                                            (["a", " ", "b"], ["empty name"]),
                                            (["a", "", "b"], ["empty name"])])
def test_ambiguous_class_names_are_refused(tmp_path, classes, words):
    root = folder(tmp_path / "f", classes=("x", "y", "z"))
    (root / "classes.json").write_text(json.dumps(classes))
    refused(root, *words)


def test_a_class_no_training_row_uses_is_refused(tmp_path):
    root = folder(tmp_path / "f", classes=("a", "b"))
    (root / "classes.json").write_text(json.dumps(["a", "b", "never"]))
    refused(root, "'never'", "unused")


def test_two_formats_of_one_split_are_refused(tmp_path):
    root = folder(tmp_path / "f")                         # npy, then a stale .pt beside it
    store.save_split(root, "train", torch.randn(30, 4), torch.arange(30) % 3, fmt="pt")
    refused(root, "both train.npy and train.pt")


def test_splits_of_two_formats_are_refused(tmp_path):
    root = folder(tmp_path / "f", test=False)
    store.save_split(root, "test", torch.randn(6, 4), torch.arange(6) % 3, fmt="pt")
    refused(root, "train.npy and test.pt")


def test_a_partly_written_file_is_refused(tmp_path):
    root = folder(tmp_path / "f")
    (root / "test.npy.tmp12345").write_bytes(b"\0" * 64)
    refused(root, "partly written", "test.npy.tmp12345")


@pytest.mark.parametrize("change, words", [({"n_test": 99}, ["test rows 99", "10"]),
                                           ({"n_train": 7}, ["training rows 7"]),
                                           ({"dim": 8}, ["D 8"]), ({"format": "pt"}, ["format pt"])])
def test_files_that_differ_from_extractor_json_are_refused(tmp_path, change, words):
    root = folder(tmp_path / "f")
    info = {"format": "npy", "dim": 4, "data": {"n_train": 30, "n_test": 10}}
    for k, v in change.items():
        (info["data"] if k.startswith("n_") else info)[k] = v
    (root / "extractor.json").write_text(json.dumps(info))
    refused(root, "extractor.json", *words)


def test_a_test_split_extractor_json_promises_but_is_missing_is_refused(tmp_path):
    root = folder(tmp_path / "f", test=False)
    (root / "extractor.json").write_text(json.dumps({"format": "npy", "dim": 4, "data": {"n_train": 30, "n_test": 10}}))
    refused(root, "test rows 10", "None")


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_rows_name_the_file_not_val_size(tmp_path, n):
    from lintorch.errors import DataError
    root = tmp_path / "f"
    root.mkdir()
    store.write_classes(root, ["a", "b"])
    store.save_split(root, "train", torch.ones(n, 3), torch.zeros(n, dtype=torch.long))
    with pytest.raises((DataError, FeatureError)) as e:
        featurize.feature_folder(TrainConfig(data_dir=str(root), seed=0, val_size=None))
    assert "--val-size" not in str(e.value) and "train.npy" in str(e.value)


def test_train_and_test_of_two_widths_fail_before_training(tmp_path, capsys):
    data, logdir = features_of_width(tmp_path / "f", d=8, test_d=5), tmp_path / "run"
    code = train(*FEATURES_ARGS, "--data-dir", data, "--logdir", logdir)
    assert_one_line_error(code, capsys.readouterr().err, "D = 5", "D = 8")
    assert not logdir.exists()


def test_a_fifo_label_file_through_train_is_one_line_and_no_husk(tmp_path, capsys, deadline):
    import os
    data, logdir = features_of_width(tmp_path / "f"), tmp_path / "run"
    (data / "train_labels.npy").unlink()
    os.mkfifo(data / "train_labels.npy")
    code = train(*FEATURES_ARGS, "--data-dir", data, "--logdir", logdir)
    assert_one_line_error(code, capsys.readouterr().err, "FIFO")
    assert not logdir.exists()


def test_a_pt_file_holding_tensors_that_require_grad_trains(tmp_path):
    data = tmp_path / "f"
    data.mkdir()
    store.write_classes(data, ["a", "b", "c"])
    y = torch.arange(60) % 3
    x = (torch.randn(60, 6) + 3 * torch.nn.functional.one_hot(y, 6)).requires_grad_()
    torch.save({"x": x, "y": y}, data / "train.pt")
    assert train(*FEATURES_ARGS, "--data-dir", data, "--logdir", tmp_path / "run") == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["val_acc"] > 0.5


@pytest.mark.parametrize("name, make", [("x", lambda t: t.to_sparse()), ("x", lambda t: t.to_sparse_csr()),
                                        ("y", lambda t: t.to_sparse())])
def test_sparse_tensors_are_refused_by_name(tmp_path, name, make):
    x, y = torch.randn(6, 3), torch.arange(6) % 2
    store.write_classes(tmp_path, ["a", "b"])
    d = {"x": x, "y": y}
    d[name] = make(d[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(d, tmp_path / "train.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # torch's own notes on sparse loads stay quiet
        with pytest.raises(FeatureError) as e:
            store.open_folder(str(tmp_path))
    text = str(e.value)
    assert "train.pt" in text and f"{name} is a sparse" in text and "to_dense" in text and "\n" not in text


# --------------------------------------------------------------------------- store

def write_store(folder, fmt, n=50, d=6, dtype=torch.float32, classes=("a", "b", "c")):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, d, generator=g) * 3 + 1, torch.randint(0, len(classes), (n,), generator=g)
    store.write_classes(folder, classes)
    store.save_split(folder, "train", x, y, fmt=fmt, dtype=dtype, chunk=16)
    return x, y


@pytest.mark.parametrize("fmt", store.FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_store_round_trip_and_loader_order(tmp_path, fmt, dtype):
    x, y = write_store(tmp_path, fmt, dtype=dtype)
    s = store.FeatureSplit(str(tmp_path), "train")
    assert (s.n, s.d, s.dtype, s.classes) == (50, 6, dtype, ["a", "b", "c"])
    xs = x.to(dtype).float()
    st = Preprocess.fit_features(xb for _, xb in s.chunks())
    assert torch.allclose(st.mean, xs.mean(0), atol=1e-5)
    assert torch.allclose(st.std, xs.std(0, unbiased=False), atol=1e-4)
    loader = store.FeatureLoader(s, 16, "cpu", seed=3, standardizer=st)
    assert len(loader) == 4
    order = epoch_order(50, 3, 2)
    got = list(loader.batches(epoch=2, start=1))
    assert len(got) == 3
    for b, (xb, yb) in enumerate(got, start=1):
        idx = order[b * 16:(b + 1) * 16]
        assert xb.dtype == torch.float32 and yb.dtype == torch.int64
        assert torch.allclose(xb, (xs[idx] - st.mean) / st.std, atol=1e-5)
        assert torch.equal(yb, y[idx])


def test_store_bad_files_are_one_line_errors(tmp_path):
    def expect(folder, match):
        with pytest.raises(FeatureError, match=match) as e:
            store.FeatureSplit(str(folder), "train")
        assert "\n" not in str(e.value)

    expect(tmp_path / "missing", "no classes.json")
    cases = {
        "nan": lambda d: (np.save(d / "train.npy", np.array([[1.0, np.nan]] * 3, np.float32)),
                          np.save(d / "train_labels.npy", np.zeros(3, np.int64))),
        "range": lambda d: (np.save(d / "train.npy", np.ones((3, 2), np.float32)),
                            np.save(d / "train_labels.npy", np.array([0, 1, 3]))),
        "shape": lambda d: (np.save(d / "train.npy", np.ones((3, 2, 1), np.float32)),
                            np.save(d / "train_labels.npy", np.zeros(3, np.int64))),
        "dtype": lambda d: (np.save(d / "train.npy", np.ones((3, 2), np.float64)),
                            np.save(d / "train_labels.npy", np.zeros(3, np.int64))),
        "count": lambda d: (np.save(d / "train.npy", np.ones((3, 2), np.float32)),
                            np.save(d / "train_labels.npy", np.zeros(4, np.int64))),
        "nolabels": lambda d: np.save(d / "train.npy", np.ones((3, 2), np.float32)),
        "truncated": lambda d: (np.save(d / "train.npy", np.ones((300, 2), np.float32)),
                                np.save(d / "train_labels.npy", np.zeros(300, np.int64)),
                                os.truncate(d / "train.npy", 1000)),
        "garbage": lambda d: (d / "train.npy").write_bytes(b"hello"),
        "badpt": lambda d: (d / "train.pt").write_bytes(b"hello"),
        "ptkeys": lambda d: torch.save({"x": torch.ones(3, 2)}, d / "train.pt"),
        "ptlabels": lambda d: torch.save({"x": torch.ones(3, 2), "y": torch.ones(3)}, d / "train.pt"),
        "nofile": lambda d: None,
    }
    matches = {"nan": "row 0 holds NaN", "range": "outside 0..2", "shape": "expected a C-order", "dtype": "float64",
               "count": "3 feature rows", "nolabels": "no labels file", "truncated": "truncated",
               "garbage": "not a NumPy", "badpt": "not a readable torch", "ptkeys": "must hold a dict",
               "ptlabels": "integer labels", "nofile": "no train.npy"}
    for name, make in cases.items():
        d = tmp_path / name
        d.mkdir()
        store.write_classes(d, ["a", "b", "c"])
        make(d)
        expect(d, matches[name])


def test_feature_loader_batches_make_no_host_sync(emulated, image_folder, tmp_path):
    from lintorch import extract
    from lintorch.features import store
    out = tmp_path / "features"
    assert extract.main(["--features", "colorhist", "--dataset", "imagefolder", "--data-dir", str(image_folder),
                         "--image-size", "8", "--device", "cpu", "--threads", "1", "--quiet", "--out", str(out)]) == 0
    split, _ = store.open_folder(str(out))
    with emulated() as mode:
        loader = store.FeatureLoader(split, 8, "cuda")
        with mode.counting() as inside:
            batches = list(loader.batches(0))
    assert len(batches) == len(loader) >= 4 and batches[0][0].device.type == "cuda"
    assert sum(inside.values()) == 0, mode.table()


@pytest.mark.parametrize("fmt", ["npy", "pt"])
def test_dataset_features_trains_on_a_feature_folder(fmt, tmp_path):
    """A folder in the documented format (x (N, D), y (N,), classes.json) trains, validates on a
    seeded carve, and evaluates; predict on an image says why it cannot."""
    from lintorch import evaluate
    from lintorch.features.store import save_split, write_classes
    g = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(3, 20, generator=g)
    y = torch.randint(0, 3, (600,), generator=g)
    x = centers[y] + torch.randn(600, 20, generator=g)
    folder = tmp_path / "feats"
    folder.mkdir()
    write_classes(str(folder), ["a", "b", "c"])
    save_split(str(folder), "train", x[:500], y[:500], fmt=fmt)
    save_split(str(folder), "test", x[500:], y[500:], fmt=fmt)
    logdir = tmp_path / "run"
    assert train("--dataset", "features", "--data-dir", str(folder), "--epochs", "3", "--val-size", "100",
                 "--quiet", "--threads", "1", "--logdir", str(logdir)) == 0
    m = json.loads((logdir / "metrics.json").read_text())
    assert m["val_acc"] > 0.9 and m["test_acc"] > 0.9
    assert evaluate.main([str(logdir), "--json", "--threads", "1"]) == 0
