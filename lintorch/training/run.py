"""A run being fitted (Run): its config, recipe, K members, stop flag, reporter and the ending
every driver shares (the kept member).

Shapes: D features, C classes, K members (a single run is a sweep of one).
"""
import time

from . import distributed
from ..config import Resolved, member_name
from .members import Member, best_index, number_members
from .report import Reporter


class Run:
    """A run being fitted: its config, device, recipe, members, stop flag, reporter and group
    (distributed.Local outside torchrun). Its trip: recipe.build -> Trainer (epoch.train_one_epoch
    -> Objective.loss_and_grad -> functional) or solvers (lbfgs, exact, random search) -> each
    member_done -> finish (the kept member). It writes nothing: report (training.report) is told."""

    def __init__(self, cfg, device, recipe, stop, report=None, resume_members=None, resolved=None, names=None,
                 train_accuracy=True):
        self.cfg, self.device, self.recipe, self.stop = cfg, device, recipe, stop
        self.train_accuracy = train_accuracy   # False: the full-batch solvers skip the pass that measures it
        self.report = report or Reporter()
        self.resolved = (resolved or Resolved()).replace(lr=recipe.base_lr, val_size=len(recipe.data.val))
        self.group = distributed.Local()     # distributed hook: fit sets the group
        self.started = time.perf_counter()   # fit sets it to its own start: the total time covers data and features
        self.best = None           # after finish: (member index, weight (C, D), bias (C,)) of the kept model
        self.kept = None           # after finish: each member's kept (weight (C, D), bias (C,)), where held here
        names = names or ["run" if not cfg.sweep else member_name(c) for c in recipe.configs]
        saved = resume_members or [{"name": n, "config": c} for n, c in zip(names, recipe.configs)]
        self.members = [Member(s["name"], s["config"], cfg, self.resolved, s) for s in saved]
        number_members(self.members, cfg, recipe)

    def member_done(self, k, weight, bias, end_status, step, seconds, images, extra=None):
        """Member k has finished with its kept weight (C, D) and bias (C,): its metrics (test
        accuracy included), told to the reporter -> the metrics."""
        metrics, test = self.members[k].finish(self.recipe, weight, bias, end_status, seconds, images, self.device,
                                                extra)
        self.report.on_member_done(self, k, metrics, weight, bias, step, test)
        return metrics

    def finish(self, results, status, weights=None, names=None):
        """The one ending of every driver (Trainer, solvers.fit_lbfgs, solvers.fit_search) once
        each member has finished: the best member (members.best_index), told to the reporter;
        -> exit status. results: the members' metrics; weights: each member's kept (weight, bias),
        or None (config-parallel: on other ranks); names: all members' names where this process
        does not hold them all. self.best holds the kept model."""
        names = names or [m.name for m in self.members]
        k = best_index([r["val_acc"] for r in results])
        self.best = None if k is None else (k, *(weights[k] if weights else (None, None)))
        self.kept = weights
        self.report.on_path_done(self, results, status, names, k)
        return self.exit_status(status, results)

    def exit_status(self, status, results):
        """0 when a member kept a model, 1 when every member diverged, 128 + signal when interrupted."""
        if status == "interrupted":
            return 128 + (self.stop.signum or 15)
        return 0 if any(r["val_acc"] is not None and r["status"] != "diverged" for r in results) else 1
