"""Every command and LinearProbe end to end on emulated CUDA (issue 24), in this process: train with each
optimizer, a sweep, evaluate and predict, gradcheck, doctor, bench, LinearProbe with each solver on cuda
tensors. Small problems (synthetic 8 x 8 images, D 192): the point is that CUDA's device rules hold on
every path, not the numbers. Also covered elsewhere on emulated CUDA: --flip and the host-sync budgets
(test_cuda_syncs.py), resume after an interrupt, --sweep-parallel, extract and features
(test_cuda_emulated.py). What emulation cannot see: tests/emulated_cuda.py's docstring.
"""
import functools
import json

import pytest
import torch

from tests import helpers

train = functools.partial(helpers.train, threads=None)
RUN = ["--dataset", "synthetic", "--image-size", 8, "--epochs", 1, "--quiet", "--threads", 1, "--device", "cuda",
       "--val-size", 500]


@pytest.mark.parametrize("optimizer", ["sgd", "gd", "lbfgs", "exact"])
def test_train_with_each_optimizer_on_cuda(emulated, tmp_path, optimizer):
    extra = {"exact": ["--loss", "squared"], "lbfgs": ["--max-iter", 5]}.get(optimizer, [])
    run = tmp_path / optimizer
    with emulated():
        assert train(*RUN, "--optimizer", optimizer, *extra, "--logdir", run) == 0
    summary = helpers.read_json(run / "metrics.json")
    assert summary["status"] == "completed" and summary["device"].startswith("cuda") and summary["val_acc"] > 0.1, summary


@pytest.fixture(scope="module")
def cuda_sweep(tmp_path_factory):
    """A two-member sweep trained on emulated CUDA -> its run folder."""
    from tests.conftest import REAL_CUDA
    if REAL_CUDA:
        pytest.skip("a real GPU is here; emulation is for CPU-only machines")
    from tests.emulated_cuda import emulated_cuda
    run = tmp_path_factory.mktemp("cuda") / "sweep"
    with emulated_cuda():
        assert train(*RUN, "--sweep", "lr=0.001,0.01", "--logdir", run) == 0
    return run


def test_a_sweep_evaluate_and_predict_on_cuda(emulated, cuda_sweep, tmp_path, capsys):
    from PIL import Image
    from lintorch import evaluate, predict
    picture = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(picture)
    capsys.readouterr()
    with emulated():
        assert evaluate.main([str(cuda_sweep), "--device", "cuda", "--threads", "1"]) == 0
        assert predict.main([str(cuda_sweep), str(picture), "--device", "cuda", "--json"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out.lower()
    assert json.loads(out[out.index("{"):])


def one_case_of_each_kind(monkeypatch):
    """The gradient checks cut to the cases that broke on cuda (class weights) and one of each other kind:
    every check on emulated CUDA runs once, in test_gradcheck.py's [cuda] variant (slow)."""
    from lintorch.verify import gradients
    every = gradients.make_cases

    def some(seed=0, fns=None):
        cases = [c for c in every(seed, fns) if "K=" not in c.name and "N=64" not in c.name]
        kinds = {}
        for c in cases:
            kinds.setdefault((c.name.split("[")[0], "weighted" in c.name), c)
        return list(kinds.values())
    monkeypatch.setattr(gradients, "make_cases", some)


def test_gradcheck_command_on_cuda(emulated, monkeypatch, capsys):
    """The command's path on cuda, with one_case_of_each_kind."""
    from lintorch import gradcheck
    one_case_of_each_kind(monkeypatch)
    with emulated():
        assert gradcheck.main(["--device", "cuda"]) == 0
    assert "cuda" in capsys.readouterr().out


@pytest.mark.slow
def test_doctor_quick_on_cuda(emulated, monkeypatch, capsys):
    """Every section on cuda; its gradient check with one_case_of_each_kind (all 201 on emulated CUDA took
    ~3 of this test's ~4 minutes, and test_gradcheck.py's [cuda] variant runs them)."""
    from lintorch import doctor
    one_case_of_each_kind(monkeypatch)
    with emulated():
        # emulation measures no speed: the benchmark's 2x limit is lifted (its logic: test_commands_ui)
        code = doctor.main(["--device", "cuda", "--quick", "--epochs", "1", "--max-slowdown", "1000"])
    out, err = capsys.readouterr()
    assert code == 0, out + err


@pytest.mark.slow
def test_bench_quick_on_cuda(emulated, tmp_path):
    """Every section on cuda with the smallest sizes that run it: 512 images (2 batches), 64 per-image, a sweep of 2."""
    from lintorch.bench import command
    with emulated():
        assert command.main(["--quick", "--device", "cuda", "--threads", "1", "--json", str(tmp_path / "b.json"),
                             "--repeats", "1", "--n", "512", "--subset", "64", "--sweep-k", "2"]) == 0
    rows = helpers.read_json(tmp_path / "b.json")["rows"]
    assert rows and all(r["seconds"] > 0 for r in rows)


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


def test_the_gpu_check_says_no_gpu_in_one_line_and_names_each_failure(emulated, monkeypatch, tmp_path, capsys):
    """python -m lintorch.bench.gpu_check, the check to run on a GPU machine: without one, one line and exit 2;
    on one (emulated here, its two commands stubbed: a pass and a time-out), every failure named."""
    from lintorch.bench import gpu_check
    assert gpu_check.main(["--out", str(tmp_path / "none")]) == 2
    helpers.one_error_line(capsys.readouterr().err)
    outcomes = iter([(0, 1.0), ("timeout", 2.0)])
    monkeypatch.setattr(gpu_check, "_run", lambda name, argv, limit: next(outcomes))
    with emulated():
        assert gpu_check.main(["--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "card: emulated cuda" in out and "doctor   passed" in out and "bench    FAILED (timeout)" in out
