"""lintorch.optim.sgd: SGD steps make no host sync."""
from tests.conftest import train_auto_threads


RUN = ["--dataset", "synthetic", "--image-size", 8, "--epochs", 1, "--quiet", "--threads", 1, "--device", "cuda",
       "--val-size", 500, "--log-every", 10000]


def _run_syncs(emulated, tmp_path, *argv):
    with emulated() as mode:
        assert train_auto_threads(*RUN, *argv, "--logdir", tmp_path / "-".join(map(str, argv))) == 0
    return mode


def test_sgd_steps_with_flip_make_no_host_sync(emulated, tmp_path):
    """Twice the steps (B 128 against 256), the same syncs: the run's are setup, validation and checkpoints."""
    few, many = (_run_syncs(emulated, tmp_path, "--flip", "--batch-size", b) for b in (256, 128))
    assert many.total() == few.total(), f"{few.total()} syncs at 14 steps:\n{few.table()}\n" \
                                        f"{many.total()} at 28 steps:\n{many.table()}"
