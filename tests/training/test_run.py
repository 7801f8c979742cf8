"""lintorch.training.run: a run's ending, resumes, interrupts and divergence."""
import json
import os

import pytest
import torch

from lintorch.config import parse_args
from lintorch.errors import CheckpointError
from lintorch.training.members import best_index
from tests import helpers
from tests.conftest import BASE, LONG_NUMBER, copy_tree, stop_after, train_auto_threads, usage_error
from tests.helpers import one_error_line, read_json, train
from tests.training.conftest import CUDA_RUN


# --------------------------------------------------------------------------- resume rules

def test_resume_after_a_class_folder_was_renamed_is_refused(image_folder, tmp_path, capsys):
    data = copy_tree(image_folder, tmp_path / "data")
    run = tmp_path / "run"
    args = ["--dataset", "imagefolder", "--data-dir", data, "--image-size", 8, "--val-size", 9, "--batch-size", 8,
            "--schedule", "constant", "--epochs", 1, "--quiet", "--threads", 1, "--device", "cpu"]
    assert train_auto_threads(*args, "--logdir", run) == 0
    os.rename(data / "train" / "blue", data / "train" / "zz_blue")
    capsys.readouterr()
    before = (run / "last.pt").read_bytes()
    assert train_auto_threads("--resume", run, "--epochs", 2) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "blue" in line and "class" in line
    assert (run / "last.pt").read_bytes() == before


@pytest.mark.parametrize("flag, value", [("--lr", 0.1), ("--loss", "svm"), ("--reg", 0.5), ("--batch-size", 64),
                                         ("--seed", 9), ("--schedule", "cosine")])
def test_resume_refuses_changed_flags_naming_them(constant_run, flag, value, capsys):
    capsys.readouterr()
    assert train_auto_threads("--resume", constant_run, "--epochs", 2, flag, value) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {flag} ")


def test_resume_accepts_what_it_may_change(constant_run, tmp_path, capsys):
    run = copy_tree(constant_run, tmp_path / "run")
    assert train_auto_threads("--resume", run, "--epochs", 2, "--device", "cpu", "--threads", 1, "--quiet",
                 "--log-every", 7) == 0
    metrics = read_json(run / "metrics.json")
    assert metrics["status"] == "completed" and metrics["epochs"] == 2


def test_resume_empty_path_is_a_usage_error(capsys):
    from lintorch.config import parse_args
    usage_error(parse_args, ["--resume", ""], capsys)


# --------------------------------------------------------------------------- nothing to resume

def test_resuming_a_finished_run_changes_nothing(constant_run, capsys):
    files = {p.name: p.read_bytes() for p in constant_run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert train_auto_threads("--resume", constant_run) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in constant_run.iterdir() if p.is_file()} == files


def test_huge_margin_prints_no_forty_digit_numbers(tmp_path, capsys):
    assert train_auto_threads("--dataset", "synthetic", "--image-size", 8, "--epochs", 1, "--device", "cpu", "--threads", 1, "--val-size", 500, "--loss", "svm",
                 "--margin", "1e30", "--logdir", tmp_path / "run") == 0
    out, err = capsys.readouterr()
    assert "epoch 1/1" in out and not LONG_NUMBER.search(out + err), out + err


# --------------------------------------------------------------------------- divergence

PX8 = ["--image-size", 8]      # what diverges or grows, and the messages about it, do not need 32 px


def test_diverging_in_epoch_one_promises_no_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_auto_threads(*BASE, *PX8, "--val-size", 500, "--lr", "1e30", "--logdir", run) == 1
    out, err = capsys.readouterr()
    assert "no model was kept" in out + err
    assert "checkpoint.pt keeps" not in out + err and not (run / "checkpoint.pt").exists()
    assert read_json(run / "metrics.json")["status"] == "diverged"


def test_a_sweep_where_every_member_diverges_exits_1(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_auto_threads(*BASE, *PX8, "--val-size", 500, "--sweep", "lr=1e30,1e31", "--logdir", run) == 1
    out, err = capsys.readouterr()
    assert "every configuration diverged" in out + err
    assert "best configuration" not in out + err and not (run / "checkpoint.pt").exists()
    assert read_json(run / "metrics.json")["status"] == "diverged"


# --------------------------------------------------------------------------- interrupted sweeps, growing losses, finished runs

def test_interrupted_sweep_summary_is_the_sweeps(tmp_path, monkeypatch):
    run = tmp_path / "sweep"
    stop_after(monkeypatch, 6)               # member 0 has diverged by then, member 1 is training
    assert train_auto_threads(*BASE, *PX8, "--val-size", 500, "--sweep", "lr=1e30,0.01", "--logdir", run) == 130
    summary = read_json(run / "metrics.json")
    assert summary["status"] == "interrupted"
    assert [c["status"] for c in summary["configs"]] == ["diverged", "interrupted"]


def test_a_growing_loss_is_warned_and_noted(tmp_path, capsys):
    run = tmp_path / "run"
    code = train_auto_threads(*BASE, *PX8, "--val-size", 500, "--lr", "1e3", "--logdir", run)
    out, err = capsys.readouterr()
    if code == 1:
        assert "non-finite" in out + err
    else:
        assert "grew" in out + err and "--lr" in out + err
        assert "grew" in read_json(run / "metrics.json")["note"]


def test_more_epochs_on_a_finished_cosine_run_is_refused(good_checkpoint, constant_run, tmp_path, capsys):
    cosine = good_checkpoint.parent
    capsys.readouterr()
    assert train_auto_threads("--resume", cosine, "--epochs", 20) == 2
    assert "schedule" in one_error_line(capsys.readouterr().err)
    run = copy_tree(constant_run, tmp_path / "run")
    assert train_auto_threads("--resume", run, "--epochs", 3) == 0
    assert read_json(run / "metrics.json")["epochs"] == 3


SMALL = ["--dataset", "synthetic", "--image-size", "8", "--val-size", "500", "--seed", "1", "--quiet", "--threads", "1"]
DRIVERS = {"sgd": ["--epochs", "2", "--sweep", "lr=0.01,0.03"],
           "lbfgs": ["--optimizer", "lbfgs", "--max-iter", "20", "--sweep", "reg=1e-3,1e-2"],
           "random-search": ["--optimizer", "random-search", "--trials", "40"]}


@pytest.mark.parametrize("driver", DRIVERS)
def test_in_memory_run_writes_nothing_and_keeps_the_same_model(driver, tmp_path, monkeypatch):
    from lintorch.training.fit import fit
    argv = SMALL + DRIVERS[driver]
    assert train(*argv, "--logdir", tmp_path / "run", threads=None) == 0
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    metrics = read_json(tmp_path / "run" / "metrics.json")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")            # a run in memory writes nowhere, runs/ included
    cfg = parse_args(argv)
    torch.set_num_threads(1)
    result = fit(cfg, device=torch.device("cpu"))
    assert result.exit_status == 0 and os.listdir(tmp_path / "empty") == []
    k, W, b = result.best, result.W[result.best], result.b[result.best]
    names = result.names
    vals = [c["val_acc"] for c in metrics["configs"]] if "configs" in metrics else [metrics["val_acc"]]
    assert k == best_index(vals)
    if len(names) > 1:
        assert metrics["best"]["config"] == result.values[k]
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


def test_resume_after_an_interrupt_on_cuda(emulated, tmp_path, monkeypatch):
    run = tmp_path / "run"
    with emulated():
        stop_after(monkeypatch, 5)
        assert train_auto_threads(*CUDA_RUN, "--epochs", 2, "--logdir", run) == 130
        monkeypatch.undo()
        assert train_auto_threads("--resume", run, "--quiet", "--threads", 1) == 0
    assert helpers.read_json(run / "metrics.json")["status"] == "completed"


@pytest.mark.parametrize("optimizer", ["lbfgs", "random-search"])
def test_resuming_a_run_that_keeps_no_resumable_state_names_the_optimizer(tmp_path, optimizer):
    from lintorch.output.checkpoint import last_path
    (tmp_path / "config.json").write_text(json.dumps({"optimizer": optimizer}))
    with pytest.raises(CheckpointError, match=f"--optimizer {optimizer}.*start a new run"):
        last_path(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"optimizer": "sgd"}))
    assert last_path(str(tmp_path)).endswith("last.pt")          # sgd: the usual "no such file" later


def test_a_second_ctrl_c_while_a_solvers_answer_is_saved_waits_for_the_save():
    import os
    import signal
    from lintorch.train import StopFlag
    stop = StopFlag()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop() and stop.signum == signal.SIGINT
        stop.saving = True                          # fit_lbfgs: the solver returned, its result is being written
        os.kill(os.getpid(), signal.SIGINT)         # no KeyboardInterrupt: nothing is lost
        assert stop.signum == signal.SIGINT
        stop.saving = False
        with pytest.raises(KeyboardInterrupt):      # elsewhere a second Ctrl-C still means "now"
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()


# a fixed thread count: CPU results are bit-identical for a given count (--threads auto measures the load)
FAULT_RUN = ["--dataset", "synthetic", "--quiet", "--seed", "3", "--val-size", "1000", "--threads", "1", *PX8]


def test_nonfinite_loss_stops_and_keeps_best(tmp_path, monkeypatch, capsys):
    """The loss turns NaN in epoch 2: stop there, name epoch/step/lr, keep epoch 1's best model."""
    from lintorch.objective import Objective
    calls = {"n": 0}
    real = Objective.loss_and_grad

    def poisoned(self, x, weight, bias, y):
        calls["n"] += 1
        scores, data, reg, dW, db = real(self, x, weight, bias, y)
        if calls["n"] > 20:                                  # 12 steps per epoch at batch 256
            data, dW = data * float("nan"), dW * float("nan")
        return scores, data, reg, dW, db
    monkeypatch.setattr(Objective, "loss_and_grad", poisoned)
    code = train(*FAULT_RUN, "--epochs", "3", "--logdir", tmp_path)
    out = capsys.readouterr()
    assert code == 1
    assert "epoch 2, step 9" in out.out and "lr" in out.out
    best = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert best["epoch"] == 1 and torch.isfinite(best["model"]["weight"]).all()
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert torch.isfinite(last["model"]["weight"]).all()
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"
