"""Training under torchrun: data-parallel (each process a shard of every global batch, one
all-reduce per step) and config-parallel (--sweep-parallel: the K members split across processes,
each on all the data, no gradient communication).

Shapes: B global batch, b_r rank r's share of it (sum_r b_r = B), D features, C classes, K members
(weight (K, C, D)); K_r the members on rank r in config-parallel.

Data-parallel is exact up to float summation order: every rank draws epoch e's permutation from
loaders.epoch_order(n, seed, e), takes rows r::N of each global batch, computes its mean loss and
gradient over its rows, and one all-reduce sums b_r * (dW, db, data, reg) together with b_r and a
stop flag; dividing by B gives the single-process global-batch mean. Since sum_r b_r = B the
regularization (the same on every rank) comes out unchanged. Every rank then holds the same
weights and takes the same decisions (divergence, patience, best epoch) from the same numbers.
Validation is sharded and reduced: rank r evaluates a contiguous 1/N of the split and one
all-reduce sums the counts. Rank 0 alone claims the run folder and writes TensorBoard,
checkpoints and metrics; the other ranks' members write nothing.

Stopping (SIGINT/SIGTERM, which torchrun forwards to every rank) is agreed on: each rank's flag
rides in the step's all-reduce (config-parallel: a one-number all-reduce per step), so every rank
stops after the same step and rank 0 writes last.pt once. A rank that dies makes the others'
next collective fail (at once when its sockets close, else after --dist-timeout seconds): one
line naming the cause, not a hang. The process group itself (joining, leaving, the collectives)
is training/process_group.py.
"""
import torch

from ..errors import UserError
from .process_group import all_gather_object, all_reduce, collective


# --------------------------------------------------------------------------- data-parallel pieces

class ShardedLoader:
    """Rank r's rows r::N of each global batch of a TensorLoader (every rank draws the same
    epoch_order permutation), or with rows=True a contiguous 1/N of an unshuffled split
    (validation). Same len() as the loader: every rank takes the same number of steps."""

    def __init__(self, loader, rank, world, rows=False):
        self.loader, self.rank, self.world = loader, rank, world
        self.batch_size, self.device = loader.batch_size, loader.device
        if rows:
            n = len(loader.y)
            lo, hi = rank * n // world, (rank + 1) * n // world
            self.x, self.y = loader.x[lo:hi], loader.y[lo:hi]
        self.rows = rows

    def __len__(self):
        return len(self.loader)

    def batches(self, epoch=0, start=0):
        L, B = self.loader, self.batch_size
        if self.rows:
            for i in range(start * B, len(self.y), B):
                yield L.preprocess(self.x[i:i + B]), self.y[i:i + B]
            return
        from ..data.loaders import epoch_order
        n = len(L.y)
        order = epoch_order(n, L.seed, epoch).to(L.device) if L.shuffle else torch.arange(n, device=L.device)
        for i in range(start * B, n, B):
            idx = order[i:i + B][self.rank::self.world]
            yield L.preprocess(L.x.index_select(0, idx)), L.y.index_select(0, idx)


def shard_dataloader(loader, rank, world):
    """--loader dataloader: its batch sampler yields rank r's rows r::N of each global batch."""
    from ..data.loaders import _EpochBatches

    class Sharded(_EpochBatches):
        def __iter__(self):
            for batch in super().__iter__():
                yield batch[rank::world]
    old = loader.sampler
    loader.sampler = Sharded(old.n, old.batch_size, old.seed, old.shuffle)
    dl = loader.loader
    loader.loader = torch.utils.data.DataLoader(dl.dataset, batch_sampler=loader.sampler, num_workers=dl.num_workers,
                                                pin_memory=dl.pin_memory)
    return loader


class StepSync:
    """The objective as train_one_epoch sees it, plus the step's one collective.

    data mode: local loss_and_grad on b_r rows, then ONE all-reduce of the flat buffer
    [b_r dW, b_r db, b_r data, b_r reg, b_r, stop] (K members stacked), divided by B = sum b_r.
    config mode: local loss_and_grad, and a one-number all-reduce of the stop flag.
    should_stop() is the agreed flag, read every `every` steps (1 on CPU; on CUDA the epoch loop's
    check cadence, so no extra host sync)."""

    def __init__(self, objective, dist, stop, every=1):
        self.objective, self.dist, self.stop, self.every = objective, dist, stop, every
        self.calls, self.flag = 0, None

    def __getattr__(self, name):            # data(), regularization(), reg, loss, ...
        return getattr(self.objective, name)

    def loss_and_grad(self, x, weight, bias, y):
        self.calls += 1
        stop = 1.0 if self.stop() else 0.0
        if self.dist.mode == "config":
            out = self.objective.loss_and_grad(x, weight, bias, y)
            self.flag = all_reduce(torch.tensor([stop], device=self.dist.device))
            return out
        b = len(y)
        W = weight
        if b:
            scores, data, reg, dW, db = self.objective.loss_and_grad(x, weight, bias, y)
        else:   # a global batch smaller than the world leaves this rank no rows
            K, C = W.shape[0], W.shape[1]
            scores, dW, db = W.new_zeros(K, 0, C), torch.zeros_like(W), torch.zeros_like(bias)
            data = reg = W.new_zeros(K)
        parts = [dW, db, data, reg]
        sizes = [p.numel() for p in parts]
        buf = torch.empty(sum(sizes) + 2, dtype=dW.dtype, device=dW.device)
        torch.cat([p.reshape(-1).to(dW.dtype) for p in parts], out=buf[:-2])
        buf[:-2].mul_(b)
        buf[-2], buf[-1] = b, stop
        all_reduce(buf)
        total = buf[-2]
        out = [t.view_as(p).div_(total) for t, p in zip(buf[:-2].split(sizes), parts)]
        self.flag = buf[-1:]
        return scores, out[2], out[3], out[0], out[1]

    def should_stop(self):
        if self.flag is None or self.calls % self.every:
            return False
        return bool(self.flag[0] > 0)

    def drain(self, steps):
        """config mode: a rank whose members all diverged left its epoch early; it keeps taking
        the other ranks' per-step collectives to the epoch's end (or their agreed stop)
        -> the step index where they stopped, or None."""
        for _ in range(steps - self.calls):
            self.calls += 1
            self.flag = all_reduce(torch.tensor([1.0 if self.stop() else 0.0], device=self.dist.device))
            if self.should_stop():
                return self.calls
        return None


def sharded_evaluate(model, loader, objective=None, num_classes=None):
    """epoch.evaluate over this rank's contiguous 1/N of the split, summed over ranks by one
    all-reduce -> the same dict (acc, loss, confusion, n) as the single-process evaluate."""
    import torch.distributed as td
    from .epoch import evaluate as local
    world, rank = td.get_world_size(), td.get_rank()
    mine = loader.shard(rank, world, rows=True) if hasattr(loader, "shard") else ShardedLoader(loader, rank, world, True)
    part = local(model, mine, objective, num_classes)
    acc = torch.as_tensor(part["acc"]).double().reshape(-1)
    n = part["n"]
    pieces = [acc * n, torch.tensor([float(n)], dtype=torch.float64)]
    if part["loss"] is not None:
        pieces.append(torch.as_tensor(part["loss"]).double().reshape(-1) * n)
    cm = part["confusion"]
    if num_classes is not None and acc.numel() == 1:
        cm = torch.zeros(num_classes, num_classes, dtype=torch.int64) if cm is None else cm
        pieces.append(cm.double().reshape(-1))
    buf = torch.cat([p.to(model.weight.device) for p in pieces])   # the run's device: CPU gloo, CUDA nccl
    buf = all_reduce(buf).cpu()
    K = acc.numel()
    total = buf[K]
    out = {"acc": (buf[:K] / total).reshape(torch.as_tensor(part["acc"]).shape), "n": int(total), "loss": None,
           "confusion": None}
    at = K + 1
    if part["loss"] is not None:
        out["loss"] = (buf[at:at + K] / total).to(torch.as_tensor(part["loss"]).dtype).reshape(
            torch.as_tensor(part["loss"]).shape)
        at += K
    if num_classes is not None and K == 1:
        out["confusion"] = buf[at:].round().long().view(num_classes, num_classes)
    return out


def reduce_epoch(stats):
    """data mode: the epoch's correct and seen summed over ranks (data and reg are already global)."""
    correct = torch.as_tensor(stats.correct).reshape(-1)
    buf = torch.cat([correct.double(), torch.tensor([float(stats.seen)], dtype=torch.float64,
                                                    device=correct.device)])
    buf = all_reduce(buf)
    stats.correct = buf[:-1].round().long().reshape(torch.as_tensor(stats.correct).shape)
    stats.seen = int(buf[-1])
    return stats


def local_partial(dist, partial):
    """A resumed mid-epoch's sums: data and reg are global (the same on every rank), correct and
    seen were summed over ranks when saved, so rank 0 alone carries them on."""
    if partial is None or dist.mode != "data" or dist.main:
        return partial
    return {**partial, "correct": 0, "seen": 0}


# --------------------------------------------------------------------------- config-parallel pieces

def member_share(dist, K):
    """config mode: rank r's members [lo, hi) of K, contiguous and as even as possible."""
    if K < dist.world:
        raise UserError(f"--sweep-parallel splits the sweep's {K} configuration(s) across {dist.world} processes: "
                        f"give at least {dist.world} configurations, or start fewer processes")
    return dist.rank * K // dist.world, (dist.rank + 1) * K // dist.world


def _slice_members(value, lo, hi, K):
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == K:
        return value[lo:hi]
    if isinstance(value, dict):
        return {k: _slice_members(v, lo, hi, K) for k, v in value.items()}
    return value


def local_state(state, lo, hi):
    """A resumed TrainState of all K members -> this rank's members [lo, hi)."""
    K = state.weight.shape[0]
    for name in ("weight", "bias", "best_weight", "best_bias", "momentum", "partial"):
        setattr(state, name, _slice_members(getattr(state, name), lo, hi, K))
    state.members = state.members[lo:hi]
    return state


def gather_state(state):
    """config mode: every rank's TrainState (its members) -> all K members' on rank 0, None elsewhere."""
    import torch.distributed as td
    from ..output.checkpoint import TrainState
    cpu = lambda v: v.detach().cpu() if isinstance(v, torch.Tensor) else (
        {k: cpu(x) for k, x in v.items()} if isinstance(v, dict) else v)
    mine = {k: cpu(v) for k, v in vars(state).items()}
    parts = [None] * td.get_world_size() if td.get_rank() == 0 else None
    collective(lambda _: td.gather_object(mine, parts, dst=0), None)
    if parts is None:
        return None

    def cat(values):
        first = values[0]
        if isinstance(first, torch.Tensor) and first.dim():
            return torch.cat(values)
        if isinstance(first, torch.Tensor) or isinstance(first, (int, float)):   # per-member sums or ints
            if isinstance(first, torch.Tensor):
                return torch.cat([v.reshape(-1) for v in values])
            return first
        if isinstance(first, dict):
            return {k: cat([v[k] for v in values]) for k in first}
        return first
    out = {k: (sum((p[k] for p in parts), []) if k == "members" else cat([p[k] for p in parts]))
           for k in mine}
    if out["partial"] is not None:   # counts and clocks are the run's, not per member
        for k in ("seen", "steps", "seconds"):
            out["partial"][k] = parts[0]["partial"][k]
    return TrainState(**out)


# --------------------------------------------------------------------------- the strategies (Trainer's view)

class Local:
    """One process, the null strategy (as NullSaver and NullMonitor): the plain evaluate, nothing
    to reduce, agree on or gather; the run's ending is its own. DataParallel and ConfigParallel
    override what torchrun changes."""
    main = writes_run = True
    sweep_checkpoint = True          # this process sees every member: it keeps the sweep's checkpoint.pt

    def evaluate(self, model, loader, objective=None, num_classes=None):
        from .epoch import evaluate as local
        return local(model, loader, objective, num_classes)

    def begin_epoch(self, partial, should_stop, first):
        """-> (the resumed epoch's partial sums this process carries, the stop test for the loop)."""
        return partial, should_stop

    def end_epoch(self, stats, next_step, trainer):
        """-> (the epoch's stats over every process, the step where training stopped or None)."""
        return stats, next_step

    def any_active(self, mine):
        return mine

    def gather_state(self, state):
        """The TrainState last.pt keeps: all members', on the process that writes (None elsewhere)."""
        return state

    def finish(self, run, results, status, weights):
        return run.finish(results, status, weights)


class _Torchrun(Local):
    def __init__(self, dist, recipe, stop, every):
        self.dist, self.main = dist, dist.main
        recipe.objective = self.sync = StepSync(recipe.objective, dist, stop, every)

    def begin_epoch(self, partial, should_stop, first):
        self.sync.calls = first
        return partial, self.sync.should_stop


class DataParallel(_Torchrun):
    """Each process a shard of every global batch; rank 0 alone writes."""

    def __init__(self, dist, recipe, stop, every):
        from ..data.loaders import TensorLoader
        super().__init__(dist, recipe, stop, every)
        self.writes_run = dist.main
        tl = recipe.train_loader
        if hasattr(tl, "shard"):            # a feature folder's FeatureLoader shards itself
            recipe.train_loader = tl.shard(dist.rank, dist.world)
        else:
            recipe.train_loader = (ShardedLoader(tl, dist.rank, dist.world) if isinstance(tl, TensorLoader)
                                   else shard_dataloader(tl, dist.rank, dist.world))

    evaluate = staticmethod(sharded_evaluate)

    def begin_epoch(self, partial, should_stop, first):
        return super().begin_epoch(local_partial(self.dist, partial), should_stop, first)

    def end_epoch(self, stats, next_step, trainer):
        return reduce_epoch(stats), next_step

    def finish(self, run, results, status, weights):
        if results is None:        # ranks > 0: the same members' outcome, nothing written
            results = [{"val_acc": m.best_val, "status": m.status} for m in run.members]
            return run.exit_status(status, results)
        return run.finish(results, status, weights)


class ConfigParallel(_Torchrun):
    """--sweep-parallel: each process its share of the members on all the data; rank 0 ends the run."""
    sweep_checkpoint = False         # no process sees every member until the end

    def end_epoch(self, stats, next_step, trainer):
        """A process whose members all diverged mid-epoch keeps answering the others' steps (drain). The
        members are marked diverged after this; the optimizer froze them during the epoch."""
        if next_step is None and self.sync.calls < trainer.steps_per_epoch and not bool(trainer.opt.active.any()):
            next_step = self.sync.drain(trainer.steps_per_epoch)
        return stats, next_step

    def any_active(self, mine):
        return bool(all_reduce(torch.tensor([float(mine)], device=self.dist.device))[0] > 0)

    def gather_state(self, state):
        return gather_state(state)

    def finish(self, run, results, status, weights):
        """Every rank's members' results to rank 0, which ends the run with all of them (the best
        member's checkpoint.pt copied from its folder)."""
        gathered = all_gather_object([(m.name, r) for m, r in zip(run.members, results)])
        names, results = zip(*[pair for part in gathered for pair in part])
        if self.main:
            return run.finish(list(results), status, None, list(names))
        return run.exit_status(status, results)


def strategy(dist, recipe, stop, every):
    """The group a run trains in: Local outside torchrun (dist None), else data- or config-parallel,
    which shard the recipe's loader and wrap its objective (the step's collective, agreed stopping).
    every: steps between stop checks (1 on CPU; on CUDA the loop's check cadence)."""
    if dist is None:
        return Local()
    return (ConfigParallel if dist.mode == "config" else DataParallel)(dist, recipe, stop, every)
