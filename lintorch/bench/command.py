"""Speed benchmark: lintorch's training epoch against what a user would write instead, the
per-image DataLoader pipeline and the GEMM bound; the losses alone; time to 40% validation
accuracy; peak memory, the whole train.py process's cost per epoch and its bookkeeping; an epoch
beside a competing CPU job.

    python -m lintorch.bench [--data-dir DIR --cache-dir DIR] [--device auto] [--batch-size 256]
                             [--repeats 7] [--json bench-results/bench.json] [--quick]

Layout: command.py is the command line (no torch imported until the arguments are parsed, so
--help and usage errors answer at once); sections.py runs the sections; contenders.py is what is
timed in this process, accuracy.py the time-to-accuracy race, processes.py what is timed in whole
train.py processes and beside a competing job; report.py the targets, the table and the JSON.

Shapes: N training images (49,000 for CIFAR-10), D = 3 * 32 * 32 features, C = 10 classes,
B the batch size. Within a section the contenders alternate (one untimed warm-up round, then round
r times each of them once) and the table reports the median over rounds, so a noisy shared machine
slows all contenders alike. Without --data-dir the images are random uint8 of CIFAR-10's shape.
"""
import time

from ..cli import ArgumentParser, exit_status, nonempty, number, threads_arg

QUICK = {"repeats": (7, 2), "n": (None, 2048), "subset": (3000, 512), "loss_seconds": (0.05, 0.005),
         "process_rounds": (5, 1)}      # flag: (default, default with --quick)


def get_args_parser():
    p = ArgumentParser(prog="python -m lintorch.bench", description=__doc__.split("\n\n")[0])
    pos_int, pos_float = number(int, 1), number(float, 0.0, low_open=True)
    p.add_argument("--data-dir", type=nonempty, default=None, help="ImageFolder root with train/<class>/*.jpg "
                   "(decoded once into lintorch's uint8 cache); random CIFAR-shaped uint8 data when not given")
    p.add_argument("--cache-dir", type=nonempty, default=None, help="where the decoded uint8 image cache goes, "
                   "for the benchmark and the train.py processes it starts (default: DATA_DIR/.lintorch-cache)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=threads_arg, default="auto", help="CPU threads of the in-process sections: N, "
                   "or auto (measured at start as train.py does: 1 when the cores are busy)")
    p.add_argument("--batch-size", type=pos_int, default=256, help="batch size of every epoch contender")
    p.add_argument("--repeats", type=pos_int, default=None, help="timed rounds per section (default 7, 2 with "
                   "--quick; at most 3 for the per-image DataLoader, time to accuracy and threads under load)")
    p.add_argument("--json", default="bench-results/bench.json", help="where the results are written as JSON")
    p.add_argument("--quick", action="store_true", help="a smoke run in seconds: N=2048 images, 512 per-image, "
                   "short loss samples, one round of threads under load; no time to accuracy, memory or "
                   "whole-process run")
    p.add_argument("--n", type=pos_int, default=None, help="use only N images (default: all; 2048 with --quick)")
    p.add_argument("--subset", type=pos_int, default=None, help="images the per-image DataLoader epochs are timed "
                   "on and scaled from (default 3000, 512 with --quick)")
    p.add_argument("--loss-seconds", type=pos_float, default=None, help="length of one loss timing sample "
                   "(default 0.05 s, 0.005 s with --quick)")
    p.add_argument("--sweep-k", type=number(int, 2, high=4096), default=16,
                   help="configurations in the sweep-cost section")
    p.add_argument("--target-acc", type=number(float, 0.0, high=1.0), default=0.40,
                   help="validation accuracy of the time-to-accuracy race")
    p.add_argument("--tta-limit", type=pos_float, default=30.0, help="training seconds after which a "
                   "time-to-accuracy contender is reported as not reached")
    p.add_argument("--epoch-budget", type=pos_float, default=90.0, help="seconds after which the epoch section "
                   "starts no new round (after at least 3), so a loaded machine still finishes in minutes")
    p.add_argument("--process-rounds", type=pos_int, default=None, help="rounds of train.py --epochs 1 and "
                   "--epochs 4 processes in the whole-process section (default 5; only with --data-dir)")
    p.add_argument("--process-threads", type=threads_arg, default="auto", help="--threads of those train.py "
                   "processes (auto: train.py's default)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def parse_args(argv=None):
    args = get_args_parser().parse_args(argv)
    for name, (full, small) in QUICK.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    return args


def benchmark(args):
    """Runs every section, prints the table, writes the JSON; -> 0."""
    from .report import format_table, write_json
    from .sections import run_benchmark
    t0 = time.perf_counter()
    res = run_benchmark(args, say=lambda text: print(f"[{time.perf_counter() - t0:6.1f}s] {text}", flush=True))
    res["seconds"] = time.perf_counter() - t0
    print(format_table(res))
    print(f"total {res['seconds']:.1f}s")
    if args.json:
        write_json(res, args.json)
        print(f"wrote {args.json}")
    return 0


def main(argv=None):
    """`python -m lintorch.bench`: parse (no torch yet), then run; a user's error is one line, exit 2."""
    return exit_status(benchmark, parse_args(argv))
