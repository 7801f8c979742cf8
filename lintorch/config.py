"""train.py's command line: every flag with help and its real default, the tuned per-loss
defaults beside the flags they fill, the sweep grid, and what a resume may change.
Imports no torch, so `train.py --help` and usage errors answer at once.
"""
import argparse
import itertools
import math

from .cli import ArgumentParser, add_common, nonempty, number, unused_extractor_flags
from .names import (CACHE_CHECKS, CLASS_WEIGHTS, DATASETS, GD_EPOCHS, GD_LR_SCALE, LOADERS, MEANS, OPTIMIZERS,
    PENALTIES, PRECONDITIONS, RESUMABLE_CHANGES, SCHEDULES, SEARCHES, SGD_EPOCHS, SVM_FORMS, SWEEPABLE)
from .objective import LOSSES, LOSS_DEFAULTS, exact_applies, nonsmooth_parts

MAX_SEED = 2 ** 32 - 1

# The best measured recipe for an extractor's features (README, Features): used when --features NAME
# is given with none of CLASSIFIER_FLAGS (its other keys only where not given), the reg picked on
# validation by a path in one run. kmeans, K = 1600, 40,000 training images and their mirrors, the
# 10,000-image validation split (exact path): 74.92% with --flip --power 0.5 (reg 1e-4; 1e-6..1e-1
# measured: nothing below 1e-4 helps), 76.18% adding --flip-eval (reg 4.6e-5). val_size 10,000: the
# path picks among values 0.05-0.3 points apart, and 5,000 images' standard error is 0.6 points.
FEATURE_RECIPES = {
    "kmeans": {"loss": "squared", "optimizer": "exact", "flip": True, "flip_eval": True, "power": 0.5,
               "val_size": 10000, "sweep": ["reg=logspace:1e-6:1e-1:16"]},
    "hog,colorhist": {"loss": "softmax", "optimizer": "lbfgs", "sweep": ["reg=logspace:1e-6:1e-2:9"]},
}
CLASSIFIER_FLAGS = ("loss", "optimizer", "sweep", "reg", "lr", "epochs", "squared_hinge", "svm_form", "margin",
                    "penalty", "beta", "momentum", "schedule", "batch_size", "patience", "class_weight", "max_iter",
                    "tol", "history", "precondition", "trials")


def fill_defaults(args):
    """Replace None hyperparameters with the tuned defaults for the loss and optimizer."""
    full_batch = args.optimizer == "gd"
    args.lr_from_defaults = args.lr is None     # recipe.build scales it to the inputs (features_lr_scale)
    if args.lr is None:
        args.lr = LOSSES[args.loss].tuned["lr"] * (GD_LR_SCALE if full_batch else 1.0)
    if args.reg is None:
        args.reg = LOSSES[args.loss].tuned["reg"]
    if args.epochs is None:
        args.epochs = GD_EPOCHS if full_batch else SGD_EPOCHS
    if full_batch:
        args.momentum = 0.0  # the lecture's vanilla loop
    return args


def _tuned(key):
    return ", ".join(f"{tuned[key]:g} for {loss}" for loss, tuned in ((name, loss.tuned) for name, loss in LOSSES.items()))


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


def sweep_grid(items):
    """[('lr', [a, b]), ('reg', [c])] -> [{'lr': a, 'reg': c}, {'lr': b, 'reg': c}] (the full grid)."""
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"a sweep names {', '.join(sorted({n for n in names if names.count(n) > 1}))} twice")
    return [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in items))]


def member_name(config):
    """{'lr': 0.03, 'reg': 0.0} -> 'lr=0.03,reg=0': distinct configurations get distinct names
    (repr keeps every digit a float needs to round-trip)."""
    return ",".join(f"{k}={v!r}" if float(v) != int(v) or abs(v) >= 1e16 else f"{k}={int(v)}"
                    for k, v in config.items())


def get_args_parser():
    p = ArgumentParser(prog="train.py", description="Train a linear classifier scores = Wx + b on images, "
                       "with lintorch's hand-written gradients, logging to TensorBoard.")
    pos_int, pos_float, nonneg = number(int, 1), number(float, 0.0, low_open=True), number(float, 0.0)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=DATASETS, default="cifar10", help="data set to train on")
    d.add_argument("--data-dir", type=nonempty, default="./data", help="cifar10: where cifar-10-batches-py is "
                   "(or is downloaded to); cifar100, mnist, fashion-mnist, kmnist, svhn, stl10: where torchvision's "
                   "files for it are (never downloaded); imagefolder: folder with train/<class>/* and optionally test/<class>/*; "
                   "features: a feature folder (train.npy + train_labels.npy or train.pt, classes.json; see README)")
    d.add_argument("--cache-dir", type=nonempty, default=None, help="where the decoded uint8 image cache goes "
                   "(default: DATA_DIR/.lintorch-cache)")
    d.add_argument("--cache-check", choices=CACHE_CHECKS, default="stat",
                   help="how the decoded-image cache is checked against the images: stat (path, size, mtime, "
                   "ctime, inode: fast) or full (a sha256 of every file's bytes)")
    d.add_argument("--image-size", type=number(int, 1, high=1024), default=32,
                   help="images are resized to this square size")
    d.add_argument("--val-size", type=pos_int, default=None, help="validation images carved from train, seeded "
                   "(default: 5000, or a fifth of a smaller training set)")
    d.add_argument("--mean", choices=MEANS, default="pixel",
                   help="subtract the training mean image (pixel) or per-channel mean")
    d.add_argument("--standardize", action="store_true", help="also divide by the training std")
    d.add_argument("--loader", choices=LOADERS, default="tensor",
                   help="tensor: decoded once, batched on the device; dataloader: torch DataLoader")
    d.add_argument("--workers", type=number(int, 0, high=64), default=0,
                   help="DataLoader workers (--loader dataloader)")
    d.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False, help="pixels: mirror a random half of each training batch "
                   "left-right (seeded; on the device); lbfgs/exact and --features: train on every image and its "
                   "mirror image (features encoded once each and cached)")
    d.add_argument("--flip-eval", action=argparse.BooleanOptionalAction, default=False,
                   help="--features: classify each validation, test and predicted image by its features averaged "
                   "with its mirror image's (the mean of the two images' scores, the classifier being linear; each "
                   "encoded once and cached); the checkpoint records it, so evaluate and predict do the same")
    d.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")

    f = p.add_argument_group("features")
    f.add_argument("--features", default="pixels", help="what the classifier sees: pixels, kmeans (Coates et al. "
                   "2011), hog, colorhist, a comma list such as hog,colorhist, or torchvision:<model> (e.g. "
                   "torchvision:resnet18); extracted once and cached")
    f.add_argument("--centroids", type=number(int, 1, high=100_000), default=None,
                   help="kmeans: centroids K (default 1600; D = POOL^2 K)")
    f.add_argument("--patches", type=number(int, 1, high=100_000_000), default=None,
                   help="kmeans: random 6x6 training patches to learn from (default 400000)")
    f.add_argument("--pool", type=number(int, 1, high=27), default=None,
                   help="kmeans: sum-pool the activations over a POOL x POOL grid of regions (default 2: the "
                   "paper's quadrants; D = POOL^2 K)")
    f.add_argument("--encoding", choices=("triangle", "soft"), default=None,
                   help="kmeans: triangle (default: max(0, mean z - z_k), Coates et al. 2011) or soft (the soft "
                   "threshold with polarity split, Coates & Ng 2011: 2 K codes, D = 2 POOL^2 K)")
    f.add_argument("--alpha", type=nonneg, default=None, help="kmeans --encoding soft: the threshold (default 0.25)")
    f.add_argument("--power", type=number(float, 0.0, low_open=True, high=1.0), default=None,
                   help="kmeans: raise each pooled feature to this power (0.5: the signed square root; default 1)")
    f.add_argument("--zca-eps", type=number(float, 0.0, low_open=True), default=None,
                   help="kmeans: added to the patch covariance's eigenvalues before whitening (default 0.1)")
    f.add_argument("--backbone-weights", type=nonempty, default=None, metavar="FILE_OR_NAME",
                   help="torchvision: a state_dict file, or named weights such as DEFAULT (needs the network "
                   "once); default: random weights")
    f.add_argument("--input-size", type=number(int, 16, high=1024), default=None,
                   help="torchvision without named weights: images are resized to this (default 224)")

    m = p.add_argument_group("loss and regularization")
    m.add_argument("--loss", choices=tuple(LOSSES), default="softmax", help="data loss")
    m.add_argument("--margin", type=nonneg, default=LOSS_DEFAULTS["margin"], help="SVM margin (delta)")
    m.add_argument("--squared-hinge", action="store_true", help="SVM with max(0, .)^2 (the lecture's Q6)")
    m.add_argument("--svm-form", choices=SVM_FORMS, default=LOSS_DEFAULTS["svm_form"],
                   help="sum over wrong classes (weston-watkins), the largest one (crammer-singer), or C "
                   "binary SVMs (one-vs-rest; with --squared-hinge the L2-SVM of Coates et al. 2011)")
    m.add_argument("--reg", type=nonneg, default=None, help=f"regularization strength lambda "
                   f"(default: {_tuned('reg')})")
    m.add_argument("--penalty", choices=PENALTIES, default=LOSS_DEFAULTS["penalty"], help="R(W): l2, l1 or elasticnet")
    m.add_argument("--beta", type=nonneg, default=LOSS_DEFAULTS["beta"], help="elastic net's weight on sum W^2")
    m.add_argument("--class-weight", choices=CLASS_WEIGHTS, default=LOSS_DEFAULTS["class_weight"],
                   help="weight each example's loss by its class: balanced = N / (C * n_c), as scikit-learn")

    o = p.add_argument_group("optimization")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="sgd: minibatch SGD; gd: full-batch gradient descent; lbfgs: full-batch L-BFGS, every "
                   "member of a sweep at once (softmax or --squared-hinge, l2); exact: --loss squared solved in "
                   "closed form, a whole --sweep reg path from one Gram; random-search: the lecture's "
                   "strategy #1; random-local-search: random steps kept when they lower the loss")
    o.add_argument("--epochs", type=number(int, 1, high=100_000), default=None,
                   help=f"passes over the training data (default: {SGD_EPOCHS} for sgd, {GD_EPOCHS} for gd)")
    o.add_argument("--batch-size", type=number(int, 1, high=2 ** 24), default=256, help="minibatch size")
    o.add_argument("--lr", type=pos_float, default=None, help=f"learning rate (default: {_tuned('lr')}; "
                   f"x{GD_LR_SCALE:g} for gd)")
    o.add_argument("--momentum", type=number(float, 0.0, high=0.999), default=0.9, help="SGD momentum")
    o.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="learning-rate schedule")
    o.add_argument("--patience", type=number(int, 1), default=None,
                   help="end a member after this many epochs without a better validation accuracy")
    o.add_argument("--max-iter", type=number(int, 1, high=1_000_000), default=1000,
                   help="lbfgs: iterations per member at most")
    o.add_argument("--tol", type=number(float, 0.0, low_open=True), default=1e-4,
                   help="lbfgs: a member has converged when every |dL/dW|, |dL/db| <= tol (scikit-learn's tol)")
    o.add_argument("--history", type=number(int, 1, high=1000), default=10, help="lbfgs: (s, y) pairs kept")
    o.add_argument("--precondition", choices=PRECONDITIONS, default="auto",
                   help="lbfgs: start each member's inverse-Hessian estimate from (X^T X / N + 2 reg I)^-1 "
                   "(gram: one extra pass and a D x D factor per member; far fewer iterations on correlated "
                   "inputs) or from the identity (none: plain L-BFGS); auto: gram when N >= D")
    o.add_argument("--trials", type=number(int, 1, high=10_000_000), default=1000,
                   help="random search: number of random W tried")
    o.add_argument("--sweep", nargs="+", type=parse_sweep_item, default=None, metavar="NAME=V1,V2",
                   help=f"train the whole grid at once, one stacked model per configuration; NAME in "
                   f"{', '.join(SWEEPABLE)}, e.g. --sweep lr=1e-3,3e-3 reg=logspace:1e-6:1e-1:16")

    r = p.add_argument_group("run")
    r.add_argument("--seed", type=number(int, 0, high=MAX_SEED), default=0, help="random seed (split, init, order)")
    r.add_argument("--logdir", type=nonempty, default=None,
                   help="run folder (default: runs/<timestamp>-<dataset>-<loss>)")
    r.add_argument("--resume", type=nonempty, default=None, metavar="RUN_DIR_OR_CHECKPOINT",
                   help=f"continue an interrupted run from its last.pt (may change only "
                   f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE_CHANGES)})")
    r.add_argument("--log-every", type=number(int, 1), default=50, help="steps between loss read-backs and logs")
    r.add_argument("--quiet", action="store_true", help="no progress bars, only warnings and errors")
    t = p.add_argument_group("under torchrun (torchrun --nproc_per_node N train.py ...; see lintorch/training/distributed.py)")
    t.add_argument("--sweep-parallel", action="store_true", help="split the --sweep's configurations across the "
                   "processes, each training its share on all the data (default: data-parallel, each process a "
                   "shard of every batch)")
    t.add_argument("--dist-timeout", type=number(float, 1.0, high=86400.0), default=60.0,
                   help="seconds a process waits for the others at a collective before it gives up with a message")
    add_common(r)
    return p


def _feature_recipe(args):
    """--features NAME alone: apply FEATURE_RECIPES[NAME] to args -> the flags applied, as text
    (config.json keeps it; the run prints it), or None (another extractor, a classifier flag given,
    or a resume, which keeps its own config)."""
    recipe = FEATURE_RECIPES.get(args.features)
    if recipe is None or args.resume or set(args.given) & set(CLASSIFIER_FLAGS):
        return None
    flags = []
    for k, v in recipe.items():
        if k in args.given:
            continue
        setattr(args, k, [parse_sweep_item(item) for item in v] if k == "sweep" else v)
        flag = f"--{k.replace('_', '-')}"
        flags.append(flag if v is True else f"{flag} {' '.join(v) if k == 'sweep' else v}")
    return " ".join(flags)


def _given(parser, argv):
    """The dests the user set on the command line (parsed again with every default suppressed)."""
    import copy
    quiet = argparse.ArgumentParser(add_help=False)
    for a in parser._actions:
        if a.option_strings and a.dest != "help":
            a = copy.copy(a)
            a.default = argparse.SUPPRESS
            quiet._add_action(a)
    ns, _ = quiet.parse_known_args(argv)
    return sorted(vars(ns))


def parse_args(argv=None, error=None):
    """Parse and cross-check; errors are one-line usage errors (exit 2), or error(message) when
    given (LinearProbe raises ValueError). args.given lists the flags set on the command line
    (resume uses it to refuse changes it cannot honour)."""
    import sys
    argv = sys.argv[1:] if argv is None else list(argv)
    p = get_args_parser()
    if error is not None:
        p.error = error
    args = p.parse_args(argv)
    args.given = _given(p, argv)
    args.feature_recipe = _feature_recipe(args)
    if args.sweep is not None:
        try:
            args.sweep = sweep_grid(args.sweep)
        except ValueError as e:
            p.error(str(e))
        if args.optimizer in SEARCHES:
            p.error(f"--sweep trains with --optimizer sgd, gd, lbfgs or exact, not {args.optimizer}")
    if args.optimizer == "lbfgs":
        if nonsmooth_parts(args.loss, args.squared_hinge, args.penalty):
            p.error("--optimizer lbfgs needs a smooth objective: softmax or --loss svm --squared-hinge, with "
                    "--penalty l2 (L-BFGS stalls at the hinge's and l1's kinks; use sgd for those)")
        if args.sweep and any("lr" in c for c in args.sweep):
            p.error("--optimizer lbfgs has no learning rate to sweep; sweep reg")
    if args.optimizer == "exact":
        if not exact_applies(args.loss, args.penalty, args.class_weight != "none"):
            p.error("--optimizer exact solves --loss squared with --penalty l2 and no --class-weight in closed form; "
                    "use lbfgs or sgd for the others")
        if args.sweep and any("lr" in c for c in args.sweep):
            p.error("--optimizer exact has no learning rate to sweep; sweep reg")
    lbfgs_only = [f"--{d.replace('_', '-')}" for d in ("max_iter", "tol", "history", "precondition")
                  if d in args.given]
    if lbfgs_only and args.optimizer != "lbfgs" and not args.resume:
        p.error(f"{', '.join(lbfgs_only)} set{'s' if len(lbfgs_only) == 1 else ''} the L-BFGS solver: "
                f"add --optimizer lbfgs (the {args.optimizer} optimizer would ignore it)")
    if args.flip and args.dataset == "features":
        p.error("--flip mirrors images; a feature folder holds features, not images")
    if args.dataset == "features" and args.features != "pixels":
        p.error("--dataset features trains on the folder's features as they are; give no --features")
    if args.flip_eval and (args.dataset == "features" or args.features == "pixels"):
        p.error("--flip-eval averages each evaluated image's extracted features with its mirror image's: it needs "
                "--features (not pixels, not a feature folder)")
    unused = unused_extractor_flags(args, "" if args.dataset == "features" else args.features)
    if unused:
        p.error(f"{unused}, not {'a feature folder' if args.dataset == 'features' else args.features}: it "
                f"would be ignored")
    if args.loader == "dataloader" and (args.features != "pixels" or args.dataset == "features"):
        p.error("--loader dataloader decodes images batch by batch; features are made once, so it applies to "
                "--features pixels only (drop --loader)")
    if args.sweep_parallel and args.sweep is None and not args.resume:
        p.error("--sweep-parallel splits a --sweep across processes: give --sweep")
    if args.resume and args.sweep is not None:
        p.error("--resume continues a run with its own sweep; give no --sweep")
    return args


def with_defaults(cfg):
    """A saved config with every flag's key: those an older lintorch did not write take the flag's
    default, so readers index cfg[key] and no default is restated at the point of use."""
    defaults = {a.dest: a.default for a in get_args_parser()._actions if a.dest != "help"}
    return {**defaults, **cfg}


def saved_config(args):
    """vars(args) as plain types for config.json, TensorBoard and checkpoints."""
    return {k: v for k, v in vars(args).items() if k not in ("given", "resume")}
