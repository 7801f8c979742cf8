"""The train command: `python train.py`, `lintorch train` and `python -m lintorch.train` all land
here. Its flags are lintorch.config's (TrainConfig); the work is training.fit's, with the reporting
this command installs (training.report.run_folder: TensorBoard, checkpoints, pictures,
metrics.json) and its signal handling (StopFlag). This module claims the run folder, applies the
resume rules and chooses the threads. Every user error becomes one line and exit 2 (cli.exit_status).

Arguments are parsed before torch is imported (usage errors and --help answer at once); the
imports training needs then happen with Ctrl-C held back, since an interrupt that lands inside
torch's or numpy's C-level imports is swallowed or half-raised by them (exit 0, or an
AttributeError): it is only noted there and acted on once the imports are done (exit 130).
"""
import logging
import os
import signal
import sys
import threading

# lintorch's own modules are imported inside the functions: a Ctrl-C while they load lands in main's guard
log = logging.getLogger("lintorch")


def _import_quietly():
    """Import what training needs (and what it imports later) while SIGINT is only recorded."""
    pending = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        import torch  # noqa: F401
        from .output import monitor  # noqa: F401
        from .training import fit, recipe, report, trainer  # noqa: F401  (imported by train_command later)
        import torch.utils.tensorboard  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, old)
    if pending:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


def main(argv=None):
    """The command line; -> exit status (0 ok, 1 diverged, 2 bad input, 130/143 interrupted)."""
    try:
        from .config import parse_args
        args = parse_args(argv)              # no torch yet: usage errors answer at once
        _import_quietly()
        return train_command(args)
    except KeyboardInterrupt:                # Ctrl-C before the imports began
        print("error: interrupted", file=sys.stderr)
        return 130


def train_command(args):
    """The train command on parsed arguments (the command line's TrainConfig) -> exit status, every
    user error as one line and exit 2."""
    from .cli import exit_status
    return exit_status(_train, args)


def _train(args):
    import torch
    from .cli import setup_logging
    from .training import process_group
    setup_logging(args.quiet)
    torch.set_flush_denormal(True)  # denormal probabilities (confident softmax) slow CPU GEMMs ~10x
    dist = process_group.from_env()   # distributed hook: None outside torchrun
    process_group.silence_others(dist)
    try:
        return _claim_and_fit(args, dist)
    finally:
        process_group.teardown(dist)


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



# --------------------------------------------------------------------------- resume rules and the folder

def _resume(args):
    """args: the command line's config -> (config to continue with, its Resolved, Header, TrainState,
    folder). Refuses what cannot be honoured: a changed flag other than RESUMABLE_CHANGES, other
    epochs under a decaying schedule, a run that diverged; a finished run has nothing to do."""
    from .config import TrainConfig, flag
    from .errors import UserError
    from .names import RESUMABLE_CHANGES
    from .output.checkpoint import last_path, load_resume
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
    from .output.rundir import claim_default, claim_new
    if args.logdir is not None:
        return (args.logdir, *claim_new(args.logdir))
    return claim_default(cfg.dataset, cfg.loss)      # runs/<timestamp>-<dataset>-<loss>, a sweep's too


def _claim_and_fit(args, dist):
    """Resume or claim the run folder, choose the threads, fit into the folder -> exit status."""
    from .cli import choose_threads, resolve_device
    from .config import Resolved
    from .output.rundir import abandon, claim_existing, release
    from .training import process_group
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
        return _fit_in_folder(cfg, device, folder, resolved, None if state is None else (header, state), dist)
    except BaseException:
        if not args.resume and lock is not None:  # failed before training began (bad data, Ctrl-C): no husk left
            abandon(folder, created)
        raise
    finally:
        if lock is not None:        # the last thing done in the folder: a finished one keeps no .lock
            release(folder, lock)


def _fit_in_folder(cfg, device, folder, resolved, resume, dist=None):
    """fit with the command's reporting into folder and its signal handling -> exit status."""
    from .errors import UserError
    from .names import SEARCHES
    from .training.fit import fit
    from .training.report import run_folder
    if dist is not None and cfg.optimizer in (*SEARCHES, "lbfgs", "exact"):
        raise UserError(f"--optimizer {cfg.optimizer} runs in one process, not under torchrun")
    stop = StopFlag()        # Ctrl-C and SIGTERM end the run with a checkpoint
    try:
        return fit(cfg, device=device, report=run_folder(folder, dist), resume=resume, stop=stop, dist=dist,
                   resolved=resolved).exit_status
    finally:
        stop.restore()


if __name__ == "__main__":
    sys.exit(main())
