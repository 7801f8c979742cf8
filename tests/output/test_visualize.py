"""lintorch.output.visualize: the pictures legible at TensorBoard's card width."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lintorch.features.kmeans import centroid_picture
from lintorch.output.visualize import CARD, captioned, confusion_image, confusion_layout, font, template_grid
from tests.conftest import FOLDER, KMEANS
from tests.helpers import train, without


CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _rgb(t):
    return np.asarray(t.permute(1, 2, 0).numpy(), dtype=np.int16)


def _ink(region, bg):
    """region (H, W, 3) -> the bounding box crop of the pixels far from the colour bg (a bool mask)."""
    mask = np.abs(region - np.asarray(bg, dtype=np.int16)).max(-1) > 40
    ys, xs = np.nonzero(mask)
    assert len(ys), "nothing drawn"
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _alone(text, size, bg=(255, 255, 255), fill="black"):
    """text rendered on its own in the pictures' font -> its ink mask."""
    f = font(size)
    w, h = int(f.getlength(text)) + 2 * int(size), int(size * 2)
    im = Image.new("RGB", (w, h), bg)
    ImageDraw.Draw(im).text((size, size), text, font=f, fill=fill, anchor="lm")
    return _ink(np.asarray(im, dtype=np.int16), bg)


def _iou(got, want):
    h, w = min(got.shape[0], want.shape[0]), min(got.shape[1], want.shape[1])
    a, b = got[:h, :w], want[:h, :w]
    return (a & b).sum() / (a | b).sum()


def assert_drawn(region, text, size, width, bg=(255, 255, 255), fill="black"):
    """region holds `text` drawn at font `size` (the same ink as the text rendered alone), a size
    whose digits and capitals stand >= 9 px tall at the card's width."""
    got, want = _ink(region, bg), _alone(text, size, bg, fill)
    assert abs(got.shape[0] - want.shape[0]) <= 1 and abs(got.shape[1] - want.shape[1]) <= 1, (text, got.shape,
                                                                                                 want.shape)
    assert _iou(got, want) > 0.9, text          # the same letters, not merely some ink
    tall = _alone("0123456789ABC", size).shape[0] * CARD / width
    assert tall >= 9, (text, tall)
    return got


def _cifar_cm():
    g = torch.Generator().manual_seed(0)
    cm = torch.randint(0, 60, (10, 10), generator=g) + torch.diag(torch.randint(150, 450, (10,), generator=g))
    cm[0, 0], cm[1, 1] = 282, 85        # the counts a 6-px bitmap font drew as "202" and "05"
    return cm


def test_confusion_matrix_draws_every_count_and_full_name_legibly():
    cm = _cifar_cm()
    img = _rgb(confusion_image(cm, CIFAR))
    L = confusion_layout(cm, CIFAR)
    size, cell, left, top, W = L["size"], L["cell"], L["left"], L["top"], L["width"]
    assert img.shape[1] == W
    for i in range(10):
        for j in range(10):
            box = img[top + i * cell + 1: top + (i + 1) * cell - 2, left + j * cell + 1: left + (j + 1) * cell - 2]
            bg = tuple(int(c) for c in box[1, 1])
            assert_drawn(box, str(int(cm[i, j])), size, W, bg, "white" if bg[0] < 128 else "black")
        assert_drawn(img[top + i * cell: top + (i + 1) * cell, :left], CIFAR[i], size, W)     # row: true class
        column = img[int(1.45 * size): top - 1, left + i * cell: left + (i + 1) * cell]
        assert_drawn(np.rot90(column, k=-1), CIFAR[i], size, W)                           # column: predicted
    assert_drawn(img[:int(1.45 * size), left:], "predicted", size, W)
    assert_drawn(img[top - int(1.5 * size): top, :left], "true", size, W)


def test_confusion_matrix_tells_282_from_202():
    cm = _cifar_cm()
    img = _rgb(confusion_image(cm, CIFAR))
    L = confusion_layout(cm, CIFAR)
    box = img[L["top"] + 1: L["top"] + L["cell"] - 2, L["left"] + 1: L["left"] + L["cell"] - 2]
    bg = tuple(int(c) for c in box[1, 1])
    fill = "white" if bg[0] < 128 else "black"
    got = _ink(box, bg)
    right, wrong = _iou(got, _alone("282", L["size"], bg, fill)), _iou(got, _alone("202", L["size"], bg, fill))
    assert right > 0.95 and wrong < right - 0.1, (right, wrong)


@pytest.mark.slow
def test_templates_fit_the_card_with_every_full_name():
    w = torch.randn(10, 3 * 32 * 32, generator=torch.Generator().manual_seed(1))
    img = template_grid(w, CIFAR, (3, 32, 32))
    assert img.shape[2] <= 2 * CARD                              # shown at the card's width: no scrollbar
    base = _rgb(img)
    for c, name in enumerate(CIFAR):
        other = list(CIFAR)
        other[c] = name[::-1]                   # the same letters elsewhere: the layout stays, the name moves
        diff = np.abs(base - _rgb(template_grid(w, other, (3, 32, 32)))).max(-1) > 0
        ys, xs = np.nonzero(diff)
        region = base[ys.min() - 2:ys.max() + 3, xs.min() - 2:xs.max() + 3]
        size = _size_of(region, name)
        assert_drawn(region, name, size, img.shape[2])


def _size_of(region, text):
    """The font size at which `text`'s ink is as tall as region's."""
    h = _ink(region, (255, 255, 255)).shape[0]
    return min(range(4, 80), key=lambda s: abs(_alone(text, s).shape[0] - h) + abs(
        _alone(text, s).shape[1] - _ink(region, (255, 255, 255)).shape[1]) / 10)


def test_caption_is_drawn_legibly_above_the_picture():
    pic = torch.zeros(3, 100, 501, dtype=torch.uint8)
    out = _rgb(captioned(pic, "400 of 1,600 filters"))
    strip = out[: out.shape[0] - 100]
    assert out.shape[1] == 2 * CARD and (out[-100:, 99:600] == 0).all()        # the picture, centred, below
    assert_drawn(strip, "400 of 1,600 filters", _size_of(strip, "400 of 1,600 filters"), out.shape[1])


@pytest.mark.parametrize("K, says", [(1600, "the first 400 of 1,600"), (64, "all 64")])
def test_centroids_picture_says_how_many_filters_it_shows(K, says):
    state = {"centroids": torch.randn(K, 3 * 6 * 6, generator=torch.Generator().manual_seed(2))}
    from lintorch.features.kmeans import centroid_grid
    grid = centroid_grid(state, 6)
    want = captioned(grid, f"k-means filters: {says} (6x6 patches, whitened, each stretched on its own)")
    assert torch.equal(centroid_picture(state, 6), want)
    assert grid.shape[-1] < 6 * 4 * 21 + 21 + 1          # 400 tiles at most: 20 a row


def test_a_sweep_shows_the_centroids_once_and_members_sorted_in_hparams(image_folder, tmp_path):
    """TensorBoard with a K-member sweep: the centroid picture once, at the run folder,
    not once per member; each member's trial ID is '<run>/mNN-<its values>'."""
    import os

    from tensorboard.plugins.hparams import metadata
    from tests.helpers import events
    logdir = tmp_path / "sweep"
    assert train(*without(FOLDER, "--epochs"), "--data-dir", str(image_folder), *KMEANS, "--optimizer",
                 "lbfgs", "--max-iter", "5", "--sweep", "reg=1e-3,1e-2,1e-1", "--logdir", str(logdir)) == 0
    members = sorted(d for d in os.listdir(logdir) if (logdir / d).is_dir())
    assert len(members) == 3
    assert len(events(logdir).Images("centroids")) == 1
    ids = []
    for m in members:
        acc = events(logdir / m)
        assert "centroids" not in acc.Tags()["images"]
        start = acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
        ids.append(metadata.parse_session_start_info_plugin_data(start).group_name)
    assert sorted(ids) == ["sweep/m00-reg=0.001", "sweep/m01-reg=0.01", "sweep/m02-reg=0.1"]
