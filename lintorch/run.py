"""What `python train.py` does: read the flags, fill in the measured defaults, pick the device,
resume if asked, train, and turn every user error into one line and an exit status.
"""
import logging
import os
import signal
import sys
import time

import torch
from tqdm import tqdm

from .checkpoint import CheckpointError, load_checkpoint, resolve
from .data import DataError
from .trainer import Run, train_search, train_sgd

log = logging.getLogger("lintorch")

DEFAULTS = {
    "softmax": {"lr": 0.03, "reg": 0.0003, "batch_size": 256},
    "svm": {"lr": 0.003, "reg": 0.001, "batch_size": 256},
    "gd": {"lr_scale": 10.0, "epochs": 100},
    "sgd": {"epochs": 10},
}


class UserError(Exception):
    """A request that cannot be carried out (e.g. CUDA asked for but absent): one line, exit 2."""


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, saves, and exits 128 + signal."""

    def __init__(self):
        self.signum = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = signum

    def __call__(self):
        return self.signum is not None

    def restore(self):
        for s, h in self._old.items():
            signal.signal(s, h)


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} asked for CUDA, but torch.cuda.is_available() is False here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise UserError(f"--device {name}: lintorch runs on cpu or cuda")
    return device


def fill_defaults(args):
    """Replace None hyperparameters with the measured defaults for the loss and optimizer."""
    d = DEFAULTS[args.loss]
    full_batch = args.optimizer == "gd"
    if args.lr is None:
        args.lr = d["lr"] * (DEFAULTS["gd"]["lr_scale"] if full_batch else 1.0)
    if args.reg is None:
        args.reg = d["reg"]
    if args.epochs is None:
        args.epochs = DEFAULTS["gd"]["epochs"] if full_batch else DEFAULTS["sgd"]["epochs"]
    if args.batch_size is None:
        args.batch_size = d["batch_size"]
    if full_batch:
        args.momentum = 0.0  # the lecture's vanilla loop
    return args


def _setup_logging(quiet):
    class TqdmHandler(logging.Handler):
        def emit(self, record):
            tqdm.write(self.format(record), file=sys.stdout)
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("lintorch")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _new_run_folder(args):
    """runs/<timestamp>-<dataset>-<loss>, with -2, -3, ... when two runs start in the same second."""
    kind = "sweep" if args.sweep else args.loss
    base = os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{args.dataset}-{kind}")
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


def _resume_args(args):
    """Continue the run whose last.pt is given: its own config, this command's epochs and device."""
    path = resolve(args.resume)
    ckpt = load_checkpoint(path)
    if ckpt.get("optimizer") is None or "step" not in ckpt:
        raise CheckpointError(f"{path}: not a resumable training checkpoint (use a run's last.pt)")
    saved = dict(ckpt["config"])
    for k in ("epochs", "quiet", "debug", "log_every"):
        if getattr(args, k, None) is not None:
            saved[k] = getattr(args, k)
    if args.device != "auto":
        saved["device"] = args.device
    saved.update(resume=path, logdir=os.path.dirname(os.path.abspath(path)), sweep=None)
    return type(args)(**saved), ckpt


def main(args):
    """Run train.py's work; -> exit status (0 ok, 1 diverged, 2 bad input, 130/143 interrupted)."""
    _setup_logging(args.quiet)
    torch.set_flush_denormal(True)  # denormal probabilities (confident softmax) slow CPU GEMMs ~10x
    stop = None
    try:
        resume_ckpt = None
        if args.resume:
            args, resume_ckpt = _resume_args(args)
        fill_defaults(args)
        if args.logdir is None:
            args.logdir = _new_run_folder(args)
        elif not args.resume and any(os.path.exists(os.path.join(args.logdir, f))
                                     for f in ("checkpoint.pt", "last.pt", "metrics.json")):
            raise UserError(f"{args.logdir} already holds a run: continue it with --resume {args.logdir}, "
                            f"or give another --logdir (nothing was overwritten)")
        run = Run(args, resolve_device(args.device), resume_ckpt)
        run.write_json("config.json", vars(args))
        log.info(f"{args.dataset}: {len(run.data.train)} train / {len(run.data.val)} val"
                 f"{'' if run.data.test is None else f' / {len(run.data.test)} test'} images, "
                 f"{len(run.classes)} classes, D = {run.D}; device {run.device}; run folder {run.logdir}")
        stop = StopFlag()
        if args.optimizer in ("random-search", "random-local-search"):
            return train_search(run, stop)
        return train_sgd(run, resume_ckpt, stop)
    except (DataError, CheckpointError, UserError, OSError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        if stop is not None:
            stop.restore()
