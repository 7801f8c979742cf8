"""lintorch.LinearProbe (issue 16): scikit-learn's conventions, the same core as train.py (equal
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
        folder = tmp_path / "logs" / kw.get("solver", "exact") / ("refit" if kw.get("refit") else "")
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
    (dict(one_class=True), "one class only"),
    (dict(loss="hinge"), "loss: invalid choice: 'hinge'"),
    (dict(solver="lbfgs", loss="svm"), "needs a smooth objective"),
    (dict(solver="newton"), "solver 'newton'"),
    (dict(validation_fraction=1.5), "validation_fraction 1.5 must be between 0 and 1"),
    (dict(y_float=True), "expected integer class labels"),
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
        y = y.float()
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
