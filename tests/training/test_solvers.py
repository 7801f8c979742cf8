"""lintorch.training.solvers through train.py: L-BFGS and exact paths, class weights, patience."""
import json

import pytest
import torch

from lintorch.config import parse_args
from tests.conftest import COMMON
from tests.helpers import events, train

# 8 px synthetic images (D 192): an L-BFGS evaluation 16x cheaper than at 32 px, the same assertions
SMALL = ["--image-size", "8"]


def metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_lbfgs_path_members_equal_single_runs(tmp_path):
    """A 3-value path trained as one batched run ends where each value trained alone ends."""
    path = tmp_path / "path"
    assert train(*COMMON, *SMALL, "--optimizer", "lbfgs", "--max-iter", "40", "--logdir", str(path),
                 "--sweep", "reg=1e-3,1e-2,1e-1") == 0
    summary = metrics(path)
    assert summary["status"] == "completed" and len(summary["configs"]) == 3
    for reg in ("0.01", "0.1"):
        alone = tmp_path / f"alone-{reg}"
        assert train(*COMMON, *SMALL, "--optimizer", "lbfgs", "--max-iter", "40", "--reg", reg,
                     "--logdir", str(alone)) == 0
        a = torch.load(alone / "checkpoint.pt", weights_only=True)["model"]
        m = torch.load(path / f"reg={reg}" / "checkpoint.pt", weights_only=True)["model"]
        assert torch.allclose(a["weight"], m["weight"], rtol=1e-4, atol=1e-6)
        ma, mm = metrics(alone), metrics(path / f"reg={reg}")
        assert ma["solver_status"] == mm["solver_status"] and ma["iterations"] == mm["iterations"]
        assert ma["objective"] == pytest.approx(mm["objective"], rel=1e-6)
    best = torch.load(path / "checkpoint.pt", weights_only=True)
    assert best["best_val_acc"] == max(c["val_acc"] for c in summary["configs"])
    from tensorboard.plugins.hparams import metadata      # HPARAMS: the solver's own settings, no SGD ones
    content = events(path / "reg=0.01").PluginTagToContent("hparams")
    hp = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG]).hparams
    assert hp["max_iter"].string_value == "40" and hp["optimizer"].string_value == "lbfgs" and "tol" in hp
    assert not {"lr", "momentum", "schedule", "epochs", "batch_size"} & set(hp)


def test_lbfgs_refuses_nonsmooth_objectives(capsys):
    for argv in (["--loss", "svm"], ["--penalty", "l1"], ["--sweep", "lr=0.1,0.2"]):
        with pytest.raises(SystemExit) as e:
            parse_args([*COMMON, "--optimizer", "lbfgs", *argv])
        assert e.value.code == 2
    assert "smooth" in capsys.readouterr().err


# L-BFGS to convergence at 24 px (D 1,728; val acc 62%, where 16 px reaches 40%; 32 px costs 4x: the Gram
# preconditioner and its solves grow as D^2 and D^3)
LEARNABLE = ["--image-size", "24"]


@pytest.mark.slow
def test_lbfgs_converges_on_squared_hinge(tmp_path):
    assert train(*COMMON, *LEARNABLE, "--optimizer", "lbfgs", "--loss", "svm", "--squared-hinge", "--reg", "0.01",
                 "--logdir", str(tmp_path / "run")) == 0
    m = metrics(tmp_path / "run")
    assert m["solver_status"] == "converged" and m["val_acc"] > 0.5
    acc = events(tmp_path / "run")
    g = acc.Scalars("lbfgs/grad_max")      # one point per accepted iterate, the last included
    assert [e.step for e in g] == list(range(1, m["iterations"] + 1)) and g[-1].value <= 1e-4
    # its own tags on its iteration axis: nothing on the SGD-step charts of an sgd run beside it
    tags = set(acc.Tags()["scalars"])
    assert {"lbfgs/objective", "lbfgs/train_acc", "lbfgs/val_acc"} <= tags
    assert not {"loss/total", "acc/val", "acc/train", "grad_max"} & tags and not [t for t in tags if t.startswith("epoch/")]
    assert [e.step for e in acc.Scalars("lbfgs/val_acc")] == [m["iterations"]]
    assert acc.Scalars("lbfgs/val_acc")[-1].value == pytest.approx(m["val_acc"])


@pytest.mark.slow                       # at 8 or 16 px one of the two stalls short of --tol 1e-5
def test_precondition_gram_and_none_reach_the_same_optimum(tmp_path, capsys):
    """--precondition gram (default) and none end at the same objective (on these near-isotropic
    synthetic inputs at reg 1e-2 in 21 and 36 iterations; far fewer on correlated ones: tests/optim/test_lbfgs.py).
    The one-vs-rest squared hinge (Coates' L2-SVM) trains through the same path, step-0 check included.
    (reg 1e-4 took ~250 iterations, the suite's slowest test.)"""
    runs = {}
    for pre in ("gram", "none"):
        folder = tmp_path / pre
        assert train(*COMMON, *LEARNABLE, "--optimizer", "lbfgs", "--loss", "svm", "--squared-hinge", "--svm-form",
                     "one-vs-rest", "--reg", "1e-2", "--tol", "1e-5", "--precondition", pre,
                     "--logdir", str(folder)) == 0
        runs[pre] = metrics(folder)
    assert runs["gram"]["solver_status"] == runs["none"]["solver_status"] == "converged"
    # both stop at max |gradient| <= 1e-5: the same optimum to ~1e-5
    assert runs["gram"]["objective"] == pytest.approx(runs["none"]["objective"], rel=1e-4)
    assert "far from" not in capsys.readouterr().out           # the initial loss is C = 10, as expected


def _uneven_folder(root):
    """Three colours, 30 / 10 / 4 training images: a set where balanced weights matter."""
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for name, rgb, n in (("blue", (60, 80, 190), 30), ("green", (70, 160, 80), 10), ("red", (170, 70, 60), 4)):
        (root / "train" / name).mkdir(parents=True)
        for i in range(n):
            x = torch.tensor(rgb).view(1, 1, 3) + 60 * torch.randn(8, 8, 3, generator=g)
            Image.fromarray(x.clamp(0, 255).to(torch.uint8).numpy()).save(root / "train" / name / f"{i}.png")


def test_balanced_class_weight_trains_and_weights_the_loss(tmp_path, capsys):
    from lintorch import evaluate
    from lintorch.functional import balanced_class_weight
    _uneven_folder(tmp_path / "data")
    y = torch.tensor([0] * 30 + [1] * 10 + [2] * 4)
    assert torch.allclose(balanced_class_weight(y, 3), torch.tensor([44 / 90, 44 / 30, 44 / 12]))
    runs = {}
    for cw in ("none", "balanced"):
        folder = tmp_path / cw
        assert train("--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--image-size", "8",
                     "--val-size", "8", "--batch-size", "8", "--epochs", "3", "--class-weight", cw,
                     "--quiet", "--threads", "1", "--logdir", str(folder)) == 0
        runs[cw] = torch.load(folder / "checkpoint.pt", weights_only=True)
        assert runs[cw]["config"]["class_weight"] == cw
    assert not torch.equal(runs["none"]["model"]["weight"], runs["balanced"]["model"]["weight"])
    capsys.readouterr()
    assert evaluate.main([str(tmp_path / "balanced"), "--json", "--split", "train"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["per_class"]) == {"blue", "green", "red"}


def test_patience_stops_a_member_and_the_others_go_on(tmp_path):
    """With patience 1 a member that fails to improve for one epoch stops; its best is kept."""
    folder = tmp_path / "sweep"
    assert train(*COMMON, *SMALL, "--epochs", "8", "--patience", "1", "--schedule", "constant",
                 "--sweep", "lr=3.0,0.001", "--logdir", str(folder)) == 0
    summary = metrics(folder)
    by_lr = {c["config"]["lr"]: c for c in summary["configs"]}
    assert by_lr[3.0]["status"] == "stopped" and len(by_lr[3.0]["history"]) < 8 and "patience" in by_lr[3.0]["note"]
    assert by_lr[0.001]["epochs"] > by_lr[3.0]["epochs"]
    ckpt = torch.load(folder / "lr=3" / "checkpoint.pt", weights_only=True)
    assert ckpt["best_epoch"] == by_lr[3.0]["best_epoch"]


def test_precondition_auto_uses_the_gram_factor_when_n_is_at_least_d_and_the_kernel_form_below():
    """auto and gram: (X^T X / N + 2 reg I)^-1 by a D x D factor per member when N >= D, in kernel
    form when N < D (optim.kernel.kernel_preconditioners: 2,667 CIFAR-10 rows, 18 iterations for
    158); none: plain L-BFGS."""
    from lintorch.config import TrainConfig
    from lintorch.training.solvers import _preconditioners

    class Full:
        def batches(self, epoch=0):
            g = torch.Generator().manual_seed(0)
            yield torch.randn(20, 6, generator=g), torch.zeros(20, dtype=torch.long)
    import lintorch.training.solvers as solvers
    for mode, N, D, built in (("auto", 20, 6, True), ("auto", 5, 6, True), ("none", 20, 6, False),
                              ("gram", 5, 6, True)):
        used = []
        for name in ("gram_preconditioners", "kernel_preconditioners"):
            real = getattr(solvers, name)
            setattr(solvers, name, lambda *a, real=real, name=name, **k: used.append(name) or real(*a, **k))
        try:
            pre = _preconditioners(TrainConfig(precondition=mode), Full(), 1e-3, 2, 3, N, D, torch.device("cpu"))
        finally:
            from lintorch.optim import kernel, precondition
            solvers.gram_preconditioners, solvers.kernel_preconditioners = (precondition.gram_preconditioners,
                                                                           kernel.kernel_preconditioners)
        assert (pre is not None and len(pre) == 2) == built, (mode, N, D)
        assert used == ([] if not built else ["kernel_preconditioners" if N < D else "gram_preconditioners"])


def test_preconditioners_are_sized_against_the_memory_of_the_device_they_live_on(emulated, monkeypatch):
    """The factors are built where the batches are: on a GPU its own free memory (torch.cuda.mem_get_info)
    decides whether they fit, on the CPU the host's RAM; half of it is the limit (D 6, 2 members: two float32
    factors and the float64 Gram, 864 bytes)."""
    import lintorch.data.sources as sources
    from lintorch.config import TrainConfig
    from lintorch.training.solvers import _preconditioners

    class Full:
        def __init__(self, device):
            self.device = device

        def batches(self, epoch=0):
            g = torch.Generator().manual_seed(0)
            yield torch.randn(20, 6, generator=g).to(self.device), torch.zeros(20, dtype=torch.long).to(self.device)

    import lintorch.training.solvers as solvers

    def built(device, host, gpu):
        with monkeypatch.context() as m:
            m.setattr(solvers, "ASK_MEMORY", 0)            # these tiny factors: the free memory asked all the same
            m.setattr(sources, "available_memory", lambda: host)
            m.setattr(torch.cuda, "mem_get_info", lambda device=None: (gpu, 2**40))
            return _preconditioners(TrainConfig(precondition="gram"), Full(device), 1e-3, 2, 3, 20, 6,
                                    torch.device(device)) is not None
    with emulated():
        assert built("cuda", host=1000, gpu=2**30) and not built("cuda", host=2**30, gpu=1000)
    assert built("cpu", host=2**30, gpu=1000) and not built("cpu", host=1000, gpu=2**30)


def test_the_free_memory_is_asked_only_where_the_preconditioners_could_need_much_of_it(monkeypatch):
    """Reading the free memory costs more than a small problem's whole preconditioner: it is asked
    only where the factors (or the kernel form) could need more than ASK_MEMORY bytes."""
    import lintorch.training.solvers as solvers
    from lintorch.config import TrainConfig

    class Full:
        def batches(self, epoch=0):
            yield torch.randn(20, 6, generator=torch.Generator().manual_seed(0)), torch.zeros(20, dtype=torch.long)
    asked = []
    monkeypatch.setattr(solvers, "free_memory", lambda device: asked.append(device) or 0)
    cfg, cpu = TrainConfig(precondition="gram"), torch.device("cpu")
    assert solvers._preconditioners(cfg, Full(), 1e-3, 2, 3, 20, 6, cpu) is not None and asked == []
    monkeypatch.setattr(solvers, "ASK_MEMORY", 8 * 4 * 6 * 6 - 1)        # the factors' bound now passes it
    assert solvers._preconditioners(cfg, Full(), 1e-3, 2, 3, 20, 6, cpu) is None and asked == [cpu]


def test_lbfgs_bar_promises_no_total(tmp_path, monkeypatch):
    """--max-iter is a cap: the bar counts evaluations and shows the iterations, with no total (so no ETA)."""
    import lintorch.training.solvers as solvers
    bars = []

    class Bar:
        def __init__(self, *args, **kwargs):
            self.kwargs, self.n, self.postfix = kwargs, 0, {}
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def set_postfix(self, **kwargs):
            self.postfix = kwargs

        def close(self):
            pass
    monkeypatch.setattr(solvers, "tqdm", Bar)
    argv = [a for a in COMMON if a != "--quiet"]
    assert train(*argv, *SMALL, "--optimizer", "lbfgs", "--reg", "0.01", "--max-iter", "500",
                 "--logdir", str(tmp_path / "run")) == 0
    (bar,) = bars
    m = metrics(tmp_path / "run")
    assert bar.kwargs.get("total") is None and "500" not in str(bar.kwargs)
    assert bar.n >= m["iterations"] and bar.postfix["iterations"] == m["iterations"] < 500


def test_exact_path_equals_lbfgs_on_the_squared_loss_and_draws_the_path(tmp_path):
    """--optimizer exact: each member of a reg path is the squared loss's minimizer, which a tightly
    converged L-BFGS run of the same objective reaches too; path.png marks the val-chosen reg."""
    path = tmp_path / "exact"                                         # D = 192 < N: a well-posed comparison
    assert train(*COMMON, *SMALL, "--loss", "squared", "--optimizer", "exact", "--logdir", str(path),
                 "--sweep", "reg=1e-3,1e-2,1e-1") == 0
    summary = metrics(path)
    assert summary["status"] == "completed" and len(summary["configs"]) == 3
    assert all(c["solver_status"] == "exact" for c in summary["configs"])
    best = torch.load(path / "checkpoint.pt", weights_only=True)
    assert best["best_val_acc"] == max(c["val_acc"] for c in summary["configs"])
    assert (path / "path.png").is_file() and "path" in events(path).Tags()["images"]
    alone = tmp_path / "lbfgs"
    assert train(*COMMON, *SMALL, "--loss", "squared", "--optimizer", "lbfgs", "--reg", "0.01", "--tol", "1e-7",
                 "--max-iter", "2000", "--logdir", str(alone)) == 0
    a = torch.load(alone / "checkpoint.pt", weights_only=True)["model"]
    m = torch.load(path / "reg=0.01" / "checkpoint.pt", weights_only=True)["model"]
    assert (a["weight"] - m["weight"]).norm() <= 1e-3 * m["weight"].norm()
    assert (a["bias"] - m["bias"]).norm() <= 1e-3 * m["bias"].norm()
    assert metrics(alone)["objective"] == pytest.approx(metrics(path / "reg=0.01")["objective"], rel=1e-5)


def test_exact_needs_the_squared_loss_and_sweeps_reg_only(capsys):
    for argv in (["--loss", "softmax"], ["--loss", "squared", "--sweep", "lr=0.1,0.2"],
                 ["--loss", "squared", "--penalty", "l1"], ["--loss", "squared", "--class-weight", "balanced"]):
        with pytest.raises(SystemExit) as e:
            parse_args(["--optimizer", "exact", *argv])
        assert e.value.code == 2
        assert "--optimizer exact" in capsys.readouterr().err


def test_exact_on_a_singular_gram_is_a_user_error_and_a_failed_run(tmp_path, capsys):
    """--reg 0 with a repeated feature: one line naming --reg and the cause, exit 2, metrics.json
    "failed", no checkpoint; the same with the value inside a --sweep names the sweep."""
    from lintorch.features import store
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    data = tmp_path / "features"
    store.write_classes(data, ["a", "b", "c"])
    store.save_split(data, "train", torch.cat([x, x[:, :2]], 1), torch.arange(60) % 3)
    common = ["--dataset", "features", "--data-dir", data, "--val-size", 10, "--optimizer", "exact", "--loss",
              "squared", "--quiet", "--device", "cpu"]
    for extra, named in ((["--reg", "0"], "--reg 0:"), (["--sweep", "reg=0,1e-3"], "--reg 0 (in --sweep)")):
        run = tmp_path / f"run{len(extra[1])}"
        assert train(*common, *extra, "--logdir", run) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0] and "singular" in err[0] and "--reg > 0" in err[0], err
        assert metrics(run)["status"] == "failed"
        assert not list(run.rglob("*.pt")) and not list(run.rglob("*.tmp*"))


@pytest.mark.parametrize("regs", [[0.1, 1.0], torch.tensor([0.1, 1.0])], ids=["list", "cpu-tensor"])
def test_exact_dual_path_on_cuda_takes_regs_from_the_host(emulated, regs):
    from lintorch.optim import exact
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(12, 30, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g)
    expected = exact.path(X, y, 3, regs)                                     # D > N: the dual
    with emulated():
        got = exact.path(X.to("cuda"), y.to("cuda"), 3, regs)
        assert all(t.device.type == "cuda" for t in got)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a.cpu(), b)


def test_lbfgs_passes_over_the_split_in_one_kept_batch_or_in_batches_of_pass_values():
    """L-BFGS's evaluations read the training split as one batch made once where it holds at most
    PASS_VALUES values, else in batches of PASS_VALUES / D rows (at least EVAL_BATCH): the same batches
    whatever the split, each a full pass; both reach the same optimum."""
    from lintorch import LinearProbe
    from lintorch.data import Preprocess
    from lintorch.data.loaders import KeptBatches
    from lintorch.data.split import Split
    from lintorch.training import recipe
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (1500,), generator=g)
    x = torch.randn(3, 40, generator=g)[y] + torch.randn(1500, 40, generator=g)
    split, pre = Split(x, y), Preprocess(torch.zeros(40), None, "feature")
    kept = recipe.full_batch_loader(split, pre, "cpu")
    assert isinstance(kept, KeptBatches) and [len(b) for b, _ in kept.batches(0)] == [1500]
    probe = LinearProbe(loss="softmax", solver="lbfgs", reg=1e-2, tol=1e-7, standardize=False, device="cpu")
    one = probe.fit(x, y)
    one = one.coef_.clone(), one.path_[0]["objective"]
    old = recipe.PASS_VALUES
    try:
        recipe.PASS_VALUES = 600 * 40                                   # 600 rows: 600, 600, 300
        batched = recipe.full_batch_loader(split, pre, "cpu")
        assert not isinstance(batched, KeptBatches)
        assert [len(b) for b, _ in batched.batches(0)] == [600, 600, 300]
        recipe.PASS_VALUES = 40                                         # never under EVAL_BATCH rows
        assert [len(b) for b, _ in recipe.full_batch_loader(split, pre, "cpu").batches(0)] == [512, 512, 476]
        recipe.PASS_VALUES = 600 * 40
        three = probe.fit(x, y)
        three = three.coef_, three.path_[0]["objective"]
    finally:
        recipe.PASS_VALUES = old
    assert three[1] == pytest.approx(one[1], rel=1e-7)                 # the same optimum, within tol
    torch.testing.assert_close(three[0], one[0], rtol=0, atol=1e-4)
