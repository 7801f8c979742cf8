"""The pure core: fit(config, data) -> PathResult, the K members' weights and what each reached.

Shapes: N examples, D features, C classes, K members (a single run is a sweep of one).

fit touches no file, draws no picture, builds no hparams, installs no signal handler and leaves
the loggers' levels, torch's global RNG and the thread count as it found them (the recipe seeds
its own initialization under torch.random.fork_rng). LinearProbe.fit calls it; the train command
runs the same core (training.run.execute) with a run folder, which adds TensorBoard, checkpoints,
pictures and metrics.json, and its StopFlag for Ctrl-C and SIGTERM.
"""
from dataclasses import dataclass
from typing import List, Optional

import torch


@dataclass
class PathResult:
    """What fit returns: W (K, C, D) and b (K, C), each member's kept weights (its best on
    validation), and per member its name, values (its overrides of the config), validation
    accuracy, objective (the full-batch solvers'), status, iterations (L-BFGS iterations or SGD
    steps), history and note (how it ended, in words); best, the index of the member kept by members.ranking (None: every member
    diverged); config, each member's TrainConfig and saved (its checkpoint config dict: the config and
    what the run resolved); preprocess, the standardization the weights apply to."""
    W: torch.Tensor
    b: torch.Tensor
    names: List[str]
    values: List[dict]
    val_acc: List[Optional[float]]
    objective: List[Optional[float]]
    status: List[str]
    iterations: List[Optional[int]]
    history: List[list]
    notes: List[Optional[str]]
    best: Optional[int]
    configs: list
    saved: List[dict]
    preprocess: object
    exit_status: int


def fit(cfg, data=None, *, device, preprocess=None, train_loader=None, names=None, stop=None):
    """cfg: a checked TrainConfig; data: a DataSet (else loaded from cfg); device: a torch.device;
    preprocess: a fixed Preprocess (else fitted on data.train); train_loader: the caller's own SGD
    batches; names: the members' names; stop: polled between steps (default: never) -> PathResult.
    A user error (bad data, a setting the data cannot honour) raises lintorch's UserError/DataError."""
    from .run import execute
    status, run = execute(cfg, device, None, data=data, preprocess=preprocess, tensorboard=False,
                          train_loader=train_loader, names=names, stop=stop)
    return path_result(run, status)


def path_result(run, status):
    """A finished Run (training.run.Run) and its exit status -> PathResult."""
    steps = len(run.recipe.train_loader)
    W = torch.stack([w.detach() for w, _ in run.kept])                 # (K, C, D)
    b = torch.stack([b.detach() for _, b in run.kept])                 # (K, C)
    ms = run.members
    return PathResult(W, b, [m.name for m in ms], [dict(m.overrides) for m in ms], [m.metrics["val_acc"] for m in ms],
                      [m.metrics.get("objective") for m in ms], [m.metrics["status"] for m in ms],
                      [m.metrics.get("iterations", len(m.history) * steps) for m in ms], [m.history for m in ms],
                      [m.note for m in ms], None if run.best is None else run.best[0], [m.config for m in ms],
                      [m.saved_config() for m in ms], run.recipe.preprocess, status)
