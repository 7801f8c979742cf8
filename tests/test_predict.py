"""lintorch.predict in this process: its output, errors, and streaming in bounded chunks."""
import json

import pytest
from PIL import Image

from lintorch import predict
from lintorch.predict import classify_image, load_classifier
from tests.conftest import _images
from tests.helpers import FOLDER_COLOURS as COLOURS, assert_one_line_error


def test_predict_streams_in_bounded_chunks_with_the_same_answers(short_kmeans_run, image_folder, batches, monkeypatch,
                                                                 capsys):
    images = _images(image_folder)
    assert predict.main([str(short_kmeans_run), *images, "--json", "--device", "cpu"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert max(batches["encoded"]) == len(images)               # one chunk: every image at once
    batches["encoded"].clear(), batches["classified"].clear()
    monkeypatch.setattr(predict, "CHUNK", 4)
    assert predict.main([str(short_kmeans_run), *images, "--json", "--device", "cpu"]) == 0
    chunked = json.loads(capsys.readouterr().out)
    assert len(images) > 8 and max(batches["encoded"]) == 4 and max(batches["classified"]) == 4
    assert sum(batches["classified"]) == len(images)
    assert [p["label"] for p in chunked["predictions"]] == [p["label"] for p in whole["predictions"]]
    assert [p["image"] for p in chunked["predictions"]] == images


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
    bad.write_text("this is not a picture")        # on the command line: tests/cli/test_evaluate.py
    code = predict.main([str(folder_run), str(tmp_path / "nowhere.jpg")])
    assert_one_line_error(code, capsys.readouterr().err, "nowhere.jpg")
    code = predict.main([str(tmp_path / "no-model.pt"), str(bad)])
    assert_one_line_error(code, capsys.readouterr().err, "no-model.pt")
    with pytest.raises(SystemExit) as e:
        predict.main([str(folder_run), str(bad), "--top-k", "0"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("python -m lintorch.predict: error:")


def test_predict_on_images_equals_evaluate_on_extracted_features(kmeans_run, image_folder, capsys):
    """classify_image on each test JPEG/PNG (extractor + standardization + model) gives the run's
    test accuracy exactly, as evaluate (features extracted in batches) does."""
    from lintorch import evaluate
    from lintorch.predict import classify_image, load_classifier
    model, inputs, saved = load_classifier(kmeans_run, "cpu")
    files = sorted((image_folder / "test").glob("*/*"))
    labels = [classify_image(model, inputs, f, saved.header.classes, saved.header.image_size) for f in files]
    acc = sum(label == f.parent.name for f, label in zip(files, labels)) / len(files)
    capsys.readouterr()
    assert evaluate.main([str(kmeans_run), "--split", "test", "--json", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert acc == report["accuracy"] == json.loads((kmeans_run / "metrics.json").read_text())["test_acc"]
