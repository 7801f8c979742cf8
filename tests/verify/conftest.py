"""Helpers shared by the tests of lintorch.verify."""
import torch


def scaled_rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()
