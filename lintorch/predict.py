"""Classify image files with a trained checkpoint: the lecture's classify_image(image) -> class_label.

Shapes: N images, D = 3 * S * S features (S the checkpoint's image size), C classes, k top classes.
Arguments are parsed before torch is imported, so usage errors answer at once.
Any image size or mode is accepted and preprocessed exactly as in training: load as RGB
(data.load_image), resize to S x S (data.image_transform), then the checkpoint's Preprocess.
Images stream through in chunks of CHUNK (decoded, encoded and classified together), so memory
stays bounded whatever the number of files; progress goes to stderr (a bar on a terminal, a line
every so often in a log file).

    python -m lintorch.predict runs/X photo.jpg other.png --top-k 3 [--json]
"""
import json
import os
import sys

from .cli import ArgumentParser, add_common, exit_status, number
from .objective import LOSSES

CHUNK = 512       # images decoded, encoded and classified at once (a multiple of the eval and extraction batches)


class FeaturePipeline:
    """uint8 images (N, 3, S, S) -> the model's inputs: the checkpoint's feature extractor, then
    its standardization (exactly the training pipeline). flip_eval: the features averaged with the
    mirror image's, as the run's validation had them (--flip-eval)."""

    def __init__(self, extractor, preprocess, flip_eval=False):
        self.extractor, self.preprocess, self.flip_eval = extractor, preprocess, flip_eval

    def __call__(self, x):
        f = self.encode(x)
        if self.flip_eval:
            f = (f + self.encode(x.flip(-1))).mul_(0.5)
        return self.preprocess(f)

    def encode(self, x):
        """x uint8 (N, 3, S, S) on the device -> float32 (N, D), in training's extraction batches
        (the same batches give the same bits)."""
        import torch
        from .features import BATCH, batches_of_features
        return torch.cat([f for _, f in batches_of_features(self.extractor, x, BATCH, x.device)])


def load_classifier(path, device="cpu"):
    """Checkpoint file or run folder -> (LinearClassifier in eval mode, inputs, ModelFile) on
    `device`; inputs maps uint8 images (N, 3, S, S) to the model's inputs (the Preprocess for
    raw pixels, a FeaturePipeline for extracted features, None for a feature-file model).
    CheckpointError names the file and field when it cannot be used."""
    from .output.checkpoint import best_path, load_model
    from .data import Preprocess
    from .model import LinearClassifier
    saved = load_model(best_path(path))
    model = LinearClassifier.from_weights(saved.weight.to(device), saved.bias.to(device))
    preprocess = Preprocess.from_state_dict(saved.header.preprocess).to(device)
    features = saved.header.features
    if features is None:
        return model.eval(), preprocess, saved
    if "extractor" not in features:
        return model.eval(), None, saved
    from .features import from_state_dict
    extractor = from_state_dict(features["extractor"])
    from .config import TrainConfig
    flip_eval = TrainConfig.from_saved(saved.header.config)[0].flip_eval
    return model.eval(), FeaturePipeline(extractor, preprocess, flip_eval), saved


def image_tensor(image, image_size):
    """A path or PIL image (any size or mode) -> uint8 (3, S, S), decoded as training decodes.
    DataError naming the file when it cannot be read as an image."""
    from .data import image_transform, load_image
    from .data.images import ImageModeError, file_problem, to_rgb
    from .errors import DataError
    if isinstance(image, (str, os.PathLike)):
        why = file_problem(image)
        if why:
            raise DataError(f"{image}: {why}")
        try:
            image = load_image(image)
        except ImageModeError as e:
            raise DataError(f"{image}: {e}") from None
        except Exception as e:  # Pillow raises OSError, UnidentifiedImageError, SyntaxError, ...
            raise DataError(f"{image}: cannot read it as an image ({type(e).__name__})") from None
    else:
        image = to_rgb(image)         # the rules load_image applies to files
    return image_transform(image_size)(image)


def score_chunks(model, preprocess, images, image_size=None, chunk=None, progress=None):
    """images: list of paths or PIL images -> yields (start, scores (B, C) float32 on the CPU),
    B <= chunk: each chunk decoded, encoded and classified before the next is read, so at most
    `chunk` images and their features are held. image_size S defaults to the model's, from
    D = 3 * S * S. progress: optional callable(images done in this chunk)."""
    import math
    import torch
    if preprocess is None:
        from .errors import UserError
        raise UserError("this model was trained on a feature folder (--dataset features): it classifies feature "
                        "vectors, not images; extract the image's features with the same extractor")
    image_size = image_size or math.isqrt(model.in_features // 3)
    chunk = chunk or CHUNK
    for i in range(0, len(images), chunk):
        x = torch.stack([image_tensor(im, image_size) for im in images[i:i + chunk]])    # (B, 3, S, S) uint8
        with torch.inference_mode():
            s = model(preprocess(x.to(model.weight.device))).float().cpu()
        if progress is not None:
            progress(len(x))
        yield i, s


def scores(model, preprocess, images, image_size=None, chunk=None, progress=None):
    """images: list of paths or PIL images -> scores (N, C) float32 on the CPU, computed chunk by
    chunk (score_chunks)."""
    import torch
    parts = [s for _, s in score_chunks(model, preprocess, list(images), image_size, chunk, progress)]
    return torch.cat(parts) if parts else torch.zeros(0, model.num_classes)


def classify_image(model, preprocess, image, classes, image_size=None):
    """The lecture's classify_image(image) -> class_label: the class with the largest score.
    image: a path or a PIL image of any size and mode."""
    return classes[int(scores(model, preprocess, [image], image_size)[0].argmax())]


def top_k(s, classes, k, probabilities):
    """s (C,) scores of one image -> [(class, probability or raw score)] for the k best, best first."""
    values = s.double().softmax(-1) if probabilities else s.double()
    best = values.topk(min(k, len(classes)))
    return [(classes[i], float(v)) for v, i in zip(best.values.tolist(), best.indices.tolist())]


def get_args_parser():
    p = ArgumentParser(
        prog="python -m lintorch.predict", description="Classify images with a trained lintorch checkpoint: the predicted class and the top "
        "classes, with probabilities for softmax models and raw scores for SVM models.")
    p.add_argument("checkpoint", help="a checkpoint .pt file, or a run folder (its checkpoint.pt, the best model)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size or mode; resized "
                   "to the checkpoint's image size and converted to RGB)")
    p.add_argument("--top-k", type=number(int, 1), default=3, help="how many of the best classes to show per image")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_common(p)
    return p


def predict(args):
    """-> the JSON-able result for args.images."""
    from .cli import choose_threads, resolve_device
    device = resolve_device(args.device)
    choose_threads(1 if args.threads == "auto" else args.threads)   # a few images: one thread is plenty
    model, preprocess, saved = load_classifier(args.checkpoint, device)
    h = saved.header
    classes, probabilities = h.classes, LOSSES[h.loss].probabilistic
    from .output.progress import Progress
    with Progress(len(args.images), "predict") as bar:
        s = scores(model, preprocess, args.images, h.image_size, progress=bar.update)    # (N, C)
    kind = "probability" if probabilities else "score"
    predictions = []
    for path, row in zip(args.images, s):
        best = top_k(row, classes, args.top_k, probabilities)
        predictions.append({"image": path, "label": best[0][0], kind: best[0][1],
                            "top_k": [{"label": c, kind: v} for c, v in best]})
    return {"checkpoint": saved.path, "loss": h.loss, "values": kind, "classes": classes,
            "predictions": predictions}


def _main(args):
    result = predict(args)
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


def main(argv=None):
    """The command line; -> exit status (0 ok, 2 bad input: one line on stderr)."""
    return exit_status(_main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
