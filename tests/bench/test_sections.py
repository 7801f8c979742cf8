"""lintorch.bench.sections: the process rows pair each period with its loop epoch."""
import pytest

from lintorch.bench import report, sections


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
