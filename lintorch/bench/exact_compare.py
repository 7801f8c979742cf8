"""lintorch's exact least-squares path (lintorch.optim.exact) against scikit-learn's RidgeClassifierCV.

    python -m lintorch.extract --features kmeans --dataset imagefolder --data-dir /tmp/data/cifar10-jpg \\
        --out /tmp/km --cache-dir /tmp/km-cache
    python -m lintorch.bench.exact_compare --features-dir /tmp/km --val-size 10000 --path 16

The features are a `--dataset features` folder (train.npy / train_labels.npy); validation is carved
from train as train.py carves it (seeded), and both contenders see the same standardized features
(the training split's mean and std, as train.py uses them). The mapping: lintorch minimizes
(1/N) sum_i ||s_i - t_i||^2 + reg ||W||^2 (bias unpenalized, t = +-1 one-vs-rest), scikit-learn's
RidgeClassifier sum_i ||s_i - t_i||^2 + alpha ||W||^2, so alpha = N reg; RidgeClassifierCV picks its
alpha by leave-one-out error on the training split, lintorch by validation accuracy.
Timed: (a) one reg (the Gram pass, one Cholesky factorization), (b) the path of --path values from
one Gram (each method), (c) RidgeClassifierCV with the same alphas. Prints a table, writes --json.
"""
import argparse
import json
import math
import os
import sys
import time


def _whole(train, val):
    """The train file's rows, all of them (train and the carved val joined back)."""
    from lintorch.data.featurize import Rows
    import torch
    return Rows(train.split, torch.cat([train.idx, val.idx]).sort().values)


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features-dir", required=True, help="a --dataset features folder (train.npy, train_labels.npy)")
    p.add_argument("--val-size", type=int, default=10000, help="validation rows carved from train (seeded)")
    p.add_argument("--val-from-test", action="store_true",
                   help="validate on the folder's test split (test.npy) instead of carving from train")
    p.add_argument("--seed", type=int, default=0, help="the split's seed (train.py's --seed)")
    p.add_argument("--path", type=int, default=16, help="regularization values on the path (logspace over --range)")
    p.add_argument("--range", default="1e-4:1", help="LO:HI, the path's logspace ends (the kmeans recipe's: 1e-6:1e-1)")
    p.add_argument("--reg", type=float, default=1e-2, help="the single value for (a)")
    p.add_argument("--methods", default="cholesky,eigh", help="exact methods timed on the path, comma-separated")
    p.add_argument("--no-sklearn", action="store_true", help="skip RidgeClassifierCV")
    p.add_argument("--threads", type=int, default=2, help="torch (and BLAS) threads")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def main(argv=None):
    p = get_args_parser()
    a = p.parse_args(argv)

    import torch
    torch.set_num_threads(a.threads)
    xt, yt, xv, yv = _features(a, p)
    N, D = xt.shape
    C = int(max(yt.max(), yv.max())) + 1
    try:
        lo, hi = (math.log10(float(v)) for v in a.range.split(":"))
    except ValueError:
        p.error(f"--range {a.range!r}: expected LO:HI, two positive numbers")
    regs = torch.logspace(lo, hi, a.path, dtype=torch.float64)
    print(f"N = {N}, D = {D}, C = {C}, {a.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    print(f"{'':<48} {'seconds':>8} {'x one':>6} {'val acc':>8} {'reg':>8}")
    rows = _shown(a, _exact_rows(a, xt, yt, xv, yv, C, regs))       # before scikit-learn's long fit
    if not a.no_sklearn:
        rows += _shown(a, _sklearn_rows(a, xt, yt, xv, yv, regs, rows[0]["seconds"]))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"N": N, "D": D, "threads": a.threads, "rows": rows}, fh, indent=1)
    return 0


def _shown(a, rows):
    for r in rows:
        print(f"{r['what']:<48} {r['seconds']:>8.1f} {r.get('ratio_to_one', 1.0):>6.2f} "
              f"{100 * r['val_acc']:>7.2f}% {r.get('reg', a.reg):>8.2g}", flush=True)
    return rows


def _features(a, p):
    """The folder's train and validation features, standardized as train.py does -> xt (N, D)
    float32, yt (N,), xv, yv."""
    import torch
    from lintorch.data import Preprocess
    from lintorch.data.featurize import feature_folder
    data = feature_folder({"data_dir": a.features_dir, "val_size": 1 if a.val_from_test else a.val_size, "image_size": 0,
                           "seed": a.seed})
    train, val = data.train, data.val
    if a.val_from_test:
        if data.test is None:
            p.error(f"--val-from-test: {a.features_dir} has no test split")
        train, val = _whole(data.train, data.val), data.test
    pre = Preprocess.fit_features(train.chunks())
    xt = torch.cat([pre(x) for x in train.chunks()])                # (N, D) float32, standardized
    xv = torch.cat([pre(x) for x in val.chunks()])
    return xt, train.y, xv, val.y


def _exact_rows(a, xt, yt, xv, yv, C, regs):
    """(a) one reg and (b) the path by each of --methods, from one timed Gram pass -> their rows."""
    from lintorch.optim import exact
    N = len(xt)
    rows = []

    def acc(W, b):
        return ((xv.double() @ W.mT + b.unsqueeze(-2)).argmax(-1) == yv).double().mean(-1)

    def batches():
        return ((xt[i:i + 8192], yt[i:i + 8192]) for i in range(0, N, 8192))

    t = time.perf_counter()
    stats = exact.gram_stats(batches(), C)
    gram_s = time.perf_counter() - t
    t = time.perf_counter()
    W, b, f = exact.primal_path(stats, [a.reg], "cholesky")
    one_s = gram_s + time.perf_counter() - t
    rows.append({"what": f"lintorch exact, one reg {a.reg:g}", "seconds": one_s, "gram_s": gram_s,
                 "val_acc": float(acc(W, b)[0]), "objective": float(f[0])})
    for method in a.methods.split(","):
        t = time.perf_counter()
        W, b, f = exact.primal_path(stats, regs, method)
        s = gram_s + time.perf_counter() - t
        va = acc(W, b)
        k = int(va.argmax())
        rows.append({"what": f"lintorch exact path, {a.path} values ({method})", "seconds": s, "gram_s": gram_s,
                     "val_acc": float(va[k]), "reg": float(regs[k]), "ratio_to_one": s / one_s})
    return rows


def _sklearn_rows(a, xt, yt, xv, yv, regs, one_s):
    """(c) RidgeClassifierCV with the path's alphas (alpha = N reg) -> its row ([] without scikit-learn)."""
    try:
        from sklearn.linear_model import RidgeClassifierCV
    except ImportError:
        print("scikit-learn is not installed: RidgeClassifierCV skipped")
        return []
    N = len(xt)
    t = time.perf_counter()
    clf = RidgeClassifierCV(alphas=(N * regs).tolist()).fit(xt.numpy(), yt.numpy())
    s = time.perf_counter() - t
    return [{"what": f"scikit-learn RidgeClassifierCV, {a.path} alphas", "seconds": s,
             "val_acc": float(clf.score(xv.numpy(), yv.numpy())), "reg": float(clf.alpha_) / N,
             "ratio_to_one": s / one_s}]


if __name__ == "__main__":
    sys.exit(main())
