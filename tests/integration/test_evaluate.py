"""lintorch.evaluate on the runs and folders that used to crash it: a --features run trained with
--flip (the k-means recipe's default) on its test split, a LinearProbe checkpoint, and a feature
folder whose test split has 0 rows. Each answers, or says in one line why not (exit 2)."""
import torch

from lintorch.evaluate import evaluate_checkpoint, main as evaluate_main
from lintorch.features import store
from tests.helpers import train


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_test_split_of_a_flip_features_run(tmp_path, image_folder):
    run = tmp_path / "run"
    assert train("--dataset", "imagefolder", "--data-dir", image_folder, "--image-size", 16, "--val-size", 12,
                 "--features", "colorhist", "--flip", "--epochs", 2, "--quiet", "--device", "cpu",
                 "--cache-dir", tmp_path / "cache", "--logdir", run) == 0
    r = evaluate_checkpoint(str(run), split="test", cache_dir=str(tmp_path / "cache"))
    assert r["n"] == 15 and 0 <= r["accuracy"] <= 1
    metrics = __import__("json").loads((run / "metrics.json").read_text())
    assert abs(r["accuracy"] - metrics["test_acc"]) < 1e-9          # what training reported for its test split


def feature_folder(root, n_test, fmt="pt", classes=("a", "b", "c")):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=g), torch.arange(30) % 3
    x[:, :3] += 3 * torch.nn.functional.one_hot(y, 3)
    store.write_classes(root, list(classes))
    store.save_split(root, "train", x, y, fmt=fmt)
    store.save_split(root, "test", x[:n_test], y[:n_test], fmt=fmt)
    return root


def test_a_linear_probe_checkpoint(tmp_path, capsys):
    import lintorch
    data = feature_folder(tmp_path / "features", 9, classes=("0", "1", "2"))       # the probe's class names
    train_split = store.FeatureSplit(str(data), "train")
    probe = lintorch.LinearProbe(logdir=str(tmp_path / "probe")).fit(torch.as_tensor(train_split.x), train_split.y)
    assert evaluate_main([str(tmp_path / "probe")]) == 2
    line = one_error_line(capsys)
    assert "LinearProbe" in line and "--dataset features --data-dir" in line and "4 features" in line
    r = evaluate_checkpoint(str(tmp_path / "probe"), dataset="features", data_dir=str(data), split="test")
    test = store.FeatureSplit(str(data), "test")
    assert r["n"] == 9 and abs(r["accuracy"] - probe.score(torch.as_tensor(test.x), test.y)) < 1e-9


def test_an_empty_test_split(tmp_path, capsys):
    for fmt in ("pt", "npy"):
        data = feature_folder(tmp_path / fmt, 0, fmt)
        run = tmp_path / f"run-{fmt}"
        assert train("--dataset", "features", "--data-dir", data, "--val-size", 6, "--epochs", 1, "--quiet",
                     "--device", "cpu", "--logdir", run) == 0
        capsys.readouterr()
        assert evaluate_main([str(run), "--split", "test"]) == 2
        line = one_error_line(capsys)
        assert "test split" in line and "empty" in line and "--split val" in line
