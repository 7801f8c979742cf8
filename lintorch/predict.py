"""Classify image files with a trained checkpoint: the lecture's classify_image(image) -> class_label.

Shapes: N images, D = 3 * S * S features (S the checkpoint's image size), C classes, k top classes.
Any image size or mode is accepted and preprocessed exactly as in training: load as RGB
(data.load_image), resize to S x S (data.image_transform), then the checkpoint's Preprocess.

    python -m lintorch.predict runs/X photo.jpg other.png --top-k 3 [--json]
"""
import argparse
import json
import math
import os
import sys

import torch

from .checkpoint import CheckpointError, load_checkpoint
from .config import HelpFormatter, number
from .data import DataError, Preprocess, image_transform, load_image
from .model import LinearClassifier


def checkpoint_path(path):
    """A run folder means its best model, checkpoint.pt; a file means itself."""
    if os.path.isdir(path):
        best = os.path.join(path, "checkpoint.pt")
        if not os.path.isfile(best):
            raise CheckpointError(f"{path}: no checkpoint.pt in this run folder (pass a .pt file, e.g. last.pt)")
        return best
    return path


def load_model(path, device="cpu"):
    """Checkpoint file or run folder -> (LinearClassifier in eval mode, Preprocess, checkpoint dict),
    both on `device`. CheckpointError names the file when it cannot be used."""
    path = checkpoint_path(path)
    ckpt = load_checkpoint(path)
    missing = [k for k in ("model", "preprocess", "classes", "image_size", "in_features", "num_classes", "loss")
               if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, no {', '.join(missing)}")
    try:
        model = LinearClassifier(ckpt["in_features"], ckpt["num_classes"])
        model.load_state_dict(ckpt["model"])
        preprocess = Preprocess.from_state_dict(ckpt["preprocess"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: incomplete or inconsistent checkpoint ({type(e).__name__}: {e})") from None
    return model.to(device).eval(), preprocess.to(device), ckpt


def _image_size(model):
    """S from D = 3 * S * S."""
    return math.isqrt(model.in_features // 3)


def image_tensor(image, image_size):
    """A path or PIL image (any size or mode) -> uint8 (3, S, S), decoded as training decodes.
    DataError naming the file when it cannot be read as an image."""
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise DataError(f"{image}: no such image file")
        try:
            image = load_image(image)
        except Exception as e:  # Pillow raises OSError, UnidentifiedImageError, SyntaxError, ...
            raise DataError(f"{image}: cannot read it as an image ({type(e).__name__})") from None
    else:
        image = image.convert("RGB")  # what load_image does for files
    return image_transform(image_size)(image)


@torch.inference_mode()
def scores(model, preprocess, images, image_size=None):
    """images: list of paths or PIL images -> scores (N, C) float32 on the CPU."""
    S = image_size or _image_size(model)
    x = torch.stack([image_tensor(im, S) for im in images])                  # (N, 3, S, S) uint8
    device = model.weight.device
    return model(preprocess(x.to(device))).float().cpu()


def classify_image(model, preprocess, image, classes, image_size=None):
    """The lecture's classify_image(image) -> class_label: the class with the largest score.
    image: a path or a PIL image of any size and mode."""
    return classes[int(scores(model, preprocess, [image], image_size)[0].argmax())]


def top_k(s, classes, k, probabilities):
    """s (C,) scores of one image -> [(class, probability or raw score)] for the k best, best first."""
    values = torch.softmax(s.double(), -1) if probabilities else s.double()
    best = values.topk(min(k, len(classes)))
    return [(classes[i], float(v)) for v, i in zip(best.values.tolist(), best.indices.tolist())]


def get_args_parser():
    p = argparse.ArgumentParser(
        prog="python -m lintorch.predict", formatter_class=HelpFormatter,
        description="Classify images with a trained lintorch checkpoint: the predicted class and the top "
        "classes, with probabilities for softmax models and raw scores for SVM models.")
    p.add_argument("checkpoint", help="a checkpoint .pt file, or a run folder (its checkpoint.pt, the best model)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size or mode; resized "
                   "to the checkpoint's image size and converted to RGB)")
    p.add_argument("--top-k", type=number(int, 1), default=3, help="how many of the best classes to show per image")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--device", default="cpu", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def predict(args):
    """-> the JSON-able result for args.images."""
    from .run import resolve_device
    device = resolve_device(args.device)
    model, preprocess, ckpt = load_model(args.checkpoint, device)
    classes, probabilities = list(ckpt["classes"]), ckpt["loss"] == "softmax"
    s = scores(model, preprocess, args.images, ckpt["image_size"])          # (N, C)
    kind = "probability" if probabilities else "score"
    predictions = []
    for path, row in zip(args.images, s):
        best = top_k(row, classes, args.top_k, probabilities)
        predictions.append({"image": path, "label": best[0][0], kind: best[0][1],
                            "top_k": [{"label": c, kind: v} for c, v in best]})
    return {"checkpoint": checkpoint_path(args.checkpoint), "loss": ckpt["loss"], "values": kind,
            "classes": classes, "predictions": predictions}


def main(argv=None):
    """The command line; -> exit status (0 ok, 2 bad input: one line on stderr)."""
    args = get_args_parser().parse_args(argv)
    from .run import UserError
    try:
        result = predict(args)
    except (DataError, CheckpointError, UserError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    kind = result["values"]
    fmt = "{:.1%}" if kind == "probability" else "{:+.3f}"
    width = max(len(p["image"]) for p in result["predictions"])
    print(f"{result['checkpoint']}: {result['loss']} model, top {args.top_k} with "
          f"{'probabilities' if kind == 'probability' else 'raw scores'}")
    for p in result["predictions"]:
        rest = ", ".join(f"{t['label']} {fmt.format(t[kind])}" for t in p["top_k"])
        print(f"{p['image']:<{width}}  {p['label']:<12}  ({rest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
