"""The Gram X^T X of a stream of row batches, summed in float64: one home for the exact solver's
statistics (optim.exact.gram_stats) and L-BFGS's preconditioners (optim.precondition).

Shapes: batches xb (n_b, D) of one dtype; the sum G (D, D) float64.

Each batch's product is computed on and below the diagonal only (blocks of `block` columns: about
half the flops), in the batches' dtype, into one partial sum that is added to the float64 total every
FLUSH_ROWS rows; the total is mirrored once at the end.
"""
import torch

# Rows summed in the batches' dtype before the partial sum goes into the float64 total (L-BFGS's
# preconditioners, where the Gram only steers): for float32 batches a sum of up to this many products
# per entry, then exact float64 additions. The exact solver flushes every batch (flush_rows=0): on a
# 20,000 x 256 probe its W is 7e-8 from float64's that way, 4e-7 flushed every 16,384 rows.
FLUSH_ROWS = 16384


def lower_block(D):
    """Column block for D features: small enough that the blocks above the diagonal (skipped) are
    about half the product, large enough that each block's product still runs at full speed.
    Measured, float32, 1 thread, 512-row batches (ms, the full product, then blocks of 64 / 128 / 256):
    D 256: 1.05, 0.66 / 0.70; D 512: 3.33, 2.33 / 2.38 / 2.58; D 1024: 15.0, 10.6 / 9.3 / 9.1 (512:
    12.2). From D 2,048 blocks of 1,024 (D 2,048: 79 ms full, 47 ms; 8,192 x 6,400, 2 threads: 1.74 s
    against 3.02 s full and 1.97 s with 2,048)."""
    return 1024 if D >= 2048 else max(64, D // 4)


def add_lower(G, xb, block, fresh=False):
    """G (D, D) += xb^T xb (xb (n, D)) on and below the diagonal, in blocks of `block` columns; the
    blocks above it are left alone (fresh: G's lower blocks are overwritten, not added to: no zeroing)."""
    D = xb.shape[1]
    beta = 0 if fresh else 1
    for i in range(0, D, block):
        G[i:i + block, :i + block].addmm_(xb[:, i:i + block].T, xb[:, :i + block], beta=beta)


class GramSum:
    """G = sum over the batches added of xb^T xb, in float64. add(xb (n_b, D)) takes a batch in the
    partial sum's dtype (one partial, made once); the partial goes into G once it holds flush_rows
    rows (0: every batch). total() -> (D, D) float64, symmetric (called once, at the end)."""

    def __init__(self, D, dtype, device, block=None, flush_rows=FLUSH_ROWS):
        self.block = lower_block(D) if block is None else block
        self.flush_rows = flush_rows
        self.part = torch.zeros(D, D, dtype=dtype, device=device)     # the blocks above stay 0
        self.G = torch.zeros(D, D, dtype=torch.float64, device=device)
        self.rows = 0

    def add(self, xb):
        add_lower(self.part, xb, self.block, fresh=self.rows == 0)
        self.rows += xb.shape[0]
        if self.rows >= self.flush_rows:
            self.flush()

    def flush(self):
        """G += the partial's lower blocks (the others are 0): at mid D half the traffic of the whole
        (2,000 x 512 in 512-row batches: 4.3 ms against 2.1 ms a fit, each flush's sums out of cache)."""
        D, b = len(self.G), self.block
        for i in range(0, D, b):
            self.G[i:i + b, :i + b].add_(self.part[i:i + b, :i + b])
        self.rows = 0

    def total(self):
        if self.rows:
            self.flush()
        self.part = None
        G = self.G.tril_()
        return G.add_(G.tril(-1).mT)                    # the lower blocks' (and diagonal's) mirror
