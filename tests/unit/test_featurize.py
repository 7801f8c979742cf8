"""data/featurize.py's caches (encoded features, a fitted extractor's state): served only while
their values match the checksum written with them; a file of the right shape and dtype but other
values is encoded or fitted again, with one line saying why."""
import torch

from lintorch.data import Split, featurize
from lintorch.features import make_extractor


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
