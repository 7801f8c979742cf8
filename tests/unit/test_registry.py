"""features/registry.py: a --features list naming a part twice is refused (its columns would repeat)."""
import pytest

from lintorch.errors import FeatureError
from lintorch.features import make_extractor
from lintorch.names import repeated_parts


@pytest.mark.parametrize("text, twice", [("hog,hog", "hog"), ("hog, colorhist ,hog", "hog"),
                                         ("colorhist,hog,colorhist", "colorhist")])
def test_a_part_named_twice_is_refused(text, twice):
    assert repeated_parts(text) == [twice]
    with pytest.raises(FeatureError, match=f"names {twice} twice"):
        make_extractor(text)


def test_distinct_parts_are_fine():
    assert repeated_parts("hog,colorhist") == []
    assert make_extractor("hog,colorhist").name == "hog,colorhist"
