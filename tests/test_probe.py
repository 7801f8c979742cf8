"""lintorch.LinearProbe: scikit-learn's conventions, the same core as train.py (equal
weights), paths of reg values, every input form, bad input as ValueError naming the argument,
save/load through the checkpoint owner."""
import json
import shutil

import numpy as np
import pytest
import torch

import lintorch
from lintorch import LinearProbe
from tests.helpers import train


def blobs(n=600, d=12, c=3, seed=0, labels=None):
    g = torch.Generator().manual_seed(seed)
    centers = 2.5 * torch.randn(c, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g) + 4.0      # off-centre: standardization matters
    return x, (y if labels is None else torch.tensor(labels)[y])


@pytest.fixture(scope="module")
def feature_folder(tmp_path_factory):
    from lintorch.features.store import save_split, write_classes
    x, y = blobs(500)
    folder = tmp_path_factory.mktemp("feats")
    write_classes(str(folder), ["0", "1", "2"])
    save_split(str(folder), "train", x, y)
    return folder


# ----------------------------------------------------------------------------- scikit-learn's protocol

def test_constructor_arguments_are_stored_as_given_and_round_trip_through_get_set_params():
    reg = [1e-4, 1e-3]
    p = LinearProbe(loss="svm", reg=reg, epochs=4)
    assert p.reg is reg and p.loss == "svm" and p.epochs == 4 and p.solver == "auto"
    params = p.get_params()
    assert params["reg"] is reg and set(params) >= {"loss", "svm_form", "squared_hinge", "margin", "penalty", "reg",
                                                    "class_weight", "solver", "lr", "epochs", "batch_size", "momentum",
                                                    "schedule", "max_iter", "tol", "standardize", "device", "seed",
                                                    "logdir", "verbose", "validation_fraction", "refit"}
    q = type(p)(**params)                                     # what sklearn.base.clone does
    assert q.get_params() == params
    assert p.set_params(reg=0.1, loss="softmax") is p and p.reg == 0.1
    with pytest.raises(ValueError, match="invalid parameter 'regularization'"):
        p.set_params(regularization=1)
    with pytest.raises(TypeError):
        LinearProbe(1e-3)                                      # keyword-only, like scikit-learn's


def test_fit_returns_self_with_the_fitted_attributes_on_arbitrary_integer_labels():
    x, y = blobs(labels=[-3, 7, 100])
    p = LinearProbe(seed=1)
    assert p.fit(x, y) is p
    assert p.classes_.tolist() == [-3, 7, 100] and p.n_features_in_ == 12
    assert p.coef_.shape == (3, 12) and p.intercept_.shape == (3,)
    assert isinstance(p.n_iter_, int) and p.n_iter_ > 0
    assert set(p.predict(x[:50]).tolist()) <= {-3, 7, 100}
    assert p.score(x, y) > 0.95
    s = p.decision_function(x[:20])
    assert s.shape == (20, 3)
    # coef_ and intercept_ act on the features as given (the standardization folded in)
    torch.testing.assert_close(x[:20] @ p.coef_.T + p.intercept_, s, rtol=1e-4, atol=1e-4)
    proba = p.predict_proba(x[:20])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert (proba.argmax(1) == s.argmax(1).numpy()).all()


def test_predict_proba_is_for_softmax_only():
    x, y = blobs()
    p = LinearProbe(loss="svm", solver="sgd", epochs=2).fit(x, y)
    with pytest.raises(AttributeError, match="loss='softmax'"):
        p.predict_proba(x)
    assert p.score(x, y) > 0.9


def test_scikit_learn_clone_and_cross_val_score_work_without_lintorch_importing_it():
    sklearn = pytest.importorskip("sklearn", reason="scikit-learn is optional: the protocol test needs it")
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score
    x, y = blobs()
    p = LinearProbe(reg=1e-3, seed=2)
    c = clone(p)
    assert c is not p and c.get_params() == p.get_params()
    scores = cross_val_score(p, x.numpy(), y.numpy(), cv=3)
    assert scores.shape == (3,) and scores.min() > 0.9
    assert sklearn.base.is_classifier(p)


@pytest.mark.slow
def test_lintorch_does_not_import_scikit_learn():
    import subprocess
    import sys
    code = ("import sys, torch, lintorch\nx = torch.randn(200, 4); y = (x[:, 0] > 0).long()\n"
            "lintorch.LinearProbe(epochs=1).fit(x, y)\nprint('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]


# ----------------------------------------------------------------------------- one core with train.py

@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_fit_ends_at_train_py_dataset_features_weights(feature_folder, tmp_path, solver):
    """The same data and flags through train.py --dataset features and LinearProbe.fit: the same
    weights (bit for bit when both stream the file; to float rounding from a tensor)."""
    from lintorch.output.checkpoint import load_model
    flags = ["--optimizer", solver, "--reg", "1e-3"] + (["--epochs", "3", "--lr", "0.01"] if solver == "sgd" else [])
    run = tmp_path / "run"
    assert train("--dataset", "features", "--data-dir", feature_folder, "--val-size", 100, "--quiet",
                 "--logdir", run, *flags) == 0
    want = load_model(str(run / "checkpoint.pt"))
    kw = dict(solver=solver, reg=1e-3, validation_fraction=0.2, **({"epochs": 3, "lr": 0.01} if solver == "sgd" else {}))
    streamed = np.load(feature_folder / "train.npy", mmap_mode="r")
    labels = np.load(feature_folder / "train_labels.npy")
    torch.set_num_threads(1)
    p = LinearProbe(**kw).fit(streamed, labels)
    assert torch.equal(p._W, want.weight) and torch.equal(p._b, want.bias)
    q = LinearProbe(**kw).fit(torch.from_numpy(np.array(streamed)), torch.from_numpy(labels))
    torch.testing.assert_close(q._W, want.weight, rtol=1e-5, atol=1e-6)
    assert q.path_[0]["val_acc"] == json.loads((run / "metrics.json").read_text())["val_acc"]


def test_a_reg_sequence_is_one_stacked_path_with_the_best_member_kept(tmp_path):
    x, y = blobs(800, d=30, seed=3)
    regs = [1e-5, 1e-3, 1e-1, 1.0]
    p = LinearProbe(reg=regs, seed=0).fit(x, y)
    assert [m["config"]["reg"] for m in p.path_] == regs
    assert all(m["status"] == "completed" and m["iterations"] > 0 and m["objective"] is not None for m in p.path_)
    accs = [m["val_acc"] for m in p.path_]
    assert p.best_params_["reg"] == regs[accs.index(max(accs))]
    single = LinearProbe(reg=p.best_params_["reg"], seed=0).fit(x, y)          # the member equals the value alone
    torch.testing.assert_close(p._W, single._W, rtol=1e-4, atol=1e-5)
    # explicit validation data, and refit on train + validation
    xv, yv = blobs(200, d=30, seed=4)
    xv = xv + (x.mean(0) - xv.mean(0))
    r = LinearProbe(reg=regs, refit=True).fit(x, y, X_val=xv, y_val=yv)
    assert r.best_params_["reg"] in regs and not torch.equal(r._W, p._W)


def test_an_lr_sequence_is_a_path_of_the_sgd_solver():
    x, y = blobs()
    p = LinearProbe(lr=[1e-3, 1e-2], epochs=2).fit(x, y)
    assert [m["config"]["lr"] for m in p.path_] == [1e-3, 1e-2] and p.best_params_["lr"] in (1e-3, 1e-2)


def test_logdir_writes_a_train_py_run_folder_and_none_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = blobs()
    LinearProbe(epochs=1, solver="sgd").fit(x, y)
    assert list(tmp_path.iterdir()) == []
    LinearProbe(epochs=1, solver="sgd", logdir=tmp_path / "probe").fit(x, y)
    names = {p.name for p in (tmp_path / "probe").iterdir()}
    assert {"checkpoint.pt", "config.json", "metrics.json"} <= names and any(n.startswith("events.") for n in names)


def test_without_a_logdir_fit_creates_no_folder_and_no_temporary_file(tmp_path, monkeypatch):
    """logdir=None: the Run stays in memory (run.execute with folder None); the kept weights are
    the ones a logdir's checkpoint.pt holds."""
    import os
    import tempfile
    made = []
    real_mkdir = os.mkdir
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: made.append(path) or real_mkdir(path, *a, **k))
    for name in ("mkdtemp", "mkstemp", "TemporaryDirectory", "NamedTemporaryFile"):
        monkeypatch.setattr(tempfile, name, lambda *a, **k: pytest.fail("fit made a temporary file or folder"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.chdir(tmp_path)
    x, y = blobs()
    for kw in (dict(solver="sgd", epochs=2), dict(solver="lbfgs", reg=[1e-4, 1e-2]),
               dict(loss="squared", reg=[1e-3, 1e-1], refit=True)):
        p = LinearProbe(**kw).fit(x, y)
        assert made == [] and [q.name for q in tmp_path.iterdir()] == ["tmp"] and not any((tmp_path / "tmp").iterdir())
        monkeypatch.setattr(os, "mkdir", real_mkdir)
        logged = LinearProbe(**kw, logdir=tmp_path / "logs" / kw.get("solver", "exact")).fit(x, y)
        monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: made.append(path) or real_mkdir(path, *a, **k))
        assert torch.equal(p._W, logged._W) and torch.equal(p._b, logged._b) and p.path_ == logged.path_
        assert p.n_iter_ == logged.n_iter_ and p.best_params_ == logged.best_params_
        from lintorch.output.checkpoint import load_model        # a refit's run folder is logdir/refit
        folder = tmp_path / "logs" / kw.get("solver", "exact") / ("refit" if p.refit_ else "")   # a path: refit
        saved = load_model(str(folder / "checkpoint.pt"))
        assert torch.equal(p._W, saved.weight) and torch.equal(p._b, saved.bias)
        shutil.rmtree(tmp_path / "logs")


def test_member_names_of_a_numpy_logspace_are_train_py_logspace_names_and_the_values_stay_exact(tmp_path):
    from lintorch.config import member_name, parse_sweep_item
    x, y = blobs()
    regs = np.logspace(-6, -1, 16)
    assert repr(float(regs[2])) == "4.641588833612782e-06"              # float noise, not for a folder name
    p = LinearProbe(reg=regs, solver="exact", loss="squared", logdir=tmp_path / "path").fit(x, y)
    _, values = parse_sweep_item("reg=logspace:1e-6:1e-1:16")
    assert [m["name"] for m in p.path_] == [member_name({"reg": v}) for v in values]
    assert p.path_[0]["name"] == "reg=1e-06" and p.path_[2]["name"] == "reg=4.64159e-06"
    assert [m["config"]["reg"] for m in p.path_] == regs.tolist()          # trained on the exact values
    assert {m["name"] for m in p.path_} <= {q.name for q in (tmp_path / "path").iterdir()}
    # two values that share 6 significant digits keep their repr, as train.py names a list's values
    q = LinearProbe(reg=[0.1234567, 0.1234568, 1 / 3], solver="lbfgs", max_iter=5).fit(x, y)
    assert [m["name"] for m in q.path_] == ["reg=0.1234567", "reg=0.1234568", f"reg={1 / 3!r}"]
    r = LinearProbe(lr=[1 / 3, 0.1], reg=[0.0, 1e-4], epochs=1).fit(x, y)
    assert [m["name"] for m in r.path_] == ["reg=0,lr=0.333333", "reg=0,lr=0.1", "reg=0.0001,lr=0.333333",
                                            "reg=0.0001,lr=0.1"]


# ----------------------------------------------------------------------------- inputs

def test_float16_numpy_and_standardize_false():
    x, y = blobs()
    half = LinearProbe().fit(x.half(), y)
    assert half.score(x, y) > 0.95
    raw = LinearProbe(standardize=False).fit(x.numpy(), y.numpy())
    assert raw.score(x.numpy(), y.numpy()) > 0.95
    torch.testing.assert_close(raw.coef_, raw._W)                 # no standardization to fold in


def test_a_dataloader_of_image_batches_trains_with_sgd():
    from torch.utils.data import DataLoader, TensorDataset
    x, y = blobs(900, d=48)
    images = x.view(900, 3, 4, 4)                              # (x, y) batches as torchvision's loaders give
    train = DataLoader(TensorDataset(images[:700], y[:700] * 2 + 1), batch_size=64, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(images[700:], y[700:] * 2 + 1), batch_size=100)
    p = LinearProbe(epochs=3).fit(train, None, X_val=val)
    assert p.classes_.tolist() == [1, 3, 5] and p.n_features_in_ == 48
    assert p.path_[0]["val_acc"] > 0.9 and p.score(x[700:], y[700:] * 2 + 1) == p.path_[0]["val_acc"]
    assert p.n_iter_ == 3 * len(train)
    with pytest.raises(ValueError, match="a DataLoader trains with solver='sgd'"):
        LinearProbe(solver="lbfgs").fit(train, None, X_val=val)
    with pytest.raises(ValueError, match="X_val: a DataLoader cannot be split"):
        LinearProbe().fit(train, None)


@pytest.mark.parametrize("bad, match", [
    (dict(y=slice(0, -1)), "y has 599 labels for 600 rows of X"),
    (dict(nan=True), "X holds NaN or infinite values"),
    (dict(reg=-1.0), "reg -1.0 must be a finite number >= 0"),
    (dict(reg=[1e-3, float("nan")]), "reg nan must be a finite number"),
    (dict(one_class=True), r"one class only \(0\)"),
    (dict(loss="hinge"), "loss: invalid choice: 'hinge'"),
    (dict(solver="lbfgs", loss="svm"), "needs a smooth objective"),
    (dict(solver="newton"), "solver 'newton'"),
    (dict(validation_fraction=1.5), "validation_fraction 1.5 must be between 0 and 1"),
    (dict(validation_fraction=0), "validation_fraction 0 must be between 0 and 1"),      # not the default 0.2
    (dict(y_float=True), "non-integral floats"),         # integral floats are labels (scikit-learn's rule)
    (dict(x3d=True), r"expected \(N, D\) features"),
])
def test_bad_input_is_a_value_error_naming_the_argument(bad, match):
    x, y = blobs()
    if "y" in bad:
        y = y[bad.pop("y")]
    if bad.pop("nan", False):
        x[5, 3] = float("inf")
    if bad.pop("one_class", False):
        y = torch.zeros_like(y)
    if bad.pop("y_float", False):
        y = y.float() + 0.5
    if bad.pop("x3d", False):
        x = x.view(600, 3, 4)
    with pytest.raises(ValueError, match=match):
        LinearProbe(**bad).fit(x, y)


def test_predict_refuses_another_width_and_an_unfitted_probe():
    x, y = blobs()
    with pytest.raises(ValueError, match="not fitted"):
        LinearProbe().predict(x)
    p = LinearProbe(epochs=1).fit(x, y)
    with pytest.raises(ValueError, match="X has 5 features per row; this probe was fitted on 12"):
        p.predict(x[:, :5])
    with pytest.raises(ValueError, match="X_val has 5 features"):
        LinearProbe().fit(x, y, X_val=x[:, :5], y_val=y)
    with pytest.raises(ValueError, match="y_val holds labels not in y"):
        LinearProbe().fit(x, y, X_val=x, y_val=y + 10)


# ----------------------------------------------------------------------------- files

def test_save_is_a_lintorch_checkpoint_that_load_and_evaluate_read(tmp_path, feature_folder):
    from lintorch.evaluate import evaluate_checkpoint
    streamed = np.load(feature_folder / "train.npy", mmap_mode="r")
    labels = np.load(feature_folder / "train_labels.npy")
    p = LinearProbe(seed=0).fit(streamed, labels)
    p.save(tmp_path / "probe.pt")
    raw = torch.load(tmp_path / "probe.pt", weights_only=True)
    assert raw["model"]["weight"].shape == (3, 12)
    q = lintorch.load(tmp_path / "probe.pt")
    assert q.classes_.tolist() == p.classes_.tolist()
    torch.testing.assert_close(q.decision_function(streamed), p.decision_function(streamed))
    r = evaluate_checkpoint(str(tmp_path / "probe.pt"), dataset="features", data_dir=str(feature_folder),
                            split="train")
    assert r["accuracy"] == pytest.approx(p.score(streamed, labels))


def test_probe_squared_loss_is_solved_exactly():
    """solver "auto" with loss="squared": the closed form; refit on all of X equals lintorch.optim.exact's solution."""
    from lintorch.optim import exact
    from lintorch.probe import choose_solver
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 20, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    p = lintorch.LinearProbe(loss="squared", reg=[1e-2, 1e-1], standardize=False, refit=True).fit(x, y)
    assert choose_solver(p.get_params(), True) == "exact"
    W, b, _ = exact.path(x.double(), y, 3, [p.best_params_["reg"]])
    assert torch.allclose(torch.as_tensor(p.coef_).double(), W[0], atol=1e-6)
    assert torch.allclose(torch.as_tensor(p.intercept_).double(), b[0], atol=1e-6)


# ----------------------------------------------------------------------------- scikit-learn's contract

def test_fit_leaves_torchs_global_random_state_alone():
    x, y = blobs()
    torch.manual_seed(123)
    want = torch.rand(5)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    for kw in (dict(), dict(solver="sgd", epochs=1), dict(loss="squared", reg=[1e-3, 1e-1])):
        LinearProbe(**kw).fit(x, y)
        assert torch.equal(torch.random.get_rng_state(), state), kw
    assert torch.equal(torch.rand(5), want)                   # the user's draws continue where they were


def test_score_checks_ys_shape_length_and_kind():
    x, y = blobs()
    p = LinearProbe(reg=1e-3).fit(x, y)
    assert p.score(x, y) > 0.95
    with pytest.raises(ValueError, match=r"y has shape \(600, 1\); expected \(600,\) labels.*y.ravel\(\)"):
        p.score(x, y.reshape(-1, 1))                          # broadcast to (N, N) before
    with pytest.raises(ValueError, match="y has 599 labels for 600 rows of X"):
        p.score(x, y[1:])
    with pytest.raises(ValueError, match="y holds strings, this probe's classes_ are numbers"):
        p.score(x, y.numpy().astype(str))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function", "score"])
@pytest.mark.parametrize("bad, error, match", [
    (float("nan"), ValueError, r"X holds NaN or infinite values \(row 7\)"),
    (float("inf"), ValueError, r"X holds NaN or infinite values \(row 7\)"),
    ("complex", TypeError, "complex"), ("sparse", TypeError, "sparse tensor"), ("meta", ValueError, "meta device"),
    ("empty", ValueError, "X has 0 rows"), ("1d", ValueError, r"expected \(N, D\) features: X.reshape"),
])
def test_predictions_refuse_what_fit_refuses(method, bad, error, match):
    x, y = blobs()
    p = TRAINED.setdefault("blobs", LinearProbe(reg=1e-3).fit(x, y))
    X = x[:20].clone()
    if isinstance(bad, float):
        X[7, 3] = bad
    else:
        X = {"complex": X.to(torch.complex64), "sparse": X.to_sparse(), "meta": X.to("meta"), "empty": X[:0],
             "1d": X[0]}[bad]
    with pytest.raises(error, match=match):
        getattr(p, method)(*([X, y[:20]] if method == "score" else [X]))


TRAINED = {}


def test_two_class_decision_function_is_n_and_numpy_for_numpy(tmp_path):
    """scikit-learn's binary convention: (N,), > 0 predicts classes_[1]; NumPy for NumPy input
    (scikit-learn returns NumPy for a torch tensor too; lintorch keeps a tensor on the model's
    device for a tensor, so GPU scores stay on the GPU)."""
    xb, yb = blobs(c=2)
    p = LinearProbe(reg=1e-3).fit(xb.numpy(), np.where(yb.numpy() == 1, "yes", "no"))
    d = p.decision_function(xb.numpy())
    assert isinstance(d, np.ndarray) and d.shape == (600,)
    np.testing.assert_array_equal(p.classes_[(d > 0).astype(int)], p.predict(xb.numpy()))
    proba = p.predict_proba(xb.numpy())
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-d)), rtol=1e-4, atol=1e-6)   # d is the log-odds
    t = p.decision_function(xb)
    assert isinstance(t, torch.Tensor) and t.shape == (600,)


def test_cross_val_score_roc_auc_works_on_a_two_class_probe():
    pytest.importorskip("sklearn", reason="scikit-learn is optional: its binary scorers need it")
    from sklearn.model_selection import cross_val_score
    xb, yb = blobs(c=2, seed=5)
    xb = xb + 2.0 * torch.randn(xb.shape, generator=torch.Generator().manual_seed(1))   # not separable
    scores = cross_val_score(LinearProbe(reg=1e-3), xb.numpy(), yb.numpy(), cv=3, scoring="roc_auc")
    assert np.isfinite(scores).all() and scores.min() > 0.8


@pytest.mark.parametrize("labels", [[-3, 7, 100], ["cat", "dog", "emu"], [False, True], [0.0, 1.0, 2.0]])
def test_labels_keep_their_values_and_dtype_through_fit_save_load_and_a_logdir(tmp_path, labels):
    x, y = blobs(c=len(labels))
    given = np.array(labels)[y.numpy()]
    p = LinearProbe(reg=1e-3, logdir=tmp_path / "run").fit(x, given)
    assert p.classes_.dtype == given.dtype and p.classes_.tolist() == sorted(labels)
    assert p.predict(x).dtype == given.dtype and p.score(x, given) > 0.95
    p.save(tmp_path / "probe.pt")
    for q in (lintorch.load(tmp_path / "probe.pt"), lintorch.load(tmp_path / "run")):
        assert q.classes_.dtype == given.dtype and q.classes_.tolist() == p.classes_.tolist()
        np.testing.assert_array_equal(q.predict(x), p.predict(x))
        assert q.score(x, given) == p.score(x, given)


def test_load_refuses_an_unusable_device_and_a_missing_path_by_name(tmp_path):
    x, y = blobs()
    LinearProbe(reg=1e-3).fit(x, y).save(tmp_path / "p.pt")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda': CUDA is not available"):
            lintorch.load(tmp_path / "p.pt", device="cuda")
        with pytest.raises(ValueError, match="device='cuda': CUDA is not available"):
            LinearProbe(device="cuda").fit(x, y)
    with pytest.raises(ValueError, match="device='gpu'"):
        lintorch.load(tmp_path / "p.pt", device="gpu")
    with pytest.raises(FileNotFoundError, match="no such file or run folder"):
        lintorch.load(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- DataLoaders

def loader_of(images, labels, batch=64):
    from torch.utils.data import DataLoader, TensorDataset
    return DataLoader(TensorDataset(images, labels), batch_size=batch)


def test_a_dataloader_probe_predicts_images_and_scores_a_loader():
    x, y = blobs(900, d=48)
    images = x.view(900, 3, 4, 4)
    p = LinearProbe(epochs=3).fit(loader_of(images[:700], y[:700]), None, X_val=images[700:], y_val=y[700:])
    acc = p.score(images[700:], y[700:])
    assert acc == p.path_[0]["val_acc"] > 0.9
    assert p.score(loader_of(images[700:], y[700:], batch=50)) == acc
    np.testing.assert_array_equal(p.predict(images[700:]), p.predict(x[700:]))      # flattened the same way
    np.testing.assert_array_equal(p.predict(loader_of(images[700:], y[700:])), p.predict(x[700:]))
    with pytest.raises(ValueError, match=r"examples of shape \(3, 2, 8\); this probe was trained on .*\(3, 4, 4\)"):
        p.predict(images[700:].reshape(200, 3, 2, 8))


class EpochLoader(torch.utils.data.DataLoader):
    """A DataLoader whose later epochs differ from its first (a label never seen, a new width)."""

    def __init__(self, first, later):
        super().__init__(first, batch_size=100)
        self.epochs, self.later = 0, later

    def __iter__(self):
        self.epochs += 1
        source = self.dataset if self.epochs <= 2 else self.later      # the scan and standardization passes
        return iter(torch.utils.data.DataLoader(source, batch_size=100))


@pytest.mark.parametrize("change, match", [
    ("label", r"X: epoch 1, batch 3.s labels holds labels not in the DataLoader's first pass: 9"),
    ("width", r"X: epoch 1, batch 0 has examples of shape \(3, 4, 5\), the first pass had \(3, 4, 4\)"),
])
def test_a_dataloader_that_changes_after_its_first_pass_is_refused_by_name(change, match):
    from torch.utils.data import TensorDataset
    x, y = blobs(600, d=48)
    images = x.view(600, 3, 4, 4)
    first = TensorDataset(images[:400], y[:400])
    if change == "label":
        later = TensorDataset(images[:400], torch.where(torch.arange(400) == 350, 9, y[:400]))
    else:
        later = TensorDataset(torch.cat([images[:400], images[:400, :, :, :1]], -1), y[:400])
    with pytest.raises(ValueError, match=match):
        LinearProbe(epochs=2).fit(EpochLoader(first, later), None, X_val=images[400:], y_val=y[400:])


# ----------------------------------------------------------------------------- the API's words

@pytest.mark.parametrize("kw, match", [
    (dict(solver="exact", loss="squared", lr=0.1), r"lr=0.1 applies to solver='sgd' or 'gd'; solver='exact'"),
    (dict(solver="lbfgs", epochs=3), r"epochs=3 applies to solver='sgd' or 'gd'; solver='lbfgs'"),
    (dict(squared_hinge=True), r"squared_hinge=True applies to loss='svm'; loss='softmax' would ignore it"),
    (dict(margin=2.0, loss="squared"), r"margin=2.0 applies to loss='svm'"),
    (dict(beta=0.5), r"beta=0.5 applies to penalty='elasticnet'"),
    (dict(solver="sgd", max_iter=10), r"max_iter=10 applies to solver='lbfgs'; solver='sgd'"),
    (dict(solver="gd", momentum=0.5), r"momentum=0.5 applies to solver='sgd'; solver='gd'"),
    (dict(solver="lbfgs", loss="svm"), r"solver.{0,2}lbfgs.{0,2} needs a smooth objective"),
    (dict(device="cuda:7" if torch.cuda.is_available() else "cuda"), r"device='cuda(:7)?'"),
    (dict(device=3), None),
])
def test_api_errors_name_the_keyword_in_the_apis_words(kw, match):
    x, y = blobs()
    with pytest.raises((ValueError, TypeError), match=match) as e:
        LinearProbe(**kw).fit(x, y)
    assert "--" not in str(e.value)                      # no command-line flag in a Python error


def test_an_sgd_setting_alone_makes_auto_choose_sgd():
    from lintorch.probe import choose_solver
    for kw in (dict(lr=0.01), dict(epochs=2), dict(batch_size=32), dict(patience=2)):
        assert choose_solver(LinearProbe(**kw).get_params(), True) == "sgd", kw
    assert choose_solver(LinearProbe().get_params(), True) == "lbfgs"


def test_default_reg_is_a_path_refit_on_all_rows_and_a_single_value_holds_nothing_out():
    from lintorch.probe import REG_PATH
    x, y = blobs(400, d=30, seed=3)
    x = x + 3.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    p = LinearProbe().fit(x, y)
    assert [m["config"]["reg"] for m in p.path_] == list(REG_PATH) and p.refit_
    accs = [m["val_acc"] for m in p.path_]
    assert p.best_params_["reg"] == REG_PATH[accs.index(max(accs))]
    alone = LinearProbe(reg=p.best_params_["reg"]).fit(x, y)            # all 400 rows, nothing held out
    assert alone.path_[0]["val_acc"] is None and not alone.refit_
    # the same problem (all rows, the same reg), solved to L-BFGS's tol from rows in another order
    torch.testing.assert_close(p.coef_, alone.coef_, rtol=0, atol=float(5e-3 * alone.coef_.abs().max()))
    held = LinearProbe(reg=p.best_params_["reg"], validation_fraction=0.2).fit(x, y)      # asked for: carved
    assert held.path_[0]["val_acc"] == max(accs) and not torch.allclose(held.coef_, alone.coef_)


@pytest.mark.parametrize("solver", ["sgd", "gd", "lbfgs", "exact"])
def test_linear_probe_with_each_solver_on_cuda_tensors(emulated, solver):
    from lintorch import LinearProbe
    g = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(3, 12, generator=g)
    y = torch.randint(0, 3, (300,), generator=g)
    x = centers[y] + torch.randn(300, 12, generator=g)
    loss = {"exact": "squared"}.get(solver, "softmax")
    extra = {"epochs": 3} if solver in ("sgd", "gd") else {}
    with emulated():
        xc, yc = x.to("cuda"), y.to("cuda")
        probe = LinearProbe(loss=loss, solver=solver, reg=1e-3, **extra).fit(xc, yc)
        pred = probe.predict(xc)
        assert probe.score(xc, yc) > 0.8
    assert pred.shape == (300,)
