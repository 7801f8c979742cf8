"""lintorch.training.distributed: a rank whose members all diverge reduces on the run's device."""
import math

from tests.conftest import train_auto_threads
from tests.training.conftest import CUDA_RUN, one_rank


def test_sweep_parallel_rank_whose_members_all_diverge_reduces_on_the_runs_device(emulated, tmp_path, monkeypatch):
    """A rank whose members all diverged keeps answering the others' per-step collective (drain): its tensor
    must be on the device the live ranks use, or gloo and NCCL split the job and it hangs."""
    one_rank(monkeypatch)
    with emulated() as mode:
        code = train_auto_threads(*CUDA_RUN, "--sweep", "lr=1e30,1e31", "--sweep-parallel", "--log-every", 4,
                     "--logdir", tmp_path / "run")
    assert code == 1
    by_device = {dev: sum(n for (d, _), n in mode.collectives.items() if d == dev) for dev in ("cpu", "cuda")}
    steps = math.ceil((4000 - 500) / 256)           # the synthetic set's 4,000 images less the validation split
    # every step's stop flag (the members diverge at the first check, step 4, then the rank drains the epoch's
    # other steps) and the epoch's any-active vote on cuda; on the CPU only joining's agreement on the device
    assert by_device == {"cpu": 1, "cuda": steps + 1}, mode.collectives
