"""The run layer under hostile use (issue 12, round two, and issue 8's bugs): run folders, resumes
that cannot be honoured, interrupted sweeps, damaged checkpoints, a full disk, absurd
hyperparameters, divergence, one-line usage errors everywhere.

Every run here is in-process (lintorch.training.run.main on parsed arguments: fast, and monkeypatches hold).
Where a signal or the real command line is the point: tests/cli/test_hostile_cli.py.
"""
import errno
import functools
import json
import os
import re
import signal
import warnings

import pytest
import torch

from tests import helpers
from tests.helpers import events, one_error_line, read_json

# one thread: CPU results are bit-identical for a given thread count
BASE = ["--dataset", "synthetic", "--epochs", 1, "--quiet", "--threads", 1, "--device", "cpu"]
# train.py's exit status for argv, run in this process, exactly as given (no --threads added)
train = functools.partial(helpers.train, threads=None)


def usage_error(parse, argv, capsys):
    """parse(argv) must be a usage error: exit 2, one line pointing at --help -> the line."""
    with pytest.raises(SystemExit) as e:
        parse([str(a) for a in argv])
    assert e.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--help" in line, line
    return line


def stop_after(monkeypatch, polls):
    """Make the run's stop flag fire (as SIGINT would) at its `polls`-th poll, in this process."""
    from lintorch.training import run
    count = {"n": 0}

    def fake(self):
        count["n"] += 1
        if count["n"] >= polls and self.signum is None:
            self.signum = signal.SIGINT
        return self.signum is not None
    monkeypatch.setattr(run.StopFlag, "__call__", fake)


def copy_tree(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- 12.1 run folders

def test_default_folders_in_the_same_second_differ(tmp_path, monkeypatch):
    from lintorch.output import rundir
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt, *a: "20250101-000000")
    (a, fa, _), (b, fb, _) = rundir.claim_default("synthetic", "softmax"), rundir.claim_default("synthetic", "softmax")
    os.close(fa), os.close(fb)
    assert a != b and os.path.isdir(a) and os.path.isdir(b)
    assert os.path.isfile(os.path.join(a, "config.json")) and os.path.isfile(os.path.join(b, "config.json"))


# --------------------------------------------------------------------------- 12.2 resume rules

def test_resume_after_a_class_folder_was_renamed_is_refused(image_folder, tmp_path, capsys):
    data = copy_tree(image_folder, tmp_path / "data")
    run = tmp_path / "run"
    args = ["--dataset", "imagefolder", "--data-dir", data, "--image-size", 8, "--val-size", 9, "--batch-size", 8,
            "--schedule", "constant", "--epochs", 1, "--quiet", "--threads", 1, "--device", "cpu"]
    assert train(*args, "--logdir", run) == 0
    os.rename(data / "train" / "blue", data / "train" / "zz_blue")
    capsys.readouterr()
    before = (run / "last.pt").read_bytes()
    assert train("--resume", run, "--epochs", 2) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "blue" in line and "class" in line
    assert (run / "last.pt").read_bytes() == before


@pytest.fixture(scope="module")
def constant_run(tmp_path_factory):
    """A finished 1-epoch run with a constant schedule (it can be extended)."""
    run = tmp_path_factory.mktemp("constant") / "run"
    assert train(*BASE, "--schedule", "constant", "--val-size", 500, "--logdir", run) == 0
    return run


@pytest.mark.parametrize("flag, value", [("--lr", 0.1), ("--loss", "svm"), ("--reg", 0.5), ("--batch-size", 64),
                                         ("--seed", 9), ("--schedule", "cosine")])
def test_resume_refuses_changed_flags_naming_them(constant_run, flag, value, capsys):
    capsys.readouterr()
    assert train("--resume", constant_run, "--epochs", 2, flag, value) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {flag} ")


def test_resume_accepts_what_it_may_change(constant_run, tmp_path, capsys):
    run = copy_tree(constant_run, tmp_path / "run")
    assert train("--resume", run, "--epochs", 2, "--device", "cpu", "--threads", 1, "--quiet",
                 "--log-every", 7) == 0
    metrics = read_json(run / "metrics.json")
    assert metrics["status"] == "completed" and metrics["epochs"] == 2


def test_resume_empty_path_is_a_usage_error(capsys):
    from lintorch.config import parse_args
    usage_error(parse_args, ["--resume", ""], capsys)


# --------------------------------------------------------------------------- 12.3 nothing to resume

def test_resuming_a_finished_run_changes_nothing(constant_run, capsys):
    files = {p.name: p.read_bytes() for p in constant_run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert train("--resume", constant_run) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in constant_run.iterdir() if p.is_file()} == files


# --------------------------------------------------------------------------- 12.4 sweeps

def test_sweep_values_that_differ_get_distinct_folders(tmp_path):
    run = tmp_path / "sweep"
    assert train(*BASE, "--val-size", 500, "--sweep", "lr=0.03,0.0300000001", "--logdir", run) == 0
    members = sorted(p.name for p in run.iterdir() if p.is_dir())
    assert len(members) == 2 and members[0] != members[1], members
    assert len(read_json(run / "metrics.json")["configs"]) == 2


@pytest.mark.parametrize("item", ["lr=1e-3,1e-3", "lr=1e-3,0.001", "reg=0,0.0"])
def test_sweep_listing_a_value_twice_is_a_usage_error(item, capsys):
    from lintorch.config import parse_args
    assert "twice" in usage_error(parse_args, ["--sweep", item], capsys)


# --------------------------------------------------------------------------- 12.8 before anything is created

@pytest.mark.parametrize("argv, flag", [(["--lr", "1e39"], "--lr"), (["--seed", "200000000000000"], "--seed"),
                                        (["--image-size", "2000"], "--image-size"), (["--logdir", ""], "--logdir")])
def test_out_of_range_numbers_are_usage_errors_creating_nothing(argv, flag, tmp_path, monkeypatch, capsys):
    from lintorch.config import parse_args
    monkeypatch.chdir(tmp_path)
    assert flag in usage_error(parse_args, [*BASE, *argv], capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_user_error_before_training_leaves_no_run_folder(image_folder, tmp_path, monkeypatch, capsys):
    from lintorch.data import sources
    monkeypatch.setattr(sources, "available_memory", lambda: 10 ** 6)
    run = tmp_path / "run"
    assert train("--dataset", "imagefolder", "--data-dir", image_folder, "--image-size", 512, "--quiet",
                 "--threads", 1, "--device", "cpu", "--logdir", run) == 2
    assert "memory" in one_error_line(capsys.readouterr().err)
    assert not run.exists()
    monkeypatch.chdir(tmp_path)                                   # the default folder is removed too
    assert train("--dataset", "imagefolder", "--data-dir", tmp_path / "nowhere", "--quiet", "--threads", 1,
                 "--device", "cpu") == 2
    one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_an_empty_logdir_given_stays_but_holds_nothing(tmp_path, capsys):
    run = tmp_path / "empty"
    run.mkdir()
    assert train("--dataset", "imagefolder", "--data-dir", tmp_path / "nowhere", "--quiet", "--threads", 1,
                 "--device", "cpu", "--logdir", run) == 2
    one_error_line(capsys.readouterr().err)
    assert run.is_dir() and list(run.iterdir()) == []


# --------------------------------------------------------------------------- 12.9 damaged checkpoints

@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("good") / "run"
    assert train(*BASE, "--val-size", 500, "--logdir", run) == 0
    return run / "checkpoint.pt"


def _edit(ckpt, case):
    if case == "image_size":
        ckpt["image_size"] = 64
    elif case == "image_size_str":
        ckpt["image_size"] = "32"
    elif case == "preprocess.mean":
        ckpt["preprocess"]["mean"] = ckpt["preprocess"]["mean"][:100]
    elif case == "num_classes":
        ckpt["classes"] = ckpt["classes"][:5]
    elif case == "model.weight":
        ckpt["model"]["weight"][0, 0] = float("nan")
    return ckpt


@pytest.mark.parametrize("case", ["image_size", "image_size_str", "preprocess.mean", "num_classes", "model.weight"])
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_inconsistent_checkpoints_are_refused_naming_the_field(good_checkpoint, case, command, tmp_path, capsys):
    from lintorch import evaluate, predict
    bad = tmp_path / "bad.pt"
    torch.save(_edit(torch.load(good_checkpoint, weights_only=True), case), bad)
    image = tmp_path / "x.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(image)
    argv = [str(bad), str(image)] if command == "predict" else [str(bad)]
    assert (predict if command == "predict" else evaluate).main(argv + ["--device", "cpu", "--threads", "1"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"'{case.replace('_str', '')}'" in line and str(bad) in line, line


@pytest.mark.parametrize("content", [b"just some text\n", os.urandom(4096), b"PK\x03\x04" + os.urandom(500)])
def test_text_and_random_bytes_are_refused_without_unsafe_advice(content, tmp_path, capsys):
    from lintorch import evaluate, predict
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    assert evaluate.main([str(bad), "--device", "cpu", "--threads", "1"]) == 2
    assert predict.main([str(bad), str(bad), "--device", "cpu", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "weights_only=False" not in err and len(err.splitlines()) == 2 and str(bad) in err


# --------------------------------------------------------------------------- 12.10 a full disk

@pytest.mark.parametrize("name", ["last.pt", "checkpoint.pt"])
def test_disk_full_while_saving_is_one_line_and_keeps_the_old_file(name, tmp_path, monkeypatch, capsys):
    import builtins
    from lintorch.output import atomic
    writes = {"n": 0}

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, key):
            return getattr(self.f, key)

    def full_open(path, mode="r", *a, **k):
        f = builtins.open(path, mode, *a, **k)
        if f"{name}.tmp" in os.path.basename(path) and "w" in mode:
            writes["n"] += 1
            if writes["n"] >= 2:                                   # the first one succeeds
                return Full(f)
        return f
    monkeypatch.setattr(atomic, "open", full_open, raising=False)        # every file write goes through atomic.py
    run = tmp_path / "run"
    assert train(*BASE, "--epochs", 3, "--schedule", "constant", "--val-size", 500, "--logdir", run) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(run / name) in line and "no space left" in line and "MB" in line, line
    assert list(run.rglob("*.tmp*")) == []
    assert torch.load(run / name, weights_only=True)["format"] == "lintorch-checkpoint"
    from lintorch.output.checkpoint import load_model
    load_model(str(run / name))
    metrics = read_json(run / "metrics.json")
    assert metrics["status"] == "failed" and "no space left" in metrics["error"]


# --------------------------------------------------------------------------- 12.12 absurd hyperparameters

LONG_NUMBER = re.compile(r"\d{13,}")


@pytest.mark.parametrize("argv, flag", [(["--reg", "1e30"], "--reg"),
                                        (["--penalty", "elasticnet", "--beta", "1e30"], "--beta"),
                                        (["--loss", "svm", "--squared-hinge", "--margin", "1e30"], "--margin"),
                                        (["--penalty", "l1", "--reg", "1e30"], "--reg")])
def test_oversized_hyperparameters_name_their_flag(argv, flag, tmp_path, capsys):
    assert train(*BASE, "--val-size", 500, *argv, "--logdir", tmp_path / "run") == 1
    out, err = capsys.readouterr()
    error = next(l for l in (out + err).splitlines() if l.startswith("error:"))
    assert flag in error and "lower --lr" not in error, error
    assert not LONG_NUMBER.search(out + err), out + err


def test_huge_margin_prints_no_forty_digit_numbers(tmp_path, capsys):
    assert train("--dataset", "synthetic", "--epochs", 1, "--device", "cpu", "--threads", 1, "--val-size", 500, "--loss", "svm",
                 "--margin", "1e30", "--logdir", tmp_path / "run") == 0
    out, err = capsys.readouterr()
    assert "epoch 1/1" in out and not LONG_NUMBER.search(out + err), out + err


# --------------------------------------------------------------------------- 12.13 / 8.3 divergence

def test_diverging_in_epoch_one_promises_no_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(*BASE, "--val-size", 500, "--lr", "1e30", "--logdir", run) == 1
    out, err = capsys.readouterr()
    assert "no model was kept" in out + err
    assert "checkpoint.pt keeps" not in out + err and not (run / "checkpoint.pt").exists()
    assert read_json(run / "metrics.json")["status"] == "diverged"


def test_a_sweep_where_every_member_diverges_exits_1(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(*BASE, "--val-size", 500, "--sweep", "lr=1e30,1e31", "--logdir", run) == 1
    out, err = capsys.readouterr()
    assert "every configuration diverged" in out + err
    assert "best configuration" not in out + err and not (run / "checkpoint.pt").exists()
    assert read_json(run / "metrics.json")["status"] == "diverged"


# --------------------------------------------------------------------------- 12.14 existing folders

def test_refusal_suggests_resume_only_for_an_interrupted_run(constant_run, tmp_path, monkeypatch, capsys):
    capsys.readouterr()
    assert train(*BASE, "--logdir", constant_run) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--resume" not in line and "--logdir" in line
    cut = tmp_path / "cut"
    stop_after(monkeypatch, 3)
    assert train(*BASE, "--val-size", 500, "--logdir", cut) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert train(*BASE, "--logdir", cut) == 2
    assert f"--resume {cut}" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- 12.15 paths

def test_bad_paths_are_one_line_each(image_folder, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert train("--dataset", "imagefolder", "--data-dir", a_file, "--quiet", "--device", "cpu",
                 "--logdir", tmp_path / "r1") == 2
    assert str(a_file) in one_error_line(capsys.readouterr().err)
    assert train(*BASE, "--logdir", a_file) == 2
    assert str(a_file) in one_error_line(capsys.readouterr().err)
    data = copy_tree(image_folder, tmp_path / "data")
    os.symlink(tmp_path / "gone.png", data / "train" / "red" / "dangling.png")
    assert train("--dataset", "imagefolder", "--data-dir", data, "--image-size", 8, "--quiet", "--threads", 1,
                 "--device", "cpu", "--logdir", tmp_path / "r2") == 2
    assert "dangling.png" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- 12.17 usage errors everywhere

def _parsers():
    from lintorch import bench, config, evaluate, gradcheck, predict
    return {"train": config.parse_args, "evaluate": evaluate.main, "predict": predict.main,
            "gradcheck": gradcheck.main, "bench": bench.main}


@pytest.mark.parametrize("command, argv", [("train", ["--epochs", "x"]), ("train", ["--bogus"]),
                                           ("evaluate", []), ("evaluate", ["c.pt", "--split", "nope"]),
                                           ("predict", ["c.pt"]), ("predict", ["c.pt", "x.png", "--top-k", "0"]),
                                           ("gradcheck", ["--seed", "x"]), ("gradcheck", ["--bogus"]),
                                           ("bench", ["--batch-size", "x"]), ("bench", ["--repeats", "0"])])
def test_every_usage_error_is_one_line_pointing_at_help(command, argv, capsys):
    usage_error(_parsers()[command], argv, capsys)


# --------------------------------------------------------------------------- issue 8

def test_interrupted_sweep_summary_is_the_sweeps(tmp_path, monkeypatch):
    run = tmp_path / "sweep"
    stop_after(monkeypatch, 6)               # member 0 has diverged by then, member 1 is training
    assert train(*BASE, "--val-size", 500, "--sweep", "lr=1e30,0.01", "--logdir", run) == 130
    summary = read_json(run / "metrics.json")
    assert summary["status"] == "interrupted"
    assert [c["status"] for c in summary["configs"]] == ["diverged", "interrupted"]


def test_sweep_grad_histogram_is_the_gradient_not_the_step(tmp_path):
    run = tmp_path / "sweep"
    assert train(*BASE, "--val-size", 500, "--log-every", 2, "--sweep", "lr=0.0003,0.03", "--logdir", run) == 0
    slow, fast = events(run / "lr=0.0003"), events(run / "lr=0.03")
    g_slow, g_fast = slow.Scalars("norm/grad")[0].value, fast.Scalars("norm/grad")[0].value
    assert 0.3 < g_slow / g_fast < 3, (g_slow, g_fast)           # lr * dW would be 100x apart
    h_slow, h_fast = slow.Histograms("grad")[0].histogram_value, fast.Histograms("grad")[0].histogram_value
    ratio = (h_slow.sum_squares / h_fast.sum_squares) ** 0.5
    assert 0.1 < ratio < 10, ratio


def test_a_growing_loss_is_warned_and_noted(tmp_path, capsys):
    run = tmp_path / "run"
    code = train(*BASE, "--val-size", 500, "--lr", "1e3", "--logdir", run)
    out, err = capsys.readouterr()
    if code == 1:
        assert "non-finite" in out + err
    else:
        assert "grew" in out + err and "--lr" in out + err
        assert "grew" in read_json(run / "metrics.json")["note"]


def test_more_epochs_on_a_finished_cosine_run_is_refused(good_checkpoint, constant_run, tmp_path, capsys):
    cosine = good_checkpoint.parent
    capsys.readouterr()
    assert train("--resume", cosine, "--epochs", 20) == 2
    assert "schedule" in one_error_line(capsys.readouterr().err)
    run = copy_tree(constant_run, tmp_path / "run")
    assert train("--resume", run, "--epochs", 3) == 0
    assert read_json(run / "metrics.json")["epochs"] == 3


def test_quiet_keeps_the_summary_and_predict_defaults_to_auto(good_checkpoint, tmp_path, capsys):
    from lintorch import predict
    assert predict.get_args_parser().parse_args(["c.pt", "x.png"]).device == "auto"
    from PIL import Image
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(image)
    capsys.readouterr()
    assert predict.main([str(good_checkpoint), str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["label"]
    assert train(*BASE, "--val-size", 500, "--epochs", 2, "--logdir", tmp_path / "run") == 0
    out = capsys.readouterr().out
    assert "done (completed)" in out and "epoch 1/2" not in out


def test_evaluate_names_the_sweep_configuration(tmp_path, capsys):
    from lintorch import evaluate
    run = tmp_path / "sweep"
    assert train(*BASE, "--val-size", 500, "--sweep", "lr=0.003,0.03", "--logdir", run) == 0
    capsys.readouterr()
    assert evaluate.main([str(run), "--device", "cpu", "--threads", "1"]) == 0
    assert re.search(r"sweep configuration lr=0\.0?03", capsys.readouterr().out)


def test_no_deprecation_warning_from_png_writing(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train(*BASE, "--val-size", 500, "--logdir", tmp_path / "run") == 0
    # torchvision 0.29's write_png/encode_png warn "image decoding and encoding ... are deprecated"
    bad = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)
           and ("torchvision" in str(w.filename) or re.search("png|encod", str(w.message), re.I))]
    assert bad == []
    assert (tmp_path / "run" / "templates.png").is_file()
