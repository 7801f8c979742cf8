"""python -m lintorch.extract: images -> a folder of precomputed features (lintorch.features.store).

Shapes: N images (N, 3, S, S) uint8 -> features (N, D). The extractor is fitted on the training
images only (k-means learns its centroids there, without labels), then every training image and,
when the data set has one, every test image is encoded. Written to --out:
train.{npy,pt} (+ train_labels.npy), test.* likewise, classes.json, extractor.pt (the extractor's
state_dict: centroids, whitening, ...; torch.load(weights_only=True)) and extractor.json
(features, settings, fingerprint, D, and a sha256 of the uint8 images and labels used);
for kmeans also centroids.png, the first 400 centroids in whitened space.
"""
import json
import logging
import os
import sys
import time

from .cli import ArgumentParser, cache_folder, exit_status, extractor_argument, number, setup_logging, threads_arg, unused_extractor_flags
from .features.settings import by_flag
from .names import IMAGE_DATASETS

DATASETS = IMAGE_DATASETS   # extraction reads images

log = logging.getLogger("lintorch.extract")


def get_args_parser():
    p = ArgumentParser(prog="python -m lintorch.extract", description="Compute fixed features of a data set's images for a linear "
                                "classifier and write them to a feature folder.")
    pos = number(int, 1)
    p.add_argument("--features", required=True, help="pixels, kmeans, hog, colorhist, a comma list such as "
                   "hog,colorhist, or torchvision:<model> (e.g. torchvision:resnet18)")
    p.add_argument("--dataset", choices=DATASETS, default="cifar10", help="data set to read")
    p.add_argument("--data-dir", default="./data", help="cifar10: where cifar-10-batches-py is; cifar100, mnist, "
                   "fashion-mnist, kmnist, svhn, stl10: where torchvision's files for it are; imagefolder: "
                   "folder with train/<class>/* and optionally test/<class>/*")
    p.add_argument("--cache-dir", type=cache_folder, default=None, help="decoded uint8 image cache (default: DATA_DIR/.lintorch-cache)")
    p.add_argument("--image-size", type=pos, default=32, help="images are resized to this square size first")
    p.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")
    p.add_argument("--out", required=True, help="feature folder to write (must not hold features yet, "
                   "unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace features already in --out")
    p.add_argument("--format", choices=("npy", "pt"), default="npy",
                   help="npy: memory-mapped by the reader (large sets); pt: one torch file per split")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored feature precision")
    _add_extractor_flags(p)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=pos, default=256, help="images per extraction batch")
    p.add_argument("--threads", type=threads_arg, default="auto", help="CPU threads: N, or auto (measured at "
                   "start: 1 when the cores are busy, where oversubscribing is many times slower)")
    p.add_argument("--seed", type=number(int, 0), default=0, help="seed: patch sampling, k-means, random weights")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def _add_extractor_flags(p):
    """Every extractor flag, as train.py has them (each from its one declaration, features.settings),
    so extract can write any features a run trains on (the --features kmeans recipe's --power 0.5
    included)."""
    from .config import flag
    for name in by_flag():
        kwargs = {k: v for k, v in extractor_argument(name).items() if v is not None}
        p.add_argument(flag(name), default=None, **{**kwargs, "help": kwargs["help"].replace("%", "%%")})


def _full_train(ds):
    """The data set's whole training split in its original order (load_dataset carves a val split)."""
    import torch
    n = len(ds.train) + len(ds.val)
    x = torch.empty((n,) + tuple(ds.train.x.shape[1:]), dtype=torch.uint8)
    y = torch.empty(n, dtype=torch.long)
    for part, idx in ((ds.train, ds.source["train_indices"]), (ds.val, ds.source["val_indices"])):
        x[idx], y[idx] = part.x, part.y
    return x, y


def _data_sha256(*tensors):
    import hashlib
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def _shard(n, rank, world):
    """Rank r's contiguous rows [lo, hi) of n: the shards in rank order cover 0..n once."""
    return n * rank // world, n * (rank + 1) // world


def _encode_shard(ex, xs, args, device, desc):
    """uint8 images (n, 3, S, S) -> float32 (n, D) on the CPU, with a progress bar."""
    import torch
    from tqdm import tqdm
    from .features import batches_of_features
    out = []
    with tqdm(total=len(xs), desc=desc, unit="img", disable=args.quiet) as bar:
        for _, f in batches_of_features(ex, xs, args.batch_size, device):
            out.append(f.float().cpu())
            bar.update(len(f))
    return torch.cat(out) if out else torch.zeros(0, ex.dim)


def _take_part(folder, name, rank):
    import torch
    path = os.path.join(folder, f".{name}.part{rank}.pt")
    part = torch.load(path, weights_only=True)
    os.remove(path)
    return part


def write_folder(args):
    """Fit, encode every split, write the folder; -> the extractor.json dict (None on torchrun
    ranks other than 0). --out is claimed before any work and built beside, then renamed into
    place (rundir.build_beside): an interrupted or failed extract leaves no folder, no husk."""
    import contextlib

    from .cli import resolve_device
    from .features import make_extractor
    from .output.rundir import build_beside
    from .training import process_group
    dist = process_group.from_env()       # under torchrun: every rank encodes its shard of each split
    if dist is None:
        device = resolve_device(args.device)           # as every command: one line for a bad device, TF32 on CUDA
    else:
        device = resolve_device(process_group.init(dist, args.device, 600.0, False))
        process_group.silence_others(dist)
        args.quiet = args.quiet or not dist.main       # rank 0's bars speak for the job
    threads = None
    if device.type == "cpu":    # as train.py: auto measures the load (1 thread beside other jobs)
        from .cli import choose_threads
        setting = args.threads
        if dist is not None and setting == "auto":
            setting = process_group.threads_per_process()
        threads = choose_threads(setting)
    from .data.featurize import extractor_settings
    ex = make_extractor(args.features, **extractor_settings(args))
    ex.check_settings(args.image_size)     # before any work: a setting that cannot work is one line
    with contextlib.ExitStack() as stack:
        def claim():
            return stack.enter_context(build_beside(args.out, args.overwrite))
        out = claim() if dist is None else process_group.share(dist, claim)    # rank 0 claims, all write there
        return _extract_into(out, args, ex, dist, device, threads)


def _extract_into(out, args, ex, dist, device, threads):
    import torch

    from .training import process_group
    from .output.atomic import torch_save_atomic, write_atomic
    from .output.rundir import write_png
    from .data import load_dataset
    from .features.store import SplitWriter, write_classes
    main = dist is None or dist.main
    ds = load_dataset(args.dataset, args.data_dir, args.image_size, 1, args.seed, args.cache_dir,
                      args.skip_bad_images, progress=main and not args.quiet)
    x, y = _full_train(ds)
    t0 = time.perf_counter()
    if dist is None:
        ex.fit(x, device)
    else:                                  # rank 0 learns, every rank encodes with the very same state
        ex.load_state(process_group.share(dist, lambda: ex.fit(x, device).state_dict()["state"]))
    fit_s = time.perf_counter() - t0
    splits = [("train", x, y)] + ([("test", ds.test.x, ds.test.y)] if ds.test is not None else [])
    if main:
        write_classes(out, ds.classes)
    t0, checksums = time.perf_counter(), {}
    for name, xs, ys in splits:
        lo, hi = (0, len(ys)) if dist is None else _shard(len(ys), dist.rank, dist.world)
        parts = _encode_shard(ex, xs[lo:hi], args, device, f"{name} features")
        if dist is not None:               # each rank's rows to a part file; rank 0 writes them in order
            torch.save(parts, os.path.join(out, f".{name}.part{dist.rank}.pt"))
            process_group.barrier()
            if main:
                parts = torch.cat([_take_part(out, name, r) for r in range(dist.world)])
        if main:
            writer = SplitWriter(out, name, len(ys), parts.shape[1], args.format, getattr(torch, args.dtype))
            for i in range(0, len(ys), 8192):
                writer.write(parts[i:i + 8192], ys[i:i + 8192])
            writer.close()
            checksums[name] = writer.checksum
        if dist is not None:
            process_group.barrier()
    if not main:
        return None
    info = {"features": ex.name, "settings": ex.state_dict()["settings"], "fingerprint": ex.fingerprint(),
            "dim": ex.dim, "fit_seconds": round(fit_s, 3), "extract_seconds": round(time.perf_counter() - t0, 3),
            "device": str(device), "threads": threads, "format": args.format, "dtype": args.dtype,
            "data": {"dataset": args.dataset, "data_dir": os.path.abspath(args.data_dir),
                     "image_size": args.image_size, "classes": ds.classes,
                     **{f"n_{n}": len(ys) for n, _, ys in splits},
                     **{f"sha256_{n}": _data_sha256(xs, ys) for n, xs, ys in splits}},
            "checksums": checksums}
    torch_save_atomic(ex.state_dict(), os.path.join(out, "extractor.pt"))
    if "centroids" in ex.state:                      # the learned filters, as the paper shows them
        from .features.kmeans import centroid_picture
        write_png(centroid_picture(ex.state, ex.settings["rf"]), os.path.join(out, "centroids.png"))
    write_atomic(os.path.join(out, "extractor.json"), lambda f: json.dump(info, f, indent=2, default=str),
                 mode="w")
    return info


def _main(args):
    setup_logging(args.quiet)
    logging.getLogger("lintorch.extract").setLevel(logging.INFO)
    import signal
    from .training.process_group import from_env, teardown

    def terminated(signum, frame):         # SIGTERM unwinds like Ctrl-C: the half-built folder is removed
        raise SystemExit(128 + signum)
    old = signal.signal(signal.SIGTERM, terminated)
    try:
        info = write_folder(args)
    finally:
        signal.signal(signal.SIGTERM, old)
        teardown(from_env())
    if info is None:                        # a torchrun rank other than 0: rank 0 reports
        return 0
    print(f"wrote {info['features']} features (D = {info['dim']}) of {info['data']['n_train']} training images"
          f"{' and %d test images' % info['data']['n_test'] if 'n_test' in info['data'] else ''} to {args.out} "
          f"(fit {info['fit_seconds']:.1f} s, extraction {info['extract_seconds']:.1f} s)")
    return 0


def parse_args(argv=None):
    p = get_args_parser()
    args = p.parse_args(argv)
    unused = unused_extractor_flags(args, args.features)
    if unused:
        p.error(f"{unused}, not {args.features}: it would be ignored")
    return args


def main(argv=None):
    """The command line; -> exit status (0 ok, 2 bad input: one line on stderr)."""
    return exit_status(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
