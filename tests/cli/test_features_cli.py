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


def test_extraction_sharded_under_torchrun_equals_one_process(image_folder, tmp_path):
    """torchrun --nproc_per_node 2 python -m lintorch.extract: rank 0 learns the k-means state, each
    rank encodes its shard, rank 0 writes one feature set, equal to the one-process extraction."""
    import numpy as np
    args = ["-m", "lintorch.extract", "--features", "kmeans", "--centroids", "4", "--patches", "500", "--dataset",
            "imagefolder", "--data-dir", str(image_folder), "--image-size", "16", "--quiet", "--threads", "1",
            "--device", "cpu"]
    one = python(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2, *args,
                 "--out", str(tmp_path / "two"), timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("wrote kmeans features") == 1                     # rank 0 reports, once
    for name in ("train", "test", "train_labels", "test_labels"):
        a, b = np.load(tmp_path / "one" / f"{name}.npy"), np.load(tmp_path / "two" / f"{name}.npy")
        assert a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-5), name
    assert not [n for n in os.listdir(tmp_path / "two") if ".part" in n]       # the shards' files are gone
