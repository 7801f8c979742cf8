"""Batches for training: the fast tensor loader and torch's standard DataLoader, same batches.

Shapes: B batch size, D = 3 * S * S features. Both loaders draw epoch e's order from
``epoch_order(n, seed, e)``, which depends on (seed, epoch) alone, so a resumed run
and either loader see exactly the same batches. Each yields (x (B, D) float32, y (B,) int64)
on the training device, preprocessed by the same ``Preprocess``.
"""
import torch

from ..errors import DataError
from ..names import LOADERS
from .folders import image_transform
from .sources import SOURCES, Source



def epoch_order(n, seed, epoch):
    """The permutation of range(n) used in epoch `epoch` (CPU generator: same on every device)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def flip_half(xb, seed, epoch, batch):
    """Mirror a random half of a batch of images left-right, on their device: xb uint8 (B, D)
    with D = 3 * S * S (or (B, 3, S, S)). Which images is a pure function of (seed, epoch,
    batch), so both loaders and a resumed run flip the same ones. One gather of the chosen
    rows; no per-image Python."""
    g = torch.Generator().manual_seed((seed * 100_003 + epoch) * 1_000_003 + batch)
    # drawn and counted on the host (free there), the indices sent without waiting: no GPU sync per step
    chosen = (torch.rand(xb.shape[0], generator=g) < 0.5).nonzero().flatten().to(xb.device, non_blocking=True)
    if len(chosen):
        B, D = xb.shape[0], xb[0].numel()
        S = int(round((D // 3) ** 0.5))
        images = xb.reshape(B, 3, S, S)
        images[chosen] = images.index_select(0, chosen).flip(-1)
    return xb


class TensorLoader:
    """The fast default: the whole uint8 split lives on the device, batches are index gathers.

    No per-image Python work per epoch: one randperm, then per step one gather of B rows
    of uint8 and one fused scale-and-shift into float32.
    """

    def __init__(self, split, preprocess, batch_size, device, seed=0, shuffle=True, flip=False):
        self.x = split.x.reshape(len(split), -1).to(device)        # (N, D) uint8
        self.y = split.y.to(device)
        self.preprocess = preprocess.to(device)
        self.batch_size, self.seed, self.shuffle, self.device = batch_size, seed, shuffle, device
        self.flip = flip

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    def batches(self, epoch=0, start=0):
        """Yield epoch `epoch`'s batches from batch index `start` on (to resume mid-epoch)."""
        n = len(self.y)
        order = epoch_order(n, self.seed, epoch).to(self.device, non_blocking=True) if self.shuffle else None
        for i in range(start * self.batch_size, n, self.batch_size):
            if order is None:
                xb, yb = self.x[i:i + self.batch_size], self.y[i:i + self.batch_size]
            else:
                idx = order[i:i + self.batch_size]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
                if self.flip:           # index_select made a copy: flipping it leaves the data as it is
                    flip_half(xb, self.seed, epoch, i // self.batch_size)
            yield self.preprocess(xb), yb


class KeptBatches:
    """Another loader's batches of epoch 0, made once and kept (a small split that a full-batch
    solver passes over at every evaluation is preprocessed once, not at each pass)."""

    def __init__(self, loader):
        self.kept = list(loader.batches(0))

    def __len__(self):
        return len(self.kept)

    def batches(self, epoch=0, start=0):
        yield from self.kept[start:]


class _EpochBatches(torch.utils.data.Sampler):
    """A batch sampler giving DataLoader the same index batches as TensorLoader."""

    def __init__(self, n, batch_size, seed, shuffle):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.epoch, self.start = 0, 0

    def __len__(self):
        return -(-self.n // self.batch_size)

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch) if self.shuffle else torch.arange(self.n)
        for i in range(self.start * self.batch_size, self.n, self.batch_size):
            yield order[i:i + self.batch_size].tolist()


def _per_image_dataset(dataset, split_name):
    """The per-image Dataset behind a split plus the indices into it (None: all), for the DataLoader
    path: its source's (sources.SOURCES), or the split's own tensors for data from no named source."""
    src = dataset.source or {}
    source = SOURCES.get(src.get("dataset"), Source())
    return source.per_image(dataset, split_name, image_transform(dataset.image_size))


class DataLoaderLoader:
    """torch.utils.data.DataLoader over the torchvision dataset with per-image transforms."""

    def __init__(self, dataset, split_name, preprocess, batch_size, device, seed=0, shuffle=True, workers=0,
                 flip=False):
        self.flip, self.seed = flip, seed
        ds, indices = _per_image_dataset(dataset, split_name)
        if indices is not None:
            ds = torch.utils.data.Subset(ds, indices)
        self.sampler = _EpochBatches(len(ds), batch_size, seed, shuffle)
        self.loader = torch.utils.data.DataLoader(ds, batch_sampler=self.sampler, num_workers=workers,
                                                  pin_memory=str(device).startswith("cuda"))
        self.preprocess, self.device, self.batch_size = preprocess.to(device), device, batch_size

    def __len__(self):
        return len(self.sampler)

    def batches(self, epoch=0, start=0):
        self.sampler.epoch, self.sampler.start = epoch, start
        for j, (xb, yb) in enumerate(self.loader, start):
            xb = xb.to(self.device, non_blocking=True)
            if self.flip:
                flip_half(xb, self.seed, epoch, j)
            yield self.preprocess(xb), yb.to(self.device, non_blocking=True)


def make_loader(kind, dataset, split_name, preprocess, batch_size, device, seed=0, shuffle=True, workers=0,
                flip=False):
    """kind "tensor" (fast, default) or "dataloader" -> an object with len() and batches(epoch, start).
    flip: mirror a seeded random half of each training batch (images only)."""
    if kind == "tensor":
        split = getattr(dataset, split_name)
        return TensorLoader(split, preprocess, batch_size, device, seed, shuffle, flip)
    if kind == "dataloader":
        return DataLoaderLoader(dataset, split_name, preprocess, batch_size, device, seed, shuffle, workers, flip)
    raise DataError(f"unknown loader {kind!r}; expected one of {', '.join(LOADERS)}")
