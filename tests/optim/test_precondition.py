"""lintorch.optim.precondition: the members' Cholesky factors made together are the factors made one
by one (a failed member raised alone), G checked once."""
import pytest
import torch

from lintorch.optim.precondition import _cholesky, _choleskys


def spd(D, seed):
    X = torch.randn(3 * D, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return X.T @ X / (3 * D)


@pytest.mark.parametrize("D", [9, 64, 100])
def test_the_factors_made_together_are_the_factors_made_one_by_one(D):
    G = spd(D, 0)
    shifts = torch.tensor([1e-6, 2e-3, 0.5, 10.0], dtype=torch.float64)
    L = _choleskys(G, shifts)
    assert L.shape == (4, D, D)
    for k, s in enumerate(shifts.tolist()):
        assert torch.equal(L[k], _cholesky(G, s))


def test_a_member_whose_factor_fails_is_raised_alone_as_it_was():
    G = torch.diag(torch.tensor([1.0, -1e-3, 2.0], dtype=torch.float64))    # indefinite below a shift of 1e-3
    shifts = torch.tensor([1e-6, 1.0], dtype=torch.float64)
    L = _choleskys(G, shifts)
    assert torch.equal(L[0], _cholesky(G, 1e-6)) and torch.equal(L[1], _cholesky(G, 1.0))
    torch.testing.assert_close(L[0] @ L[0].T, G + 1e-2 * torch.eye(3, dtype=torch.float64))   # 1e-6 raised to 1e-2
    with pytest.raises(FloatingPointError, match="no Cholesky factor"):
        _choleskys(-1e300 * torch.eye(3, dtype=torch.float64), shifts)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_gram_that_is_not_finite_is_an_error(bad):
    G = spd(4, 1)
    G[1, 2] = bad
    with pytest.raises(FloatingPointError, match="NaN/inf"):
        _choleskys(G, torch.tensor([1e-3, 1e-2], dtype=torch.float64))
