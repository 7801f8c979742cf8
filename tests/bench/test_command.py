"""lintorch.bench's command with tiny shapes: every flag has help, a quick run writes its table and JSON."""
import json

import pytest

from lintorch import bench
from lintorch.bench import processes, report
from tests import helpers


def test_every_flag_has_help():
    actions = [a for a in bench.get_args_parser()._actions if a.dest != "help"]
    assert actions and all(a.help for a in actions)


@pytest.mark.slow                    # 3 s idle, 6-10 s under load: every section, and a competing-load process
def test_quick_run_writes_table_and_json(tmp_path, capsys, monkeypatch):
    # the competing job a busy Python loop, not a torch GEMM loop that imports torch first (~3 s of CPU here):
    # the threads section's rows are what is checked; the real job: tests/cli/test_bench.py
    monkeypatch.setattr(processes, "LOAD", "print('ready', flush=True)\nwhile True: pass")
    out = tmp_path / "results" / "bench.json"
    assert bench.main(["--quick", "--n", "600", "--subset", "64", "--repeats", "1", "--loss-seconds", "0.001",
                       "--device", "cpu", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["machine"]["device"] == "cpu" and res["machine"]["threads"] >= 1 and res["machine"]["torch"]
    names = {(r["section"], r["name"]) for r in res["rows"]}
    epoch = {n for s, n in names if s == "epoch"}
    assert {"lintorch softmax", "lintorch svm", "plain PyTorch softmax", "plain PyTorch svm", "GEMM bound",
            "DataLoader workers 0", "DataLoader workers 2"} <= epoch
    for b in (256, 4096):
        assert {n for s, n in names if s == f"loss B{b}"} == {"lintorch softmax_loss", "torch F.cross_entropy",
                                                                "lintorch svm_loss", "torch C*F.multi_margin_loss"}
    assert all(r["seconds"] > 0 and len(r["all"]) == 1 for r in res["rows"])
    assert not any(r["section"] in ("time to acc", "memory", report.PROCESS) for r in res["rows"])  # --quick
    statuses = {t["status"] for t in res["targets"]}
    assert {n for s, n in names if s == "sweep epoch"} == {"one configuration", "sweep of 16"}
    assert {n for s, n in names if s == report.THREADS} == {f"{c}, --threads {t}" for c in ("idle", "loaded")
                                                            for t in (1, 2, "auto")}
    parts = {n for s, n in names if s == report.BOOKKEEPING}
    assert {"loop epoch", "histograms W and dW", "templates picture", "checkpoints (last + best)",
            "all, with pictures", "all, without pictures"} <= parts and any(n.startswith("validation") for n in parts)
    assert len(res["targets"]) == 11 and statuses <= {"pass", "pass at worst", "MISS"}
    table = capsys.readouterr().out
    assert "GEMM bound" in table and "-- targets" in table and "scaled from 64 images" in table


@pytest.mark.slow
def test_bench_quick_on_cuda(emulated, tmp_path):
    """Every section on cuda with the smallest sizes that run it: 512 images (2 batches), 64 per-image, a sweep of 2."""
    from lintorch.bench import command
    with emulated():
        assert command.main(["--quick", "--device", "cuda", "--threads", "1", "--json", str(tmp_path / "b.json"),
                             "--repeats", "1", "--n", "512", "--subset", "64", "--sweep-k", "2"]) == 0
    rows = helpers.read_json(tmp_path / "b.json")["rows"]
    assert rows and all(r["seconds"] > 0 for r in rows)
