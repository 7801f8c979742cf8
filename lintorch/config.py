"""The train command's configuration, typed and torch-free: TrainConfig holds every setting with its
default, bounds and help text (one home each); the train command's parser is generated from its
fields, LinearProbe builds it directly, and `check` holds the rules that tie settings together.

What a run finds out while it runs (the threads it measured, the learning rate scaled to the
features' width, the validation split's size, its folder) is a Resolved record kept beside the
config in config.json and the checkpoint ("resolved"), never written into it.

Imports no torch, so `train.py --help` and usage errors answer at once.
"""
import argparse
import dataclasses
import functools
import itertools
import numbers
import os
from dataclasses import dataclass, field
from typing import Optional

from .cli import ArgumentParser, add_common, extractor_argument, nonempty, number, parse_sweep_item, threads_arg, unused_extractor_flags
from .names import (CACHE_CHECKS, CLASS_WEIGHTS, DATASETS, GD_EPOCHS, GD_LR_SCALE, LOADERS, MEANS, OPTIMIZERS,
    PENALTIES, PRECONDITIONS, RESUMABLE_CHANGES, SCHEDULES, SEARCHES, SGD_EPOCHS, SVM_FORMS, SWEEPABLE,
    features_lr_scale, repeated_parts)
from .objective import LOSSES, LOSS_DEFAULTS, exact_applies, nonsmooth_parts

MAX_SEED = 2 ** 32 - 1

# Named presets: the best measured classifier for an extractor's features, applied in one visible step
# when --features NAME is given with none of CLASSIFIER_FLAGS (a key given on the command line keeps
# its value), the reg picked on validation by a path in one run. The measurements behind each
# (kmeans: 76.18% on validation; val_size 10,000 because the path's values are 0.05-0.3 points apart):
# bench/RESULTS.md, "The k-means recipe, step by step" and "hog,colorhist recipe".
PRESETS = {
    "kmeans": {"loss": "squared", "optimizer": "exact", "flip": True, "flip_eval": True, "power": 0.5,
               "val_size": 10000, "sweep": ["reg=logspace:1e-6:1e-1:16"]},
    "hog,colorhist": {"loss": "softmax", "optimizer": "lbfgs", "sweep": ["reg=logspace:1e-6:1e-2:9"]},
}
CLASSIFIER_FLAGS = ("loss", "optimizer", "sweep", "reg", "lr", "epochs", "squared_hinge", "svm_form", "margin",
                    "penalty", "beta", "momentum", "schedule", "batch_size", "patience", "class_weight", "max_iter",
                    "tol", "history", "precondition", "trials")
DATASET_TENSOR = "tensor"       # LinearProbe.fit on the caller's own arrays (no flag chooses it)


class ConfigError(ValueError):
    """A setting, or a combination of settings, that cannot run: field names the (first) setting;
    str() is the text, which names settings as the builder spells them (--flag or keyword)."""

    def __init__(self, field, text):
        super().__init__(text)
        self.field = field


def flag(name):
    """A field's name as the command line spells it: val_size -> --val-size."""
    return "--" + name.replace("_", "-")


def _tuned(key):
    return ", ".join(f"{loss.tuned[key]:g} for {name}" for name, loss in LOSSES.items())


def _opt(default, help, group, *, type=None, choices=None, action=None, metavar=None, nargs=None, cli=True):
    """A TrainConfig field: its default, its flag's help, group and type (the bounds live in the
    type: cli.number), choices, argparse action. cli=False: no flag (set by the API or a step)."""
    return field(default=default, metadata=dict(help=help, group=group, type=type, choices=choices, action=action,
                                                metavar=metavar, nargs=nargs, cli=cli))


def _extractor_opt(name):
    """A TrainConfig field for an extractor flag: cli.extractor_argument's type, choices and help."""
    arg = extractor_argument(name)
    return _opt(None, arg["help"], "features", type=arg["type"], choices=arg["choices"], metavar=arg["metavar"])


_pos_int, _nonneg = number(int, 1), number(float, 0.0)
_BOOL = "store_true"
_SWITCH = argparse.BooleanOptionalAction


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (the train command's flags; LinearProbe's keywords map onto
    them). Frozen: a run never changes it; derived values go to Resolved."""
    # data
    dataset: str = _opt("cifar10", "data set to train on", "data", choices=DATASETS)
    data_dir: Optional[str] = _opt("./data", "cifar10: where cifar-10-batches-py is (or is downloaded to); "
                                   "cifar100, mnist, fashion-mnist, kmnist, svhn, stl10: where torchvision's files "
                                   "for it are (never downloaded); imagefolder: folder with train/<class>/* and "
                                   "optionally test/<class>/*; "
                                   "features: a feature folder (train.npy + train_labels.npy or train.pt, "
                                   "classes.json; see README)", "data", type=nonempty)
    cache_dir: Optional[str] = _opt(None, "where the decoded uint8 image cache goes (default: "
                                    "DATA_DIR/.lintorch-cache)", "data", type=nonempty)
    cache_check: str = _opt("stat", "how the decoded-image cache is checked against the images: stat (path, size, "
                            "mtime, ctime, inode: fast) or full (a sha256 of every file's bytes)", "data",
                            choices=CACHE_CHECKS)
    image_size: int = _opt(32, "images are resized to this square size", "data", type=number(int, 1, high=1024))
    val_size: Optional[int] = _opt(None, "validation images carved from train, seeded (default: 5000, or a fifth "
                                   "of a smaller training set)", "data", type=_pos_int)
    mean: str = _opt("pixel", "subtract the training mean image (pixel) or per-channel mean", "data", choices=MEANS)
    standardize: bool = _opt(False, "also divide by the training std", "data", action=_BOOL)
    loader: str = _opt("tensor", "tensor: decoded once, batched on the device; dataloader: torch DataLoader",
                       "data", choices=LOADERS)
    workers: int = _opt(0, "DataLoader workers (--loader dataloader)", "data", type=number(int, 0, high=64))
    flip: bool = _opt(False, "pixels: mirror a random half of each training batch left-right (seeded; on the "
                      "device); lbfgs/exact and --features: train on every image and its mirror image (features "
                      "encoded once each and cached)", "data", action=_SWITCH)
    flip_eval: bool = _opt(False, "--features: classify each validation, test and predicted image by its features "
                           "averaged with its mirror image's (the mean of the two images' scores, the classifier "
                           "being linear; each encoded once and cached); the checkpoint records it, so evaluate and "
                           "predict do the same", "data", action=_SWITCH)
    skip_bad_images: bool = _opt(False, "skip unreadable images with a warning", "data", action=_BOOL)
    # features
    features: str = _opt("pixels", "what the classifier sees: pixels, kmeans (Coates et al. 2011), hog, colorhist, "
                         "a comma list such as hog,colorhist, or torchvision:<model> (e.g. torchvision:resnet18); "
                         f"extracted once and cached. --features {' or '.join(PRESETS)} alone (with no classifier flag: "
                         f"{', '.join(map(flag, CLASSIFIER_FLAGS[:4]))}, ...) applies that extractor's preset, the "
                         f"best measured classifier for it, which overrides the defaults marked 'with --features "
                         f"NAME alone' below (a flag given keeps its value; the run prints the preset it applied)",
                         "features", type=nonempty)
    # each extractor flag from its one declaration (features.settings); None: the extractor's default
    centroids: Optional[int] = _extractor_opt("centroids")
    patches: Optional[int] = _extractor_opt("patches")
    pool: Optional[int] = _extractor_opt("pool")
    iterations: Optional[int] = _extractor_opt("iterations")
    encoding: Optional[str] = _extractor_opt("encoding")
    alpha: Optional[float] = _extractor_opt("alpha")
    power: Optional[float] = _extractor_opt("power")
    zca_eps: Optional[float] = _extractor_opt("zca_eps")
    backbone_weights: Optional[str] = _extractor_opt("backbone_weights")
    input_size: Optional[int] = _extractor_opt("input_size")
    # loss and regularization
    loss: str = _opt("softmax", "data loss", "loss and regularization", choices=tuple(LOSSES))
    margin: float = _opt(LOSS_DEFAULTS["margin"], "SVM margin (delta)", "loss and regularization", type=_nonneg)
    squared_hinge: bool = _opt(LOSS_DEFAULTS["squared_hinge"], "SVM with max(0, .)^2 (the lecture's Q6)",
                               "loss and regularization", action=_BOOL)
    svm_form: str = _opt(LOSS_DEFAULTS["svm_form"], "sum over wrong classes (weston-watkins), the largest one "
                         "(crammer-singer), or C binary SVMs (one-vs-rest; with --squared-hinge the L2-SVM of "
                         "Coates et al. 2011)", "loss and regularization", choices=SVM_FORMS)
    reg: Optional[float] = _opt(None, f"regularization strength lambda (default: {_tuned('reg')})",
                                "loss and regularization", type=_nonneg)
    penalty: str = _opt(LOSS_DEFAULTS["penalty"], "R(W): l2, l1 or elasticnet", "loss and regularization",
                        choices=PENALTIES)
    beta: float = _opt(LOSS_DEFAULTS["beta"], "elastic net's weight on sum W^2", "loss and regularization",
                       type=_nonneg)
    class_weight: str = _opt(LOSS_DEFAULTS["class_weight"], "weight each example's loss by its class: balanced = "
                             "N / (C * n_c), as scikit-learn", "loss and regularization", choices=CLASS_WEIGHTS)
    # optimization
    optimizer: str = _opt("sgd", "sgd: minibatch SGD; gd: full-batch gradient descent; lbfgs: full-batch L-BFGS, "
                          "every member of a sweep at once (softmax or --squared-hinge, l2); exact: --loss squared "
                          "solved in closed form, a whole --sweep reg path from one Gram; random-search: the "
                          "lecture's strategy #1; random-local-search: random steps kept when they lower the loss",
                          "optimization", choices=OPTIMIZERS)
    epochs: Optional[int] = _opt(None, f"passes over the training data (default: {SGD_EPOCHS} for sgd, {GD_EPOCHS} "
                                 f"for gd)", "optimization", type=number(int, 1, high=100_000))
    batch_size: int = _opt(256, "minibatch size", "optimization", type=number(int, 1, high=2 ** 24))
    lr: Optional[float] = _opt(None, f"learning rate (default: {_tuned('lr')}; x{GD_LR_SCALE:g} for gd; scaled "
                               f"down for standardized features, see config.json's resolved lr)", "optimization",
                               type=number(float, 0.0, low_open=True))
    momentum: float = _opt(0.9, "SGD momentum", "optimization", type=number(float, 0.0, high=0.999))
    schedule: str = _opt("cosine", "learning-rate schedule", "optimization", choices=SCHEDULES)
    patience: Optional[int] = _opt(None, "end a member after this many epochs without a better validation accuracy",
                                   "optimization", type=number(int, 1))
    max_iter: int = _opt(1000, "lbfgs: iterations per member at most", "optimization",
                         type=number(int, 1, high=1_000_000))
    tol: float = _opt(1e-4, "lbfgs: a member has converged when every |dL/dW|, |dL/db| <= tol (scikit-learn's "
                      "tol)", "optimization", type=number(float, 0.0, low_open=True))
    history: int = _opt(10, "lbfgs: (s, y) pairs kept", "optimization", type=number(int, 1, high=1000))
    precondition: str = _opt("auto", "lbfgs: start each member's inverse-Hessian estimate from (X^T X / N + 2 reg "
                             "I)^-1 (gram: one extra pass and a D x D factor per member; far fewer iterations on "
                             "correlated inputs; where N < D, in low-rank kernel form) or from the identity (none: plain "
                             "L-BFGS); auto: gram",
                             "optimization", choices=PRECONDITIONS)
    trials: int = _opt(1000, "random search: number of random W tried", "optimization",
                       type=number(int, 1, high=10_000_000))
    # the grid: a tuple of {name: value} configurations, one member each (None: a single run)
    sweep: Optional[tuple] = _opt(None, f"train the whole grid at once, one stacked model per configuration; NAME "
                                  f"in {', '.join(SWEEPABLE)}, e.g. --sweep lr=1e-3,3e-3 reg=logspace:1e-6:1e-1:16",
                                  "optimization", metavar="NAME=V1,V2", nargs="+")
    # run
    seed: int = _opt(0, "random seed (split, init, order)", "run", type=number(int, 0, high=MAX_SEED))
    logdir: Optional[str] = _opt(None, "run folder (default: runs/<timestamp>-<dataset>-<loss>)", "run",
                                 type=nonempty)
    resume: Optional[str] = _opt(None, f"continue an interrupted run from its last.pt (may change only "
                                 f"{', '.join(map(flag, RESUMABLE_CHANGES))})", "run", type=nonempty,
                                 metavar="RUN_DIR_OR_CHECKPOINT")
    log_every: int = _opt(50, "steps between loss read-backs and logs", "run", type=number(int, 1))
    quiet: bool = _opt(False, "no progress bars, only warnings and errors", "run", action=_BOOL)
    sweep_parallel: bool = _opt(False, "split the --sweep's configurations across the processes, each training "
                                "its share on all the data (default: data-parallel, each process a shard of every "
                                "batch)", "torchrun", action=_BOOL)
    dist_timeout: float = _opt(60.0, "seconds a process waits for the others at a collective before it gives up "
                               "with a message", "torchrun", type=number(float, 1.0, high=86400.0))
    device: str = _opt("auto", "auto (CUDA when present), cpu, cuda or cuda:N", "common")
    threads: object = _opt("auto", "CPU threads: N, or auto (measured at start: 1 when the cores are busy)",
                           "common", type=threads_arg)
    debug: bool = _opt(False, "show full tracebacks", "common", action=_BOOL)
    # set by a step, not a flag: the preset applied (PRESETS), and the flags typed (resume's rules)
    preset: Optional[str] = _opt(None, "the preset applied (PRESETS)", "", cli=False)
    given: tuple = field(default=(), compare=False, repr=False, metadata=dict(cli=False))

    # ------------------------------------------------------------------ building it

    @classmethod
    def fields(cls):
        return _fields(cls)

    @classmethod
    def from_args(cls, ns):
        """An argparse Namespace holding only the flags given (the parser's defaults are SUPPRESS)
        -> the config: the flags, their defaults, the tuned defaults (filled) and, for --features
        NAME alone, its preset (applied)."""
        given = dict(vars(ns))
        if given.get("sweep") is not None:
            given["sweep"] = tuple(sweep_grid(given["sweep"]))
        cfg = cls(**given, given=tuple(sorted(given)))
        return cfg.with_preset().filled()

    @classmethod
    def from_saved(cls, saved):
        """A config.json / checkpoint config dict (any lintorch's) -> (TrainConfig, Resolved). Keys an
        older lintorch did not write take the field's default; the facts it wrote into its config
        (the measured threads, the run folder, a scaled lr) are read back into Resolved."""
        names = {f.name for f in cls.fields()} - {"given", "resume"}
        values = {k: v for k, v in saved.items() if k in names}
        if values.get("sweep") is not None:
            values["sweep"] = tuple(dict(c) for c in values["sweep"])
        if saved.get("lr_from_defaults"):         # an older lintorch: lr was the default, not yet scaled
            values["lr"] = None
        if "feature_recipe" in saved and saved["feature_recipe"]:
            values["preset"] = saved.get("features")
        old = {"threads": saved.get("cpu_threads"), "logdir": saved.get("logdir"), "val_size": saved.get("val_size"),
               "lr": saved.get("lr")}
        resolved = Resolved(**{**old, **(saved.get("resolved") or {})})
        return cls(**values), resolved

    def saved(self, resolved=None):
        """-> plain types for config.json, TensorBoard text and checkpoints (torch.load weights_only):
        every setting, and the resolved record beside them."""
        out = {f.name: getattr(self, f.name) for f in self.fields() if f.name not in ("given", "resume")}
        out["sweep"] = None if self.sweep is None else [dict(c) for c in self.sweep]
        if resolved is not None:
            out["resolved"] = {f.name: getattr(resolved, f.name) for f in _fields(Resolved)}    # plain values
        return out

    def replace(self, **changes):
        """This config with `changes` (itself, frozen, when there are none)."""
        return dataclasses.replace(self, **changes) if changes else self

    # ------------------------------------------------------------------ the derived defaults

    def with_preset(self):
        """--features NAME alone -> this config with PRESETS[NAME] applied (the keys not given), the
        one visible step: preset_text() says what it set. Unchanged for another extractor, a
        classifier flag given, or a resume (which keeps its own config)."""
        recipe = PRESETS.get(self.features)
        if recipe is None or self.resume or set(self.given) & set(CLASSIFIER_FLAGS):
            return self
        changes = {k: (tuple(sweep_grid([parse_sweep_item(i) for i in v])) if k == "sweep" else v)
                   for k, v in recipe.items() if k not in self.given}
        return self.replace(**changes, preset=self.features)

    def preset_text(self):
        """The preset's flags as applied ('--loss squared --optimizer exact ...'), or None."""
        if self.preset is None:
            return None
        return " ".join(flag(k) if v is True else f"{flag(k)} {' '.join(v) if k == 'sweep' else v}"
                        for k, v in PRESETS[self.preset].items() if k not in self.given)

    def filled(self):
        """The tuned defaults for the loss and optimizer: reg and epochs where not set; gd steps
        without momentum (the lecture's vanilla loop). The lr stays None when not set: its default
        depends on the inputs (base_lr)."""
        full_batch = self.optimizer == "gd"
        return self.replace(reg=LOSSES[self.loss].tuned["reg"] if self.reg is None else self.reg,
                            epochs=(GD_EPOCHS if full_batch else SGD_EPOCHS) if self.epochs is None else self.epochs,
                            momentum=0.0 if full_batch else self.momentum)

    def base_lr(self, D, standardized):
        """The learning rate before any sweep override: lr when set, else the loss's tuned value
        (x GD_LR_SCALE for gd), scaled to D standardized features (names.features_lr_scale) for the
        optimizers that take steps."""
        if self.lr is not None:
            return self.lr
        lr = LOSSES[self.loss].tuned["lr"] * (GD_LR_SCALE if self.optimizer == "gd" else 1.0)
        return lr * features_lr_scale(D) if standardized and self.optimizer in ("sgd", "gd") else lr

    # ------------------------------------------------------------------ the rules

    def check(self, name=flag):
        """Every setting within its bounds and choices, then the rules that tie settings together;
        ConfigError(field, text) for the first that fails. name(field) spells a setting in the text
        (--flag by default; LinearProbe passes its keyword names)."""
        for f in self.fields():
            _check_field(f, getattr(self, f.name), name)
        _check_rules(self, name)


@functools.lru_cache(maxsize=None)
def _fields(cls):
    """dataclasses.fields(cls), read once per class (it filters the class's fields on every call)."""
    return dataclasses.fields(cls)


def _check_rules(cfg, n):
    """The rules that tie settings together (TrainConfig.check): ConfigError for the first broken."""
    if cfg.sweep is not None:
        for c in cfg.sweep:
            for k, v in c.items():
                if k not in SWEEPABLE:
                    raise ConfigError("sweep", f"a sweep varies {', '.join(SWEEPABLE)}, not {k}")
                _bounded("sweep", n(k), v, number(float, 0.0, low_open=k == "lr"))
        if cfg.optimizer in SEARCHES:
            raise ConfigError("sweep", f"{n('sweep')} trains with {n('optimizer')} sgd, gd, lbfgs or exact, not "
                              f"{cfg.optimizer}")
    lr_swept = bool(cfg.sweep) and any("lr" in c for c in cfg.sweep)
    if cfg.optimizer == "lbfgs":
        if nonsmooth_parts(cfg.loss, cfg.squared_hinge, cfg.penalty):
            raise ConfigError("optimizer", f"{n('optimizer')} lbfgs needs a smooth objective: softmax or "
                              f"{n('loss')} svm {n('squared_hinge')}, with {n('penalty')} l2 (L-BFGS stalls at "
                              f"the hinge's and l1's kinks; use sgd for those)")
        if lr_swept:
            raise ConfigError("sweep", f"{n('optimizer')} lbfgs has no learning rate to sweep; sweep reg")
    if cfg.optimizer == "exact":
        if not exact_applies(cfg.loss, cfg.penalty, cfg.class_weight != "none"):
            raise ConfigError("optimizer", f"{n('optimizer')} exact solves {n('loss')} squared with {n('penalty')} "
                              f"l2 and no {n('class_weight')} in closed form; use lbfgs or sgd for the others")
        if lr_swept:
            raise ConfigError("sweep", f"{n('optimizer')} exact has no learning rate to sweep; sweep reg")
    lbfgs_only = [k for k in ("max_iter", "tol", "history", "precondition") if k in cfg.given]
    if lbfgs_only and cfg.optimizer != "lbfgs" and not cfg.resume:
        raise ConfigError(lbfgs_only[0], f"{', '.join(map(n, lbfgs_only))} set{'s' if len(lbfgs_only) == 1 else ''}"
                          f" the L-BFGS solver: add {n('optimizer')} lbfgs (the {cfg.optimizer} optimizer would "
                          f"ignore it)")
    loop_only = [k for k in ("lr", "momentum", "schedule", "epochs", "patience") if k in cfg.given]
    # the command line only: LinearProbe's solver "auto" picks the optimizer itself (LinearProbe has its own rule)
    if loop_only and cfg.optimizer in ("lbfgs", "exact") and not cfg.resume and cfg.dataset != DATASET_TENSOR:
        raise ConfigError(loop_only[0], f"{', '.join(map(n, loop_only))} set{'s' if len(loop_only) == 1 else ''} the "
                          f"gradient-descent loop (sgd, gd): {n('optimizer')} {cfg.optimizer} would ignore it "
                          f"({'it solves in closed form' if cfg.optimizer == 'exact' else 'it stops by ' + n('max_iter') + ' and ' + n('tol')})")
    if cfg.alpha is not None and cfg.encoding != "soft" and "alpha" in cfg.given:
        raise ConfigError("alpha", f"{n('alpha')} is the soft code's threshold: add {n('encoding')} soft (the "
                          f"{cfg.encoding or 'triangle'} encoding would ignore it)")
    if repeated_parts(cfg.features):
        raise ConfigError("features", f"{n('features')} {cfg.features} names {', '.join(repeated_parts(cfg.features))} "
                          f"twice: its columns would be repeated; name each once")
    if cfg.cache_dir is not None and os.path.exists(cfg.cache_dir) and not os.path.isdir(cfg.cache_dir):
        raise ConfigError("cache_dir", f"{n('cache_dir')} {cfg.cache_dir} is a file, not a folder")
    if cfg.flip and cfg.dataset == "features":
        raise ConfigError("flip", f"{n('flip')} mirrors images; a feature folder holds features, not images")
    if cfg.dataset == "features" and cfg.features != "pixels":
        raise ConfigError("features", f"{n('dataset')} features trains on the folder's features as they are; "
                          f"give no {n('features')}")
    if cfg.flip_eval and (cfg.dataset == "features" or cfg.features == "pixels"):
        raise ConfigError("flip_eval", f"{n('flip_eval')} averages each evaluated image's extracted features "
                          f"with its mirror image's: it needs {n('features')} (not pixels, not a feature folder)")
    unused = unused_extractor_flags(cfg, "" if cfg.dataset == "features" else cfg.features)
    if unused:
        raise ConfigError("features", f"{unused}, not {'a feature folder' if cfg.dataset == 'features' else cfg.features}"
                          f": it would be ignored")
    if cfg.loader == "dataloader" and (cfg.features != "pixels" or cfg.dataset == "features"):
        raise ConfigError("loader", f"{n('loader')} dataloader decodes images batch by batch; features are made "
                          f"once, so it applies to {n('features')} pixels only (drop {n('loader')})")
    if cfg.sweep_parallel and cfg.sweep is None and not cfg.resume:
        raise ConfigError("sweep_parallel", f"{n('sweep_parallel')} splits a {n('sweep')} across processes: give "
                          f"{n('sweep')}")
    if cfg.resume and cfg.sweep is not None:
        raise ConfigError("resume", f"{n('resume')} continues a run with its own sweep; give no {n('sweep')}")


# (field, type, value) of the settings found within their bounds: a value's check is a pure function of
# it, so each is made once per process (a LinearProbe fit checks about 50 settings, most at their defaults)
_WITHIN_BOUNDS = set()


def _check_field(f, value, name):
    """One setting within its field's choices and bounds (the flag's own type)."""
    meta = f.metadata
    if not meta.get("cli") or value is None or f.name == "sweep":
        return
    try:
        key = (f.name, type(value), value)
        if key in _WITHIN_BOUNDS:
            return
    except TypeError:                   # an unhashable value: checked each time
        key = None
    _check_value(f, value, name)
    if key is not None:
        _WITHIN_BOUNDS.add(key)


def _check_value(f, value, name):
    """_check_field's check itself: ConfigError naming the setting where value is outside them."""
    meta = f.metadata
    choices = meta["choices"]
    if f.name == "dataset":
        choices = (*choices, DATASET_TENSOR)
    if choices is not None and value not in choices:
        raise ConfigError(f.name, f"{name(f.name)}: invalid choice: {value!r} (choose from "
                          f"{', '.join(map(repr, choices))})")
    if meta["action"] is not None:
        if not isinstance(value, bool):
            raise ConfigError(f.name, f"{name(f.name)}: {value!r} is not True or False")
    elif meta["type"] is not None:
        _bounded(f.name, name(f.name), value, meta["type"])


def _bounded(field, spelled, value, parse):
    """value through the flag's own type (cli.number and co.: one home for the bounds)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise ConfigError(field, f"{spelled}: {value!r} is not a number")
    text = value if isinstance(value, str) else str(int(value)) if isinstance(value, numbers.Integral) else \
        repr(float(value))
    try:
        parse(text)
    except argparse.ArgumentTypeError as e:
        raise ConfigError(field, f"{spelled}: {e}") from None


@dataclass(frozen=True)
class Resolved:
    """What a run found out, recorded beside its config: lr, the base learning rate it trained with
    (TrainConfig.base_lr; None for the solvers without one), val_size, the validation split's size,
    threads, the CPU threads measured (a resume keeps them: results stay bit-identical), logdir,
    the run folder."""
    lr: Optional[float] = None
    val_size: Optional[int] = None
    threads: Optional[int] = None
    logdir: Optional[str] = None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- sweeps

def sweep_grid(items):
    """[('lr', [a, b]), ('reg', [c])] -> [{'lr': a, 'reg': c}, {'lr': b, 'reg': c}] (the full grid)."""
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ConfigError("sweep", f"a sweep names {', '.join(sorted({n for n in names if names.count(n) > 1}))} "
                          f"twice")
    return [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in items))]


def member_name(config):
    """{'lr': 0.03, 'reg': 0.0} -> 'lr=0.03,reg=0': distinct configurations get distinct names
    (repr keeps every digit a float needs to round-trip)."""
    return ",".join(f"{k}={v!r}" if float(v) != int(v) or abs(v) >= 1e16 else f"{k}={int(v)}"
                    for k, v in config.items())


# --------------------------------------------------------------------------- the command line

GROUPS = {"data": "data", "features": "features", "loss and regularization": "loss and regularization",
          "optimization": "optimization", "run": "run",
          "torchrun": "under torchrun (torchrun --nproc_per_node N train.py ...; see lintorch/training/distributed.py)"}


def _help(f):
    """A field's help with its default (None: the help says what it defaults to) and what a preset
    sets it to instead."""
    text = f.metadata["help"]
    if f.default is not None and f.metadata["action"] is None:
        text += f" (default: {f.default})"
    by_preset = [f"{v if f.name != 'sweep' else ' '.join(v)} with --features {name} alone"
                 for name, preset in PRESETS.items() for k, v in preset.items() if k == f.name]
    if by_preset:
        text += f" ({'; '.join(by_preset)})" if f.metadata["action"] is None else \
            f" (on with --features {' and '.join(n for n, p in PRESETS.items() if p.get(f.name))} alone)"
    return text.replace("%", "%%")


def get_args_parser():
    """The train command's parser, one flag per TrainConfig field. Every default is SUPPRESS, so the
    Namespace holds exactly the flags given (TrainConfig.from_args fills the rest from the fields)."""
    p = ArgumentParser(prog="train.py", description="Train a linear classifier scores = Wx + b on images, "
                       "with lintorch's hand-written gradients, logging to TensorBoard.",
                       argument_default=argparse.SUPPRESS,
                       epilog="Presets: " + "; ".join(f"--features {name} with no classifier flag sets "
                                                      + " ".join(flag(k) if v is True else
                                                                 f"{flag(k)} {' '.join(v) if k == 'sweep' else v}"
                                                                 for k, v in preset.items())
                                                      for name, preset in PRESETS.items())
                       + ". The run prints the preset it applied; any classifier flag turns it off.")
    groups = {}
    for f in TrainConfig.fields():
        meta = f.metadata
        if not meta.get("cli"):
            continue
        if meta["group"] not in groups:
            groups[meta["group"]] = p.add_argument_group(GROUPS.get(meta["group"])) if meta["group"] != "common" \
                else groups["run"]
        kwargs = {"help": _help(f), "default": argparse.SUPPRESS}
        if meta["action"] is not None:
            kwargs["action"] = meta["action"]
        else:
            kwargs["type"] = parse_sweep_item if f.name == "sweep" else meta["type"]
            for k in ("choices", "metavar", "nargs"):
                if meta[k] is not None:
                    kwargs[k] = meta[k]
        groups[meta["group"]].add_argument(flag(f.name), **kwargs)
    return p


def parse_args(argv=None):
    """The command line -> a checked TrainConfig; a usage error is one line (exit 2). cfg.given
    lists the flags set (resume refuses changes it cannot honour)."""
    import sys
    argv = sys.argv[1:] if argv is None else list(argv)
    p = get_args_parser()
    ns = p.parse_args(argv)
    try:
        cfg = TrainConfig.from_args(ns)
        cfg.check()
    except ConfigError as e:
        p.error(str(e))
    return cfg
