"""`python -m lintorch.doctor` as a process of its own, forked with torch imported (tests/forked.py: its start,
parsing before torch, is not what these test): one line without CUDA, the CPU's quick report."""
import pytest
import torch

from tests import forked
from tests.helpers import read_json


def test_doctor_without_cuda_is_one_line():
    """--device cuda typed on a machine without CUDA: one line, exit 2 (with no --device the doctor
    checks the CPU instead and says so: test_commands_ui)."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    p = forked.start("lintorch.doctor", "--device", "cuda")
    code, (out, err) = p.wait(), p.communicate()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "CUDA" in err


def test_doctor_cpu_quick_report(tmp_path):
    """On one thread, as the gradient check runs fastest here."""
    out = tmp_path / "report.json"
    # the benchmark's 2x limit is a timing: on this shared machine one --quick round can exceed it, and
    # no test asserts a speed (bench does); the threshold's logic is tested in test_commands_ui
    p = forked.start("lintorch.doctor", "--device", "cpu", "--quick", "--out", out, "--max-slowdown", "1000",
                     threads=1)
    code, (stdout, stderr) = p.wait(), p.communicate()
    assert code == 0, stdout + stderr
    assert "gradcheck" in stdout and "determinism" in stdout
    r = read_json(out)
    assert {"card", "driver", "torch", "cuda", "device"} <= set(r["machine"]) and r["machine"]["device"] == "cpu"
    assert set(r["sections"]) == {"gradcheck", "tests", "training", "benchmark", "determinism"}
    assert r["passed"] is True and all("seconds" in s for s in r["sections"].values())
    g = r["sections"]["gradcheck"]
    assert g["passed"] and g["checks"] > 50 and g["worst_rel_error"] < 1e-5
    assert r["sections"]["tests"]["skipped"]
    from lintorch.objective import LOSSES
    assert set(LOSSES) <= set(r["sections"]["training"])        # the doctor runs every registered loss
    for loss in LOSSES:
        t = r["sections"]["training"][loss]
        assert len(t["epochs"]) == 2 and all(e["seconds"] > 0 and 0 <= e["val_acc"] <= 1 for e in t["epochs"])
        assert t["host_syncs"] == 0
    b = r["sections"]["benchmark"]
    assert ("skipped" in b) or (b["epoch_seconds_lintorch"] > 0 and b["epoch_seconds_plain"] > 0)
    d = r["sections"]["determinism"]
    assert d["equal"] is True and d["max_abs_diff"] == 0.0      # CPU, same thread count: bit for bit
