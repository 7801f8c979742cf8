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


def _last_lines(capsys, n):
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()][-n:]


@pytest.mark.parametrize("driver", ["sgd", "lbfgs"])
def test_a_sweep_ends_on_the_answer(driver, tmp_path, capsys):
    """The last lines: the chosen member with its val (and test) accuracy, the checkpoint, the total
    time; the members' own lines (lbfgs's notes) come before the ranked table, never after it."""
    argv = [a for a in SMALL if a != "--quiet"] + DRIVERS[driver]
    assert train(*argv, "--logdir", tmp_path / "run") == 0
    chosen, checkpoint, done = _last_lines(capsys, 3)
    metrics = read_json(tmp_path / "run" / "metrics.json")
    best = metrics["best"]
    name = ",".join(f"{k}={v:g}" for k, v in best["config"].items())
    assert chosen == (f"best configuration {name} of 2: val acc {100 * best['val_acc']:.2f}%, "
                      f"test acc {100 * best['test_acc']:.2f}%")
    assert checkpoint == f"checkpoint {tmp_path / 'run' / 'checkpoint.pt'}"
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert done.startswith("done (completed) in ") and done.endswith(" s")


def test_a_single_run_ends_on_its_accuracy_checkpoint_and_total_time(tmp_path, capsys):
    assert train(*[a for a in SMALL if a != "--quiet"], "--epochs", "2", "--logdir", tmp_path / "run") == 0
    (last,) = _last_lines(capsys, 1)
    m = read_json(tmp_path / "run" / "metrics.json")
    assert last.startswith(f"done (completed): best val acc {100 * m['val_acc']:.2f}% at epoch {m['best_epoch']}, "
                           f"test acc {100 * m['test_acc']:.2f}%; ")
    assert " in all; " in last and last.endswith(f"checkpoint {tmp_path / 'run' / 'checkpoint.pt'}")


def test_the_default_run_folder_is_dataset_then_loss_for_a_sweep_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train(*SMALL, *DRIVERS["lbfgs"], "--loss", "svm", "--squared-hinge") == 0
    (folder,) = os.listdir(tmp_path / "runs")
    assert folder.endswith("-synthetic-svm")                    # runs/<timestamp>-<dataset>-<loss>, as the README says


def test_duration_reads_as_people_write_it():
    from lintorch.training.members import duration
    assert [duration(s) for s in (4.24, 59.94, 60.2, 185, 3725)] == ["4.2 s", "59.9 s", "1 min 0 s", "3 min 5 s",
                                                                   "1 h 2 min"]
