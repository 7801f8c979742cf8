"""Hostile feature folders through train.py and evaluate, in this process (issue 20, classes A, D,
E): each refused folder is one line and exit 2 before a run folder is made (no husk); a model
meets only data of its own D."""
import json

import pytest
import torch

from lintorch import evaluate
from lintorch.features import store
from tests.helpers import assert_one_line_error, train

COMMON = ["--dataset", "features", "--epochs", "1", "--val-size", "10", "--quiet", "--threads", "1", "--device", "cpu"]


def folder(root, d=8, n=60, test_d=None, fmt="npy"):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = torch.randn(n, d, generator=g) + 3 * torch.nn.functional.one_hot(y, d).float() if d >= 3 else torch.randn(n, d)
    store.write_classes(root, ["a", "b", "c"])
    store.save_split(root, "train", x, y, fmt=fmt)
    store.save_split(root, "test", torch.randn(12, test_d or d, generator=g), torch.arange(12) % 3, fmt=fmt)
    return root


def test_a_train_and_test_of_two_widths_fail_before_training(tmp_path, capsys):
    data, logdir = folder(tmp_path / "f", d=8, test_d=5), tmp_path / "run"
    code = train(*COMMON, "--data-dir", data, "--logdir", logdir)
    assert_one_line_error(code, capsys.readouterr().err, "D = 5", "D = 8")
    assert not logdir.exists()


def test_a_evaluate_on_a_folder_of_another_width_is_one_line(tmp_path, capsys):
    logdir = tmp_path / "run"
    assert train(*COMMON, "--data-dir", folder(tmp_path / "f8"), "--logdir", logdir) == 0
    other = folder(tmp_path / "f5", d=5)
    capsys.readouterr()
    code = evaluate.main([str(logdir), "--data-dir", str(other), "--threads", "1"])
    assert_one_line_error(code, capsys.readouterr().err, "D = 8", "5")


def test_d_a_fifo_label_file_through_train_is_one_line_and_no_husk(tmp_path, capsys, deadline):
    import os
    data, logdir = folder(tmp_path / "f"), tmp_path / "run"
    (data / "train_labels.npy").unlink()
    os.mkfifo(data / "train_labels.npy")
    code = train(*COMMON, "--data-dir", data, "--logdir", logdir)
    assert_one_line_error(code, capsys.readouterr().err, "FIFO")
    assert not logdir.exists()


def test_d_a_pt_file_holding_tensors_that_require_grad_trains(tmp_path):
    data = tmp_path / "f"
    data.mkdir()
    store.write_classes(data, ["a", "b", "c"])
    y = torch.arange(60) % 3
    x = (torch.randn(60, 6) + 3 * torch.nn.functional.one_hot(y, 6)).requires_grad_()
    torch.save({"x": x, "y": y}, data / "train.pt")
    assert train(*COMMON, "--data-dir", data, "--logdir", tmp_path / "run") == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["val_acc"] > 0.5


@pytest.mark.parametrize("optimizer, extra", [("lbfgs", ["--max-iter", "5"]), ("random-search", ["--trials", "5"])])
def test_optimizers_without_lr_on_features_say_nothing_of_a_scaled_lr(tmp_path, capsys, optimizer, extra):
    data = folder(tmp_path / "f", d=256)                # SGD would scale its default lr for D > 189
    assert train(*COMMON[:-5], "--threads", "1", "--device", "cpu", "--data-dir", data, "--optimizer", optimizer,
                 *extra, "--logdir", tmp_path / "run") == 0
    assert "lr scaled" not in capsys.readouterr().out
