"""lintorch.cli: one-line errors, the sweep grammar, usage errors that point at --help."""
import argparse

import pytest

from lintorch.cli import one_line
from tests.conftest import usage_error


def test_a_logspace_whose_points_round_together_says_so():
    from lintorch.config import parse_sweep_item
    with pytest.raises(argparse.ArgumentTypeError) as e:
        parse_sweep_item("reg=logspace:1e-3:1.000001e-3:5")
    assert "round to the same value" in str(e.value) and "twice" not in str(e.value)
    with pytest.raises(argparse.ArgumentTypeError, match="lists 0.001 twice"):
        parse_sweep_item("reg=0.001,0.001")


def test_one_line_drops_terminal_escapes():
    assert one_line(RuntimeError("Weights only load failed. \x1b[1mdo those steps\x1b[0m.\n more")) == \
        "Weights only load failed. do those steps. more"


@pytest.mark.parametrize("item", ["lr=1e-3,1e-3", "lr=1e-3,0.001", "reg=0,0.0"])
def test_sweep_listing_a_value_twice_is_a_usage_error(item, capsys):
    from lintorch.config import parse_args
    assert "twice" in usage_error(parse_args, ["--sweep", item], capsys)


# --------------------------------------------------------------------------- usage errors everywhere

def _parsers():
    from lintorch import bench, config, evaluate, gradcheck, predict
    return {"train": config.parse_args, "evaluate": evaluate.main, "predict": predict.main,
            "gradcheck": gradcheck.main, "bench": bench.main}


@pytest.mark.parametrize("command, argv", [("train", ["--epochs", "x"]), ("train", ["--bogus"]),
                                           ("evaluate", []), ("evaluate", ["c.pt", "--split", "nope"]),
                                           ("predict", ["c.pt"]), ("predict", ["c.pt", "x.png", "--top-k", "0"]),
                                           ("gradcheck", ["--seed", "x"]), ("gradcheck", ["--bogus"]),
                                           ("bench", ["--batch-size", "x"]), ("bench", ["--repeats", "0"])])
def test_every_usage_error_is_one_line_pointing_at_help(command, argv, capsys):
    usage_error(_parsers()[command], argv, capsys)
