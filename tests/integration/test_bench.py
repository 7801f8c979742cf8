"""Smoke tests of lintorch.bench with tiny shapes: it runs, reports every contender and target,
and writes its JSON. No timing assertions: speed is what the benchmark reports, not what a test checks.
Its child processes and its command line: tests/cli/test_bench_cli.py."""
import json
import math

import pytest
import torch

from lintorch import bench
from lintorch.bench import accuracy, contenders, report, sections
from lintorch.data import load_dataset


def test_every_flag_has_help():
    actions = [a for a in bench.get_args_parser()._actions if a.dest != "help"]
    assert actions and all(a.help for a in actions)


@pytest.mark.slow                    # 3 s idle, 6-10 s under load: every section, and a competing-load process
def test_quick_run_writes_table_and_json(tmp_path, capsys):
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


def test_check_targets_keeps_misses_visible():
    def row(section, name, s):
        return {"section": section, "name": name, "seconds": s}
    rows = [row("epoch", "lintorch softmax", 1.0), row("epoch", "plain PyTorch softmax", 2.0),
            row("epoch", "lintorch svm", 1.0), row("epoch", "plain PyTorch svm", 1.1),
            row("epoch", "GEMM bound", 0.5), row("epoch", "DataLoader workers 0", 5.0),
            row("loss B256", "lintorch softmax_loss", 1.0), row("loss B256", "torch F.cross_entropy", 2.0),
            row("loss B256", "lintorch svm_loss", 3.0), row("loss B256", "torch C*F.multi_margin_loss", 1.0),
            {"section": "memory", "name": "rss", "bytes": 2e9, "seconds": 1.0},
            {**row("time to acc", "lintorch defaults", 1.0), "reached": False},
            row(report.PROCESS, "bookkeeping per epoch", 0.1), row(report.PROCESS, "loop epoch", 0.5),
            row(report.THREADS, "idle, --threads auto", 0.5), row(report.THREADS, "loaded, --threads auto", 0.9)]
    targets = report.check_targets(rows)

    def status(*words):
        return [t["status"] for t in targets if all(w in t["target"] for w in words)]
    assert status("softmax epoch", "plain") == ["pass"]                       # 0.5x plain
    assert status("svm epoch", "plain") == ["pass at worst"]                  # 0.91x plain
    assert status("GEMM bound") == ["MISS", "MISS"]                           # 2x the bound
    assert status("DataLoader") == ["MISS"]                                   # only 5x faster
    assert status("softmax_loss") == ["pass"] and status("svm_loss") == ["MISS"]
    assert status("peak RSS") == ["MISS"]
    assert status("bookkeeping") == ["pass"] and status("2-thread job") == ["pass"]    # 20%, 1.8x
    tta = [t for t in targets if "40%" in t["target"]]
    assert tta[0]["status"] == "MISS" and math.isinf(tta[0]["value"])         # not reached is a miss
    assert all(t["text"].strip().startswith(t["status"]) for t in targets)


def test_time_to_accuracy_on_a_learnable_set():
    data = load_dataset("synthetic", val_size=200, seed=0)
    cpu = torch.device("cpu")
    ours = accuracy.time_to_accuracy_lintorch(data, cpu, target=0.3, check_every=5, limit_s=60)
    plain = accuracy.time_to_accuracy_plain(data, cpu, 64, target=0.3, check_every=5, limit_s=60)
    for r in (ours, plain):
        assert r["reached"] and r["acc"] >= 0.3 and r["steps"] % 5 == 0
        assert 0 < r["seconds"] <= r["wall_seconds"]
    assert "lr" in ours["config"] and "SGD" in plain["config"]


def test_time_to_accuracy_reports_not_reached():
    data = contenders.random_dataset(300)                                          # random labels: unlearnable
    r = accuracy.time_to_accuracy_plain(data, torch.device("cpu"), 64, target=0.99, check_every=2, limit_s=0.0)
    assert not r["reached"] and r["steps"] == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_epoch_scales_a_subset(workers):
    data = contenders.random_dataset(200)
    subset = contenders.per_image_dataset(data, None, 40)
    x, label = subset[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(label, int)
    run = contenders.dataloader_epoch(subset, 400, 10, 16, torch.device("cpu"), workers)
    assert run() > 0


def test_process_rows_pair_each_period_with_its_loop_epoch():
    def run(seconds, loop, periods):
        return {"seconds": seconds, "loop": loop, "periods": periods, "threads": 1}
    short = [run(5.0, [0.5], []), run(6.0, [0.5], [])]
    long = [run(7.0, [0.9, 0.5, 0.5, 0.5], [0.6, 0.6, 0.9]), run(9.0, [0.9, 0.4, 0.4, 0.4], [0.5, 0.5, 0.8])]
    rows = {r["name"]: r for r in sections.process_rows(short, long, "auto")}
    assert rows["(--epochs 4 - 1) / 3"]["all"] == pytest.approx([2 / 3, 1.0])
    assert rows["loop epoch"]["all"] == pytest.approx([0.5, 0.4])
    assert rows["bookkeeping per epoch"]["all"] == pytest.approx([0.2, 0.2])     # (0.1 + 0.1 + 0.4) / 3
    targets = report.check_targets(list(rows.values()))
    assert [t["value"] for t in targets] == pytest.approx([0.2 / 0.45])
