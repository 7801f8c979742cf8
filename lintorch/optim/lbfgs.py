"""Full-batch L-BFGS for K linear classifiers at once (a regularization path, or one model as K = 1).

Shapes: K members, N examples, D features, C classes; each member's parameters theta = (W, b),
W (C, D), b (C,), flattened to P = C * D + C entries.

Each member runs its own L-BFGS: its own (s, y) history, line search, convergence test and
status; only the evaluation is shared. A member is a Python generator that yields the point it
needs evaluated and receives (f, gradient); every round the driver stacks the pending points of
all live members, whatever line-search state each is in, into ONE call
evaluate(W (A, C, D), b (A, C), active (A,) member indices) -> (f (A,), dW (A, C, D), db (A, C)),
and sends each member its row. Converged, stopped and non-finite members leave the stack, so
they cost nothing. The solver state is float64 whatever dtype evaluate computes in.

Convergence is scikit-learn's (scipy L-BFGS-B with gtol=tol): a member stops "converged" when
max_j |dL/dtheta_j| <= tol over all of W and b, where L = (1/N) sum_i w_{y_i} L_i + reg R(W)
is lintorch's mean objective. scikit-learn's lbfgs minimizes the same L scaled by 1/sum_i w_{y_i}
(1/N without or with balanced class weights) at reg = 1 / (2 C_sklearn N), so tol means the same
number in both. It stops "stalled" when an accepted step reduces f by no more than
ftol * max(|f|, |f_new|, 1) (scipy's factr test, ftol = 64 eps as scikit-learn passes; scipy calls
this convergence too) or when the line search finds no acceptable step; "max_iter" after max_iter
iterations; "nonfinite" when f or the gradient at the start is NaN/inf, or every trial point of a
line search is; "stopped" when should_stop() said so.

Resume: there is none. A generator's state (history, line-search bracket) is not saved;
LBFGSResult.state_dict() keeps each member's last accepted W, b, which warm-start a new run (its
history rebuilt, so the iterates differ from an uninterrupted run).
"""
import math
from collections import deque
from dataclasses import dataclass, field
from typing import List

import torch


LINE_SEARCHES = ("strong_wolfe", "armijo")
__all__ = ["lbfgs", "LBFGSResult", "full_batch_evaluator", "gram_preconditioners", "LINE_SEARCHES"]


@dataclass
class _Member:
    """One member's running record; the generator updates it at each accepted iterate."""
    theta: torch.Tensor
    f: float = math.nan
    grad_max: float = math.nan
    iterations: int = 0
    evaluations: int = 0
    status: str = "running"
    trace: List[float] = field(default_factory=list)      # f after each accepted iteration


@dataclass
class LBFGSResult:
    """Per member: W (K, C, D), b (K, C) float64, f (K,), grad_max (K,) (the max-abs gradient at
    W, b), iterations and evaluations (K,) int64, status [K] strings; calls: evaluate calls."""
    W: torch.Tensor
    b: torch.Tensor
    f: torch.Tensor
    grad_max: torch.Tensor
    iterations: torch.Tensor
    evaluations: torch.Tensor
    status: List[str]
    calls: int
    traces: List[List[float]]

    def state_dict(self):
        """Plain tensors and lists (torch.load(weights_only=True) reads them); a warm start, not a resume."""
        return {k: getattr(self, k) for k in ("W", "b", "f", "grad_max", "iterations", "evaluations",
                                              "status", "calls")}


# --------------------------------------------------------------------------- line searches

def _cubic_min(t1, f1, g1, t2, f2, g2, lo, hi):
    """Minimizer of the cubic through (t1, f1, g1), (t2, f2, g2), clipped to [lo, hi]; the
    midpoint when it does not exist or a value is not finite (torch.optim.lbfgs's rule)."""
    if not all(map(math.isfinite, (f1, g1, f2, g2))) or t1 == t2:
        return (lo + hi) / 2
    d1 = g1 + g2 - 3 * (f1 - f2) / (t1 - t2)
    d2sq = d1 * d1 - g1 * g2
    if d2sq < 0:
        return (lo + hi) / 2
    d2 = math.copysign(math.sqrt(d2sq), t2 - t1)
    den = g2 - g1 + 2 * d2
    t = t2 - (t2 - t1) * (g2 + d2 - d1) / den if den != 0 else (lo + hi) / 2
    return min(max(t, lo), hi)


def _strong_wolfe(f, gtd, d, t, c1=1e-4, c2=0.9, max_ls=25, xtol=1e-9):
    """Strong Wolfe search along d from t (a generator: yields t, receives (f_t, g_t)), after
    torch.optim.lbfgs._strong_wolfe: extrapolate until a bracket, then zoom by cubic interpolation.
    A non-finite trial counts as too long a step. -> (t, f_t, g_t) or None when nothing satisfied
    sufficient decrease within max_ls evaluations."""
    t_prev, f_prev, gtd_prev = 0.0, f, gtd
    best = None                                      # lowest sufficient-decrease point seen
    bracket = None
    for _ in range(max_ls):
        f_t, g_t = yield t
        gtd_t = float(g_t @ d) if math.isfinite(f_t) else math.inf
        ok = math.isfinite(f_t) and f_t <= f + c1 * t * gtd
        if ok and (best is None or f_t < best[1]):
            best = (t, f_t, g_t)
        if not ok or (bracket is not None and f_t >= f_prev):
            bracket = [(t_prev, f_prev, gtd_prev), (t, f_t, gtd_t)]
            break
        if abs(gtd_t) <= -c2 * gtd:
            return t, f_t, g_t
        if gtd_t >= 0:
            bracket = [(t, f_t, gtd_t), (t_prev, f_prev, gtd_prev)]
            break
        t_prev, f_prev, gtd_prev, t = t, f_t, gtd_t, _cubic_min(t_prev, f_prev, gtd_prev, t, f_t, gtd_t,
                                                                  t + 0.01 * (t - t_prev), 10 * t)
        bracket = []                                 # extrapolating: f must keep decreasing
    else:
        return best
    lo, hi = bracket                                 # lo: lower f (sufficient decrease), hi: the other end
    d_max = float(d.abs().max())
    for _ in range(max_ls):
        if abs(hi[0] - lo[0]) * d_max < xtol:
            break
        a, b = sorted((lo[0], hi[0]))
        t = _cubic_min(*lo, *hi, a + 0.1 * (b - a), b - 0.1 * (b - a))
        f_t, g_t = yield t
        gtd_t = float(g_t @ d) if math.isfinite(f_t) else math.inf
        if not math.isfinite(f_t) or f_t > f + c1 * t * gtd or f_t >= lo[1]:
            hi = (t, f_t, gtd_t)
            continue
        best = (t, f_t, g_t) if best is None or f_t < best[1] else best
        if abs(gtd_t) <= -c2 * gtd:
            return t, f_t, g_t
        if gtd_t * (hi[0] - lo[0]) >= 0:
            hi = lo
        lo = (t, f_t, gtd_t)
    return best


def _armijo(f, gtd, d, t, c1=1e-4, max_ls=25):
    """Backtracking: accept the first t with f_t <= f + c1 t g.d, else shrink t by the minimizer
    of the quadratic through f, g.d and f_t, kept within [0.1 t, 0.5 t]. -> (t, f_t, g_t) or None."""
    for _ in range(max_ls):
        f_t, g_t = yield t
        if math.isfinite(f_t) and f_t <= f + c1 * t * gtd:
            return t, f_t, g_t
        q = -gtd * t * t / (2 * (f_t - f - gtd * t)) if math.isfinite(f_t) else 0.1 * t
        t = min(max(q, 0.1 * t), 0.5 * t)
    return None


# --------------------------------------------------------------------------- one member

def _direction(g, S, Y, rho, precondition=None):
    """The two-loop recursion: -H g with H the L-BFGS inverse Hessian of the (s, y) history,
    starting from H0 = gamma I, gamma = s.y / y.y of the newest pair (Nocedal & Wright, Algorithm
    7.4), or from H0 = gamma M^-1, gamma = s.y / y.M^-1 y, with precondition(v) = M^-1 v.
    The coefficients stay 0-dim tensors where g is: no host sync on a GPU (2 per pair as floats)."""
    q, alphas = g.clone(), []
    for s, y, r in zip(reversed(S), reversed(Y), reversed(rho)):
        a = r * (s @ q)
        q.sub_(a * y)
        alphas.append(a)
    if precondition is not None:
        if S:                                            # one solve for both: q and the newest y
            q, My = precondition(torch.stack([q, Y[-1]])).unbind(0)
            q.mul_((S[-1] @ Y[-1]) / (Y[-1] @ My))
        else:
            q = precondition(q[None])[0]
    elif S:
        q.mul_((S[-1] @ Y[-1]) / (Y[-1] @ Y[-1]))
    for s, y, r, a in zip(S, Y, rho, reversed(alphas)):
        q.add_((a - r * (y @ q)) * s)
    return q.neg_()


def _solve(rec, max_iter, tol, ftol, history, line_search, precondition=None):
    """One member's L-BFGS (a generator: yields points theta (P,), receives (f, g)) -> status."""
    theta = rec.theta
    f, g = yield theta
    rec.f, rec.grad_max = f, float(g.abs().max())
    if not (math.isfinite(f) and math.isfinite(rec.grad_max)):
        return "nonfinite"
    S, Y, rho = deque(maxlen=history), deque(maxlen=history), deque(maxlen=history)
    search = _strong_wolfe if line_search == "strong_wolfe" else _armijo
    while True:
        if rec.grad_max <= tol:
            return "converged"
        if rec.iterations >= max_iter:
            return "max_iter"
        d = _direction(g, S, Y, rho, precondition)
        gtd = float(g @ d)
        if not gtd < 0:                                  # not a descent direction: restart from -g
            S.clear(), Y.clear(), rho.clear()
            d, gtd = -g, -float(g @ g)
        t0 = min(1.0, 1.0 / float(g.abs().sum())) if not S and precondition is None else 1.0
        gen, any_finite = search(f, gtd, d, t0), False
        try:
            t = next(gen)
            while True:
                f_t, g_t = yield theta + t * d
                any_finite |= math.isfinite(f_t)
                t = gen.send((f_t, g_t))
        except StopIteration as stop:
            found = stop.value
        if found is None:
            return "stalled" if any_finite else "nonfinite"
        t, f_new, g_new = found
        s, y = t * d, g_new - g
        sy = float(s @ y)
        if sy > 1e-10 * float(y @ y):                    # curvature condition: keeps H positive definite
            S.append(s), Y.append(y), rho.append(1.0 / sy)
        theta = theta + s
        stalled = f - f_new <= ftol * max(abs(f), abs(f_new), 1.0)
        f, g = f_new, g_new
        rec.theta, rec.f, rec.grad_max = theta, f, float(g.abs().max())
        rec.iterations += 1
        rec.trace.append(f)
        if stalled and rec.grad_max > tol:
            return "stalled"


# --------------------------------------------------------------------------- the driver

def lbfgs(evaluate, W0, b0, *, max_iter=1000, tol=1e-4, ftol=64 * torch.finfo(torch.float64).eps,
          history=10, line_search="strong_wolfe", on_iter=None, should_stop=None, precondition=None):
    """Minimize K members' objectives from W0 (K, C, D), b0 (K, C) by full-batch L-BFGS.

    evaluate(W (A, C, D), b (A, C), active (A,) int64 indices into the K members) -> f (A,)
    objective values, dW (A, C, D), db (A, C): the A live members' objective and gradient, in
    one pass over the data (full_batch_evaluator builds one). tol: max-abs gradient entry at which
    a member has converged (scikit-learn's tol). history: (s, y) pairs kept per member.
    line_search "strong_wolfe" or "armijo" (backtracking; the curvature check guards the history).
    on_iter(calls, records) is called after every evaluate call; should_stop() polled then too.
    precondition: None, or a list of K callables, member k's v (m, P) -> M_k^-1 v row by row for an
    SPD M_k approximating its Hessian (gram_preconditioners builds them).
    -> LBFGSResult (see the module docstring for the statuses).
    """
    if line_search not in LINE_SEARCHES:
        raise ValueError(f"unknown line_search {line_search!r}; expected one of {', '.join(LINE_SEARCHES)}")
    if W0.dim() != 3 or b0.shape != W0.shape[:2]:
        raise ValueError(f"W0 must be (K, C, D) and b0 (K, C), got {tuple(W0.shape)} and {tuple(b0.shape)}")
    K, C, D = W0.shape
    theta0 = torch.cat([W0.reshape(K, -1), b0.reshape(K, -1)], 1).to(torch.float64)   # (K, P)
    recs = [_Member(theta0[k].clone()) for k in range(K)]
    pre = precondition or [None] * K
    gens = [_solve(r, max_iter, tol, ftol, history, line_search, pre[k]) for k, r in enumerate(recs)]
    pending = {k: next(gen) for k, gen in enumerate(gens)}
    calls = 0
    while pending:
        active = sorted(pending)
        points = torch.stack([pending[k] for k in active])                              # (A, P)
        f, dW, db = evaluate(points[:, :C * D].view(-1, C, D), points[:, C * D:], torch.tensor(active))
        calls += 1
        grads = torch.cat([dW.reshape(len(active), -1), db.reshape(len(active), -1)], 1).to(torch.float64)
        values = f.tolist()                                                               # one host sync for all
        for j, k in enumerate(active):
            recs[k].evaluations += 1
            try:
                pending[k] = gens[k].send((values[j], grads[j]))
            except StopIteration as stop:
                recs[k].status = stop.value
                del pending[k]
        if on_iter is not None:
            on_iter(calls, recs)
        if pending and should_stop is not None and should_stop():
            for k in pending:
                recs[k].status = "stopped"
            break
    theta = torch.stack([r.theta for r in recs])
    return LBFGSResult(theta[:, :C * D].reshape(K, C, D), theta[:, C * D:].reshape(K, C),
                       torch.tensor([r.f for r in recs], dtype=torch.float64),
                       torch.tensor([r.grad_max for r in recs], dtype=torch.float64),
                       torch.tensor([r.iterations for r in recs]), torch.tensor([r.evaluations for r in recs]),
                       [r.status for r in recs], calls, [r.trace for r in recs])


def full_batch_evaluator(loader, objective, *, dtype=None):
    """An evaluate(W, b, active) for lbfgs: streams every batch of loader.batches(0) ((x (B, D),
    y (B,)) pairs), sums the data loss and its gradient (objective's loss_and_grad without its
    penalty, reduction "sum") in float64 accumulators, divides by N, and adds reg * R(W) and its
    gradient once, in float64.

    objective: an Objective whose reg is a number or a (K,) tensor (sliced by `active`). The GEMMs
    run in dtype (default: the batches' dtype). The objective must be smooth (Objective.smooth):
    the softmax loss or the squared hinge with the l2 penalty. The hinge and l1/elastic-net are refused (ValueError):
    L-BFGS assumes a gradient that varies continuously. Measured (lintorch/bench/lbfgs_compare.py --nonsmooth,
    2,000 CIFAR-10 images, reg 1e-3, tol 1e-4): both the hinge + l2 and softmax + l1 ran into
    max_iter=200 with the max-abs subgradient still at 7e-3 and 2e-3, never near tol.
    """
    nonsmooth = objective.nonsmooth()
    if nonsmooth:
        raise ValueError(f"lbfgs needs a smooth objective, not {' and '.join(nonsmooth)}: L-BFGS has no "
                         "convergence guarantee at kinks and stalls there; train nonsmooth objectives with SGD")
    reg_all = torch.as_tensor(objective.reg, dtype=torch.float64)
    class_weight = objective.class_weight

    def evaluate(W, b, active):
        r = reg_all[active.to(reg_all.device)] if reg_all.dim() else reg_all
        # f summed where the batches are: no host sync per batch (the driver reads f once per evaluation)
        f, dW, db, n = 0.0, torch.zeros_like(W), torch.zeros_like(b), 0
        for xb, yb in loader.batches(0):
            cdt = dtype or xb.dtype
            Wc, bc = W.to(xb.device, cdt), b.to(xb.device, cdt)
            cw = None if class_weight is None else class_weight.to(xb.device, cdt)
            _, data, _, gW, gb = objective.unregularized(cw).loss_and_grad(xb.to(cdt), Wc, bc, yb, reduction="sum")
            f = f + data.to(torch.float64)
            dW += gW.to(W.device, torch.float64)
            db += gb.to(b.device, torch.float64)
            n += len(yb)
        W64 = W.to(torch.float64)
        r = r.to(W64.device, non_blocking=True)
        f = f.to(W64.device) / n + r * W64.square().sum((-2, -1))
        return f, dW.div_(n).add_(2 * r.view(-1, 1, 1) * W64), db.div_(n)
    return evaluate


def _cholesky(G, shift, tries=40):
    """The lower Cholesky factor of G + shift I, the shift raised tenfold until it exists (at most
    `tries` times). FloatingPointError when G holds NaN/inf, which no shift can repair (the loop
    used to spin forever on one, deaf to SIGTERM)."""
    if not bool(torch.isfinite(G).all()):
        raise FloatingPointError("the training inputs' Gram matrix X^T X / N holds NaN/inf")
    eye = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    for _ in range(tries):
        L, info = torch.linalg.cholesky_ex(G + shift * eye)
        if int(info) == 0:
            return L
        shift *= 10
    raise FloatingPointError(f"X^T X / N + {shift:.3g} I has no Cholesky factor")


def _add_lower_gram(G, xb, block):
    """G += xb^T xb on and below the diagonal (blocks of `block` columns; the blocks above are left
    alone): about half the flops for large D (8,192 x 6,400, 2 threads: 1.74 s against 3.02 s for
    the full xb^T xb with blocks of 1,024; 1.97 s with 2,048)."""
    D = xb.shape[1]
    for i in range(0, D, block):
        xi = xb[:, i:i + block]
        G[i:i + block, :i + block].addmm_(xi.T, xb[:, :i + block])


def gram_preconditioners(loader, regs, num_classes, *, memory=None, block=1024):
    """One preconditioner per member for lbfgs: M_k = X^T X / N + 2 reg_k I on each class's weight
    row (the bias left as it is), applied as M_k^-1 v by two triangular solves with its Cholesky
    factor. The data part of the softmax or squared-hinge Hessian is X^T Diag X / N with
    per-example curvatures, so M_k captures the input's correlations, which make plain L-BFGS crawl
    on correlated features (k-means features, 40,000 x 6,400, squared hinge, reg 3e-3: converged in
    65 iterations, where 300 plain iterations ended unconverged at max |gradient| 2e-3).

    One streamed pass builds the Gram (N D^2 flops, summed in float64), each factor costs D^3 / 3
    and is kept in the data's dtype (K D^2 floats for float32 inputs); applying one reads it twice,
    once per iteration for the direction and the newest curvature pair together. The Gram is summed
    block-row by block-row on and below the diagonal (block columns), then mirrored.
    -> (list of K callables, None), or (None, the reason) when the factors would need more than
    `memory` bytes.
    """
    regs = torch.as_tensor(regs, dtype=torch.float64).reshape(-1)
    G, part, n, rows, dtype = None, None, 0, 0, torch.float64
    for xb, _ in loader.batches(0):          # in the batches' dtype, flushed to float64 every 16k rows
        if part is None:
            D = xb.shape[1]
            need = (len(regs) * xb.element_size() + 16) * D * D
            if memory is not None and need > memory:        # before the pass, not after it
                return None, f"{len(regs)} preconditioners of {D} x {D} need {need / 2**30:.1f} GiB"
            part = torch.zeros(D, D, dtype=xb.dtype, device=xb.device)
            dtype = xb.dtype                 # factors in the data's precision: half the memory traffic
            G = torch.zeros(xb.shape[1], xb.shape[1], dtype=torch.float64, device=xb.device)
        _add_lower_gram(part, xb, block)
        n, rows = n + xb.shape[0], rows + xb.shape[0]
        if rows >= 16384:
            G.add_(part), part.zero_()
            rows = 0
    G.add_(part)
    del part
    G = G.tril_().add_(G.tril(-1).mT)                  # the lower blocks' (and diagonal's) mirror
    G.div_(n)
    floor = 1e-8 * max(float(G.diagonal().mean()), 1e-30)     # reg 0 and D > N leave G singular
    factors = [_cholesky(G, max(2 * float(r), floor)).to(dtype) for r in regs]
    del G
    C = num_classes

    def make(L):
        def apply(v):                                    # v (m, P) -> M^-1 v row by row
            out = v.clone()
            W = v[:, :C * D].reshape(-1, D).to(L.device, L.dtype)                  # (m C, D)
            out[:, :C * D] = torch.cholesky_solve(W.T, L).T.reshape(len(v), -1).to(v.device, v.dtype)
            return out
        return apply
    return [make(L) for L in factors], None

