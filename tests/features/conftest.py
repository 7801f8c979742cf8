"""Helpers shared by the tests of lintorch.features: images, feature folders, refused settings."""
import pytest
import torch
import torch.nn.functional as F

from lintorch.features import FeatureError


def random_images(n=4, size=32, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def refused(ex, image_size, *words, error=FeatureError):
    with pytest.raises(error) as e:
        ex.check_settings(image_size)
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)
    return str(e.value)


def images(n, size=32, seed=0, smooth=True):
    """uint8 (n, 3, size, size): smooth blobs plus noise, with flat and saturated regions (edge cases)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4 if smooth else size, 4 if smooth else size, generator=g) * 300 - 20
    x = F.interpolate(x, size=(size, size), mode="bilinear") if smooth else x
    x = x + 30 * torch.randn(n, 3, size, size, generator=g)
    x[:, :, : size // 4, : size // 4] = 128                                 # a flat grey corner
    return x.round().clamp(0, 255).to(torch.uint8)
