"""output/checkpoint.py's background Saver and what a run keeps when training stops on an error:
the finished epochs' checkpoint.pt and last.pt are written whole and load, no .tmpPID file stays,
metrics.json says the run failed, and the command answers in one line."""
import os
import time

import pytest

from lintorch.errors import CheckpointError
from lintorch.output import checkpoint
from tests.helpers import image_tree, read_json, train


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
