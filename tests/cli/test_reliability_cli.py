"""Faults: interrupted runs resume exactly, checkpoints survive SIGKILL, NaN stops cleanly,
bad files get one-line errors, crafted pickles are refused, caches are never silently reused."""
import json
import os
import signal
import subprocess

import pytest
import torch

from tests.helpers import popen, python, scalar_steps, signal_after, train

# a fixed thread count: CPU results are bit-identical for a given count (--threads auto measures the load)
SMALL = ["--dataset", "synthetic", "--quiet", "--seed", "3", "--val-size", "1000", "--threads", "1"]


def train_cmd(logdir, *extra):
    """train.py's arguments (after `python`) for a small synthetic run in logdir."""
    return ["train.py", *SMALL, "--logdir", logdir, *extra]


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def start_and_signal(cmd, sig, delay):
    """Start `python *cmd`, wait until training has begun (its 'step 0' line), wait `delay`, send sig."""
    return signal_after(popen(*cmd), "step 0", sig, delay, timeout=300)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run: 4 epochs at batch 4 (3000 steps), the baseline for resume."""
    logdir = tmp_path_factory.mktemp("reference")
    r = python(*train_cmd(logdir, "--epochs", 4, "--batch-size", 4), timeout=300)
    assert r.returncode == 0, r.stderr
    return logdir


def test_sigint_then_resume_equals_uninterrupted(reference_run, tmp_path):
    cmd = train_cmd(tmp_path, "--epochs", 4, "--batch-size", 4)
    code, out, err = start_and_signal(cmd, signal.SIGINT, 0.2)
    assert code == 130, err
    assert "interrupted at epoch" in out and "Traceback" not in err
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "interrupted"
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (ckpt["state"]["epoch"], ckpt["state"]["step"]) != (4, 0), "the signal came too late to interrupt anything"

    r = python("train.py", "--resume", tmp_path, "--quiet", timeout=300)
    assert r.returncode == 0, r.stderr
    resumed, reference = weights(tmp_path / "last.pt"), weights(reference_run / "last.pt")
    assert torch.equal(resumed["weight"], reference["weight"])      # exactly, not approximately
    assert torch.equal(resumed["bias"], reference["bias"])
    # one TensorBoard run with no duplicated or missing steps
    assert scalar_steps(tmp_path, "loss/data") == scalar_steps(reference_run, "loss/data")
    assert scalar_steps(tmp_path, "acc/val") == scalar_steps(reference_run, "acc/val")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    ref_metrics = json.loads((reference_run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    for key in ("train_acc", "val_acc", "test_acc", "best_epoch"):
        assert metrics[key] == ref_metrics[key], key


def test_same_seed_gives_identical_metrics(reference_run, tmp_path):
    r = python(*train_cmd(tmp_path, "--epochs", 4, "--batch-size", 4), timeout=300)
    assert r.returncode == 0, r.stderr
    a = json.loads((tmp_path / "metrics.json").read_text())
    b = json.loads((reference_run / "metrics.json").read_text())
    strip = lambda m: {k: v for k, v in m.items() if k not in ("seconds", "images_per_second", "history")}
    assert strip(a) == strip(b)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def test_sigterm_saves_last_and_exits_143(tmp_path):
    code, out, err = start_and_signal(train_cmd(tmp_path, "--epochs", 50, "--batch-size", 8), signal.SIGTERM, 0.3)
    assert code == 143, err
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["format"] == "lintorch-checkpoint" and ckpt["kind"] == "resume"


def test_sigkill_never_leaves_a_corrupt_checkpoint(tmp_path):
    """Kill -9 at varied moments while checkpoints are being written; what is there always loads."""
    from lintorch.checkpoint import load_model
    loaded = 0
    for i, delay in enumerate((0.05, 0.4, 0.9, 1.6)):
        logdir = tmp_path / f"kill{i}"
        p = popen(*train_cmd(logdir, "--epochs", 50, "--batch-size", 512), stderr=subprocess.DEVNULL)
        # checkpoints exist from the first "epoch" line on; now kill while they are rewritten
        signal_after(p, "epoch", signal.SIGKILL, delay, timeout=300)
        for name in ("checkpoint.pt", "last.pt"):
            saved = load_model(str(logdir / name))          # validated: finite weights, consistent fields
            assert torch.isfinite(saved.weight).all()
            loaded += 1
    assert loaded == 8


def test_nonfinite_loss_stops_and_keeps_best(tmp_path, monkeypatch, capsys):
    """The loss turns NaN in epoch 2: stop there, name epoch/step/lr, keep epoch 1's best model."""
    from lintorch import engine
    calls = {"n": 0}
    real = engine.Objective.loss_and_grad

    def poisoned(self, model, x, y):
        calls["n"] += 1
        scores, data, reg, dW, db = real(self, model, x, y)
        if calls["n"] > 20:                                  # 12 steps per epoch at batch 256
            data, dW = data * float("nan"), dW * float("nan")
        return scores, data, reg, dW, db
    monkeypatch.setattr(engine.Objective, "loss_and_grad", poisoned)
    code = train(*SMALL, "--epochs", "3", "--logdir", tmp_path)
    out = capsys.readouterr()
    assert code == 1
    assert "epoch 2, step 9" in out.out and "lr" in out.out
    best = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert best["epoch"] == 1 and torch.isfinite(best["model"]["weight"]).all()
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert torch.isfinite(last["model"]["weight"]).all()
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_lr_far_too_large_is_a_clean_error(tmp_path):
    r = python(*train_cmd(tmp_path, "--epochs", 2, "--lr", 1e30), timeout=300)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "lower --lr" in r.stdout + r.stderr


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('LINTORCH_PWNED', '/tmp/lintorch-pwned')}",))


def test_code_running_pickle_is_refused(tmp_path, monkeypatch):
    from lintorch.checkpoint import CheckpointError, load_model
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LINTORCH_PWNED", str(marker))
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lintorch-checkpoint", "payload": Exploit()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(str(evil))
    r = python("-m", "lintorch.evaluate", evil, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"", "truncated or not a torch checkpoint"),
    (b"PK\x03\x04 garbage", "truncated or not a torch checkpoint"),
])
def test_bad_checkpoint_files(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    r = python("train.py", "--resume", path, timeout=300)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_truncated_and_foreign_checkpoints(reference_run, tmp_path):
    from lintorch.checkpoint import CheckpointError, load_model
    data = (reference_run / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: truncated"):
        load_model(str(tmp_path / "cut.pt"))
    torch.save({"state": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a lintorch checkpoint"):
        load_model(str(tmp_path / "foreign.pt"))


def test_resume_with_other_image_size_is_refused(reference_run, tmp_path):
    import shutil
    shutil.copy(reference_run / "last.pt", tmp_path / "last.pt")
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    ckpt["config"]["image_size"] = 16
    ckpt["state"]["epoch"] = 1                           # unfinished, so there is something to resume
    torch.save(ckpt, tmp_path / "last.pt")
    r = python("train.py", "--resume", tmp_path, timeout=300)
    assert r.returncode == 2 and "trained on 32px images, the data is 16px" in r.stderr


@pytest.mark.parametrize("argv, message", [
    (["--sweep", "lr=abc"], "is not a float"),
    (["--sweep", "momentum=0.1"], "must be NAME=V1,V2"),
    (["--sweep", "lr=0.1", "lr=0.2"], "twice"),
    (["--lr", "-1"], "must be >"),
    (["--lr", "nan"], "not finite"),
    (["--batch-size", "0"], "must be >= 1"),
    (["--epochs", "0"], "must be >= 1"),
    (["--loss", "hinge"], "invalid choice"),
    (["--penalty", "l3"], "invalid choice"),
])
def test_nonsense_hyperparameters_are_usage_errors(argv, message):
    r = python("train.py", "--dataset", "synthetic", *argv, timeout=300)
    assert r.returncode == 2 and "error:" in r.stderr and message in r.stderr and "usage:" not in r.stderr
    assert "Traceback" not in r.stderr


def _image_tree(root, n=4):
    from PIL import Image
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        (root / "train" / f"c{c}").mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), colour).save(root / "train" / f"c{c}" / f"{i}.png")


def test_unreadable_image_is_named_or_skipped(tmp_path):
    from lintorch.data import DataError, load_dataset
    _image_tree(tmp_path)
    bad = tmp_path / "train" / "c1" / "broken.png"
    good = (tmp_path / "train" / "c1" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])                          # a truncated PNG
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2)
    ds = load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2, skip_bad_images=True)
    assert len(ds.train) + len(ds.val) == 8
    r = python("train.py", "--dataset", "imagefolder", "--data-dir", tmp_path, "--image-size", "8", "--val-size", "2",
               "--epochs", "1", "--logdir", tmp_path / "run", timeout=300)
    assert r.returncode == 2 and "broken.png" in r.stderr and "--skip-bad-images" in r.stderr


def test_stale_or_foreign_cache_is_rebuilt(tmp_path, caplog):
    import shutil
    from lintorch.data import load_dataset
    a, b = tmp_path / "a", tmp_path / "b"
    _image_tree(a)
    _image_tree(b)
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
    from lintorch.data import DataError, load_dataset
    _image_tree(tmp_path)
    load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2)
    path = tmp_path / ".lintorch-cache" / "train-8px.pt"
    cache = torch.load(path, weights_only=True)
    x = cache["x"].float()
    x[0, 0, :2, :] = float("nan")                                     # 16 corrupt values
    cache["x"] = x
    torch.save(cache, path)
    with pytest.raises(DataError, match="16 NaN/inf values"):
        load_dataset("imagefolder", str(tmp_path), image_size=8, val_size=2)


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"),
    ("empty", "found no train folder"),
    ("no-classes", "has no class folders"),
    ("no-images", "no image files"),
])
def test_bad_data_dir_is_one_line_exit_2(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout in ("no-classes", "no-images"):
        (root / "train").mkdir()
    if layout == "no-images":
        (root / "train" / "cat").mkdir()
    r = python("train.py", "--dataset", "imagefolder", "--data-dir", root, "--logdir", tmp_path / "run", timeout=300)
    assert r.returncode == 2 and message in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_an_existing_run_is_never_overwritten(reference_run):
    before = (reference_run / "checkpoint.pt").read_bytes()
    r = python(*train_cmd(reference_run, "--epochs", 1), timeout=300)
    # a completed run cannot be resumed, so the refusal does not suggest --resume
    assert r.returncode == 2 and "already holds a run (completed)" in r.stderr and "--resume" not in r.stderr
    assert (reference_run / "checkpoint.pt").read_bytes() == before


def test_cuda_requested_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = python(*train_cmd(tmp_path, "--device", "cuda"), timeout=300)
    assert r.returncode == 2 and "CUDA" in r.stderr and "Traceback" not in r.stderr
