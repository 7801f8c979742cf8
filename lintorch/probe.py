"""lintorch.LinearProbe: a linear classifier on the caller's own features, with scikit-learn's
habits (keyword arguments stored as given, fit -> self, predict, score, coef_), trained by the very
core train.py runs: the same config rules and defaults, recipe, members, solvers and checkpoint
owner (run.execute), on tensors instead of files.

Shapes: N examples, D features, C classes, K members (a sequence of reg or lr values is a path of
K members trained at once, as `train.py --sweep` trains them).

    probe = LinearProbe(reg=[1e-4, 1e-3, 1e-2]).fit(X, y)        # X (N, D) tensor / array, y (N,)
    probe.predict(X_test); probe.score(X_test, y_test); probe.path_
"""
import inspect
import logging
import math
import os
import re
import tempfile

import numpy as np

log = logging.getLogger("lintorch")
SOLVERS = ("auto", "lbfgs", "exact", "sgd", "gd")
EVAL_ROWS = 8192


class NotFittedError(ValueError, AttributeError):
    """predict & co. before fit (scikit-learn's NotFittedError is both too)."""


class _ArraySplit:
    """A NumPy array's rows (a memory-mapped file larger than memory included) with the interface
    of a feature folder's split (features.store.FeatureSplit): n, d, y, rows(idx), release()."""

    def __init__(self, x, y):
        import torch
        self.x, self.y = x, y
        self.n, self.d = x.shape
        self.dtype = torch.float16 if x.dtype == np.float16 else torch.float32

    def rows(self, idx):
        import torch
        return torch.from_numpy(np.ascontiguousarray(self.x[idx.numpy()]))

    def release(self):
        pass


class _LoaderSplit:
    """The training split of a DataLoader, as the recipe sees it: n, d, y (mapped labels), chunks()
    (the flattened batches, for the standardization's one streamed pass). Batches come from
    _DataLoaderBatches, never by row."""

    def __init__(self, loader, n, d, y):
        self.loader, self.n, self.d, self.y = loader, n, d, y

    def __len__(self):
        return self.n

    def chunks(self):
        for xb, _ in self.loader:
            yield xb.reshape(len(xb), -1).float()

    def rows(self, idx):
        raise TypeError("a DataLoader's rows are read in its own batches")

    def release(self):
        pass


class _DataLoaderBatches:
    """A DataLoader of (x, y) batches with the training loaders' interface: len() and
    batches(epoch, start) of (x float32 (B, D) standardized on `device`, y int64 (B,) class indices).
    The order is the DataLoader's own (its sampler shuffles)."""

    def __init__(self, loader, preprocess, classes, device):
        import torch
        self.loader, self.device = loader, torch.device(device)
        self.preprocess = preprocess.to(self.device)
        self.classes = torch.as_tensor(classes, device=self.device)

    def __len__(self):
        return len(self.loader)

    def batches(self, epoch=0, start=0):
        import torch
        for i, (xb, yb) in enumerate(self.loader):
            if i < start:
                continue
            x = self.preprocess(xb.reshape(len(xb), -1).to(self.device, non_blocking=True))
            yield x, torch.searchsorted(self.classes, torch.as_tensor(yb).to(self.device))


def _scan_loader(loader):
    """One pass over a DataLoader of (x, y) -> (N, D, labels (N,) as given): shapes and values checked."""
    import torch
    n, d, labels = 0, None, []
    for i, batch in enumerate(loader):
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            raise ValueError("X: a DataLoader must yield (x, y) batches")
        xb, yb = batch
        xb, yb = torch.as_tensor(xb), torch.as_tensor(yb)
        width = xb[0].numel() if len(xb) else 0
        if d is None:
            d = width
        if width != d or width == 0:
            raise ValueError(f"X: batch {i} has {width} features per example, the first had {d}")
        if yb.shape != (len(xb),) or yb.is_floating_point():
            raise ValueError(f"X: batch {i} has labels of shape {tuple(yb.shape)} ({yb.dtype}) for {len(xb)} examples; "
                             f"expected (B,) integers")
        if not bool(torch.isfinite(xb).all()):
            raise ValueError(f"X: batch {i} holds NaN or infinite values")
        n += len(xb)
        labels.append(yb.cpu())
    if not n:
        raise ValueError("X: the DataLoader yields no examples")
    return n, d, torch.cat(labels).numpy()


def _flag(name):
    return "--" + name.replace("_", "-")


def _argument_error(message):
    """A train.py usage error, reworded for Python: flags become the argument names."""
    text = re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), message.replace("--optimizer", "solver"))
    return ValueError(text.replace("argument ", "", 1))


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
    out, seeded, when no X_val is given), refit (retrain the chosen value on train + validation),
    device ("auto": X's own device for a tensor, else CUDA when present), seed, logdir (None: no
    run folder is kept and no TensorBoard written; else a train.py run folder there), verbose.

    Fitted: coef_ (C, D) and intercept_ (C,) on the features as given (the standardization folded
    in), classes_ (C,), n_features_in_, n_iter_ (the kept member's L-BFGS iterations or SGD steps),
    path_ (one dict per member: its values, val_acc, objective, iterations, status), best_params_.
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

    # ------------------------------------------------------------------ configuration

    def _solver(self, in_memory):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver {self.solver!r}: expected one of {', '.join(SOLVERS)}")
        if self.solver != "auto":
            return self.solver
        if self.loss == "squared" and self.penalty == "l2" and self.class_weight is None and in_memory \
                and not _is_sequence(self.lr):
            return "exact"
        from .names import nonsmooth_parts
        smooth = not nonsmooth_parts(self.loss, self.squared_hinge, self.penalty)     # train.py's one rule
        return "lbfgs" if smooth and in_memory and not _is_sequence(self.lr) else "sgd"

    def _config(self, solver, n_val):
        """-> train.py's config dict for these arguments, through train.py's own parser, rules and
        defaults (a rule it refuses is a ValueError naming the argument)."""
        from .config import fill_defaults, parse_args, saved_config
        argv = ["--dataset", "features", "--optimizer", solver, "--loss", self.loss, "--penalty", self.penalty,
                "--seed", self.seed, "--val-size", n_val, "--quiet"]
        if self.loss == "svm":
            argv += ["--svm-form", self.svm_form, "--margin", self.margin] + (["--squared-hinge"] if self.squared_hinge
                                                                               else [])
        if self.penalty == "elasticnet":
            argv += ["--beta", self.beta]
        if self.class_weight is not None:
            argv += ["--class-weight", self.class_weight]
        sweep = []
        for name in ("reg", "lr"):
            value = getattr(self, name)
            if _is_sequence(value):
                if len(value) == 0:
                    raise ValueError(f"{name}: an empty sequence")
                sweep.append(f"{name}={','.join(repr(float(v)) for v in value)}")
            elif value is not None:
                argv += [_flag(name), value]
        if solver == "lbfgs":
            argv += ["--max-iter", self.max_iter, "--tol", self.tol, "--history", self.history]
        elif solver != "exact":
            argv += ["--batch-size", self.batch_size, "--momentum", self.momentum, "--schedule", self.schedule]
            if self.epochs is not None:
                argv += ["--epochs", self.epochs]
            if self.patience is not None:
                argv += ["--patience", self.patience]
        if sweep:
            argv += ["--sweep", *sweep]

        def fail(message):
            raise _argument_error(message)
        args = parse_args([str(a) for a in argv], error=fail)
        cfg = saved_config(fill_defaults(args))
        cfg["dataset"], cfg["data_dir"], cfg["quiet"] = "tensor", None, not self.verbose
        return cfg

    # ------------------------------------------------------------------ data

    def _inputs(self, X, y, name="X"):
        """X (N, D) tensor or array, y (N,) integers -> (X as a torch tensor or an _ArraySplit, y as
        a NumPy int array), checked."""
        import torch
        if isinstance(X, np.memmap):
            if X.ndim != 2:
                raise ValueError(f"{name} has shape {X.shape}; expected (N, D) features")
            if X.dtype not in (np.float16, np.float32, np.float64):
                raise ValueError(f"{name} holds {X.dtype}; expected floating-point features")
        else:
            if not isinstance(X, torch.Tensor):
                X = torch.as_tensor(np.asarray(X)) if not isinstance(X, np.ndarray) else torch.from_numpy(X)
            if X.dim() != 2:
                raise ValueError(f"{name} has shape {tuple(X.shape)}; expected (N, D) features")
            if not X.is_floating_point():
                X = X.float()
            X = X.detach()
        if X.shape[1] == 0:
            raise ValueError(f"{name} has 0 features per row")
        if y is None:
            return X, None
        if hasattr(y, "detach"):
            y = y.detach().cpu().numpy()
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y{name[1:]} has shape {y.shape}; expected (N,) labels")
        if len(y) != X.shape[0]:
            raise ValueError(f"y{name[1:]} has {len(y)} labels for {X.shape[0]} rows of {name}")
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
            raise ValueError(f"y{name[1:]} holds {y.dtype}; expected integer class labels")
        _check_finite(X, name)
        return X, y

    def _dataset(self, X, y, X_val, y_val):
        """-> (DataSet of Splits or streamed Rows, whether it lives in memory, the sorted labels)."""
        import torch
        from .data import DataSet, Split
        from .featurize import Rows
        X, y = self._inputs(X, y)
        classes, labels = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y holds one class only ({classes[0]!r}); a classifier needs at least 2")
        labels = torch.from_numpy(labels.astype(np.int64).reshape(-1))
        names = [str(c) for c in classes]
        n = X.shape[0]
        if X_val is None:
            f = self.validation_fraction
            if not (isinstance(f, (int, float)) and 0 < f < 1):
                raise ValueError(f"validation_fraction {f!r} must be between 0 and 1 (or give X_val, y_val)")
            n_val = max(1, int(round(f * n)))
            if n_val >= n:
                raise ValueError(f"validation_fraction {f!r} leaves no training rows of {n}")
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
            val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
        else:
            Xv, yv = self._inputs(X_val, y_val, "X_val")
            if Xv.shape[1] != X.shape[1]:
                raise ValueError(f"X_val has {Xv.shape[1]} features per row, X has {X.shape[1]}")
            unknown = np.setdiff1d(yv, classes)
            if len(unknown):
                raise ValueError(f"y_val holds labels not in y: {', '.join(map(repr, unknown[:5].tolist()))}")
            val_labels = torch.from_numpy(np.searchsorted(classes, yv).astype(np.int64))
        if isinstance(X, np.memmap):
            whole = _ArraySplit(X, labels)
            if X_val is None:
                train, val = Rows(whole, train_idx), Rows(whole, val_idx)
            else:
                train = Rows(whole, torch.arange(n))
                val = Rows(_ArraySplit(Xv, val_labels), torch.arange(len(val_labels))) if isinstance(Xv, np.memmap) \
                    else Split(Xv, val_labels)
            return DataSet(train, val, None, names, 32), False, classes
        if X_val is None:
            dev = X.device
            train = Split(X.index_select(0, train_idx.to(dev)), labels[train_idx])
            val = Split(X.index_select(0, val_idx.to(dev)), labels[val_idx])
        else:
            if isinstance(Xv, np.memmap):
                Xv = torch.from_numpy(np.asarray(Xv))
            train, val = Split(X, labels), Split(Xv, val_labels)
        return DataSet(train, val, None, names, 32), True, classes

    def _device(self, X):
        from .cli import resolve_device
        import torch
        if self.device == "auto" and isinstance(X, torch.Tensor) and X.device.type != "cpu":
            return X.device
        return resolve_device(self.device)

    # ------------------------------------------------------------------ fit

    def fit(self, X, y, X_val=None, y_val=None):
        """X (N, D) float features (a torch tensor on any device, a NumPy array, or a memory-mapped
        array, streamed), y (N,) integer labels of any values -> self. X_val, y_val: the validation
        split (else `validation_fraction` of X is carved out, seeded). X may also be a
        torch.utils.data.DataLoader of (x, y) batches (y=None; any x shape, flattened), trained with
        SGD in the loader's own order; it needs X_val, y_val (or X_val a DataLoader, y_val=None)."""
        import torch
        from .cli import UserError
        from .data import Preprocess
        from .errors import DataError
        from .features import FeatureError
        import torch.utils.data
        loader = isinstance(X, torch.utils.data.DataLoader)
        if not loader and (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        for name in ("reg", "lr"):
            values = getattr(self, name)
            for v in (values if _is_sequence(values) else [values]):
                if v is not None and (not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v)
                                      or v < 0 or (name == "lr" and v == 0)):
                    raise ValueError(f"{name} {v!r} must be a finite number {'> 0' if name == 'lr' else '>= 0'}")
        batches = None
        if loader:
            data, classes, fixed, batches = self._loader_dataset(X, y, X_val, y_val)
            in_memory = False
            if self.solver not in ("auto", "sgd"):
                raise ValueError(f"solver {self.solver!r}: a DataLoader trains with solver='sgd' (its batches are "
                                 f"minibatches); give tensors for the full-batch solvers")
        else:
            data, in_memory, classes = self._dataset(X, y, X_val, y_val)
            fixed = None if self.standardize else Preprocess(torch.zeros(_width(data.train)), None, "feature")
        device = self._device(X)
        solver = self._solver(in_memory)
        cfg = self._config(solver, len(data.val))
        if batches is not None:
            batches = _DataLoaderBatches(X, fixed, classes, device)
            if self.refit:
                raise ValueError("refit=True needs X in memory, not a DataLoader")
        try:
            saved, pre, members = self._train(cfg, device, data, fixed, batches)
            chosen = saved.header.config                  # the kept member's own configuration
            if self.refit and len(members) > 1:
                saved, pre, _ = self._train({**chosen, "sweep": None}, device, _merged(data), fixed)
        except (UserError, DataError, FeatureError) as e:
            raise ValueError(str(e)) from None
        self.classes_, self.path_ = classes, members
        self.best_params_ = {k: chosen[k] for k in ("reg", "lr") if k in chosen and (k == "reg" or solver not in ("lbfgs", "exact"))}
        kept = [m for m in members if all(chosen.get(k) == v for k, v in m["config"].items())]
        self._set_model(saved.weight.to(device), saved.bias.to(device), pre, saved.header.config)
        self.n_iter_ = kept[0]["iterations"] if kept else None
        return self

    def _loader_dataset(self, loader, y, X_val, y_val):
        """A DataLoader of (x, y) batches -> (DataSet, classes, its Preprocess, True): one pass for the
        labels, shapes and finiteness, one for the standardization; validation from X_val."""
        import torch
        from .data import DataSet, Preprocess, Split
        if y is not None:
            raise ValueError("y: a DataLoader yields its own labels; pass y=None")
        if X_val is None:
            raise ValueError("X_val: a DataLoader cannot be split; give X_val, y_val (tensors or a DataLoader with "
                             "y_val=None)")
        n, d, labels = _scan_loader(loader)
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError(f"the DataLoader's labels hold one class only ({classes[0]!r}); a classifier needs 2")
        mapped = torch.from_numpy(np.searchsorted(classes, labels).astype(np.int64))
        train = _LoaderSplit(loader, n, d, mapped)
        if isinstance(X_val, torch.utils.data.DataLoader):
            if y_val is not None:
                raise ValueError("y_val: a DataLoader yields its own labels; pass y_val=None")
            xs, ys = zip(*[(xb.reshape(len(xb), -1), torch.as_tensor(yb)) for xb, yb in X_val])
            X_val, y_val = torch.cat(xs), torch.cat(ys)
        elif y_val is None:
            raise ValueError("give both X_val and y_val")
        Xv, yv = self._inputs(X_val.reshape(len(X_val), -1) if hasattr(X_val, "reshape") else X_val, y_val, "X_val")
        if Xv.shape[1] != d:
            raise ValueError(f"X_val has {Xv.shape[1]} features per row, the DataLoader's batches {d}")
        unknown = np.setdiff1d(yv, classes)
        if len(unknown):
            raise ValueError(f"y_val holds labels not in the DataLoader's: {', '.join(map(repr, unknown[:5].tolist()))}")
        val = Split(torch.as_tensor(Xv), torch.from_numpy(np.searchsorted(classes, yv).astype(np.int64)))
        pre = Preprocess.fit_features(train.chunks()) if self.standardize else Preprocess(torch.zeros(d), None,
                                                                                           "feature")
        return DataSet(train, val, None, [str(c) for c in classes], 32), classes, pre, True

    def _train(self, cfg, device, data, preprocess, batches=None):
        """One run of the core (run.execute) into a run folder (logdir, else a temporary one) ->
        (the kept model's ModelFile, Preprocess, one dict per member)."""
        from .checkpoint import best_path, load_model
        from .rundir import claim_new, release, write_json
        from .run import execute
        logger = logging.getLogger("lintorch")
        level = logger.level
        if not self.verbose:
            logger.setLevel(logging.WARNING)
        tmp = None
        try:
            if self.logdir is None:
                tmp = tempfile.TemporaryDirectory(prefix="lintorch-probe-")
                folder, lock = tmp.name, None
            else:
                folder = os.fspath(self.logdir)
                lock, _ = claim_new(folder)
                cfg["logdir"] = folder
                write_json(os.path.join(folder, "config.json"), cfg)
            try:
                status, run = execute(cfg, device, folder, data=data, preprocess=preprocess,
                                      tensorboard=self.logdir is not None, train_loader=batches)
            finally:
                if lock is not None:
                    release(folder, lock)
            if status >= 128:
                raise KeyboardInterrupt
            members = [{"name": m.name, "config": dict(m.overrides), "val_acc": m.metrics["val_acc"],
                        "objective": m.metrics.get("objective"),
                        "iterations": m.metrics.get("iterations", len(m.history) * len(run.recipe.train_loader)),
                        "status": m.metrics["status"]} for m in run.members]
            if all(m["val_acc"] is None for m in members):
                raise ValueError(f"training diverged for every configuration ({run.members[0].note}): "
                                 f"lower lr or reg")
            saved = load_model(best_path(folder))          # the checkpoint owner reads back the kept model
            return saved, run.recipe.preprocess, members
        finally:
            logger.setLevel(level)
            if tmp is not None:
                tmp.cleanup()

    def _set_model(self, W, b, preprocess, cfg):
        self._W, self._b, self._preprocess, self._cfg = W, b, preprocess.to(W.device), cfg
        self.n_features_in_ = W.shape[1]
        pre = self._preprocess
        scale, shift = pre.scale.double(), pre.neg_shift.double()       # x' = x * scale + shift
        Wd = W.double()
        self.coef_ = (Wd * scale).float()
        self.intercept_ = (b.double() + Wd @ shift).float()

    # ------------------------------------------------------------------ predictions

    def _check_fitted(self):
        if not hasattr(self, "_W"):
            raise NotFittedError("this LinearProbe is not fitted yet: call fit(X, y) first")

    def decision_function(self, X):
        """X (N, D) -> scores (N, C) as a torch tensor on the model's device."""
        import torch
        self._check_fitted()
        X, _ = self._inputs(X, None)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features per row; this probe was fitted on {self.n_features_in_}")
        dev = self._W.device
        out = []
        with torch.inference_mode():
            for i in range(0, X.shape[0], EVAL_ROWS):
                xb = X[i:i + EVAL_ROWS]
                xb = torch.from_numpy(np.array(xb)) if isinstance(xb, np.ndarray) else xb   # a copy: memmaps are read-only
                out.append(torch.addmm(self._b, self._preprocess(xb.to(dev)), self._W.t()))
        return torch.cat(out) if out else torch.empty(0, len(self.classes_), device=dev)

    def predict(self, X):
        """X (N, D) -> (N,) labels, as classes_ holds them (a NumPy array)."""
        scores = self.decision_function(X)
        return self.classes_[scores.argmax(1).cpu().numpy()]

    def predict_proba(self, X):
        """X (N, D) -> (N, C) softmax probabilities (loss="softmax" only) as a NumPy array."""
        self._check_fitted()
        from .names import PROBABILISTIC
        if self._cfg["loss"] not in PROBABILISTIC:
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
        from .checkpoint import Header, ModelFile, model_dict, save
        self._check_fitted()
        cfg = {**self._cfg, "probe_classes": self.classes_.tolist()}
        h = Header([str(c) for c in self.classes_], cfg["image_size"], self.n_features_in_, cfg["loss"],
                   self._preprocess.state_dict(), cfg, {"name": "tensor"})
        save(model_dict(ModelFile(h, self._W.cpu(), self._b.cpu(), 1)), os.fspath(path))


def load(path, device="cpu"):
    """A lintorch checkpoint (a probe's save(), or a train.py run folder / checkpoint.pt) -> a
    fitted LinearProbe on `device`."""
    from .checkpoint import best_path, load_model
    from .data import Preprocess
    saved = load_model(best_path(os.fspath(path)))
    cfg = saved.header.config
    params = {k: cfg[k] for k in ("loss", "svm_form", "squared_hinge", "margin", "penalty", "beta", "reg", "seed")
              if k in cfg}
    probe = LinearProbe(**params)
    labels = cfg.get("probe_classes")
    probe.classes_ = np.array(labels if labels is not None else saved.header.classes)
    probe.path_, probe.n_iter_ = [], None
    probe._set_model(saved.weight.to(device), saved.bias.to(device),
                     Preprocess.from_state_dict(saved.header.preprocess), cfg)
    return probe


# --------------------------------------------------------------------------- helpers

def _is_sequence(v):
    return isinstance(v, (list, tuple, np.ndarray)) or (hasattr(v, "dim") and v.dim() == 1)


def _width(split):
    return split.d if hasattr(split, "d") else split.x.shape[1]


def _check_finite(X, name):
    import torch
    if isinstance(X, np.ndarray):
        for i in range(0, X.shape[0], EVAL_ROWS):
            if not np.isfinite(X[i:i + EVAL_ROWS]).all():
                raise ValueError(f"{name} holds NaN or infinite values (row {i + _first_bad(X[i:i + EVAL_ROWS])})")
        return
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name} holds NaN or infinite values (row {_first_bad(X)})")


def _first_bad(x):
    import torch
    ok = torch.isfinite(torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x).all(1)
    return int((~ok).nonzero()[0, 0])


def _merged(data):
    """train + validation as one training split (refit), validation kept for the run's bookkeeping."""
    import torch
    from .data import DataSet, Split
    tr, va = data.train, data.val
    if not hasattr(tr, "x"):
        raise ValueError("refit=True needs X in memory (not a memory-mapped array)")
    x = torch.cat([tr.x, va.x.to(tr.x.device)])
    return DataSet(Split(x, torch.cat([tr.y, va.y])), va, None, data.classes, data.image_size)
