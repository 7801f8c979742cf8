"""The run layer under hostile use, where a signal or the real command line is the point (issue 12,
round two): two processes racing for one run folder, SIGINT in a sweep then resume, random search
under SIGTERM/SIGINT, Ctrl-C while importing, a run SIGKILLed in epoch one. The rest, in-process:
tests/integration/test_hostile_run.py."""
import functools
import os
import signal
import time

import pytest
import torch

from tests import helpers
from tests.helpers import one_error_line, popen, read_json, signal_after

# one thread: CPU results are bit-identical for a given thread count
BASE = ["--dataset", "synthetic", "--epochs", 1, "--quiet", "--threads", 1, "--device", "cpu"]
# train.py's exit status for argv, run in this process, exactly as given (no --threads added)
train = functools.partial(helpers.train, threads=None)


def popen_train(*argv):
    return popen("train.py", *argv)


# --------------------------------------------------------------------------- 12.1 run folders

def test_two_runs_racing_for_one_logdir_one_wins(tmp_path):
    logdir = tmp_path / "race"
    procs = [popen_train(*BASE, "--seed", seed, "--logdir", logdir) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[0] == 2)
    line = one_error_line(loser[2])
    assert str(logdir) in line
    winner_seed = 1 if results[0][0] == 0 else 2
    assert read_json(logdir / "config.json")["seed"] == winner_seed        # no mixed files
    saved = torch.load(logdir / "checkpoint.pt", weights_only=True)
    assert saved["config"]["seed"] == winner_seed
    assert read_json(logdir / "metrics.json")["status"] == "completed"
    assert len(list(logdir.glob("events.out.tfevents*"))) == 1


# --------------------------------------------------------------------------- 12.4 sweeps

SWEEP = [*BASE[:2], "--quiet", "--threads", 1, "--device", "cpu", "--seed", 3, "--val-size", 500, "--batch-size", 4,
         "--epochs", 6, "--sweep", "lr=0.003,0.01"]


def test_sigint_in_a_sweep_then_resume_equals_uninterrupted(tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    p = popen_train(*SWEEP, "--logdir", cut)
    code, out, err = signal_after(p, "step 0", signal.SIGINT, 0.5)
    assert code == 130, err
    assert "Traceback" not in err
    state = torch.load(cut / "last.pt", weights_only=True)["state"]
    assert (state["epoch"], state["step"]) != (6, 0), "the signal came too late to interrupt anything"
    summary = read_json(cut / "metrics.json")                    # issue 8.1: the sweep's summary
    assert summary["status"] == "interrupted" and len(summary["configs"]) == 2

    assert train("--resume", cut, "--quiet") == 0
    assert train(*SWEEP, "--logdir", ref) == 0
    a, b = torch.load(cut / "last.pt", weights_only=True)["state"], torch.load(ref / "last.pt", weights_only=True)["state"]
    for key in ("weight", "bias", "best_weight", "best_bias"):
        assert torch.equal(a[key], b[key]), key
    for key in ("weight", "bias"):
        assert torch.equal(a["momentum"][key], b["momentum"][key]), key
    for name in ("lr=0.003", "lr=0.01"):
        x = torch.load(cut / name / "checkpoint.pt", weights_only=True)["model"]
        y = torch.load(ref / name / "checkpoint.pt", weights_only=True)["model"]
        assert torch.equal(x["weight"], y["weight"]) and torch.equal(x["bias"], y["bias"]), name
    assert read_json(cut / "metrics.json")["status"] == "completed"


# --------------------------------------------------------------------------- 12.5 random search and signals

@pytest.mark.parametrize("optimizer, sig", [("random-search", signal.SIGTERM), ("random-local-search", signal.SIGINT)])
def test_random_search_honours_signals(optimizer, sig, tmp_path):
    run = tmp_path / "search"
    p = popen_train(*BASE, "--val-size", 500, "--optimizer", optimizer, "--trials", 1000000, "--logdir", run)
    code, out, err = signal_after(p, "synthetic:", sig, 1.0)
    assert code == 128 + sig, err
    assert "Traceback" not in err
    metrics = read_json(run / "metrics.json")
    assert metrics["status"] == "interrupted" and 0 < metrics["trials"] < 1000000
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert torch.isfinite(saved["model"]["weight"]).all()


# --------------------------------------------------------------------------- 12.11 Ctrl-C while importing

@pytest.mark.parametrize("delay", [0.3, 0.8])
def test_ctrl_c_while_importing_is_quiet(delay, tmp_path):
    p = popen("train.py", *BASE, "--logdir", tmp_path / "run", env=os.environ)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, err)
    assert "Traceback" not in err, err
    if delay < 0.5:                        # torch takes longer than that to import
        assert "synthetic:" not in out and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- 12.14 existing folders

def test_folder_of_a_run_killed_in_epoch_one_is_refused(tmp_path, capsys):
    run = tmp_path / "killed"
    # batch 1: epoch 1 takes about 0.5 s on an idle machine (batch 4: 0.17 s, over before a 0.2 s delay)
    p = popen_train(*BASE, "--epochs", 50, "--batch-size", 1, "--logdir", run)
    code, _, _ = signal_after(p, "step 0", signal.SIGKILL, 0.1)
    assert code == -signal.SIGKILL
    files = sorted(os.listdir(run))
    assert "last.pt" not in files, "the kill came too late: epoch 1 had ended"
    assert train(*BASE, "--logdir", run) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--resume" not in line and str(run) in line
    assert sorted(os.listdir(run)) == files
    assert train("--resume", run) == 2
    one_error_line(capsys.readouterr().err)
