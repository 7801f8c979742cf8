"""lintorch.verify.arguments: check_function's bad arguments, each one error naming it."""
import pytest
import torch

import lintorch
from tests.verify.conftest import scaled_rand


# --------------------------------------------------------------------------- arguments

X = scaled_rand(3)


@pytest.mark.parametrize("kwargs,error,name", [
    (dict(eps=0), ValueError, "eps"), (dict(eps=-1e-6), ValueError, "eps"), (dict(eps=float("nan")), ValueError, "eps"),
    (dict(eps="1e-6"), TypeError, "eps"),
    (dict(tol=float("nan")), ValueError, "tol"), (dict(tol=-1), ValueError, "tol"),
    (dict(tol={"numeric": float("inf")}), ValueError, "tol"), (dict(tol={"numerik": 1e-6}), ValueError, "tol"),
    (dict(samples=0), ValueError, "samples"), (dict(samples=2.5), TypeError, "samples"),
    (dict(wrt=()), ValueError, "wrt"), (dict(wrt=0), TypeError, "wrt"), (dict(wrt=(5,)), ValueError, "wrt"),
    (dict(device="garbage"), ValueError, "device"),
    (dict(seed=1.5), TypeError, "seed"), (dict(dtypes=(torch.int64,)), ValueError, "dtypes"),
    (dict(kinks="yes"), TypeError, "kinks"), (dict(reference=3), TypeError, "reference"),
    (dict(checks=("numerik",)), ValueError, "checks"), (dict(name=3), TypeError, "name"),
])
def test_every_bad_argument_raises_one_error_naming_it(kwargs, error, name):
    with pytest.raises(error, match=name):
        lintorch.check_function(torch.sin, X, **kwargs)


def test_a_non_callable_and_cuda_without_cuda_are_refused():
    with pytest.raises(TypeError, match="fn must be callable"):
        lintorch.check_function("sin", X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: cuda"):
            lintorch.check_function(torch.sin, X, device="cuda")
