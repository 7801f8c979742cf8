"""What a user waits for, beyond the loop: whole train.py processes (their per-epoch cost and peak
memory), the per-epoch bookkeeping of train.py's Trainer taken apart, and an epoch beside a
competing CPU job.

Shapes: N training images, D = 3 * S * S features, C classes; weights (K, C, D) with K = 1.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from ..training.epoch import evaluate
from ..training.recipe import build
from ..training.report import Checkpoints, Reporters, TensorBoard
from ..training.run import Run
from ..training.trainer import Trainer
from .contenders import _sync, timed, bench_config

TRAIN = "import sys; from lintorch.train import main; sys.exit(main())"   # train.py's run, from any folder


# --------------------------------------------------------------------------- whole processes

def train_argv(data_dir, device, logdir, epochs=1, cache_dir=None, threads=None, quiet=True):
    """train.py on the image folder at its defaults (python -c runs what train.py runs)."""
    cmd = [sys.executable, "-c", TRAIN, "--dataset", "imagefolder", "--data-dir", data_dir, "--epochs", str(epochs),
           "--device", str(device), "--logdir", logdir]
    cmd += ["--cache-dir", cache_dir] if cache_dir else []
    cmd += ["--threads", str(threads)] if threads is not None else []
    return cmd + (["--quiet"] if quiet else [])


def peak_rss(command, timeout=600):
    """Peak resident memory in bytes of `command` (a list) run to completion in a fresh process,
    read from getrusage(RUSAGE_CHILDREN) in a wrapper whose only child it is. -> (bytes, exit code)."""
    wrapper = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, timeout=timeout)
    kb = int(out.stdout.strip().splitlines()[-1])
    return kb * (1 if sys.platform == "darwin" else 1024), out.returncode


def timed_train(data_dir, device, epochs, cache_dir=None, threads=None, timeout=900):
    """One train.py process, progress bars on, output discarded. -> dict(seconds: its wall time,
    loop: [each epoch's loop seconds, from its metrics.json], periods: [wall seconds from one epoch's
    validation to the next's, from its TensorBoard events: a whole epoch, loop and bookkeeping, free of
    the start-up's noise], threads: the count it ran with)."""
    with tempfile.TemporaryDirectory(prefix="lintorch-bench-") as root:
        folder = os.path.join(root, "run")
        cmd = train_argv(data_dir, device, folder, epochs, cache_dir, threads, quiet=False)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout)
        seconds = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"train.py --epochs {epochs} exited {out.returncode}: {out.stderr.strip()[-500:]}")
        with open(os.path.join(folder, "metrics.json")) as f:
            history = json.load(f)["history"]
        with open(os.path.join(folder, "config.json")) as f:
            used = json.load(f)["resolved"]["threads"]     # what the run measured (config.Resolved)
        ends = epoch_ends(folder)
    return {"seconds": seconds, "loop": [h["seconds"] for h in history], "threads": used,
            "periods": [b - a for a, b in zip(ends, ends[1:])]}


def epoch_ends(folder):
    """Wall times at which a run's epochs logged their validation accuracy (the 'acc/val' events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(folder, size_guidance={"scalars": 0})
    events.Reload()
    return sorted(e.wall_time for e in events.Scalars("acc/val"))


def process_epochs(data_dir, device, rounds, short=1, long=4, cache_dir=None, threads=None):
    """The whole process's cost per epoch: train.py --epochs `long` and --epochs `short`, alternating,
    `rounds` times (after one untimed process that warms the page cache). -> {short: [runs], long:
    [runs]}; per round, (long's seconds - short's) / (long - short) is one epoch as a user waits for it."""
    timed_train(data_dir, device, short, cache_dir, threads)
    runs = {short: [], long: []}
    for _ in range(rounds):
        for epochs in (short, long):
            runs[epochs].append(timed_train(data_dir, device, epochs, cache_dir, threads))
    return runs


# --------------------------------------------------------------------------- bookkeeping, taken apart

class _NoStop:
    signum = None

    def __call__(self):
        return False


def bookkeeping_contenders(device, folder, data=None, cache_dir=None, data_dir=None):
    """{name: () -> seconds} for train.py's epoch and each part of the Trainer's per-epoch bookkeeping
    (Trainer.end_epoch, checkpoints): a Run at train.py's defaults in `folder`, built by recipe.build
    (on `data`, else the image folder with --val-size's default). "checkpoints" times the writes to
    the end (fsync included); in the "all" rows they run in the Saver's background thread as in
    train.py, and only the foreground counts. The pictures (histograms, templates) are what
    TensorBoard.picture_every spaces out."""
    flags = ["--quiet"] + (["--data-dir", data_dir] if data_dir else [])
    cfg = bench_config(*flags, cache_dir=cache_dir, logdir=folder)
    recipe = build(cfg, device, data=data)
    saving, board = Checkpoints(folder), TensorBoard(folder)
    report = Reporters(saving, board)
    run = Run(cfg, device, recipe, _NoStop(), report)
    report.on_start(run)
    trainer = Trainer(run)
    stats = trainer.one_epoch(0)[0]
    W, dW = recipe.model.weight.detach()[0], stats.extra["grad"][0]
    state = {"epoch": 1}

    def loop():
        state["stats"] = trainer.one_epoch(state["epoch"] % cfg.epochs)[0]

    def bookkeeping(pictures):
        def go():      # what Trainer.train does after each epoch's loop; the writes overlap the next epoch
            board.picture_every = 1 if pictures else 10 ** 9
            try:       # epoch index 1 (the 2nd of 10) is neither the first nor the last: picture_every decides
                _sync(device)
                t0 = time.perf_counter()
                trainer.end_epoch(1, state.get("stats", stats))
                report.on_progress(trainer, 2, 0, None)
                _sync(device)
                return time.perf_counter() - t0
            finally:
                board.picture_every = TensorBoard.picture_every
                report.flush()
        return go

    def checkpoints():
        saving.on_progress(trainer, 1, 0, None)
        saving.on_best(run, 0, W, recipe.model.bias.detach()[0], 1)
        saving.flush()

    parts = {
        "loop epoch": loop,
        f"validation ({len(recipe.data.val):,} images)": lambda: evaluate(recipe.model, recipe.val_loader,
                                                                          recipe.objective),
        "histograms W and dW": lambda: board.monitors[0].epoch(1, W, dW),
        "templates picture": lambda: board.monitors[0].epoch(1, templates=board.templates(run, W)),
        "checkpoints (last + best)": checkpoints,
    }
    contenders = {name: timed(device, fn) for name, fn in parts.items()}
    contenders.update({"all, with pictures": bookkeeping(True), "all, without pictures": bookkeeping(False)})
    return contenders, recipe


# --------------------------------------------------------------------------- a competing CPU job

LOAD = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); a = torch.randn(1024, 1024); "
        "print('ready', flush=True)\nwhile True: a @ a")


class CompetingLoad:
    """A separate python process running a torch GEMM loop on `threads` threads while the `with`
    block runs: another user's job on the same cores. Ended (this process only) on exit."""

    def __init__(self, threads=2):
        self.threads, self.proc = threads, None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", LOAD, str(self.threads)], stdout=subprocess.PIPE,
                                     text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.__exit__()
            raise RuntimeError("the competing load did not start")
        time.sleep(0.2)                     # its GEMMs are running
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.proc.stdout.close()
        self.proc = None


def thread_rounds(epoch, rounds, choose_threads, load_threads=2, settings=(1, 2, "auto")):
    """epoch: a contender (one training epoch). Per round: each setting idle, then each beside a
    CompetingLoad of `load_threads` threads; 'auto' asks choose_threads('auto') under the same
    condition first, as train.py does at start. -> ({(condition, setting): [seconds]},
    {condition: [(threads auto chose, seconds it took to choose)]}). torch's thread count is restored afterwards."""
    before = torch.get_num_threads()
    times = {(c, s): [] for c in ("idle", "loaded") for s in settings}
    chose = {"idle": [], "loaded": []}

    def measure(condition):
        for s in settings:
            t0 = time.perf_counter()
            n = choose_threads(s)
            if s == "auto":
                chose[condition].append((n, time.perf_counter() - t0))
            times[condition, s].append(epoch())
    try:
        epoch()                                                   # warm-up
        for _ in range(rounds):
            measure("idle")
            with CompetingLoad(load_threads):
                measure("loaded")
    finally:
        torch.set_num_threads(before)
    return times, chose
