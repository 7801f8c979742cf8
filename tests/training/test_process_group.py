"""lintorch.training.process_group: joining a torchrun group (its backend, the --dist-timeout, NCCL's error
handling) and a dead or silent peer answered in one line."""
import datetime
import os

import pytest
import torch

from lintorch.errors import PeerLost
from lintorch.training import process_group
from tests.training.conftest import one_rank

NCCL_HANDLING = "TORCH_NCCL_ASYNC_ERROR_HANDLING"


def test_a_cuda_group_waits_dist_timeout_and_nccl_aborts_instead_of_ending_the_process(emulated, monkeypatch):
    """--device cuda joins "cpu:gloo,cuda:nccl" with --dist-timeout as every collective's timeout, and sets
    TORCH_NCCL_ASYNC_ERROR_HANDLING=2: on a timeout or a dead peer NCCL's watchdog then aborts the communicator
    and the next collective raises (its default, 3, ends the process with no Python error, so no one-line
    answer). A value the user set is kept. Emulated: gloo carries the group; NCCL's watchdog never runs here."""
    import torch.distributed as td
    monkeypatch.setenv(NCCL_HANDLING, "")
    monkeypatch.delenv(NCCL_HANDLING)                   # absent, and absent again after the test
    joined = []
    for preset in (None, "1"):
        if preset is not None:
            monkeypatch.setenv(NCCL_HANDLING, preset)
        one_rank(monkeypatch)
        with emulated(), monkeypatch.context() as m:
            emulated_init = td.init_process_group
            m.setattr(td, "init_process_group",
                      lambda backend, **kw: joined.append((backend, kw["timeout"])) or emulated_init(backend, **kw))
            dist = process_group.Dist(0, 1, 0)
            try:
                assert process_group.init(dist, "cuda", 7.0, False) == "cuda:0"
            finally:
                process_group.teardown(dist)
        assert os.environ[NCCL_HANDLING] == (preset or "2")
    assert joined == [("cpu:gloo,cuda:nccl", datetime.timedelta(seconds=7))] * 2


def test_a_collective_on_an_aborted_nccl_communicator_is_one_line():
    """What the next collective raises once NCCL's watchdog aborted the communicator: PeerLost, one line."""
    def aborted(tensor):
        raise torch.distributed.DistBackendError("NCCL communicator was aborted on rank 1.\n"
                                                 "Exception raised from ...")
    with pytest.raises(PeerLost, match="^lost contact with another training process") as caught:
        process_group.collective(aborted, torch.zeros(1))
    assert "\n" not in str(caught.value) and "NCCL communicator was aborted" in str(caught.value)
