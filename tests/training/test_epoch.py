"""lintorch.training.epoch: the predicted class is argmax's, ties and NaN scores included."""
import torch

from lintorch import functional as LF
from lintorch.model import LinearClassifier
from lintorch.training.epoch import _predicted, evaluate


def test_the_predicted_class_is_argmaxs_on_ties_and_nan_rows():
    """Scores laid out as linear_forward returns them ((K, C, N) memory, a transposed view), with tied
    maxima (the first wins) and NaN scores (a NaN counts as the largest)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    W, b = torch.randn(3, 5, 6, generator=g), torch.randn(3, 5, generator=g)
    scores = LF.linear_forward(x, W, b).clone(memory_format=torch.preserve_format)       # (3, 40, 5)
    scores[..., 3] = scores[..., 1]                                  # ties
    scores[:, 0] = 7.0                                               # a whole row tied
    scores[0, 1, 2] = scores[1, 2, :] = scores[2, 3, 4] = float("nan")
    assert not scores.is_contiguous()
    assert torch.equal(_predicted(scores), scores.argmax(-1))
    assert torch.equal(_predicted(scores[0]), scores[0].argmax(-1))


def test_evaluate_counts_argmaxs_hits():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 6, generator=g), torch.randint(0, 4, (30,), generator=g)

    class Batches:
        def batches(self, epoch=0):
            yield x[:16], y[:16]
            yield x[16:], y[16:]
    model = LinearClassifier(6, 4, num_models=2)
    expected = (model(x).argmax(-1) == y).double().mean(-1)
    torch.testing.assert_close(evaluate(model, Batches())["acc"], expected, rtol=0, atol=0)
