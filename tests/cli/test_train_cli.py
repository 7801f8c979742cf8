"""train.py as a subprocess: bad input on the real command line exits 2 without a traceback, and
its defaults reach 35% on the real CIFAR-10 JPEGs in 5 epochs (the shared data beside the checkout)."""
import pytest


def test_bad_input_on_the_real_command_line(tmp_path, run_cli):
    p = run_cli("train.py", "--dataset", "synthetic", "--lr", "0")
    assert p.returncode == 2 and p.stderr.startswith("train.py: error:") and "Traceback" not in p.stderr
    p = run_cli("train.py", "--dataset", "imagefolder", "--data-dir", tmp_path / "nowhere", "--quiet")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith("error:") and len(p.stderr.strip().splitlines()) == 1, p.stderr


# ----------------------------------------------------------------------------- real data

@pytest.mark.slow                                           # slow anyway as a CLI test; real data always is
def test_real_cifar10_jpgs_reach_35_percent_in_5_epochs(cifar10_jpg, tmp_path, run_cli, read_json):
    """train.py with its defaults on the 50,000 shared CIFAR-10 training JPEGs (val 5,000 of them)."""
    logdir = tmp_path / "run"
    p = run_cli("train.py", "--dataset", "imagefolder", "--data-dir", cifar10_jpg, "--epochs", 5, "--quiet",
                "--logdir", logdir, timeout=1800)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    m = read_json(logdir / "metrics.json")
    assert m["val_acc"] >= 0.35, m
    assert m["test_acc"] is None  # the shared copy has no test split
    # evaluate reproduces the validation accuracy from the checkpoint alone (the split is re-carved)
    from lintorch.evaluate import evaluate_checkpoint
    r = evaluate_checkpoint(str(logdir), device="cpu")
    assert r["split"] == "val" and r["n"] == 5000 and r["accuracy"] == m["val_acc"]
