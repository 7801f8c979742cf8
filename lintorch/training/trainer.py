"""Training a run's K members together: minibatch SGD or full-batch GD in one loop (a single run
is K = 1, no branch for it). Distributed training is the run's group (distributed.Local, the null
object, or data- and config-parallel); the run's ending is Run.finish, shared with solvers.py.

Shapes: N images, D features, C classes, K members; weights (K, C, D), per-member values (K,).
"""
import logging
import math

import torch
from tqdm import tqdm

from ..cli import loss_text
from ..objective import Objective
from ..optim.sgd import SGD, lr_factor
from ..output.monitor import update_ratio
from .devices import moved
from .epoch import EpochStats, check_interval, train_one_epoch
from .members import best_index, pct

log = logging.getLogger("lintorch")
epoch_log = logging.getLogger("lintorch.epoch")   # per-epoch lines: --quiet drops them


def divergence_hint(cfg, lr):
    """Which flag most likely made the loss non-finite. If the penalty's own step overshoots even
    at the tuned learning rate, --reg (or elastic net's --beta) is to blame whatever --lr is: the
    L2 part flips and grows W when 2 * lr * reg (* beta) > 1, the L1 part moves every weight by
    lr * reg, far past the weights' scale when > 1. Then a huge SVM margin; else the lr."""
    obj = Objective.from_config(cfg)
    lr0, reg, beta, penalty = obj.data_term.tuned["lr"], obj.reg, obj.beta, obj.penalty
    if penalty != "l1" and 2 * lr0 * reg > 1 or penalty != "l2" and lr0 * reg > 1:
        return f"--reg {reg:g} is too large (the penalty's step overshoots even at lr {lr0:g})"
    if penalty == "elasticnet" and 2 * lr0 * reg * beta > 1:
        return f"--beta {beta:g} is too large (2 * lr * reg * beta > 1 makes every step overshoot)"
    if obj.huge_margin:
        return f"--margin {obj.margin:g} is far above the scores' scale"
    return "lower --lr"


def mark_diverged(members, stats, lr):
    """Members whose loss became non-finite in this epoch: recorded, and one error line each."""
    for k, epoch, step, factor in stats.extra.get("diverged", []):
        m = members[k]
        rate = float(lr[k]) * factor
        m.diverged(epoch, step, rate)
        log.error(f"error: {'' if len(members) == 1 else m.name + ': '}loss became non-finite at "
                  f"epoch {epoch}, step {step} (lr {rate:.3g}): {divergence_hint(m.config, rate)}; "
                  + ("checkpoint.pt keeps the best model so far" if m.best_val is not None else
                     "no model was kept (it diverged before its first validation)"))


def warn_growth(members, m, first, loss):
    """A loss 100x its step-0 value: a note on the member and one warning (once)."""
    if first is not None and math.isfinite(loss) and loss > 100 * max(first, 1e-3) and not m.note:
        m.note = f"the loss grew from {first:.4g} at step 0 to {loss:.4g}: lower --lr"
        log.warning(f"warning: {'' if len(members) == 1 else m.name + ': '}{m.note}")


def log_epoch(cfg, members, epoch, data_loss, reg_loss, train_acc, val_acc, seconds, ips):
    head = f"epoch {epoch + 1}/{cfg.epochs}"
    if len(members) == 1:
        epoch_log.info(f"{head}  loss {loss_text(data_loss[0] + reg_loss[0])} (data {loss_text(data_loss[0])} + reg "
                       f"{loss_text(reg_loss[0])})  train acc {pct(float(train_acc[0]))}  val acc "
                       f"{pct(float(val_acc[0]))}  {seconds:.2f}s  {ips:,.0f} img/s")
    else:
        k = best_index([m.best_val for m in members])
        best = "n/a" if k is None else f"{pct(members[k].best_val)} ({members[k].name})"
        active = sum(m.active for m in members)
        epoch_log.info(f"{head}  val acc best {best}  {active}/{len(members)} training  {seconds:.2f}s  "
                       f"{ips:,.0f} img/s")


def sanity_check(run, loss):
    """The lecture's check: tiny weights give loss ~ log C (softmax), ~ (C - 1) * margin (SVM), ~ C
    (squared); a warning when far off, and each member's step-0 loss to TensorBoard -> the first
    member's initial loss."""
    recipe = run.recipe
    expected = recipe.objective.expected_initial_loss(len(recipe.classes))
    first = run.group.evaluate(recipe.model, recipe.val_loader, recipe.objective)["loss"]       # (K,)
    initial = float(first[0])
    log.info(f"step 0: data loss {loss_text(initial)} (expected about {expected:.4g} for {loss} with small W)")
    if not math.isfinite(initial) or abs(initial - expected) > 0.1 * expected + 0.05:
        flag = "--margin" if recipe.objective.huge_margin else "the data"
        log.warning(f"warning: the initial loss {initial:.4g} is far from {expected:.4g}: check "
                    f"{flag} and the initialization")
    for k in range(len(run.members)):
        run.report.on_scalars(run, k, {"loss/data": float(first[k])}, 0)
    return initial


class Trainer:
    """The gradient loop over a Recipe's K members (Member objects, one per configuration)."""

    def __init__(self, run, resume=None):
        self.run, self.r, self.cfg, self.members, self.group = run, run.recipe, run.cfg, run.members, run.group
        model = self.r.model
        self.opt = SGD(model.weight.data, model.bias.data, self.r.lr, self.cfg.momentum)
        self.steps_per_epoch = len(self.r.train_loader)
        self.total_steps = self.cfg.epochs * self.steps_per_epoch
        self.seconds, self.images, self.initial_loss = 0.0, 0, None
        if resume is None:
            self.best_w, self.best_b = model.weight.detach().clone(), model.bias.detach().clone()
            self.epoch, self.step, self.partial = 0, 0, None
        else:
            dev = run.device
            resume = moved(resume, dev)    # all of the checkpoint's state (loaded on the CPU) on the run's device
            with torch.no_grad():
                model.weight.copy_(resume.weight)
                model.bias.copy_(resume.bias)
            self.opt.load_state_dict(resume.momentum)
            self.best_w, self.best_b = resume.best_weight, resume.best_bias
            self.epoch, self.step, self.partial = resume.epoch, resume.step, resume.partial
        self.opt.freeze(torch.tensor([not m.active for m in self.members]))

    def lr_at(self, step):
        return lr_factor(self.cfg.schedule, step / self.total_steps)

    def train(self):
        """-> exit status: 0 done, 1 every member diverged, 128 + signal when interrupted. On
        any exception the checkpoints already queued are written before it propagates."""
        try:
            return self._train()
        except BaseException:
            self.run.report.drain()
            raise

    def _train(self):
        if (self.epoch, self.step) == (0, 0):
            self.initial_loss = sanity_check(self.run, self.cfg.loss)
        status = "completed"
        for epoch in range(self.epoch, self.cfg.epochs):
            stats, next_step = self.group.end_epoch(*self.one_epoch(epoch), self)
            self.seconds, self.images = self.seconds + stats.seconds, self.images + stats.seen
            mark_diverged(self.members, stats, self.r.lr)
            if next_step is not None:
                self.run.report.on_progress(self, epoch, next_step, stats, interrupted=True)
                status = "interrupted"
                break
            if any(m.active for m in self.members):
                self.end_epoch(epoch, stats)
            self.run.report.on_progress(self, epoch + 1, 0, None)
            if not self.group.any_active(any(m.active for m in self.members)):
                break
        return self.finish(status)

    def one_epoch(self, epoch):
        first = self.step if epoch == self.epoch else 0
        partial, self.partial = self.partial, None
        n = len(self.r.data.train)  # the bar counts images, so its rate is the throughput
        bar = None if self.cfg.quiet else tqdm(
            total=n, initial=min(first * self.cfg.batch_size, n), leave=False, unit="img", unit_scale=True,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}")
        partial, should_stop = self.group.begin_epoch(partial, self.run.stop, first)   # stop where all agree
        try:
            return train_one_epoch(self.r.model, self.r.train_loader, self.opt, self.r.objective, epoch,
                                   lr_at=self.lr_at, start=first,
                                   check_every=check_interval(self.run.device, self.cfg.log_every),
                                   log_every=self.cfg.log_every, on_log=self.on_log,
                                   should_stop=should_stop, progress=bar,
                                   stats=EpochStats(**partial) if partial else None)
        finally:
            if bar is not None:
                bar.close()

    def on_log(self, step, stats, extra):
        W = self.r.model.weight.detach()
        ratio, wn, gn, data, reg = torch.stack([t.double() for t in (       # (5, K): one copy to the host, one sync
            update_ratio(extra["before"], W), torch.linalg.vector_norm(W, dim=(-2, -1)),
            torch.linalg.vector_norm(extra["grad"], dim=(-2, -1)), extra["data"], extra["reg"])]).cpu()
        for k, m in enumerate(self.members):
            if m.active:
                self.run.report.on_scalars(self.run, k, {
                    "loss/data": data[k], "loss/reg": reg[k], "loss/total": data[k] + reg[k],
                    "lr": float(self.r.lr[k]) * extra["factor"], "norm/weight": wn[k], "norm/grad": gn[k],
                    "update_ratio": ratio[k]}, step)

    def end_epoch(self, epoch, stats):
        """Validate, update each member's best, log; the reporter hears each member's numbers and new best."""
        gstep = (epoch + 1) * self.steps_per_epoch
        data_loss, reg_loss, train_acc = stats.means()                           # (K,) each
        val = self.group.evaluate(self.r.model, self.r.val_loader, self.r.objective)
        W, b = self.r.model.weight.detach(), self.r.model.bias.detach()
        ips = stats.seen / max(stats.seconds, 1e-9)
        grad = stats.extra.get("grad")
        report = self.run.report
        for k, m in enumerate(self.members):
            if not m.active:
                continue
            loss = float(data_loss[k] + reg_loss[k])
            m.history.append({"epoch": epoch + 1, "train_loss": loss, "train_acc": float(train_acc[k]),
                              "val_acc": float(val["acc"][k]), "seconds": stats.seconds})
            improved = m.end_epoch(epoch + 1, float(val["acc"][k]), self.cfg.patience)
            report.on_scalars(self.run, k, {"acc/train": train_acc[k], "acc/val": val["acc"][k],
                                            "acc/val_best": m.best_val, "loss/val": val["loss"][k],
                                            "time/epoch_seconds": stats.seconds, "time/images_per_second": ips}, gstep)
            # the same on an epoch axis: E points a user reads against the epoch the log line names
            report.on_scalars(self.run, k, {"epoch/train_acc": train_acc[k], "epoch/val_acc": val["acc"][k],
                                            "epoch/val_best": m.best_val, "epoch/train_loss": loss}, epoch + 1)
            report.on_epoch(self.run, k, epoch, gstep, W[k], None if grad is None else grad[k])
            if improved:
                self.best_w[k], self.best_b[k] = W[k], b[k]
                report.on_best(self.run, k, W[k], b[k], epoch + 1)
            if not m.active:
                self.opt.freeze(torch.arange(len(self.members)) == k)
            warn_growth(self.members, m, self.initial_loss, loss)
        k = best_index([m.best_val for m in self.members])      # a sweep's checkpoint.pt as it goes
        if len(self.members) > 1 and self.group.sweep_checkpoint and k is not None \
                and self.members[k].best_epoch == epoch + 1:
            report.on_best(self.run, k, self.best_w[k], self.best_b[k], epoch + 1, sweep=True)
        log_epoch(self.cfg, self.members, epoch, data_loss, reg_loss, train_acc, val["acc"], stats.seconds, ips)

    def finish(self, status):
        """Each member's outcome, then the run's one ending (Run.finish, via the group); -> exit status."""
        self.run.report.flush()
        step = max(max((len(m.history) for m in self.members), default=0), 1) * self.steps_per_epoch
        results = None
        if self.group.writes_run:     # data-parallel ranks > 0 report nothing
            results = [self.run.member_done(k, self.best_w[k], self.best_b[k], status, step, self.seconds, self.images)
                       for k in range(len(self.members))]
            self.run.report.flush()
        return self.group.finish(self.run, results, status, list(zip(self.best_w, self.best_b)))
