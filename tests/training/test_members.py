"""lintorch.training.members: a sweep's members equal each configuration alone, one ranking rule, names and
durations."""
import json

import pytest
import torch

from lintorch.training.members import best_index, ranking
from tests.conftest import BASE, train_auto_threads
from tests.helpers import events, read_json, train


COMMON = ["--dataset", "synthetic", "--epochs", "2", "--batch-size", "64", "--seed", "5", "--quiet", "--threads", "1"]
SMALL = [*COMMON, "--image-size", "8"]      # where weights are compared, not learned: 8 px (D 192)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    assert train(*SMALL, "--logdir", d, "--sweep", "lr=0.003,0.03", "reg=0,0.05") == 0
    return d


@pytest.mark.parametrize("lr, reg", [("0.03", "0.05"), ("0.003", "0")])
def test_sweep_member_equals_the_configuration_alone(sweep_dir, tmp_path, lr, reg):
    assert train(*SMALL, "--logdir", tmp_path, "--lr", lr, "--reg", reg) == 0
    alone = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    member = torch.load(sweep_dir / f"lr={float(lr):g},reg={float(reg):g}" / "checkpoint.pt", weights_only=True)
    assert member["config"]["lr"] == float(lr) and member["config"]["reg"] == float(reg)
    for name in ("weight", "bias"):
        a, b = alone["model"][name], member["model"][name]
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (name, (a - b).abs().max())
    m_alone = json.loads((tmp_path / "metrics.json").read_text())
    m_member = json.loads((sweep_dir / f"lr={float(lr):g},reg={float(reg):g}" / "metrics.json").read_text())
    assert m_alone["val_acc"] == m_member["val_acc"] and m_alone["best_epoch"] == m_member["best_epoch"]


def test_sweep_ranks_configs_and_keeps_the_best(sweep_dir):
    summary = json.loads((sweep_dir / "metrics.json").read_text())
    accs = [c["val_acc"] for c in summary["configs"]]
    assert len(accs) == 4 and summary["best"]["val_acc"] == max(accs)
    best = torch.load(sweep_dir / "checkpoint.pt", weights_only=True)
    assert best["best_val_acc"] == max(accs)
    assert {best["config"]["lr"], best["config"]["reg"]} <= {0.003, 0.03, 0.0, 0.05}


def test_each_configuration_is_its_own_tensorboard_run_with_hparams(sweep_dir):
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["lr=0.003,reg=0", "lr=0.003,reg=0.05", "lr=0.03,reg=0", "lr=0.03,reg=0.05"]
    for run in runs:
        acc = events(run)
        assert "acc/val" in acc.Tags()["scalars"] and "hparam/val_acc" in acc.Tags()["scalars"]
        assert acc.PluginTagToContent("hparams"), run.name                  # the HPARAMS tab's row
        assert not [p for p in run.iterdir() if p.is_dir()]          # no extra timestamped sub-run


def test_diverging_configuration_does_not_spoil_the_others(tmp_path):
    code = train(*COMMON, "--image-size", 24, "--logdir", tmp_path, "--sweep", "lr=0.01,1e30")    # 65% (16 px: 43%)
    assert code == 0
    summary = json.loads((tmp_path / "metrics.json").read_text())
    good = [c for c in summary["configs"] if c["config"]["lr"] == 0.01][0]
    assert good["val_acc"] > 0.5
    best = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert best["config"]["lr"] == 0.01 and torch.isfinite(best["model"]["weight"]).all()
    # one numeric setting swept: path.png and its TensorBoard image at the run folder, the diverged point left out
    from PIL import Image
    with Image.open(tmp_path / "path.png") as im:
        assert im.width >= 400 and im.height >= 300
    assert "path" in events(tmp_path).Tags()["images"]


def test_path_picture_only_for_one_swept_setting(sweep_dir):
    assert not (sweep_dir / "path.png").exists()                  # lr and reg swept together


def test_hparams_tell_the_sweeps_members_apart(sweep_dir):
    """The HPARAMS table's default view: the swept lr and reg declared first (flagged), a trial ID
    per member, integers as text, the distinguishing settings present."""
    from tensorboard.plugins.hparams import metadata
    trials = set()
    for run in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        content = events(run).PluginTagToContent("hparams")
        exp = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
        assert [h.name for h in exp.hparam_infos][:2] == ["lr", "reg"]
        shown = sorted(exp.hparam_infos, key=lambda h: (not h.differs, h.name))[:5]    # the table's default view
        assert {"lr", "reg"} <= {h.name for h in shown}
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        hp = start.hparams
        assert hp["batch_size"].string_value == "64" and hp["epochs"].string_value == "2"
        assert hp["flip"].bool_value is False and hp["features"].string_value == "pixels"
        assert hp["val_size"].string_value and not {"max_iter", "trials"} & set(hp)
        run_first, place = start.group_name.split("/")            # '<run>/mNN-<values>': sorts run first
        assert run_first == sweep_dir.name and place[3:] == f"-{run.name}"
        trials.add(place[:3])
    assert trials == {"m00", "m01", "m02", "m03"}


def test_one_ranking_rule():
    assert ranking([0.5, None, 0.7, 0.7, 0.0]) == [2, 3, 0, 4, 1]      # ties: the earlier member; None last
    assert best_index([0.5, None, 0.7, 0.7]) == 2
    assert best_index([None, None]) is None and best_index([0.0, None]) == 0


def test_duration_reads_as_people_write_it():
    from lintorch.training.members import duration
    assert [duration(s) for s in (4.24, 59.94, 60.2, 185, 3725)] == ["4.2 s", "59.9 s", "1 min 0 s", "3 min 5 s",
                                                                   "1 h 2 min"]


# --------------------------------------------------------------------------- sweeps

def test_sweep_values_that_differ_get_distinct_folders(tmp_path):
    run = tmp_path / "sweep"
    assert train_auto_threads(*BASE, "--image-size", 8, "--val-size", 500, "--sweep", "lr=0.03,0.0300000001",
                              "--logdir", run) == 0
    members = sorted(p.name for p in run.iterdir() if p.is_dir())
    assert len(members) == 2 and members[0] != members[1], members
    assert len(read_json(run / "metrics.json")["configs"]) == 2
