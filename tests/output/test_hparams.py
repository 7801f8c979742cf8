"""The HPARAMS tab's row: the settings that tell runs apart, only those the optimizer uses, typed
so the table reads them (integers as text, flags as booleans), swept first, declared in full."""
from types import SimpleNamespace

from tensorboard.plugins.hparams import api_pb2, metadata

from lintorch.output.hparams import HPARAMS, member_hparams, summaries, trial_id

SGD = {"dataset": "cifar10", "features": "pixels", "loss": "svm", "optimizer": "sgd", "reg": 1e-3, "lr": 3e-3,
       "penalty": "l2", "class_weight": "balanced", "batch_size": 256, "momentum": 0.9, "schedule": "cosine",
       "epochs": 10, "patience": None, "margin": 1.0, "squared_hinge": True, "svm_form": "one-vs-rest",
       "flip": True, "mean": "pixel", "standardize": False, "image_size": 32, "val_size": 5000, "seed": 0,
       "max_iter": 1000, "tol": 1e-4, "history": 10, "precondition": "auto", "trials": 1000}


def test_sgd_member_logs_its_distinguishing_settings_typed():
    v = member_hparams(SGD, dim=3072)
    assert v["svm_form"] == "one-vs-rest" and v["squared_hinge"] is True and v["class_weight"] == "balanced"
    assert v["flip"] is True and v["standardize"] is False and v["val_size"] == "5000" and v["features"] == "pixels"
    assert v["batch_size"] == "256" and v["epochs"] == "10" and v["dim"] == "3072"      # integers as text
    assert v["lr"] == 3e-3 and v["momentum"] == 0.9
    assert not {"max_iter", "tol", "history", "trials", "patience", "beta"} & set(v)   # not its solver's


def test_lbfgs_member_logs_no_sgd_settings_and_the_swept_one_first():
    v = member_hparams({**SGD, "optimizer": "lbfgs", "loss": "softmax"}, swept=("reg",))
    assert list(v)[0] == "reg"
    assert v["max_iter"] == "1000" and v["tol"] == 1e-4 and v["history"] == "10" and v["precondition"] == "auto"
    assert not {"lr", "momentum", "schedule", "epochs", "batch_size", "svm_form", "margin", "trials"} & set(v)


def test_feature_member_logs_the_extractors_resolved_settings():
    kmeans = SimpleNamespace(settings={"k": 1600, "pool": 2, "patches": 400000, "image_size": 32, "seed": 0})
    hog = SimpleNamespace(settings={"cell": 8})
    ex = SimpleNamespace(parts=[kmeans, hog])
    v = member_hparams({**SGD, "features": "kmeans,hog", "flip": False}, extractor=ex, dim=6400)
    assert v["features"] == "kmeans,hog" and v["centroids"] == "1600" and v["pool"] == "2" and v["dim"] == "6400"
    assert v["flip"] is False and v["flip_eval"] is False and "mean" not in v   # features: not mean-subtracted


def test_declaration_lists_every_name_swept_first_and_flagged():
    values = member_hparams({**SGD, "optimizer": "lbfgs", "loss": "softmax"}, swept=("reg",))
    exp, start, end = summaries(values, ("reg",), trial_id("reg=0.01", "runs/20261201-sweep", False, 3, 16), 5.0)
    e = metadata.parse_experiment_plugin_data(exp.value[0].metadata.plugin_data.content)
    names = [h.name for h in e.hparam_infos]
    assert names[0] == "reg" and sorted(names) == sorted(HPARAMS)        # one declaration for every run
    shown = sorted(e.hparam_infos, key=lambda h: (not h.differs, h.name))[:5]   # what the table ticks
    assert [h.name for h in shown] == ["features", "loss", "lr", "optimizer", "reg"]
    types = {h.name: h.type for h in e.hparam_infos}
    assert types["batch_size"] == api_pb2.DATA_TYPE_STRING and types["flip"] == api_pb2.DATA_TYPE_BOOL
    assert types["reg"] == api_pb2.DATA_TYPE_FLOAT64
    assert {m.name.tag for m in e.metric_infos} >= {"hparam/val_acc", "hparam/test_acc"}
    s = metadata.parse_session_start_info_plugin_data(start.value[0].metadata.plugin_data.content)
    assert s.group_name == "20261201-sweep/m03-reg=0.01" and s.hparams["max_iter"].string_value == "1000"
    assert s.hparams["reg"].number_value == 1e-3 and s.start_time_secs == 5.0


def test_trial_ids_sort_run_first_then_by_the_members_zero_padded_place():
    """HPARAMS sorts trial IDs as text: the run folder first keeps a sweep's members together beside
    other runs, and the zero-padded place keeps them in the sweep's order (m02 before m10)."""
    members = [f"reg={r:g}" for r in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1e3, 1e4, 1e5)]
    ids = [trial_id(m, "runs/km", False, k, len(members)) for k, m in enumerate(members)]
    other = [trial_id(m, "runs/hog", False, k, 2) for k, m in enumerate(members[:2])]
    assert ids[3] == "km/m03-reg=0.001" and len(ids[3]) <= 17         # a short run name shows whole in 10em
    assert sorted(ids + other) == other + ids                          # not interleaved, in the sweep's order
    assert len(set(ids)) == len(ids)
    assert trial_id("lr=0.01", "runs/x", False, 7, 1000) == "x/m007-lr=0.01"
    assert trial_id("run", "runs/20261201-213501-cifar10-svm/", True) == "20261201-213501-cifar10-svm"


def test_every_extractor_setting_that_can_differ_is_a_column():
    """Two k-means runs that differ only by power, encoding or flip_eval differ in HPARAMS."""
    from lintorch.features import make_extractor
    a = member_hparams({**SGD, "features": "kmeans", "flip": True, "flip_eval": True},
                       extractor=make_extractor("kmeans", k=16, power=0.5))
    b = member_hparams({**SGD, "features": "kmeans", "flip": True, "flip_eval": False},
                       extractor=make_extractor("kmeans", k=16, encoding="soft", alpha=0.5, zca_eps=0.01))
    assert (a["power"], b["power"]) == (0.5, 1.0) and (a["flip_eval"], b["flip_eval"]) == (True, False)
    assert (a["encoding"], b["encoding"]) == ("triangle", "soft") and (a["alpha"], b["alpha"]) == (0.25, 0.5)
    assert (a["zca_eps"], b["zca_eps"]) == (0.1, 0.01) and a["flip"] is b["flip"] is True
    assert set(a) == set(b) and set(a) <= set(HPARAMS)
