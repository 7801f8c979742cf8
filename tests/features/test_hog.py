"""lintorch.features.hog: HOG and the colour histogram against independent references."""
import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from lintorch.features import FeatureError, extract, hog as hogmod, make_extractor
from tests.conftest import FOLDER
from tests.features.conftest import images, random_images, refused
from tests.helpers import train


# --------------------------------------------------------------------------- HOG and hue histogram

def uniform_filter(a, size):
    """scipy.ndimage.uniform_filter(a, size) (mode "reflect", origin 0) in numpy, so the reference needs
    no scipy: the mean over rows i - sx//2 .. i + sx - sx//2 - 1 (likewise columns), edges mirrored."""
    sx, sy = size
    p = np.pad(a, ((sx // 2, sx - 1 - sx // 2), (sy // 2, sy - 1 - sy // 2)), mode="symmetric")
    c = np.pad(p, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return (c[sx:, sy:] - c[:-sx, sy:] - c[sx:, :-sy] + c[:-sx, :-sy]) / (sx * sy)


def test_uniform_filter_is_scipys():
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy (optional) is not installed here")
    a = np.random.default_rng(0).random((32, 30))
    for size in ((8, 8), (3, 5)):
        assert np.allclose(uniform_filter(a, size), ndimage.uniform_filter(a, size=size))


def cs231n_hog_feature(im):
    """cs231n assignment1 features.py hog_feature, verbatim apart from uniform_filter (numpy, above;
    scipy's is the original) (im (H, W, 3) float)."""
    image = np.dot(im[..., :3], [0.299, 0.587, 0.144])
    sx, sy = image.shape
    orientations = 9
    cx, cy = (8, 8)
    gx = np.zeros(image.shape)
    gy = np.zeros(image.shape)
    gx[:, :-1] = np.diff(image, n=1, axis=1)
    gy[:-1, :] = np.diff(image, n=1, axis=0)
    grad_mag = np.sqrt(gx ** 2 + gy ** 2)
    grad_ori = np.arctan2(gy, (gx + 1e-15)) * (180 / np.pi) + 90
    n_cellsx = int(np.floor(sx / cx))
    n_cellsy = int(np.floor(sy / cy))
    orientation_histogram = np.zeros((n_cellsx, n_cellsy, orientations))
    for i in range(orientations):
        temp_ori = np.where(grad_ori < 180 / orientations * (i + 1), grad_ori, 0)
        temp_ori = np.where(grad_ori >= 180 / orientations * i, temp_ori, 0)
        cond2 = temp_ori > 0
        temp_mag = np.where(cond2, grad_mag, 0)
        orientation_histogram[:, :, i] = uniform_filter(temp_mag, size=(cx, cy))[
            round(cx / 2)::cx, round(cy / 2)::cy].T
    return orientation_histogram.ravel()


def test_hog_matches_cs231n(device):
    x = torch.cat([images(3, 32, seed=5), images(2, 32, seed=6, smooth=False)])
    got = hogmod.hog(x.to(device)).cpu().double()
    ref = torch.stack([torch.from_numpy(cs231n_hog_feature(im.permute(1, 2, 0).double().numpy())) for im in x])
    assert got.shape == (5, 144)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-4)


def exact_hue_bin(r, g, b, nbin):
    """matplotlib.colors.rgb_to_hsv's hue (grey -> 0; blue, then green win ties) binned exactly."""
    mx, mn = max(r, g, b), min(r, g, b)
    if mx == mn:
        return 0
    d = Fraction(mx - mn)
    h = 4 + (r - g) / d if b == mx else 2 + (b - r) / d if g == mx else (g - b) / d
    hue = (h / 6) % 1
    return min(nbin - 1, int(hue * nbin))


def test_colorhist_matches_per_pixel_reference(device):
    x = images(3, 8, seed=7, smooth=False)
    x[0, :, 0, 0] = torch.tensor([200, 200, 10])          # red = green max
    x[0, :, 0, 1] = torch.tensor([10, 200, 200])          # green = blue max
    x[0, :, 0, 2] = torch.tensor([255, 0, 153])           # hue exactly 0.9: a bin edge
    for nbin in (10, 7):
        got = hogmod.colorhist(x.to(device), nbin).cpu()
        ref = torch.zeros(3, nbin)
        for n in range(3):
            for i in range(8):
                for j in range(8):
                    ref[n, exact_hue_bin(*x[n, :, i, j].tolist(), nbin)] += 1 / 64
        assert torch.allclose(got, ref, atol=1e-6), nbin
        assert torch.allclose(got.sum(1), torch.ones(3))


def test_hog_colorhist_concatenation():
    x = images(4, 32, seed=8)
    ex = make_extractor("hog,colorhist")
    f = extract(ex, x, batch_size=3)
    assert f.shape == (4, ex.dim) == (4, 154)
    assert torch.equal(f, torch.cat([hogmod.hog(x), hogmod.colorhist(x)], 1))


# --------------------------------------------------------------------------- preconditions, with the flags' names

def test_hog_needs_one_cell():
    refused(make_extractor("hog", image_size=4), 4, "hog", "--image-size is 4", "8 px")
    make_extractor("hog", image_size=8).check_settings(8)
    with pytest.raises(FeatureError, match="--image-size"):
        make_extractor("hog", image_size=4).transform(random_images(2, 4))          # the Python API asks too


def test_hog_colorhist_run_learns(image_folder, tmp_path):
    logdir = tmp_path / "hog"
    assert train(*FOLDER, "--data-dir", str(image_folder), "--features", "hog,colorhist",
                 "--logdir", str(logdir)) == 0
    m = json.loads((logdir / "metrics.json").read_text())
    assert m["val_acc"] > 0.5
    assert torch.load(logdir / "checkpoint.pt", weights_only=True)["in_features"] == 4 * 9 + 10
