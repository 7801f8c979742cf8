"""cs231n assignment 1's hand-made features, batched: HOG and a hue histogram.

Shapes: N images (N, 3, S, S) uint8 (pixels 0..255), c = S // 8 cells per side, O = 9 orientations.

``hog`` follows cs231n's ``hog_feature`` exactly, including its quirks: grayscale with weights
(0.299, 0.587, 0.144) (sic), forward differences (0 in the last column/row), orientation
atan2(gy, gx + 1e-15) in degrees + 90, bin i holding orientations in [20 i, 20 i + 20) and > 0 (so
gradients pointing "up" with orientation outside [0, 180) are dropped, as there), each cell the
*mean* magnitude of its bin over its 8 x 8 pixels, flattened as (column cell, row cell, O).
Computed in float64 so the bin edges fall as in the NumPy original.

``colorhist`` is ``color_histogram_hsv(im, nbin, 0, 255, normalized=True)``: the fraction of pixels
whose HSV hue (matplotlib's definition, grey pixels hue 0) falls in each of nbin equal bins;
the bin is found with exact integer arithmetic, so CPU and CUDA agree.
"""
import torch
import torch.nn.functional as F

from ..errors import FeatureError
from .base import Extractor

GRAY = (0.299, 0.587, 0.144)
ORIENTATIONS, CELL = 9, 8


def hog(x):
    """x uint8 (N, 3, S, S) -> float32 (N, c * c * 9)."""
    xf = x.double()
    gray = xf[:, 0] * GRAY[0] + xf[:, 1] * GRAY[1] + xf[:, 2] * GRAY[2]      # (N, S, S)
    gx, gy = torch.zeros_like(gray), torch.zeros_like(gray)
    gx[:, :, :-1] = gray[:, :, 1:] - gray[:, :, :-1]
    gy[:, :-1, :] = gray[:, 1:, :] - gray[:, :-1, :]
    mag = torch.sqrt(gx.square() + gy.square())
    ori = torch.rad2deg(torch.atan2(gy, gx + 1e-15)) + 90
    width = 180 / ORIENTATIONS
    b = torch.floor(ori / width)
    # the original tests ori < width (i + 1) and ori >= width i; floor can differ from that at an edge
    b = b - (ori < width * b).double() + (ori >= width * (b + 1)).double()
    valid = (ori > 0) & (b >= 0) & (b < ORIENTATIONS)
    onehot = F.one_hot(torch.where(valid, b, 0).long(), ORIENTATIONS).double()   # (N, S, S, O)
    weighted = (onehot * (mag * valid).unsqueeze(-1)).permute(0, 3, 1, 2)      # (N, O, S, S)
    cells = F.avg_pool2d(weighted, CELL)                                       # (N, O, c, c), floor
    return cells.permute(0, 3, 2, 1).reshape(x.shape[0], -1).float()          # (col, row, O)


def hue_bins(x, nbin=10):
    """x uint8 (N, 3, S, S) -> int64 (N, S, S): each pixel's hue bin floor(nbin * hue)."""
    xi = x.long()
    r, g, b = xi[:, 0], xi[:, 1], xi[:, 2]
    mx, mn = xi.max(1).values, xi.min(1).values
    delta = mx - mn
    # hue = num / (6 delta) mod 1, num = sector delta + difference; blue wins ties, then green (matplotlib)
    num = torch.where(b == mx, 4 * delta + r - g, torch.where(g == mx, 2 * delta + b - r, g - b))
    six = 6 * delta
    num = torch.where(num < 0, num + six, num)
    return torch.where(delta > 0, (nbin * num).div(six.clamp_min(1), rounding_mode="floor"), 0).clamp_max(nbin - 1)


def colorhist(x, nbin=10):
    """x uint8 (N, 3, S, S) -> float32 (N, nbin): fraction of pixels per hue bin."""
    bins = hue_bins(x, nbin).flatten(1)                                          # (N, S S)
    counts = torch.zeros(x.shape[0], nbin, device=x.device).scatter_add_(
        1, bins, torch.ones(bins.shape, device=x.device))
    return counts / bins.shape[1]


# --------------------------------------------------------------------------- the extractors

class HOG(Extractor):
    """features "hog": (N, (S // 8)^2 * 9)."""

    NAME = "hog"
    DEFAULTS = {"image_size": 32}

    @property
    def dim(self):
        return (self.settings["image_size"] // CELL) ** 2 * ORIENTATIONS

    def check_settings(self, image_size):
        if image_size < CELL:
            raise FeatureError(f"hog features need images of at least {CELL} px (one {CELL} x {CELL} cell); "
                               f"--image-size is {image_size}")

    def transform(self, x):
        self.check_images(x)
        self.check_settings(x.shape[-1])
        return hog(x)


class ColorHist(Extractor):
    """features "colorhist": (N, nbin) hue histogram."""

    NAME = "colorhist"
    DEFAULTS = {"nbin": 10}

    @property
    def dim(self):
        return self.settings["nbin"]

    def transform(self, x):
        self.check_images(x)
        return colorhist(x, self.settings["nbin"])
