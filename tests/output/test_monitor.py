"""lintorch.output.monitor: histograms and pictures as SummaryWriter writes them."""
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.tensorboard.summary import make_histogram

from lintorch.output.monitor import Monitor
from tests.conftest import BASE, train_auto_threads
from tests.helpers import events, events as _events


@pytest.mark.parametrize("values", [torch.randn(10, 3072) * 1e-3, torch.tensor([0.0, 0.0, 1.0]),
                                    torch.tensor([-2.5]), torch.tensor([float("inf"), 3.0, -1e-13])])
def test_histogram_matches_add_histogram(tmp_path, values):
    m = Monitor(str(tmp_path))
    m.histogram("weight", values, 7)
    m.close()
    (event,) = _events(tmp_path).Histograms("weight")
    got = event.histogram_value
    finite = values.flatten().double()
    finite = finite[finite.abs() < 1e20].numpy()
    want = make_histogram(finite, np.array(m.writer.default_bins))
    assert event.step == 7 and got.num == want.num and got.bucket == list(want.bucket)
    assert got.bucket_limit == pytest.approx(list(want.bucket_limit), rel=1e-12)
    assert (got.min, got.max, got.sum, got.sum_squares) == pytest.approx((want.min, want.max, want.sum,
                                                                          want.sum_squares), rel=1e-9)


def test_histogram_of_nothing_finite_writes_nothing(tmp_path):
    m = Monitor(str(tmp_path))
    m.histogram("grad", torch.full((3, 4), float("nan")), 1)
    m.close()
    assert "grad" not in _events(tmp_path).Tags()["histograms"]


def test_image_keeps_every_pixel(tmp_path):
    img = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    m = Monitor(str(tmp_path))
    m.epoch(3, templates=img)
    m.close()
    (event,) = _events(tmp_path).Images("templates")
    decoded = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))
    assert event.step == 3 and (event.width, event.height) == (30, 20)
    assert np.array_equal(decoded, img.permute(1, 2, 0).numpy())


def test_sweep_grad_histogram_is_the_gradient_not_the_step(tmp_path):
    run = tmp_path / "sweep"
    assert train_auto_threads(*BASE, "--image-size", 8, "--val-size", 500, "--log-every", 2, "--sweep", "lr=0.0003,0.03",
                              "--logdir", run) == 0
    slow, fast = events(run / "lr=0.0003"), events(run / "lr=0.03")
    g_slow, g_fast = slow.Scalars("norm/grad")[0].value, fast.Scalars("norm/grad")[0].value
    assert 0.3 < g_slow / g_fast < 3, (g_slow, g_fast)           # lr * dW would be 100x apart
    h_slow, h_fast = slow.Histograms("grad")[0].histogram_value, fast.Histograms("grad")[0].histogram_value
    ratio = (h_slow.sum_squares / h_fast.sum_squares) ** 0.5
    assert 0.1 < ratio < 10, ratio
