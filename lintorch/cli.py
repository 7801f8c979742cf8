"""The command-line layer every lintorch command shares: the argument parser and its number
types, the device (and TF32) and thread choice, logging, and the one wrapper that
turns a user's error into one line and exit 2.

Importing this module imports no torch: commands parse their arguments first, so a usage error
answers at once; torch comes in when the command runs.
"""
import argparse
import logging
import math
import os
import re
import sys
import time

from .errors import LintorchError, UserError
from .features.settings import by_flag
from .names import SWEEPABLE

FLOAT32_MAX = 3.4028234663852886e38
PROG = None   # the command's name as typed, when the `lintorch` console script runs it ("lintorch train")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, except None (such flags say in their help what they default to)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """A usage error is one line naming the problem and pointing at --help (not the usage block)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        if PROG is not None:
            kwargs["prog"] = PROG
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(kind, low=None, low_open=False, high=None):
    """An argparse type: a finite int/float within bounds, else a usage error naming the value.
    Floats are also bounded by float32's range (weights and data are float32)."""
    if kind is float and high is None:
        high = FLOAT32_MAX

    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n' if kind is int else ''} "
                                             f"{kind.__name__}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite")
        if low is not None and (v <= low if low_open else v < low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if low_open else '>='} {low}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high:g}")
        return v
    parse.__name__ = kind.__name__
    return parse


def nonempty(text):
    """An argparse type for paths: the empty string is a usage error, not the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return text


def output_file(text):
    """An argparse type for a file a command writes at its end: checked before any work (a report
    lost after a long run to a missing folder is worse than a usage error now)."""
    path = nonempty(text)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"{path}: cannot write in {folder}")
    return path


def cache_folder(text):
    """An argparse type for --cache-dir: a folder, or a path where one can be made; a file there is
    a usage error now (each cache write would otherwise warn on its own)."""
    path = nonempty(text)
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    return path


def threads_arg(text):
    """--threads: 'auto' or a positive int."""
    return text if text == "auto" else number(int, 1, high=1024)(text)


def add_common(parser, device_default="auto"):
    """The flags every command has: --device, --threads, --debug."""
    parser.add_argument("--device", default=device_default, help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=threads_arg, default="auto",
                        help="CPU threads: N, or auto (measured at start: 1 when the cores are busy)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")


# --------------------------------------------------------------------------- extractor flags

def extractor_argument(name):
    """An extractor flag's argparse keywords (type with its bounds, choices, metavar, help), from
    its one declaration (features.settings); its default is None: the extractor's own."""
    owner, s = by_flag()[name]
    kind = None if s.choices else nonempty if s.kind is str else number(s.kind, s.low, s.low_open, s.high)
    return {"type": kind, "choices": s.choices, "metavar": s.metavar, "help": s.help_text(owner.rstrip(":"))}


def unused_extractor_flags(args, features):
    """The extractor flags args sets that no part of `features` ("pixels", "hog,kmeans", ...; "" for
    none) would read -> a usage error's text ("--centroids configures --features kmeans"), or None:
    a flag silently ignored reads as if it had worked."""
    parts = [p.strip() for p in features.split(",")]
    owner = {k: part for k, (part, _) in by_flag().items()}
    unused = [k for k in owner if getattr(args, k, None) is not None and not any(p.startswith(owner[k]) for p in parts)]
    if not unused:
        return None
    owners = sorted({owner[k].replace(":", ":<model>") for k in unused})
    return (f"{', '.join('--' + k.replace('_', '-') for k in unused)} configure{'s' if len(unused) == 1 else ''} "
            f"--features {' or '.join(owners)}")


# --------------------------------------------------------------------------- device and threads

def resolve_device(name):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device (TF32 on for CUDA): devices.resolve, the one place."""
    from .training.devices import resolve
    return resolve(name)


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _probe(threads, steps=8):
    """Seconds of `steps` training-shaped GEMM pairs (B 256, D 3072, C 10) with `threads` threads,
    timed together: a thread preempted by another job stalls some steps, and the sum, unlike a
    median of single steps, keeps those stalls (an epoch pays for every one of them)."""
    import torch
    torch.set_num_threads(threads)
    x, W = torch.randn(256, 3072), torch.randn(10, 3072)
    t0 = time.perf_counter()
    for _ in range(steps):
        S = W @ x.t()
        _ = S @ x
    return time.perf_counter() - t0


def choose_threads(setting, rounds=5):
    """--threads N -> N; 'auto' -> all cores when they are idle, 1 when another job holds them.

    auto times a few training steps with 1 and with all cores, alternating, and keeps all cores only
    if their typical sample is clearly faster (< 0.8x) and even their slowest is not slower than 1
    thread: wrongly taking all cores costs up to 10x, wrongly taking 1 at most the cores' speed-up
    (the measurements: bench/RESULTS.md, "Decisions in the code"). It stops early when all cores
    never beat 1 thread. CPU results are deterministic for a given thread count (MKL_DYNAMIC=FALSE), so pass
    --threads N to reproduce a run bit for bit.
    """
    import statistics

    import torch
    cores = _cores()
    if setting != "auto":
        torch.set_num_threads(setting)
        return setting
    if cores == 1:
        torch.set_num_threads(1)
        return 1
    _probe(cores, steps=1)                  # starts the thread pool: not part of any sample
    one, many = [], []
    for r in range(rounds):
        one.append(_probe(1))
        many.append(_probe(cores))
        if r >= 1 and min(many) > min(one):
            break
    typical = statistics.median(one)
    n = cores if statistics.median(many) < 0.8 * typical and max(many) < typical else 1
    torch.set_num_threads(n)
    return n


# --------------------------------------------------------------------------- logging and errors

def setup_logging(quiet=False):
    """lintorch's log lines to stdout, written around tqdm's bars. --quiet drops the per-epoch
    lines (logger lintorch.epoch); the start, step-0 check, warnings and final summary stay."""
    from tqdm import tqdm

    class TqdmHandler(logging.Handler):
        def emit(self, record):
            tqdm.write(self.format(record), file=sys.stdout)
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("lintorch")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    logging.getLogger("lintorch.epoch").setLevel(logging.WARNING if quiet else logging.INFO)


def user_errors():
    """The exception classes that mean 'the user's input or machine', not a lintorch bug."""
    return (LintorchError, OSError)


def exit_status(main, args):
    """main(args) -> exit status, with every user error as one line on stderr and exit 2,
    Ctrl-C as exit 130, and a closed stdout pipe as a quiet exit; --debug shows tracebacks."""
    speaks = os.environ.get("RANK", "0") == "0"      # under torchrun rank 0 speaks for the job
    try:
        return main(args)
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        if speaks:
            print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)   # stdout's reader left (| head): no noise at exit
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as e:
        if getattr(args, "debug", False) or not isinstance(e, user_errors()):
            raise
        if speaks:
            print(f"error: {one_line(e)}", file=sys.stderr)
        return 2


def loss_text(x):
    """A loss for people: 4 decimals at ordinary sizes, 4 significant digits in exponent form past
    1e5 (a --margin 1e30 loss is 9e+30, not a 31-digit number)."""
    x = float(x)
    return f"{x:.4f}" if abs(x) < 1e5 else f"{x:.4g}"


def worker_message(text):
    """An error re-raised by a DataLoader in the main process carries the worker's whole traceback
    ("Caught DataError in DataLoader worker process 0. Original Traceback ... DataError: msg") ->
    the worker's own message ("msg"); any other text as it is."""
    caught = re.match(r"Caught (\w+) in DataLoader worker process \d+\.\s*\nOriginal Traceback", text)
    if caught:
        own = re.search(rf"^[\w.]*\b{caught.group(1)}: (.*)\Z", text, re.M | re.S)
        if own:
            return own.group(1).strip()
    return text


def one_line(e):
    """An exception as one line: OSErrors name their file and reason, not a bare errno."""
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror[0].lower()}{e.strerror[1:]}"
    text = worker_message(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(e)).strip()) or type(e).__name__   # no escapes
    return " ".join(text.split())


# --------------------------------------------------------------------------- the sweep grammar

def parse_sweep_item(text):
    """'lr=1e-4,3e-4' or 'reg=logspace:1e-6:1e-1:16' -> ('lr', [values]) (distinct values)."""
    name, sep, values = text.partition("=")
    if not sep or name not in SWEEPABLE:
        raise argparse.ArgumentTypeError(f"sweep item {text!r} must be NAME=V1,V2,... or NAME=logspace:LO:HI:N "
                                         f"with NAME one of {', '.join(SWEEPABLE)}")
    check = number(float, 0.0, low_open=name == "lr")
    if values.startswith("logspace:"):
        parts = values.split(":")[1:]
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"sweep item {text!r}: logspace takes LO:HI:N")
        lo, hi = number(float, 0.0, low_open=True)(parts[0]), number(float, 0.0, low_open=True)(parts[1])
        n = number(int, 2, high=4096)(parts[2])
        vals = [float(f"{math.exp(math.log(lo) + i * (math.log(hi) - math.log(lo)) / (n - 1)):.6g}")
                for i in range(n)]
    else:
        vals = [check(v) for v in values.split(",") if v.strip()]
    if not vals:
        raise argparse.ArgumentTypeError(f"sweep item {text!r} has no values")
    twice = sorted({v for v in vals if vals.count(v) > 1})
    if twice and values.startswith("logspace:"):
        raise argparse.ArgumentTypeError(f"sweep item {text!r}: {n} points between {lo:g} and {hi:g} are closer "
                                         f"than 6 significant digits and round to the same value "
                                         f"{', '.join(map(repr, twice))}; use fewer points or a wider range")
    if twice:
        raise argparse.ArgumentTypeError(f"sweep item {text!r} lists {', '.join(map(repr, twice))} twice")
    return name, vals
