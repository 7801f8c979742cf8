"""lintorch.features.registry: state dict round trip, fingerprints, and the --features lists it refuses."""
import pytest
import torch

from lintorch.errors import FeatureError
from lintorch.features import extract, from_state_dict, make_extractor
from lintorch.names import repeated_parts
from tests.features.conftest import images, refused


@pytest.mark.parametrize("text, twice", [("hog,hog", "hog"), ("hog, colorhist ,hog", "hog"),
                                         ("colorhist,hog,colorhist", "colorhist")])
def test_a_part_named_twice_is_refused(text, twice):
    assert repeated_parts(text) == [twice]
    with pytest.raises(FeatureError, match=f"names {twice} twice"):
        make_extractor(text)


def test_distinct_parts_are_fine():
    assert repeated_parts("hog,colorhist") == []
    assert make_extractor("hog,colorhist").name == "hog,colorhist"


# --------------------------------------------------------------------------- registry, state, fingerprint

def test_registry_state_dict_round_trip_and_fingerprints(tmp_path):
    x = images(20, 16, seed=9)
    ex = make_extractor("kmeans", k=5, patches=500, iterations=3).fit(x)
    path = tmp_path / "ex.pt"
    torch.save(ex.state_dict(), path)
    back = from_state_dict(torch.load(path, weights_only=True))
    assert from_state_dict(ex.state_dict()).fingerprint() == ex.fingerprint()
    assert back.fingerprint() == ex.fingerprint()
    assert torch.equal(extract(back, x[:3]), extract(ex, x[:3]))
    fp = {make_extractor(n, **s).fingerprint()
          for n, s in [("kmeans", {"k": 5}), ("kmeans", {"k": 6}), ("kmeans", {"patches": 10}), ("hog", {}),
                       ("colorhist", {}), ("colorhist", {"nbin": 12}), ("hog,colorhist", {}), ("pixels", {})]}
    assert len(fp) == 8
    assert ex.fingerprint() != make_extractor("kmeans", k=5, patches=500, iterations=3).fingerprint()
    refit = make_extractor("kmeans", k=5, patches=500, iterations=3, seed=1).fit(x)
    assert refit.fingerprint() != ex.fingerprint()
    same = make_extractor("kmeans", k=5, patches=500, iterations=3, method="conv").fit(x)  # how, not what
    assert same.fingerprint() == ex.fingerprint()
    hc = make_extractor("hog,colorhist", nbin=12)
    assert from_state_dict(hc.state_dict()).fingerprint() == hc.fingerprint()


def test_registry_errors():
    for name, settings in [("sift", {}), ("kmeans", {"bins": 3}), ("", {})]:
        with pytest.raises(FeatureError) as e:
            make_extractor(name, **settings)
        assert "\n" not in str(e.value)
    with pytest.raises(FeatureError, match="not fitted"):
        make_extractor("kmeans", k=3).transform(images(1, 16))


def test_a_concatenation_asks_every_part():
    refused(make_extractor("colorhist,hog", image_size=4), 4, "hog")
