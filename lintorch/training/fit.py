"""The pure core: fit(config, data) -> PathResult, the K members' weights and what each reached.

Shapes: N examples, D features, C classes, K members (a single run is a sweep of one).

fit touches no file, draws no picture, builds no hparams, installs no signal handler and leaves
the loggers' levels, torch's global RNG and the thread count as it found them (the recipe seeds
its own initialization under torch.random.fork_rng). What a caller wants written it installs as
a reporter (training.report): the train command's RunFolder writes TensorBoard, checkpoints,
pictures and metrics.json; its StopFlag ends a run on Ctrl-C and SIGTERM. LinearProbe.fit calls
it with neither.
"""
import logging
import time
from dataclasses import dataclass
from typing import List, Optional

import torch

from . import distributed
from ..names import SEARCHES

log = logging.getLogger("lintorch")


@dataclass
class PathResult:
    """What fit returns: W (K, C, D) and b (K, C), each member's kept weights (its best on
    validation), and per member its name, values (its overrides of the config), validation
    accuracy, objective (the full-batch solvers'), status, iterations (L-BFGS iterations or SGD
    steps), history and note (how it ended, in words); best, the index of the member kept by members.ranking (None: every member
    diverged); config, each member's TrainConfig and saved (its checkpoint config dict: the config and
    what the run resolved); preprocess, the standardization the weights apply to; exit_status, the
    train command's (0 a model kept, 1 every member diverged, 128 + signal interrupted). W and b are
    None on a torchrun rank that does not hold the members' weights."""
    W: Optional[torch.Tensor]
    b: Optional[torch.Tensor]
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


class Never:
    """A stop flag that never fires: a fit without the command's signal handling."""
    signum = None
    saving = False

    def __call__(self):
        return False


def fit(cfg, data=None, *, device, report=None, resume=None, stop=None, dist=None, resolved=None,
        preprocess=None, train_loader=None, names=None, train_accuracy=True):
    """Build the recipe and train its K members with cfg's optimizer -> PathResult.
    cfg: a checked TrainConfig; data: a DataSet (else loaded from cfg); device: a torch.device;
    report: a training.report.Reporter told of every event (default: one that writes nothing);
    resume: (Header, TrainState) of a saved run to continue; stop: polled between steps, true to
    end the run (default: never); dist: this process's torchrun place (None outside torchrun);
    resolved: what the caller found out already (threads, run folder); preprocess: a fixed
    Preprocess (else a resumed run's, else fitted on data.train); train_loader: the caller's own SGD
    batches; names: the members' names (default: config.member_name of each member's values);
    train_accuracy: False skips the full-batch solvers' extra pass over the training split that
    measures it (their history's train_acc is then None; SGD's comes free with its epochs).
    A user error (bad data, a setting the data cannot honour) raises lintorch's UserError/DataError."""
    from ..data import Preprocess
    from ..output.checkpoint import check_compatible
    from .epoch import check_interval
    from .recipe import build
    from .report import Reporter
    from .run import Run
    from .solvers import fit_exact, fit_lbfgs, fit_search
    from .trainer import Trainer
    started = time.perf_counter()
    header, state = resume or (None, None)
    report = report or Reporter()
    local = cfg
    if dist is not None and dist.mode == "config":   # distributed hook: this rank's share of the sweep
        lo, hi = distributed.member_share(dist, len(cfg.sweep or [{}]))
        local = cfg.replace(sweep=cfg.sweep[lo:hi])
        state = None if state is None else distributed.local_state(state, lo, hi)
    if header is not None:
        preprocess = Preprocess.from_state_dict(header.preprocess)
    if cfg.preset and header is None:
        log.info(f"--features {cfg.features}: preset {cfg.preset} applied, the best measured classifier, "
                 f"{cfg.preset_text()} (reg chosen on validation; any classifier flag replaces it)")
    recipe = build(local, device, preprocess, data)
    if train_loader is not None:
        recipe.train_loader = train_loader
    folder = None if resolved is None else resolved.logdir
    if header is not None:
        check_compatible(header, folder, recipe.classes, cfg.image_size, recipe.in_features)
    run = Run(cfg, device, recipe, stop or Never(), report, None if state is None else state.members, resolved, names,
              train_accuracy)
    report.on_start(run, state)
    run.started = started
    # distributed hook: sharded batches, the step's all-reduce, agreed stopping (Local: none of it)
    run.group = distributed.strategy(dist, recipe, run.stop, check_interval(device, cfg.log_every))
    data = recipe.data
    threads = run.resolved.threads
    log.info(f"{cfg.dataset}: {len(data.train)} train / {len(data.val)} val"
             f"{'' if data.test is None else f' / {len(data.test)} test'} images, {len(recipe.classes)} classes, "
             f"D = {recipe.in_features}, {len(run.members)} member(s); device {device}"
             f"{'' if threads is None else f' ({threads} thread(s))'}; run folder {folder}")
    drivers = {"lbfgs": fit_lbfgs, "exact": fit_exact, **{name: fit_search for name in SEARCHES}}
    try:
        status = drivers[cfg.optimizer](run) if cfg.optimizer in drivers else Trainer(run, state).train()
    except Exception as e:    # what was trained stays (checkpoints written), metrics.json says why it stopped
        report.on_failed(run, e)
        raise
    return path_result(run, status)


def path_result(run, status):
    """A finished Run (training.run.Run) and its exit status -> PathResult."""
    steps = len(run.recipe.train_loader)
    W = None if run.kept is None else torch.stack([w.detach() for w, _ in run.kept])         # (K, C, D)
    b = None if run.kept is None else torch.stack([b.detach() for _, b in run.kept])         # (K, C)
    ms = run.members
    got = [m.metrics or {"val_acc": m.best_val, "status": m.status} for m in ms]   # none on a writing-free rank
    return PathResult(W, b, [m.name for m in ms], [dict(m.overrides) for m in ms], [g["val_acc"] for g in got],
                      [g.get("objective") for g in got], [g["status"] for g in got],
                      [g.get("iterations", len(m.history) * steps) for m, g in zip(ms, got)], [m.history for m in ms],
                      [m.note for m in ms], None if run.best is None else run.best[0], [m.config for m in ms],
                      [m.saved_config() for m in ms], run.recipe.preprocess, status)
