"""Host syncs as a budget (issue 24): on a GPU an eager step costs microseconds and a host sync stalls the
queue, so the hot loops must not ask the GPU for anything. Counted under emulated CUDA
(tests/emulated_cuda.py), where every sync is recorded with the lintorch file:line that asked for it.

Measured when this was written (N 3,500 synthetic 8 x 8, B 256, --flip, --log-every 10000): a one-epoch
run made 55 syncs, 14 of them one per step (loaders.flip_half's blocking copy), now 40, none per step;
one L-BFGS evaluation (K 2, batches of 512) made N / 512 + 2 (4 at N 1,024, 10 at N 4,096), now 0.
"""
import functools

import torch

from tests import helpers

train = functools.partial(helpers.train, threads=None)
RUN = ["--dataset", "synthetic", "--image-size", 8, "--epochs", 1, "--quiet", "--threads", 1, "--device", "cuda",
       "--val-size", 500, "--log-every", 10000]


def _run_syncs(emulated, tmp_path, *argv):
    with emulated() as mode:
        assert train(*RUN, *argv, "--logdir", tmp_path / "-".join(map(str, argv))) == 0
    return mode


def test_sgd_steps_with_flip_make_no_host_sync(emulated, tmp_path):
    """Twice the steps (B 128 against 256), the same syncs: the run's are setup, validation and checkpoints."""
    few, many = (_run_syncs(emulated, tmp_path, "--flip", "--batch-size", b) for b in (256, 128))
    assert many.total() == few.total(), f"{few.total()} syncs at 14 steps:\n{few.table()}\n" \
                                        f"{many.total()} at 28 steps:\n{many.table()}"


def test_an_lbfgs_evaluation_makes_no_host_sync_at_any_n(emulated):
    from lintorch.data import Preprocess
    from lintorch.data.loaders import TensorLoader
    from lintorch.data.split import Split
    from lintorch.objective import Objective
    from lintorch.optim.lbfgs import full_batch_evaluator
    counts = {}
    for N in (1024, 4096):                          # 2 and 8 batches of 512
        g = torch.Generator().manual_seed(0)
        x, y = torch.randint(0, 256, (N, 3, 4, 4), dtype=torch.uint8, generator=g), torch.randint(0, 3, (N,), generator=g)
        with emulated() as mode:
            loader = TensorLoader(Split(x, y), Preprocess.fit(x), 512, "cuda", shuffle=False)
            evaluate = full_batch_evaluator(loader, Objective("softmax", reg=torch.tensor([1e-3, 1e-2])))
            W = torch.zeros(2, 3, 48, device="cuda", dtype=torch.float64)
            b = torch.zeros(2, 3, device="cuda", dtype=torch.float64)
            with mode.counting() as inside:
                f, dW, db = evaluate(W, b, torch.tensor([0, 1]))
            assert f.device.type == dW.device.type == "cuda"
        counts[N] = sum(inside.values())
    assert counts == {1024: 0, 4096: 0}, counts


def test_lbfgs_reads_each_evaluations_values_once(emulated):
    """The driver: one read of the K objective values per evaluation, not one per member."""
    from lintorch.optim.lbfgs import lbfgs
    def quadratic(W, b, active):                    # f = w^T A w / 2 per member, W (A, 1, 2), b (A, 1)
        w = W.reshape(len(active), 2)
        return 0.5 * ((w @ A) * w).sum(1) + b.square().sum(1), (w @ A).reshape(W.shape), 2 * b
    with emulated() as mode:
        A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64).to("cuda")
        W0, b0 = torch.ones(3, 1, 2, device="cuda", dtype=torch.float64), torch.ones(3, 1, device="cuda")
        result = lbfgs(quadratic, W0, b0, tol=1e-8)
    assert set(result.status) == {"converged"}
    reads = sum(n for (kind, w), n in mode.syncs.items() if kind == "tolist" and w.startswith("lintorch/optim/lbfgs"))
    assert reads == result.calls, mode.table()


def test_feature_loader_batches_make_no_host_sync(emulated, image_folder, tmp_path):
    from lintorch import extract
    from lintorch.features import store
    out = tmp_path / "features"
    assert extract.main(["--features", "colorhist", "--dataset", "imagefolder", "--data-dir", str(image_folder),
                         "--image-size", "8", "--device", "cpu", "--threads", "1", "--quiet", "--out", str(out)]) == 0
    split, _ = store.open_folder(str(out))
    with emulated() as mode:
        loader = store.FeatureLoader(split, 8, "cuda")
        with mode.counting() as inside:
            batches = list(loader.batches(0))
    assert len(batches) == len(loader) >= 4 and batches[0][0].device.type == "cuda"
    assert sum(inside.values()) == 0, mode.table()


def test_kmeans_syncs_do_not_grow_with_the_batches(emulated):
    from lintorch.features.kmeans import kmeans
    X = torch.randn(400, 6, generator=torch.Generator().manual_seed(0))
    expected = kmeans(X, 5, iterations=3, batch_size=400)
    totals = []
    for batch_size in (400, 50):                  # 1 and 8 batches an iteration
        with emulated() as mode:
            C = kmeans(X.to("cuda"), 5, iterations=3, batch_size=batch_size).cpu()
        totals.append(mode.total() - 1)                     # less the last line's copy
        torch.testing.assert_close(C, expected)
    assert totals[0] == totals[1], totals


def test_doctors_expected_host_syncs_are_the_syncs_made(emulated):
    """doctor's training section reports the syncs torch's sync-debug mode warns about against the count the
    loop should make: checks every --log-every steps and one read of the logged scalars."""
    from lintorch.data import load_dataset
    from lintorch.doctor import train_config, train_run
    data = load_dataset("synthetic", None, image_size=8, val_size=500, seed=0)
    import dataclasses
    cfg = dataclasses.replace(train_config("synthetic", "softmax", 2, 8), log_every=4)   # 14 steps an epoch: 3 logs
    with emulated():
        record, _ = train_run(cfg, torch.device("cuda"), data, sync_debug=True)
    assert record["host_syncs"] == record["expected_syncs"] > 0, record


def test_the_lbfgs_two_loop_recursion_makes_no_host_sync(emulated):
    """optim.lbfgs._direction: -H g from the (s, y) history; its dot products stay on the device."""
    from lintorch.optim.lbfgs import _direction
    g = torch.Generator().manual_seed(0)
    S, Y = [torch.randn(20, generator=g, dtype=torch.float64) for _ in range(5)], []
    Y = [s + 0.1 * torch.randn(20, generator=g, dtype=torch.float64) for s in S]
    rho = [1.0 / float(s @ y) for s, y in zip(S, Y)]
    grad = torch.randn(20, generator=g, dtype=torch.float64)
    expected = _direction(grad, S, Y, rho)
    with emulated() as mode:
        Sc, Yc, gc = [s.to("cuda") for s in S], [y.to("cuda") for y in Y], grad.to("cuda")
        with mode.counting() as inside:
            d = _direction(gc, Sc, Yc, rho)
        assert sum(inside.values()) == 0, mode.table()
        torch.testing.assert_close(d.cpu(), expected)
