"""lintorch.features.base: non-finite features are refused where they are made."""
import pytest

from lintorch.features import FeatureError, batches_of_features, extract
from lintorch.features.base import Pixels
from tests.conftest import nan_transform
from tests.features.conftest import random_images


class NaNPixels(Pixels):
    transform = nan_transform


def test_non_finite_features_are_refused_where_they_are_made():
    with pytest.raises(FeatureError, match="image 1 .*NaN/inf"):
        extract(NaNPixels(image_size=8), random_images(4, 8), batch_size=4)
    with pytest.raises(FeatureError, match="image 1 "):
        list(batches_of_features(NaNPixels(image_size=8), random_images(8, 8), batch_size=4))
