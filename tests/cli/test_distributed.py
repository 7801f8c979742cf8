"""torchrun on the CPU (gloo, 2 processes): training, sweeps, resumes, signals and feature extraction across ranks
equal one process. The real launcher (`torchrun train.py`) where it is the point: a run's files and lines, SIGTERM
forwarded. Elsewhere the two ranks alone (forked.Ranks: torchrun's variables, each rank
forked from a server that imported torch once), and the one-process references in this process."""
import os
import signal
import time

import pytest
import torch

from lintorch.features import store
from tests.forked import Ranks, ranks
from tests.helpers import popen, read_json, torchrun, train, wait_for


# 3200 training images: B 63 leaves shards of 32 and 31 rows and a last global batch of 50
COMMON = ["--dataset", "synthetic", "--image-size", "8", "--batch-size", "63", "--seed", "3", "--quiet",
          "--device", "cpu", "--threads", "1", "--log-every", "10"]


def one_process(*argv):
    """The reference run, in this process (no second torch import)."""
    assert train(*argv) == 0


def state(folder):
    return torch.load(os.path.join(folder, "last.pt"), weights_only=True)["state"]


def metrics(folder):
    return read_json(os.path.join(folder, "metrics.json"))


def assert_close_runs(a, b, atol=1e-6):
    sa, sb = state(a), state(b)
    for name in ("weight", "bias", "best_weight", "best_bias"):
        assert torch.allclose(sa[name], sb[name], rtol=1e-5, atol=atol), (name, (sa[name] - sb[name]).abs().max())
    if sa["momentum"] is not None:
        assert torch.allclose(sa["momentum"]["weight"], sb["momentum"]["weight"], rtol=1e-5, atol=atol)
    assert (sa["epoch"], sa["step"]) == (sb["epoch"], sb["step"])
    for ma, mb in zip(sa["members"], sb["members"]):
        assert ma["name"] == mb["name"] and ma["best_epoch"] == mb["best_epoch"]
        for ha, hb in zip(ma["history"], mb["history"]):
            # accuracies agree to an example or two (an argmax tie may flip with the last bits)
            assert abs(ha["val_acc"] - hb["val_acc"]) <= 2 / 800 and abs(ha["train_acc"] - hb["train_acc"]) <= 2 / 3200
            assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-5)


def test_data_parallel_equals_one_process(tmp_path):
    """Also: rank 0 alone writes (one event file, no stray files)."""
    args = [*COMMON, "--epochs", "2", "--momentum", "0.9"]
    one_process(*args, "--logdir", tmp_path / "one")
    p = torchrun(*args, "--logdir", tmp_path / "two")
    assert p.returncode == 0, p.stdout + p.stderr
    assert_close_runs(tmp_path / "one", tmp_path / "two")
    assert metrics(tmp_path / "one")["test_acc"] == pytest.approx(metrics(tmp_path / "two")["test_acc"], abs=2e-3)
    names = sorted(os.listdir(tmp_path / "two"))
    assert [n for n in names if n.startswith("events.out")].__len__() == 1
    assert [n for n in names if not n.startswith("events.out")] == [
        "checkpoint.pt", "config.json", "last.pt", "metrics.json", "templates.png"], names
    assert p.stdout.count("done (completed)") == 1, p.stdout      # one summary: rank 0's


@pytest.mark.slow
def test_full_batch_gd_data_parallel(tmp_path):
    args = [*COMMON, "--optimizer", "gd", "--epochs", "5"]
    one_process(*args, "--logdir", tmp_path / "one")
    p = ranks(*args, "--logdir", tmp_path / "two")
    assert p.returncode == 0, p.stdout + p.stderr
    assert_close_runs(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_config_parallel_equals_the_sweep(tmp_path):
    """Each member trains exactly as in the one-process sweep: the same batches, histories and
    decisions; the weights agree to float32 rounding only because the one-process sweep stacks all
    K members into one GEMM and a process's share is a smaller GEMM (other blocking in MKL)."""
    args = [*COMMON, "--epochs", "2", "--sweep", "lr=0.003,0.03,0.1", "reg=0,0.01"]
    one_process(*args, "--logdir", tmp_path / "one")
    p = ranks(*args, "--sweep-parallel", "--logdir", tmp_path / "two")
    assert p.returncode == 0, p.stdout + p.stderr
    assert_close_runs(tmp_path / "one", tmp_path / "two", atol=1e-7)
    sa, sb = state(tmp_path / "one"), state(tmp_path / "two")
    exact = lambda h: [(e["epoch"], e["train_acc"], e["val_acc"]) for e in h]
    for ma, mb in zip(sa["members"], sb["members"]):
        assert exact(ma["history"]) == exact(mb["history"]) and ma["best_val"] == mb["best_val"]
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert a["status"] == b["status"] == "completed"
    assert [c["val_acc"] for c in a["configs"]] == [c["val_acc"] for c in b["configs"]]
    assert [c["test_acc"] for c in a["configs"]] == [c["test_acc"] for c in b["configs"]]
    best_a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    best_b = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert best_a["config"]["lr"] == best_b["config"]["lr"] and best_a["config"]["reg"] == best_b["config"]["reg"]
    assert best_a["best_val_acc"] == best_b["best_val_acc"]
    assert p.stdout.count("sweep results") == 1


@pytest.mark.slow
def test_resume_across_ranks(tmp_path):
    args = [*COMMON, "--schedule", "constant"]
    one_process(*args, "--epochs", "3", "--logdir", tmp_path / "one")
    p = ranks(*args, "--epochs", "1", "--logdir", tmp_path / "two")
    assert p.returncode == 0, p.stdout + p.stderr
    p = ranks("--resume", tmp_path / "two", "--epochs", "3")
    assert p.returncode == 0, p.stdout + p.stderr
    assert_close_runs(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_sigterm_under_torchrun_saves_once_and_resumes(tmp_path):
    args = [*COMMON, "--schedule", "constant", "--epochs", "400"]
    folder = tmp_path / "run"
    proc = popen("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2, "train.py", *args,
                 "--logdir", folder)
    wait_for(folder / "last.pt", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert out.count("interrupted at epoch") == 1, out + err        # rank 0 alone saves and says so
    s = state(folder)
    assert 1 <= s["epoch"] < 400 and s["members"][0]["status"] == "training"
    assert not [n for n in os.listdir(folder) if ".tmp" in n]
    p = ranks("--resume", folder, "--epochs", str(s["epoch"] + 2))   # a constant schedule can be extended
    assert p.returncode == 0, p.stdout + p.stderr
    assert state(folder)["epoch"] == s["epoch"] + 2


@pytest.mark.slow
def test_a_killed_rank_ends_the_other_with_a_message(tmp_path):
    """The two ranks without torchrun to tear the job down: rank 1 is SIGKILLed, rank 0's next
    collective fails, and it exits with one line instead of hanging."""
    args = [*COMMON, "--epochs", "400", "--dist-timeout", "20", "--logdir", str(tmp_path / "run")]
    job = Ranks(*args)
    wait_for(tmp_path / "run" / "last.pt", job)
    job.procs[1].kill()
    t0 = time.time()
    job.procs[0].join(60)
    assert time.time() - t0 < 25
    out, err = job.output(0)
    assert job.procs[0].exitcode == 2 and "lost contact with another training process" in err, out + err
    assert "Traceback" not in err
    job.result()


FEATURES_COMMON = ["--dataset", "features", "--batch-size", "63", "--seed", "3", "--val-size", "200", "--device", "cpu",
                   "--threads", "1", "--log-every", "10", "--epochs", "2", "--momentum", "0.9"]


def folder(root, n=1000, d=12):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = torch.randn(n, d, generator=g) + 2 * torch.nn.functional.one_hot(y, d).float()
    store.write_classes(root, ["a", "b", "c"])
    store.save_split(root, "train", x, y)
    store.save_split(root, "test", x[:150], y[:150])
    return root


def test_data_parallel_on_a_feature_folder_equals_one_process(tmp_path):
    data = folder(tmp_path / "f")
    one_process(*FEATURES_COMMON, "--quiet", "--data-dir", data, "--logdir", tmp_path / "one")
    p = ranks(*FEATURES_COMMON, "--data-dir", data, "--logdir", tmp_path / "two")
    assert p.returncode == 0, p.stdout + p.stderr
    assert_close_runs(tmp_path / "one", tmp_path / "two")
    assert metrics(tmp_path / "one")["test_acc"] == pytest.approx(metrics(tmp_path / "two")["test_acc"], abs=2e-3)
    assert p.stdout.count("done (completed)") == 1, p.stdout
    assert p.stdout.count("epoch 1/2") == 1 and p.stdout.count("features: ") == 1, p.stdout   # no line twice


def test_a_refused_folder_across_ranks_is_one_line_and_no_husk(tmp_path):
    """Rank 0 refuses the folder and says so; rank 1 ends by itself (no launcher tears it down), silent."""
    data = folder(tmp_path / "f")
    store.save_split(data, "test", torch.randn(5, 7), torch.arange(5) % 3)         # D 7 against 12
    p = ranks(*FEATURES_COMMON, "--quiet", "--data-dir", data, "--logdir", tmp_path / "run")
    assert p.returncode != 0
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "D = 7" in errors[0], p.stderr
    assert "lintorch/" not in p.stderr             # no traceback from either rank
    assert not os.path.exists(tmp_path / "run")


def test_extraction_sharded_across_ranks_equals_one_process(image_folder, tmp_path):
    """python -m lintorch.extract on two ranks: rank 0 learns the k-means state, each rank encodes its
    shard, rank 0 writes one feature set, equal to the one-process extraction (run in this process)."""
    import numpy as np

    from lintorch import extract
    args = ["--features", "kmeans", "--centroids", "4", "--patches", "500", "--dataset", "imagefolder",
            "--data-dir", str(image_folder), "--image-size", "16", "--quiet", "--threads", "1", "--device", "cpu"]
    assert extract.main([*args, "--out", str(tmp_path / "one")]) == 0
    two = ranks(*args, "--out", tmp_path / "two", module="lintorch.extract")
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("wrote kmeans features") == 1                     # rank 0 reports, once
    for name in ("train", "test", "train_labels", "test_labels"):
        a, b = np.load(tmp_path / "one" / f"{name}.npy"), np.load(tmp_path / "two" / f"{name}.npy")
        assert a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-5), name
    assert not [n for n in os.listdir(tmp_path / "two") if ".part" in n]       # the shards' files are gone
