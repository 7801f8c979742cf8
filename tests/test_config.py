"""lintorch.config: TrainConfig's fields, flags and rules; flag combinations and numbers refused in one line."""
import dataclasses
import json
import subprocess
import sys

import pytest

from lintorch.config import ConfigError, PRESETS, Resolved, TrainConfig, flag, get_args_parser, parse_args
from tests.conftest import BASE, COMMON, LONG_NUMBER, train_auto_threads, usage_error
from tests.helpers import REPO


def cli_fields():
    return [f for f in TrainConfig.fields() if f.metadata.get("cli")]


def test_the_parser_has_one_flag_per_field_and_no_other():
    flags = {o for a in get_args_parser()._actions for o in a.option_strings if o.startswith("--")}
    flags -= {"--help"} | {f"--no-{f.name.replace('_', '-')}" for f in cli_fields()}
    assert flags == {flag(f.name) for f in cli_fields()}


def test_no_flag_given_is_the_fields_defaults_with_the_tuned_ones_filled():
    cfg = parse_args([])
    assert cfg == TrainConfig().filled() and cfg.given == ()
    assert cfg.lr is None and cfg.reg is not None and cfg.epochs is not None   # lr's default needs the inputs' D
    assert parse_args(["--seed", "3", "--quiet"]).given == ("quiet", "seed")


def test_a_config_is_frozen_and_never_changed_in_flight():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.1
    assert cfg.replace(lr=0.1).lr == 0.1 and cfg.lr is None


def test_config_imports_no_torch():
    code = "import sys, lintorch.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("changes, field, text", [
    (dict(optimizer="lbfgs", loss="svm"), "optimizer", "--optimizer lbfgs needs a smooth objective"),
    (dict(optimizer="exact"), "optimizer", "--optimizer exact solves --loss squared"),
    (dict(flip=True, dataset="features"), "flip", "--flip mirrors images"),
    (dict(momentum=1.5), "momentum", "--momentum: 1.5 must be <= 0.999"),
    (dict(loss="hinge"), "loss", "--loss: invalid choice: 'hinge'"),
    (dict(batch_size=0), "batch_size", "--batch-size: 0 must be >= 1"),
    (dict(sweep=({"lr": 0.1},), optimizer="exact", loss="squared"), "sweep", "--optimizer exact has no learning rate to sweep"),
])
def test_check_names_the_field_and_spells_it_as_asked(changes, field, text):
    cfg = TrainConfig(**changes)
    with pytest.raises(ConfigError) as e:
        cfg.check()
    assert e.value.field == field and str(e.value).startswith(text), str(e.value)
    with pytest.raises(ConfigError) as e:
        cfg.check(name=lambda f: {"optimizer": "solver"}.get(f, f))
    assert "--" not in str(e.value), str(e.value)           # the Python API's keywords, no flags


@pytest.mark.parametrize("good, bad, text", [
    (dict(epochs=1), dict(epochs=True), "--epochs: True is not a number"),       # equal to 1, another type
    (dict(momentum=0.9), dict(momentum=1.5), "--momentum: 1.5 must be <= 0.999"),
    (dict(loss="svm"), dict(loss="hinge"), "--loss: invalid choice: 'hinge'"),
    (dict(quiet=True), dict(quiet=1), "--quiet: 1 is not True or False"),
])
def test_a_value_checked_once_per_process_never_lets_another_through(good, bad, text):
    """check() remembers the values it found within bounds (once per process); a refused value is
    refused every time, also after an equal value of another type was accepted."""
    for _ in range(2):
        TrainConfig(**good).check()
        for _ in range(2):
            with pytest.raises(ConfigError) as e:
                TrainConfig(**bad).check()
            assert str(e.value).startswith(text), str(e.value)


def test_a_broken_rule_on_the_command_line_is_one_line_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--optimizer", "lbfgs", "--loss", "svm"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "--optimizer lbfgs needs a smooth objective" in err and "--help" in err


def test_saved_and_loaded_back_with_the_resolved_record_beside_it():
    cfg = parse_args(["--dataset", "synthetic", "--sweep", "reg=1e-3,1e-2"])
    resolved = Resolved(lr=0.03, val_size=800, threads=1, logdir="runs/x")
    saved = json.loads(json.dumps(cfg.saved(resolved)))      # config.json's plain types
    assert saved["resolved"] == dataclasses.asdict(resolved) and saved["lr"] is None
    assert "given" not in saved and "resume" not in saved
    assert TrainConfig.from_saved(saved) == (cfg, resolved)


def test_an_older_config_json_still_loads():
    """Written before TrainConfig: resolved facts mixed into the config, keys since added missing."""
    old = {"dataset": "synthetic", "loss": "softmax", "lr": 0.0221, "lr_from_defaults": False, "val_size": 800,
           "cpu_threads": 2, "logdir": "runs/old", "feature_recipe": None, "sweep": [{"reg": 0.001}],
           "reg": 3e-4, "epochs": 4}
    cfg, resolved = TrainConfig.from_saved(old)
    assert cfg.lr == 0.0221 and cfg.epochs == 4 and cfg.sweep == ({"reg": 0.001},)
    assert cfg.flip_eval is False and cfg.precondition == "auto"         # missing keys: the fields' defaults
    assert resolved == Resolved(lr=0.0221, val_size=800, threads=2, logdir="runs/old")
    assert TrainConfig.from_saved({**old, "lr_from_defaults": True})[0].lr is None   # not yet scaled then


def test_the_kmeans_preset_is_one_visible_step():
    cfg = parse_args(["--features", "kmeans", "--val-size", "12"])
    assert cfg.preset == "kmeans" and cfg.val_size == 12                  # a flag given keeps its value
    assert all(getattr(cfg, k) == v for k, v in PRESETS["kmeans"].items() if k not in ("sweep", "val_size"))
    assert cfg.preset_text().startswith("--loss squared --optimizer exact") and "--val-size" not in cfg.preset_text()
    assert parse_args(["--features", "kmeans", "--loss", "softmax"]).preset is None
    assert parse_args(["--features", "hog"]).preset is None


def test_help_says_what_features_kmeans_alone_applies(capsys):
    """--help says that --features kmeans alone applies the preset, and which
    defaults it overrides."""
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--features kmeans or hog,colorhist alone" in text
    assert "--features kmeans with no classifier flag sets --loss squared --optimizer exact --flip --flip-eval" in text
    for default in ("data loss (default: softmax) (squared with --features kmeans alone",
                    "(default: sgd) (exact with --features kmeans alone",
                    "(10000 with --features kmeans alone)"):
        assert default in text, default


@pytest.mark.parametrize("argv, says", [
    (["--optimizer", "exact", "--loss", "squared", "--lr", "0.1"], "--lr sets the gradient-descent loop"),
    (["--optimizer", "exact", "--loss", "squared", "--momentum", "0.5", "--schedule", "constant"],
     "--momentum, --schedule set"),
    (["--optimizer", "lbfgs", "--lr", "0.3"], "--optimizer lbfgs would ignore it"),
    (["--optimizer", "lbfgs", "--epochs", "3"], "--epochs sets the gradient-descent loop (sgd, gd): --optimizer lbfgs"),
    (["--optimizer", "exact", "--loss", "squared", "--patience", "2"], "--patience sets the gradient-descent loop"),
    (["--features", "kmeans", "--optimizer", "lbfgs", "--epochs", "5", "--patience", "2"], "--epochs, --patience set"),
    (["--features", "kmeans", "--alpha", "0.5"], "--alpha is the soft code's threshold"),
    (["--features", "kmeans", "--encoding", "triangle", "--alpha", "0.5"], "the triangle encoding would ignore it"),
    (["--features", "hog,hog"], "names hog twice"),
    (["--features", "colorhist, hog,colorhist"], "names colorhist twice"),
])
def test_flags_that_would_be_ignored_or_repeat_columns_are_usage_errors(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--dataset", "imagefolder", "--data-dir", "d", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and says in err[0], err


def test_the_same_flags_where_they_are_read_are_fine():
    parse_args(["--dataset", "imagefolder", "--data-dir", "d", "--features", "kmeans", "--encoding", "soft",
                "--alpha", "0.5"])
    parse_args(["--optimizer", "sgd", "--lr", "0.1", "--epochs", "3"])
    parse_args(["--optimizer", "exact", "--loss", "squared", "--reg", "1e-3"])


@pytest.mark.parametrize("command", ["train", "evaluate", "extract", "doctor"])
def test_cache_dir_pointing_at_a_file_is_one_usage_error(command, tmp_path, capsys):
    import importlib
    (tmp_path / "file").write_text("x")
    argv = {"train": ["--dataset", "imagefolder", "--data-dir", str(tmp_path)],
            "evaluate": [str(tmp_path / "run")],
            "extract": ["--data-dir", str(tmp_path), "--features", "hog", "--out", str(tmp_path / "o")],
            "doctor": ["--device", "cpu"]}[command] + ["--cache-dir", str(tmp_path / "file")]
    with pytest.raises(SystemExit) as e:
        if command == "train":
            parse_args(argv)
        else:
            importlib.import_module(f"lintorch.{command}").main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "is a file, not a folder" in err[0], err


# --------------------------------------------------------------------------- before anything is created

@pytest.mark.parametrize("argv, flag", [(["--lr", "1e39"], "--lr"), (["--seed", "200000000000000"], "--seed"),
                                        (["--image-size", "2000"], "--image-size"), (["--logdir", ""], "--logdir")])
def test_out_of_range_numbers_are_usage_errors_creating_nothing(argv, flag, tmp_path, monkeypatch, capsys):
    from lintorch.config import parse_args
    monkeypatch.chdir(tmp_path)
    assert flag in usage_error(parse_args, [*BASE, *argv], capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, flag", [(["--reg", "1e30"], "--reg"),
                                        (["--penalty", "elasticnet", "--beta", "1e30"], "--beta"),
                                        (["--loss", "svm", "--squared-hinge", "--margin", "1e30"], "--margin"),
                                        (["--penalty", "l1", "--reg", "1e30"], "--reg")])
def test_oversized_hyperparameters_name_their_flag(argv, flag, tmp_path, capsys):
    assert train_auto_threads(*BASE, "--image-size", 8, "--val-size", 500, *argv, "--logdir", tmp_path / "run") == 1
    out, err = capsys.readouterr()
    error = next(l for l in (out + err).splitlines() if l.startswith("error:"))
    assert flag in error and "lower --lr" not in error, error
    assert not LONG_NUMBER.search(out + err), out + err


@pytest.mark.parametrize("argv, words", [
    (["--features", "hog", "--loader", "dataloader"], ["--loader dataloader", "pixels"]),
    (["--centroids", "8"], ["--centroids", "kmeans"]),
    (["--features", "hog", "--backbone-weights", "DEFAULT", "--input-size", "64"],
     ["--backbone-weights, --input-size", "torchvision:<model>"]),
    (["--dataset", "features", "--pool", "3"], ["--pool", "feature folder"]),
])
def test_train_flags_that_would_be_ignored_or_fail_are_usage_errors(capsys, argv, words):
    from lintorch.config import parse_args
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    for w in words:
        assert w in err, err


def test_lbfgs_flags_without_lbfgs_are_refused(capsys):
    """--max-iter, --tol, --history, --precondition would be ignored by sgd: one usage line instead."""
    for flag, value in (("--max-iter", "10"), ("--tol", "1e-3"), ("--history", "3"), ("--precondition", "none")):
        with pytest.raises(SystemExit) as e:
            parse_args([*COMMON, flag, value])
        assert e.value.code == 2 and flag in capsys.readouterr().err
    parse_args([*COMMON, "--optimizer", "lbfgs", "--max-iter", "10", "--precondition", "none"])    # fine with lbfgs
