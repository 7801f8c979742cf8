"""A member: one configuration being trained (a single run is a sweep of one): its best
validation accuracy and epoch, its history, its status and its outcome; and the members' one
ranking (the kept member: best_index).

Shapes: D features, C classes; a member's weights are one slice (C, D) of the run's (K, C, D).
"""
import logging
import time

from ..model import LinearClassifier
from .epoch import evaluate

log = logging.getLogger("lintorch")


def pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def duration(seconds):
    """Seconds for people: '4.2 s', '3 min 5 s', '1 h 2 min'."""
    s = round(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def ranking(val_accs):
    """The one order of members, best first: higher validation accuracy first, the earlier member
    on a tie, members without one (diverged before validating) last."""
    return sorted(range(len(val_accs)), key=lambda k: (val_accs[k] is None, -(val_accs[k] or 0.0), k))


def best_index(val_accs):
    """The best member by ranking(), or None when no member has a validation accuracy."""
    order = ranking(val_accs)
    return order[0] if order and val_accs[order[0]] is not None else None


class Member:
    """One configuration's bookkeeping: name ('run' for a single run, else the configuration,
    'lr=0.03,reg=0'), overrides of the run's config, best validation accuracy and epoch, patience,
    history, status and note. It writes nothing: the run's Reporter does (training.report)."""

    def __init__(self, name, overrides, run_config, resolved, saved=None):
        self.name, self.overrides = name, dict(overrides)
        self.config = run_config.replace(**self.overrides)       # TrainConfig
        self.resolved = resolved.replace(lr=self.overrides.get("lr", resolved.lr))
        saved = saved or {}
        self.best_val = saved.get("best_val")
        self.best_epoch = saved.get("best_epoch")
        self.status = saved.get("status", "training")
        self.history = list(saved.get("history", []))
        self.patience_left = saved.get("patience_left")
        self.note = saved.get("note")
        self.metrics = None
        self.started = time.time()

    def saved_config(self):
        """This member's settings and what its run resolved, as plain types (config.json's form)."""
        return self.config.saved(self.resolved)

    def state(self):
        """What last.pt keeps of this member."""
        return {"name": self.name, "config": self.overrides, "best_val": self.best_val,
                "best_epoch": self.best_epoch, "status": self.status, "history": self.history,
                "patience_left": self.patience_left, "note": self.note}

    @property
    def active(self):
        return self.status == "training"

    def diverged(self, epoch, step, lr):
        self.status = "diverged"
        self.note = f"loss became non-finite at epoch {epoch}, step {step} (lr {lr:.3g})"

    def end_epoch(self, epoch, val_acc, patience):
        """Record epoch's validation accuracy; -> True when it is this member's best so far.
        With patience, a member that has not improved for that many epochs stops."""
        improved = self.best_val is None or val_acc > self.best_val
        if improved:
            self.best_val, self.best_epoch, self.patience_left = val_acc, epoch, patience
        elif patience is not None:
            self.patience_left -= 1
            if self.patience_left <= 0:
                self.status = "stopped"
                self.note = f"no better validation accuracy for {patience} epochs (patience)"
        return improved

    def finish(self, recipe, weight, bias, end_status, seconds, images, device, extra=None):
        """The member's outcome: its kept model, weight (C, D) and bias (C,), on the test split
        -> (metrics, the test evaluation or None)."""
        status = end_status if self.status == "training" else self.status
        if status == "training":
            status = "completed"
        last_train = self.history[-1]["train_acc"] if self.history else None
        metrics = {"status": status, "train_acc": last_train, "val_acc": self.best_val,
                   "best_epoch": self.best_epoch, "epochs": len(self.history), "test_acc": None,
                   "seconds": seconds, "images_per_second": images / max(seconds, 1e-9), "device": str(device),
                   "history": self.history, "config": self.overrides or None, "note": self.note, **(extra or {})}
        test = None
        if self.best_val is not None and recipe.test_loader:
            model = LinearClassifier.from_weights(weight, bias)
            test = evaluate(model, recipe.test_loader, num_classes=len(recipe.classes))
            metrics["test_acc"] = float(test["acc"])
        self.metrics = metrics
        return metrics, test


def number_members(members, cfg, recipe):
    """Each member's place in the whole sweep (config-parallel holds a share): its HPARAMS trial ID."""
    sweep = list(cfg.sweep or [{}])
    first = sweep.index(recipe.configs[0]) if recipe.configs and recipe.configs[0] in sweep else 0
    for k, m in enumerate(members):
        m.index, m.count = first + k, len(sweep)
