"""Faults, in this process: NaN stops cleanly and keeps the best model, crafted pickles are refused,
truncated and foreign checkpoints are named, unreadable images are named or skipped, caches are
never silently reused. The same faults met on the command line (signals, resume, one-line errors):
tests/cli/test_reliability_cli.py."""
import json
import os

import pytest
import torch

from tests.helpers import CodeRunningPickle, image_tree, train

# a fixed thread count: CPU results are bit-identical for a given count (--threads auto measures the load)
SMALL = ["--dataset", "synthetic", "--quiet", "--seed", "3", "--val-size", "1000", "--threads", "1"]


def test_nonfinite_loss_stops_and_keeps_best(tmp_path, monkeypatch, capsys):
    """The loss turns NaN in epoch 2: stop there, name epoch/step/lr, keep epoch 1's best model."""
    from lintorch.objective import Objective
    calls = {"n": 0}
    real = Objective.loss_and_grad

    def poisoned(self, x, weight, bias, y):
        calls["n"] += 1
        scores, data, reg, dW, db = real(self, x, weight, bias, y)
        if calls["n"] > 20:                                  # 12 steps per epoch at batch 256
            data, dW = data * float("nan"), dW * float("nan")
        return scores, data, reg, dW, db
    monkeypatch.setattr(Objective, "loss_and_grad", poisoned)
    code = train(*SMALL, "--epochs", "3", "--logdir", tmp_path)
    out = capsys.readouterr()
    assert code == 1
    assert "epoch 2, step 9" in out.out and "lr" in out.out
    best = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert best["epoch"] == 1 and torch.isfinite(best["model"]["weight"]).all()
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert torch.isfinite(last["model"]["weight"]).all()
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_code_running_pickle_is_refused(tmp_path, monkeypatch):
    from lintorch.output.checkpoint import load_model
    from lintorch.errors import CheckpointError
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LINTORCH_PWNED", str(marker))
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lintorch-checkpoint", "payload": CodeRunningPickle()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(str(evil))
    assert not marker.exists()               # evaluate on the command line: tests/cli/test_reliability_cli.py


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


def test_unreadable_image_is_named_or_skipped(tmp_path):
    from lintorch.data import load_dataset
    from lintorch.errors import DataError
    image_tree(tmp_path)
    bad = tmp_path / "train" / "c1" / "broken.png"
    good = (tmp_path / "train" / "c1" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])                          # a truncated PNG
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2)
    ds = load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2, skip_bad_images=True)
    assert len(ds.train) + len(ds.val) == 8


def test_stale_or_foreign_cache_is_rebuilt(tmp_path, caplog):
    import shutil
    from lintorch.data import load_dataset
    a, b = tmp_path / "a", tmp_path / "b"
    image_tree(a)
    image_tree(b)
    from PIL import Image
    Image.new("RGB", (8, 8), (0, 0, 255)).save(b / "train" / "c0" / "0.png")   # b differs from a
    ds_a = load_dataset("imagefolder", str(a), image_size=8, val_size=2)
    (b / ".lintorch-cache").mkdir()
    shutil.copy(a / ".lintorch-cache" / "train-8px.pt", b / ".lintorch-cache" / "train-8px.pt")
    os.utime(b / ".lintorch-cache" / "train-8px.pt")
    with caplog.at_level("INFO", logger="lintorch.data"):
        ds_b = load_dataset("imagefolder", str(b), image_size=8, val_size=2)
    assert "stale" in caplog.text
    blue = torch.tensor([0, 0, 255], dtype=torch.uint8)
    all_b = torch.cat([ds_b.train.x, ds_b.val.x])
    assert (all_b[:, :, 0, 0] == blue).all(1).any()                  # b's own pixels, not a's cache
    assert not (torch.cat([ds_a.train.x, ds_a.val.x])[:, :, 0, 0] == blue).all(1).any()
    cache = torch.load(a / ".lintorch-cache" / "train-8px.pt", weights_only=True)
    cache["version"] = 1                                              # an older lintorch's cache
    torch.save(cache, a / ".lintorch-cache" / "train-8px.pt")
    caplog.clear()
    with caplog.at_level("INFO", logger="lintorch.data"):
        load_dataset("imagefolder", str(a), image_size=8, val_size=2)
    assert "stale" in caplog.text


def test_nan_in_cached_data_is_reported(tmp_path):
    from lintorch.data import load_dataset
    from lintorch.errors import DataError
    image_tree(tmp_path)
    load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2)
    path = tmp_path / ".lintorch-cache" / "train-8px.pt"
    cache = torch.load(path, weights_only=True)
    x = cache["x"].float()
    x[0, 0, :2, :] = float("nan")                                     # 16 corrupt values
    cache["x"] = x
    torch.save(cache, path)
    with pytest.raises(DataError, match="16 NaN/inf values"):
        load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2)
