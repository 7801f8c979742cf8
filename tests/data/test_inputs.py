"""lintorch.data.inputs: what LinearProbe accepts as X and y, and the ValueError/TypeError naming the
argument for what it refuses (scikit-learn's input contract)."""
import numpy as np
import pytest
import torch

from lintorch.data.inputs import as_labels, as_matrix, class_index, flatten, label_kind, sorted_classes


class FrameLike:
    """What pandas gives np.asarray: an __array__ and nothing torch knows."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a if dtype is None else self.a.astype(dtype)


@pytest.mark.parametrize("X", [
    [[1, 2], [3, 4.5]], np.array([[1, 2], [3, 4]], dtype=np.int8), np.array([[True, False], [False, True]]),
    np.array([[1.0, 2.0], [3.0, 4.0]], dtype=">f8"), np.arange(4.0).reshape(2, 2)[::-1],
    np.array([[1, 2.0], [3, 4]], dtype=object), FrameLike(np.ones((2, 2))), torch.ones(2, 2, dtype=torch.float16),
])
def test_matrix_forms_become_floating_tensors_with_their_values(X):
    out = as_matrix(X)
    assert isinstance(out, torch.Tensor) and out.is_floating_point() and out.shape == (2, 2)
    np.testing.assert_array_equal(out.double().numpy(), np.asarray(X, dtype=np.float64))


def test_a_read_only_array_is_read_without_a_warning():
    import warnings
    a = np.ones((3, 2))
    a.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert as_matrix(a).shape == (3, 2)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("X, error, match", [
    (np.zeros((0, 3)), ValueError, "X has 0 rows"),
    (np.zeros((3, 0)), ValueError, "0 features per row"),
    (np.zeros(3), ValueError, r"expected \(N, D\) features: X.reshape\(-1, 1\)"),
    (np.float64(3.0), ValueError, r"shape \(\)"),
    (torch.zeros(2, 3).to_sparse(), TypeError, "X is a sparse tensor.*to_dense"),
    (lambda: torch.zeros(2, 3).to_sparse_csr(), TypeError, "X is a sparse tensor"),
    (torch.zeros(2, 3, device="meta"), ValueError, "meta device"),
    (torch.zeros(2, 3, dtype=torch.complex64), TypeError, "complex"),
    (np.zeros((2, 3)) + 1j, TypeError, "complex"),
    (np.array([["a", "b"]]), TypeError, "X holds <U1 values"),
    (np.array([[object(), 1]]), TypeError, "Python objects that are not numbers"),
    ([[1, 2], [3]], ValueError, "cannot be read as an"),
    (None, TypeError, "X is None"),
])
def test_matrices_refused_name_the_argument(X, error, match):
    X = X() if callable(X) else X               # made in the test, where its beta warning is filtered
    with pytest.raises(error, match=match):
        as_matrix(X)


def test_scipy_sparse_is_refused_by_name():
    sparse = pytest.importorskip("scipy.sparse", reason="scipy is optional: the sparse-matrix case needs it")
    with pytest.raises(TypeError, match=r"scipy.sparse matrix.*toarray\(\)"):
        as_matrix(sparse.csr_matrix(np.eye(3)), "X")


@pytest.mark.parametrize("y, kind", [
    (np.array([3, 1, 3]), "number"), (np.array([True, False, True]), "number"), (np.array([1.0, 2.0, 1.0]), "number"),
    (np.array(["cat", "dog", "cat"]), "string"), (np.array(["cat", "dog", "cat"], dtype=object), "string"),
    (np.array([5, 2, 5], dtype=object), "number"), (torch.tensor([1, 0, 1], dtype=torch.uint8), "number"),
    (["a", "b", "a"], "string"),
])
def test_labels_of_every_kind_scikit_learn_classifies(y, kind):
    out = as_labels(y, 3)
    assert out.shape == (3,) and label_kind(out) == kind
    classes, index = sorted_classes(out)
    np.testing.assert_array_equal(classes, np.unique(np.asarray(y)))
    np.testing.assert_array_equal(classes[index], np.asarray(y))


@pytest.mark.parametrize("y, error, match", [
    (np.array([[0], [1], [0]]), ValueError, r"shape \(3, 1\); expected \(3,\) labels.*y.ravel\(\)"),
    (np.array([0, 1]), ValueError, "y has 2 labels for 3 rows of X"),
    (np.array([0.5, 1.0, 2.0]), ValueError, "non-integral floats"),
    (np.array([np.nan, 1.0, 2.0]), ValueError, "NaN or infinite labels"),
    (np.array(["a", 1, "b"], dtype=object), ValueError, "mixed or unsupported types"),
    (np.array([1 + 1j, 2, 3]), ValueError, "complex128 labels"),
    (None, TypeError, "y is None"),
])
def test_labels_refused_name_the_argument(y, error, match):
    with pytest.raises(error, match=match):
        as_labels(y, 3)


def test_validation_labels_must_be_of_the_training_labels_kind_and_values():
    classes = np.array([1, 2, 3])
    np.testing.assert_array_equal(class_index(classes, np.array([3, 1]), "y_val", "y"), [2, 0])
    with pytest.raises(ValueError, match="y_val holds strings, y held numbers"):
        class_index(classes, np.array(["1", "2"]), "y_val", "y")      # np.setdiff1d would match "1" to 1
    with pytest.raises(ValueError, match="y_val holds labels not in y: 7"):
        class_index(classes, np.array([1, 7]), "y_val", "y")


def test_examples_are_flattened_only_from_the_training_shape():
    x = torch.arange(24.0).view(2, 3, 2, 2)
    torch.testing.assert_close(flatten(x, (3, 2, 2)), x.reshape(2, 12))
    assert flatten(x.reshape(2, 12), (3, 2, 2)).shape == (2, 12)          # already flattened rows
    with pytest.raises(ValueError, match=r"examples of shape \(3, 4\); this probe was trained on .*\(3, 2, 2\)"):
        flatten(x.reshape(2, 3, 4), (3, 2, 2))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_names_the_first_row_holding_nan_or_inf(bad):
    from lintorch.data.inputs import check_finite
    X = torch.randn(50, 4)
    X[9, 2], X[30, 0] = bad, bad
    with pytest.raises(ValueError, match=r"X holds NaN or infinite values \(row 9\)"):
        check_finite(X, "X")


def test_check_finite_accepts_finite_values_whose_sum_overflows():
    from lintorch.data.inputs import check_finite
    X = torch.full((10, 3), torch.finfo(torch.float32).max / 2)
    assert not bool(X.sum().isfinite())       # the sum's shortcut cannot decide: the element test does
    check_finite(X, "X")
    check_finite(torch.zeros(0, 3), "X")


@pytest.mark.parametrize("classes, labels", [
    (np.array([1, 2, 3]), np.array([0, 2, 9, 4, 0])), (np.array([1.0, 2.0]), np.array([1.0, 5.0, 3.0, 0.0])),
    (np.array(["cat", "dog"]), np.array(["ant", "dog", "emu", "ant"])),
    (np.array(["cat", "dog"], dtype=object), np.array(["cow", "cat"], dtype=object)),
])
def test_unknown_validation_labels_are_named_as_sorted_unique_values(classes, labels):
    """Every label the training labels never held is refused, each named once, sorted (below, past
    and between the known ones), as np.setdiff1d named them."""
    unknown = ", ".join(map(repr, np.setdiff1d(labels, classes)[:5].tolist()))
    with pytest.raises(ValueError, match=f"^y_val holds labels not in y: {unknown}$"):
        class_index(classes, labels, "y_val", "y")
    known = labels[np.isin(labels, classes)]
    np.testing.assert_array_equal(classes[class_index(classes, known, "y_val", "y")], known)


@pytest.mark.parametrize("y", [
    np.array([3, 1, 3, 7]), np.array([-128, 127, 0, -128], dtype=np.int8), np.array([2, 65535, 2], dtype=np.uint16),
    np.array([-5, 10, -5], dtype=np.int64) * 10 ** 6, np.array([2 ** 64 - 1, 0, 5], dtype=np.uint64),
    np.array([1 << 17, 0, 1 << 17]), np.array([True, False, True]), np.array(["b", "a", "b"]),
])
def test_sorted_classes_is_np_unique_whether_counted_or_sorted(y):
    """Labels over a short integer span are counted, others sorted: either way np.unique's classes
    (values and dtype) and inverse."""
    classes, index = sorted_classes(y)
    expected, inverse = np.unique(y, return_inverse=True)
    assert classes.dtype == expected.dtype and index.dtype == np.int64
    np.testing.assert_array_equal(classes, expected)
    np.testing.assert_array_equal(index, inverse.reshape(-1))
