"""lintorch.output.progress: lines for a stream that is not a terminal, quiet for a quick job."""
import io

from lintorch import evaluate, predict
from lintorch.output import progress
from tests.conftest import _images


def test_progress_lines_reach_a_stream_that_is_not_a_terminal(short_kmeans_run, image_folder, monkeypatch, capsys):
    monkeypatch.setattr(progress, "AFTER", 0.0)
    monkeypatch.setattr(progress, "EVERY", 4)
    monkeypatch.setattr(predict, "CHUNK", 4)
    images = _images(image_folder)
    assert predict.main([str(short_kmeans_run), *images, "--device", "cpu"]) == 0
    err = capsys.readouterr().err                                # capsys's stderr is no terminal
    lines = [line for line in err.splitlines() if line.startswith("predict:")]
    assert [line.split()[1] for line in lines] == ["4/15", "8/15", "12/15", "15/15"]
    assert "\r" not in err and "%" in lines[0]
    monkeypatch.setattr("lintorch.training.recipe.EVAL_BATCH", 4)
    assert evaluate.main([str(short_kmeans_run), "--split", "test", "--threads", "1"]) == 0
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
