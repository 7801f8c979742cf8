"""The torchrun process group: this process's place in it (Dist), joining and leaving it, and the
collectives lintorch uses, each turning a dead or silent peer into one line (PeerLost) instead of
a hang. Both distributed training (training/distributed.py) and extract's sharded encoding use it.

Shapes: the tensors reduced are flat buffers; objects travel by torch.distributed's pickling.
"""
import datetime
import logging
import os
from dataclasses import dataclass

import torch

from ..errors import PeerLost, UserError


@dataclass
class Dist:
    """This process's place in a torchrun job. mode: "data" or "config" (--sweep-parallel)."""
    rank: int
    world: int
    local_rank: int
    mode: str = "data"
    timeout: float = 60.0
    device: str = "cpu"      # where every collective's tensors live (the agreed device; gloo or NCCL follows it)

    @property
    def main(self):
        return self.rank == 0

    @property
    def writes_run(self):
        """Whether this rank's members write their folders (TensorBoard, checkpoints, metrics)."""
        return self.main or self.mode == "config"


def from_env():
    """torchrun's RANK, WORLD_SIZE, LOCAL_RANK -> Dist, or None outside torchrun."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def silence_others(dist):
    """Ranks other than 0 log nothing (their bars are off through --quiet); a traceback still shows."""
    if dist is not None and not dist.main:
        for name in ("lintorch", "lintorch.epoch"):          # the epoch lines' logger has a level of its own
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def init(dist, device_name, timeout_s, sweep_parallel):
    """Join the process group -> this rank's device name ("cpu" or "cuda:LOCAL_RANK", for
    cli.resolve_device). gloo on CPU; on CUDA collectives of CUDA tensors go through nccl (backend
    "cpu:gloo,cuda:nccl"). timeout_s bounds every collective (NCCL's too), so a dead rank ends the others with
    a message; a TORCH_NCCL_ASYNC_ERROR_HANDLING the user set is kept."""
    import torch.distributed as td
    dist.timeout, dist.mode = float(timeout_s), "config" if sweep_parallel else "data"
    gpu_here = torch.cuda.is_available() and dist.local_rank < torch.cuda.device_count()
    want_cuda = device_name != "cpu" and gpu_here
    if want_cuda:
        torch.cuda.set_device(dist.local_rank)
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and device_name != "cpu" else "gloo"
    if "nccl" in backend:
        # NCCL's watchdog ends the process on a timeout or a dead peer by default (3: no Python error, no one
        # line); 2 aborts the communicator only, so the next collective raises and collective() says so
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
    td.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    # agree on the device: CUDA only when every rank has one
    every = collective(lambda t: td.all_reduce(t, op=td.ReduceOp.MIN), torch.tensor([float(want_cuda)]))
    if device_name.startswith("cuda") and not bool(every[0]):
        raise UserError(f"--device {device_name}: not every process has a GPU (rank {dist.rank}: "
                        f"{'yes' if gpu_here else 'no'}); use --device cpu")
    if not dist.main:
        logging.getLogger("lintorch").setLevel(logging.WARNING)
    dist.device = f"cuda:{dist.local_rank}" if bool(every[0]) else "cpu"
    return dist.device


def threads_per_process():
    """--threads auto under torchrun: this machine's cores split evenly among its processes."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def teardown(dist):
    import torch.distributed as td
    if dist is not None and td.is_initialized():
        try:
            td.destroy_process_group()
        except Exception:      # a peer already gone: nothing left to tidy
            pass


def collective(op, tensor):
    """op(tensor) in place, a dead or silent peer turned into PeerLost -> tensor."""
    try:
        op(tensor)
    except (RuntimeError, OSError) as e:      # DistBackendError is a RuntimeError
        raise PeerLost(f"lost contact with another training process ({_reason(e)}); it was killed or stopped "
                       f"answering, so this one stops too") from None
    return tensor


def _reason(e):
    text = " ".join(str(e).split())
    return text if len(text) < 200 else text[:200] + "..."


def all_reduce(tensor):
    import torch.distributed as td
    return collective(td.all_reduce, tensor)


def share(dist, fn):
    """Rank 0 runs fn() and every rank gets its result; an error on rank 0 ends the others
    quietly (exit 2) while rank 0 prints it."""
    import torch.distributed as td
    box = [None]
    if dist.main:
        try:
            box = [("ok", fn())]
        except UserError as e:
            box = [("error", str(e))]
            collective(lambda _: td.broadcast_object_list(box, src=0), None)
            raise
    collective(lambda _: td.broadcast_object_list(box, src=0), None)
    kind, value = box[0]
    if kind == "error":
        raise SystemExit(2)
    return value


def all_gather_object(obj):
    import torch.distributed as td
    out = [None] * td.get_world_size()
    collective(lambda _: td.all_gather_object(out, obj), None)
    return out


def barrier():
    import torch.distributed as td
    collective(lambda _: td.barrier(), None)

