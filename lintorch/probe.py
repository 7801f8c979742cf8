"""lintorch.LinearProbe: a linear classifier on the caller's own features, with scikit-learn's
habits (keyword arguments stored as given, fit -> self, predict, score, coef_), trained by the very
core train.py runs: the same config rules and defaults, recipe, members, solvers and checkpoint
owner (training.run.execute), on tensors instead of files.

Shapes: N examples, D features, C classes, K members (a sequence of reg or lr values is a path of
K members trained at once, as `train.py --sweep` trains them).

    probe = LinearProbe(reg=[1e-4, 1e-3, 1e-2]).fit(X, y)        # X (N, D) tensor / array, y (N,)
    probe.predict(X_test); probe.score(X_test, y_test); probe.path_

The class holds the scikit-learn surface only. Below it: the arguments as train.py's config
(train_config, choose_solver, member_names) and one run of the core in memory or into a logdir
(train_core). The input forms are data.arrays' (fit_data).
"""
import inspect
import itertools
import logging
import math
import os
from typing import List, NamedTuple

import numpy as np

log = logging.getLogger("lintorch")
SOLVERS = ("auto", "lbfgs", "exact", "sgd", "gd")


class NotFittedError(ValueError, AttributeError):
    """predict & co. before fit (scikit-learn's NotFittedError is both too)."""


class LinearProbe:
    """A linear classifier, scores = W x + b, on features X (N, D) -> C classes.

    Arguments mirror train.py's flags (see `python train.py --help`; None means train.py's default):
    loss ("softmax", "svm", "squared"), svm_form, squared_hinge, margin, penalty ("l2", "l1", "elasticnet"),
    beta, reg (a number, or a sequence of numbers: a path trained at once, the best member on
    validation kept), class_weight (None or "balanced"), solver ("auto": the closed form for the
    squared loss (l2, unweighted), else L-BFGS to convergence when the objective is smooth, when the
    data are in memory, else SGD; "lbfgs", "exact", "sgd", "gd"), lr (a
    number or a sequence, for sgd/gd), epochs, batch_size, momentum, schedule, patience, max_iter,
    tol, history, standardize (per-feature (x - mean) / std from the training split, as train.py
    does for features; False: the features as given), validation_fraction (the share of X carved
    out, seeded, when no X_val is given), refit (retrain the chosen value on train + validation; with
    a logdir, into its sub-folder refit),
    device ("auto": X's own device for a tensor, else CUDA when present), seed, logdir (None: the
    run stays in memory, nothing is written; else a train.py run folder there), verbose.

    Fitted: coef_ (C, D) and intercept_ (C,) on the features as given (the standardization folded
    in), classes_ (C,), n_features_in_, n_iter_ (the kept member's L-BFGS iterations or SGD steps),
    path_ (one dict per member: its name, values, val_acc, objective, iterations, status), best_params_.
    """

    def __init__(self, *, loss="softmax", svm_form="weston-watkins", squared_hinge=False, margin=1.0,
                 penalty="l2", beta=1.0, reg=None, class_weight=None, solver="auto", lr=None, epochs=None,
                 batch_size=256, momentum=0.9, schedule="cosine", patience=None, max_iter=1000, tol=1e-4,
                 history=10, standardize=True, validation_fraction=0.2, refit=False, device="auto", seed=0,
                 logdir=None, verbose=False):
        self.loss, self.svm_form, self.squared_hinge, self.margin = loss, svm_form, squared_hinge, margin
        self.penalty, self.beta, self.reg, self.class_weight = penalty, beta, reg, class_weight
        self.solver, self.lr, self.epochs, self.batch_size = solver, lr, epochs, batch_size
        self.momentum, self.schedule, self.patience = momentum, schedule, patience
        self.max_iter, self.tol, self.history = max_iter, tol, history
        self.standardize, self.validation_fraction, self.refit = standardize, validation_fraction, refit
        self.device, self.seed, self.logdir, self.verbose = device, seed, logdir, verbose

    # ------------------------------------------------------------------ scikit-learn's protocol

    _estimator_type = "classifier"           # scikit-learn < 1.6 reads this; newer ones the tags below

    def __sklearn_tags__(self):
        """A classifier, for scikit-learn's model selection (called by scikit-learn only, so the
        import is there when it runs; lintorch itself never imports scikit-learn)."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags
        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), input_tags=InputTags())

    @classmethod
    def _param_names(cls):
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self._param_names():
                raise ValueError(f"invalid parameter {k!r} for LinearProbe; valid: {', '.join(self._param_names())}")
            setattr(self, k, v)
        return self

    def __repr__(self):
        given = {k: v for k, v in self.get_params().items()
                 if v is not inspect.signature(type(self).__init__).parameters[k].default}
        return f"LinearProbe({', '.join(f'{k}={v!r}' for k, v in given.items())})"

    # ------------------------------------------------------------------ fit

    def fit(self, X, y, X_val=None, y_val=None):
        """X (N, D) float features (a torch tensor on any device, a NumPy array, or a memory-mapped
        array, streamed), y (N,) integer labels of any values -> self. X_val, y_val: the validation
        split (else `validation_fraction` of X is carved out, seeded). X may also be a
        torch.utils.data.DataLoader of (x, y) batches (y=None; any x shape, flattened), trained with
        SGD in the loader's own order; it needs X_val, y_val (or X_val a DataLoader, y_val=None)."""
        from .data.arrays import DataLoaderBatches, fit_data, merged
        import torch.utils.data
        if not isinstance(X, torch.utils.data.DataLoader) and (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        params = self.get_params()
        check_path_values(params)
        inputs = fit_data(X, y, X_val, y_val, validation_fraction=self.validation_fraction, seed=self.seed,
                          standardize=self.standardize)
        solver = choose_solver(params, inputs.in_memory, inputs.loader is not None)
        device = choose_device(self.device, X)
        cfg = train_config(params, solver, len(inputs.dataset.val))
        if inputs.loader is not None and self.refit:
            raise ValueError("refit=True needs X in memory, not a DataLoader")
        batches = None if inputs.loader is None else DataLoaderBatches(X, inputs.preprocess, inputs.classes, device)
        run = train_core(cfg, device, inputs.dataset, inputs.preprocess, batches, self.logdir, self.verbose)
        kept = run
        if self.refit and len(run.members) > 1:
            kept = train_core(run.settings.replace(sweep=None), device, merged(inputs.dataset), inputs.preprocess,
                              None, None if self.logdir is None else os.path.join(self.logdir, "refit"), self.verbose)
        self.classes_, self.path_ = inputs.classes, run.members
        chosen = {"reg": run.settings.reg, "lr": run.config["resolved"]["lr"]}      # the lr it trained with
        self.best_params_ = {k: v for k, v in chosen.items() if k == "reg" or solver not in ("lbfgs", "exact")}
        set_model(self, kept.weight, kept.bias, kept.preprocess, kept.config)
        self.n_iter_ = run.members[run.index]["iterations"]
        return self

    # ------------------------------------------------------------------ predictions

    def _check_fitted(self):
        if not hasattr(self, "_W"):
            raise NotFittedError("this LinearProbe is not fitted yet: call fit(X, y) first")

    def decision_function(self, X):
        """X (N, D) -> scores (N, C) as a torch tensor on the model's device."""
        import torch
        from .data.arrays import as_features, row_blocks
        self._check_fitted()
        X, _ = as_features(X, None)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features per row; this probe was fitted on {self.n_features_in_}")
        dev = self._W.device
        with torch.inference_mode():
            out = [torch.addmm(self._b, self._preprocess(xb.to(dev)), self._W.t()) for xb in row_blocks(X)]
        return torch.cat(out) if out else torch.empty(0, len(self.classes_), device=dev)

    def predict(self, X):
        """X (N, D) -> (N,) labels, as classes_ holds them (a NumPy array)."""
        scores = self.decision_function(X)
        return self.classes_[scores.argmax(1).cpu().numpy()]

    def predict_proba(self, X):
        """X (N, D) -> (N, C) softmax probabilities (loss="softmax" only) as a NumPy array."""
        self._check_fitted()
        from .objective import LOSSES
        if not LOSSES[self._cfg["loss"]].probabilistic:
            raise AttributeError(f"predict_proba needs loss='softmax' (this probe was fitted with loss="
                                 f"{self._cfg['loss']!r}, whose scores are not probabilities); use decision_function")
        return self.decision_function(X).softmax(1).cpu().numpy()

    def score(self, X, y):
        """Accuracy of predict(X) against y."""
        return float(np.mean(self.predict(X) == np.asarray(y.cpu() if hasattr(y, "cpu") else y)))

    # ------------------------------------------------------------------ files

    def save(self, path):
        """A lintorch checkpoint (torch.load(path, weights_only=True) reads it; evaluate and
        lintorch.load too)."""
        from .output.checkpoint import Header, ModelFile, model_dict, save
        self._check_fitted()
        cfg = {**self._cfg, "probe_classes": self.classes_.tolist()}
        h = Header([str(c) for c in self.classes_], cfg["image_size"], self.n_features_in_, cfg["loss"],
                   self._preprocess.state_dict(), cfg, {"name": "tensor"})
        save(model_dict(ModelFile(h, self._W.cpu(), self._b.cpu(), 1)), os.fspath(path))


def load(path, device="cpu"):
    """A lintorch checkpoint (a probe's save(), or a train.py run folder / checkpoint.pt) -> a
    fitted LinearProbe on `device`."""
    from .output.checkpoint import best_path, load_model
    from .data import Preprocess
    saved = load_model(best_path(os.fspath(path)))
    cfg = saved.header.config
    params = {k: cfg[k] for k in ("loss", "svm_form", "squared_hinge", "margin", "penalty", "beta", "reg", "seed")
              if k in cfg}
    probe = LinearProbe(**params)
    labels = cfg.get("probe_classes")
    probe.classes_ = np.array(labels if labels is not None else saved.header.classes)
    probe.path_, probe.n_iter_ = [], None
    pre = Preprocess.from_state_dict(saved.header.preprocess)
    set_model(probe, saved.weight.to(device), saved.bias.to(device), pre, cfg)
    return probe


def set_model(probe, W, b, preprocess, cfg):
    """A fitted probe's model: W (C, D), b (C,) on the standardized features, the Preprocess and
    config (the checkpoint header's); coef_ (C, D) and intercept_ (C,) on the features as given."""
    probe._W, probe._b, probe._preprocess, probe._cfg = W, b, preprocess.to(W.device), cfg
    probe.n_features_in_ = W.shape[1]
    scale, shift = probe._preprocess.scale.double(), probe._preprocess.neg_shift.double()   # x' = x*scale + shift
    probe.coef_ = (W.double() * scale).float()
    probe.intercept_ = (b.double() + W.double() @ shift).float()


# --------------------------------------------------------------------------- the arguments as train.py's config

def _is_sequence(v):
    return isinstance(v, (list, tuple, np.ndarray)) or (hasattr(v, "dim") and v.dim() == 1)


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
    full_batch = in_memory and not _is_sequence(params["lr"])
    from .objective import exact_applies, nonsmooth_parts
    if exact_applies(params["loss"], params["penalty"], params["class_weight"] is not None) and full_batch:
        return "exact"
    smooth = not nonsmooth_parts(params["loss"], params["squared_hinge"], params["penalty"])
    return "lbfgs" if smooth and full_batch else "sgd"


# TrainConfig's fields that LinearProbe calls by another name
KEYWORDS = {"optimizer": "solver"}


def keyword(field):
    return KEYWORDS.get(field, field)


def train_config(params, solver, n_val):
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


def choose_device(setting, X):
    """"auto" and X a tensor on an accelerator: X's device; else cli.resolve_device(setting)."""
    import torch
    from .cli import resolve_device
    if setting == "auto" and isinstance(X, torch.Tensor) and X.device.type != "cpu":
        return X.device
    return resolve_device(setting)


# --------------------------------------------------------------------------- one run of the core

class Trained(NamedTuple):
    """One run of the core, as fit keeps it: the kept member's weight (C, D) and bias (C,) on the
    run's device, the Preprocess, its saved config (the checkpoint header's dict, with what the
    run resolved) and TrainConfig, its index in members, and one dict per member (LinearProbe.path_)."""
    weight: object
    bias: object
    preprocess: object
    config: dict
    settings: object
    index: int
    members: List[dict]


def train_core(cfg, device, data, preprocess, batches, logdir, verbose):
    """training.run.execute of cfg (a TrainConfig) on data (a DataSet) -> Trained. logdir None: the
    Run in memory (nothing is written, the kept weights taken from it); else a new train.py run
    folder claimed there. ValueError for what train.py reports as a user error, or when every
    member diverged."""
    from .config import Resolved
    from .errors import DataError, FeatureError, UserError
    from .output.rundir import claim_new, release
    from .training.run import execute
    level = log.level
    if not verbose:
        log.setLevel(logging.WARNING)
    folder = lock = None
    try:
        if logdir is not None:
            folder = os.fspath(logdir)
            lock, _ = claim_new(folder)
        status, run = execute(cfg, device, folder, data=data, preprocess=preprocess, tensorboard=folder is not None,
                              train_loader=batches, names=member_names(cfg.sweep), resolved=Resolved(logdir=folder))
    except (UserError, DataError, FeatureError) as e:
        raise ValueError(str(e)) from None
    finally:
        if lock is not None:
            release(folder, lock)
        log.setLevel(level)
    if status >= 128:
        raise KeyboardInterrupt
    members = [{"name": m.name, "config": dict(m.overrides), "val_acc": m.metrics["val_acc"],
                "objective": m.metrics.get("objective"),
                "iterations": m.metrics.get("iterations", len(m.history) * len(run.recipe.train_loader)),
                "status": m.metrics["status"]} for m in run.members]
    if run.best is None:
        raise ValueError(f"training diverged for every configuration ({run.members[0].note}): lower lr or reg")
    k, W, b = run.best
    kept = run.members[k]
    return Trained(W.detach().clone(), b.detach().clone(), run.recipe.preprocess, kept.saved_config(), kept.config,
                   k, members)
