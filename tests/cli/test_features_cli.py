"""The feature commands as subprocesses: `python -m lintorch.extract` answers --help and usage
errors on the real command line, and the feature store streams a 400 MB file in a fresh process
whose peak memory stays bounded by the batch pipeline."""
import os

import pytest
import torch

from lintorch.features import store
from tests.helpers import python


def test_extract_command_line(tmp_path, run_cli):
    p = run_cli("-m", "lintorch.extract", "--help")
    assert p.returncode == 0 and "--backbone-weights" in p.stdout and "--centroids" in p.stdout
    p = run_cli("-m", "lintorch.extract", "--features", "hog", "--out", str(tmp_path / "z"), "--bogus")
    assert p.returncode == 2 and "unrecognized arguments: --bogus" in p.stderr
    p = run_cli("-m", "lintorch.extract", "--features", "hog", "--out", str(tmp_path / "z"), "--dataset",
                "imagefolder", "--data-dir", str(tmp_path / "nowhere"))
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and p.stderr.startswith("error:")


RSS_SCRIPT = r"""
import resource, sys, torch
from lintorch.features import store
s = store.FeatureSplit(sys.argv[1], "train", check_finite=False)
next(store.FeatureLoader(s, 512, "cpu").batches(0))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s.check_finite()
st = store.Standardizer.fit(s)
n = sum(len(y) for _, y in store.FeatureLoader(s, 512, "cpu", standardizer=st).batches(0))
assert n == s.n
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


@pytest.mark.slow
def test_store_streaming_memory_is_bounded_by_the_batch_pipeline(tmp_path):
    n, d = 100_000, 1024                                         # 400 MB of float32
    store.write_classes(tmp_path, ["a", "b"])
    w = store.SplitWriter(str(tmp_path), "train", n, d)
    for i in range(0, n, 10_000):
        w.write(torch.full((10_000, d), float(i)), torch.arange(10_000) % 2)
    w.close()
    assert os.path.getsize(tmp_path / "train.npy") > 400e6
    p = python("-c", RSS_SCRIPT, tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    grown_mb = int(p.stdout.strip().splitlines()[-1])
    assert grown_mb < 150, f"peak RSS grew {grown_mb} MB reading a 400 MB file"
