"""Problems and loaders shared by the tests of lintorch.optim."""
import torch


class ListLoader:
    """Any object with batches(epoch) of (x (B, D), y (B,)) will do; this one slices tensors."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size

    def batches(self, epoch=0):
        for i in range(0, len(self.y), self.batch_size):
            yield self.x[i:i + self.batch_size], self.y[i:i + self.batch_size]


def wide_problem(N=60, D=90, C=3, seed=2):
    """N < D, correlated columns (a low-rank mix plus noise), as pixels are, classes overlapping
    (on a tiny separable set the Gram is a poor model of the softmax's curvature, which vanishes
    on confident rows: 1,535 preconditioned iterations against 65 plain at N 40, reg 1e-3):
    x (N, D) float64, y (N,)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (N,), generator=g)
    mix = torch.randn(8, D, generator=g, dtype=torch.float64)
    z = 0.5 * torch.randn(C, 8, generator=g, dtype=torch.float64)[y] + torch.randn(N, 8, generator=g, dtype=torch.float64)
    return z @ mix + torch.randn(N, D, generator=g, dtype=torch.float64), y
