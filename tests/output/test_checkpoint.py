"""lintorch.output.checkpoint: the background saver, what a checkpoint records, and the checkpoints refused
(crafted, truncated, inconsistent)."""
import errno
import json
import os
import random
import time

import pytest
import torch

from lintorch.errors import CheckpointError
from lintorch.output import checkpoint
from tests.conftest import BASE, train_auto_threads
from tests.helpers import CodeRunningPickle, image_tree, one_error_line, read_json, train


def slow_save(monkeypatch, seconds=0.3):
    """checkpoint.save, each write delayed: the Saver's thread is still writing when the error arrives."""
    real = checkpoint.save

    def save(obj, path):
        time.sleep(seconds)
        real(obj, path)
    monkeypatch.setattr(checkpoint, "save", save)


def test_drain_writes_the_queue_and_keeps_the_callers_error(tmp_path, monkeypatch):
    slow_save(monkeypatch)
    saver = checkpoint.Saver()
    for i in range(3):
        saver.save({"i": i}, str(tmp_path / f"{i}.pt"))
    saver.drain()
    assert sorted(os.listdir(tmp_path)) == ["0.pt", "1.pt", "2.pt"]


def test_drain_logs_a_failed_write_instead_of_raising(tmp_path, caplog):
    saver = checkpoint.Saver()
    saver.save({"x": 1}, str(tmp_path / "missing-folder" / "a.pt"))
    saver.drain()                               # the error that stopped training is the one to report
    assert "could not be written" in caplog.text
    saver.save({"x": 1}, str(tmp_path / "b.pt"))
    saver.flush()
    assert os.path.isfile(tmp_path / "b.pt")


def test_flush_still_raises_a_failed_write(tmp_path):
    saver = checkpoint.Saver()
    saver.save({"x": 1}, str(tmp_path / "missing-folder" / "a.pt"))
    with pytest.raises(CheckpointError):
        saver.flush()


@pytest.mark.parametrize("workers", [0, 1])
def test_a_data_error_in_epoch_2_keeps_epoch_1(tmp_path, monkeypatch, capsys, workers):
    """The disk fails once epoch 1's last.pt is queued (--loader dataloader reads the files each
    epoch, in worker processes with --workers): exit 2 with one line naming the file, not the
    worker's traceback, and epoch 1's checkpoints are on disk whole and load."""
    image_tree(tmp_path / "data")
    broken = tmp_path / "disk-failed"
    slow_save(monkeypatch)                      # still writing when the error arrives
    queue = checkpoint.Saver.save

    def save(self, obj, path):
        broken.touch()
        queue(self, obj, path)
    monkeypatch.setattr(checkpoint.Saver, "save", save)
    from lintorch.data import folders
    real_load = folders.load_image

    def load_image(path):
        if broken.exists():
            raise OSError(5, "Input/output error")
        return real_load(path)
    monkeypatch.setattr(folders, "load_image", load_image)
    run = tmp_path / "run"
    status = train("--dataset", "imagefolder", "--data-dir", tmp_path / "data", "--val-size", 2,
                   "--image-size", 8, "--batch-size", 4, "--epochs", 3, "--loader", "dataloader",
                   "--workers", workers, "--quiet", "--device", "cpu", "--logdir", run)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("error: cannot read image ") and "input/output error" in err[0] \
        and "Traceback" not in err[0] and "worker" not in err[0], err
    names = os.listdir(run)
    assert not [n for n in names if ".tmp" in n], names
    assert checkpoint.load_model(str(run / "checkpoint.pt")).epoch == 1
    header, state = checkpoint.load_resume(str(run / "last.pt"))
    assert (state.epoch, state.step) == (1, 0)
    assert read_json(run / "metrics.json")["status"] == "failed"


def test_code_running_pickle_is_refused(tmp_path, monkeypatch):
    from lintorch.output.checkpoint import load_model
    from lintorch.errors import CheckpointError
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LINTORCH_PWNED", str(marker))
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lintorch-checkpoint", "payload": CodeRunningPickle()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(str(evil))
    assert not marker.exists()               # evaluate on the command line: tests/cli/test_train.py


@pytest.mark.slow
def test_truncated_and_foreign_checkpoints(synthetic_run, tmp_path):
    from lintorch.output.checkpoint import load_model
    from lintorch.errors import CheckpointError
    data = (synthetic_run / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: truncated"):
        load_model(str(tmp_path / "cut.pt"))
    torch.save({"state": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a lintorch checkpoint"):
        load_model(str(tmp_path / "foreign.pt"))


def _edit(ckpt, case):
    if case == "image_size":
        ckpt["image_size"] = 64
    elif case == "image_size_str":
        ckpt["image_size"] = "32"
    elif case == "preprocess.mean":
        ckpt["preprocess"]["mean"] = ckpt["preprocess"]["mean"][:100]
    elif case == "num_classes":
        ckpt["classes"] = ckpt["classes"][:5]
    elif case == "model.weight":
        ckpt["model"]["weight"][0, 0] = float("nan")
    return ckpt


@pytest.mark.parametrize("case", ["image_size", "image_size_str", "preprocess.mean", "num_classes", "model.weight"])
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_inconsistent_checkpoints_are_refused_naming_the_field(good_checkpoint, case, command, tmp_path, capsys):
    from lintorch import evaluate, predict
    bad = tmp_path / "bad.pt"
    torch.save(_edit(torch.load(good_checkpoint, weights_only=True), case), bad)
    image = tmp_path / "x.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(image)
    argv = [str(bad), str(image)] if command == "predict" else [str(bad)]
    assert (predict if command == "predict" else evaluate).main(argv + ["--device", "cpu", "--threads", "1"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"'{case.replace('_str', '')}'" in line and str(bad) in line, line


_NOISE = random.Random(0)                                     # seeded: the same cases in every process


@pytest.mark.parametrize("content", [b"just some text\n", _NOISE.randbytes(4096), b"PK\x03\x04" + _NOISE.randbytes(500)],
                         ids=["text", "random", "zip-header-then-random"])
def test_text_and_random_bytes_are_refused_without_unsafe_advice(content, tmp_path, capsys):
    from lintorch import evaluate, predict
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    assert evaluate.main([str(bad), "--device", "cpu", "--threads", "1"]) == 2
    assert predict.main([str(bad), str(bad), "--device", "cpu", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "weights_only=False" not in err and len(err.splitlines()) == 2 and str(bad) in err


# --------------------------------------------------------------------------- a full disk

@pytest.mark.parametrize("name", ["last.pt", "checkpoint.pt"])
def test_disk_full_while_saving_is_one_line_and_keeps_the_old_file(name, tmp_path, monkeypatch, capsys):
    import builtins
    from lintorch.output import atomic
    writes = {"n": 0}

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, key):
            return getattr(self.f, key)

    def full_open(path, mode="r", *a, **k):
        f = builtins.open(path, mode, *a, **k)
        if f"{name}.tmp" in os.path.basename(path) and "w" in mode:
            writes["n"] += 1
            if writes["n"] >= 2:                                   # the first one succeeds
                return Full(f)
        return f
    monkeypatch.setattr(atomic, "open", full_open, raising=False)        # every file write goes through atomic.py
    run = tmp_path / "run"
    assert train_auto_threads(*BASE, "--epochs", 3, "--schedule", "constant", "--val-size", 500, "--logdir", run) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(run / name) in line and "no space left" in line and "MB" in line, line
    assert list(run.rglob("*.tmp*")) == []
    assert torch.load(run / name, weights_only=True)["format"] == "lintorch-checkpoint"
    from lintorch.output.checkpoint import load_model
    load_model(str(run / name))
    metrics = read_json(run / "metrics.json")
    assert metrics["status"] == "failed" and "no space left" in metrics["error"]


def test_checkpoint_records_the_extractor(kmeans_run):
    ckpt = torch.load(kmeans_run / "checkpoint.pt", weights_only=True)
    assert ckpt["in_features"] == 4 * 8 and ckpt["preprocess"]["mode"] == "feature"
    assert ckpt["features"]["name"] == "kmeans" and ckpt["features"]["extractor"]["state"]["centroids"].shape[0] == 8
    assert (kmeans_run / "centroids.png").is_file() and not (kmeans_run / "templates.png").exists()
    m = json.loads((kmeans_run / "metrics.json").read_text())
    assert m["val_acc"] > 0.5 and m["test_acc"] > 0.5       # three colours: chance is 1/3
