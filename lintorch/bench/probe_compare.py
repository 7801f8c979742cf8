"""LinearProbe.fit on a small problem against scikit-learn on the same objective, alternating
(medians of --repeats each, all in one process and one run):

    python -m lintorch.bench.probe_compare                       # 2,000 x 64, 10 classes, 1 thread
    python -m lintorch.bench.probe_compare --profile exact       # cProfile of what a fit spends

Shapes: N training rows, D features, C classes (Gaussian blobs, seeded; a separate validation set
of --n-val rows is given as X_val, y_val, so both contenders train on the same N rows).
The mappings (lintorch minimizes (1/N) sum_i L_i + reg ||W||^2, the bias unpenalized):
- squared, solver="exact" against RidgeClassifier (sum_i ||s_i - t_i||^2 + alpha ||W||^2,
  t = +-1): alpha = N reg;
- softmax, solver="lbfgs" against LogisticRegression(solver="lbfgs") (C sum_i L_i + ||W||^2 / 2):
  C = 1 / (2 reg N), the same tol and max_iter.
Both see the features as given (standardize=False), so they solve one objective; the probe's
default (standardize=True) is timed too. Prints one line per contender and the ratios.
"""
import argparse
import statistics
import time


def blobs(n, d, c, seed):
    """Gaussian class blobs: X (n, d) float32, y (n,) int64."""
    import torch
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(c, d, generator=g) * 0.6
    y = torch.randint(0, c, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


def contenders(a):
    """{name: zero-argument callable that fits once}, in the order they alternate."""
    from lintorch import LinearProbe
    X, y = blobs(a.n + a.n_val, a.d, a.classes, a.seed)
    Xt, yt, Xv, yv = X[:a.n], y[:a.n], X[a.n:], y[a.n:]
    Xn, yn = Xt.numpy(), yt.numpy()
    out = {
        "lintorch exact": lambda: LinearProbe(loss="squared", solver="exact", reg=a.reg, standardize=False,
                                              device="cpu").fit(Xt, yt, Xv, yv),
        "lintorch exact (standardize)": lambda: LinearProbe(loss="squared", solver="exact", reg=a.reg,
                                                            device="cpu").fit(Xt, yt, Xv, yv),
        "lintorch lbfgs": lambda: LinearProbe(loss="softmax", solver="lbfgs", reg=a.reg, tol=a.tol,
                                              max_iter=a.max_iter, standardize=False, device="cpu").fit(Xt, yt, Xv, yv),
    }
    try:
        from sklearn.linear_model import LogisticRegression, RidgeClassifier
    except ImportError:
        print("scikit-learn is not installed: lintorch alone")
        return out
    out["sklearn RidgeClassifier"] = lambda: RidgeClassifier(alpha=a.n * a.reg).fit(Xn, yn)
    out["sklearn LogisticRegression"] = lambda: LogisticRegression(
        C=1 / (2 * a.reg * a.n), tol=a.tol, max_iter=a.max_iter).fit(Xn, yn)
    return out


def timed(fn):
    """-> (wall seconds, this process's CPU seconds): on a loaded machine the wall clock also counts
    the time the process waited for a core, which the CPU time leaves out (one thread: CPU <= wall)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000, help="training rows N")
    p.add_argument("--n-val", type=int, default=500, help="validation rows (X_val)")
    p.add_argument("--d", type=int, default=64, help="features D")
    p.add_argument("--classes", type=int, default=10, help="classes C")
    p.add_argument("--reg", type=float, default=1e-3, help="lintorch's reg (alpha and C follow from it)")
    p.add_argument("--tol", type=float, default=1e-4, help="both L-BFGS tolerances")
    p.add_argument("--max-iter", type=int, default=1000, help="both L-BFGS iteration limits")
    p.add_argument("--repeats", type=int, default=5, help="timed fits per contender (medians)")
    p.add_argument("--threads", type=int, default=1, help="torch's threads, and scikit-learn's BLAS threads unless "
                   "OMP_NUM_THREADS is set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", choices=("exact", "lbfgs"), default=None,
                   help="instead of timing: cProfile one lintorch fit, the top 25 by cumulative time")
    return p


def main(argv=None):
    a = get_args_parser().parse_args(argv)
    import os
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # scikit-learn's BLAS: as torch
        os.environ.setdefault(var, str(a.threads))
    import torch
    torch.set_num_threads(a.threads)
    fits = contenders(a)
    for fn in fits.values():         # warm up: imports, first-call allocations
        fn()
    if a.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile(time.process_time)     # CPU time: a loaded machine's waits left out
        prof.runcall(fits[f"lintorch {a.profile}"])
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return 0
    wall, cpu = {name: [] for name in fits}, {name: [] for name in fits}
    load = os.getloadavg()[0]
    for _ in range(a.repeats):       # alternating, so a change in the machine's load hits every contender
        for name, fn in fits.items():
            w, c = timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
    mw = {name: statistics.median(t) for name, t in wall.items()}
    mc = {name: statistics.median(t) for name, t in cpu.items()}
    print(f"N {a.n}, D {a.d}, C {a.classes}, reg {a.reg:g}; {a.threads} torch thread(s), OMP_NUM_THREADS "
          f"{os.environ.get('OMP_NUM_THREADS')}, load {load:.1f} -> {os.getloadavg()[0]:.1f}; medians of {a.repeats}")
    print(f"  {'':<30} {'wall ms':>9} {'CPU ms':>9}")
    for name in fits:
        print(f"  {name:<30} {1000 * mw[name]:9.1f} {1000 * mc[name]:9.1f}")
    for ours, theirs in (("lintorch exact", "sklearn RidgeClassifier"), ("lintorch lbfgs", "sklearn LogisticRegression")):
        if theirs in mw:
            print(f"  {ours} / {theirs}: {mw[ours] / mw[theirs]:.2f}x wall, {mc[ours] / mc[theirs]:.2f}x CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
