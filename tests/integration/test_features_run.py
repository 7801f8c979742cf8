"""Features through train.py, evaluate and predict (issue 9): the extractor is fitted on the
training split, recorded in the checkpoint and re-applied to new images exactly; extracted
features are cached and re-extracted when a setting changes; feature folders train; the extract
command end to end (in this process)."""
import json

import pytest
import torch

from lintorch.config import parse_args
from lintorch.features import from_state_dict, make_extractor, store
from tests.helpers import train

FOLDER = ["--dataset", "imagefolder", "--image-size", "16", "--val-size", "12", "--batch-size", "8", "--epochs", "4",
          "--quiet", "--threads", "1", "--device", "cpu"]
KMEANS = ["--features", "kmeans", "--centroids", "8", "--patches", "2000"]


@pytest.fixture(scope="module")
def kmeans_run(image_folder, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("features") / "kmeans"
    assert train(*FOLDER, "--data-dir", str(image_folder), *KMEANS, "--logdir", str(logdir)) == 0
    return logdir


def test_checkpoint_records_the_extractor(kmeans_run):
    ckpt = torch.load(kmeans_run / "checkpoint.pt", weights_only=True)
    assert ckpt["in_features"] == 4 * 8 and ckpt["preprocess"]["mode"] == "feature"
    assert ckpt["features"]["name"] == "kmeans" and ckpt["features"]["extractor"]["state"]["centroids"].shape[0] == 8
    assert (kmeans_run / "centroids.png").is_file() and not (kmeans_run / "templates.png").exists()
    m = json.loads((kmeans_run / "metrics.json").read_text())
    assert m["val_acc"] > 0.5 and m["test_acc"] > 0.5       # three colours: chance is 1/3


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


def test_feature_cache_is_reused_and_rebuilt_when_a_setting_changes(image_folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    common = [*FOLDER, "--data-dir", str(image_folder), "--cache-dir", str(cache), "--epochs", "1"]
    assert train(*common, *KMEANS, "--logdir", str(tmp_path / "a")) == 0
    first = sorted(p.name for p in cache.glob("features-*"))
    assert len(first) == 3                                   # train, val, test
    assert train(*common, *KMEANS, "--logdir", str(tmp_path / "b")) == 0
    assert sorted(p.name for p in cache.glob("features-*")) == first      # same extractor, same images: reused
    fitted = list(cache.glob("extractor-kmeans-*.pt"))
    out = capsys.readouterr().out
    assert len(fitted) == 1 and out.count("fitting kmeans") == 1 and "learned state from" in out   # not refitted
    assert train(*common, "--features", "kmeans", "--centroids", "9", "--patches", "2000",
                 "--logdir", str(tmp_path / "c")) == 0
    assert len(list(cache.glob("features-*"))) == 6          # another setting: extracted again, keyed apart
    assert len(list(cache.glob("extractor-kmeans-*.pt"))) == 2
    fitted[0].write_bytes(fitted[0].read_bytes()[:100])      # a torn extractor cache: fitted again, one warning
    capsys.readouterr()
    assert train(*common, *KMEANS, "--logdir", str(tmp_path / "d")) == 0
    out, err = capsys.readouterr()
    assert "is unreadable" in out + err and "fitting kmeans" in out
    d = torch.load(tmp_path / "d" / "checkpoint.pt", weights_only=True)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert torch.equal(a["model"]["weight"], b["model"]["weight"])
    assert torch.equal(a["model"]["weight"], d["model"]["weight"])        # the refit is the same fit


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


def test_hog_colorhist_run_learns(image_folder, tmp_path):
    logdir = tmp_path / "hog"
    assert train(*FOLDER, "--data-dir", str(image_folder), "--features", "hog,colorhist",
                 "--logdir", str(logdir)) == 0
    m = json.loads((logdir / "metrics.json").read_text())
    assert m["val_acc"] > 0.5
    assert torch.load(logdir / "checkpoint.pt", weights_only=True)["in_features"] == 4 * 9 + 10


@pytest.mark.parametrize("fmt", ["npy", "pt"])
def test_dataset_features_trains_on_a_feature_folder(fmt, tmp_path):
    """A folder in the documented format (x (N, D), y (N,), classes.json) trains, validates on a
    seeded carve, and evaluates; predict on an image says why it cannot."""
    from lintorch import evaluate
    from lintorch.features.store import save_split, write_classes
    g = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(3, 20, generator=g)
    y = torch.randint(0, 3, (600,), generator=g)
    x = centers[y] + torch.randn(600, 20, generator=g)
    folder = tmp_path / "feats"
    folder.mkdir()
    write_classes(str(folder), ["a", "b", "c"])
    save_split(str(folder), "train", x[:500], y[:500], fmt=fmt)
    save_split(str(folder), "test", x[500:], y[500:], fmt=fmt)
    logdir = tmp_path / "run"
    assert train("--dataset", "features", "--data-dir", str(folder), "--epochs", "3", "--val-size", "100",
                 "--quiet", "--threads", "1", "--logdir", str(logdir)) == 0
    m = json.loads((logdir / "metrics.json").read_text())
    assert m["val_acc"] > 0.9 and m["test_acc"] > 0.9
    assert evaluate.main([str(logdir), "--json", "--threads", "1"]) == 0


def test_flip_with_features_trains_on_each_image_and_its_mirror(image_folder, tmp_path, capsys):
    """--features kmeans --flip: the mirrored training images are encoded once (cached apart) and the
    training split is both (N doubles); a feature folder has no images to mirror."""
    from lintorch.data import load_dataset
    cache, logdir = tmp_path / "cache", tmp_path / "run"
    assert train("--dataset", "imagefolder", "--image-size", "16", "--val-size", "12", "--quiet", "--threads", "1",
                 "--data-dir", str(image_folder), *KMEANS, "--flip", "--loss", "squared", "--optimizer", "exact",
                 "--cache-dir", str(cache), "--logdir", str(logdir)) == 0
    (mirror,) = cache.glob("features-train-mirror-*.pt")
    ckpt = torch.load(logdir / "checkpoint.pt", weights_only=True)
    ex = from_state_dict(ckpt["features"]["extractor"])
    data = load_dataset("imagefolder", str(image_folder), 16, 12, 0, str(tmp_path / "images"))
    assert torch.allclose(torch.load(mirror, weights_only=True)["x"], ex.transform(data.train.x.flip(-1)), atol=1e-4)
    m = json.loads((logdir / "metrics.json").read_text())
    assert m["images_per_second"] * m["seconds"] == pytest.approx(2 * len(data.train))
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "features", "--flip"])
    assert "--flip" in capsys.readouterr().err


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


# --------------------------------------------------------------------------- the extract command

def test_extract_end_to_end(image_folder, tmp_path):
    from lintorch.extract import main
    out = tmp_path / "hc"
    args = ["--dataset", "imagefolder", "--data-dir", str(image_folder), "--cache-dir", str(tmp_path / "cache"),
            "--device", "cpu", "--quiet"]
    assert main(["--features", "hog,colorhist", "--out", str(out), *args]) == 0
    tr, te = store.FeatureSplit(str(out), "train"), store.FeatureSplit(str(out), "test")
    assert (tr.n, tr.d, te.n, tr.classes) == (48, 154, 15, ["blue", "green", "red"])
    info = json.loads((out / "extractor.json").read_text())
    assert info["fingerprint"] == make_extractor("hog,colorhist").fingerprint()
    assert info["data"]["n_train"] == 48 and len(info["data"]["sha256_train"]) == 64
    # labels in folder order; the colours are told apart by the hue histogram
    assert torch.equal(tr.y, torch.arange(3).repeat_interleave(16))
    out2 = tmp_path / "km"
    threads = torch.get_num_threads()
    try:
        assert main(["--features", "kmeans", "--centroids", "4", "--patches", "500", "--format", "pt",
                     "--threads", "1", "--dtype", "float16", "--out", str(out2), *args]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    tr = store.FeatureSplit(str(out2), "train")
    assert (tr.n, tr.d, tr.dtype) == (48, 16, torch.float16)
    assert (out2 / "centroids.png").stat().st_size > 0
    ex = from_state_dict(torch.load(out2 / "extractor.pt", weights_only=True))
    assert ex.fingerprint() == json.loads((out2 / "extractor.json").read_text())["fingerprint"]
    # one-line errors, exit 2 (on the command line: tests/cli/test_features_cli.py)
    assert main(["--features", "kmeans", "--out", str(out2), *args]) == 2            # exists
    assert main(["--features", "sift", "--out", str(tmp_path / "x"), *args]) == 2
    assert main(["--features", "pixels", "--out", str(tmp_path / "y"), "--dataset", "imagefolder",
                 "--data-dir", str(tmp_path / "nowhere")]) == 2


@pytest.mark.slow
def test_real_cifar10_kmeans_features_beat_pixels(cifar10_jpg, tmp_path):
    """Small k-means features (K 100, 50,000 patches) on the shared JPEGs: well above the raw-pixel accuracy."""
    logdir = tmp_path / "run"
    assert train("--dataset", "imagefolder", "--data-dir", str(cifar10_jpg), "--features", "kmeans",
                 "--centroids", "100", "--patches", "50000", "--loss", "svm", "--squared-hinge",
                 "--epochs", "5", "--quiet", "--logdir", str(logdir), threads=None) == 0
    assert json.loads((logdir / "metrics.json").read_text())["val_acc"] >= 0.50


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


def test_a_sweep_shows_the_centroids_once_and_members_sorted_in_hparams(image_folder, tmp_path):
    """TensorBoard with a K-member sweep (issue 29.5): the centroid picture once, at the run folder,
    not once per member; each member's trial ID is '<run>/mNN-<its values>'."""
    import os

    from tensorboard.plugins.hparams import metadata
    from tests.helpers import events
    logdir = tmp_path / "sweep"
    assert train(*FOLDER, "--data-dir", str(image_folder), *KMEANS, "--optimizer", "lbfgs", "--max-iter", "5",
                 "--sweep", "reg=1e-3,1e-2,1e-1", "--logdir", str(logdir)) == 0
    members = sorted(d for d in os.listdir(logdir) if (logdir / d).is_dir())
    assert len(members) == 3
    assert len(events(logdir).Images("centroids")) == 1
    ids = []
    for m in members:
        acc = events(logdir / m)
        assert "centroids" not in acc.Tags()["images"]
        start = acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
        ids.append(metadata.parse_session_start_info_plugin_data(start).group_name)
    assert sorted(ids) == ["sweep/m00-reg=0.001", "sweep/m01-reg=0.01", "sweep/m02-reg=0.1"]


def test_extract_writes_the_kmeans_recipes_features(image_folder, tmp_path):
    """Issue 25.4: every extractor flag train.py has reaches extract (the --features kmeans recipe
    sets --power 0.5): the folder holds the features of those very settings."""
    from lintorch.data import load_dataset
    from lintorch.extract import main
    out = tmp_path / "recipe"
    assert main(["--features", "kmeans", "--centroids", "4", "--patches", "500", "--power", "0.5", "--encoding", "soft",
                 "--alpha", "0.3", "--zca-eps", "0.05", "--image-size", "16", "--dataset", "imagefolder",
                 "--data-dir", str(image_folder), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                 "--threads", "1", "--quiet", "--out", str(out)]) == 0
    settings = json.loads((out / "extractor.json").read_text())["settings"]
    assert (settings["power"], settings["encoding"], settings["alpha"], settings["zca_eps"]) == (0.5, "soft", 0.3, 0.05)
    ex = from_state_dict(torch.load(out / "extractor.pt", weights_only=True))
    test = load_dataset("imagefolder", str(image_folder), 16, 12, 0, str(tmp_path / "cache")).test
    te = store.FeatureSplit(str(out), "test")
    assert te.d == 2 * 4 * 4                                             # soft: 2 K codes per region
    torch.testing.assert_close(te.rows(torch.arange(te.n)).float(), ex.transform(test.x))
