"""Evaluate a trained checkpoint on a data split: accuracy, per-class accuracy, confusion matrix.

Shapes: N images in the split, D features, C classes; the confusion matrix is (C, C), rows the
true class, columns the predicted one. The data set, data folder, seed and validation size
default to the checkpoint's own training config, so the val split is the very split carved
during training, and the preprocessing is the checkpoint's (never refitted).

    python -m lintorch.evaluate runs/X                     # the val split it was validated on
    python -m lintorch.evaluate runs/X --split test --json
"""
import json
import sys

from .cli import ArgumentParser, add_common, cache_folder, exit_status, loss_text, number
from .names import DATASETS

SPLITS = ("val", "test", "train")


def evaluate_checkpoint(path, dataset=None, data_dir=None, split="val", seed=None, val_size=None,
                        cache_dir=None, device="cpu"):
    """-> dict: accuracy, correct, n, loss, per_class {class: accuracy or None}, confusion (C x C
    lists), classes, split, dataset, data_dir, checkpoint, configuration (a sweep member's
    settings, else None). Unset data arguments come from the checkpoint's config. DataError or
    CheckpointError when data and model do not fit."""
    from .output.checkpoint import check_compatible
    from .config import TrainConfig
    from .data import Preprocess
    from .data.featurize import EncodedImages
    from .training.epoch import evaluate
    from .errors import DataError
    from .objective import Objective
    from .output.progress import Progress
    from .predict import load_classifier
    from .training.recipe import EVAL_BATCH, eval_loader, input_dim, load_inputs
    model, inputs, saved = load_classifier(path, device)
    path, h = saved.path, saved.header
    cfg, resolved = TrainConfig.from_saved(h.config)   # a key an older lintorch did not save: the field's default

    def pick(value, key):
        return value if value is not None else getattr(cfg, key)
    dataset, data_dir, seed = pick(dataset, "dataset"), pick(data_dir, "data_dir"), pick(seed, "seed")
    val_size = val_size if val_size is not None else resolved.val_size or cfg.val_size   # the split it validated on
    if dataset not in DATASETS:           # LinearProbe's "tensor": arrays it was given in memory
        from .errors import UserError
        raise UserError(f"{path} was trained by LinearProbe on arrays in memory, so there is no data set to reload: "
                        f"give --dataset features --data-dir DIR, a feature folder of the same {h.in_features} "
                        f"features (lintorch.features.store.save_split writes one), or use LinearProbe.score")
    # extracted features: the images are loaded as they are and encoded batch by batch below, only
    # the split asked for, never all of them at once
    extracted = bool(h.features) and "extractor" in h.features
    data_cfg = cfg.replace(dataset=dataset, data_dir=data_dir, seed=seed, val_size=val_size,
                           cache_dir=pick(cache_dir, "cache_dir"), image_size=h.image_size, quiet=False,
                           **({"features": "pixels"} if extracted else {}))
    # the test split needs no training images: the train folder is only listed, for its classes
    data, _ = load_inputs(data_cfg, model.weight.device, None, ("test",) if split == "test" else ("train", "test"))
    part = getattr(data, split)
    if part is None:
        raise DataError(f"the data set has no {split} split ({dataset} at {data_dir}); use --split val")
    if len(part) == 0:
        raise DataError(f"the {split} split of {dataset} at {data_dir} is empty (0 examples): nothing to evaluate"
                        f"{'' if split == 'val' else '; use --split val'}")
    check_compatible(h, path, data.classes, h.image_size, None if extracted else input_dim(part))
    C = len(data.classes)
    objective = Objective.from_config(cfg.replace(loss=h.loss), reg=0.0)     # the unweighted data loss
    # the same batch size as training's validation (and the same extraction batches), so the
    # numbers match to the bit
    with Progress(len(part), f"evaluate ({split}, {h.features['name'] if extracted else 'inputs'})",
                  disable=not extracted) as bar:
        if extracted:
            loader = EncodedImages(part, inputs, EVAL_BATCH, model.weight.device, progress=bar.update)
        else:
            preprocess = Preprocess.from_state_dict(h.preprocess).to(model.weight.device)   # the bare standardization
            loader = eval_loader(part, preprocess, model.weight.device)
        result = evaluate(model, loader, objective, num_classes=C)
    cm = result["confusion"]                                             # (C, C)
    per_class = {}
    for c, name in enumerate(data.classes):
        total = int(cm[c].sum())
        per_class[name] = int(cm[c, c]) / total if total else None
    return {"checkpoint": path, "dataset": dataset, "data_dir": data_dir, "split": split, "n": result["n"],
            "accuracy": float(result["acc"]), "correct": int(cm.diagonal().sum()), "loss": float(result["loss"]),
            "loss_kind": h.loss, "configuration": _configuration(cfg), "classes": list(data.classes), "per_class": per_class,
            "per_class_n": {name: int(cm[c].sum()) for c, name in enumerate(data.classes)},
            "confusion": cm.tolist()}


def _configuration(cfg):
    """A sweep member's own settings ('lr=0.03,reg=0.001'), else None."""
    keys = sorted({k for c in cfg.sweep or [] for k in c})
    return ",".join(f"{k}={getattr(cfg, k)!r}" for k in keys) or None


def format_report(r):
    """The text report: accuracy, a per-class table and the confusion matrix."""
    classes = r["classes"]
    which = f" (sweep configuration {r['configuration']})" if r["configuration"] else ""
    lines = [f"{r['checkpoint']}{which} on the {r['split']} split of {r['dataset']} ({r['data_dir']}): "
             f"accuracy {100 * r['accuracy']:.2f}% ({r['correct']}/{r['n']}), mean {r['loss_kind']} loss "
             f"{loss_text(r['loss'])}", "", "per-class accuracy:"]
    w = max(len(c) for c in classes)
    for c in classes:
        acc = r["per_class"][c]
        lines.append(f"  {c:<{w}}  {'n/a' if acc is None else f'{100 * acc:6.2f}%'}  (n={r['per_class_n'][c]})")
    cw = max(max(len(str(v)) for row in r["confusion"] for v in row), min(10, w))
    lines += ["", "confusion matrix (rows: true class, columns: predicted):",
              " " * (w + 2) + " ".join(f"{c[:cw]:>{cw}}" for c in classes)]
    for c, row in zip(classes, r["confusion"]):
        lines.append(f"  {c:<{w}}" + " ".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)


def get_args_parser():
    p = ArgumentParser(
        prog="python -m lintorch.evaluate", description="Evaluate a trained lintorch checkpoint: accuracy, per-class accuracy and the confusion "
        "matrix. Data arguments left out come from the checkpoint's training config.")
    p.add_argument("checkpoint", help="a checkpoint .pt file, or a run folder (its checkpoint.pt, the best model)")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="data set (default: the one it trained on)")
    p.add_argument("--data-dir", default=None, help="data folder (default: the one it trained on)")
    p.add_argument("--split", choices=SPLITS, default="val", help="which split: val is the one carved "
                   "from train during training (same seed and size), test the data set's own test split")
    p.add_argument("--seed", type=number(int, 0), default=None, help="split seed (default: the training seed)")
    p.add_argument("--val-size", type=number(int, 1), default=None, help="validation size (default: the training one)")
    p.add_argument("--cache-dir", type=cache_folder, default=None, help="decoded image cache (default: the training one)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_common(p)
    return p


def _main(args):
    from .cli import choose_threads, resolve_device
    device = resolve_device(args.device)          # TF32 on CUDA as in training: its numbers are reproduced
    if device.type == "cpu":
        choose_threads(args.threads)
    r = evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, args.split, args.seed, args.val_size,
                            args.cache_dir, device)
    print(json.dumps(r, indent=2) if args.json else format_report(r))
    return 0


def main(argv=None):
    """The command line; -> exit status (0 ok, 2 bad input: one line on stderr)."""
    return exit_status(_main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
