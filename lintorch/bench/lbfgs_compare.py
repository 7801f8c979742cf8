"""lintorch's batched full-batch L-BFGS against scikit-learn's LogisticRegression(solver="lbfgs").

    python -m lintorch.bench.lbfgs_compare --data-dir /tmp/data/cifar10-jpg --cache-dir /tmp/solver-cache
    python -m lintorch.bench.lbfgs_compare ... --n-train 10000 --reg 1e-4 --path 16 --no-sklearn-path
    python -m lintorch.bench.lbfgs_compare ... --nonsmooth        # hinge and l1 by L-BFGS: how far they get

Preprocessing as training does it (Preprocess.fit on the train split, pixel mean). The mapping:
lintorch minimizes (1/N) sum L_i + reg ||W||^2 (bias unpenalized), scikit-learn C sum L_i +
||W||^2 / 2, so C = 1 / (2 reg N); both objectives are evaluated by the same float64 pass.
(a) one reg: time, objective, val accuracy. (b) a reg path (logspace 1e-6..1e-1): lintorch K
members in one run against one value, and against scikit-learn fitting the values one after
another, warm-started (strongest reg first). Prints a table and writes --json.
"""
import argparse
import json
import math
import os
import time

import torch

from lintorch import functional as LF
from lintorch.data import Preprocess, load_dataset
from lintorch.optim.lbfgs import full_batch_evaluator, lbfgs
from lintorch.optim.precondition import gram_preconditioners
from lintorch.objective import Objective, objective_and_grad


class MemoryLoader:
    """Preprocessed float features in memory, in fixed order: batches(epoch) of (x (B, D), y (B,))."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size

    def batches(self, epoch=0):
        for i in range(0, len(self.y), self.batch_size):
            yield self.x[i:i + self.batch_size], self.y[i:i + self.batch_size]


def objective64(loader, W, b, reg):
    """Each model's lintorch objective by one float64 pass: W (K, C, D), b (K, C) -> (K,)."""
    return full_batch_evaluator(loader, Objective(reg=reg), dtype=torch.float64)(W, b, torch.arange(len(W)))[0]


def accuracy(x, y, W, b):
    return ((x @ W.float().mT + b.float().unsqueeze(-2)).argmax(-1) == y).double().mean(-1)


def sklearn_fit(x, y, C, tol, max_iter, warm=None):
    from sklearn.linear_model import LogisticRegression
    clf = warm or LogisticRegression(solver="lbfgs", tol=tol, max_iter=max_iter, warm_start=warm is not None)
    clf.set_params(C=C)
    t = time.perf_counter()
    clf.fit(x, y)
    return clf, time.perf_counter() - t


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="/tmp/data/cifar10-jpg", help="ImageFolder CIFAR-10 JPEGs")
    p.add_argument("--cache-dir", default="/tmp/solver-cache", help="decoded-uint8 cache (your own)")
    p.add_argument("--n-train", type=int, default=10000, help="train images used (of 40,000)")
    p.add_argument("--reg", type=float, default=1e-3, help="the reg of comparison (a)")
    p.add_argument("--tol", type=float, default=1e-4, help="max-abs gradient tolerance, both solvers")
    p.add_argument("--max-iter", type=int, default=1000, help="iteration limit, both solvers")
    p.add_argument("--path", type=int, default=16, help="reg values in the path (0: skip (b))")
    p.add_argument("--batch-size", type=int, default=4096, help="lintorch's evaluation batch")
    p.add_argument("--line-search", default="strong_wolfe", choices=("strong_wolfe", "armijo"))
    p.add_argument("--precondition", default="auto", choices=("auto", "gram", "none"),
                   help="lintorch's L-BFGS from (X^T X / N + 2 reg I)^-1 (its time included) or plain; "
                   "auto: gram (in kernel form where N < D), as train.py")
    p.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn in (a) and (b)")
    p.add_argument("--no-sklearn-path", action="store_true", help="skip scikit-learn's path in (b)")
    p.add_argument("--nonsmooth", action="store_true", help="only measure L-BFGS on the hinge and l1")
    p.add_argument("--json", default="bench-results/lbfgs_compare.json", help="where the numbers go")
    return p


class Problem:
    """The comparison's data, preprocessed as training does it: x (N, D), y (N,) a seeded subset of
    the train split, xv, yv the validation split, loader over x in fixed order."""

    def __init__(self, args):
        d = load_dataset("imagefolder", args.data_dir, 32, 10000, 0, cache_dir=args.cache_dir)
        pre = Preprocess.fit(d.train.x)
        # a seeded random subset: the split is in folder order, i.e. sorted by class
        idx = torch.randperm(len(d.train), generator=torch.Generator().manual_seed(0))[:args.n_train].sort().values
        self.x, self.y = pre(d.train.x[idx]), d.train.y[idx]
        self.xv, self.yv = pre(d.val.x), d.val.y
        self.N, self.D, self.C = len(self.y), self.x.shape[1], 10
        self.loader = MemoryLoader(self.x, self.y, args.batch_size)
        self.args = args

    def precondition(self, regs):
        """--precondition's Gram preconditioners for regs, or None (plain L-BFGS)."""
        a = self.args
        use = a.precondition == "gram" or (a.precondition == "auto" and self.N >= self.D)
        return gram_preconditioners(self.loader, regs, self.C)[0] if use else None

    def zeros(self, K):
        return (torch.zeros(K, self.C, self.D, dtype=torch.float64), torch.zeros(K, self.C, dtype=torch.float64))

    def sklearn_fit(self, reg, warm=None):
        """scikit-learn at C = 1 / (2 reg N) -> (clf, seconds)."""
        return sklearn_fit(self.x.numpy(), self.y.numpy(), 1 / (2 * reg * self.N), self.args.tol, self.args.max_iter,
                           warm)


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    pb = Problem(args)
    out = {"n_train": pb.N, "tol": args.tol, "max_iter": args.max_iter, "threads": torch.get_num_threads(),
           "line_search": args.line_search, "precondition": args.precondition}
    if args.nonsmooth:
        return nonsmooth(pb.loader, pb.zeros, args, out)
    res, t_one = one_reg(pb, out)
    if args.path:
        reg_path(pb, res, t_one, out)
    _save(out, args.json)


def one_reg(pb, out):
    """(a) one reg value: lintorch's L-BFGS, then scikit-learn's, into out["a"] -> (lintorch's
    result, its seconds)."""
    args, loader, xv, yv, N = pb.args, pb.loader, pb.xv, pb.yv, pb.N
    t = time.perf_counter()
    res = lbfgs(full_batch_evaluator(loader, Objective(reg=args.reg)), *pb.zeros(1), tol=args.tol,
                max_iter=args.max_iter, line_search=args.line_search, precondition=pb.precondition([args.reg]))
    t_one = time.perf_counter() - t
    f_ours = objective64(loader, res.W, res.b, args.reg).item()
    out["a"] = {"reg": args.reg, "C": 1 / (2 * args.reg * N), "lintorch_s": t_one, "lintorch_f": f_ours,
                "lintorch_iters": int(res.iterations[0]), "lintorch_evals": int(res.evaluations[0]),
                "lintorch_status": res.status[0], "lintorch_val_acc": accuracy(xv, yv, res.W[0], res.b[0]).item()}
    print(f"(a) lintorch lbfgs reg={args.reg:g}: {t_one:.1f}s, f={f_ours:.10f}, {res.status[0]}, "
          f"{int(res.iterations[0])} iters, {int(res.evaluations[0])} evals, val acc {out['a']['lintorch_val_acc']:.4f}")
    if not args.no_sklearn:
        clf, t_sk = pb.sklearn_fit(args.reg)
        W_sk = torch.from_numpy(clf.coef_).double()[None]
        b_sk = torch.from_numpy(clf.intercept_).double()[None]
        f_sk = objective64(loader, W_sk, b_sk, args.reg).item()
        out["a"].update(sklearn_s=t_sk, sklearn_f=f_sk, sklearn_iters=int(clf.n_iter_[0]),
                        sklearn_val_acc=accuracy(xv, yv, W_sk[0], b_sk[0]).item(), time_ratio=t_one / t_sk,
                        rel_f_diff=(f_ours - f_sk) / abs(f_sk))
        print(f"    scikit-learn C={1 / (2 * args.reg * N):.4g}: {t_sk:.1f}s, f={f_sk:.10f}, "
              f"{int(clf.n_iter_[0])} iters, val acc {out['a']['sklearn_val_acc']:.4f}; time ratio "
              f"{t_one / t_sk:.2f}, (f_lintorch - f_sklearn)/f = {(f_ours - f_sk) / abs(f_sk):.2e}")
    return res, t_one


def reg_path(pb, res, t_one, out):
    """(b) the reg path: lintorch's K members in one run against one value (res, its result in
    t_one seconds), the evaluation cost ratio behind that, and scikit-learn's warm-started path,
    into out["b"]."""
    args, loader, xv, yv = pb.args, pb.loader, pb.xv, pb.yv
    regs = torch.logspace(-6, -1, args.path, dtype=torch.float64)
    t = time.perf_counter()
    path = lbfgs(full_batch_evaluator(loader, Objective(reg=regs)), *pb.zeros(args.path), tol=args.tol,
                 max_iter=args.max_iter, line_search=args.line_search, precondition=pb.precondition(regs))
    t_path = time.perf_counter() - t
    f_path = objective64(loader, path.W, path.b, regs)
    out["b"] = {"regs": regs.tolist(), "lintorch_s": t_path, "vs_one": t_path / t_one, "calls": path.calls,
                "status": path.status, "iters": path.iterations.tolist(), "f": f_path.tolist(),
                "val_acc": accuracy(xv, yv, path.W, path.b).tolist()}
    print(f"(b) lintorch path of {args.path}: {t_path:.1f}s = {t_path / t_one:.2f}x one value, "
          f"{path.calls} evaluate calls, statuses {sorted(set(path.status))}, "
          f"iters {path.iterations.min().item()}..{path.iterations.max().item()}")
    # the floor of that ratio on this machine: one evaluation of all K members against one member
    ratio, t_k, t_1 = evaluation_cost_ratio(loader, regs, pb.zeros)
    out["b"].update(eval_ratio=ratio, eval_s_path=t_k, eval_s_one=t_1,
                    member_evaluations=int(path.evaluations.sum()), one_evaluations=int(res.evaluations[0]))
    print(f"    one evaluation of all {args.path} members = {ratio:.2f}x one member's ({t_k * 1e3:.0f} ms vs "
          f"{t_1 * 1e3:.0f} ms, median of 7, alternated); member-evaluations {int(path.evaluations.sum())} "
          f"vs one value's {int(res.evaluations[0])}")
    if not (args.no_sklearn or args.no_sklearn_path):
        clf, t_sk, fs = None, 0.0, []
        for r in regs.flip(0).tolist():                            # strongest reg first, warm-started
            clf, dt = pb.sklearn_fit(r, clf)
            t_sk += dt
            fs.append(objective64(loader, torch.from_numpy(clf.coef_).double()[None],
                                  torch.from_numpy(clf.intercept_).double()[None], r).item())
        f_sk = torch.tensor(fs[::-1], dtype=torch.float64)
        out["b"].update(sklearn_s=t_sk, sklearn_f=f_sk.tolist(), vs_sklearn=t_path / t_sk,
                        max_rel_f_diff=((f_path - f_sk) / f_sk.abs()).max().item())
        print(f"    scikit-learn warm-started path: {t_sk:.1f}s; lintorch/sklearn = {t_path / t_sk:.3f}; "
              f"max (f_lintorch - f_sklearn)/f = {out['b']['max_rel_f_diff']:.2e}")


def evaluation_cost_ratio(loader, regs, zeros, repeats=7):
    """Median time of one full-batch evaluation of K members (regs (K,)) over that of one member,
    the two alternated: what a path costs per round against one value, before iteration counts."""
    K = len(regs)
    ev_k, ev_1 = full_batch_evaluator(loader, Objective(reg=regs)), full_batch_evaluator(loader, Objective(reg=regs[:1]))
    (Wk, bk), (W1, b1) = zeros(K), zeros(1)
    Wk.normal_(0, 1e-3, generator=torch.Generator().manual_seed(0))
    W1.copy_(Wk[:1])
    times = {K: [], 1: []}
    for _ in range(repeats):
        for n, ev, W, b in ((K, ev_k, Wk, bk), (1, ev_1, W1, b1)):
            t = time.perf_counter()
            ev(W, b, torch.arange(n))
            times[n].append(time.perf_counter() - t)
    t_k, t_1 = sorted(times[K])[repeats // 2], sorted(times[1])[repeats // 2]
    return t_k / t_1, t_k, t_1


def nonsmooth(loader, zeros, args, out):
    """L-BFGS on the plain hinge and on l1 (bypassing full_batch_evaluator's refusal): status and
    the max-abs (sub)gradient it stops at."""
    for name, kw, pen in (("hinge+l2", dict(loss="svm"), "l2"), ("softmax+l1", dict(loss="softmax"), "l1")):
        def evaluate(W, b, active, kw=kw, pen=pen):
            f, dW, db, n = 0.0, torch.zeros_like(W), torch.zeros_like(b), 0
            for xb, yb in loader.batches(0):
                _, data, _, gW, gb = objective_and_grad(xb, W.float(), b.float(), yb, reduction="sum", **kw)
                f, n = f + data.double(), n + len(yb)
                dW += gW.double()
                db += gb.double()
            R = LF.penalty_forward(W, pen)
            return f / n + args.reg * R, dW / n + args.reg * LF.penalty_backward(W, torch.ones(len(W), dtype=W.dtype), pen), db / n
        t = time.perf_counter()
        res = lbfgs(evaluate, *zeros(1), tol=args.tol, max_iter=args.max_iter, line_search=args.line_search)
        out[name] = {"s": time.perf_counter() - t, "status": res.status[0], "iters": int(res.iterations[0]),
                     "evals": int(res.evaluations[0]), "grad_max": res.grad_max[0].item(), "f": res.f[0].item()}
        print(f"{name}: {out[name]}")
    _save(out, args.json)


def _save(out, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))


if __name__ == "__main__":
    main()
