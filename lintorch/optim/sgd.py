"""The SGD step and the learning-rate schedule.

Shapes: D features, C classes; K stacked models in a sweep (weight (K, C, D)). The update is one
momentum step for all K members, each with its own learning rate.
"""
import math

import torch


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


class SGD:
    """Momentum SGD for K members at once, each with its own learning rate:
    v = momentum * v + g,  W -= lr_k * schedule(t) * v  (torch.optim.SGD's rule, dampening 0).

    A member leaves the update (its rows stop moving, its gradient is ignored) when it is frozen:
    diverged, or stopped early. weight (K, C, D), bias (K, C), lr (K,).
    """

    def __init__(self, weight, bias, lr, momentum=0.0):
        self.weight, self.bias, self.momentum = weight, bias, momentum
        self.lr = lr.to(weight.device, weight.dtype)
        self.active = torch.ones(len(lr), dtype=torch.bool, device=weight.device)
        self.all_active = True
        self.buf = None if momentum == 0 else {"weight": torch.zeros_like(weight), "bias": torch.zeros_like(bias)}

    def freeze(self, which):
        """which: (K,) bool, the members to stop updating."""
        self.active &= ~which.to(self.active.device)
        self.all_active = bool(self.active.all())

    @torch.no_grad()
    def step(self, dW, db, factor):
        step = self.lr * factor                                           # (K,)
        if not self.all_active:   # a frozen member's gradient may be NaN: drop it, not multiply by 0
            keep = self.active
            dW = torch.where(keep.view(-1, 1, 1), dW, 0.0)
            db = torch.where(keep.view(-1, 1), db, 0.0)
            step = torch.where(keep, step, 0.0)
        if self.buf is not None:
            dW = self.buf["weight"].mul_(self.momentum).add_(dW)
            db = self.buf["bias"].mul_(self.momentum).add_(db)
        self.weight.addcmul_(dW, step.view(-1, 1, 1), value=-1.0)
        self.bias.addcmul_(db, step.view(-1, 1), value=-1.0)

    def state_dict(self):
        return None if self.buf is None else dict(self.buf)

    def load_state_dict(self, state):
        if self.buf is not None and state is not None:
            for k in self.buf:
                self.buf[k].copy_(state[k])
