"""Is lintorch healthy on this GPU? One command, one process tree, a few minutes on one GPU:

    python -m lintorch.doctor [--device cuda|cpu] [--data-dir DIR] [--out report.json] [--quick]

runs, on the device: the gradient check (lintorch.gradcheck), the test suite's variants for the
device (pytest -k cuda / -k cpu, a subprocess), a short training run of each loss (the recipe
train.py builds, on the JPEG folder given or on synthetic data) timed per epoch with CUDA's
sync-debug mode warning about every host synchronization, a small benchmark (an epoch against
plain PyTorch, time to 40% validation accuracy with real data), and a determinism check (two
identical runs: equal or not, max abs difference). Prints a short table; --out writes one JSON
report: machine (card, driver, torch, CUDA), every figure, and each section's status. The
benchmark fails when lintorch's epoch takes more than --max-slowdown times plain PyTorch's.

With no --device, it checks the GPU when torch sees one, else says that no GPU was found and runs
the same checks on the CPU; --device cuda without CUDA is one line and exit 2. --quick shrinks
every section (tiny data, no pytest, no time to accuracy) so the command itself is tested in CI:
its validation accuracies are then barely above chance, as expected on 8 px images after two
epochs (the training check is that the loss went down). Exit 0 when every check that ran passed, else 1.

Shapes: N images, D = 3 * S * S features, C classes (as in train.py).
"""
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import warnings

from .cli import ArgumentParser, cache_folder, nonempty, number, output_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_args_parser():
    p = ArgumentParser(prog="python -m lintorch.doctor", description="Check lintorch on this machine's GPU (or "
                       "CPU): gradients, the device's tests, training of each loss, a small benchmark, determinism; "
                       "print a table and write one JSON report.")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="the device to check: "
                   "auto is the GPU when torch sees one, else the CPU (said so)")
    p.add_argument("--data-dir", type=nonempty, default=None,
                   help="an image folder (train/<class>/*.jpg, e.g. the CIFAR-10 JPEGs); default: synthetic data")
    p.add_argument("--cache-dir", type=cache_folder, default=None, help="decoded-image cache for --data-dir")
    p.add_argument("--out", type=output_file, default=None, help="write the JSON report to this file (default: "
                   "none is written; the table is printed)")
    p.add_argument("--max-slowdown", type=number(float, 1.0), default=2.0, help="the benchmark fails when "
                   "lintorch's epoch takes more than this many times plain PyTorch's on the same data")
    p.add_argument("--epochs", type=number(int, 1, high=100), default=2, help="epochs of each loss's training run")
    p.add_argument("--pytest-timeout", type=number(int, 10), default=300, help="seconds for the pytest section")
    p.add_argument("--quick", action="store_true", help="tiny settings (CI): small synthetic data, no pytest, "
                   "no time to accuracy")
    return p


# --------------------------------------------------------------------------- sections

def machine(device):
    import torch
    info = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "card": None, "driver": None, "capability": None, "memory_bytes": None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(card=props.name, capability=f"{props.major}.{props.minor}", memory_bytes=props.total_memory,
                    cudnn=torch.backends.cudnn.version())
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, IndexError):
            pass
    else:
        info["card"] = platform.processor() or platform.machine()
    return info


def gradient_check(device):
    from .verify.gradients import run_checks
    rows = run_checks(device=device.type)
    worst = max((r.max_rel for r in rows if r.max_rel == r.max_rel), default=0.0)
    failed = [f"{r.function} {r.method} {r.where}" for r in rows if not r.passed]
    return {"passed": not failed, "checks": len(rows), "failed": failed, "worst_rel_error": worst}


def device_tests(device, timeout):
    """The suite's tests parametrized with this device, in a pytest subprocess."""
    tests = os.path.join(REPO, "tests")
    if not os.path.isdir(tests):
        return {"skipped": f"no tests/ folder beside the package ({tests})"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-k", device.type, tests]
    try:
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"passed": False, "command": " ".join(cmd[2:]), "error": f"timed out after {timeout}s"}
    counts = {f"n_{k.rstrip('s')}": int(n)
              for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", out.stdout)}
    bad = counts.get("n_failed", 0) + counts.get("n_error", 0)
    return {"passed": out.returncode in (0, 5) and not bad, "command": " ".join(cmd[2:]), "exit": out.returncode,
            **counts, "tail": out.stdout.strip().splitlines()[-3:]}


def load_data(args):
    from .data import load_dataset
    if args.data_dir:
        return load_dataset("imagefolder", args.data_dir, 32, 5000, 0, args.cache_dir), "imagefolder"
    data = load_dataset("synthetic", None, 8 if args.quick else 32, None, 0)
    if args.quick:      # CI: a few hundred images are enough to run every section
        from .data import Split
        data.train, data.val = Split(data.train.x[:640], data.train.y[:640]), Split(data.val.x[:200], data.val.y[:200])
    return data, "synthetic"


def doctor_config(data_name, loss, epochs, image_size):
    from .config import TrainConfig
    cfg = TrainConfig(dataset=data_name, loss=loss, epochs=epochs, image_size=image_size, quiet=True).filled()
    cfg.check()
    return cfg


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _NoStop:
    signum = None

    def __call__(self):
        return False


def timed_epochs(cfg, device, data, sync_debug=False):
    """train.py's recipe and its Trainer's epochs, as a run in memory (no run folder, nothing
    written): -> (per-epoch records, model)."""
    import torch
    from .training.epoch import evaluate
    from .training.recipe import build
    from .training.run import Run
    from .training.trainer import Trainer
    r = build(cfg, device, data=data)
    trainer = Trainer(Run(cfg, device, r, _NoStop()))
    steps = len(r.train_loader)
    epochs, syncs = [], 0
    for epoch in range(cfg.epochs):
        _sync(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if sync_debug and device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            t0 = time.perf_counter()
            try:
                stats, _ = trainer.one_epoch(epoch)
                _sync(device)
            finally:
                if sync_debug and device.type == "cuda":
                    torch.cuda.set_sync_debug_mode(0)
            seconds = time.perf_counter() - t0
        syncs += sum("synchroniz" in str(w.message) for w in caught)
        data_loss, reg_loss, train_acc = stats.means()
        epochs.append({"epoch": epoch + 1, "seconds": seconds, "images_per_second": stats.seen / seconds,
                       "loss": float(data_loss[0] + reg_loss[0]), "train_acc": float(train_acc[0]),
                       "val_acc": float(evaluate(r.model, r.val_loader)["acc"][0])})
    return {"epochs": epochs, "steps_per_epoch": steps, "host_syncs": syncs,
            "expected_syncs": expected_syncs(cfg, steps) if device.type == "cuda" else None}, r.model


def expected_syncs(cfg, steps):
    """The host syncs a healthy CUDA run's epochs make: the divergence check every --log-every steps
    (epoch.train_one_epoch) and one read of the logged scalars at each log (Trainer.on_log); none in
    between. Proven under the tests' emulated CUDA (tests/test_doctor.py)."""
    checks = steps // cfg.log_every
    return cfg.epochs * 2 * checks


def training(args, device, data, data_name):
    from .objective import LOSSES
    size = data.train.x.shape[-1]
    out = {}
    for loss in LOSSES:                         # every registered loss learns, with no host sync
        rec, _ = timed_epochs(doctor_config(data_name, loss, args.epochs, size), device, data, sync_debug=True)
        e = rec["epochs"]     # learning: finite losses that went down
        rec["passed"] = all(math.isfinite(x["loss"]) for x in e) and e[-1]["loss"] <= e[0]["loss"]
        out[loss] = rec
    return {**out, "passed": all(rec["passed"] for rec in out.values())}


def determinism(args, device, data, data_name):
    import torch
    cfg = doctor_config(data_name, "softmax", 1, data.train.x.shape[-1])
    (_, a), (_, b) = timed_epochs(cfg, device, data), timed_epochs(cfg, device, data)
    diff = float((a.weight - b.weight).detach().abs().max())
    return {"equal": bool(torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)), "max_abs_diff": diff,
            "passed": True, "note": "informational: CPU runs are bit-identical for a given thread count; CUDA "
                                    "GEMMs may pick different kernels between runs"}


def benchmark(args, device, data):
    import statistics
    from .bench import contenders as c
    from .data import Preprocess
    B = 256
    pre = Preprocess.fit(data.train.x)
    X, y = pre(data.train.x.to(device)), data.train.y.to(device)
    rounds = 1 if args.quick else 3
    times = c.alternate({"lintorch softmax": c.lintorch_epoch(data, pre, "softmax", B, device),
                         "plain PyTorch softmax": c.plain_epoch(X, y, len(data.classes), "softmax", B, device)}, rounds)
    lin, plain = (statistics.median(times[k]) for k in ("lintorch softmax", "plain PyTorch softmax"))
    out = {"epoch_seconds_lintorch": lin, "epoch_seconds_plain": plain, "epoch_vs_plain": lin / plain,
           "rounds": rounds, "images": len(data.train), "batch_size": B}
    if args.quick or not args.data_dir:
        out["time_to_40"] = {"skipped": "needs --data-dir (real images) and no --quick"}
    else:
        out["time_to_40"] = {"lintorch": c.time_to_accuracy_lintorch(data, device, 0.40),
                             "plain PyTorch": c.time_to_accuracy_plain(data, device, B, target=0.40)}
    out["max_slowdown"] = args.max_slowdown
    out["passed"] = lin / plain <= args.max_slowdown
    return out


SECTIONS = ("gradcheck", "tests", "training", "benchmark", "determinism")


def run_doctor(args, device, say):
    import torch
    report = {"machine": machine(device), "settings": {k: v for k, v in vars(args).items()}, "sections": {}}
    t_all = time.perf_counter()
    data = name = None

    def section(key, fn):
        say(f"{key} ...")
        t0 = time.perf_counter()
        try:
            res = fn()
        except Exception as e:                      # one broken section still leaves a report
            res = {"passed": False, "error": f"{type(e).__name__}: {e}"}
        res["seconds"] = time.perf_counter() - t0
        report["sections"][key] = res
    section("gradcheck", lambda: gradient_check(device))
    if args.quick:
        report["sections"]["tests"] = {"skipped": "--quick", "seconds": 0.0}
    else:
        section("tests", lambda: device_tests(device, args.pytest_timeout))
    try:
        data, name = load_data(args)
        report["data"] = {"name": name, "train": len(data.train), "val": len(data.val),
                          "classes": len(data.classes), "image_size": int(data.train.x.shape[-1])}
    except Exception as e:
        report["data"] = {"error": f"{type(e).__name__}: {e}"}
    for key, fn in (("training", lambda: training(args, device, data, name)),
                    ("benchmark", lambda: benchmark(args, device, data)),
                    ("determinism", lambda: determinism(args, device, data, name))):
        if data is None:
            report["sections"][key] = {"passed": False, "error": "no data", "seconds": 0.0}
        else:
            section(key, fn)
    if device.type == "cuda":
        report["machine"]["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    report["seconds"] = time.perf_counter() - t_all
    report["passed"] = all(s.get("passed", True) for s in report["sections"].values())
    return report


def _status(s):
    """-> (result word, why): the word fits the table's column; the reason goes with the figures."""
    if "skipped" in s:
        return "skipped", str(s["skipped"])
    if "error" in s:
        return "FAIL", str(s["error"])[:200]
    return ("pass" if s.get("passed", True) else "FAIL"), ""


def format_table(report):
    m, s = report["machine"], report["sections"]
    lines = [f"{m['card']} ({m['device']}), driver {m['driver'] or '-'}, torch {m['torch']}, CUDA {m['cuda'] or '-'}",
             f"{'section':<12} {'result':<8} {'seconds':>8}  figures"]

    def row(key, figures=""):
        sec = s[key]
        word, why = _status(sec)
        lines.append(f"{key:<12} {word:<8} {sec.get('seconds', 0):>8.1f}  {'; '.join(x for x in (why, figures) if x)}"
                     .rstrip())
    g = s["gradcheck"]
    row("gradcheck", f"{g.get('checks', 0)} checks, worst rel error {g.get('worst_rel_error', float('nan')):.1e}")
    t = s["tests"]
    row("tests", "" if "skipped" in t else f"{t.get('n_passed', 0)} passed, {t.get('n_failed', 0)} failed, "
        f"{t.get('n_skipped', 0)} skipped")
    tr = s["training"]
    figs = []
    for loss in tr:                             # the losses' records beside the section's own keys
        if isinstance(tr[loss], dict) and "epochs" in tr[loss]:
            e = tr[loss]["epochs"]
            figs.append(f"{loss} {sum(x['seconds'] for x in e) / len(e):.2f}s/epoch val {e[-1]['val_acc']:.1%} "
                        f"syncs {tr[loss]['host_syncs']}")
    data = report.get("data", {})
    if figs and data.get("classes"):
        figs.append(f"chance {1 / data['classes']:.1%}")
    row("training", "; ".join(figs))
    if report.get("settings", {}).get("quick") and figs:
        lines.append(f"{'':<12} {'':<8} {'':>8}  (--quick: {data.get('train')} training images of "
                     f"{data.get('image_size')} px, {report['settings'].get('epochs')} epochs: val acc near chance is "
                     f"expected; the check is that each loss went down)")
    b = s["benchmark"]
    row("benchmark", "" if "epoch_vs_plain" not in b else
        f"epoch {b['epoch_seconds_lintorch']:.3f}s vs plain {b['epoch_seconds_plain']:.3f}s "
        f"({b['epoch_vs_plain']:.2f}x, limit {b.get('max_slowdown', float('nan')):.2f}x)")
    d = s["determinism"]
    row("determinism", "" if "equal" not in d else f"{'equal' if d['equal'] else 'differ'}, max abs diff "
        f"{d['max_abs_diff']:.1e}")
    lines.append(f"{'all checks pass' if report['passed'] else 'SOME CHECKS FAILED'} in {report['seconds']:.0f}s")
    return "\n".join(lines)


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    import torch                                  # after parsing: usage errors answer at once
    def say(text):
        print(text, file=sys.stderr, flush=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda asked for CUDA, but torch.cuda.is_available() is False here (use --device cpu)",
              file=sys.stderr)
        return 2
    if args.device == "auto" and not torch.cuda.is_available():
        say(f"no CUDA GPU found (torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}: "
            f"torch.cuda.is_available() is False): checking the CPU instead (gradients, the CPU tests, training of "
            f"each loss, the benchmark, determinism)")
    from .cli import resolve_device
    device = resolve_device(args.device)
    report = run_doctor(args, device, say)
    print(format_table(report))
    if args.out is None:
        print("report: not written (--out FILE writes the JSON)")
    else:
        from .output.atomic import write_atomic
        try:
            write_atomic(args.out, lambda f: json.dump(report, f, indent=2, default=str), mode="w")
        except OSError as e:         # checked at start; the folder went away or filled since
            from .cli import one_line
            print(f"error: --out {args.out}: {one_line(e)}", file=sys.stderr)
            return 2
        print(f"report: {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
