"""lintorch.evaluate in this process: it reproduces training's accuracies, and answers odd runs and folders in one
line."""
import json
import re
import shutil

import pytest
import torch

from lintorch import evaluate
from lintorch.config import parse_args
from lintorch.data import load_dataset
from lintorch.evaluate import evaluate_checkpoint, main as evaluate_main
from lintorch.features import from_state_dict, store
from tests.conftest import BASE, FEATURES_ARGS, KMEANS, RUN, features_of_width, train_auto_threads
from tests.helpers import FOLDER_COLOURS as COLOURS, assert_consistent, assert_one_line_error, evaluate_json, train


# ----------------------------------------------------------------------------- evaluate

@pytest.mark.slow
def test_evaluate_reproduces_the_training_metrics(synthetic_run, read_json, capsys):
    m = read_json(synthetic_run / "metrics.json")
    val = evaluate_json(capsys, synthetic_run)                      # default: the split it was validated on
    assert val["split"] == "val" and val["n"] == 800 and val["accuracy"] == m["val_acc"]
    test = evaluate_json(capsys, synthetic_run / "checkpoint.pt", "--split", "test")
    assert test["split"] == "test" and test["accuracy"] == m["test_acc"]
    classes = [f"class{i}" for i in range(10)]
    assert_consistent(val, classes)
    assert_consistent(test, classes)
    train = evaluate_json(capsys, synthetic_run, "--split", "train")
    assert train["n"] == len(load_dataset("synthetic", val_size=800, seed=0).train) and train["accuracy"] > 0.5


def test_evaluate_text_report(folder_run, capsys):
    assert evaluate.main([str(folder_run), "--split", "test", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "per-class accuracy" in out and "confusion matrix" in out
    assert all(c in out for c in COLOURS)


def test_evaluate_cifar10_run(cifar10_root, tmp_path, train_main, read_json, capsys):
    """The CIFAR-10 format end to end, in this process (the md5 patch does not reach a subprocess)."""
    logdir = tmp_path / "run"
    assert train_main("--dataset", "cifar10", "--data-dir", cifar10_root, "--val-size", 20, "--batch-size", 16,
                      "--epochs", 3, "--seed", 2, "--quiet", "--device", "cpu", "--logdir", logdir) == 0
    capsys.readouterr()                                             # training's summary lines
    m = read_json(logdir / "metrics.json")
    val, test = evaluate_json(capsys, logdir), evaluate_json(capsys, logdir, "--split", "test")
    assert (val["n"], test["n"]) == (20, 20)
    assert val["accuracy"] == m["val_acc"] and test["accuracy"] == m["test_acc"]
    assert val["classes"][0] == "airplane"


@pytest.mark.slow
def test_evaluate_errors(folder_run, image_folder, tmp_path, capsys):
    train_only = tmp_path / "train-only"
    shutil.copytree(image_folder / "train", train_only / "train")
    code = evaluate.main([str(folder_run), "--data-dir", str(train_only), "--split", "test"])
    assert_one_line_error(code, capsys.readouterr().err, "the data set has no test split")

    code = evaluate.main([str(tmp_path / "missing.pt")])
    assert_one_line_error(code, capsys.readouterr().err, "missing.pt")

    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    code = evaluate.main([str(tmp_path / "garbage.pt")])
    assert_one_line_error(code, capsys.readouterr().err, "garbage.pt")

    code = evaluate.main([str(tmp_path)])                           # a folder without checkpoint.pt
    assert_one_line_error(code, capsys.readouterr().err, "no checkpoint.pt")

    code = evaluate.main([str(folder_run), "--dataset", "synthetic", "--device", "cpu"])
    assert_one_line_error(code, capsys.readouterr().err, "3 classes")

    renamed = tmp_path / "renamed"
    for old, new in zip(COLOURS, ("cyan", "magenta", "yellow")):
        shutil.copytree(image_folder / "train" / old, renamed / "train" / new)
    code = evaluate.main([str(folder_run), "--data-dir", str(renamed), "--device", "cpu"])
    assert_one_line_error(code, capsys.readouterr().err, "class folders differ", "blue->cyan")

    with pytest.raises(SystemExit) as e:
        evaluate.main([str(folder_run), "--split", "holdout"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("python -m lintorch.evaluate: error:")


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


def test_evaluate_test_split_decodes_no_training_image(folder_run, tmp_path, monkeypatch):
    from lintorch import evaluate
    from lintorch.data import imagecache
    decoded = []
    real = imagecache.decode

    def spy(files, *args, **kwargs):
        decoded.extend(files)
        return real(files, *args, **kwargs)
    monkeypatch.setattr(imagecache, "decode", spy)
    r = evaluate.evaluate_checkpoint(str(folder_run), split="test", cache_dir=str(tmp_path / "fresh"))
    assert r["n"] == 15 and decoded and all("/test/" in f for f in decoded)
    decoded.clear()
    assert evaluate.evaluate_checkpoint(str(folder_run), split="val", cache_dir=str(tmp_path / "fresh"))["n"] == 12
    assert any("/train/" in f for f in decoded)


@pytest.fixture(scope="module")
def cuda_sweep(tmp_path_factory):
    """A two-member sweep trained on emulated CUDA -> its run folder."""
    from tests.conftest import REAL_CUDA
    if REAL_CUDA:
        pytest.skip("a real GPU is here; emulation is for CPU-only machines")
    from tests.emulated_cuda import emulated_cuda
    run = tmp_path_factory.mktemp("cuda") / "sweep"
    with emulated_cuda():
        assert train_auto_threads(*RUN, "--sweep", "lr=0.001,0.01", "--logdir", run) == 0
    return run


def test_a_sweep_evaluate_and_predict_on_cuda(emulated, cuda_sweep, tmp_path, capsys):
    from PIL import Image
    from lintorch import evaluate, predict
    picture = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(picture)
    capsys.readouterr()
    with emulated():
        assert evaluate.main([str(cuda_sweep), "--device", "cuda", "--threads", "1"]) == 0
        assert predict.main([str(cuda_sweep), str(picture), "--device", "cuda", "--json"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out.lower()
    assert json.loads(out[out.index("{"):])


def test_evaluate_on_a_folder_of_another_width_is_one_line(tmp_path, capsys):
    logdir = tmp_path / "run"
    assert train(*FEATURES_ARGS, "--data-dir", features_of_width(tmp_path / "f8"), "--logdir", logdir) == 0
    other = features_of_width(tmp_path / "f5", d=5)
    capsys.readouterr()
    code = evaluate.main([str(logdir), "--data-dir", str(other), "--threads", "1"])
    assert_one_line_error(code, capsys.readouterr().err, "D = 8", "5")


def test_flip_eval_averages_each_evaluated_image_with_its_mirror_everywhere(image_folder, tmp_path, capsys):
    """--flip-eval: validation and test features are the mean of each image's and its mirror's
    encodings (mirrors cached apart); the run's val and test accuracy, evaluate and predict agree on it,
    and they differ from plain encodings; pixels and feature folders refuse it in one line."""
    from lintorch import evaluate
    from lintorch.data import load_dataset
    from lintorch.predict import load_classifier
    cache, logdir = tmp_path / "cache", tmp_path / "run"
    assert train("--dataset", "imagefolder", "--image-size", "16", "--val-size", "12", "--quiet", "--threads", "1",
                 "--data-dir", str(image_folder), *KMEANS, "--flip-eval", "--loss", "squared", "--optimizer", "exact",
                 "--cache-dir", str(cache), "--logdir", str(logdir)) == 0
    assert len(list(cache.glob("features-val-mirror-*.pt"))) == 1 and len(list(cache.glob("features-test-mirror-*.pt"))) == 1
    assert not list(cache.glob("features-train-mirror-*.pt"))
    model, inputs, saved = load_classifier(logdir, "cpu")
    ex = from_state_dict(saved.header.features["extractor"])
    data = load_dataset("imagefolder", str(image_folder), 16, 12, 0, str(tmp_path / "images"))
    x = data.test.x
    both = (ex.transform(x) + ex.transform(x.flip(-1))) / 2
    assert torch.allclose(inputs(x), inputs.preprocess(both), atol=1e-5)
    assert not torch.allclose(inputs(x), inputs.preprocess(ex.transform(x)), atol=1e-3)     # the mirror counts
    m = json.loads((logdir / "metrics.json").read_text())
    with torch.inference_mode():
        pred = model(inputs(x)).argmax(1)
    assert m["test_acc"] == pytest.approx(float((pred == data.test.y).double().mean()))
    for split in ("val", "test"):
        capsys.readouterr()
        assert evaluate.main([str(logdir), "--split", split, "--json", "--threads", "1"]) == 0
        assert json.loads(capsys.readouterr().out)["accuracy"] == m[f"{split}_acc"]
    for argv in (["--flip-eval"], ["--dataset", "features", "--flip-eval"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
        err = capsys.readouterr().err
        assert "--flip-eval" in err and len(err.strip().splitlines()) == 1


def test_evaluate_names_the_sweep_configuration(tmp_path, capsys):
    from lintorch import evaluate
    run = tmp_path / "sweep"
    assert train_auto_threads(*BASE, "--image-size", 8, "--val-size", 500, "--sweep", "lr=0.003,0.03", "--logdir", run) == 0
    capsys.readouterr()
    assert evaluate.main([str(run), "--device", "cpu", "--threads", "1"]) == 0
    assert re.search(r"sweep configuration lr=0\.0?03", capsys.readouterr().out)


def test_evaluate_encodes_only_the_split_asked_for_in_bounded_batches(short_kmeans_run, batches, monkeypatch, capsys):
    assert evaluate.main([str(short_kmeans_run), "--split", "test", "--json", "--threads", "1"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert sum(batches["encoded"]) == whole["n"] == 15           # the test split alone, not the training images
    batches["encoded"].clear(), batches["classified"].clear()
    monkeypatch.setattr("lintorch.training.recipe.EVAL_BATCH", 4)
    assert evaluate.main([str(short_kmeans_run), "--split", "test", "--json", "--threads", "1"]) == 0
    chunked = json.loads(capsys.readouterr().out)
    assert max(batches["encoded"]) == 4 and max(batches["classified"]) == 4 and sum(batches["encoded"]) == 15
    assert chunked["confusion"] == whole["confusion"]
