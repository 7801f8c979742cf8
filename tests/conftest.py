"""Shared fixtures. Devices: each test that takes `device` runs on the CPU, and on CUDA when
present (skipped, not dropped, where absent)."""
import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]


@pytest.fixture(params=DEVICES)
def device(request):
    """The device name: "cpu", then "cuda" (skipped without CUDA)."""
    return request.param

