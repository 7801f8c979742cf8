"""train.py in this process: a short run learns, writes its folder and TensorBoard tags; each loss, optimizer and
device."""
import json
import math
import os
import shutil

import pytest
import torch
from PIL import Image

from lintorch.config import parse_args
from tests import helpers
from tests.conftest import BASE, RUN, copy_tree, train_auto_threads
from tests.helpers import events, one_error_line, read_json, train


SCALARS = ["loss/data", "loss/reg", "loss/total", "acc/train", "acc/val", "lr", "norm/weight", "norm/grad",
           "update_ratio", "time/epoch_seconds", "time/images_per_second"]


def test_short_run_learns(synthetic_run, read_json):
    m = read_json(synthetic_run / "metrics.json")
    assert m["status"] == "completed" and m["epochs"] == 4 and m["device"] == "cpu"
    assert m["val_acc"] >= 0.5 and m["train_acc"] >= 0.5 and m["test_acc"] >= 0.5  # chance is 0.1
    assert 1 <= m["best_epoch"] <= 4 and m["val_acc"] == max(h["val_acc"] for h in m["history"])
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3, 4]
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]
    assert m["seconds"] > 0 and m["images_per_second"] > 0


def test_run_folder_outputs(synthetic_run, read_json):
    names = {p.name for p in synthetic_run.iterdir()}
    assert {"checkpoint.pt", "last.pt", "config.json", "metrics.json", "templates.png"} <= names
    assert not [p for p in synthetic_run.iterdir() if p.is_dir()], "one run, one folder: no sub-runs"
    assert len([n for n in names if n.startswith("events.out.tfevents")]) == 1
    config = read_json(synthetic_run / "config.json")
    assert config["dataset"] == "synthetic" and config["epochs"] == 4 and config["resolved"]["lr"] > 0
    for name in ("checkpoint.pt", "last.pt"):
        ckpt = torch.load(synthetic_run / name, weights_only=True)
        assert ckpt["format"] == "lintorch-checkpoint" and ckpt["loss"] == "softmax"
        assert ckpt["model"]["weight"].shape == (10, 3 * 32 * 32) and ckpt["model"]["bias"].shape == (10,)
        assert ckpt["preprocess"]["mean"].shape == (3 * 32 * 32,)
        assert ckpt["classes"] == [f"class{i}" for i in range(10)] and ckpt["image_size"] == 32
        assert ckpt["config"]["lr"] == config["lr"] and ckpt["config"]["resolved"] == config["resolved"]
    last = torch.load(synthetic_run / "last.pt", weights_only=True)
    assert last["kind"] == "resume" and last["state"]["epoch"] == 4 and last["state"]["momentum"] is not None
    assert last["state"]["weight"].shape == (1, 10, 3 * 32 * 32)
    best = torch.load(synthetic_run / "checkpoint.pt", weights_only=True)
    assert best["best_val_acc"] == read_json(synthetic_run / "metrics.json")["val_acc"]
    with Image.open(synthetic_run / "templates.png") as im:
        assert im.format == "PNG" and im.width > 5 * 32 and im.height > 2 * 32


def test_event_file_tags(synthetic_run, read_json):
    from tensorboard.plugins.hparams import plugin_data_pb2
    acc = events(synthetic_run)
    tags = acc.Tags()
    assert set(SCALARS) <= set(tags["scalars"]), set(SCALARS) - set(tags["scalars"])
    from lintorch.training.report import TensorBoard
    pictured = [e for e in range(4) if e % TensorBoard.picture_every == 0 or e == 3]   # and always the last epoch
    assert "templates" in tags["images"] and [e.step for e in acc.Images("templates")] == \
        [(e + 1) * acc.Images("templates")[-1].step // 4 for e in pictured]
    assert len(acc.Histograms("weight")) == len(pictured)
    assert [t for t in tags["images"] if t.startswith("confusion_matrix/")] == ["confusion_matrix/test"]
    assert {"weight", "grad"} <= set(tags["histograms"])
    assert "config/text_summary" in acc.PluginTagToContent("text")
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"dataset": "synthetic"' in text
    # hyperparameters and final metrics in this run's own event file
    content = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in content
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    metrics = read_json(synthetic_run / "metrics.json")
    assert start.session_start_info.hparams["loss"].string_value == "softmax"
    assert start.session_start_info.hparams["lr"].number_value == pytest.approx(read_json(
        synthetic_run / "config.json")["resolved"]["lr"])
    assert acc.Scalars("hparam/val_acc")[-1].value == pytest.approx(metrics["val_acc"])
    # the step-0 sanity check: the initial softmax loss is about log C
    first = acc.Scalars("loss/data")[0]
    assert first.step == 0 and first.value == pytest.approx(math.log(10), abs=0.05)
    assert [e.value for e in acc.Scalars("acc/val")] == pytest.approx([h["val_acc"] for h in metrics["history"]])
    # per-epoch scalars on an epoch axis, and the best so far: the best epoch reads off the chart
    val = [h["val_acc"] for h in metrics["history"]]
    assert [e.step for e in acc.Scalars("epoch/val_acc")] == [1, 2, 3, 4]
    assert [e.value for e in acc.Scalars("epoch/val_acc")] == pytest.approx(val)
    assert [e.value for e in acc.Scalars("epoch/train_acc")] == pytest.approx([h["train_acc"] for h in metrics["history"]])
    best = [max(val[:i + 1]) for i in range(4)]
    assert [e.value for e in acc.Scalars("epoch/val_best")] == pytest.approx(best)
    assert [e.value for e in acc.Scalars("acc/val_best")] == pytest.approx(best)
    assert acc.Scalars("epoch/val_best")[-1].value == pytest.approx(metrics["val_acc"])
    ratios = [e.value for e in acc.Scalars("update_ratio")]
    assert all(0 < r < 1 for r in ratios)


@pytest.mark.parametrize("optimizer, extra", [
    ("gd", ["--epochs", 3]),
    ("random-search", ["--trials", 20]),
    ("random-local-search", ["--trials", 20]),
])
def test_other_optimizers_run(optimizer, extra, tmp_path, train_main, read_json):
    logdir = tmp_path / optimizer
    assert train_main("--dataset", "synthetic", "--image-size", 8, "--optimizer", optimizer, *extra, "--quiet",
                      "--device", "cpu", "--logdir", logdir) == 0
    m = read_json(logdir / "metrics.json")
    assert m["status"] == "completed" and 0 <= m["val_acc"] <= 1 and 0 <= m["test_acc"] <= 1
    assert (logdir / "checkpoint.pt").is_file() and (logdir / "templates.png").is_file()
    assert "acc/val" in events(logdir).Tags()["scalars"]
    if optimizer == "gd":  # full-batch: one step per epoch, the loss goes down
        assert len(m["history"]) == 3 and m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]
    else:  # the best of 20 random W is no worse than a random small W (loss about log C)
        assert math.isfinite(m["best_loss"]) and m["best_loss"] <= math.log(10) + 0.01


def _final_weights(train_main, logdir, *argv):
    assert train_main(*argv, "--quiet", "--device", "cpu", "--logdir", logdir) == 0
    return torch.load(logdir / "last.pt", weights_only=True)["model"]


def test_both_loaders_train_to_the_same_weights_imagefolder(image_folder, tmp_path, train_main):
    argv = ("--dataset", "imagefolder", "--data-dir", image_folder, "--image-size", 16, "--val-size", 12,
            "--batch-size", 8, "--epochs", 2, "--seed", 3)
    a = _final_weights(train_main, tmp_path / "tensor", *argv, "--loader", "tensor")
    b = _final_weights(train_main, tmp_path / "dataloader", *argv, "--loader", "dataloader")
    assert torch.equal(a["weight"], b["weight"]) and torch.equal(a["bias"], b["bias"])


def test_both_loaders_train_to_the_same_weights_cifar10(cifar10_root, tmp_path, train_main):
    argv = ("--dataset", "cifar10", "--data-dir", cifar10_root, "--val-size", 20, "--batch-size", 16,
            "--epochs", 2, "--seed", 1)
    a = _final_weights(train_main, tmp_path / "tensor", *argv, "--loader", "tensor")
    b = _final_weights(train_main, tmp_path / "dataloader", *argv, "--loader", "dataloader")
    assert torch.equal(a["weight"], b["weight"]) and torch.equal(a["bias"], b["bias"])


def test_cifar10_run_learns(cifar10_root, tmp_path, train_main, read_json):
    logdir = tmp_path / "run"
    assert train_main("--dataset", "cifar10", "--data-dir", cifar10_root, "--val-size", 20, "--batch-size", 16,
                      "--epochs", 10, "--quiet", "--device", "cpu", "--logdir", logdir) == 0
    m = read_json(logdir / "metrics.json")
    assert m["val_acc"] >= 0.5 and m["test_acc"] >= 0.5  # 10 classes: chance is 0.1


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("argv", [["--lr", "0"], ["--batch-size", "0"], ["--epochs", "0"], ["--loss", "hinge"],
                                  ["--lr", "nan"], ["--optimizer", "adam"]])
def test_bad_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--dataset", "synthetic", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    # one line naming the problem and pointing at --help, not the 16-line usage block
    assert err.startswith("train.py: error:") and len(err.strip().splitlines()) == 1 and "--help" in err
    assert "Traceback" not in err


def _bad_runs(tmp_path):
    empty, no_train, no_images = tmp_path / "empty", tmp_path / "no-train", tmp_path / "no-images"
    (empty / "train").mkdir(parents=True)
    no_train.mkdir()
    (no_images / "train" / "cat").mkdir(parents=True)
    return {
        "missing data dir": (["--dataset", "imagefolder", "--data-dir", tmp_path / "nowhere"], "does not exist"),
        "no train folder": (["--dataset", "imagefolder", "--data-dir", no_train], "found no train folder"),
        "no class folders": (["--dataset", "imagefolder", "--data-dir", empty], "has no class folders"),
        "no images": (["--dataset", "imagefolder", "--data-dir", no_images], "no image files"),
        "val size too big": (["--dataset", "synthetic", "--image-size", 8, "--val-size", 100000], "--val-size"),
        "cuda without cuda": (["--dataset", "synthetic", "--device", "cuda"], "CUDA"),
        "not a device": (["--dataset", "synthetic", "--device", "tpu"], "--device"),
    }


@pytest.mark.parametrize("case", ["missing data dir", "no train folder", "no class folders", "no images",
                                  "val size too big", "cuda without cuda", "not a device"])
def test_bad_runs_exit_2_with_one_line(case, tmp_path, capsys, train_main):
    """Also without --quiet for the data folders (a real process's one line: tests/cli/test_train.py)."""
    if case == "cuda without cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here, so --device cuda is not an error")
    argv, words = _bad_runs(tmp_path)[case]
    quiet = [] if argv[1] == "imagefolder" else ["--quiet"]
    assert train_main(*argv, *quiet, "--logdir", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and words in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 garbage"])
def test_bad_checkpoint_files_are_one_line(content, tmp_path, capsys, train_main):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    assert train_main("--resume", path, threads=None) == 2
    err = capsys.readouterr().err
    assert "truncated or not a torch checkpoint" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_resume_with_other_image_size_is_refused(synthetic_run, tmp_path, capsys, train_main):
    shutil.copy(synthetic_run / "last.pt", tmp_path / "last.pt")
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    ckpt["config"]["image_size"] = 16
    ckpt["state"]["epoch"] = 1                           # unfinished, so there is something to resume
    torch.save(ckpt, tmp_path / "last.pt")
    assert train_main("--resume", tmp_path, threads=None) == 2
    assert "trained on 32px images, the data is 16px" in capsys.readouterr().err


def test_an_existing_run_is_never_overwritten(synthetic_run, tmp_path, capsys, train_main):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    before = (run / "checkpoint.pt").read_bytes()
    assert train_main("--dataset", "synthetic", "--quiet", "--epochs", 1, "--logdir", run) == 2
    err = capsys.readouterr().err
    # a completed run cannot be resumed, so the refusal does not suggest --resume
    assert "already holds a run (completed)" in err and "--resume" not in err
    assert (run / "checkpoint.pt").read_bytes() == before


def test_lr_far_too_large_is_a_clean_error(tmp_path, capsys, train_main):
    assert train_main("--dataset", "synthetic", "--image-size", 8, "--quiet", "--seed", 3, "--val-size", 1000,
                      "--epochs", 2, "--lr", 1e30, "--logdir", tmp_path) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "lower --lr" in out + err


def test_unreadable_image_is_named_by_train(tmp_path, capsys, train_main):
    helpers.image_tree(tmp_path)
    bad = tmp_path / "train" / "c1" / "broken.png"
    good = (tmp_path / "train" / "c1" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])                          # a truncated PNG
    assert train_main("--dataset", "imagefolder", "--data-dir", tmp_path, "--image-size", 8, "--val-size", 2,
                      "--epochs", 1, "--logdir", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "--skip-bad-images" in err


@pytest.mark.parametrize("optimizer", ["sgd", "gd", "lbfgs", "exact"])
def test_train_with_each_optimizer_on_cuda(emulated, tmp_path, optimizer):
    extra = {"exact": ["--loss", "squared"], "lbfgs": ["--max-iter", 5]}.get(optimizer, [])
    run = tmp_path / optimizer
    with emulated():
        run_args = RUN if optimizer in ("sgd", "gd") else helpers.without(RUN, "--epochs")    # no epochs there
        assert train_auto_threads(*run_args, "--optimizer", optimizer, *extra, "--logdir", run) == 0
    summary = helpers.read_json(run / "metrics.json")
    assert summary["status"] == "completed" and summary["device"].startswith("cuda") and summary["val_acc"] > 0.1, summary


# --------------------------------------------------------------------------- paths

def test_bad_paths_are_one_line_each(image_folder, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert train_auto_threads("--dataset", "imagefolder", "--data-dir", a_file, "--quiet", "--device", "cpu",
                 "--logdir", tmp_path / "r1") == 2
    assert str(a_file) in one_error_line(capsys.readouterr().err)
    assert train_auto_threads(*BASE, "--logdir", a_file) == 2
    assert str(a_file) in one_error_line(capsys.readouterr().err)
    data = copy_tree(image_folder, tmp_path / "data")
    os.symlink(tmp_path / "gone.png", data / "train" / "red" / "dangling.png")
    assert train_auto_threads("--dataset", "imagefolder", "--data-dir", data, "--image-size", 8, "--quiet", "--threads", 1,
                 "--device", "cpu", "--logdir", tmp_path / "r2") == 2
    assert "dangling.png" in one_error_line(capsys.readouterr().err)


def test_quiet_keeps_the_summary_and_predict_defaults_to_auto(good_checkpoint, tmp_path, capsys):
    from lintorch import predict
    assert predict.get_args_parser().parse_args(["c.pt", "x.png"]).device == "auto"
    from PIL import Image
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(image)
    capsys.readouterr()
    assert predict.main([str(good_checkpoint), str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["label"]
    assert train_auto_threads(*BASE, "--image-size", 8, "--val-size", 500, "--epochs", 2, "--logdir", tmp_path / "run") == 0
    out = capsys.readouterr().out
    assert "done (completed)" in out and "epoch 1/2" not in out


def test_a_run_trains_with_lbfgs_from_the_command_line(tmp_path, train_main, read_json):
    run = tmp_path / "run"
    assert train_main("--dataset", "synthetic", "--image-size", 8, "--loss", "logistic", "--optimizer", "lbfgs",
                      "--val-size", 200, "--quiet", "--device", "cpu", "--logdir", run) == 0
    metrics = read_json(run / "metrics.json")
    assert metrics["status"] == "completed" and metrics["val_acc"] > 0.2      # 10 classes: chance is 0.1
    assert read_json(run / "config.json")["loss"] == "logistic"


@pytest.mark.parametrize("optimizer", ["sgd", "gd", "lbfgs"])
def test_train_py_trains_the_squared_loss(optimizer, tmp_path, capsys):
    extra = {"sgd": ["--epochs", "2"], "gd": ["--epochs", "5"], "lbfgs": ["--max-iter", "30"]}[optimizer]
    assert train("--dataset", "synthetic", "--image-size", "16", "--val-size", "500", "--loss", "squared", "--quiet",
                 "--optimizer", optimizer, *extra, "--logdir", tmp_path / optimizer) == 0
    out = capsys.readouterr().out
    assert "warning" not in out
    assert ("expected about 10 for squared" in out) == (optimizer != "lbfgs")    # the gradient loop's step-0 check
    metrics = read_json(tmp_path / optimizer / "metrics.json")
    # 10 classes, chance 0.1; measured: sgd 0.284, gd (5 full-batch steps) 0.156, lbfgs 0.406
    assert metrics["status"] == "completed" and metrics["val_acc"] > {"sgd": 0.2, "gd": 0.12, "lbfgs": 0.3}[optimizer]
