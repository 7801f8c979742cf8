"""What `python train.py` does: claim the run folder, apply the resume rules, build the recipe and
its members, train, report. Every user error becomes one line and exit 2 (cli.run_command).

Shapes: D features, C classes, K members (a single run is a sweep of one).
"""
import logging
import os
import signal
import threading
import time

import torch

from . import distributed, process_group
from ..cli import choose_threads, one_line, resolve_device, run_command, setup_logging
from ..config import Resolved, TrainConfig, flag, member_name
from ..errors import UserError
from ..names import RESUMABLE_CHANGES, SEARCHES
from ..output.atomic import copy_atomic
from ..output.checkpoint import BEST, Header, check_compatible, last_path, load_resume
from ..output.rundir import abandon, claim_default, claim_existing, claim_new, release, write_json
from .members import Member, best_index, duration, number_members, pct, ranking, show_centroids

log = logging.getLogger("lintorch")


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, saves, and exits 128 + signal."""

    def __init__(self):
        self.signum = None
        self.saving = False     # set while a finished solver's result is written: a second Ctrl-C waits for it
        main = threading.current_thread() is threading.main_thread()   # a fit() in a worker thread: no handlers
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT and not self.saving:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = self.signum or signum

    def __call__(self):
        return self.signum is not None

    def restore(self):
        for s, h in self._old.items():
            signal.signal(s, h)


class Never:
    """A stop flag that never fires: a fit without the command's signal handling."""
    signum = None
    saving = False

    def __call__(self):
        return False


class Run:
    """A run: its config, device, claimed folder (None: a run in memory, nothing written), recipe,
    checkpoint header, members and group (distributed.Local outside torchrun). Its trip: recipe.build
    -> Trainer (epoch.train_one_epoch -> Objective.loss_and_grad -> functional) or solvers (lbfgs,
    random search) -> each Member.finish -> Run.finish (the best member, the sweep's checkpoint.pt,
    the report, the exit status)."""

    # Epochs between weight/grad histograms and template pictures (the first and last epochs always
    # have them). Every 3rd: with them each epoch, train.py's per-epoch bookkeeping (validation,
    # pictures, checkpoints) was 93 ms, 21% of its 0.41 s loop epoch on CIFAR-10; every 3rd epoch
    # 69 ms, 12% (1 thread, a loaded 2-core machine, with Monitor's fast histograms and pictures and
    # eval batches of 512; 149 ms, 34% before those; bench/README.md, "Per-epoch bookkeeping").
    picture_every = 3

    def __init__(self, cfg, device, folder, recipe, stop, resume_members=None, purge_step=None, dist=None,
                 tensorboard=True, names=None, resolved=None):
        self.cfg, self.device, self.folder, self.recipe, self.stop = cfg, device, folder, recipe, stop
        self.resolved = (resolved or Resolved()).replace(lr=recipe.base_lr, val_size=len(recipe.data.val))
        self.dist, self.group = dist, distributed.Local()     # distributed hook: execute sets the group
        self.started = time.perf_counter()     # execute sets it to its own start: the total time covers data and features
        self.best = None           # after finish: (member index, weight (C, D), bias (C,)) of the kept model
        self.kept = None           # after finish: each member's kept (weight (C, D), bias (C,)), where held here
        self.header = Header(list(recipe.classes), cfg.image_size, recipe.in_features, cfg.loss,
                             recipe.preprocess.state_dict(), cfg.saved(self.resolved), recipe.features_header(cfg))
        names = names or ["run" if not cfg.sweep else member_name(c) for c in recipe.configs]
        saved = resume_members or [{"name": n, "config": c} for n, c in zip(names, recipe.configs)]
        single = len(saved) == 1 and not cfg.sweep
        self.members = [Member(s["name"], s["config"], folder if single or folder is None else
                               os.path.join(folder, s["name"]), cfg, self.resolved,
                               purge_step, s, writes=dist is None or dist.writes_run, tensorboard=tensorboard)
                        for s in saved]
        number_members(self.members, cfg, recipe)

    def templates(self, weight):
        """The class templates picture, where weights are pictures (raw pixels), else None."""
        from ..output.visualize import template_grid
        shape = self.recipe.image_shape
        return None if shape is None else template_grid(weight, self.recipe.classes, shape)

    def show_features(self):
        """k-means features: their centroids (the learned filters) in centroids.png and TensorBoard."""
        show_centroids(self.recipe.extractor, self.folder, self.members)

    def report(self, results, status="completed", names=None):
        """One line for a single run; the ranked table and summary metrics.json for a sweep. Either
        way the run ends on the answer: the kept model's validation (and test) accuracy, where its
        checkpoint is, and the total time. status: how the run ended ("completed" or "interrupted"),
        whatever its members did. names: the members' names (default: this process's members;
        config-parallel gives all)."""
        total = duration(time.perf_counter() - self.started)
        checkpoint = os.path.join(self.folder, BEST)
        if not self.cfg.sweep:
            m = results[0]
            if m["val_acc"] is not None:
                test = "" if m["test_acc"] is None else f", test acc {pct(m['test_acc'])}"
                log.info(f"done ({m['status']}): best val acc {pct(m['val_acc'])} at epoch {m['best_epoch']}{test}; "
                         f"{m['seconds']:.1f}s training, {total} in all; checkpoint {checkpoint}")
            return
        names = names or [m.name for m in self.members]
        order = ranking([r["val_acc"] for r in results])
        w = max(len(n) for n in names)
        lines = [f"{'rank':>4}  {'configuration':<{w}} {'val acc':>8}  status"]
        for r, k in enumerate(order, 1):
            lines.append(f"{r:>4}  {names[k]:<{w}} {pct(results[k]['val_acc']):>8}  {results[k]['status']}")
        log.info("sweep results (best first):\n" + "\n".join(lines))
        best = results[order[0]]
        if status != "interrupted":
            status = "diverged" if all(r["status"] == "diverged" for r in results) else "completed"
        write_json(os.path.join(self.folder, "metrics.json"), {"status": status, "best": best, "configs": results})
        if best["val_acc"] is not None:
            self.path_picture(results, order[0])
        if best["val_acc"] is None:
            log.error(f"error: every configuration diverged; no model was kept ({self.folder})")
            return
        test = "" if best["test_acc"] is None else f", test acc {pct(best['test_acc'])}"
        log.info(f"best configuration {names[order[0]]} of {len(results)}: val acc {pct(best['val_acc'])}{test}\n"
                 f"checkpoint {checkpoint}\n"
                 f"done ({status}) in {total}")

    def path_picture(self, results, best):
        """A sweep over one numeric setting: path.png in the run folder and the image "path" in a
        TensorBoard run at the run folder: validation accuracy and the training objective (the
        solver's, else the last epoch's training loss) against the swept value, the best marked."""
        from ..output.monitor import Monitor
        from ..output.rundir import write_png
        from ..output.visualize import path_image
        members = self.members if len(self.members) == len(results) else None
        configs = [r.get("config") or {} for r in results]
        swept = sorted({k for c in configs for k in c if len({repr(x.get(k)) for x in configs}) > 1})
        if members is None or len(swept) != 1 or not all(isinstance(c.get(swept[0]), (int, float)) for c in configs):
            log.debug("path.png: drawn for a sweep of one numeric setting only")
            return
        key = swept[0]
        order = sorted(range(len(results)), key=lambda k: configs[k][key])
        objective = [results[k].get("objective") if results[k].get("objective") is not None else
                     (results[k]["history"][-1]["train_loss"] if results[k].get("history") else None) for k in order]
        img = path_image([configs[k][key] for k in order], [results[k]["val_acc"] for k in order],
                         objective, order.index(best), key)
        try:
            write_png(img, os.path.join(self.folder, "path.png"))
            mon = Monitor(self.folder)
            mon.image("path", img, 0)
            mon.close()
        except (OSError, UserError) as e:
            log.warning(f"path.png not written ({one_line(e)})")

    def finish(self, results, status, weights=None, names=None):
        """The one ending of every driver (Trainer, solvers.train_lbfgs, solvers.train_search) once
        each member has finished: the best member (members.best_index), a sweep's checkpoint.pt (an
        atomic copy of the best member's), the report; -> exit status. results: the members'
        metrics; weights: each member's kept (weight, bias), or None (config-parallel: on other
        ranks); names: all members' names where this process does not hold them all. With no run
        folder nothing is written: self.best holds the kept model."""
        names = names or [m.name for m in self.members]
        k = best_index([r["val_acc"] for r in results])
        self.best = None if k is None else (k, *(weights[k] if weights else (None, None)))
        self.kept = weights
        if self.folder is not None:
            if len(results) > 1 and k is not None:
                copy_atomic(os.path.join(self.folder, names[k], BEST), os.path.join(self.folder, BEST))
            self.report(results, status, names)
        return self.exit_status(status, results)

    def exit_status(self, status, results):
        """0 when a member kept a model, 1 when every member diverged, 128 + signal when interrupted."""
        if status == "interrupted":
            return 128 + (self.stop.signum or 15)
        return 0 if any(r["val_acc"] is not None and r["status"] != "diverged" for r in results) else 1

    def failed(self, error):
        """Training stopped on an error it cannot get past (a checkpoint that could not be
        written): metrics.json says so, and each member's TensorBoard run is flushed, as far as
        the disk allows. The error itself is reported by the caller."""
        for m in self.members:
            try:
                m.monitor.close()
            except Exception:
                pass
        if self.folder is None:
            return
        try:
            write_json(os.path.join(self.folder, "metrics.json"), {
                "status": "failed", "error": one_line(error),
                "configs": [{"name": m.name, "status": m.status, "val_acc": m.best_val, "best_epoch": m.best_epoch,
                             "epochs": len(m.history)} for m in self.members]})
        except (OSError, UserError):
            pass



# --------------------------------------------------------------------------- resume rules

def _resume(args):
    """args: the command line's config -> (config to continue with, its Resolved, Header, TrainState,
    folder). Refuses what cannot be honoured: a changed flag other than RESUMABLE_CHANGES, other
    epochs under a decaying schedule, a run that diverged; a finished run has nothing to do."""
    path = last_path(args.resume)
    header, state = load_resume(path)
    cfg, resolved = TrainConfig.from_saved(header.config)
    for key in args.given:
        if key in ("resume", "epochs") or key in RESUMABLE_CHANGES:
            continue
        if getattr(args, key) != getattr(cfg, key):
            raise UserError(f"{flag(key)} {getattr(args, key)} differs from the run's {getattr(cfg, key)}: --resume "
                            f"keeps a run's settings (it may change only "
                            f"{', '.join(map(flag, RESUMABLE_CHANGES))}); start a new run")
    if "epochs" in args.given and args.epochs != cfg.epochs:
        if cfg.schedule != "constant":
            raise UserError(f"--epochs {args.epochs}: the run's {cfg.schedule} schedule was planned over "
                            f"{cfg.epochs} epochs, and changing that would jump its learning rate; resume "
                            f"without --epochs, or start a new run (a constant schedule can be extended)")
        if args.epochs < state.epoch:
            raise UserError(f"--epochs {args.epochs}: the run has already trained {state.epoch} epochs")
    cfg = cfg.replace(**{k: getattr(args, k) for k in RESUMABLE_CHANGES if k in args.given})
    if all(m.get("status") == "diverged" for m in state.members):
        raise UserError(f"{path}: this run diverged ({state.members[0].get('note')}); resuming would repeat it: "
                        f"start a new run with a lower --lr")
    return cfg, resolved, header, state, os.path.dirname(os.path.abspath(path))


def _claim(args, cfg):
    """-> (folder, lock fd, whether the folder was created for this run)."""
    if args.logdir is not None:
        return (args.logdir, *claim_new(args.logdir))
    return claim_default(cfg.dataset, cfg.loss)      # runs/<timestamp>-<dataset>-<loss>, a sweep's too


# --------------------------------------------------------------------------- main

def train(args):
    """train.py's work for args (the command line's TrainConfig); -> exit status (0 ok, 1 diverged,
    2 bad input, 130/143 interrupted)."""
    setup_logging(args.quiet)
    torch.set_flush_denormal(True)  # denormal probabilities (confident softmax) slow CPU GEMMs ~10x
    dist = process_group.from_env()   # distributed hook: None outside torchrun
    process_group.silence_others(dist)
    try:
        return _claim_and_train(args, dist)
    finally:
        process_group.teardown(dist)


def _claim_and_train(args, dist):
    header = state = None
    created = False
    resolved = Resolved()
    if args.resume:
        cfg, resolved, header, state, folder = _resume(args)
        if state.epoch >= cfg.epochs and state.step == 0:
            log.info(f"{folder} already finished its {cfg.epochs} epochs: nothing to resume (see its metrics.json)")
            return 0
    else:
        cfg = args

    def claim():
        if args.resume:
            return folder, claim_existing(folder), False
        return _claim(args, cfg)
    lock = None
    try:
        if dist is None:
            device = resolve_device(cfg.device)
            folder, lock, created = claim()
        else:    # distributed hook: join the group, then rank 0 alone claims the folder and tells the others
            device = resolve_device(process_group.init(dist, cfg.device, cfg.dist_timeout, cfg.sweep_parallel))
            held = []
            folder = process_group.share(dist, lambda: held.append(claim()) or held[0][0])
            lock, created = (held[0][1], held[0][2]) if held else (None, False)
            if not dist.main:
                cfg = cfg.replace(quiet=True)
    except BaseException:
        if lock is not None:
            release(folder, lock)
        raise
    try:
        threads = None
        if device.type == "cpu":   # a resume keeps the count the run measured: results stay bit-identical
            keep = args.resume and "threads" not in args.given and resolved.threads
            setting = keep or cfg.threads
            if dist is not None and setting == "auto":   # distributed hook: the cores split among this machine's ranks
                setting = process_group.threads_per_process()
            threads = choose_threads(setting)
        resolved = resolved.replace(threads=threads, logdir=folder)
        return _train(cfg, device, folder, resolved, header, state, dist)
    except BaseException:
        if not args.resume and lock is not None:  # failed before training began (bad data, Ctrl-C): no husk left
            abandon(folder, created)
        raise
    finally:
        if lock is not None:        # the last thing done in the folder: a finished one keeps no .lock
            release(folder, lock)


def _train(cfg, device, folder, resolved, header, state, dist=None):
    if dist is not None and cfg.optimizer in (*SEARCHES, "lbfgs", "exact"):
        raise UserError(f"--optimizer {cfg.optimizer} runs in one process, not under torchrun")
    stop = StopFlag()        # the command's signal handling: Ctrl-C and SIGTERM end the run with a checkpoint
    try:
        return execute(cfg, device, folder, header=header, state=state, dist=dist, resolved=resolved, stop=stop)[0]
    finally:
        stop.restore()


def execute(cfg, device, folder, *, data=None, preprocess=None, header=None, state=None, dist=None, resolved=None,
            tensorboard=True, train_loader=None, names=None, stop=None):
    """Build the recipe, make the Run and train it with cfg's optimizer -> (exit status, Run).
    The one core under train.py and LinearProbe.fit. cfg: the TrainConfig; data: an already loaded
    DataSet (else loaded from cfg); preprocess: a fixed one (else a resumed run's, else fitted on the
    training split); resolved: what the command found out already (threads, folder); tensorboard:
    whether the members write TensorBoard events (checkpoints are written either way); train_loader:
    the caller's own batches for SGD (LinearProbe on a DataLoader), else the recipe's; names: the
    members' names (default: config.member_name of each member's values); stop: polled between
    steps, true to end the run (the command's StopFlag; default: never). config.json (the config and
    the Resolved record beside it) is written once, here, when the recipe has resolved them."""
    from ..data import Preprocess
    from .recipe import build
    from .solvers import train_lbfgs, train_search
    from .trainer import Trainer
    started = time.perf_counter()
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
    if header is not None:
        check_compatible(header, folder, recipe.classes, cfg.image_size, recipe.in_features)
    stop = stop or Never()
    steps = len(recipe.train_loader)
    purge = None if state is None else state.epoch * steps + state.step + 1
    run = Run(cfg, device, folder, recipe, stop, None if state is None else state.members, purge, dist,
              tensorboard, names, resolved)
    if header is None and folder is not None and (dist is None or dist.main):
        write_json(os.path.join(folder, "config.json"), cfg.saved(run.resolved))
    run.started = started
    if state is None and folder is not None and (dist is None or dist.main):
        run.show_features()
    # distributed hook: sharded batches, the step's all-reduce, agreed stopping (Local: none of it)
    run.group = distributed.strategy(dist, recipe, stop, 1 if device.type == "cpu" else cfg.log_every)
    data = recipe.data
    threads = run.resolved.threads
    log.info(f"{cfg.dataset}: {len(data.train)} train / {len(data.val)} val"
             f"{'' if data.test is None else f' / {len(data.test)} test'} images, {len(recipe.classes)} classes, "
             f"D = {run.header.in_features}, {len(run.members)} member(s); device {device}"
             f"{'' if threads is None else f' ({threads} thread(s))'}; run folder {folder}")
    try:
        if cfg.optimizer in SEARCHES:
            return train_search(run), run
        if cfg.optimizer == "lbfgs":
            return train_lbfgs(run), run
        if cfg.optimizer == "exact":
            from .solvers import train_exact
            return train_exact(run), run
        return Trainer(run, state).train(), run
    except Exception as e:    # what was trained stays (checkpoints written), metrics.json says why it stopped
        run.failed(e)
        raise


def main(args):
    """train.py's entry: train(args) with errors as one line and exit 2."""
    return run_command(train, args)
