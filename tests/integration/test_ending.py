"""The one ending of every driver (Run.finish): the best member by one rule, the sweep's checkpoint.pt,
the exit status; and the same run in memory (no run folder): nothing written, the same kept model."""
import os

import pytest
import torch

from lintorch.config import parse_args
from lintorch.training.members import best_index, ranking
from tests.helpers import read_json, train

SMALL = ["--dataset", "synthetic", "--image-size", "8", "--val-size", "500", "--seed", "1", "--quiet", "--threads", "1"]
DRIVERS = {"sgd": ["--epochs", "2", "--sweep", "lr=0.01,0.03"],
           "lbfgs": ["--optimizer", "lbfgs", "--max-iter", "20", "--sweep", "reg=1e-3,1e-2"],
           "random-search": ["--optimizer", "random-search", "--trials", "40"]}


def test_one_ranking_rule():
    assert ranking([0.5, None, 0.7, 0.7, 0.0]) == [2, 3, 0, 4, 1]      # ties: the earlier member; None last
    assert best_index([0.5, None, 0.7, 0.7]) == 2
    assert best_index([None, None]) is None and best_index([0.0, None]) == 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_in_memory_run_writes_nothing_and_keeps_the_same_model(driver, tmp_path, monkeypatch):
    from lintorch.training.run import execute
    argv = SMALL + DRIVERS[driver]
    assert train(*argv, "--logdir", tmp_path / "run", threads=None) == 0
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    metrics = read_json(tmp_path / "run" / "metrics.json")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")            # a run in memory writes nowhere, runs/ included
    cfg = parse_args(argv)
    torch.set_num_threads(1)
    code, run = execute(cfg, torch.device("cpu"), None)
    assert code == 0 and os.listdir(tmp_path / "empty") == []
    k, W, b = run.best
    names = [m.name for m in run.members]
    vals = [c["val_acc"] for c in metrics["configs"]] if "configs" in metrics else [metrics["val_acc"]]
    assert k == best_index(vals)
    if len(names) > 1:
        assert metrics["best"]["config"] == run.members[k].overrides
    torch.testing.assert_close(W.cpu(), saved["model"]["weight"], rtol=0, atol=0)
    torch.testing.assert_close(b.cpu(), saved["model"]["bias"], rtol=0, atol=0)
