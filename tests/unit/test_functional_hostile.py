"""The Python functions under hostile use (issue 20, class I): the losses' reduction="none" output
can be changed in place as F.cross_entropy's can; linear with D = 0 (or N = 0) is F.linear's answer,
forward and backward; a class_weight that requires grad is refused by name rather than given a
silent None gradient."""
import pytest
import torch
import torch.nn.functional as F

import lintorch

S_Y = (torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
       torch.tensor([0, 1, 2, 3, 0, 1]))


def grads_of(fn, S):
    S = S.clone().requires_grad_()
    fn(S).sum().backward()
    return S.grad


@pytest.mark.parametrize("stacked", [False, True])
def test_i_softmax_none_output_can_be_scaled_in_place(stacked):
    S, y = S_Y
    S = S.expand(3, 6, 4).clone() if stacked else S

    def in_place(s):
        L = lintorch.softmax_loss(s, y, reduction="none")
        L *= 2
        return L
    ref = grads_of(lambda s: 2 * F.cross_entropy(s.reshape(-1, 4), y.repeat(3 if stacked else 1),
                                                 reduction="none"), S)
    assert torch.allclose(grads_of(in_place, S), ref)
    L = lintorch.softmax_loss(S, y, reduction="none")
    assert not L._is_view()


def test_i_svm_none_output_can_be_scaled_in_place_too():
    S, y = S_Y

    def in_place(s):
        L = lintorch.svm_loss(s, y, reduction="none")
        L.mul_(3)
        return L
    assert torch.allclose(grads_of(in_place, S), 3 * grads_of(lambda s: lintorch.svm_loss(s, y, reduction="none"), S))


@pytest.mark.parametrize("shape", [(4, 0, 3, None), (0, 5, 3, None), (4, 0, 3, 2), (0, 0, 3, None)])
def test_i_linear_with_no_features_or_no_rows_is_f_linear(shape):
    N, D, C, K = shape
    g = torch.Generator().manual_seed(1)
    lead = (C,) if K is None else (K, C)
    x = torch.randn(N, D, dtype=torch.float64, generator=g).requires_grad_()
    W = torch.randn(*lead, D, dtype=torch.float64, generator=g).requires_grad_()
    b = torch.randn(*lead, dtype=torch.float64, generator=g).requires_grad_()
    s = lintorch.linear(x, W, b)
    ref = F.linear(x, W, b) if K is None else torch.stack([F.linear(x, W[k], b[k]) for k in range(K)])
    assert s.shape == ref.shape and torch.equal(s, ref)
    up = torch.randn(s.shape, dtype=torch.float64, generator=g)
    got = torch.autograd.grad(s, (x, W, b), up)
    want = torch.autograd.grad(ref, (x, W, b), up)
    for a, r in zip(got, want):
        assert a.shape == r.shape and torch.allclose(a, r)


@pytest.mark.parametrize("loss", [lintorch.softmax_loss, lintorch.svm_loss])
def test_i_class_weight_that_requires_grad_is_refused_by_name(loss):
    S, y = S_Y
    w = torch.ones(4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="class_weight requires grad.*detach"):
        loss(S.clone().requires_grad_(), y, class_weight=w)
    plain = loss(S, y, class_weight=w.detach())
    with torch.no_grad():                                   # no graph asked for: nothing is lost
        assert torch.equal(loss(S, y, class_weight=w), plain)
