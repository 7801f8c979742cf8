"""The pure core (training.fit): an in-memory fit, LinearProbe's, writes nothing, draws nothing,
installs no signal handler and leaves the loggers' levels, torch's global RNG and the thread count
as it found them; fit() returns the whole path (K members' W, b and what each reached)."""
import builtins
import logging
import os
import signal

import pytest
import torch

from lintorch import LinearProbe
from lintorch.config import TrainConfig
from lintorch.data import DataSet, Split

SOLVERS = {"exact": dict(loss="squared", solver="exact", reg=[1e-3, 1e-1]),
           "lbfgs": dict(loss="softmax", solver="lbfgs", reg=[1e-3, 1e-1], max_iter=20),
           "sgd": dict(loss="svm", solver="sgd", epochs=2, reg=1e-3)}


def blobs(n=300, d=12, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    return torch.randn(c, d, generator=g)[y] * 2 + torch.randn(n, d, generator=g), y


class Recorder:
    """Every way the process could write a file or change a handler, recorded (and still done)."""

    def __init__(self, monkeypatch):
        self.calls = []
        real_open, real_os_open, real_signal = builtins.open, os.open, signal.signal

        def rec_open(file, mode="r", *args, **kwargs):
            if any(m in mode for m in "wax+"):
                self.calls.append(("open", file, mode))
            return real_open(file, mode, *args, **kwargs)

        def rec_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                self.calls.append(("os.open", path))
            return real_os_open(path, flags, *args, **kwargs)

        def rec_signal(signum, handler):
            self.calls.append(("signal", signum))
            return real_signal(signum, handler)
        monkeypatch.setattr(builtins, "open", rec_open)
        monkeypatch.setattr(os, "open", rec_os_open)
        for name in ("mkdir", "makedirs"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, lambda path, *a, _real=real, _name=name, **k:
                                self.calls.append((_name, path)) or _real(path, *a, **k))
        monkeypatch.setattr(signal, "signal", rec_signal)


def global_state():
    log = logging.getLogger("lintorch")
    return {"levels": (log.level, logging.getLogger("lintorch.epoch").level, logging.getLogger().level),
            "propagate": log.propagate, "handlers": list(log.handlers),
            "signals": (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)),
            "threads": torch.get_num_threads()}


@pytest.mark.parametrize("solver", SOLVERS)
def test_an_in_memory_fit_writes_nothing_and_leaves_global_state_as_it_was(solver, tmp_path, monkeypatch):
    x, y = blobs()
    monkeypatch.chdir(tmp_path)
    logging.getLogger("lintorch").setLevel(logging.DEBUG)          # a caller's own settings, kept
    torch.manual_seed(1234)
    before, rng = global_state(), torch.random.get_rng_state()
    drawn = []
    from lintorch.output import visualize
    monkeypatch.setattr(visualize, "confusion_image", lambda *a, **k: drawn.append("confusion"))
    rec = Recorder(monkeypatch)
    probe = LinearProbe(**SOLVERS[solver], device="cpu").fit(x, y)
    monkeypatch.undo()
    assert rec.calls == [] and drawn == [] and os.listdir(tmp_path) == []
    assert global_state() == before
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert probe.score(x, y) > 0.5


def test_fit_returns_the_whole_path_and_the_chosen_member():
    from lintorch.training.fit import PathResult, fit
    x, y = blobs()
    data = DataSet(Split(x[:240], y[:240]), Split(x[240:], y[240:]), None, ["a", "b", "c"], None, None)
    cfg = TrainConfig(dataset="tensor", data_dir=None, loss="squared", optimizer="exact", quiet=True,
                      sweep=({"reg": 1e-4}, {"reg": 1e-2}, {"reg": 10.0})).filled()
    cfg.check()
    res = fit(cfg, data, device=torch.device("cpu"))
    assert isinstance(res, PathResult) and res.exit_status == 0
    assert res.W.shape == (3, 3, 12) and res.b.shape == (3, 3)
    assert res.values == [{"reg": 1e-4}, {"reg": 1e-2}, {"reg": 10.0}] and res.status == ["completed"] * 3
    assert res.best == max(range(3), key=lambda k: (res.val_acc[k], -k))
    assert res.objective[0] < res.objective[1] < res.objective[2]    # the stronger reg, the larger objective
    # the kept weights are what the validation accuracy was measured with
    xv = res.preprocess(x[240:])
    for k in range(3):
        acc = float(((xv @ res.W[k].T + res.b[k]).argmax(1) == y[240:]).float().mean())
        assert acc == pytest.approx(res.val_acc[k])


@pytest.mark.parametrize("solver", ["exact", "lbfgs"])
def test_a_fit_without_the_training_accuracy_is_the_same_fit(solver):
    """train_accuracy=False (LinearProbe in memory) skips the full-batch solvers' pass that measures
    the training accuracy, and nothing else: the same weights, objectives and validation accuracies."""
    from lintorch.training.fit import fit
    x, y = blobs()
    data = DataSet(Split(x[:240], y[:240]), Split(x[240:], y[240:]), None, ["a", "b", "c"], None, None)
    cfg = TrainConfig(dataset="tensor", data_dir=None, loss="squared" if solver == "exact" else "softmax",
                      optimizer=solver, quiet=True, sweep=({"reg": 1e-4}, {"reg": 1e-1})).filled()
    cfg.check()
    full = fit(cfg, data, device=torch.device("cpu"))
    lean = fit(cfg, data, device=torch.device("cpu"), train_accuracy=False)
    assert torch.equal(full.W, lean.W) and torch.equal(full.b, lean.b)
    assert (lean.objective, lean.val_acc, lean.best) == (full.objective, full.val_acc, full.best)
    assert [h[-1]["train_acc"] for h in lean.history] == [None, None]
    xt = full.preprocess(x[:240])
    for k in range(2):          # the measured one is the accuracy of the kept weights on the training split
        acc = float(((xt @ full.W[k].T + full.b[k]).argmax(1) == y[:240]).float().mean())
        assert full.history[k][-1]["train_acc"] == pytest.approx(acc)


def test_the_members_start_from_the_seeds_draws_and_the_global_rng_is_untouched():
    """recipe.build draws the starting W from the run's own generator: torch.manual_seed(seed)'s
    randn draws (what it drew before), every member the same, torch's global RNG neither read nor changed."""
    from lintorch.model import WEIGHT_SCALE
    from lintorch.training.recipe import build
    x, y = blobs()
    data = DataSet(Split(x[:240], y[:240]), Split(x[240:], y[240:]), None, ["a", "b", "c"], None, None)
    cfg = TrainConfig(dataset="tensor", data_dir=None, loss="softmax", optimizer="lbfgs", quiet=True, seed=7,
                      sweep=({"reg": 1e-4}, {"reg": 1e-1})).filled()
    torch.manual_seed(99)
    rng = torch.random.get_rng_state()
    r = build(cfg, torch.device("cpu"), data=data)
    assert torch.equal(torch.random.get_rng_state(), rng)
    torch.manual_seed(7)
    expected = torch.randn(3, 12) * WEIGHT_SCALE
    assert torch.equal(r.model.weight[0], expected) and torch.equal(r.model.weight[1], expected)
    assert torch.equal(r.model.bias, torch.zeros(2, 3))


@pytest.mark.parametrize("solver", [*SOLVERS, "gd"])
@pytest.mark.parametrize("standardize", [False, True])
def test_a_fit_leaves_the_callers_arrays_as_they_were(solver, standardize):
    """Features passed through as given reach the solvers as views of the caller's X: every solver
    reads its batches and never writes them (X, y, X_val, y_val bit-identical after fit and predict)."""
    x, y = blobs()
    given = {"X": x[:240], "y": y[:240], "X_val": x[240:], "y_val": y[240:]}
    before = {k: v.clone() for k, v in given.items()}
    settings = SOLVERS.get(solver, dict(loss="softmax", solver="gd", epochs=3, reg=1e-3))
    probe = LinearProbe(**settings, standardize=standardize, device="cpu").fit(*given.values())
    probe.predict(given["X_val"]), probe.score(given["X"], given["y"])
    LinearProbe(**settings, standardize=standardize, device="cpu").fit(given["X"], given["y"])   # carved
    assert all(torch.equal(given[k], before[k]) for k in given)
