"""lintorch.LinearProbe: a linear classifier on the caller's own features, with scikit-learn's
habits (keyword arguments stored as given, fit -> self, predict, score, coef_), trained by the very
core train.py runs: the same config rules and defaults, recipe, members, solvers and checkpoint
owner (training.fit.fit), on tensors instead of files.

Shapes: N examples, D features, C classes, K members (a sequence of reg or lr values is a path of
K members trained at once, as `train.py --sweep` trains them).

    probe = LinearProbe(reg=[1e-4, 1e-3, 1e-2]).fit(X, y)        # X (N, D) tensor / array, y (N,)
    probe.predict(X_test); probe.score(X_test, y_test); probe.path_

The class holds fit; its predict side, scikit-learn's protocol, its keywords' rules and its files
are api's (predictor, estimator, keywords, files). Below it: the arguments as train.py's config
(probe_config, choose_solver, member_names) and one fit of the core in memory or into a logdir
(fit_probe). The input forms are data.arrays' (fit_data), checked by data.inputs.
"""
import itertools
import logging
import math
import os
from typing import List, NamedTuple

import numpy as np

from .api.estimator import Classifier
from .api.files import read, set_model
from .api.keywords import (REG_PATH, SOLVER_SETTINGS, VALIDATION_FRACTION, api_message, check_settings,
                           choose_device, given, is_sequence)
from .api.predictor import NotFittedError, Predictor

__all__ = ["LinearProbe", "load", "NotFittedError"]

log = logging.getLogger("lintorch")
SOLVERS = ("auto", "lbfgs", "exact", "sgd", "gd")


class LinearProbe(Predictor, Classifier):
    """A linear classifier, scores = W x + b, on features X (N, D) -> C classes.

    The defaults make a good probe with no argument: softmax, features standardized, reg chosen
    on a path of 8 values (1e-6, 1e-5, ..., 10) by L-BFGS, each to convergence, on a seeded 20% of X
    held out for the choice, then refit on all of X (scikit-learn's LogisticRegressionCV habit).
    A single reg trains on all of X, nothing held out. Labels may be anything scikit-learn
    classifies (integers, bools, integral floats, strings); classes_ is sorted as np.unique sorts.

    Arguments mirror train.py's flags (see `python train.py --help`); a keyword the chosen solver
    or loss would ignore is a ValueError. loss ("softmax", "svm", "squared"); svm_form, margin,
    squared_hinge (loss="svm" only); penalty ("l2", "l1", "elasticnet"); beta (elasticnet only);
    reg (None: the path above with a full-batch solver, train.py's tuned value with SGD; a number;
    or a sequence: a path trained at once, the best member on validation kept); class_weight
    (None or "balanced"); solver ("auto": the closed form for the squared loss (l2, unweighted),
    else L-BFGS when the objective is smooth and X is in memory, else SGD, and SGD whenever an SGD
    setting is given; "lbfgs", "exact", "sgd", "gd"); lr, epochs, batch_size, momentum, schedule,
    patience (SGD's); max_iter, tol, history (L-BFGS's); standardize (per-feature (x - mean) / std
    from the training split, as train.py does for features; False: the features as given);
    validation_fraction (None: 0.2 of X carved out, seeded, only where something is chosen (a path,
    SGD's best epoch) and no X_val is given; a number: always carve that share); refit (None: refit
    the chosen value on all of X when the choice was made on a carved split by a full-batch solver;
    True/False; with a logdir, into its sub-folder refit); device ("auto": X's own device for a
    tensor, else CUDA when present); seed; logdir (None: the run stays in memory, nothing is
    written; else a train.py run folder there); verbose.

    Fitted: coef_ (C, D) and intercept_ (C,) on the features as given (the standardization folded
    in), classes_ (C,), n_features_in_, n_iter_ (the chosen member's L-BFGS iterations or SGD steps),
    path_ (one dict per member: its name, values, val_acc (None where nothing was held out),
    objective, iterations, status), best_params_, refit_ (whether the kept model is the refit).
    fit leaves torch's global random state as it was.
    """

    def __init__(self, *, loss="softmax", svm_form="weston-watkins", squared_hinge=False, margin=1.0,
                 penalty="l2", beta=1.0, reg=None, class_weight=None, solver="auto", lr=None, epochs=None,
                 batch_size=256, momentum=0.9, schedule="cosine", patience=None, max_iter=1000, tol=1e-4,
                 history=10, standardize=True, validation_fraction=None, refit=None, device="auto", seed=0,
                 logdir=None, verbose=False):
        self.loss, self.svm_form, self.squared_hinge, self.margin = loss, svm_form, squared_hinge, margin
        self.penalty, self.beta, self.reg, self.class_weight = penalty, beta, reg, class_weight
        self.solver, self.lr, self.epochs, self.batch_size = solver, lr, epochs, batch_size
        self.momentum, self.schedule, self.patience = momentum, schedule, patience
        self.max_iter, self.tol, self.history = max_iter, tol, history
        self.standardize, self.validation_fraction, self.refit = standardize, validation_fraction, refit
        self.device, self.seed, self.logdir, self.verbose = device, seed, logdir, verbose

    # ------------------------------------------------------------------ fit

    def fit(self, X, y, X_val=None, y_val=None):
        """X (N, D) float features (a torch tensor on any device, a NumPy array, or a memory-mapped
        array, streamed), y (N,) labels of any kind scikit-learn classifies -> self. X_val, y_val: the
        validation split that chooses reg (else, where something is chosen, `validation_fraction` of
        X is carved out, seeded, and the choice refit on all of X). X may also be a
        torch.utils.data.DataLoader of (x, y) batches (y=None; any x shape, flattened), trained with
        SGD in the loader's own order; it needs X_val, y_val (or X_val a DataLoader, y_val=None).
        torch's global random state is left as it was."""
        import torch.utils.data
        from .data.arrays import DataLoaderBatches, fit_data, merged
        loader = isinstance(X, torch.utils.data.DataLoader)
        if not loader and (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        params = self.get_params()
        check_path_values(params)
        solver = choose_solver(params, not loader and not isinstance(X, np.memmap), loader)
        check_settings(params, self._defaults(), solver)
        if params["reg"] is None and solver in ("lbfgs", "exact"):
            params["reg"] = REG_PATH
        chooses = _is_sequence(params["reg"]) or _is_sequence(params["lr"]) or solver in ("sgd", "gd")
        fraction = params["validation_fraction"]
        carved = X_val is None and not loader and (chooses or fraction is not None)
        if carved and fraction is None:
            fraction = VALIDATION_FRACTION
        inputs = fit_data(X, y, X_val, y_val, validation_fraction=fraction if carved else None, seed=self.seed,
                          standardize=self.standardize)
        refit = params["refit"]
        if refit is None:
            refit = carved and chooses and solver in ("lbfgs", "exact")
        if loader and refit:
            raise ValueError("refit=True needs X in memory, not a DataLoader")
        device = choose_device(self.device, X)
        cfg = probe_config(params, solver, len(inputs.dataset.val))
        shape = inputs.dataset.source["sample_shape"]
        batches = None if not loader else DataLoaderBatches(X, inputs.preprocess, inputs.classes, device, shape)
        with torch.random.fork_rng(devices=[]):     # scikit-learn's contract: fit leaves global state alone
            fitted = fit_probe(cfg, device, inputs.dataset, inputs.preprocess, batches, self.logdir)
            kept = fitted
            if refit and len(fitted.members) > 1:
                kept = fit_probe(fitted.settings.replace(sweep=None), device, merged(inputs.dataset),
                                  inputs.preprocess, None,
                                  None if self.logdir is None else os.path.join(self.logdir, "refit"))
        self.classes_, self.path_ = inputs.classes, fitted.members
        if X_val is None and not carved:             # nothing held out: no validation accuracy to report
            self.path_ = [{**m, "val_acc": None} for m in fitted.members]
        chosen = {"reg": fitted.settings.reg, "lr": fitted.config["resolved"]["lr"]}      # the lr it trained with
        self.best_params_ = {k: v for k, v in chosen.items() if k == "reg" or solver not in ("lbfgs", "exact")}
        set_model(self, kept.weight, kept.bias, kept.preprocess, kept.config, inputs.dataset.source)
        self.n_iter_ = fitted.members[fitted.index]["iterations"]
        self.refit_ = kept is not fitted
        return self


def load(path, device="cpu"):
    """A lintorch checkpoint (a probe's save(), or a train.py run folder / checkpoint.pt; a probe's
    logdir included) -> a fitted LinearProbe on `device`, its classes_ in the dtype fit was given.
    ValueError naming `device` where it is not usable; FileNotFoundError / ValueError for a path
    that holds no lintorch model."""
    saved, classes, pre, device = read(path, device)
    cfg = saved.header.config
    probe = LinearProbe(**{k: cfg[k] for k in ("loss", "svm_form", "squared_hinge", "margin", "penalty", "beta", "reg",
                                               "seed") if k in cfg})
    probe.classes_, probe.path_, probe.n_iter_ = classes, [], None
    set_model(probe, saved.weight.to(device), saved.bias.to(device), pre, cfg, saved.header.features)
    return probe


# --------------------------------------------------------------------------- the arguments as train.py's config

_is_sequence = is_sequence


def check_path_values(params):
    """ValueError for a reg or lr (or any value of a sequence of them) that is not a finite number
    >= 0 (lr > 0)."""
    for name in ("reg", "lr"):
        values = params[name]
        for v in (values if _is_sequence(values) else [values]):
            if v is not None and (not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v)
                                  or v < 0 or (name == "lr" and v == 0)):
                raise ValueError(f"{name} {v!r} must be a finite number {'> 0' if name == 'lr' else '>= 0'}")


def choose_solver(params, in_memory, dataloader=False):
    """params: LinearProbe's arguments -> the train.py --optimizer that solver="auto" (or the
    solver named) stands for: exact for the squared loss (l2, unweighted), L-BFGS for another
    smooth objective (train.py's one rule, objective.nonsmooth_parts), both only in memory; else SGD.
    dataloader: X is a DataLoader, whose batches are SGD's minibatches."""
    solver = params["solver"]
    if dataloader and solver not in ("auto", "sgd"):
        raise ValueError(f"solver {solver!r}: a DataLoader trains with solver='sgd' (its batches are "
                         f"minibatches); give tensors for the full-batch solvers")
    if solver not in SOLVERS:
        raise ValueError(f"solver {solver!r}: expected one of {', '.join(SOLVERS)}")
    if solver != "auto":
        return solver
    full_batch = in_memory and not given(params, LinearProbe._defaults(), SOLVER_SETTINGS["sgd"])
    from .objective import exact_applies, nonsmooth_parts
    if exact_applies(params["loss"], params["penalty"], params["class_weight"] is not None) and full_batch:
        return "exact"
    smooth = not nonsmooth_parts(params["loss"], params["squared_hinge"], params["penalty"])
    return "lbfgs" if smooth and full_batch else "sgd"


# TrainConfig's fields that LinearProbe calls by another name
KEYWORDS = {"optimizer": "solver"}


def keyword(field):
    return KEYWORDS.get(field, field)


def probe_config(params, solver, n_val):
    """LinearProbe's arguments -> the TrainConfig they stand for (dataset "tensor": the caller's own
    arrays), with the train command's defaults and rules: a rule it breaks is a ValueError naming
    the keyword. A sequence of reg or lr values is the sweep's grid (reg first), exact to the last digit."""
    from .config import ConfigError, DATASET_TENSOR, TrainConfig
    from .objective import LOSSES
    p = params
    values = {"dataset": DATASET_TENSOR, "data_dir": None, "optimizer": solver, "loss": p["loss"],
              "penalty": p["penalty"], "seed": p["seed"], "val_size": n_val, "quiet": not p["verbose"]}
    values.update({name: p[name] for name in getattr(LOSSES.get(p["loss"]), "settings", ())})   # the loss's own
    if p["penalty"] == "elasticnet":
        values["beta"] = p["beta"]
    if p["class_weight"] is not None:
        values["class_weight"] = p["class_weight"]
    items = []
    for name in ("reg", "lr"):
        value = p[name]
        if _is_sequence(value):
            vals = [float(v) for v in value]
            if not vals:
                raise ValueError(f"{name}: an empty sequence")
            twice = sorted({v for v in vals if vals.count(v) > 1})
            if twice:
                raise ValueError(f"{name} lists {', '.join(map(repr, twice))} twice")
            items.append((name, vals))
        elif value is not None:
            values[name] = value
    if items:
        values["sweep"] = tuple(dict(zip([n for n, _ in items], combo))
                                for combo in itertools.product(*(v for _, v in items)))
    if solver == "lbfgs":
        values.update(max_iter=p["max_iter"], tol=p["tol"], history=p["history"])
    elif solver != "exact":
        values.update(batch_size=p["batch_size"], momentum=p["momentum"], schedule=p["schedule"])
        values.update({k: p[k] for k in ("epochs", "patience") if p[k] is not None})
    try:
        cfg = TrainConfig(**values, given=tuple(sorted(values)))
        cfg.check(name=keyword)
        return cfg.filled()
    except ConfigError as e:
        raise ValueError(str(e)) from None


def member_names(sweep):
    """A sweep's configurations (the exact values trained) -> their members' names, each value as
    its 6 significant digits, the rule that names train.py's `--sweep reg=logspace:...` members
    (np.logspace(-5, -1, 5) -> 'reg=1e-05', not 'reg=9.999999999999999e-06'); None (train.py's
    names: each value's repr) for a single run, or where two values share 6 digits."""
    from .config import member_name
    if not sweep:
        return None
    names = [member_name({k: float(f"{v:.6g}") for k, v in c.items()}) for c in sweep]
    return names if len(set(names)) == len(names) else None


# --------------------------------------------------------------------------- one fit of the core

class ProbeFit(NamedTuple):
    """One fit of the core, as LinearProbe.fit keeps it: the kept member's weight (C, D) and bias (C,) on the
    run's device, the Preprocess, its saved config (the checkpoint header's dict, with what the
    run resolved) and TrainConfig, its index in members, and one dict per member (LinearProbe.path_)."""
    weight: object
    bias: object
    preprocess: object
    config: dict
    settings: object
    index: int
    members: List[dict]


def fit_probe(cfg, device, data, preprocess, batches, logdir):
    """cfg (a TrainConfig) trained on data (a DataSet) -> ProbeFit. logdir None: training.fit.fit in
    memory (nothing written, no signal handler, the loggers and torch's RNG left as they were);
    else a new train.py run folder claimed there (TensorBoard, checkpoints, metrics.json).
    ValueError for what train.py reports as a user error, or when every member diverged."""
    from .config import Resolved
    from .errors import LintorchError
    from .output.rundir import claim_new, release
    from .training.fit import fit
    from .training.report import run_folder
    names = member_names(cfg.sweep)
    folder = lock = None
    try:
        if logdir is None:
            result = fit(cfg, data, device=device, preprocess=preprocess, train_loader=batches, names=names,
                         train_accuracy=False)        # a probe in memory reports no training accuracy
        else:
            folder = os.fspath(logdir)
            lock, _ = claim_new(folder)
            result = fit(cfg, data, device=device, report=run_folder(folder), resolved=Resolved(logdir=folder),
                         preprocess=preprocess, train_loader=batches, names=names)
    except LintorchError as e:
        raise ValueError(api_message(str(e))) from None
    finally:
        if lock is not None:
            release(folder, lock)
    if result.exit_status >= 128:
        raise KeyboardInterrupt
    r = result
    members = [{"name": r.names[k], "config": r.values[k], "val_acc": r.val_acc[k], "objective": r.objective[k],
                "iterations": r.iterations[k], "status": r.status[k]} for k in range(len(r.names))]
    if r.best is None:
        raise ValueError(f"training diverged for every configuration ({r.notes[0]}): lower lr or reg")
    k = r.best
    return ProbeFit(r.W[k].clone(), r.b[k].clone(), r.preprocess, r.saved[k], r.configs[k], k, members)
