"""train.py's command line: every flag with help, checked by argparse (usage error, exit 2)."""
import argparse
import itertools
import math

from .data import DATASETS
from .functional import PENALTIES, SVM_FORMS
from .loaders import LOADERS

OPTIMIZERS = ("sgd", "gd", "random-search", "random-local-search")
SCHEDULES = ("constant", "step", "cosine")
SWEEPABLE = ("lr", "reg")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, except None (such flags say in their help what they default to)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def number(kind, low=None, low_open=False, high=None):
    """An argparse type: a finite int/float within bounds, else a usage error naming the value."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite")
        if low is not None and (v <= low if low_open else v < low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if low_open else '>='} {low}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high}")
        return v
    return parse


def parse_sweep_item(text):
    """'lr=1e-4,3e-4' -> ('lr', [1e-4, 3e-4])."""
    name, sep, values = text.partition("=")
    if not sep or name not in SWEEPABLE:
        raise argparse.ArgumentTypeError(f"sweep item {text!r} must be NAME=V1,V2,... with NAME one of "
                                         f"{', '.join(SWEEPABLE)}")
    check = number(float, 0.0, low_open=name == "lr")
    vals = [check(v) for v in values.split(",") if v.strip()]
    if not vals:
        raise argparse.ArgumentTypeError(f"sweep item {text!r} has no values")
    return name, vals


def sweep_grid(items):
    """[('lr', [a, b]), ('reg', [c])] -> [{'lr': a, 'reg': c}, {'lr': b, 'reg': c}] (the full grid)."""
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"a sweep names {', '.join(sorted({n for n in names if names.count(n) > 1}))} twice")
    return [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in items))]


def get_args_parser():
    p = argparse.ArgumentParser(
        prog="train.py", description="Train a linear classifier scores = Wx + b on images, with "
        "lintorch's hand-written gradients, logging to TensorBoard.",
        formatter_class=HelpFormatter)
    pos_int, pos_float = number(int, 1), number(float, 0.0, low_open=True)
    nonneg = number(float, 0.0)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=DATASETS, default="cifar10", help="data set to train on")
    d.add_argument("--data-dir", default="./data", help="cifar10: where cifar-10-batches-py is (or is "
                   "downloaded to); imagefolder: folder with train/<class>/* and optionally test/<class>/*")
    d.add_argument("--cache-dir", default=None, help="where the decoded uint8 image cache goes "
                   "(default: DATA_DIR/.lintorch-cache)")
    d.add_argument("--image-size", type=pos_int, default=32, help="images are resized to this square size")
    d.add_argument("--val-size", type=pos_int, default=1000, help="validation images carved from train (seeded)")
    d.add_argument("--mean", choices=("pixel", "channel"), default="pixel",
                   help="subtract the training mean image (pixel) or per-channel mean")
    d.add_argument("--standardize", action="store_true", help="also divide by the training std")
    d.add_argument("--loader", choices=LOADERS, default="tensor",
                   help="tensor: decoded once, batched on the device; dataloader: torch DataLoader")
    d.add_argument("--workers", type=number(int, 0), default=0, help="DataLoader workers (--loader dataloader)")
    d.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")

    m = p.add_argument_group("loss and regularization")
    m.add_argument("--loss", choices=("softmax", "svm"), default="softmax", help="data loss")
    m.add_argument("--margin", type=nonneg, default=1.0, help="SVM margin (delta)")
    m.add_argument("--squared-hinge", action="store_true", help="SVM with max(0, .)^2 (the lecture's Q6)")
    m.add_argument("--svm-form", choices=SVM_FORMS, default="weston-watkins",
                   help="sum over wrong classes (weston-watkins) or the largest one (crammer-singer)")
    m.add_argument("--reg", type=nonneg, default=None, help="regularization strength lambda "
                   "(default: the tuned value for --loss)")
    m.add_argument("--penalty", choices=PENALTIES, default="l2", help="R(W): l2, l1 or elasticnet")
    m.add_argument("--beta", type=nonneg, default=1.0, help="elastic net's weight on sum W^2")

    o = p.add_argument_group("optimization")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="sgd: minibatch SGD; gd: full-batch gradient descent; random-search: the lecture's "
                   "strategy #1; random-local-search: random steps kept when they lower the loss")
    o.add_argument("--epochs", type=pos_int, default=None, help="passes over the training data "
                   "(default: 10 for sgd, 100 for gd)")
    o.add_argument("--batch-size", type=pos_int, default=None, help="minibatch size (default: tuned, see README)")
    o.add_argument("--lr", type=pos_float, default=None, help="learning rate (default: tuned for --loss)")
    o.add_argument("--momentum", type=number(float, 0.0, high=0.999), default=0.9, help="SGD momentum")
    o.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="learning-rate schedule")
    o.add_argument("--trials", type=pos_int, default=1000, help="random search: number of random W tried")
    o.add_argument("--sweep", nargs="+", type=parse_sweep_item, default=None, metavar="NAME=V1,V2",
                   help=f"train the whole grid at once, one stacked model per configuration; NAME in "
                   f"{', '.join(SWEEPABLE)}, e.g. --sweep lr=1e-3,3e-3 reg=1e-3,1e-2")

    r = p.add_argument_group("run")
    r.add_argument("--seed", type=number(int, 0), default=0, help="random seed (split, init, order)")
    r.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    r.add_argument("--logdir", default=None, help="run folder (default: runs/<timestamp>-<dataset>-<loss>)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR_OR_CHECKPOINT",
                   help="continue an interrupted run from its last.pt")
    r.add_argument("--log-every", type=pos_int, default=50, help="steps between loss read-backs and logs")
    r.add_argument("--quiet", action="store_true", help="no progress bars, only the summary lines")
    r.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def parse_args(argv=None):
    """Parse and cross-check; errors are argparse usage errors (exit 2)."""
    p = get_args_parser()
    args = p.parse_args(argv)
    if args.sweep is not None:
        try:
            args.sweep = sweep_grid(args.sweep)
        except ValueError as e:
            p.error(str(e))
        if args.optimizer != "sgd":
            p.error("--sweep trains with --optimizer sgd")
    if args.sweep is not None and args.resume:
        p.error("--resume continues a single run, not a sweep")
    return args
