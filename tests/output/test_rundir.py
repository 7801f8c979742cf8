"""lintorch.output.rundir: run folders claimed, locked, released and never left half-made."""
import os
import re
import warnings

import pytest

from tests.conftest import BASE, stop_after, train_auto_threads
from tests.helpers import one_error_line

PX8 = ["--image-size", 8]      # the refusals and the PNG do not need 32 px


# --------------------------------------------------------------------------- run folders

def test_default_folders_in_the_same_second_differ(tmp_path, monkeypatch):
    from lintorch.output import rundir
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt, *a: "20250101-000000")
    (a, fa, _), (b, fb, _) = rundir.claim_default("synthetic", "softmax"), rundir.claim_default("synthetic", "softmax")
    os.close(fa), os.close(fb)
    assert a != b and os.path.isdir(a) and os.path.isdir(b)
    assert os.path.isfile(os.path.join(a, "config.json")) and os.path.isfile(os.path.join(b, "config.json"))


def test_a_user_error_before_training_leaves_no_run_folder(image_folder, tmp_path, monkeypatch, capsys):
    from lintorch.data import sources
    monkeypatch.setattr(sources, "available_memory", lambda: 10 ** 6)
    run = tmp_path / "run"
    assert train_auto_threads("--dataset", "imagefolder", "--data-dir", image_folder, "--image-size", 512, "--quiet",
                 "--threads", 1, "--device", "cpu", "--logdir", run) == 2
    assert "memory" in one_error_line(capsys.readouterr().err)
    assert not run.exists()
    monkeypatch.chdir(tmp_path)                                   # the default folder is removed too
    assert train_auto_threads("--dataset", "imagefolder", "--data-dir", tmp_path / "nowhere", "--quiet", "--threads", 1,
                 "--device", "cpu") == 2
    one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_an_empty_logdir_given_stays_but_holds_nothing(tmp_path, capsys):
    run = tmp_path / "empty"
    run.mkdir()
    assert train_auto_threads("--dataset", "imagefolder", "--data-dir", tmp_path / "nowhere", "--quiet", "--threads", 1,
                 "--device", "cpu", "--logdir", run) == 2
    one_error_line(capsys.readouterr().err)
    assert run.is_dir() and list(run.iterdir()) == []


# --------------------------------------------------------------------------- existing folders

def test_refusal_suggests_resume_only_for_an_interrupted_run(constant_run, tmp_path, monkeypatch, capsys):
    capsys.readouterr()
    assert train_auto_threads(*BASE, *PX8, "--logdir", constant_run) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--resume" not in line and "--logdir" in line
    cut = tmp_path / "cut"
    stop_after(monkeypatch, 3)
    assert train_auto_threads(*BASE, *PX8, "--val-size", 500, "--logdir", cut) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert train_auto_threads(*BASE, *PX8, "--logdir", cut) == 2
    assert f"--resume {cut}" in one_error_line(capsys.readouterr().err)


def test_no_deprecation_warning_from_png_writing(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_auto_threads(*BASE, *PX8, "--val-size", 500, "--logdir", tmp_path / "run") == 0
    # torchvision 0.29's write_png/encode_png warn "image decoding and encoding ... are deprecated"
    bad = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)
           and ("torchvision" in str(w.filename) or re.search("png|encod", str(w.message), re.I))]
    assert bad == []
    assert (tmp_path / "run" / "templates.png").is_file()


def test_a_released_folder_keeps_no_lock_and_the_lock_still_excludes(tmp_path, monkeypatch):
    import os

    from lintorch.output import rundir
    from lintorch.errors import UserError
    folder = str(tmp_path)
    fd = rundir.claim_existing(folder)
    with pytest.raises(UserError, match="in use"):
        rundir.claim_existing(folder)                     # one process per folder, as before
    rundir.release(folder, fd)
    assert not os.path.exists(os.path.join(folder, rundir.LOCK))
    # a process that opened .lock just before its holder removed it locks a dead file: it must
    # notice and take the file that is there now, or two processes would both hold "the" lock
    real, calls = rundir.fcntl.flock, []

    def flock(f, op):
        if not calls:
            os.remove(os.path.join(folder, rundir.LOCK))      # the holder let go between our open and flock
        calls.append(f)
        return real(f, op)
    monkeypatch.setattr(rundir.fcntl, "flock", flock)
    fd = rundir.claim_existing(folder)
    monkeypatch.setattr(rundir.fcntl, "flock", real)
    assert len(calls) == 2 and os.path.samestat(os.fstat(fd), os.stat(os.path.join(folder, rundir.LOCK)))
    with pytest.raises(UserError, match="in use"):
        rundir.claim_existing(folder)
    rundir.release(folder, fd)


def test_finished_run_folder_has_no_lock(synthetic_run):
    assert not (synthetic_run / ".lock").exists()
