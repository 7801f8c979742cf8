"""lintorch.bench.accuracy: time to a target accuracy, reached on a learnable set, reported when not."""
import pytest
import torch

from lintorch.bench import accuracy, contenders
from lintorch.data import load_dataset


@pytest.mark.slow
def test_time_to_accuracy_on_a_learnable_set():
    data = load_dataset("synthetic", image_size=16, val_size=200, seed=0)      # 30% in 10 and 185 steps
    cpu = torch.device("cpu")
    ours = accuracy.time_to_accuracy_lintorch(data, cpu, target=0.3, check_every=5, limit_s=60)
    plain = accuracy.time_to_accuracy_plain(data, cpu, 64, target=0.3, check_every=5, limit_s=60)
    for r in (ours, plain):
        assert r["reached"] and r["acc"] >= 0.3 and r["steps"] % 5 == 0
        assert 0 < r["seconds"] <= r["wall_seconds"]
    assert "lr" in ours["config"] and "SGD" in plain["config"]


def test_time_to_accuracy_reports_not_reached():
    data = contenders.random_dataset(300)                                          # random labels: unlearnable
    r = accuracy.time_to_accuracy_plain(data, torch.device("cpu"), 64, target=0.99, check_every=2, limit_s=0.0)
    assert not r["reached"] and r["steps"] == 2
