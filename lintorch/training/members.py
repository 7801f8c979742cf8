"""A member: one configuration being trained (a single run is a sweep of one). It owns its
TensorBoard run, its folder, its best validation accuracy and epoch, its history, its status
and its final report (test accuracy, pictures, hparams, metrics.json, checkpoint.pt).

Shapes: D features, C classes; a member's weights are one slice (C, D) of the run's (K, C, D).
"""
import logging
import os
import time

from ..model import LinearClassifier
from ..output.checkpoint import BEST, ModelFile, model_dict, save
from ..output.hparams import member_hparams, summaries, trial_id
from ..output.monitor import Monitor, NullMonitor
from ..output.rundir import write_json, write_png
from ..output.visualize import confusion_image, template_grid
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
    """name: 'run' for a single run, else the configuration ('lr=0.03,reg=0'); folder: the run
    folder (single run) or its sub-folder (sweep), or None: a run in memory, which writes nothing."""

    def __init__(self, name, overrides, folder, run_config, resolved, purge_step=None, saved=None, writes=True,
                 tensorboard=True):
        self.name, self.overrides, self.folder = name, dict(overrides), folder
        self.config = run_config.replace(**self.overrides)       # TrainConfig
        self.resolved = resolved.replace(lr=self.overrides.get("lr", resolved.lr))
        writes = writes and folder is not None
        self.reports = writes        # pictures, hparams and metrics.json: only where they are written
        if writes:
            os.makedirs(folder, exist_ok=True)
        # distributed hook: a data-parallel rank > 0 writes no TensorBoard (writes=False)
        self.monitor = Monitor(folder, purge_step=purge_step) if writes and tensorboard else NullMonitor()
        saved = saved or {}
        self.best_val = saved.get("best_val")
        self.best_epoch = saved.get("best_epoch")
        self.status = saved.get("status", "training")
        self.history = list(saved.get("history", []))
        self.patience_left = saved.get("patience_left")
        self.note = saved.get("note")
        self.metrics = None
        self.started = time.time()
        if purge_step is None:
            self.monitor.config(self.saved_config())

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

    def model_file(self, header, weight, bias, epoch):
        h = type(header)(**{**vars(header), "config": self.saved_config()})
        return ModelFile(h, weight, bias, epoch, self.best_val, self.best_epoch, self.history)

    def save_best(self, header, weight, bias, epoch, save=save, path=None):
        """This member's kept model as checkpoint.pt in its folder (or at path), through save
        (checkpoint.save, or a background Saver's); nothing for a run in memory."""
        if self.folder is not None:
            save(model_dict(self.model_file(header, weight, bias, epoch)), path or os.path.join(self.folder, BEST))

    def hparam_summaries(self, recipe, status):
        """The HPARAMS tab's row: this member's distinguishing settings under its own trial ID."""
        single = not self.config.sweep
        resolved = {"lr": self.resolved.lr, "val_size": self.resolved.val_size}     # what it trained with
        values = member_hparams({**self.config.saved(), **resolved}, tuple(self.overrides), recipe.extractor,
                                recipe.in_features)
        folder = self.folder or "."          # a run in memory (LinearProbe without a logdir) writes no events anyway
        trial = trial_id(self.name, folder if single else os.path.dirname(folder), single,
                         getattr(self, "index", None), getattr(self, "count", None))
        return summaries(values, tuple(self.overrides), trial, self.started, status)

    def finish(self, recipe, weight, bias, end_status, step, seconds, images, device, extra=None):
        """The member's report: its kept model on the test split (else val), the confusion matrix
        and templates, hparams, metrics.json. weight (C, D), bias (C,): its best weights."""
        status = end_status if self.status == "training" else self.status
        if status == "training":
            status = "completed"
        last_train = self.history[-1]["train_acc"] if self.history else None
        metrics = {"status": status, "train_acc": last_train, "val_acc": self.best_val,
                   "best_epoch": self.best_epoch, "epochs": len(self.history), "test_acc": None,
                   "seconds": seconds, "images_per_second": images / max(seconds, 1e-9), "device": str(device),
                   "history": self.history, "config": self.overrides or None, "note": self.note, **(extra or {})}
        if self.best_val is not None:
            model = LinearClassifier.from_weights(weight, bias)
            C = len(recipe.classes)
            test = evaluate(model, recipe.test_loader, num_classes=C) if recipe.test_loader else None
            metrics["test_acc"] = None if test is None else float(test["acc"])
        if self.best_val is not None and self.reports:
            shown = test or evaluate(model, recipe.val_loader, num_classes=C)
            split = "test" if test else "val"
            self.monitor.image(f"confusion_matrix/{split}", confusion_image(shown["confusion"], recipe.classes), step)
            if recipe.image_shape is not None:   # weights are pictures over raw pixels
                write_png(template_grid(weight, recipe.classes, recipe.image_shape),
                          os.path.join(self.folder, "templates.png"))
            final = {f"hparam/{k}": metrics[k] for k in ("val_acc", "train_acc", "test_acc", "best_epoch")
                     if metrics[k] is not None}
            self.monitor.hparams(self.hparam_summaries(recipe, status), final, step)
        if self.folder is not None:
            write_json(os.path.join(self.folder, "metrics.json"), metrics)
        self.monitor.close()
        self.metrics = metrics
        return metrics


def number_members(members, cfg, recipe):
    """Each member's place in the whole sweep (config-parallel holds a share): its HPARAMS trial ID."""
    sweep = list(cfg.sweep or [{}])
    first = sweep.index(recipe.configs[0]) if recipe.configs and recipe.configs[0] in sweep else 0
    for k, m in enumerate(members):
        m.index, m.count = first + k, len(sweep)


def show_centroids(extractor, folder, members):
    """Each k-means part's centroids in folder/centroids.png and TensorBoard, once per run (a
    sweep's at the run folder, not once per member)."""
    for part in getattr(extractor, "parts", [extractor]):
        if getattr(part, "NAME", "") == "kmeans" and "centroids" in getattr(part, "state", {}):
            from ..features.kmeans import centroid_picture
            from ..output.monitor import Monitor
            from ..output.rundir import write_png
            grid = centroid_picture(part.state, part.settings.get("rf", 6))
            write_png(grid, os.path.join(folder, "centroids.png"))
            if len(members) == 1:              # a single run's events are at the run folder
                members[0].monitor.image("centroids", grid, 0)
                continue
            mon = Monitor(folder)
            mon.image("centroids", grid, 0)
            mon.close()
