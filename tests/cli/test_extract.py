"""`python -m lintorch.extract` as a process: help and usage errors, bounded memory, a signal mid-extract leaves
nothing."""
import os
import signal
import time

import pytest
import torch

from lintorch.features import store
from tests import forked
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
torch.set_num_threads(1)          # as the suite runs torch: two threads beside other jobs take 2-9 times as long
from lintorch.data import Preprocess
from lintorch.features import store
s = store.FeatureSplit(sys.argv[1], "train", check_finite=False)
next(store.FeatureLoader(s, 512, "cpu").batches(0))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s.verify()
st = Preprocess.fit_features(xb for _, xb in s.chunks())
n = sum(len(y) for _, y in store.FeatureLoader(s, 512, "cpu", standardizer=st).batches(0))
assert n == s.n
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


@pytest.mark.slow
def test_store_streaming_memory_is_bounded_by_the_batch_pipeline(tmp_path):
    """Three passes over a 200 MB file grow the peak RSS ~100 MB (the batch pipeline's buffers, whatever
    the file's size); keeping the pages read (no FeatureSplit.release) grows it ~260 MB."""
    n, d = 50_000, 1024                                          # 200 MB of float32
    store.write_classes(tmp_path, ["a", "b"])
    w = store.SplitWriter(str(tmp_path), "train", n, d)
    for i in range(0, n, 10_000):
        w.write(torch.full((10_000, d), float(i)), torch.arange(10_000) % 2)
    w.close()
    assert os.path.getsize(tmp_path / "train.npy") > 200e6
    p = python("-c", RSS_SCRIPT, tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    grown_mb = int(p.stdout.strip().splitlines()[-1])
    assert grown_mb < 150, f"peak RSS grew {grown_mb} MB reading a 200 MB file"


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_extract_leaves_nothing(image_folder, tmp_path, sig, code):
    out = tmp_path / "out"
    # a forked child (tests/forked.py: torch already imported; how extract starts is not the point here);
    # k-means at its defaults (1,600 centroids from 400,000 patches): a build of a minute on one thread, in
    # steps of a fraction of a second
    p = forked.start("lintorch.extract", "--features", "kmeans", "--dataset", "imagefolder", "--data-dir", image_folder,
                     "--cache-dir", tmp_path / "cache", "--out", out, "--device", "cpu", "--threads", "1", "--quiet")
    p.wait_for_file(tmp_path / f".out.partial{p.pid}")     # claimed and building: the images load, k-means learns
    time.sleep(0.2)      # inside the build
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    assert "Traceback" not in err
    assert sorted(n for n in os.listdir(tmp_path) if n != "cache") == []
