"""lintorch.data.featurize: the feature and extractor caches, served only while they match, rebuilt or refused
otherwise."""
import errno
import json
import os

import pytest
import torch

from lintorch.config import parse_args
from lintorch.data import Split, featurize
from lintorch.features import from_state_dict, make_extractor
from tests.conftest import FOLDER, KMEANS, train_auto_threads
from tests.helpers import train


def images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 2)


def test_zeroed_feature_cache_is_not_served(tmp_path, caplog):
    ex = make_extractor("colorhist")
    imgs = images()
    digest = featurize._images_hash(imgs)
    good = featurize._encode(ex, imgs, "train", str(tmp_path), "cpu", 4, digest).x
    assert good.abs().sum() > 0
    (path,) = tmp_path.glob("features-train-*.pt")
    saved = torch.load(path, weights_only=True)
    for tampered in (torch.zeros_like(good), good.flip(0), good + 1e-3):
        torch.save({**saved, "x": tampered}, path)
        caplog.clear()
        x = featurize._encode(ex, imgs, "train", str(tmp_path), "cpu", 4, digest).x
        assert torch.equal(x, good)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "checksum" in lines[0] and "extracting again" in lines[0], lines
    caplog.clear()
    assert torch.equal(featurize._encode(ex, imgs, "train", str(tmp_path), "cpu", 4, digest).x, good)
    assert not caplog.records                          # the rewritten cache is served, quietly


def test_changed_extractor_cache_is_fitted_again(tmp_path, caplog):
    kw = {"k": 4, "patches": 200, "seed": 0, "image_size": 8}
    imgs = images(20)
    digest = featurize._images_hash(imgs)
    fitted = featurize._fit(make_extractor("kmeans", **kw), imgs, str(tmp_path), "cpu", digest)
    (path,) = tmp_path.glob("extractor-*.pt")
    saved = torch.load(path, weights_only=True)
    state = saved["state"]
    name = next(k for k, v in state.items() if torch.is_tensor(v) and v.numel() > 1)
    torch.save({**saved, "state": {**state, name: torch.zeros_like(state[name])}}, path)
    caplog.clear()
    again = featurize._fit(make_extractor("kmeans", **kw), imgs, str(tmp_path), "cpu", digest)
    assert "checksum" in caplog.text and "fitting again" in caplog.text
    assert torch.equal(again.state[name], fitted.state[name])
    assert again.state[name].abs().sum() > 0


def cfg(*argv):
    from lintorch.config import parse_args
    return parse_args(["--dataset", "imagefolder", "--data-dir", "d", *map(str, argv)])


def test_constant_features_are_refused_naming_the_settings():
    import pytest
    from lintorch.errors import FeatureError
    ex = make_extractor("kmeans", k=4, patches=50, image_size=8, encoding="soft", alpha=1e30)
    with pytest.raises(FeatureError) as e:
        featurize.check_informative(torch.zeros(10, 8), ex, cfg("--features", "kmeans", "--centroids", 4, "--lr", 0.1,
                                                                "--encoding", "soft", "--alpha", 1e30))
    text = str(e.value)
    assert "every one of the 8" in text and "--alpha 1e+30" in text and "--encoding soft" in text
    assert "preset" not in text                             # a classifier flag given: no preset applied
    with pytest.raises(FeatureError) as e:               # a preset's flag is named as the preset's
        featurize.check_informative(torch.ones(10, 8), ex, cfg("--features", "kmeans", "--encoding", "soft",
                                                               "--alpha", 1e30))
    assert "--power 0.5 (set by the --features kmeans preset)" in str(e.value)
    assert "--alpha 1e+30 (set" not in str(e.value)                 # typed: not the preset's


def test_mostly_constant_features_are_a_warning_and_varied_ones_pass(caplog):
    ex = make_extractor("colorhist")
    x = torch.zeros(10, 8)
    x[:, 0] = torch.arange(10.0)
    featurize.check_informative(x, ex, cfg("--features", "colorhist"))
    assert "7 of the 8" in caplog.text
    caplog.clear()
    featurize.check_informative(torch.randn(10, 8), ex, cfg("--features", "colorhist"))
    assert not caplog.records


def test_a_run_with_all_zero_features_is_refused_before_training(tmp_path, capsys):
    from tests.helpers import image_tree, train
    image_tree(tmp_path / "data")
    run = tmp_path / "run"
    status = train("--dataset", "imagefolder", "--data-dir", tmp_path / "data", "--image-size", 8, "--val-size", 2,
                   "--features", "kmeans", "--centroids", 2, "--patches", 20, "--encoding", "soft", "--alpha", 1e30,
                   "--quiet", "--device", "cpu", "--logdir", run)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "--alpha 1e+30" in err[0] and "can only guess" in err[0], err
    assert not run.exists()


def test_feature_cache_of_another_width_or_with_nan_is_extracted_again(tmp_path, caplog):
    from lintorch.data import Split
    from lintorch.features import make_extractor
    ex = make_extractor("colorhist")
    imgs = Split(torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8), torch.arange(5) % 2)
    digest = featurize._images_hash(imgs)
    good = featurize._encode(ex, imgs, "train", str(tmp_path), "cpu", 4, digest).x
    (path,) = tmp_path.glob("features-train-*.pt")
    for bad in (torch.zeros(5, ex.dim + 1), torch.full((5, ex.dim), float("nan")), torch.zeros(4, ex.dim)):
        torch.save(bad, path)
        caplog.clear()
        assert torch.equal(featurize._encode(ex, imgs, "train", str(tmp_path), "cpu", 4, digest).x, good)
        assert "extracting again" in caplog.text


# --------------------------------------------------------------------------- the feature cache

@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_a_cache_write_that_fails_is_a_warning_and_leaves_no_temporary(tmp_path, monkeypatch, caplog, error):
    def full_disk(obj, f):
        f.write(b"\0" * 100)
        raise error
    monkeypatch.setattr(torch, "save", full_disk)
    path = tmp_path / "features-train-abc.pt"
    featurize._save_cache(torch.zeros(3), str(tmp_path), str(path), "feature")
    assert "could not write the feature cache" in caplog.text and "\n" not in caplog.text.strip()
    assert os.listdir(tmp_path) == []


def test_dead_writers_temporaries_are_removed_live_ones_kept(tmp_path):
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=60)
    dead_pid = int(dead.stdout)
    for name in (f"features-train-k.pt.tmp{dead_pid}", f"extractor-kmeans-k.pt.tmp{dead_pid}"):
        (tmp_path / name).write_bytes(b"\0")
    live = tmp_path / f"features-val-k.pt.tmp{os.getppid()}"
    live.write_bytes(b"\0")
    featurize._save_cache(torch.zeros(3), str(tmp_path), str(tmp_path / "features-test-k.pt"), "feature")
    assert sorted(os.listdir(tmp_path)) == sorted(["features-test-k.pt", live.name])


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


def test_feature_cache_keeps_cuda_and_cpu_features_apart(emulated, image_folder, tmp_path):
    cache = tmp_path / "cache"
    argv = ["--dataset", "imagefolder", "--data-dir", image_folder, "--image-size", 16, "--features", "hog",
            "--epochs", 1, "--quiet", "--threads", 1, "--cache-dir", cache, "--val-size", 12]
    assert train_auto_threads(*argv, "--device", "cpu", "--logdir", tmp_path / "cpu") == 0
    on_cpu = sorted(p.name for p in cache.glob("features-*"))
    with emulated():
        assert train_auto_threads(*argv, "--device", "cuda", "--logdir", tmp_path / "cuda") == 0
    both = sorted(p.name for p in cache.glob("features-*"))
    assert on_cpu and len(both) == 2 * len(on_cpu) and set(on_cpu) < set(both)
