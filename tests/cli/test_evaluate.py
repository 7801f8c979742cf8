"""`python -m lintorch.evaluate` as a subprocess: it reproduces test_acc and refuses a code-running pickle."""
import json

import torch

from tests import forked
from tests.helpers import CodeRunningPickle, assert_consistent, evaluate_json


def test_evaluate_command_line_reproduces_test_acc(folder_run, read_json, run_cli, capsys):
    """The session's image-folder run (trained in the test process) evaluated by a fresh process."""
    m = read_json(folder_run / "metrics.json")
    p = run_cli("-m", "lintorch.evaluate", folder_run, "--split", "test", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["split"] == "test" and r["n"] == 15 and r["accuracy"] == m["test_acc"]
    assert_consistent(r, ["blue", "green", "red"])
    val = evaluate_json(capsys, folder_run)
    assert val["n"] == 12 and val["accuracy"] == m["val_acc"]
    assert m["val_acc"] >= 0.9 and m["test_acc"] >= 0.9  # three clearly different colours


def test_code_running_pickle_is_refused_by_evaluate(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LINTORCH_PWNED", str(marker))
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lintorch-checkpoint", "payload": CodeRunningPickle()}, evil)
    p = forked.start("lintorch.evaluate", evil)     # a process of its own (tests/forked.py), torch imported
    code, (_, err) = p.wait(), p.communicate()
    assert code == 2 and "Traceback" not in err
    assert not marker.exists()
