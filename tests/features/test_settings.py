"""features.settings: each extractor setting declared once; the extractors' defaults, train's and
extract's flags (type, bounds, choices, help), HPARAMS' columns and the settings a run passes all
follow the declaration."""
import argparse

import pytest

from lintorch.features.settings import SETTINGS, by_flag


def _actions(parser):
    return {a.dest: a for a in parser._actions}


def test_every_declared_setting_is_the_extractors_default_and_a_flag_of_train_and_extract():
    from lintorch.config import TrainConfig, get_args_parser as train_parser
    from lintorch.extract import get_args_parser as extract_parser
    from lintorch.features.backbone import TorchvisionBackbone
    from lintorch.features.kmeans import KMeansFeatures
    owners = {"kmeans": KMeansFeatures, "torchvision:": TorchvisionBackbone}
    assert set(owners) == set(SETTINGS)
    train, extract = _actions(train_parser()), _actions(extract_parser())
    for owner, settings in SETTINGS.items():
        assert owners[owner].SETTINGS == settings
        for s in settings:
            assert owners[owner].DEFAULTS[s.key] == s.default
            assert extract[s.flag].default is None and getattr(TrainConfig(), s.flag) is None   # the extractor's
            for parser in (train, extract):
                action = parser[s.flag]
                assert action.choices == s.choices
                assert action.help.startswith(owner.rstrip(":") + ": ")
                assert s.help.format(default=s.default) in action.help


@pytest.mark.parametrize("name", sorted(by_flag()))
def test_train_and_extract_refuse_the_same_values_at_the_declared_bounds(name):
    from lintorch.config import get_args_parser as train_parser
    from lintorch.extract import get_args_parser as extract_parser
    s = by_flag()[name][1]
    kinds = [_actions(p())[name].type for p in (train_parser, extract_parser)]
    if s.choices or s.kind is str:
        return
    below = s.low if s.low_open else s.low - 1
    for kind in kinds:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(str(below))
        if s.high is not None:
            with pytest.raises(argparse.ArgumentTypeError):
                kind(str(s.high * 2))
        assert kind(str(s.default)) == s.default


def test_a_run_passes_each_declared_setting_by_its_key_and_hparams_shows_it_by_its_flag():
    from types import SimpleNamespace
    from lintorch.data.featurize import extractor_settings
    from lintorch.output.hparams import HPARAMS, member_hparams
    values = {name: f"value-of-{name}" for name in by_flag()}
    passed = extractor_settings(SimpleNamespace(image_size=32, seed=0, **values))
    assert {s.key: passed[s.key] for _, s in by_flag().values()} == {s.key: values[n] for n, (_, s) in by_flag().items()}
    assert set(by_flag()) <= set(HPARAMS)
    part = SimpleNamespace(settings={"k": 64, "power": 0.5, "weights": "DEFAULT"})
    shown = member_hparams({"loss": "softmax", "optimizer": "sgd", "features": "kmeans"}, (), part)
    assert shown["centroids"] == "64" and shown["power"] == 0.5 and shown["backbone_weights"] == "DEFAULT"
