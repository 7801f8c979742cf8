"""The time-to-accuracy race: from decoded uint8 images in memory to a target validation accuracy,
lintorch at train.py's defaults (built by recipe.build) against plain PyTorch SGD, on one clock that
pauses while accuracy is checked.

Shapes: N training images, D = 3 * S * S features, C classes, B the batch size.
"""
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..optim.sgd import SGD, lr_factor
from ..training.epoch import check_interval, evaluate, train_one_epoch
from ..training.recipe import build
from .contenders import CIFAR_MEAN, CIFAR_STD, _sync, bench_config

def time_to_accuracy_lintorch(data, device, target=0.40, check_every=20, limit_s=30.0):
    """From the decoded uint8 data in memory to `target` validation accuracy with lintorch's
    defaults (train.py's flags, run.DEFAULTS for the loss). The clock covers preprocessing fit,
    loaders, model and training; it is paused while the validation accuracy is checked every
    `check_every` steps. Built by recipe.build from train.py's default flags, as train.py builds.
    -> dict(seconds, wall_seconds (evals included), steps, acc, reached)."""
    cfg = bench_config()
    _sync(device)
    t0 = time.perf_counter()
    r = build(cfg, device, data=data)
    optimizer = SGD(r.model.weight.data, r.model.bias.data, r.lr, cfg.momentum)
    total = cfg.epochs * len(r.train_loader)
    clock = _StopClock(t0, device, lambda: evaluate(r.model, r.val_loader)["acc"][0], target, check_every, limit_s)
    clock.mark_setup()
    for epoch in range(cfg.epochs):
        train_one_epoch(r.model, r.train_loader, optimizer, r.objective, epoch, should_stop=clock,
                        check_every=check_interval(device, 50),
                        lr_at=lambda step: lr_factor(cfg.schedule, step / total))
        if clock.done:
            break
    return clock.result(f"softmax lr {r.base_lr:g} reg {cfg.reg:g} B {cfg.batch_size} momentum "
                        f"{cfg.momentum:g} {cfg.schedule} over {cfg.epochs} epochs, {cfg.mean} mean")


def time_to_accuracy_plain(data, device, batch_size=256, lr=0.001, momentum=0.9, target=0.40, check_every=20,
                           limit_s=30.0, max_epochs=20):
    """The same race for plain PyTorch: x / 255 normalized with CIFAR's per-channel mean/std, nn.Linear +
    F.cross_entropy + SGD(lr, momentum), constant lr; same clock as lintorch's. The default lr 0.001 with
    momentum 0.9 is the PyTorch CIFAR-10 tutorial's, and the fastest to 40% of lr in {1e-3, 3e-3, 1e-2, 3e-2}
    with momentum 0.9 and {1e-2, 3e-2, 1e-1} without, measured on the CIFAR-10 JPEGs at B 256."""
    _sync(device)
    t0 = time.perf_counter()
    mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1)

    def features(split):
        return ((split.x.to(device).float() / 255 - mean) / std).flatten(1)
    X, y, Xv, yv = features(data.train), data.train.y.to(device), features(data.val), data.val.y.to(device)
    torch.manual_seed(0)
    model = nn.Linear(X.shape[1], len(data.classes)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)

    @torch.inference_mode()
    def val_acc():
        return (model(Xv).argmax(1) == yv).double().mean()
    clock = _StopClock(t0, device, val_acc, target, check_every, limit_s)
    clock.mark_setup()
    for _ in range(max_epochs):
        perm = torch.randperm(len(y), device=device)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            L = F.cross_entropy(model(X[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            L.backward()
            optimizer.step()
            if clock():
                break
        if clock.done:
            break
    return clock.result(f"nn.Linear + F.cross_entropy, SGD lr {lr:g} momentum {momentum:g}, B {batch_size}, "
                        f"per-channel Normalize")


class _StopClock:
    """A should_stop callback: counts steps, every check_every-th measures accuracy with the clock
    paused; done when accuracy >= target or the training clock passes limit_s."""

    def __init__(self, t0, device, accuracy, target, check_every, limit_s):
        self.t0, self.device, self.accuracy, self.target = t0, device, accuracy, target
        self.check_every, self.limit_s = check_every, limit_s
        self.paused, self.steps, self.acc, self.done, self.reached = 0.0, 0, 0.0, False, False
        self.setup = None

    def mark_setup(self):
        """The set-up (preprocessing, copies, model) ends here; training starts."""
        _sync(self.device)
        self.setup = time.perf_counter() - self.t0

    def __call__(self):
        self.steps += 1
        if self.steps % self.check_every:
            return False
        _sync(self.device)
        t = time.perf_counter()
        self.acc = float(self.accuracy())
        self.reached = self.acc >= self.target
        self.done = self.reached or t - self.t0 - self.paused > self.limit_s
        self.paused += time.perf_counter() - t
        return self.done

    def result(self, config):
        wall = time.perf_counter() - self.t0
        return {"seconds": wall - self.paused, "wall_seconds": wall, "setup_seconds": self.setup,
                "steps": self.steps, "acc": self.acc, "reached": self.reached, "config": config}
