"""Hostile extractor settings and non-finite features (issue 20, classes B and C): every extractor
states what it needs (Extractor.check_settings) and is asked before any work; features that come
out NaN/inf are refused where every path makes them (features.batches_of_features), and the
L-BFGS preconditioner's Cholesky loop ends on a NaN Gram instead of spinning forever."""
import pytest
import torch

from lintorch.features import BackboneError, FeatureError, batches_of_features, extract, make_extractor
from lintorch.features.base import Pixels


def images(n=4, size=32, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def refused(ex, image_size, *words, error=FeatureError):
    with pytest.raises(error) as e:
        ex.check_settings(image_size)
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)
    return str(e.value)


# --------------------------------------------------------------------------- B: preconditions, with the flags' names

def test_b_hog_needs_one_cell():
    refused(make_extractor("hog", image_size=4), 4, "hog", "--image-size is 4", "8 px")
    make_extractor("hog", image_size=8).check_settings(8)
    with pytest.raises(FeatureError, match="--image-size"):
        make_extractor("hog", image_size=4).transform(images(2, 4))          # the Python API asks too


def test_b_kmeans_needs_as_many_patches_as_centroids():
    refused(make_extractor("kmeans", k=50, patches=10), 32, "--patches 10", "--centroids 50")
    refused(make_extractor("kmeans", k=1, patches=1), 32, "--patches 1", ">= 2")
    make_extractor("kmeans", k=4, patches=4).check_settings(32)
    with pytest.raises(FeatureError, match="--patches"):                   # fit asks as well
        make_extractor("kmeans", k=50, patches=10).fit(images())


def test_b_kmeans_image_too_small_names_image_size_and_pool_only_when_it_helps():
    msg = refused(make_extractor("kmeans", k=2, patches=10, pool=1), 5, "--image-size is 5", "6 px")
    assert "--pool" not in msg                        # at pool 1 lowering --pool cannot help
    assert "lower --pool" in refused(make_extractor("kmeans", k=2, patches=10, pool=3), 7, "8 px")


def test_b_a_concatenation_asks_every_part():
    refused(make_extractor("colorhist,hog", image_size=4), 4, "hog")


def test_b_a_torchvision_model_that_cannot_take_the_input_size_says_so():
    refused(make_extractor("torchvision:alexnet", input_size=16), 32, "torchvision:alexnet", "--input-size 16",
            error=BackboneError)


@pytest.mark.slow
def test_b_vit_at_another_input_size_says_so():
    refused(make_extractor("torchvision:vit_b_16", input_size=32), 32, "--input-size 32", "224", error=BackboneError)


@pytest.mark.parametrize("argv, words", [
    (["--features", "hog", "--loader", "dataloader"], ["--loader dataloader", "pixels"]),
    (["--centroids", "8"], ["--centroids", "kmeans"]),
    (["--features", "hog", "--backbone-weights", "DEFAULT", "--input-size", "64"],
     ["--backbone-weights, --input-size", "torchvision:<model>"]),
    (["--dataset", "features", "--pool", "3"], ["--pool", "feature folder"]),
])
def test_b_train_flags_that_would_be_ignored_or_fail_are_usage_errors(capsys, argv, words):
    from lintorch.config import parse_args
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    for w in words:
        assert w in err, err


def test_b_extract_flags_that_would_be_ignored_are_usage_errors(capsys):
    from lintorch.extract import parse_args
    with pytest.raises(SystemExit) as e:
        parse_args(["--features", "hog", "--centroids", "9", "--out", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--centroids configures --features kmeans" in err
    assert parse_args(["--features", "hog,kmeans", "--centroids", "9", "--out", "x"]).centroids == 9


@pytest.mark.parametrize("argv, words", [
    (["--features", "hog", "--image-size", "4"], ["hog", "--image-size is 4"]),
    (["--features", "kmeans", "--centroids", "50", "--patches", "10"], ["--patches 10", "--centroids 50"]),
    (["--features", "torchvision:alexnet", "--input-size", "16"], ["--input-size 16"]),
])
def test_b_extract_refuses_before_any_work_and_leaves_no_husk(tmp_path, capsys, argv, words):
    from lintorch.extract import main
    out = tmp_path / "out"
    code = main([*argv, "--dataset", "imagefolder", "--data-dir", str(tmp_path / "no-images-needed"),
                 "--out", str(out), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, err
    assert not out.exists()


# --------------------------------------------------------------------------- C: non-finite features

def nan_transform(self, x):
    """Pixels' features with one NaN in each batch's second row."""
    f = x.reshape(x.shape[0], -1).float()
    f[1, 0] = float("nan")
    return f


class NaNPixels(Pixels):
    transform = nan_transform


def test_c_non_finite_features_are_refused_where_they_are_made():
    with pytest.raises(FeatureError, match="image 1 .*NaN/inf"):
        extract(NaNPixels(image_size=8), images(4, 8), batch_size=4)
    with pytest.raises(FeatureError, match="image 1 "):
        list(batches_of_features(NaNPixels(image_size=8), images(8, 8), batch_size=4))


def test_c_extract_of_non_finite_features_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch, image_folder):
    from lintorch import extract as extract_mod
    from lintorch.features import base
    monkeypatch.setattr(base.Pixels, "transform", nan_transform)
    out = tmp_path / "out"
    code = extract_mod.main(["--features", "pixels", "--dataset", "imagefolder", "--data-dir", str(image_folder),
                             "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--device", "cpu",
                             "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "NaN/inf" in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "train.npy").exists() and not (out / "extractor.json").exists()


def test_c_cholesky_of_a_nan_gram_is_an_error_not_a_hang(deadline):
    from lintorch.optim.lbfgs import _cholesky
    G = torch.eye(3, dtype=torch.float64)
    G[1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN/inf"):
        _cholesky(G, 1e-8)
    G[1, 2] = float("inf")
    with pytest.raises(FloatingPointError):
        _cholesky(G, 1e-8)
    with pytest.raises(FloatingPointError, match="no Cholesky factor"):      # finite but hopeless: bounded
        _cholesky(-1e300 * torch.eye(3, dtype=torch.float64), 1e-8)
    L = _cholesky(torch.zeros(3, 3, dtype=torch.float64), 1e-8)           # singular: shifted until it exists
    assert torch.allclose(L @ L.T, 1e-8 * torch.eye(3, dtype=torch.float64))


def test_c_gram_preconditioner_on_non_finite_inputs_is_an_error():
    from lintorch.optim.lbfgs import gram_preconditioners

    class Loader:
        def batches(self, epoch=0):
            x = torch.randn(8, 3)
            x[2, 1] = float("inf")
            yield x, torch.zeros(8, dtype=torch.long)
    with pytest.raises(FloatingPointError):
        gram_preconditioners(Loader(), [1e-3], 2)
