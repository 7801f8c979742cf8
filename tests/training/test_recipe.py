"""lintorch.training.recipe: the learning rate and recipe a feature run is given."""
import json

import pytest

from lintorch.config import parse_args
from tests.conftest import FEATURES_ARGS, FOLDER, KMEANS, features_of_width
from tests.helpers import train, without


def test_features_alone_get_the_best_measured_recipe(image_folder, tmp_path, capsys):
    """--features NAME with no classifier flag: PRESETS[NAME], a reg path chosen on validation,
    printed and in config.json; any classifier flag replaces it."""
    from lintorch.config import PRESETS
    plain = ["--dataset", "imagefolder", "--image-size", "16", "--val-size", "12", "--quiet", "--threads", "1",
             "--device", "cpu", "--data-dir", str(image_folder)]
    assert train(*plain, *KMEANS, "--logdir", str(tmp_path / "a")) == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    recipe = PRESETS["kmeans"]
    assert cfg["preset"] == "kmeans" and all(cfg[k] == v for k, v in recipe.items() if k not in ("sweep", "val_size"))
    assert cfg["val_size"] == 12                            # a flag given keeps its value (the recipe fills the rest)
    summary = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert len(summary["configs"]) > 1 and summary["best"]["val_acc"] == max(c["val_acc"] for c in summary["configs"])
    assert (tmp_path / "a" / "path.png").is_file()
    assert "the best measured classifier" in capsys.readouterr().out
    a = parse_args([*KMEANS, "--loss", "softmax"])
    assert a.preset is None and a.optimizer == "sgd" and a.sweep is None
    assert parse_args(["--features", "hog,colorhist"]).optimizer == PRESETS["hog,colorhist"]["optimizer"]


def test_default_lr_is_scaled_to_standardized_features(image_folder, tmp_path):
    """The pixel-tuned default lr scaled by 189 / D for D standardized features (recorded in
    config.json's resolved record; the config keeps lr unset); an explicit --lr is kept as given;
    pixels keep the tuned default."""
    from lintorch.names import PIXEL_SQNORM
    from lintorch.objective import LOSSES
    common = [*FOLDER, "--data-dir", str(image_folder), "--epochs", "1", "--features", "kmeans",
              "--centroids", "64", "--patches", "2000"]                       # D = 4 * 64 = 256
    assert train(*common, "--logdir", str(tmp_path / "a")) == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["resolved"]["lr"] == pytest.approx(LOSSES["softmax"].tuned["lr"] * PIXEL_SQNORM / 256) and cfg["lr"] is None
    assert train(*common, "--lr", "0.01", "--logdir", str(tmp_path / "b")) == 0
    b = json.loads((tmp_path / "b" / "config.json").read_text())
    assert b["lr"] == 0.01 and b["resolved"]["lr"] == 0.01
    assert train(*FOLDER, "--data-dir", str(image_folder), "--epochs", "1", "--logdir", str(tmp_path / "c")) == 0
    assert json.loads((tmp_path / "c" / "config.json").read_text())["resolved"]["lr"] == LOSSES["softmax"].tuned["lr"]


@pytest.mark.parametrize("optimizer, extra", [("lbfgs", ["--max-iter", "5"]), ("random-search", ["--trials", "5"])])
def test_optimizers_without_lr_on_features_say_nothing_of_a_scaled_lr(tmp_path, capsys, optimizer, extra):
    data = features_of_width(tmp_path / "f", d=256)                # SGD would scale its default lr for D > 189
    common = FEATURES_ARGS if optimizer == "random-search" else without(FEATURES_ARGS, "--epochs")
    assert train(*common[:-5], "--threads", "1", "--device", "cpu", "--data-dir", data, "--optimizer", optimizer,
                 *extra, "--logdir", tmp_path / "run") == 0
    assert "lr scaled" not in capsys.readouterr().out
