"""Feature extractors (issue 9) against independent per-patch / per-pixel references, the feature
store and its streaming loader. The extract command: tests/integration/test_features_run.py (in this
process) and tests/cli/test_features_cli.py."""
import math
import os
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lintorch.data import Preprocess
from lintorch.errors import BackboneError, FeatureError
from lintorch.features import extract, from_state_dict, make_extractor
from lintorch.features import hog as hogmod
from lintorch.features import kmeans as km
from lintorch.features import store
from lintorch.data.loaders import epoch_order


def images(n, size=32, seed=0, smooth=True):
    """uint8 (n, 3, size, size): smooth blobs plus noise, with flat and saturated regions (edge cases)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4 if smooth else size, 4 if smooth else size, generator=g) * 300 - 20
    x = F.interpolate(x, size=(size, size), mode="bilinear") if smooth else x
    x = x + 30 * torch.randn(n, 3, size, size, generator=g)
    x[:, :, : size // 4, : size // 4] = 128                                 # a flat grey corner
    return x.round().clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- k-means features

def reference_kmeans_features(x, state, rf=6, pool=2, encoding="triangle", alpha=0.25, power=1.0):
    """Every patch with explicit loops, normalised, whitened, torch.cdist, triangle (or soft threshold
    with polarity split over unit-length centroids), sums over a pool x pool grid whose region edges are
    MATLAB's round(L i / pool), each sum raised to power (float64)."""
    N, _, S, _ = x.shape
    L = S - rf + 1
    edges = [math.floor(Fraction(L * i, pool) + Fraction(1, 2)) for i in range(1, pool)]   # round half up
    C, m, Z = (state[k].double() for k in ("centroids", "mean", "zca"))
    K = C.shape[0] * (2 if encoding == "soft" else 1)
    out = torch.zeros(N, pool * pool, K, dtype=torch.float64)
    for n in range(N):
        for i in range(L):
            for j in range(L):
                p = x[n, :, i:i + rf, j:j + rf].double().reshape(-1)
                p = (p - p.mean()) / (p.var() + 10).sqrt()
                w = (p - m) @ Z
                if encoding == "soft":
                    d = torch.stack([w @ (c / c.norm()) for c in C])
                    f = torch.cat([(d - alpha).clamp_min(0), (-d - alpha).clamp_min(0)])
                else:
                    z = torch.cdist(w[None], C)[0]
                    f = (z.mean() - z).clamp_min(0)
                row, col = sum(i >= e for e in edges), sum(j >= e for e in edges)
                out[n, row + pool * col] += f          # pool 2: TL, BL, TR, BR as in Coates' code
    return (out ** power).reshape(N, -1)


@pytest.fixture(scope="module")
def kstate():
    return km.learn(images(40, 16, seed=1), k=7, patches=3000, iterations=5, seed=0)


@pytest.mark.parametrize("method", km.METHODS)
def test_kmeans_encoding_matches_per_patch_reference(kstate, method):
    x = images(3, 13, seed=2)                      # L = 8: even quadrants; 13 - 6 + 1 = 8
    ref = reference_kmeans_features(x, kstate)
    got = km.encode(x, kstate, method=method, batch_size=2).double()
    assert got.shape == (3, 4 * 7)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    x = images(2, 12, seed=3)                      # L = 7: MATLAB's round(3.5) = 4 rows on top
    ref = reference_kmeans_features(x, kstate)
    got = km.encode(x, kstate, method=method, batch_size=2).double()
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("method", km.METHODS)
@pytest.mark.parametrize("size,pool", [(13, 3), (12, 3), (14, 4), (8, 1)])
def test_kmeans_grid_pooling_matches_per_patch_reference(kstate, method, size, pool):
    """--pool: L = 8 in 3 regions (3, 2, 3 rows), L = 7 in 3 (2, 3, 2), L = 9 in 4, L = 3 in 1."""
    x = images(2, size, seed=4)
    ref = reference_kmeans_features(x, kstate, pool=pool)
    got = km.encode(x, kstate, method=method, batch_size=2, pool=pool).double()
    assert got.shape == (2, pool * pool * 7)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    ex = make_extractor("kmeans", k=7, pool=pool, method=method).load_state(kstate)
    assert ex.dim == pool * pool * 7 and torch.equal(ex.transform(x), got.float())


@pytest.mark.parametrize("method", km.METHODS)
@pytest.mark.parametrize("encoding,alpha,power,pool", [("soft", 0.25, 1.0, 2), ("soft", 1.0, 0.5, 3),
                                                       ("triangle", 0.25, 0.5, 2)])
def test_kmeans_soft_threshold_and_power_match_per_patch_reference(kstate, method, encoding, alpha, power, pool):
    """encoding "soft" (polarity split: 2 K codes per region) and power 0.5 (the signed square root)."""
    x = images(2, 13, seed=5)
    ref = reference_kmeans_features(x, kstate, pool=pool, encoding=encoding, alpha=alpha, power=power)
    ex = make_extractor("kmeans", k=7, pool=pool, method=method, encoding=encoding, alpha=alpha,
                        power=power).load_state(kstate)
    got = ex.transform(x).double()
    assert got.shape == (2, ex.dim) and ex.dim == pool * pool * 7 * (2 if encoding == "soft" else 1)
    assert (ref > 0).float().mean() > 0.2          # the threshold leaves codes to compare
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_kmeans_zca_eps_changes_the_whitening():
    x = images(20, 16, seed=6)
    a, b = (km.learn(x, k=3, patches=2000, iterations=2, zca_eps=e)["zca"] for e in (0.1, 1.0))
    assert not torch.allclose(a, b)
    p = km.normalize_patches(km.sample_patches(x, 2000))
    m, Z = km.fit_zca(p, 1.0)
    e, V = torch.linalg.eigh(torch.cov(p.double().T))
    assert torch.allclose(Z.double(), (V * (e.clamp_min(0) + 1.0).rsqrt()) @ V.T, atol=1e-5)


def test_kmeans_pool_larger_than_the_image_is_one_line_error(kstate):
    ex = make_extractor("kmeans", k=7, pool=5).load_state(kstate)
    with pytest.raises(FeatureError, match="lower --pool"):
        ex.transform(images(1, 8))                 # L = 3 positions per side, 5 regions asked


def test_sampled_patches_are_patches_of_the_images():
    x = images(2, 10, seed=4)
    p = km.sample_patches(x, 50, rf=6, seed=0)                          # (50, 108)
    allp = F.unfold(x.float(), 6).transpose(1, 2)                     # (2, 25, 108)
    for i in range(50):                                               # patch i comes from image i mod 2
        assert (allp[i % 2] == p[i]).all(1).any()


def test_zca_whitens_and_kmeans_recovers_clusters_and_reseeds_empty_ones():
    g = torch.Generator().manual_seed(0)
    p = km.normalize_patches(torch.rand(5000, 12, generator=g) * 255)
    assert torch.allclose(p.mean(1), torch.zeros(5000), atol=1e-4)
    m, Z = km.fit_zca(p)
    w = ((p - m) @ Z).double()
    cov, e = torch.cov(w.T), torch.linalg.eigvalsh(torch.cov(p.double().T))
    # white up to the eps: eigenvalues e / (e + 0.1)
    assert torch.allclose(torch.linalg.eigvalsh(cov), (e / (e + km.ZCA_EPS)).sort().values, atol=1e-3)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    X = centers.repeat(200, 1) + 0.1 * torch.randn(600, 2, generator=g)
    C = km.kmeans(X, 3, iterations=10, batch_size=128)
    lab = torch.cdist(X, C).argmin(1)                                  # Lloyd's fixed point: C = cluster means
    assert torch.allclose(C, torch.stack([X[lab == k].mean(0) for k in range(3)]), atol=1e-5)
    X = torch.cat([X[:600:3], X[1:600:3], X[2:600:3]])                  # seeds in every cluster: found exactly
    C = km.kmeans(X, 3, iterations=10, batch_size=128, seed=3)
    assert torch.cdist(C, centers).min(0).values.max() < 0.1
    C = km.kmeans(centers.repeat(10, 1), 6, iterations=3)              # 3 distinct points, 6 clusters
    assert torch.isfinite(C).all()


def test_centroid_grid_is_an_image(kstate):
    for dewhiten in (False, True):
        g = km.centroid_grid(kstate, dewhiten=dewhiten, scale=2)
        assert g.dtype == torch.uint8 and g.shape[0] == 3 and g.shape[1] == g.shape[2]


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


# --------------------------------------------------------------------------- registry, state, fingerprint

def test_registry_state_dict_round_trip_and_fingerprints(tmp_path):
    x = images(20, 16, seed=9)
    ex = make_extractor("kmeans", k=5, patches=500, iterations=3).fit(x)
    path = tmp_path / "ex.pt"
    torch.save(ex.state_dict(), path)
    back = from_state_dict(torch.load(path, weights_only=True))
    assert from_state_dict(ex.state_dict()).fingerprint() == ex.fingerprint()
    assert back.fingerprint() == ex.fingerprint()
    assert torch.equal(extract(back, x[:3]), extract(ex, x[:3]))
    fp = {make_extractor(n, **s).fingerprint()
          for n, s in [("kmeans", {"k": 5}), ("kmeans", {"k": 6}), ("kmeans", {"patches": 10}), ("hog", {}),
                       ("colorhist", {}), ("colorhist", {"nbin": 12}), ("hog,colorhist", {}), ("pixels", {})]}
    assert len(fp) == 8
    assert ex.fingerprint() != make_extractor("kmeans", k=5, patches=500, iterations=3).fingerprint()
    refit = make_extractor("kmeans", k=5, patches=500, iterations=3, seed=1).fit(x)
    assert refit.fingerprint() != ex.fingerprint()
    same = make_extractor("kmeans", k=5, patches=500, iterations=3, method="conv").fit(x)  # how, not what
    assert same.fingerprint() == ex.fingerprint()
    hc = make_extractor("hog,colorhist", nbin=12)
    assert from_state_dict(hc.state_dict()).fingerprint() == hc.fingerprint()


def test_registry_errors():
    for name, settings in [("sift", {}), ("kmeans", {"bins": 3}), ("", {})]:
        with pytest.raises(FeatureError) as e:
            make_extractor(name, **settings)
        assert "\n" not in str(e.value)
    with pytest.raises(FeatureError, match="not fitted"):
        make_extractor("kmeans", k=3).transform(images(1, 16))


# --------------------------------------------------------------------------- torchvision backbones

@pytest.mark.parametrize("model,size,dim", [("mobilenet_v3_small", 64, 1024), ("resnet18", 32, 512)])
def test_torchvision_backbone_random_weights_end_to_end(tmp_path, model, size, dim):
    x = images(3, 32, seed=10)
    ex = make_extractor(f"torchvision:{model}", input_size=size)
    f = extract(ex, x, batch_size=2)
    assert f.shape == (3, dim) == (3, ex.dim) and torch.isfinite(f).all()
    assert torch.allclose(f, extract(make_extractor(f"torchvision:{model}", input_size=size), x), atol=1e-5)
    # the same weights from a file: same features, and the file's sha256 is recorded
    from torchvision.models import get_model
    torch.manual_seed(0)
    net = get_model(model, weights=None)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    exf = make_extractor(f"torchvision:{model}", input_size=size, weights=str(tmp_path / "w.pt"))
    assert torch.allclose(extract(exf, x), f, atol=1e-5)
    assert len(exf.state["weights"]["sha256"]) == 64 and exf.fingerprint() != ex.fingerprint()


@pytest.mark.parametrize("model,size", [("vit_b_16", 224), ("convnext_tiny", 64), ("efficientnet_b0", 64),
                                        ("densenet121", 64), ("regnet_y_400mf", 64), ("mobilenet_v3_small", 64)])
def test_torchvision_head_removal_across_families(model, size):
    """Each family's head (fc, classifier Linear or Sequential, heads.head) is removed: the features
    have the width of the input of the model's own last Linear (read from a fresh torchvision model)."""
    from torchvision.models import get_model
    net = get_model(model, weights=None)
    head = next(getattr(net, a) for a in ("fc", "classifier", "heads", "head") if hasattr(net, a))
    expected = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1].in_features
    f = extract(make_extractor(f"torchvision:{model}", input_size=size), images(2, 32, seed=11), batch_size=2)
    assert f.shape == (2, expected) and torch.isfinite(f).all()


def test_torchvision_named_weights_without_network_is_one_line_error(tmp_path, monkeypatch):
    from urllib.error import URLError
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))           # an empty hub cache

    def offline(*a, **k):
        raise URLError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    for model, weights, match in [("mobilenet_v3_small", "DEFAULT", "no network"),
                                  ("mobilenet_v3_small", "NOPE", "no weights"),
                                  ("not_a_model", None, "unknown torchvision model")]:
        with pytest.raises(BackboneError, match=match) as e:
            make_extractor(f"torchvision:{model}", weights=weights).fit(images(1, 32))
        assert "\n" not in str(e.value)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(BackboneError, match="not a readable torch file"):
        make_extractor("torchvision:resnet18", weights=str(tmp_path / "bad.pt")).fit(images(1, 32))


# --------------------------------------------------------------------------- store

def write_store(folder, fmt, n=50, d=6, dtype=torch.float32, classes=("a", "b", "c")):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, d, generator=g) * 3 + 1, torch.randint(0, len(classes), (n,), generator=g)
    store.write_classes(folder, classes)
    store.save_split(folder, "train", x, y, fmt=fmt, dtype=dtype, chunk=16)
    return x, y


@pytest.mark.parametrize("fmt", store.FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_store_round_trip_and_loader_order(tmp_path, fmt, dtype):
    x, y = write_store(tmp_path, fmt, dtype=dtype)
    s = store.FeatureSplit(str(tmp_path), "train")
    assert (s.n, s.d, s.dtype, s.classes) == (50, 6, dtype, ["a", "b", "c"])
    xs = x.to(dtype).float()
    st = Preprocess.fit_features(xb for _, xb in s.chunks())
    assert torch.allclose(st.mean, xs.mean(0), atol=1e-5)
    assert torch.allclose(st.std, xs.std(0, unbiased=False), atol=1e-4)
    loader = store.FeatureLoader(s, 16, "cpu", seed=3, standardizer=st)
    assert len(loader) == 4
    order = epoch_order(50, 3, 2)
    got = list(loader.batches(epoch=2, start=1))
    assert len(got) == 3
    for b, (xb, yb) in enumerate(got, start=1):
        idx = order[b * 16:(b + 1) * 16]
        assert xb.dtype == torch.float32 and yb.dtype == torch.int64
        assert torch.allclose(xb, (xs[idx] - st.mean) / st.std, atol=1e-5)
        assert torch.equal(yb, y[idx])


def test_store_bad_files_are_one_line_errors(tmp_path):
    def expect(folder, match):
        with pytest.raises(FeatureError, match=match) as e:
            store.FeatureSplit(str(folder), "train")
        assert "\n" not in str(e.value)

    expect(tmp_path / "missing", "no classes.json")
    cases = {
        "nan": lambda d: (np.save(d / "train.npy", np.array([[1.0, np.nan]] * 3, np.float32)),
                          np.save(d / "train_labels.npy", np.zeros(3, np.int64))),
        "range": lambda d: (np.save(d / "train.npy", np.ones((3, 2), np.float32)),
                            np.save(d / "train_labels.npy", np.array([0, 1, 3]))),
        "shape": lambda d: (np.save(d / "train.npy", np.ones((3, 2, 1), np.float32)),
                            np.save(d / "train_labels.npy", np.zeros(3, np.int64))),
        "dtype": lambda d: (np.save(d / "train.npy", np.ones((3, 2), np.float64)),
                            np.save(d / "train_labels.npy", np.zeros(3, np.int64))),
        "count": lambda d: (np.save(d / "train.npy", np.ones((3, 2), np.float32)),
                            np.save(d / "train_labels.npy", np.zeros(4, np.int64))),
        "nolabels": lambda d: np.save(d / "train.npy", np.ones((3, 2), np.float32)),
        "truncated": lambda d: (np.save(d / "train.npy", np.ones((300, 2), np.float32)),
                                np.save(d / "train_labels.npy", np.zeros(300, np.int64)),
                                os.truncate(d / "train.npy", 1000)),
        "garbage": lambda d: (d / "train.npy").write_bytes(b"hello"),
        "badpt": lambda d: (d / "train.pt").write_bytes(b"hello"),
        "ptkeys": lambda d: torch.save({"x": torch.ones(3, 2)}, d / "train.pt"),
        "ptlabels": lambda d: torch.save({"x": torch.ones(3, 2), "y": torch.ones(3)}, d / "train.pt"),
        "nofile": lambda d: None,
    }
    matches = {"nan": "row 0 holds NaN", "range": "outside 0..2", "shape": "expected a C-order", "dtype": "float64",
               "count": "3 feature rows", "nolabels": "no labels file", "truncated": "truncated",
               "garbage": "not a NumPy", "badpt": "not a readable torch", "ptkeys": "must hold a dict",
               "ptlabels": "integer labels", "nofile": "no train.npy"}
    for name, make in cases.items():
        d = tmp_path / name
        d.mkdir()
        store.write_classes(d, ["a", "b", "c"])
        make(d)
        expect(d, matches[name])
