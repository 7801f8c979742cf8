"""Faults met by train.py and evaluate as subprocesses: interrupted runs resume exactly, checkpoints
survive SIGKILL, bad files and flags get one-line errors, crafted pickles are refused, an existing
run is never overwritten. The in-process faults: tests/integration/test_reliability.py."""
import json
import signal
import subprocess

import pytest
import torch

from tests.helpers import CodeRunningPickle, image_tree, popen, python, scalar_steps, signal_after

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
    from lintorch.output.checkpoint import load_model
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


def test_lr_far_too_large_is_a_clean_error(tmp_path):
    r = python(*train_cmd(tmp_path, "--epochs", 2, "--lr", 1e30), timeout=300)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "lower --lr" in r.stdout + r.stderr


def test_code_running_pickle_is_refused_by_evaluate(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LINTORCH_PWNED", str(marker))
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lintorch-checkpoint", "payload": CodeRunningPickle()}, evil)
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


def test_unreadable_image_is_named_by_train(tmp_path):
    image_tree(tmp_path)
    bad = tmp_path / "train" / "c1" / "broken.png"
    good = (tmp_path / "train" / "c1" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])                          # a truncated PNG
    r = python("train.py", "--dataset", "imagefolder", "--data-dir", tmp_path, "--image-size", "8", "--val-size", "2",
               "--epochs", "1", "--logdir", tmp_path / "run", timeout=300)
    assert r.returncode == 2 and "broken.png" in r.stderr and "--skip-bad-images" in r.stderr


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
