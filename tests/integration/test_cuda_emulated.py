"""The CUDA path on a machine without a GPU (issue 24): the crashes a first GPU user met, each run under
emulated CUDA (tests/emulated_cuda.py: CUDA's device rules, host syncs counted), in this process.

On a machine with a GPU these are skipped: there the suite's [cuda] variants and `lintorch doctor` run on it.
"""
import functools
import math

import pytest
import torch

from tests import helpers
from tests.integration.test_hostile_run import stop_after

train = functools.partial(helpers.train, threads=None)
# a small synthetic problem: 4,000 images of 8 x 8 (D 192), 16 steps an epoch
CUDA_RUN = ["--dataset", "synthetic", "--image-size", 8, "--epochs", 1, "--quiet", "--threads", 1,
            "--device", "cuda", "--val-size", 500]


# --------------------------------------------------------------------------- the five crashes, by class

def test_preprocess_fitted_on_the_cpu_applies_to_cuda_batches(emulated):
    from lintorch.data import Preprocess
    x = torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for pre in (Preprocess.fit(x), Preprocess.fit(x, mode="channel", standardize=True)):
        expected = pre(x)
        with emulated():
            out = pre(x.to("cuda"))
            assert out.device.type == "cuda"
            assert torch.equal(out.cpu(), expected)


def test_class_weighted_gradient_checks_pass_on_cuda(emulated):
    """`lintorch gradcheck --device cuda` failed every class-weighted check: the weights stayed on the CPU.
    (All 201 checks on emulated CUDA: test_gradcheck.py's [cuda] variant, slow.)"""
    from lintorch.verify.gradients import _check, make_cases
    cases = [c for c in make_cases(seed=1) if "weighted" in c.name and "K=" not in c.name]
    with emulated():
        rows = [row for case in cases for row in _check(case, ("autograd",), "cuda", seed=1)]
    assert len(rows) == 2 * len(cases) >= 8 and all(r.where.endswith("/cuda") for r in rows)
    assert all(r.passed for r in rows), [(r.function, r.note) for r in rows if not r.passed][:3]



@pytest.fixture
def tf32_restored():
    """The TF32 flags as they were, restored after the test. Set by plain assignment: torch's flag
    objects answer these names through __getattr__, so monkeypatch (pytest >= 9.2) would delete
    them on undo instead of restoring them."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before

def test_gradient_checks_run_with_tf32_off_and_restore_it(tf32_restored):
    """TF32 (on for every CUDA command) rounds float32 GEMMs to a 10-bit mantissa: the checks' float32
    tolerance (1e-5) would fail by 100x, so check_function turns it off while it runs."""
    from lintorch import check_function
    seen = []

    def linear(x, W):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return x @ W.T
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    g = torch.Generator().manual_seed(0)
    x, W = torch.randn(3, 4, generator=g), torch.randn(2, 4, generator=g, requires_grad=True)
    assert check_function(linear, x, W, reference=lambda x, W: x @ W.T, wrt=(1,)).ok
    assert seen and not any(a or b for a, b in seen)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_resume_after_an_interrupt_on_cuda(emulated, tmp_path, monkeypatch):
    run = tmp_path / "run"
    with emulated():
        stop_after(monkeypatch, 5)
        assert train(*CUDA_RUN, "--epochs", 2, "--logdir", run) == 130
        monkeypatch.undo()
        assert train("--resume", run, "--quiet", "--threads", 1) == 0
    assert helpers.read_json(run / "metrics.json")["status"] == "completed"


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


def test_sweep_parallel_rank_whose_members_all_diverge_reduces_on_the_runs_device(emulated, tmp_path, monkeypatch):
    """A rank whose members all diverged keeps answering the others' per-step collective (drain): its tensor
    must be on the device the live ranks use, or gloo and NCCL split the job and it hangs."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    with emulated() as mode:
        code = train(*CUDA_RUN, "--sweep", "lr=1e30,1e31", "--sweep-parallel", "--log-every", 4,
                     "--logdir", tmp_path / "run")
    assert code == 1
    by_device = {dev: sum(n for (d, _), n in mode.collectives.items() if d == dev) for dev in ("cpu", "cuda")}
    steps = math.ceil((4000 - 500) / 256)           # the synthetic set's 4,000 images less the validation split
    # every step's stop flag (the members diverge at the first check, step 4, then the rank drains the epoch's
    # other steps) and the epoch's any-active vote on cuda; on the CPU only joining's agreement on the device
    assert by_device == {"cpu": 1, "cuda": steps + 1}, mode.collectives


# --------------------------------------------------------------------------- one place decides the device and TF32

def test_extract_answers_a_missing_gpu_in_one_line_and_uses_tf32_like_the_other_commands(emulated, image_folder,
                                                                                         tmp_path, capsys,
                                                                                         tf32_restored):
    from lintorch import extract
    argv = ["--features", "colorhist", "--data-dir", str(image_folder), "--dataset", "imagefolder",
            "--image-size", "8", "--threads", "1", "--quiet"]
    torch.backends.cuda.matmul.allow_tf32 = False
    with emulated():
        assert extract.main([*argv, "--device", "cuda:7", "--out", str(tmp_path / "seven")]) == 2
        assert "cuda:7" in helpers.one_error_line(capsys.readouterr().err)
        assert not (tmp_path / "seven").exists()
        assert extract.main([*argv, "--device", "cuda", "--out", str(tmp_path / "out")]) == 0
    assert torch.backends.cuda.matmul.allow_tf32
    assert helpers.read_json(tmp_path / "out" / "extractor.json")["device"] == "cuda"


def test_feature_cache_keeps_cuda_and_cpu_features_apart(emulated, image_folder, tmp_path):
    cache = tmp_path / "cache"
    argv = ["--dataset", "imagefolder", "--data-dir", image_folder, "--image-size", 16, "--features", "hog",
            "--epochs", 1, "--quiet", "--threads", 1, "--cache-dir", cache, "--val-size", 12]
    assert train(*argv, "--device", "cpu", "--logdir", tmp_path / "cpu") == 0
    on_cpu = sorted(p.name for p in cache.glob("features-*"))
    with emulated():
        assert train(*argv, "--device", "cuda", "--logdir", tmp_path / "cuda") == 0
    both = sorted(p.name for p in cache.glob("features-*"))
    assert on_cpu and len(both) == 2 * len(on_cpu) and set(on_cpu) < set(both)
