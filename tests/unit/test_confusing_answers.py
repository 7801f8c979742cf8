"""Answers that named the wrong cause or value (issue 20, "confusing answers"): a logspace whose
points round together, resuming a run whose optimizer keeps no resumable state, --backbone-weights
files that are pickles or do not fit (no torch advice to turn weights_only off, no terminal escape
codes, the whole mismatch counted rather than its first line)."""
import argparse
import json

import pytest
import torch

from lintorch.cli import one_line
from lintorch.errors import BackboneError, CheckpointError


def test_a_logspace_whose_points_round_together_says_so():
    from lintorch.config import parse_sweep_item
    with pytest.raises(argparse.ArgumentTypeError) as e:
        parse_sweep_item("reg=logspace:1e-3:1.000001e-3:5")
    assert "round to the same value" in str(e.value) and "twice" not in str(e.value)
    with pytest.raises(argparse.ArgumentTypeError, match="lists 0.001 twice"):
        parse_sweep_item("reg=0.001,0.001")


@pytest.mark.parametrize("optimizer", ["lbfgs", "random-search"])
def test_resuming_a_run_that_keeps_no_resumable_state_names_the_optimizer(tmp_path, optimizer):
    from lintorch.output.checkpoint import last_path
    (tmp_path / "config.json").write_text(json.dumps({"optimizer": optimizer}))
    with pytest.raises(CheckpointError, match=f"--optimizer {optimizer}.*start a new run"):
        last_path(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"optimizer": "sgd"}))
    assert last_path(str(tmp_path)).endswith("last.pt")          # sgd: the usual "no such file" later


def test_one_line_drops_terminal_escapes():
    assert one_line(RuntimeError("Weights only load failed. \x1b[1mdo those steps\x1b[0m.\n more")) == \
        "Weights only load failed. do those steps. more"


class Opaque:
    pass


def test_backbone_weights_that_are_a_pickle_or_do_not_fit_are_one_plain_line(tmp_path):
    from lintorch.features.backbone import _load_weights
    import torchvision
    model = torchvision.models.get_model("resnet18", weights=None)
    torch.save({"model": Opaque()}, tmp_path / "pickle.pt")
    with pytest.raises(BackboneError) as e:
        _load_weights(model, "resnet18", str(tmp_path / "pickle.pt"))
    msg = str(e.value)
    assert "Python objects" in msg and "weights_only=False" not in msg and "\x1b" not in msg and "\n" not in msg
    sd = model.state_dict()
    sd.pop("fc.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["conv1.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "other.pt")
    with pytest.raises(BackboneError) as e:
        _load_weights(model, "resnet18", str(tmp_path / "other.pt"))
    msg = str(e.value)
    for words in ("1 missing key(s) (e.g. fc.bias)", "1 unexpected key(s) (e.g. extra.weight)",
                  "1 of another shape (e.g. conv1.weight (3, 3) vs (64, 3, 7, 7))"):
        assert words in msg, msg
    good = torchvision.models.get_model("resnet18", weights=None).state_dict()
    torch.save(good, tmp_path / "good.pt")
    _load_weights(model, "resnet18", str(tmp_path / "good.pt"))
    assert torch.equal(model.conv1.weight, good["conv1.weight"])


def test_a_second_ctrl_c_while_a_solvers_answer_is_saved_waits_for_the_save():
    import os
    import signal
    from lintorch.training.run import StopFlag
    stop = StopFlag()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop() and stop.signum == signal.SIGINT
        stop.saving = True                          # train_lbfgs: the solver returned, its result is being written
        os.kill(os.getpid(), signal.SIGINT)         # no KeyboardInterrupt: nothing is lost
        assert stop.signum == signal.SIGINT
        stop.saving = False
        with pytest.raises(KeyboardInterrupt):      # elsewhere a second Ctrl-C still means "now"
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
