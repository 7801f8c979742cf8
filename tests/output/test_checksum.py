"""output/checksum.py: the checksum every cache stores beside its values changes with any value,
position, dtype or shape, and is the same for the same data."""
import torch

from lintorch.output.checksum import checksum


def test_same_data_same_checksum_and_any_change_differs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 17, generator=g)
    base = checksum(x)
    assert checksum(x.clone()) == base
    changed = {
        "zeroed": torch.zeros_like(x),
        "one value": x.clone().index_put_((torch.tensor([123]), torch.tensor([5])), torch.tensor(0.5)),
        "two rows swapped": x[torch.cat([torch.tensor([1, 0]), torch.arange(2, 300)])],
        "another dtype": x.double(),
        "another shape": x.reshape(17, 300),
        "one row fewer": x[1:],
    }
    for what, y in changed.items():
        assert checksum(y) != base, what


def test_nested_state_and_views():
    state = {"centroids": torch.arange(12.0).view(3, 4), "k": 3, "whiten": [torch.ones(2), None]}
    base = checksum(state)
    assert checksum({**state}) == base
    assert checksum({**state, "k": 4}) != base
    assert checksum({**state, "centroids": state["centroids"] * 2}) != base
    t = torch.arange(20, dtype=torch.uint8)
    assert checksum(t[3:11]) == checksum(t[3:11].clone())           # a view: its own bytes only
    assert checksum(torch.zeros(0, 5)) != checksum(torch.zeros(5, 0))
