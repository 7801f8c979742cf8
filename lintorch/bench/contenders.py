"""What lintorch.bench times in its own process: the timing helpers, the data sets, and each
contender (lintorch's epoch and sweep, the plain PyTorch loop, the GEMM bound, the per-image
DataLoader pipeline, the losses alone). Each contender is a zero-argument callable that returns
its seconds, so the benchmark can alternate them. lintorch's contenders are
built by recipe.build from train.py's default flags, as train.py builds them.

Shapes: N training images, D = 3 * S * S features, C classes, B the batch size, K configurations.
"""
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from .. import functional as LF
from ..data import DataSet, Split, load_dataset
from .. import objective
from ..optim.sgd import SGD, lr_factor
from ..training.epoch import check_interval, train_one_epoch
from ..training.recipe import build

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # what tutorials Normalize with


# --------------------------------------------------------------------------- timing

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn):
    """-> a contender: runs fn() between device syncs and returns its wall seconds."""
    def run():
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t0
    return run


def alternate(contenders, repeats, budget_s=None, min_repeats=3):
    """contenders {name: () -> seconds}; one warm-up round, then `repeats` rounds in which each runs
    once, in turn; after min_repeats rounds, no new round starts once budget_s has passed (a loaded
    machine keeps the whole benchmark within its time). -> {name: [seconds per round]}."""
    t0 = time.perf_counter()
    for run in contenders.values():
        run()
    times = {name: [] for name in contenders}
    for r in range(repeats):
        if budget_s is not None and r >= min_repeats and time.perf_counter() - t0 > budget_s:
            break
        for name, run in contenders.items():
            times[name].append(run())
    return times


# --------------------------------------------------------------------------- data

def random_dataset(n, seed=0, num_classes=10, image_size=32):
    """CIFAR-10-shaped random uint8 images: n - val train, val = min(1000, n // 10)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    v = min(1000, n // 10)
    return DataSet(Split(x[v:], y[v:]), Split(x[:v], y[:v]), None, [f"class{i}" for i in range(num_classes)],
                   image_size, {"dataset": "random"})


def bench_dataset(data_dir, n=None, seed=0, cache_dir=None):
    """The cached image folder (decoded uint8 in memory; 1,000 validation images), or random data;
    n keeps a random subset."""
    if data_dir is None:
        return random_dataset(n or 50_000, seed)
    data = load_dataset("imagefolder", data_dir, seed=seed, cache_dir=cache_dir)
    if n is not None and n < len(data.train) + len(data.val):
        keep = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
        keep = keep[:max(n - len(data.val), 1)].sort().values
        data.train = Split(data.train.x[keep], data.train.y[keep])
    return data


class PILImages(torch.utils.data.Dataset):
    """uint8 images served one by one as PIL images through a per-image transform, exactly as
    torchvision's CIFAR10 dataset does: the standard pipeline when there are no image files."""

    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x.permute(0, 2, 3, 1).contiguous().numpy(), y.tolist(), transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def per_image_dataset(data, data_dir, subset, seed=0):
    """`subset` images behind the standard per-image pipeline: ImageFolder (JPEG decode) with
    ToTensor/Normalize, or PILImages over random uint8 data."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    g = torch.Generator().manual_seed(seed)
    if data_dir is None:
        idx = torch.randperm(len(data.train), generator=g)[:subset]
        return PILImages(data.train.x[idx], data.train.y[idx], transform)
    folder = ImageFolder(os.path.join(data_dir, "train"), transform=transform)
    return torch.utils.data.Subset(folder, torch.randperm(len(folder), generator=g)[:subset].tolist())


# --------------------------------------------------------------------------- epoch contenders

def _lr_reg(loss):
    tuned = objective.LOSSES[loss].tuned
    return tuned["lr"], tuned["reg"]


def bench_config(*flags, **overrides):
    """train.py's config for its default flags plus `flags` (from `train.py --help`), then `overrides`
    (a sweep as a grid of {name: value})."""
    from ..config import parse_args
    cfg = parse_args(["--dataset", "imagefolder", *flags])
    if overrides.get("sweep") is not None:
        overrides["sweep"] = tuple(overrides["sweep"])
    return cfg.replace(**overrides)


def recipe_epoch(recipe, cfg, device):
    """A contender: one epoch of recipe's K members as train.py's loop runs it (train_one_epoch +
    Objective + lintorch's SGD, cfg's schedule over cfg's epochs); each call trains the next epoch."""
    optimizer = SGD(recipe.model.weight.data, recipe.model.bias.data, recipe.lr, cfg.momentum)
    total = cfg.epochs * len(recipe.train_loader)
    check_every = check_interval(device, cfg.log_every)      # as Trainer
    epoch = [0]

    def run():
        train_one_epoch(recipe.model, recipe.train_loader, optimizer, recipe.objective, epoch[0] % cfg.epochs,
                        check_every=check_every, lr_at=lambda step: lr_factor(cfg.schedule, step / total))
        epoch[0] += 1
    return timed(device, run)


def lintorch_epoch(data, preprocess, loss, batch_size, device):
    """lintorch's epoch of a single run (K = 1) at train.py's defaults for the loss."""
    cfg = bench_config("--loss", loss, "--batch-size", str(batch_size))
    return recipe_epoch(build(cfg, device, preprocess, data), cfg, device)


def sweep_epoch(data, preprocess, K, batch_size, device):
    """An epoch of train.py --sweep with K configurations (softmax): K stacked (K, C, D) weights,
    one GEMM per step, per-member learning rates and regularization strengths."""
    lr, reg = _lr_reg("softmax")
    grid = [{"lr": float(a), "reg": float(b)}
            for a, b in zip(torch.linspace(lr / 4, 2 * lr, K), torch.linspace(0, 2 * reg, K))]
    cfg = bench_config("--batch-size", str(batch_size), sweep=grid)
    return recipe_epoch(build(cfg, device, preprocess, data), cfg, device)


# what a user writes in plain PyTorch for each loss lintorch is timed with: the plain epoch's and the losses-alone
# contenders' (torch divides the multi-class hinge by C)
PLAIN_LOSSES = {"softmax": lambda s, y: F.cross_entropy(s, y),
                "svm": lambda s, y: s.shape[1] * F.multi_margin_loss(s, y)}


def plain_epoch(X, y, num_classes, loss, batch_size, device):
    """What a user writes: nn.Linear + F.cross_entropy / C * F.multi_margin_loss + SGD (weight_decay
    for L2) over preloaded float tensors X (N, D), randperm batches."""
    lr, reg = _lr_reg(loss)
    plain_loss = PLAIN_LOSSES[loss]
    torch.manual_seed(0)
    model = nn.Linear(X.shape[1], num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=2 * reg)

    def run():
        perm = torch.randperm(len(y), device=device)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = X[idx], y[idx]
            L = plain_loss(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            L.backward()
            optimizer.step()
    return timed(device, run)


GEMM_LAYOUTS = {
    "fwd": {"X @ W.t(), W (C, D)": lambda x, W, Wt: x @ W.t(), "X @ Wt, Wt (D, C)": lambda x, W, Wt: x @ Wt},
    "bwd": {"dS.t() @ X": lambda x, dS: dS.t() @ x, "(X.t() @ dS).t()": lambda x, dS: (x.t() @ dS).t()},
}


def gemm_epoch(X, num_classes, batch_size, device, fwd, bwd):
    """The bound: per batch only scores = X W^T and dW = dS^T X, on contiguous preloaded float32
    batches (no gather, no loss, no optimizer); fwd/bwd name entries of GEMM_LAYOUTS."""
    W = torch.randn(num_classes, X.shape[1], device=device) * 1e-3
    Wt = W.t().contiguous()
    f, b = GEMM_LAYOUTS["fwd"][fwd], GEMM_LAYOUTS["bwd"][bwd]

    def run():
        for i in range(0, len(X), batch_size):
            xb = X[i:i + batch_size]
            b(xb, f(xb, W, Wt))  # the scores stand in for dS: same shape, same cost
    return timed(device, run)


def fastest_gemm_layout(X, num_classes, batch_size, device, rounds=2):
    """-> (fwd, bwd) names of the fastest layouts, by median over `rounds` alternating epochs."""
    best = {}
    for part, default in (("fwd", "dS.t() @ X"), ("bwd", "X @ W.t(), W (C, D)")):
        runs = {}
        for name in GEMM_LAYOUTS[part]:
            args = (name, default) if part == "fwd" else (default, name)
            runs[name] = gemm_epoch(X, num_classes, batch_size, device, *args)
        times = alternate(runs, rounds)
        best[part] = min(times, key=lambda k: statistics.median(times[k]))
    return best["fwd"], best["bwd"]


def loader_only(loader):
    """Only the batches of a lintorch TensorLoader (uint8 gather + preprocess): its data cost."""
    def run():
        for _ in loader.batches(0):
            pass
    return timed(loader.device, run)


def float_gather_only(X, batch_size, device):
    """Only the batches of the plain loop (randperm + float gather X[idx]): its data cost."""
    def run():
        perm = torch.randperm(len(X), device=device)
        for i in range(0, len(X), batch_size):
            X[perm[i:i + batch_size]]
    return timed(device, run)


def dataloader_epoch(dataset, n_full, num_classes, batch_size, device, workers):
    """The standard pipeline: DataLoader(shuffle, per-image transforms, `workers`) + nn.Linear +
    F.cross_entropy + SGD over `dataset` (a subset), scaled to an epoch of n_full images: the time to
    the first batch (worker start-up) counts once, the rest per image."""
    lr, _ = _lr_reg("softmax")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    x0, _ = dataset[0]
    model = nn.Linear(x0.numel(), num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def run():
        _sync(device)
        t0 = time.perf_counter()
        first, n_first, seen = None, 0, 0
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True).flatten(1), yb.to(device, non_blocking=True)
            L = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            L.backward()
            optimizer.step()
            seen += len(yb)
            if first is None:
                _sync(device)
                first, n_first = time.perf_counter() - t0, seen
        _sync(device)
        rest = time.perf_counter() - t0 - first
        return first + rest * (n_full - n_first) / max(seen - n_first, 1)
    return run


# --------------------------------------------------------------------------- losses alone

LOSSES = {
    "softmax": {"lintorch softmax_loss": lambda s, y: LF.softmax_loss(s, y, validate=False),
                "torch F.cross_entropy": PLAIN_LOSSES["softmax"]},
    "svm": {"lintorch svm_loss": lambda s, y: LF.svm_loss(s, y, validate=False),
            "torch C*F.multi_margin_loss": PLAIN_LOSSES["svm"]},
}


def loss_contenders(batch_size, num_classes, device, min_seconds):
    """{name: () -> seconds per forward+backward call} for both losses at this batch size; each
    sample loops enough calls (the same count for all) to last about min_seconds."""
    g = torch.Generator(device=device).manual_seed(0)
    s = torch.randn(batch_size, num_classes, device=device, generator=g).requires_grad_()
    y = torch.randint(0, num_classes, (batch_size,), device=device, generator=g)

    def one(fn):
        fn(s, y).backward()
        s.grad = None

    def calls_for(fn):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min_seconds / 4 or n < 4:
            one(fn)
            n += 1
        _sync(device)
        return max(4, int(4 * n * min_seconds / (4 * (time.perf_counter() - t0))))

    fns = {name: fn for group in LOSSES.values() for name, fn in group.items()}
    calls = min(calls_for(fn) for fn in fns.values())

    def contender(fn):
        def run():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(calls):
                one(fn)
            _sync(device)
            return (time.perf_counter() - t0) / calls
        return run
    return {name: contender(fn) for name, fn in fns.items()}
