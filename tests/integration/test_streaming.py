"""predict and evaluate stream (issue 29.1): images are decoded, encoded and classified in bounded
batches whatever their number, and progress reaches a log file (a stream that is not a terminal)."""
import io
import json

import pytest

from lintorch import evaluate, predict
from lintorch.features.kmeans import KMeansFeatures
from lintorch.model import LinearClassifier
from lintorch.output import progress
from tests.helpers import train

FOLDER = ["--dataset", "imagefolder", "--image-size", "16", "--val-size", "12", "--batch-size", "8", "--epochs", "2",
          "--quiet", "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def kmeans_run(image_folder, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("streaming") / "kmeans"
    assert train(*FOLDER, "--data-dir", str(image_folder), "--features", "kmeans", "--centroids", "8",
                 "--patches", "2000", "--logdir", str(logdir)) == 0
    return logdir


@pytest.fixture
def batches(monkeypatch):
    """Records the number of images of every batch the extractor encodes and of every batch the model classifies."""
    seen = {"encoded": [], "classified": []}
    transform, forward = KMeansFeatures.transform, LinearClassifier.forward

    def recording_transform(self, x):
        seen["encoded"].append(x.shape[0])
        return transform(self, x)

    def recording_forward(self, x):
        seen["classified"].append(x.shape[0])
        return forward(self, x)
    monkeypatch.setattr(KMeansFeatures, "transform", recording_transform)
    monkeypatch.setattr(LinearClassifier, "forward", recording_forward)
    return seen


def _images(image_folder):
    return sorted(str(p) for p in (image_folder / "test").rglob("*.*"))


def test_predict_streams_in_bounded_chunks_with_the_same_answers(kmeans_run, image_folder, batches, monkeypatch,
                                                                 capsys):
    images = _images(image_folder)
    assert predict.main([str(kmeans_run), *images, "--json", "--device", "cpu"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert max(batches["encoded"]) == len(images)               # one chunk: every image at once
    batches["encoded"].clear(), batches["classified"].clear()
    monkeypatch.setattr(predict, "CHUNK", 4)
    assert predict.main([str(kmeans_run), *images, "--json", "--device", "cpu"]) == 0
    chunked = json.loads(capsys.readouterr().out)
    assert len(images) > 8 and max(batches["encoded"]) == 4 and max(batches["classified"]) == 4
    assert sum(batches["classified"]) == len(images)
    assert [p["label"] for p in chunked["predictions"]] == [p["label"] for p in whole["predictions"]]
    assert [p["image"] for p in chunked["predictions"]] == images


def test_evaluate_encodes_only_the_split_asked_for_in_bounded_batches(kmeans_run, batches, monkeypatch, capsys):
    assert evaluate.main([str(kmeans_run), "--split", "test", "--json", "--threads", "1"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert sum(batches["encoded"]) == whole["n"] == 15           # the test split alone, not the training images
    batches["encoded"].clear(), batches["classified"].clear()
    monkeypatch.setattr("lintorch.training.recipe.EVAL_BATCH", 4)
    assert evaluate.main([str(kmeans_run), "--split", "test", "--json", "--threads", "1"]) == 0
    chunked = json.loads(capsys.readouterr().out)
    assert max(batches["encoded"]) == 4 and max(batches["classified"]) == 4 and sum(batches["encoded"]) == 15
    assert chunked["confusion"] == whole["confusion"]


def test_progress_lines_reach_a_stream_that_is_not_a_terminal(kmeans_run, image_folder, monkeypatch, capsys):
    monkeypatch.setattr(progress, "AFTER", 0.0)
    monkeypatch.setattr(progress, "EVERY", 4)
    monkeypatch.setattr(predict, "CHUNK", 4)
    images = _images(image_folder)
    assert predict.main([str(kmeans_run), *images, "--device", "cpu"]) == 0
    err = capsys.readouterr().err                                # capsys's stderr is no terminal
    lines = [line for line in err.splitlines() if line.startswith("predict:")]
    assert [line.split()[1] for line in lines] == ["4/15", "8/15", "12/15", "15/15"]
    assert "\r" not in err and "%" in lines[0]
    monkeypatch.setattr("lintorch.training.recipe.EVAL_BATCH", 4)
    assert evaluate.main([str(kmeans_run), "--split", "test", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("evaluate (test, kmeans):")]
    assert lines and "15/15 images (100%)" in lines[-1]


def test_progress_is_quiet_for_a_quick_job_and_a_bar_on_a_terminal(monkeypatch):
    log = io.StringIO()
    with progress.Progress(10, "quick", stream=log) as bar:
        bar.update(10)
    assert log.getvalue() == ""                                  # done within AFTER seconds

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    tty = Terminal()
    with progress.Progress(10, "bar", stream=tty) as bar:
        bar.update(10)
    assert "bar" in tty.getvalue() and "\r" in tty.getvalue()   # tqdm's bar
