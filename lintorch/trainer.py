"""Training a run's K members together: minibatch SGD or full-batch GD in one loop (a single run
is K = 1, no branch for it), and the lecture's random search.

Shapes: N images, D features, C classes, K members; weights (K, C, D), per-member values (K,).
"""
import logging
import math
import os
import time

import torch
from tqdm import tqdm

from . import distributed
from .checkpoint import BEST, LAST, Saver, TrainState, model_dict, resume_dict, save
from .cli import loss_text
from .engine import SGD, EpochStats, evaluate, lr_factor, train_one_epoch
from .members import pct
from .monitor import update_ratio
from .names import TUNED
from .objective import Objective
from .recipe import eval_loader

log = logging.getLogger("lintorch")
epoch_log = logging.getLogger("lintorch.epoch")   # per-epoch lines: --quiet drops them


def divergence_hint(cfg, lr):
    """Which flag most likely made the loss non-finite. If the penalty's own step overshoots even
    at the tuned learning rate, --reg (or elastic net's --beta) is to blame whatever --lr is: the
    L2 part flips and grows W when 2 * lr * reg (* beta) > 1, the L1 part moves every weight by
    lr * reg, far past the weights' scale when > 1. Then a huge SVM margin; else the lr."""
    obj = Objective.from_config(cfg)
    lr0, reg, beta, penalty = TUNED[obj.loss]["lr"], obj.reg, obj.beta, obj.penalty
    if penalty != "l1" and 2 * lr0 * reg > 1 or penalty != "l2" and lr0 * reg > 1:
        return f"--reg {reg:g} is too large (the penalty's step overshoots even at lr {lr0:g})"
    if penalty == "elasticnet" and 2 * lr0 * reg * beta > 1:
        return f"--beta {beta:g} is too large (2 * lr * reg * beta > 1 makes every step overshoot)"
    if obj.huge_margin:
        return f"--margin {obj.margin:g} is far above the scores' scale"
    return "lower --lr"


class Trainer:
    """The gradient loop over a Recipe's K members (Member objects, one per configuration)."""

    def __init__(self, run, resume=None):
        self.run, self.r, self.cfg, self.members = run, run.recipe, run.cfg, run.members
        model = self.r.model
        self.opt = SGD(model.weight.data, model.bias.data, self.r.lr, self.cfg["momentum"])
        self.steps_per_epoch = len(self.r.train_loader)
        self.total_steps = self.cfg["epochs"] * self.steps_per_epoch
        # distributed hook: run.dist is None outside torchrun; see lintorch/distributed.py
        self.dist = getattr(run, "dist", None)
        self.sync = getattr(run, "step_sync", None)
        self.evaluate = distributed.evaluate if self.dist and self.dist.mode == "data" else evaluate
        self.saver = Saver() if self.dist is None or self.dist.writes_run else NullSaver()
        self.seconds, self.images = 0.0, 0
        if resume is None:
            self.best_w, self.best_b = model.weight.detach().clone(), model.bias.detach().clone()
            self.epoch, self.step, self.partial = 0, 0, None
        else:
            self._restore(resume)
        self.opt.freeze(torch.tensor([not m.active for m in self.members]))

    def _restore(self, s):
        dev = self.run.device
        with torch.no_grad():
            self.r.model.weight.copy_(s.weight)
            self.r.model.bias.copy_(s.bias)
        self.opt.load_state_dict(None if s.momentum is None else {k: v.to(dev) for k, v in s.momentum.items()})
        self.best_w, self.best_b = s.best_weight.to(dev), s.best_bias.to(dev)
        self.epoch, self.step, self.partial = s.epoch, s.step, s.partial

    def lr_at(self, step):
        return lr_factor(self.cfg["schedule"], step / self.total_steps)

    # ------------------------------------------------------------------ the loop

    def train(self):
        """-> exit status: 0 done, 1 every member diverged, 128 + signal when interrupted."""
        if (self.epoch, self.step) == (0, 0):
            self.sanity_check()
        status = "completed"
        for epoch in range(self.epoch, self.cfg["epochs"]):
            stats, next_step = self.run_epoch(epoch)
            if self.dist is not None:     # distributed hook: the epoch's sums over ranks; a drained rank's stop
                stats, next_step = self.dist_epoch_end(stats, next_step)
            self.seconds, self.images = self.seconds + stats.seconds, self.images + stats.seen
            self.mark_diverged(stats)
            if next_step is not None:
                self.save_last(epoch, next_step, stats)
                status = "interrupted"
                log.info(f"interrupted at epoch {epoch + 1}, step {next_step}: saved last.pt "
                         f"(continue with --resume {self.run.folder})")
                break
            if any(m.active for m in self.members):
                self.end_epoch(epoch, stats)
            self.save_last(epoch + 1, 0, None)
            if not self.any_active():
                break
        return self.finish(status)

    def run_epoch(self, epoch):
        first = self.step if epoch == self.epoch else 0
        partial, self.partial = self.partial, None
        n = len(self.r.data.train)  # the bar counts images, so its rate is the throughput
        bar = None if self.cfg["quiet"] else tqdm(
            total=n, initial=min(first * self.cfg["batch_size"], n), leave=False, unit="img", unit_scale=True,
            desc=f"epoch {epoch + 1}/{self.cfg['epochs']}")
        check_every = 1 if self.run.device.type == "cpu" else self.cfg["log_every"]
        should_stop = self.run.stop
        if self.dist is not None:       # distributed hook: stop where every rank agrees to
            partial, should_stop, self.sync.calls = distributed.local_partial(self.dist, partial), \
                self.sync.should_stop, first
        try:
            return train_one_epoch(self.r.model, self.r.train_loader, self.opt, self.r.objective, epoch,
                                   lr_at=self.lr_at, start=first, check_every=check_every,
                                   log_every=self.cfg["log_every"], on_log=self.on_log,
                                   should_stop=should_stop, progress=bar,
                                   stats=EpochStats(**partial) if partial else None)
        finally:
            if bar is not None:
                bar.close()

    def sanity_check(self):
        """The lecture's check: tiny weights give loss ~ log C (softmax) or ~ (C - 1) * margin (SVM)."""
        expected = self.r.objective.expected_initial_loss(len(self.r.classes))
        first = self.evaluate(self.r.model, self.r.val_loader, self.r.objective)["loss"]       # (K,)
        self.initial_loss = float(first[0])
        log.info(f"step 0: data loss {loss_text(self.initial_loss)} (expected about {expected:.4g} for "
                 f"{self.cfg['loss']} with small W)")
        if not math.isfinite(self.initial_loss) or abs(self.initial_loss - expected) > 0.1 * expected + 0.05:
            flag = "--margin" if self.r.objective.huge_margin else "the data"
            log.warning(f"warning: the initial loss {self.initial_loss:.4g} is far from {expected:.4g}: check "
                        f"{flag} and the initialization")
        for k, m in enumerate(self.members):
            m.monitor.scalars({"loss/data": float(first[k])}, 0)

    def on_log(self, step, stats, extra):
        W = self.r.model.weight.detach()
        ratio = update_ratio(extra["before"], W).cpu()
        wn = torch.linalg.vector_norm(W, dim=(-2, -1)).cpu()
        gn = torch.linalg.vector_norm(extra["grad"], dim=(-2, -1)).cpu()
        data, reg = extra["data"].cpu(), extra["reg"].cpu()
        for k, m in enumerate(self.members):
            if m.active:
                m.monitor.scalars({"loss/data": data[k], "loss/reg": reg[k], "loss/total": data[k] + reg[k],
                                   "lr": float(self.r.lr[k]) * extra["factor"], "norm/weight": wn[k],
                                   "norm/grad": gn[k], "update_ratio": ratio[k]}, step)

    def mark_diverged(self, stats):
        for k, epoch, step, factor in stats.extra.get("diverged", []):
            m = self.members[k]
            lr = float(self.r.lr[k]) * factor
            m.diverged(epoch, step, lr)
            log.error(f"error: {'' if len(self.members) == 1 else m.name + ': '}loss became non-finite at "
                      f"epoch {epoch}, step {step} (lr {lr:.3g}): {divergence_hint(m.config, lr)}; "
                      + ("checkpoint.pt keeps the best model so far" if m.best_val is not None else
                         "no model was kept (it diverged before its first validation)"))

    # ------------------------------------------------------------------ bookkeeping

    def end_epoch(self, epoch, stats):
        """Validate, update each member's best, log, write checkpoints (in the background)."""
        gstep = (epoch + 1) * self.steps_per_epoch
        data_loss, reg_loss, train_acc = stats.means()                           # (K,) each
        val = self.evaluate(self.r.model, self.r.val_loader, self.r.objective)
        W, b = self.r.model.weight.detach(), self.r.model.bias.detach()
        ips = stats.seen / max(stats.seconds, 1e-9)
        images = epoch % self.run.picture_every == 0 or epoch + 1 == self.cfg["epochs"]
        for k, m in enumerate(self.members):
            if not m.active:
                continue
            loss = float(data_loss[k] + reg_loss[k])
            m.history.append({"epoch": epoch + 1, "train_loss": loss, "train_acc": float(train_acc[k]),
                              "val_acc": float(val["acc"][k]), "seconds": stats.seconds})
            m.monitor.scalars({"acc/train": train_acc[k], "acc/val": val["acc"][k], "loss/val": val["loss"][k],
                               "time/epoch_seconds": stats.seconds, "time/images_per_second": ips}, gstep)
            grad = stats.extra.get("grad")
            m.monitor.epoch(gstep, W[k] if images else None, None if grad is None or not images else grad[k],
                            self.run.templates(W[k]) if images else None)
            if m.end_epoch(epoch + 1, float(val["acc"][k]), self.cfg["patience"]):
                self.best_w[k], self.best_b[k] = W[k], b[k]
                self.saver.save(model_dict(m.model_file(self.run.header, W[k], b[k], epoch + 1)),
                                os.path.join(m.folder, BEST))
            if not m.active:
                self.opt.freeze(torch.arange(len(self.members)) == k)
            self.warn_growth(m, loss)
        self.save_sweep_best(epoch)
        self.log_epoch(epoch, data_loss, reg_loss, train_acc, val["acc"], stats.seconds, ips)

    def warn_growth(self, m, loss):
        first = getattr(self, "initial_loss", None)
        if first is not None and math.isfinite(loss) and loss > 100 * max(first, 1e-3) and not m.note:
            m.note = f"the loss grew from {first:.4g} at step 0 to {loss:.4g}: lower --lr"
            log.warning(f"warning: {'' if len(self.members) == 1 else m.name + ': '}{m.note}")

    def save_sweep_best(self, epoch):
        """A sweep's own checkpoint.pt: its best member's best model so far."""
        if len(self.members) == 1 or (self.dist is not None and self.dist.mode == "config"):
            return      # config-parallel: rank 0 copies the best member's at the end (distributed.finish_sweep)
        k = self.best_member()
        if k is not None and self.members[k].best_epoch == epoch + 1:
            m = self.members[k]
            self.saver.save(model_dict(m.model_file(self.run.header, self.best_w[k], self.best_b[k], epoch + 1)),
                            os.path.join(self.run.folder, BEST))

    def best_member(self):
        scored = [(m.best_val, -k) for k, m in enumerate(self.members) if m.best_val is not None]
        return -max(scored)[1] if scored else None

    def log_epoch(self, epoch, data_loss, reg_loss, train_acc, val_acc, seconds, ips):
        head = f"epoch {epoch + 1}/{self.cfg['epochs']}"
        if len(self.members) == 1:
            epoch_log.info(f"{head}  loss {loss_text(data_loss[0] + reg_loss[0])} (data {loss_text(data_loss[0])} + reg "
                     f"{loss_text(reg_loss[0])})  train acc {pct(float(train_acc[0]))}  val acc "
                     f"{pct(float(val_acc[0]))}  {seconds:.2f}s  {ips:,.0f} img/s")
        else:
            k = self.best_member()
            best = "n/a" if k is None else f"{pct(self.members[k].best_val)} ({self.members[k].name})"
            active = sum(m.active for m in self.members)
            epoch_log.info(f"{head}  val acc best {best}  {active}/{len(self.members)} training  {seconds:.2f}s  "
                     f"{ips:,.0f} img/s")

    def save_last(self, epoch, step, stats):
        state = TrainState(self.r.model.weight, self.r.model.bias, self.opt.state_dict(), self.best_w, self.best_b,
                           epoch, step, [m.state() for m in self.members],
                           None if stats is None else stats.state_dict())
        if self.dist is not None and self.dist.mode == "config":   # distributed hook: all members on rank 0
            state = distributed.gather_state(state)
            if state is None:
                return
        self.saver.save(resume_dict(self.run.header, state), os.path.join(self.run.folder, LAST))

    def finish(self, status):
        """Each member's report, the sweep's table; -> exit status."""
        self.saver.flush()
        step = self.epoch_end_step()
        results = None
        if self.dist is None or self.dist.writes_run:     # distributed hook: data-parallel ranks > 0 write nothing
            for k, m in enumerate(self.members):
                m.finish(self.r, self.best_w[k], self.best_b[k], status, step, self.seconds, self.images,
                         self.run.device)
            self.saver.flush()
            results = [m.metrics for m in self.members]
        if self.dist is not None and self.dist.mode == "config":   # distributed hook: rank 0 ranks every member
            gathered = distributed.all_gather_object([(m.name, r) for m, r in zip(self.members, results)])
            names, results = zip(*[pair for part in gathered for pair in part])
            if self.dist.main:
                distributed.finish_sweep(self.run, list(results), list(names), status)
        elif results is not None:
            self.run.report(results, status)
        if status == "interrupted":
            return 128 + (self.run.stop.signum or 15)
        if results is None:
            return 0 if any(m.best_val is not None and m.status != "diverged" for m in self.members) else 1
        return 0 if any(r["val_acc"] is not None and r["status"] != "diverged" for r in results) else 1

    def any_active(self):
        """Whether any member still trains (config-parallel: on any rank)."""
        mine = any(m.active for m in self.members)
        if self.dist is None or self.dist.mode == "data":
            return mine
        return bool(distributed.all_reduce(torch.tensor([float(mine)]))[0] > 0)

    def dist_epoch_end(self, stats, next_step):
        """distributed hook: data mode sums correct and seen over ranks; in config mode a rank
        whose members all diverged mid-epoch keeps answering the others' steps (drain)."""
        if self.dist.mode == "data":
            return distributed.reduce_epoch(stats), next_step
        if next_step is None and self.sync.calls < self.steps_per_epoch and not any(m.active for m in self.members):
            next_step = self.sync.drain(self.steps_per_epoch)
        return stats, next_step

    def epoch_end_step(self):
        done = max((len(m.history) for m in self.members), default=0)
        return max(done, 1) * self.steps_per_epoch


class NullSaver:
    """A data-parallel rank > 0 writes no checkpoints (rank 0 holds the same weights)."""

    def save(self, obj, path):
        pass

    def flush(self):
        pass


def train_search(run):
    """--optimizer random-search / random-local-search: keep the W with the lowest training loss.
    Honours SIGINT/SIGTERM: stops after the current chunk of trials, keeps the best so far."""
    from .model import LinearClassifier
    from .search import random_search
    cfg, r, member = run.cfg, run.recipe, run.members[0]
    full = eval_loader(r.data.train, r.preprocess, run.device)
    bar = None if cfg["quiet"] else tqdm(total=cfg["trials"], desc=cfg["optimizer"], unit="trial", leave=False)

    def on_trial(done, best):
        member.monitor.scalars({"loss/total": best}, done)
        if bar is not None:
            bar.n = done
            bar.set_postfix(best=loss_text(best))
            bar.refresh()
    t0 = time.perf_counter()
    W, b, best, history = random_search(full, r.objective, num_classes=len(r.classes), in_features=r.model.in_features,
                                        trials=cfg["trials"], device=run.device, seed=cfg["seed"],
                                        local=cfg["optimizer"] == "random-local-search",
                                        on_trial=on_trial, should_stop=run.stop)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    done = len(history)
    model = LinearClassifier.from_weights(W.to(run.device), b.to(run.device))
    train_acc, val_acc = float(evaluate(model, full)["acc"]), float(evaluate(model, r.val_loader)["acc"])
    member.monitor.scalars({"acc/train": train_acc, "acc/val": val_acc}, done)
    member.history.append({"epoch": 1, "train_loss": best, "train_acc": train_acc, "val_acc": val_acc,
                           "seconds": seconds})
    member.end_epoch(1, val_acc, None)
    status = "interrupted" if run.stop() else "completed"
    member.note = f"best training loss {loss_text(best)} after {done} of {cfg['trials']} trials"
    save(model_dict(member.model_file(run.header, W, b, 1)), os.path.join(run.folder, BEST))
    m = member.finish(r, W.to(run.device), b.to(run.device), status, done, seconds, done * len(r.data.train),
                      run.device, {"best_loss": best, "trials": done})
    run.report([m], status)
    log.info(f"{cfg['optimizer']}: best training loss {loss_text(best)} after {done} trials; train acc {pct(train_acc)}, "
             f"val acc {pct(val_acc)}, test acc {pct(m['test_acc'])}")
    return 128 + run.stop.signum if status == "interrupted" else 0
