"""Using a trained model, in this process: lintorch.evaluate reproduces the accuracies training
reported, from the checkpoint alone, and lintorch.predict / classify_image classify image files of
any size and mode exactly as training preprocessed them. The same commands as subprocesses:
tests/cli/test_evaluate_predict_cli.py."""
import json
import shutil

import pytest
from PIL import Image

from lintorch import evaluate, predict
from lintorch.data import load_dataset
from lintorch.predict import classify_image, load_classifier
from tests.helpers import FOLDER_COLOURS as COLOURS, assert_consistent, assert_one_line_error, evaluate_json

# ----------------------------------------------------------------------------- evaluate

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


# ----------------------------------------------------------------------------- predict

def test_predict_text_output(folder_run, image_folder, capsys):
    files = [image_folder / "test" / "blue" / "000.jpg", image_folder / "test" / "red" / "001.png"]
    assert predict.main([str(folder_run), *map(str, files)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "probabilities" in lines[0] and len(lines) == 3
    assert lines[1].startswith(str(files[0])) and " blue " in lines[1] and "%" in lines[1]
    assert lines[2].startswith(str(files[1])) and " red " in lines[2]


def test_classify_image_matches_evaluate(folder_run, image_folder, read_json):
    """The lecture's classify_image over the test files gives training's test accuracy exactly."""
    model, preprocess, saved = load_classifier(folder_run, "cpu")
    classes = saved.header.classes
    files = sorted((image_folder / "test").glob("*/*"))
    labels = [classify_image(model, preprocess, path, classes) for path in files]
    acc = sum(label == path.parent.name for path, label in zip(files, labels)) / len(files)
    assert acc == read_json(folder_run / "metrics.json")["test_acc"]
    with Image.open(files[0]) as im:                                           # a PIL image works too
        assert classify_image(model, preprocess, im, classes) == labels[0]


def test_predict_svm_model_gives_raw_scores(image_folder, tmp_path, train_main, capsys):
    logdir = tmp_path / "svm"
    assert train_main("--dataset", "imagefolder", "--data-dir", image_folder, "--loss", "svm", "--image-size", 16,
                      "--val-size", 12, "--batch-size", 8, "--epochs", 6, "--quiet", "--device", "cpu",
                      "--logdir", logdir) == 0
    capsys.readouterr()
    files = [image_folder / "test" / c / "002.png" for c in COLOURS]
    assert predict.main([str(logdir), *map(str, files), "--top-k", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["values"] == "score" and r["loss"] == "svm"
    for q, c in zip(r["predictions"], COLOURS):
        scores = [t["score"] for t in q["top_k"]]
        assert q["label"] == c and len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert "probability" not in q
    assert predict.main([str(logdir), str(files[0])]) == 0
    assert "raw scores" in capsys.readouterr().out


def test_predict_errors(folder_run, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("this is not a picture")        # on the command line: tests/cli/test_evaluate_predict_cli.py
    code = predict.main([str(folder_run), str(tmp_path / "nowhere.jpg")])
    assert_one_line_error(code, capsys.readouterr().err, "nowhere.jpg")
    code = predict.main([str(tmp_path / "no-model.pt"), str(bad)])
    assert_one_line_error(code, capsys.readouterr().err, "no-model.pt")
    with pytest.raises(SystemExit) as e:
        predict.main([str(folder_run), str(bad), "--top-k", "0"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("python -m lintorch.predict: error:")
