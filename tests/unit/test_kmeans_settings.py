"""features/kmeans.py's settings that make useless features: --centroids 1 with the triangle code
(every feature 0) refused before fitting; a --zca-eps far above any patch covariance eigenvalue
warned about once."""
import pytest
import torch

from lintorch.errors import FeatureError
from lintorch.features import extract, make_extractor


def images(n=12):
    return torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_one_centroid_with_the_triangle_code_is_refused():
    ex = make_extractor("kmeans", k=1, patches=50, image_size=12)
    with pytest.raises(FeatureError, match="--centroids 1"):
        ex.check_settings(12)
    soft = make_extractor("kmeans", k=1, patches=50, image_size=12, encoding="soft", alpha=0.0)
    soft.fit(images())
    f = extract(soft, images())                   # the soft code with one centroid still varies
    assert bool((f.amax(0) > f.amin(0)).any())


def test_a_huge_zca_eps_is_warned_about_once(caplog):
    ex = make_extractor("kmeans", k=4, patches=50, image_size=12, zca_eps=1e30)
    ex.check_settings(12)
    ex.fit(images())
    lines = [r.getMessage() for r in caplog.records if "zca-eps" in r.getMessage()]
    assert len(lines) == 1 and "1e+30" in lines[0]
    caplog.clear()
    make_extractor("kmeans", k=4, patches=50, image_size=12).check_settings(12)
    assert "zca-eps" not in caplog.text
