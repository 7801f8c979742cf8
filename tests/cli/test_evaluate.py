"""`python -m lintorch.evaluate` as a subprocess: it reproduces test_acc and refuses a code-running pickle."""
import json

import torch

from tests.helpers import CodeRunningPickle, assert_consistent, evaluate_json, python


def test_evaluate_command_line_reproduces_test_acc(folder_run_cli, read_json, run_cli, capsys):
    m = read_json(folder_run_cli / "metrics.json")
    p = run_cli("-m", "lintorch.evaluate", folder_run_cli, "--split", "test", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["split"] == "test" and r["n"] == 15 and r["accuracy"] == m["test_acc"]
    assert_consistent(r, ["blue", "green", "red"])
    val = evaluate_json(capsys, folder_run_cli)
    assert val["n"] == 12 and val["accuracy"] == m["val_acc"]
    assert m["val_acc"] >= 0.9 and m["test_acc"] >= 0.9  # three clearly different colours


def test_code_running_pickle_is_refused_by_evaluate(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LINTORCH_PWNED", str(marker))
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lintorch-checkpoint", "payload": CodeRunningPickle()}, evil)
    r = python("-m", "lintorch.evaluate", evil, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not marker.exists()
