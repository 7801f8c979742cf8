"""The benchmark's sections, in the order they run: epoch (lintorch, plain PyTorch, the GEMM bound,
the data paths, the per-image DataLoader), sweep epoch, losses alone, threads under load,
bookkeeping (the Trainer's per-epoch work taken apart), and with --data-dir: time to accuracy, peak
memory and the whole train.py process's epoch.

Shapes: N training images, D = 3 * S * S features, C classes, B the batch size.
"""
import os
import platform
import statistics
import tempfile
import time

import torch

from ..cli import choose_threads, resolve_device
from ..data import Preprocess
from ..data.loaders import TensorLoader
from .accuracy import time_to_accuracy_lintorch, time_to_accuracy_plain
from .contenders import (alternate, bench_dataset, dataloader_epoch, fastest_gemm_layout, float_gather_only, gemm_epoch, lintorch_epoch,
    loader_only, loss_contenders, per_image_dataset, plain_epoch, sweep_epoch)
from .report import BOOKKEEPING, PROCESS, THREADS, check_targets
from .processes import bookkeeping_contenders, peak_rss, process_epochs, thread_rounds, train_argv


def machine(device):
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    return {"device": str(device), "device_name": name, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def _row(section, name, times, work=None, note=""):
    return {"section": section, "name": name, "seconds": statistics.median(times), "all": times,
            "per_second": None if work is None else work / statistics.median(times), "note": note}


def run_benchmark(args, say=print):
    """-> the results dict (machine, settings, rows, targets); say(text) reports progress."""
    device = resolve_device(args.device)
    if device.type == "cpu":
        choose_threads(args.threads)   # as train.py: auto measures 1 against all cores
    torch.set_flush_denormal(True)   # as train.py
    data = bench_dataset(args.data_dir, args.n, cache_dir=args.cache_dir)
    N, D, C = len(data.train), data.train.x[0].numel(), len(data.classes)
    preprocess = Preprocess.fit(data.train.x)
    res = {"machine": machine(device), "settings": {**vars(args), "N": N, "D": D, "C": C}}
    rows = epoch_section(args, data, preprocess, device, say)
    rows += sweep_section(args, data, preprocess, device, say)
    rows += loss_section(args, C, device, say)
    if device.type == "cpu":
        rows += threads_section(args, data, preprocess, device, say)
    rows += bookkeeping_section(args, data, device, say)
    if args.data_dir and not args.quick:
        rows += time_to_accuracy_section(args, data, device, say)
        rows += memory_section(args, device, say)
        rows += process_section(args, device, say)
    res["rows"] = rows
    res["targets"] = check_targets(rows)
    res["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return res


def epoch_section(args, data, preprocess, device, say):
    B, R, N, C = args.batch_size, args.repeats, len(data.train), len(data.classes)
    X = preprocess(data.train.x.to(device))                          # (N, D) float32, plain loops' copy
    y = data.train.y.to(device)
    sec = f"epoch ({N:,} images, B {B})"
    say(f"{sec}: picking the fastest GEMM layout")
    fwd, bwd = fastest_gemm_layout(X, C, B, device)
    contenders = {
        "lintorch softmax": lintorch_epoch(data, preprocess, "softmax", B, device),
        "plain PyTorch softmax": plain_epoch(X, y, C, "softmax", B, device),
        "lintorch svm": lintorch_epoch(data, preprocess, "svm", B, device),
        "plain PyTorch svm": plain_epoch(X, y, C, "svm", B, device),
        "GEMM bound": gemm_epoch(X, C, B, device, fwd, bwd),
        "lintorch batches only": loader_only(TensorLoader(data.train, preprocess, B, device)),
        "plain float gather only": float_gather_only(X, B, device),
    }
    subset = min(args.subset, N)
    per_image = per_image_dataset(data, args.data_dir, subset)
    source = "ImageFolder" if args.data_dir else "PIL images from uint8"
    say(f"{sec}: {len(contenders)} contenders x {R} rounds")
    times = alternate(contenders, R, budget_s=args.epoch_budget)
    # the per-image pipeline is 10-100x slower: its own alternation, fewer rounds, on a subset
    pipelines = {f"DataLoader workers {w}": dataloader_epoch(per_image, N, C, B, device, w) for w in (0, 2)}
    say(f"{sec}: per-image DataLoader on {subset:,} images x {min(R, 3)} rounds")
    times.update(alternate(pipelines, min(R, 3)))
    ours = "recipe.build (train.py's defaults) + train_one_epoch"
    notes = {
        "lintorch softmax": ours, "lintorch svm": ours,
        "plain PyTorch softmax": "nn.Linear + F.cross_entropy + SGD on preloaded float",
        "plain PyTorch svm": f"nn.Linear + {C}*F.multi_margin_loss + SGD on preloaded float",
        "GEMM bound": f"{fwd}; {bwd}; contiguous float batches",
        "lintorch batches only": "uint8 index_select + Preprocess (no model)",
        "plain float gather only": "randperm + X[idx] on float (no model)",
        "DataLoader workers 0": f"{source} + ToTensor/Normalize; scaled from {subset:,} images",
        "DataLoader workers 2": f"{source} + ToTensor/Normalize; scaled from {subset:,} images",
    }
    return [_row("epoch", name, t, N, f"{notes[name]}; {len(t)} rounds") for name, t in times.items()]


def sweep_section(args, data, preprocess, device, say):
    B, R, N = args.batch_size, args.repeats, len(data.train)
    say(f"sweep: {args.sweep_k} configurations in one pass vs one configuration")
    t = alternate({"one configuration": lintorch_epoch(data, preprocess, "softmax", B, device),
                   f"sweep of {args.sweep_k}": sweep_epoch(data, preprocess, args.sweep_k, B, device)},
                  R, budget_s=args.epoch_budget)
    return [_row("sweep epoch", name, v, N, f"softmax, B {B}; {len(v)} rounds") for name, v in t.items()]


def loss_section(args, C, device, say):
    rows = []
    for b in (256, 4096):
        say(f"losses fwd+bwd at B {b}")
        t = alternate(loss_contenders(b, C, device, args.loss_seconds), args.repeats)
        rows += [_row(f"loss B{b}", name, v, b, "per call" + (", validate=False as train_one_epoch calls it"
                                                              if name.startswith("lintorch") else ""))
                 for name, v in t.items()]
    return rows


def threads_section(args, data, preprocess, device, say):
    """Bug 10: lintorch's epoch idle and beside another 2-thread job, for --threads 1, 2 and auto."""
    R, N = min(args.repeats, 3), len(data.train)
    say(f"{THREADS}: epoch with 1, 2 and auto threads, idle and beside a 2-thread GEMM loop, x {R} rounds")
    times, chose = thread_rounds(lintorch_epoch(data, preprocess, "softmax", args.batch_size, device), R,
                                 choose_threads)
    rows = []
    for (condition, setting), v in times.items():
        name = f"{condition}, --threads {setting}"
        note = f"softmax epoch, {len(v)} rounds" + ("; beside a separate 2-thread torch GEMM loop"
                                                    if condition == "loaded" else "")
        if setting == "auto":
            note += (f"; choose_threads picked {', '.join(str(n) for n, _ in chose[condition])} in "
                     f"{', '.join(f'{t:.2f}' for _, t in chose[condition])} s")
        rows.append(_row(THREADS, name, v, N, note))
    return rows


def bookkeeping_section(args, data, device, say):
    """Bug 13, taken apart: the Trainer's per-epoch work beside its loop epoch, in this process."""
    R = args.repeats
    with tempfile.TemporaryDirectory(prefix="lintorch-bench-") as folder:
        real = args.data_dir and not args.quick     # train.py's default validation split, else the bench's data
        contenders, recipe = bookkeeping_contenders(device, os.path.join(folder, "run"), None if real else data,
                                                    args.cache_dir, args.data_dir)
        say(f"{BOOKKEEPING}: train.py's per-epoch work at its defaults ({len(recipe.data.val):,} val images) "
            f"x {R} rounds")
        times = alternate(contenders, R, budget_s=args.epoch_budget)
    threads = torch.get_num_threads()
    return [_row(BOOKKEEPING, name, v, note=f"{len(v)} rounds, {threads} thread(s)"
                 + ("; written synchronously here (background in train.py)" if "checkpoints" in name else "")
                 + ("; end_epoch + save_last" if name.startswith("all") else ""))
            for name, v in times.items()]


def time_to_accuracy_section(args, data, device, say):
    say(f"time to {args.target_acc:.0%} validation accuracy")
    results = {"lintorch defaults": [], "plain PyTorch SGD": []}
    for _ in range(min(args.repeats, 3)):
        results["lintorch defaults"].append(time_to_accuracy_lintorch(data, device, args.target_acc,
                                                                      limit_s=args.tta_limit))
        results["plain PyTorch SGD"].append(time_to_accuracy_plain(data, device, args.batch_size,
                                                                   target=args.target_acc, limit_s=args.tta_limit))
    rows = []
    for name, runs in results.items():
        reached = all(r["reached"] for r in runs)
        row = _row("time to acc", name, [r["seconds"] for r in runs],
                   note=f"{'reached' if reached else 'NOT REACHED in some runs'}; median "
                        f"{statistics.median(r['steps'] for r in runs):.0f} steps; set-up "
                        f"{statistics.median(r['setup_seconds'] for r in runs):.2f}s included, evals excluded "
                        f"(with them {statistics.median(r['wall_seconds'] for r in runs):.2f}s); "
                        f"{runs[0]['config']}")
        row.update(reached=reached, runs=runs)
        rows.append(row)
    return rows


def memory_section(args, device, say):
    say("peak RSS of train.py --epochs 1")
    with tempfile.TemporaryDirectory(prefix="lintorch-bench-") as folder:
        t0 = time.perf_counter()
        rss, rc = peak_rss(train_argv(args.data_dir, device, os.path.join(folder, "run"), 1, args.cache_dir))
    return [{"section": "memory", "name": "train.py --epochs 1 peak RSS", "bytes": rss,
             "seconds": time.perf_counter() - t0, "per_second": None,
             "note": f"exit {rc}; ru_maxrss of a fresh process (imports + data + 1 epoch + test)"}]


def process_section(args, device, say):
    """Bug 13: what a user waits for per epoch, beside the loop's own epoch time. Two estimates from
    the same train.py processes: (time of --epochs 4 - time of --epochs 1) / 3 per round, and, the
    target's, the wall time between consecutive epochs' validation events in each --epochs 4 run
    (the first swings by seconds with the start-up's import and data-loading time on a loaded
    machine). Each period holds one loop epoch; a run's bookkeeping is the mean of (period - that
    loop epoch) over its 3 periods (1 of them with the pictures, as TensorBoard.picture_every = 3 makes it)."""
    R, threads = args.process_rounds, args.process_threads
    say(f"{PROCESS}: train.py --epochs 1 and --epochs 4, alternating, x {R} rounds (--threads {threads})")
    runs = process_epochs(args.data_dir, device, R, 1, 4, args.cache_dir, threads)
    return process_rows(runs[1], runs[4], threads)


def process_rows(short, long, threads):
    """Rows from train.py runs of 1 and of 4 epochs (processes.timed_train's dicts), paired by round."""
    used = sorted({r["threads"] for r in short + long}, key=str)
    difference = [(b["seconds"] - a["seconds"]) / 3 for a, b in zip(short, long)]
    period = [statistics.mean(r["periods"]) for r in long]
    loop = [statistics.mean(r["loop"][1:]) for r in long]                     # the loops inside the periods
    extra = [statistics.mean(p - e for p, e in zip(r["periods"], r["loop"][1:])) for r in long]
    note = f"{len(long)} rounds; --threads {threads} ran with {', '.join(map(str, used))} thread(s)"
    loop_s = statistics.median(loop)
    return [_row(PROCESS, "train.py --epochs 1", [r["seconds"] for r in short], note=note),
            _row(PROCESS, "train.py --epochs 4", [r["seconds"] for r in long], note=note),
            _row(PROCESS, "(--epochs 4 - 1) / 3", difference, note="whole processes' difference per round: "
                 f"{(statistics.median(difference) - loop_s) / loop_s:.0%} over the loop epoch"),
            _row(PROCESS, "process epoch", period, note="from one epoch's validation to the next's (TensorBoard "
                 "event times), mean per --epochs 4 run"),
            _row(PROCESS, "loop epoch", loop, note="train_one_epoch's seconds (metrics.json) in those periods"),
            _row(PROCESS, "bookkeeping per epoch", extra, note=f"process epoch - its loop epoch, mean per run: "
                 f"{statistics.median(extra) / loop_s:.0%} of the loop epoch")]
