"""torchrun on a feature folder (issue 20, class H): data-parallel training shards the feature
loader like the image loader and equals the one-process run; rank 0 speaks for the job (one
summary, one error line, no rank's bars or epoch lines twice); a refused folder leaves no husk."""
import os

import pytest
import torch

from lintorch.features import store
from tests.cli.test_distributed_cli import assert_close_runs, metrics, one_process
from tests.helpers import torchrun

COMMON = ["--dataset", "features", "--batch-size", "63", "--seed", "3", "--val-size", "200", "--device", "cpu",
          "--threads", "1", "--log-every", "10", "--epochs", "2", "--momentum", "0.9"]


def folder(root, n=1000, d=12):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = torch.randn(n, d, generator=g) + 2 * torch.nn.functional.one_hot(y, d).float()
    store.write_classes(root, ["a", "b", "c"])
    store.save_split(root, "train", x, y)
    store.save_split(root, "test", x[:150], y[:150])
    return root


def test_h_data_parallel_on_a_feature_folder_equals_one_process(tmp_path):
    data = folder(tmp_path / "f")
    one_process(*COMMON, "--quiet", "--data-dir", data, "--logdir", tmp_path / "one")
    p = torchrun(*COMMON, "--data-dir", data, "--logdir", tmp_path / "two")
    assert p.returncode == 0, p.stdout + p.stderr
    assert_close_runs(tmp_path / "one", tmp_path / "two")
    assert metrics(tmp_path / "one")["test_acc"] == pytest.approx(metrics(tmp_path / "two")["test_acc"], abs=2e-3)
    assert p.stdout.count("done (completed)") == 1, p.stdout
    assert p.stdout.count("epoch 1/2") == 1 and p.stdout.count("features: ") == 1, p.stdout   # no line twice


def test_h_a_refused_folder_under_torchrun_is_one_line_and_no_husk(tmp_path):
    data = folder(tmp_path / "f")
    store.save_split(data, "test", torch.randn(5, 7), torch.arange(5) % 3)         # D 7 against 12
    p = torchrun(*COMMON, "--quiet", "--data-dir", data, "--logdir", tmp_path / "run")
    assert p.returncode != 0
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "D = 7" in errors[0], p.stderr
    assert "lintorch/" not in p.stderr             # torchrun's own report of a failed child is all the rest
    assert not os.path.exists(tmp_path / "run")
