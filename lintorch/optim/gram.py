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


def shifted(G, s):
    """G (D, D) -> G + s I, a new tensor: one copy, no identity made and scaled (each a fresh D x D
    the first time it is touched)."""
    out = G.clone()
    out.diagonal().add_(s)
    return out


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
        # neither zeroed: only their lower blocks are read, each written before it is (a fit's fresh
        # sums are paid in page faults: zeroing them cost a 2,000 x 512 L-BFGS fit 2-3 ms)
        self.part = torch.empty(D, D, dtype=dtype, device=device)
        self.G = torch.empty(D, D, dtype=torch.float64, device=device)
        self.rows, self.flushed = 0, False

    def add(self, xb):
        add_lower(self.part, xb, self.block, fresh=self.rows == 0)
        self.rows += xb.shape[0]
        if self.rows >= self.flush_rows:
            self.flush()

    def flush(self):
        """G += the partial's lower blocks (the first flush: G = them): at mid D half the traffic of
        the whole (2,000 x 512 in 512-row batches: 4.3 ms against 2.1 ms a fit, each flush's sums out
        of cache)."""
        D, b = len(self.G), self.block
        for i in range(0, D, b):
            G, part = self.G[i:i + b, :i + b], self.part[i:i + b, :i + b]
            G.add_(part) if self.flushed else G.copy_(part)
        self.rows, self.flushed = 0, True

    def total(self):
        """-> G (D, D) float64: the lower blocks' lower triangle mirrored block by block (no (D, D)
        temporary), which also overwrites what the blocks above held."""
        if self.rows or not self.flushed:
            self.flush()
        self.part = None
        G, D, b = self.G, len(self.G), self.block
        for i in range(0, D, b):
            for j in range(0, i, b):
                G[j:j + b, i:i + b].copy_(G[i:i + b, j:j + b].mT)
            Gii = G[i:i + b, i:i + b]
            Gii.copy_(Gii.tril() + Gii.tril(-1).mT)
        return G
