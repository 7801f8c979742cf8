"""lintorch.bench's child processes and command line: usage errors answer before torch is imported,
peak RSS of a child, a whole train.py process timed, the competing load lives only inside its block."""
import sys

import torch

from lintorch.bench import processes
from tests.helpers import python


def test_usage_errors_answer_before_torch_is_imported():
    code = ("import sys; from lintorch.bench import parse_args; a = parse_args(['--quick']); "
            "print(a.repeats, a.n, a.process_rounds, 'torch' in sys.modules)")
    out = python("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2048", "1", "False"]
    bad = python("-m", "lintorch.bench", "--repeats", "0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--repeats" in bad.stderr


def test_peak_rss_of_a_child_process():
    rss, rc = processes.peak_rss([sys.executable, "-c", "x = bytearray(200_000_000); x[::4096] = b'1' * len(x[::4096])"])
    assert rc == 0 and rss >= 200_000_000


def test_a_whole_train_process_reports_its_loop_epochs(image_folder, tmp_path):
    r = processes.timed_train(str(image_folder), torch.device("cpu"), 2, cache_dir=str(tmp_path / "cache"), threads=1)
    assert r["seconds"] > sum(r["loop"]) > 0 and len(r["loop"]) == 2 and r["threads"] == 1


def test_competing_load_runs_only_inside_its_block():
    with processes.CompetingLoad(1) as load:
        proc = load.proc
        assert proc.poll() is None
    assert proc.poll() is not None
