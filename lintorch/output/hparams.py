"""What TensorBoard's HPARAMS tab shows of a member: the settings that tell runs apart (only those
its optimizer uses), one trial ID per member, and its metrics.

How the tab decides what it shows (tensorboard 2.21, read from its backend and its frontend, and
seen in headless Chromium): it takes the declaration of one run ("arbitrarily the first") for
every run under its --logdir, sorts the declared hparams by `differs` first and then by name, and
ticks the first five. So every member declares the same full list of names (a run that lacks one
shows a blank), and flags SHOWN and its own swept names: the default view is features, loss, lr,
optimizer, reg, whichever run's declaration is taken. The table prints numbers with
toPrecision(5) (256 reads "256.00") and has no integer type: integer settings are written as text.
"""
import os

from ..features.settings import by_flag
from ..objective import LOSSES

# name -> type, in the order the table lists them after the swept ones: what sets a run's accuracy first
HPARAMS = {
    "features": str, "loss": str, "svm_form": str, "optimizer": str, "reg": float, "lr": float,
    "squared_hinge": bool, "margin": float, "penalty": str, "beta": float, "class_weight": str,
    "dim": int, **{s.flag: s.kind for _, s in by_flag().values()}, "flip_eval": bool,
    "batch_size": int, "epochs": int, "momentum": float, "schedule": str, "patience": int,
    "max_iter": int, "tol": float, "history": int, "precondition": str, "trials": int,
    "flip": bool, "mean": str, "standardize": bool, "image_size": int, "val_size": int, "seed": int,
    "dataset": str,
}
SHOWN = ("features", "loss", "lr", "optimizer", "reg")    # ticked by default: first alphabetically among the flagged
METRICS = (("hparam/val_acc", "val acc"), ("hparam/test_acc", "test acc"), ("hparam/train_acc", "train acc"),
           ("hparam/best_epoch", "best epoch"))
SOLVER = {    # each optimizer's own settings; the others' are not logged for it
    "sgd": ("lr", "batch_size", "momentum", "schedule", "epochs", "patience"),
    "gd": ("lr", "schedule", "epochs", "patience"),
    "lbfgs": ("max_iter", "tol", "history", "precondition"),
    "random-search": ("trials",),
    "random-local-search": ("trials",),
}
_FLAG = {s.key: name for name, (_, s) in by_flag().items()}      # an extractor's setting -> its flag (column)


def member_hparams(config, swept=(), extractor=None, dim=None):
    """config: the member's settings (the run's config with its overrides); swept: the names its
    sweep varies; extractor: the fitted feature extractor, whose resolved settings are logged
    -> {name: value} in table order, swept first; only values that are set."""
    c = config
    features = "file" if c.get("dataset") == "features" else c.get("features", "pixels")
    v = {"features": features, "loss": c["loss"], "optimizer": c["optimizer"], "reg": c.get("reg"),
         "penalty": c.get("penalty", "l2"), "class_weight": c.get("class_weight", "none"), "dim": dim,
         "image_size": c.get("image_size"), "val_size": c.get("val_size"), "seed": c.get("seed"),
         "dataset": c.get("dataset")}
    v.update({k: c.get(k, False if HPARAMS[k] is bool else None) for k in LOSSES[c["loss"]].settings})   # the loss's own
    if v["penalty"] == "elasticnet":
        v["beta"] = c.get("beta")
    v["flip"] = c.get("flip", False)          # pixels: mirrored batches; features: every image's mirror encoded too
    if features == "pixels":        # extracted features are standardized per dimension
        v.update(mean=c.get("mean"), standardize=c.get("standardize", False))
    else:                           # each evaluated image averaged with its mirror image
        v["flip_eval"] = c.get("flip_eval", False)
    v.update({k: c.get(k) for k in SOLVER.get(c["optimizer"], ())})
    for part in getattr(extractor, "parts", [extractor] if extractor is not None else []):
        v.update({_FLAG[k]: x for k, x in part.settings.items() if k in _FLAG})
    order = [k for k in swept if k in v] + [k for k in HPARAMS if k not in swept]
    return {k: _typed(k, v[k]) for k in order if v.get(k) is not None}


def _typed(name, value):
    kind = HPARAMS[name]
    if kind is int:
        return str(int(value))
    return kind(value)


def trial_id(member_name, run_folder, single, index=None, count=None):
    """A name per member that sorts well in the table (which sorts trial IDs as text): the run
    folder first, so a sweep's members stay together beside other runs, then the member's place in
    the sweep, zero-padded (m03 of 16: the sweep's order, the path's order for a logspace), then its
    values: '<run>/m03-reg=1e-05'. A single run's ID is its folder. Unique under runs/. The column
    shows about 17 characters (10em, resizable): a short --logdir name shows whole."""
    base = os.path.basename(os.path.normpath(run_folder))
    if single:
        return base
    if index is None:
        return f"{base}/{member_name}"
    digits = max(2, len(str(max((count or 1) - 1, 0))))
    return f"{base}/m{index:0{digits}d}-{member_name}"


def summaries(values, swept, trial, start_time, status="completed"):
    """values: member_hparams' dict; status: the member's end (diverged shows as a failure,
    interrupted as unknown) -> the three Summary protos of the HPARAMS tab (experiment
    declaration, session start, session end), for one member's own event file."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    kinds = {str: api_pb2.DATA_TYPE_STRING, int: api_pb2.DATA_TYPE_STRING, float: api_pb2.DATA_TYPE_FLOAT64,
             bool: api_pb2.DATA_TYPE_BOOL}
    names = [k for k in swept if k in HPARAMS] + [k for k in HPARAMS if k not in swept]
    experiment = api_pb2.Experiment(
        time_created_secs=start_time,
        hparam_infos=[api_pb2.HParamInfo(name=k, type=kinds[HPARAMS[k]], differs=k in swept or k in SHOWN)
                     for k in names],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=shown)
                      for tag, shown in METRICS])
    start = plugin_data_pb2.SessionStartInfo(group_name=trial, start_time_secs=start_time)
    for k, x in values.items():
        if isinstance(x, bool):
            start.hparams[k].bool_value = x
        elif isinstance(x, float):
            start.hparams[k].number_value = x
        else:
            start.hparams[k].string_value = x
    ended = {"diverged": api_pb2.STATUS_FAILURE, "interrupted": api_pb2.STATUS_UNKNOWN}
    end = plugin_data_pb2.SessionEndInfo(status=ended.get(status, api_pb2.STATUS_SUCCESS))

    def summary(tag, **data):
        meta = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(**data))
        return Summary(value=[Summary.Value(tag=tag, metadata=meta)])
    return [summary(metadata.EXPERIMENT_TAG, experiment=experiment),
            summary(metadata.SESSION_START_INFO_TAG, session_start_info=start),
            summary(metadata.SESSION_END_INFO_TAG, session_end_info=end)]
