"""Hostile feature folders and feature caches (issue 20, classes A, D, E, G): the folder reader opens
only regular files of bounded size, checks D everywhere, and takes a folder only when it is
complete, of one format and unambiguous; a feature cache that cannot be written is one warning.
Each case ends in a one-line FeatureError, never a hang (every test that could block runs under
an alarm), never a silently wrong answer."""
import errno
import json
import os

import pytest
import torch

from lintorch.config import TrainConfig
from lintorch.data import featurize
from lintorch.features import FeatureError, store


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


# --------------------------------------------------------------------------- A: D is checked

def test_a_test_split_of_another_dimension_is_refused(tmp_path):
    root = folder(tmp_path / "f", test=False)
    store.save_split(root, "test", torch.randn(6, 5), torch.arange(6) % 3)
    refused(root, "D = 5", "D = 4")


@pytest.mark.parametrize("fmt", store.FORMATS)
def test_a_zero_features_are_refused(tmp_path, fmt):
    root = tmp_path / "f"
    root.mkdir()
    store.write_classes(root, ["a", "b"])
    store.save_split(root, "train", torch.zeros(4, 0), torch.tensor([0, 1, 0, 1]), fmt=fmt)
    refused(root, "D = 0")


def test_a_feature_cache_of_another_width_or_with_nan_is_extracted_again(tmp_path, caplog):
    from lintorch.data import Split
    from lintorch.features import make_extractor
    ex = make_extractor("colorhist")
    imgs = Split(torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8), torch.arange(5) % 2)
    digest = featurize._images_hash(imgs)
    good = featurize._encode(ex, imgs, "train", str(tmp_path), "cpu", 4, digest).x
    (path,) = tmp_path.glob("features-train-*.pt")
    for bad in (torch.zeros(5, ex.dim + 1), torch.full((5, ex.dim), float("nan")), torch.zeros(4, ex.dim)):
        torch.save(bad, path)
        caplog.clear()
        assert torch.equal(featurize._encode(ex, imgs, "train", str(tmp_path), "cpu", 4, digest).x, good)
        assert "extracting again" in caplog.text


# --------------------------------------------------------------------------- D: only regular files are opened

@pytest.mark.parametrize("name", ["classes.json", "train_labels.npy", "train.npy", "test.npy", "test_labels.npy",
                                  "extractor.json"])
def test_d_a_fifo_anywhere_is_refused_not_waited_on(tmp_path, deadline, name):
    root = folder(tmp_path / "f")
    (root / name).unlink(missing_ok=True)
    os.mkfifo(root / name)
    refused(root, name, "FIFO")


@pytest.mark.parametrize("name", ["classes.json", "train_labels.npy", "extractor.json", "train.npy"])
def test_d_a_link_to_dev_zero_is_refused_not_read(tmp_path, deadline, name):
    root = folder(tmp_path / "f")
    (root / name).unlink(missing_ok=True)
    os.symlink("/dev/zero", root / name)
    refused(root, name, "character device")


def test_d_a_directory_named_like_a_split_is_named_as_one(tmp_path):
    root = folder(tmp_path / "f", test=False)
    (root / "train.npy").unlink()
    (root / "train.npy").mkdir()
    refused(root, "train.npy is a directory")


def test_d_a_huge_classes_json_is_refused_before_it_is_read(tmp_path):
    root = folder(tmp_path / "f")
    with open(root / "classes.json", "r+b") as f:
        f.truncate(store.MAX_JSON_BYTES + 1)              # sparse: no disk used
    refused(root, "classes.json", "bytes")


def test_d_truncated_labels_are_refused(tmp_path):
    root = folder(tmp_path / "f", n=300, test=False)
    os.truncate(root / "train_labels.npy", 200)
    refused(root, "train_labels.npy is truncated")


def test_d_tensors_saved_with_requires_grad_are_read_as_values(tmp_path):
    root = tmp_path / "f"
    root.mkdir()
    store.write_classes(root, ["a", "b"])
    torch.save({"x": torch.randn(6, 3, requires_grad=True), "y": torch.tensor([0, 1] * 3)}, root / "train.pt")
    train, _ = store.open_folder(str(root))
    loader = store.FeatureLoader(train, 4, "cpu")
    xb, _ = next(iter(loader.batches()))
    assert not xb.requires_grad and not train.x.requires_grad


# --------------------------------------------------------------------------- E: complete, unambiguous, one format

@pytest.mark.parametrize("classes, words", [(["a", "a", "b"], ["'a'", "more than once"]),
                                            (["a", " ", "b"], ["empty name"]),
                                            (["a", "", "b"], ["empty name"])])
def test_e_ambiguous_class_names_are_refused(tmp_path, classes, words):
    root = folder(tmp_path / "f", classes=("x", "y", "z"))
    (root / "classes.json").write_text(json.dumps(classes))
    refused(root, *words)


def test_e_a_class_no_training_row_uses_is_refused(tmp_path):
    root = folder(tmp_path / "f", classes=("a", "b"))
    (root / "classes.json").write_text(json.dumps(["a", "b", "never"]))
    refused(root, "'never'", "unused")


def test_e_two_formats_of_one_split_are_refused(tmp_path):
    root = folder(tmp_path / "f")                         # npy, then a stale .pt beside it
    store.save_split(root, "train", torch.randn(30, 4), torch.arange(30) % 3, fmt="pt")
    refused(root, "both train.npy and train.pt")


def test_e_splits_of_two_formats_are_refused(tmp_path):
    root = folder(tmp_path / "f", test=False)
    store.save_split(root, "test", torch.randn(6, 4), torch.arange(6) % 3, fmt="pt")
    refused(root, "train.npy and test.pt")


def test_e_a_partly_written_file_is_refused(tmp_path):
    root = folder(tmp_path / "f")
    (root / "test.npy.tmp12345").write_bytes(b"\0" * 64)
    refused(root, "partly written", "test.npy.tmp12345")


@pytest.mark.parametrize("change, words", [({"n_test": 99}, ["test rows 99", "10"]),
                                           ({"n_train": 7}, ["training rows 7"]),
                                           ({"dim": 8}, ["D 8"]), ({"format": "pt"}, ["format pt"])])
def test_e_files_that_differ_from_extractor_json_are_refused(tmp_path, change, words):
    root = folder(tmp_path / "f")
    info = {"format": "npy", "dim": 4, "data": {"n_train": 30, "n_test": 10}}
    for k, v in change.items():
        (info["data"] if k.startswith("n_") else info)[k] = v
    (root / "extractor.json").write_text(json.dumps(info))
    refused(root, "extractor.json", *words)


def test_e_a_test_split_extractor_json_promises_but_is_missing_is_refused(tmp_path):
    root = folder(tmp_path / "f", test=False)
    (root / "extractor.json").write_text(json.dumps({"format": "npy", "dim": 4, "data": {"n_train": 30, "n_test": 10}}))
    refused(root, "test rows 10", "None")


@pytest.mark.parametrize("n", [0, 1])
def test_e_too_few_rows_name_the_file_not_val_size(tmp_path, n):
    from lintorch.errors import DataError
    root = tmp_path / "f"
    root.mkdir()
    store.write_classes(root, ["a", "b"])
    store.save_split(root, "train", torch.ones(n, 3), torch.zeros(n, dtype=torch.long))
    with pytest.raises((DataError, FeatureError)) as e:
        featurize.feature_folder(TrainConfig(data_dir=str(root), seed=0, val_size=None))
    assert "--val-size" not in str(e.value) and "train.npy" in str(e.value)


# --------------------------------------------------------------------------- G: the feature cache

@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_g_a_cache_write_that_fails_is_a_warning_and_leaves_no_temporary(tmp_path, monkeypatch, caplog, error):
    def full_disk(obj, f):
        f.write(b"\0" * 100)
        raise error
    monkeypatch.setattr(torch, "save", full_disk)
    path = tmp_path / "features-train-abc.pt"
    featurize._save_cache(torch.zeros(3), str(tmp_path), str(path), "feature")
    assert "could not write the feature cache" in caplog.text and "\n" not in caplog.text.strip()
    assert os.listdir(tmp_path) == []


def test_g_dead_writers_temporaries_are_removed_live_ones_kept(tmp_path):
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=60)
    dead_pid = int(dead.stdout)
    for name in (f"features-train-k.pt.tmp{dead_pid}", f"extractor-kmeans-k.pt.tmp{dead_pid}"):
        (tmp_path / name).write_bytes(b"\0")
    live = tmp_path / f"features-val-k.pt.tmp{os.getppid()}"
    live.write_bytes(b"\0")
    featurize._save_cache(torch.zeros(3), str(tmp_path), str(tmp_path / "features-test-k.pt"), "feature")
    assert sorted(os.listdir(tmp_path)) == sorted(["features-test-k.pt", live.name])
