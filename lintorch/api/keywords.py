"""LinearProbe's keywords: which solver or loss reads each (a keyword the chosen one would ignore
is refused), the defaults that make a good probe, and the core's messages and devices in the
Python API's words (a ValueError/TypeError naming the keyword, never a command-line flag).
"""
import re

import numpy as np

# The settings only some solvers read (the others would ignore them: refused, check_settings).
SOLVER_SETTINGS = {"sgd": ("lr", "epochs", "batch_size", "momentum", "schedule", "patience"),
                   "gd": ("lr", "epochs", "schedule", "patience"),
                   "lbfgs": ("max_iter", "tol", "history")}
# reg=None with a full-batch solver: this path, the best value on validation, refit on all of X.
# CIFAR-10 pixels, softmax: the best of a 16-value path 1e-6..1 is reg 0.063 on 20,000 rows (40.16% on
# 5,000 held out), about 1 on 2,667 rows (the optimum grows as N shrinks: hence the top value 10).
REG_PATH = tuple(10.0 ** e for e in range(-6, 2))
VALIDATION_FRACTION = 0.2        # carved from X, seeded, where a choice needs validation and no X_val is given


def is_sequence(v):
    """A sequence of values (a path), not one value: a list, tuple, array or 1-D tensor."""
    return isinstance(v, (list, tuple, np.ndarray)) or (hasattr(v, "dim") and v.dim() == 1)


def given(params, defaults, names):
    """The names among `names` whose value in params differs from defaults (set by the caller)."""
    return [k for k in names if params[k] is not defaults[k]
            and (is_sequence(params[k]) or params[k] != defaults[k])]


def check_settings(params, defaults, solver):
    """ValueError naming each keyword the chosen solver or the loss would ignore (train.py refuses
    the flags it would ignore; so does the API): lr/epochs/... without SGD, max_iter/tol/history
    without L-BFGS, the SVM's settings with another loss, beta without the elastic net."""
    for k in given(params, defaults, [name for names in SOLVER_SETTINGS.values() for name in names]):
        owners = [s for s, names in SOLVER_SETTINGS.items() if k in names]
        if solver not in owners:
            chosen = f"solver={solver!r}" if params["solver"] != "auto" else f"solver='auto' (here {solver!r})"
            raise ValueError(f"{k}={params[k]!r} applies to solver={' or '.join(map(repr, owners))}; {chosen} would "
                             f"ignore it: leave {k} out, or choose that solver")
    from ..objective import LOSSES
    own = [name for loss in LOSSES.values() for name in loss.settings if name in params]
    for k in given(params, defaults, own):
        if params["loss"] in LOSSES and k not in LOSSES[params["loss"]].settings:
            owners = [name for name, loss in LOSSES.items() if k in loss.settings]
            raise ValueError(f"{k}={params[k]!r} applies to loss={' or '.join(map(repr, owners))}; loss="
                             f"{params['loss']!r} would ignore it")
    if given(params, defaults, ["beta"]) and params["penalty"] != "elasticnet":
        raise ValueError(f"beta={params['beta']!r} applies to penalty='elasticnet'; penalty={params['penalty']!r} "
                         f"would ignore it")


def api_device(setting):
    """LinearProbe's / load's device argument ("auto", "cpu", "cuda", "cuda:N" or a torch.device)
    -> a usable torch.device (cli.resolve_device); ValueError/TypeError naming `device` otherwise."""
    import torch
    from ..cli import resolve_device
    from ..errors import UserError
    name = str(setting) if isinstance(setting, torch.device) else setting
    if not isinstance(name, str):
        raise TypeError(f"device={setting!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device")
    try:
        return resolve_device(name)
    except UserError:
        if name.startswith("cuda") and not torch.cuda.is_available():
            why = "CUDA is not available here (torch.cuda.is_available() is False); use device='cpu' or 'auto'"
        elif name.startswith("cuda"):
            why = f"there are {torch.cuda.device_count()} CUDA device(s) here"
        else:
            why = "lintorch runs on 'auto', 'cpu', 'cuda' or 'cuda:N'"
        raise ValueError(f"device={setting!r}: {why}") from None


def choose_device(setting, X):
    """"auto" and X a tensor on an accelerator: X's device; else cli.resolve_device(setting)."""
    import torch
    if setting == "auto" and isinstance(X, torch.Tensor) and X.device.type != "cpu":
        return X.device
    return api_device(setting)


# train.py's words in a core message -> the API's: flags LinearProbe has no keyword for, then the rest
API_WORDS = ((r"--precondition gram: (.*?): the inputs are too large or not finite; check them, or pass "
              r"--precondition none", r"X: \1: its values are too large (or not finite) for the L-BFGS "
              r"preconditioner; rescale X"),
             (r"--precondition gram", "the L-BFGS Gram preconditioner"),
             (r"--val-size (\S+)", r"the validation split's \1 rows"),
             (r"--optimizer (\w+)", r"solver='\1'"), (r"--optimizer", "solver"),
             (r"--(loss|penalty) (softmax|svm|squared|l2|l1|elasticnet)\b", r"\1='\2'"),
             (r"--class-weight (balanced)", r"class_weight='\1'"),
             (r"--squared-hinge", "squared_hinge=True"))


def api_message(message):
    """A core or train.py message in the Python API's words: each --flag-name becomes the keyword
    flag_name (--optimizer: solver), and a flag LinearProbe has no keyword for is described."""
    for pattern, words in API_WORDS:
        message = re.sub(pattern, words, message)
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), message)
