"""features/store.py: a feature folder's .pt split holding what is not a dense CPU tensor (sparse
COO or CSR, as x or y) is one line naming the file and the tensor, with no torch warning."""
import warnings

import pytest
import torch

from lintorch.errors import FeatureError
from lintorch.features import store


@pytest.mark.parametrize("name, make", [("x", lambda t: t.to_sparse()), ("x", lambda t: t.to_sparse_csr()),
                                        ("y", lambda t: t.to_sparse())])
def test_sparse_tensors_are_refused_by_name(tmp_path, name, make):
    x, y = torch.randn(6, 3), torch.arange(6) % 2
    store.write_classes(tmp_path, ["a", "b"])
    d = {"x": x, "y": y}
    d[name] = make(d[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(d, tmp_path / "train.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # torch's own notes on sparse loads stay quiet
        with pytest.raises(FeatureError) as e:
            store.open_folder(str(tmp_path))
    text = str(e.value)
    assert "train.pt" in text and f"{name} is a sparse" in text and "to_dense" in text and "\n" not in text
