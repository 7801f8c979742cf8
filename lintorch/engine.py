"""The training step, one epoch, evaluation and the learning-rate schedule.

Shapes: B batch, D features, C classes; K stacked models in a sweep (weight (K, C, D),
per-model losses (K,)), else scalars. One loop serves both: a single run is the K-free case.
Every gradient comes from lintorch's hand-written backward passes (functional.objective_and_grad
chains them without an autograd graph); the update is torch.optim.SGD.
"""
import math
import time
from dataclasses import dataclass, field

import torch

from . import functional as LF


class NonFiniteLoss(Exception):
    """The loss became NaN or inf: the message names epoch, step and learning rate."""


def lr_factor(schedule, progress):
    """The schedule's multiplier of the base learning rate at `progress` in [0, 1] of training.
    constant: 1; step: x0.1 at 50% and again at 75%; cosine: (1 + cos(pi * progress)) / 2."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    raise ValueError(f"unknown schedule {schedule!r}")


@dataclass
class Objective:
    """L = data loss + reg * R(W). reg is a number, or a (K,) tensor of per-model strengths."""
    loss: str = "softmax"
    reg: object = 0.0
    penalty: str = "l2"
    beta: float = 1.0
    margin: float = 1.0
    squared: bool = False
    form: str = "weston-watkins"

    def data(self, scores, y, reduction="mean"):
        """scores (B, C) or (K, B, C), y (B,) -> () or (K,) (labels were checked once at load)."""
        if self.loss == "svm":
            return LF.svm_loss(scores, y, self.margin, self.squared, reduction, self.form, validate=False)
        return LF.softmax_loss(scores, y, reduction, validate=False)

    def loss_and_grad(self, model, x, y):
        """One step's scores, data loss, reg * R(W) and the gradients dW, db, by lintorch's
        hand-written backward passes chained without an autograd graph (objective_and_grad)."""
        return LF.objective_and_grad(x, model.weight, model.bias, y, self.loss, self.reg, self.penalty,
                                     self.beta, self.margin, self.squared, self.form)

    def regularization(self, weight):
        """weight (C, D) or (K, C, D) -> reg * R(W): () or (K,)."""
        return self.reg * LF.penalty(weight, self.penalty, self.beta)

    def expected_initial_loss(self, num_classes):
        """The lecture's sanity check with tiny weights: log C (softmax), (C - 1) * margin (SVM)."""
        if self.loss == "softmax":
            return math.log(num_classes)
        return (num_classes - 1) * (self.margin ** 2 if self.squared else self.margin) \
            if self.form == "weston-watkins" else (self.margin ** 2 if self.squared else self.margin)


@dataclass
class EpochStats:
    """Sums over the steps seen so far in an epoch; tensors (K,) or () on the device."""
    data: torch.Tensor = 0.0
    reg: torch.Tensor = 0.0
    correct: torch.Tensor = 0
    seen: int = 0
    steps: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def state_dict(self):
        """Plain values for a checkpoint (resuming an epoch keeps its running sums)."""
        return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                for k, v in vars(self).items() if k != "extra"}

    def means(self):
        """-> (data loss, reg loss, accuracy) as CPU tensors (one host sync)."""
        n = max(self.steps, 1)
        return (torch.as_tensor(self.data).cpu() / n, torch.as_tensor(self.reg).cpu() / n,
                torch.as_tensor(self.correct).cpu().double() / max(self.seen, 1))


def train_one_epoch(model, loader, optimizer, objective, epoch, *, lr_at, lr_scale=None, start=0,
                    check_every=1, log_every=50, on_log=None, should_stop=None, progress=None, stats=None):
    """Train one epoch from batch `start`; -> (EpochStats, next batch index or None when done).

    lr_at(global_step) sets the optimizer's learning rate each step. lr_scale (K,) multiplies
    each model's gradient (a sweep: per-model learning rates, the optimizer's lr is the schedule).
    Non-finite loss is checked every `check_every` steps (1 on CPU: free; more on CUDA: no sync).
    on_log(global_step, stats, extras) is called every `log_every` steps; should_stop() is polled
    after each step and, if true, the epoch ends early and the next batch index is returned.
    stats carries the sums of an epoch interrupted part-way (resume), else they start at zero.
    """
    steps_per_epoch = len(loader)
    stats = EpochStats() if stats is None else stats
    W = model.weight
    t0 = time.perf_counter() - stats.seconds
    for i, (xb, yb) in enumerate(loader.batches(epoch, start), start):
        step = epoch * steps_per_epoch + i
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        scores, data, reg, dW, db = objective.loss_and_grad(model, xb, yb)   # scores (B, C) or (K, B, C)
        total = data + reg
        if check_every and (i + 1) % check_every == 0:
            if lr_scale is None:
                if not math.isfinite(total.item()):
                    raise NonFiniteLoss(f"loss became {total.item()} at epoch {epoch + 1}, step {i + 1} "
                                        f"(lr {lr:.3g}): lower --lr")
            else:
                lr_scale.masked_fill_(~torch.isfinite(total), 0.0)     # a sweep freezes diverged models
        if lr_scale is not None:
            dW.mul_(lr_scale.view(-1, 1, 1))
            db.mul_(lr_scale.view(-1, 1))
        model.weight.grad, model.bias.grad = dW, db
        logging_step = on_log is not None and (i + 1) % log_every == 0
        before = W.detach().clone() if logging_step else None
        optimizer.step()
        with torch.no_grad():
            stats.data = stats.data + data.detach()
            stats.reg = stats.reg + reg.detach()
            # argmax along the scores' strided last dim is 3x slower than copying them first
            stats.correct = stats.correct + (scores.contiguous().argmax(-1) == yb).sum(-1)
        stats.seen += len(yb)
        stats.steps += 1
        if progress is not None:
            progress.update(len(yb))
        if logging_step:
            on_log(step + 1, stats, {"before": before, "data": data.detach(), "reg": reg.detach(), "lr": lr})
        if should_stop is not None and should_stop():
            stats.seconds = time.perf_counter() - t0
            return stats, i + 1
    stats.seconds = time.perf_counter() - t0
    return stats, None


@torch.inference_mode()
def evaluate(model, loader, objective=None, num_classes=None):
    """Accuracy (and mean data loss, confusion matrix) of model on every batch of loader.

    -> dict: acc () or (K,), loss (or None), confusion (C, C) counts for a single model when
    num_classes is given (rows true class, columns predicted).
    """
    correct, loss_sum, n, cm = 0, 0.0, 0, None
    for xb, yb in loader.batches(0):
        scores = model(xb)
        pred = scores.argmax(-1)
        correct = correct + (pred == yb).sum(-1)
        if objective is not None:
            loss_sum = loss_sum + objective.data(scores, yb, reduction="sum")
        if num_classes is not None and pred.dim() == 1:
            idx = yb * num_classes + pred
            counts = torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)
            cm = counts if cm is None else cm + counts
        n += len(yb)
    acc = torch.as_tensor(correct).cpu().double() / max(n, 1)
    loss = None if objective is None else torch.as_tensor(loss_sum).cpu() / max(n, 1)
    return {"acc": acc, "loss": loss, "confusion": None if cm is None else cm.cpu(), "n": n}
