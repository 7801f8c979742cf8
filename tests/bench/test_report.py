"""lintorch.bench.report: check_targets keeps every miss visible."""
import math

from lintorch.bench import report


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
