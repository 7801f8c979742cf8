"""lintorch.bench.contenders: the DataLoader epoch contender scales a subset to the full epoch."""
import pytest
import torch

from lintorch.bench import contenders


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_epoch_scales_a_subset(workers):
    data = contenders.random_dataset(200)
    subset = contenders.per_image_dataset(data, None, 40)
    x, label = subset[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(label, int)
    run = contenders.dataloader_epoch(subset, 400, 10, 16, torch.device("cpu"), workers)
    assert run() > 0
