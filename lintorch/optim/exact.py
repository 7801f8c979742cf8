"""Exact minimisers of the one-vs-rest least-squares objective, a whole regularization path at once.

Shapes: N training examples, D features, C classes, R regularization values; X (N, D), y (N,),
targets T (N, C) with t_ic = +1 when y_i = c, else -1; weights W (R, C, D), biases b (R, C).

Objective (lintorch's squared loss: mean over examples, the bias unpenalized):
    f(W, b) = (1/N) sum_i sum_c (w_c . x_i + b_c - t_ic)^2 + reg ||W||^2.

The intercept is exact by centring: for any W the best b is t_bar - W x_bar, and putting it back leaves
the same objective on the centred Xc = X - x_bar, Tc = T - t_bar with no bias. (Augmenting X with a
constant column would penalize the bias, or need its penalty removed, which breaks the one
factorization shared by every reg.)

Primal (D <= N): A = Xc^T Xc / N (D, D) and B = Xc^T Tc / N (D, C) from one streamed pass over row
blocks (each block's product in its own dtype, summed in float64 after shifting by the first block's
mean so float32 blocks do not cancel), then (A + reg I) W^T = B and
    f = ||Tc||^2 / N - sum(B * W^T).
Dual (D > N): Kc = Xc Xc^T (N, N) summed over column blocks of the features (generated block by block,
never stored whole), then a = (Kc + N reg I)^-1 Tc, W^T = Xc^T a (a second pass) and f = reg sum(Tc * a).

Factorizations: "eigh" is one eigendecomposition V diag(lam) V^T for every reg (then each costs
O(D^2 C)); "cholesky" is one factorization per reg. eigh costs about EIGH_COST factorizations (its
tridiagonal reduction is memory-bound and barely threaded), so "auto" takes eigh only from EIGH_COST
values on; either gives the same solutions to float64 rounding.
"""
import torch

from .gram import GramSum, shifted

METHODS = ("auto", "eigh", "cholesky")
EIGH_COST = 100      # eigh's time in Cholesky factorizations at D = 6,400 (bench/RESULTS.md, "Decisions in the code")


def targets(y, num_classes, dtype=torch.float64):
    """y (n,) int -> (n, C) one-vs-rest targets: +1 for the label's class, -1 elsewhere."""
    T = torch.full((y.shape[0], num_classes), -1.0, dtype=dtype, device=y.device)
    return T.scatter_(1, y.view(-1, 1).long(), 1.0)


class SingularGram(ValueError):
    """M + reg I is singular (reg 0 with a rank-deficient Gram: a constant or repeated feature):
    the path has no unique minimizer there. .reg: the value refused."""

    def __init__(self, reg):
        super().__init__(f"exact path: the Gram is singular at reg {reg:g}; use a larger reg")
        self.reg = reg


def _check(regs, method):
    """regs (a number, list or tensor on any device) -> (R,) float64 on the host, checked (a handful of
    numbers: each solve moves them to the data's device where they meet it)."""
    regs = torch.as_tensor(regs, dtype=torch.float64).reshape(-1).cpu()
    if regs.numel() == 0 or not bool(torch.isfinite(regs).all()) or bool((regs < 0).any()):
        raise ValueError(f"exact path: regs must be finite and >= 0, got {regs.tolist()}")
    if method not in METHODS:
        raise ValueError(f"unknown exact method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "auto":
        method = "eigh" if regs.numel() >= EIGH_COST else "cholesky"
    return regs, method


def _solve_shifted(M, rhs, shifts, method):
    """M (m, m) symmetric PSD float64, rhs (m, C) -> (R, m, C): (M + s I)^-1 rhs for every shift s.
    A singular M + s I (s = 0 with M rank deficient) is refused, not answered with noise."""
    if method == "eigh":
        lam, V = torch.linalg.eigh(M)
        Q = V.T @ rhs                                                 # (m, C)
        den = lam.clamp_min(0).unsqueeze(0) + shifts.to(M).unsqueeze(1)   # (R, m)
        singular = (den <= 1e-12 * max(float(lam.max()), 1e-300)).any(1)     # (R,)
        if bool(singular.any()):
            raise SingularGram(float(shifts[singular.cpu()].min()))
        return V @ (Q / den.unsqueeze(2))                             # (R, m, C)
    out = []
    for s in shifts.tolist():
        L, info = torch.linalg.cholesky_ex(shifted(M, s))
        if int(info) != 0:
            raise SingularGram(s)
        out.append(torch.cholesky_solve(rhs, L))
    return torch.stack(out)


def add_class_sums(S, counts, x, y):
    """S (C, D) += each class's rows of x (n, D), counts (C,) += each class's rows, y (n,) int64 the
    classes; all float64. On the CPU by index_add_, which adds the rows in order (5x cheaper than a
    one-hot product at 512 x 512); on CUDA index_add_ adds by atomics in an order (so a rounding)
    that changes from run to run, so there by the one-hot product (and no bincount, which would read
    its size back from the GPU)."""
    if x.device.type == "cpu":
        S.index_add_(0, y, x)
        counts += torch.bincount(y, minlength=len(counts))
        return
    onehot = torch.zeros(len(y), len(counts), dtype=x.dtype, device=x.device).scatter_(1, y.view(-1, 1), 1.0)
    S.addmm_(onehot.T, x)
    counts += onehot.sum(0)


class GramStats:
    """What the primal needs from the data, in float64: n, mean (D,), A = Xc^T Xc / n (D, D),
    B = Xc^T Tc / n (D, C), t_mean (C,), tt = ||Tc||^2 / n."""

    def __init__(self, n, mean, A, B, t_mean, tt):
        self.n, self.mean, self.A, self.B, self.t_mean, self.tt = n, mean, A, B, t_mean, tt


def gram_stats(batches, num_classes, block=None):
    """batches: iterable of (xb (n_b, D) float, yb (n_b,) int) row blocks -> GramStats, in one pass.
    The rows are shifted by the first block's mean, then X^T X is summed by gram.GramSum (on and below
    the diagonal in the blocks' dtype, into float64 every block), and each class's rows in float64:
    T^T X = 2 S - 1 s^T (S (C, D) the per-class sums, s (D,) all rows', since t_ic = +-1). block:
    GramSum's column block (None: chosen from D)."""
    gram = s = shift = S = counts = x64 = None
    n = 0
    for xb, yb in batches:
        if gram is None:
            D = xb.shape[1]
            shift = xb.mean(0, keepdim=True)                # centre first: float32 blocks then barely cancel
            gram = GramSum(D, xb.dtype, xb.device, block, flush_rows=0)
            s = torch.zeros(D, dtype=torch.float64, device=xb.device)
            S = torch.zeros(num_classes, D, dtype=torch.float64, device=xb.device)
            counts = torch.zeros(num_classes, dtype=torch.float64, device=xb.device)
        xs = xb - shift
        gram.add(xs)
        if x64 is None or len(x64) < len(xs):      # one float64 copy, reused: a fresh one per block costs 5x
            x64 = torch.empty(len(xs), D, dtype=torch.float64, device=xb.device)
        xs64 = x64[:len(xs)].copy_(xs)
        yb = yb.to(xb.device, torch.int64)
        s += xs64.sum(0)
        add_class_sums(S, counts, xs64, yb)
        n += xb.shape[0]
    if gram is None:
        raise ValueError("exact path: no training examples")
    G = gram.total()
    m = s / n                                               # mean of the shifted rows
    A = G.sub_(torch.outer(m, m).mul_(n)).div_(n)           # in place: G is this pass's own
    t_mean = (2 * counts - n) / n
    TX = 2 * S - s                                          # (C, D)
    B = (TX.T - n * torch.outer(m, t_mean)) / n
    tt = float(num_classes - (t_mean.square()).sum())       # ||T||^2 / n = C, minus the centring
    return GramStats(n, shift.reshape(-1).double() + m, A, B, t_mean, tt)


def primal_path(stats, regs, method="auto"):
    """GramStats, regs (R,) -> (W (R, C, D) float64, b (R, C), objective (R,)) at each reg."""
    regs, method = _check(regs, method)
    Wt = _solve_shifted(stats.A, stats.B, regs, method)             # (R, D, C)
    f = stats.tt - (stats.B.unsqueeze(0) * Wt).sum((1, 2))
    W = Wt.transpose(1, 2).contiguous()                             # (R, C, D)
    b = stats.t_mean.unsqueeze(0) - W @ stats.mean
    return W, b, f


def dual_path(blocks, y, num_classes, regs, method="auto"):
    """The dual, for D > N. blocks: a callable returning a fresh iterator over column blocks
    Xb (N, d_b) of the training features (all N rows, consecutive columns, in order); it is called
    twice (the kernel, then the weights). y (N,) -> (W (R, C, D) float64, b (R, C), objective (R,))."""
    regs, method = _check(regs, method)
    N = y.shape[0]
    T = targets(y, num_classes)
    t_mean = T.mean(0)
    Tc = T - t_mean
    Kc, means = None, []
    for Xb in blocks():
        Xb = Xb.double()
        mu = Xb.mean(0)
        Xc = Xb - mu
        Kc = Xc @ Xc.T if Kc is None else Kc.addmm_(Xc, Xc.T)
        means.append(mu)
    if Kc is None:
        raise ValueError("exact path: no feature blocks")
    a = _solve_shifted(Kc, Tc, N * regs, method)                    # (R, N, C)
    f = regs.to(a.device) * (Tc.unsqueeze(0) * a).sum((1, 2))
    aa = a.permute(1, 0, 2).reshape(N, -1)                          # (N, R C)
    Wt = torch.cat([(Xb.double() - mu).T @ aa for Xb, mu in zip(blocks(), means)])   # (D, R C)
    W = Wt.reshape(-1, len(regs), num_classes).permute(1, 2, 0).contiguous()          # (R, C, D)
    b = t_mean.unsqueeze(0) - W @ torch.cat(means)
    return W, b, f


def path(X, y, num_classes, regs, method="auto", block_rows=8192, block_cols=4096):
    """X (N, D) in memory, y (N,) -> (W (R, C, D), b (R, C), objective (R,)) in float64: the primal
    when D <= N, else the dual."""
    N, D = X.shape
    if D <= N:
        batches = ((X[i:i + block_rows], y[i:i + block_rows]) for i in range(0, N, block_rows))
        return primal_path(gram_stats(batches, num_classes), regs, method)
    return dual_path(lambda: (X[:, j:j + block_cols] for j in range(0, D, block_cols)), y, num_classes, regs, method)


def objective(W, b, X, y, reg):
    """The objective f(W, b) itself, W (C, D), b (C,), X (N, D): for checking a solution."""
    T = targets(y, W.shape[0], W.dtype)
    return float(((X.to(W.dtype) @ W.T + b - T).square().sum() / X.shape[0]) + reg * W.square().sum())
