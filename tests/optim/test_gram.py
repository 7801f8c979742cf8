"""lintorch.optim.gram: the streamed lower-triangle Gram against X^T X in float64, whatever the column
block, the flush interval and the batch sizes; the block chosen from D."""
import pytest
import torch

from lintorch.optim import gram


def rows(n, d, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype) * torch.linspace(0.5, 2, d, dtype=dtype)


def summed(X, sizes, **kw):
    """GramSum of X's rows in consecutive batches of the given sizes."""
    G = gram.GramSum(X.shape[1], X.dtype, X.device, **kw)
    i = 0
    for n in sizes:
        G.add(X[i:i + n])
        i += n
    assert i == len(X)
    return G.total()


@pytest.mark.parametrize("block", [1, 5, 12, 64, None])
@pytest.mark.parametrize("flush_rows", [0, 50, gram.FLUSH_ROWS])
def test_the_sum_is_the_full_gram(block, flush_rows):
    """Blocks that divide D, that do not, and wider than D; a flush every batch, every few, or none
    before the end; batches of uneven sizes (a partial overwritten after each flush, not added to)."""
    X = rows(170, 12)
    G = summed(X, [30, 1, 60, 0, 79], block=block, flush_rows=flush_rows)
    assert G.dtype == torch.float64
    torch.testing.assert_close(G, X.T @ X, rtol=1e-12, atol=1e-12)
    assert torch.equal(G, G.T)


def test_float32_batches_sum_into_float64_at_float32_precision():
    X = rows(3000, 40, seed=1, dtype=torch.float32)
    G = summed(X, [512] * 5 + [440], flush_rows=0)
    assert G.dtype == torch.float64
    ref = X.double().T @ X.double()
    assert float((G - ref).abs().max() / ref.abs().max()) < 1e-5


@pytest.mark.parametrize("D", [1, 63, 64, 256, 512, 1024, 1536, 2047, 2048, 3072, 6400])
def test_the_block_halves_mid_and_large_d(D):
    """Up to D 2,047 blocks of D / 4 (at least 64), then 1,024: from D 256 on there are at least two
    blocks, so the ones above the diagonal are skipped."""
    b = gram.lower_block(D)
    assert 64 <= b <= 1024
    if D >= 256:
        assert b < D
    if D >= 2048:
        assert b == 1024


def test_shifted_is_g_plus_s_times_the_identity_and_leaves_g_alone():
    G = rows(5, 7).T @ rows(5, 7)                # rank 5: singular
    before = G.clone()
    S = gram.shifted(G, 0.25)
    assert torch.equal(S, G + 0.25 * torch.eye(7, dtype=G.dtype))
    assert torch.equal(G, before)
