"""Full-batch L-BFGS for K linear classifiers at once (a regularization path, or one model as K = 1).

Shapes: K members, N examples, D features, C classes; each member's parameters theta = (W, b),
W (C, D), b (C,), flattened to P = C (D + 1) entries, each class's weights then its bias (the layout
optim.precondition's operators take); m = history, the (s, y) pairs kept.

Each member runs its own L-BFGS (its own (s, y) history, line search, convergence test, status);
the device work is done for all at once. A round stacks the trial points of all live members into
ONE evaluate(W (A, C, D), b (A, C), active (A,) member indices) -> (f (A,), dW (A, C, D), db (A, C)),
reads back in one host sync each member's f, slope g.d, max |g| and the dot products the curvature
test needs there (with the numbers of the directions set up the round before), lets the line
searches and the curvature tests decide on the host (which history slots hold pairs is a host count),
and computes the next directions of those that go on as one batched two-loop recursion: one
evaluate, a fixed number of kernels and one sync per round, whatever K and N. Converged, stopped and non-finite
members leave the stack. The solver state is float64 whatever dtype evaluate computes in.

Convergence is scikit-learn's (scipy L-BFGS-B with gtol=tol): a member stops "converged" when
max_j |dL/dtheta_j| <= tol over all of W and b, where L = (1/N) sum_i w_{y_i} L_i + reg R(W)
is lintorch's mean objective. scikit-learn's lbfgs minimizes the same L scaled by 1/sum_i w_{y_i}
(1/N without or with balanced class weights) at reg = 1 / (2 C_sklearn N), so tol means the same
number in both. It stops "stalled" when an accepted step reduces f by no more than
ftol * max(|f|, |f_new|, 1) (scipy's factr test, ftol = 64 eps as scikit-learn passes; scipy calls
this convergence too) or when the line search finds no acceptable step; "max_iter" after max_iter
iterations; "nonfinite" when f or the gradient at the start is NaN/inf, or every trial point of a
line search is; "stopped" when should_stop() said so.

Resume: there is none. The histories and line-search brackets are not saved;
LBFGSResult.state_dict() keeps each member's last accepted W, b, which warm-start a new run (its
history rebuilt, so the iterates differ from an uninterrupted run).
"""
import array
import math
from dataclasses import dataclass, field
from typing import List

import torch


LINE_SEARCHES = ("strong_wolfe", "armijo")
__all__ = ["lbfgs", "LBFGSResult", "full_batch_evaluator", "LINE_SEARCHES"]


@dataclass
class _Member:
    """One member's running record (host numbers), updated at each accepted iterate."""
    f: float = math.nan
    grad_max: float = math.nan
    iterations: int = 0
    evaluations: int = 0
    status: str = "running"
    trace: List[float] = field(default_factory=list)      # f after each accepted iteration
    reached: bool = False                                 # a finite f in the current line search
    pairs: int = 0                                        # (s, y) pairs kept since its history was cleared
    gg: float = 0.0                                       # g.g at its last accepted point
    first: float = 1.0                                    # the first trial step along its direction
    plain: float = 1.0                                    # the first step along -g from that point
    fallback: bool = False                                # its direction is -g, the two-loop's did not descend


# The numbers read back each round, per trial point: at the trial, then of its member's direction
# (g_old the gradient where the direction starts).
_TRIAL = ("f", "g.d", "max |g|", "g.g", "g.g_old", "|g|_1")
_DIRECTION = ("g_old.d", "max |d|")


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


# --------------------------------------------------------------------------- line searches (host numbers)
# A search is a generator over one member's step t along d: it yields a trial t, receives (f_t, g_t . d,
# kept: what the driver needs back of the trial) and returns (t, f_t, kept) of the accepted one, or None.

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


def _strong_wolfe(f, gtd, t, d_max, c1=1e-4, c2=0.9, max_ls=25, xtol=1e-9):
    """Strong Wolfe search from t (f, gtd: the value and slope at t = 0; d_max: max |d|), after
    torch.optim.lbfgs._strong_wolfe: extrapolate until a bracket, then zoom by cubic interpolation.
    A non-finite trial counts as too long a step. None when nothing satisfied sufficient decrease
    within max_ls evaluations."""
    t_prev, f_prev, gtd_prev = 0.0, f, gtd
    best = None                                      # lowest sufficient-decrease point seen
    bracket = None
    for _ in range(max_ls):
        f_t, gtd_t, kept = yield t
        gtd_t = gtd_t if math.isfinite(f_t) else math.inf
        ok = math.isfinite(f_t) and f_t <= f + c1 * t * gtd
        if ok and (best is None or f_t < best[1]):
            best = (t, f_t, kept)
        if not ok or (bracket is not None and f_t >= f_prev):
            bracket = [(t_prev, f_prev, gtd_prev), (t, f_t, gtd_t)]
            break
        if abs(gtd_t) <= -c2 * gtd:
            return t, f_t, kept
        if gtd_t >= 0:
            bracket = [(t, f_t, gtd_t), (t_prev, f_prev, gtd_prev)]
            break
        t_prev, f_prev, gtd_prev, t = t, f_t, gtd_t, _cubic_min(t_prev, f_prev, gtd_prev, t, f_t, gtd_t,
                                                                  t + 0.01 * (t - t_prev), 10 * t)
        bracket = []                                 # extrapolating: f must keep decreasing
    else:
        return best
    lo, hi = bracket                                 # lo: lower f (sufficient decrease), hi: the other end
    for _ in range(max_ls):
        if abs(hi[0] - lo[0]) * d_max < xtol:
            break
        a, b = sorted((lo[0], hi[0]))
        t = _cubic_min(*lo, *hi, a + 0.1 * (b - a), b - 0.1 * (b - a))
        f_t, gtd_t, kept = yield t
        gtd_t = gtd_t if math.isfinite(f_t) else math.inf
        if not math.isfinite(f_t) or f_t > f + c1 * t * gtd or f_t >= lo[1]:
            hi = (t, f_t, gtd_t)
            continue
        best = (t, f_t, kept) if best is None or f_t < best[1] else best
        if abs(gtd_t) <= -c2 * gtd:
            return t, f_t, kept
        if gtd_t * (hi[0] - lo[0]) >= 0:
            hi = lo
        lo = (t, f_t, gtd_t)
    return best


def _armijo(f, gtd, t, d_max, c1=1e-4, max_ls=25):
    """Backtracking: accept the first t with f_t <= f + c1 t g.d, else shrink t by the minimizer
    of the quadratic through f, g.d and f_t, kept within [0.1 t, 0.5 t]. None when max_ls failed."""
    for _ in range(max_ls):
        f_t, _, kept = yield t
        if math.isfinite(f_t) and f_t <= f + c1 * t * gtd:
            return t, f_t, kept
        q = -gtd * t * t / (2 * (f_t - f - gtd * t)) if math.isfinite(f_t) else 0.1 * t
        t = min(max(q, 0.1 * t), 0.5 * t)
    return None


# --------------------------------------------------------------------------- all members' device state

_dot = torch.linalg.vecdot               # row-wise dot products: a, b (A, P) -> (A,)
_ARRAY_CODES = {torch.float64: "d", torch.int64: "q", torch.bool: "b"}


def _host(values, dtype):
    """A non-empty list of host numbers as a CPU tensor, from a host buffer (a third of torch.tensor's
    cost for a short list)."""
    return torch.frombuffer(array.array(_ARRAY_CODES[dtype], values), dtype=dtype)


def two_loop(g, S, Y, live=None, precondition=None, members=None):
    """-H g for A members at once, H each member's L-BFGS inverse Hessian from H0 = gamma I, gamma =
    s.y / y.y of its newest pair, or from H0 = gamma M^-1, gamma = s.y / y.M^-1 y, with
    precondition(v (A, r, P), members) = M^-1 v: the two-loop recursion's direction (Nocedal & Wright,
    Algorithm 7.4), computed in the compact form of Byrd, Nocedal & Schnabel (1994, Theorem 2.2),
        H g = gamma z + S R^-T (D u - gamma Y^T z),  u = R^-1 S^T g,  z = M^-1 (g - Y u),
    S, Y (P, n) the pairs as columns, R (n, n) upper triangular with R_ij = s_i.y_j (i <= j), D its
    diagonal: a fixed number of small batched products and two triangular solves whatever n, where
    the recursion takes about 11 kernels per pair (on small problems each kernel's dispatch is the
    cost). The vectors are rows (u^T = a^T R^-T, w^T = r^T R^-1): the products with S and Y are then
    row-times-matrix, the fast ones.
    g (A, P); S, Y (A, n, P) every member's n pairs, oldest first; live (A, n) bool: which slots hold a
    pair, or None when all do (a member with fewer than n pairs has its empty slots first; an empty
    slot adds nothing, whatever finite numbers S and Y hold there, and gamma is 1 where the newest slot
    is empty). -> (A, P). Nothing read back to the host (a triangular solve checks no error code)."""
    n = S.shape[1]
    SY = S @ Y.mT                                                       # (A, n, n) s_i.y_j
    R = SY.triu()
    u = g[:, None] @ S.mT                                               # (A, 1, n) S^T g, as a row
    if live is not None:                                                # an empty slot: R's row and column e_i
        both = live[:, :, None] & live[:, None, :]
        R = torch.where(both, R, torch.eye(n, dtype=g.dtype, device=g.device))
        u = u.mul_(live[:, None])
    u = torch.linalg.solve_triangular(R.mT, u, upper=False, left=False)     # (A, 1, n)
    z = torch.baddbmm(g[:, None], u, Y, alpha=-1)                       # (g - Y u)^T (A, 1, P)
    y = My = Y[:, -1]                                                   # the newest; M^-1 y
    if precondition is not None:
        z, My = precondition(torch.cat([z, y[:, None]], 1), members).split(1, 1)
        My = My.squeeze(1)
    gamma = SY[:, -1, -1] / _dot(y, My)                                 # (A,)
    if live is not None:
        gamma = torch.where(live[:, -1], gamma, 1.0)
    gamma = gamma[:, None, None]
    rhs = (SY.diagonal(0, 1, 2)[:, None] * u).sub_(gamma * (z @ Y.mT))   # (A, 1, n) D u - gamma Y^T z
    if live is not None:
        rhs = rhs.mul_(live[:, None])
    w = torch.linalg.solve_triangular(R, rhs, upper=True, left=False)   # (A, 1, n)
    return torch.baddbmm(gamma * z, w, S).squeeze(1).neg_()


class _DeviceState:
    """The K members' device state, all float64: theta, grad (K, P) at each member's last accepted
    point; d (K, P) its direction and step (K,) its trial step along it; its history in ring buffers
    S, Y (K, m, P): member k's i-th pair since its history was last cleared is in slot i % m, over
    the oldest, so a new pair writes P numbers, not m P. Which slots hold pairs is the host's count
    (_Member.pairs), so nothing here is read back to decide it. rows: which members, a slice of all
    K or their (A,) indices (state.rows)."""

    def __init__(self, theta, history, precondition):
        K, P = theta.shape
        self.theta, self.grad, self.d = theta, torch.zeros_like(theta), torch.zeros_like(theta)
        self.step = theta.new_zeros(K)
        self.S, self.Y = theta.new_zeros(K, history, P), theta.new_zeros(K, history, P)
        self.precondition = precondition
        self.on_cpu = theta.device.type == "cpu"

    def put(self, values, dtype=torch.float64):
        """Host numbers (a non-empty list) as a tensor on the state's device, by a copy that does not wait
        for the device (from a host buffer: a third of torch.tensor's cost for a short list)."""
        host = _host(values, dtype)
        return host if self.on_cpu else host.to(self.theta.device, non_blocking=True)

    def rows(self, members):
        """Members (sorted, distinct) as the state's rows: all K as a slice (views: a single model, or
        a path with every member running), else their indices."""
        return slice(None) if len(members) == self.theta.shape[0] else self.put(members, torch.int64)

    def points(self, rows):
        """The trial points theta + step d of `rows` -> (A, P)."""
        return torch.addcmul(self.theta[rows], self.step[rows, None], self.d[rows])

    def move(self, rows, t, g_new, slots):
        """Members `rows` move by t (A,) along d to where the gradient is g_new (A, P); those whose
        (s, y) pair the host kept write it to their ring slots: slots [(j, flat slot k m + i)], j
        indexing the A rows."""
        s = self.d[rows] * t[:, None]
        if slots:
            P = self.S.shape[2]
            j = [j for j, _ in slots]
            at = self.put([i for _, i in slots], torch.int64)
            y = g_new - self.grad[rows]
            if len(j) < t.shape[0]:
                keep = self.put(j, torch.int64)
                s_kept, y = s.index_select(0, keep), y.index_select(0, keep)
            else:
                s_kept = s
            self.S.view(-1, P).index_copy_(0, at, s_kept)
            self.Y.view(-1, P).index_copy_(0, at, y)
        if isinstance(rows, slice):
            self.theta.add_(s)
            self.grad.copy_(g_new)
        else:
            self.theta.index_add_(0, rows, s)
            self.grad.index_copy_(0, rows, g_new)

    def directions(self, rows, members, g, window, live, first):
        """The next directions of members `rows` (members: their indices) at their gradients g (A, P):
        the two-loop recursion's over the ring slots window (A n flat indices, each member's newest n
        slots oldest first; live (A, n) which hold pairs, or None); first (A,) their first trial steps.
        Whether each descends is read back with the next round's numbers (steepest, if not)."""
        P = self.S.shape[2]
        A = g.shape[0]
        shape = (A, len(window) // A, P)
        at = self.put(window, torch.int64)
        self.d[rows] = two_loop(g, self.S.view(-1, P).index_select(0, at).view(shape),
                                self.Y.view(-1, P).index_select(0, at).view(shape),
                                None if live is None else self.put(sum(live, []), torch.bool).view(A, -1),
                                self.precondition, members)
        self.step[rows] = self.put(first)

    def steepest(self, rows, first):
        """Members `rows` turn to d = -g at their point, first (A,) their first trial steps."""
        self.d[rows] = -self.grad[rows]
        self.step[rows] = self.put(first)


# --------------------------------------------------------------------------- the driver

def lbfgs(evaluate, W0, b0, *, max_iter=1000, tol=1e-4, ftol=64 * torch.finfo(torch.float64).eps,
          history=10, line_search="strong_wolfe", on_iter=None, should_stop=None, precondition=None):
    """Minimize K members' objectives from W0 (K, C, D), b0 (K, C) by full-batch L-BFGS.

    evaluate(W (A, C, D), b (A, C), active (A,) int64 indices into the K members) -> f (A,)
    objective values, dW (A, C, D), db (A, C): the A live members' objective and gradient, in
    one pass over the data (full_batch_evaluator builds one). W and b are views into one (A, C, D + 1)
    buffer, not contiguous (reshape them, not view); it runs under torch.inference_mode, so it computes
    its gradient without autograd (as full_batch_evaluator does). tol: max-abs gradient entry at which
    a member has converged (scikit-learn's tol). history: (s, y) pairs kept per member.
    line_search "strong_wolfe" or "armijo" (backtracking; the curvature check guards the history).
    on_iter(calls, records) is called after every evaluate call; should_stop() polled then too.
    precondition: None, or a Preconditioner of the K members (optim.precondition): M_k^-1 for an SPD
    M_k approximating member k's Hessian (gram_preconditioners, kernel_preconditioners build them).
    -> LBFGSResult (see the module docstring for the statuses).
    """
    if line_search not in LINE_SEARCHES:
        raise ValueError(f"unknown line_search {line_search!r}; expected one of {', '.join(LINE_SEARCHES)}")
    if W0.dim() != 3 or b0.shape != W0.shape[:2]:
        raise ValueError(f"W0 must be (K, C, D) and b0 (K, C), got {tuple(W0.shape)} and {tuple(b0.shape)}")
    K, C, D = W0.shape
    if precondition is not None and len(precondition) != K:
        raise ValueError(f"precondition has {len(precondition)} members, W0 {K}")
    with torch.inference_mode():                     # no autograd bookkeeping on the rounds' many small ops
        state = _DeviceState(torch.cat([W0, b0[..., None]], 2).to(torch.float64).view(K, -1), history, precondition)
        search = _strong_wolfe if line_search == "strong_wolfe" else _armijo
        recs = [_Member() for _ in range(K)]
        searches = {}                  # k -> its line search (None: to start at the next read)
        pending, calls = list(range(K)), 0               # the first round evaluates the start points (step 0)
        while pending:
            rows = state.rows(pending)
            points = state.points(rows).view(-1, C, D + 1)                                    # (A, C, D + 1)
            f, dW, db = evaluate(points[..., :D], points[..., D], _host(pending, torch.int64))
            calls += 1
            grads = torch.cat([dW, db[..., None]], 2).to(torch.float64).view(len(pending), -1)   # (A, P)
            # the one host sync of the round: each trial's numbers (_TRIAL) and its direction's (_DIRECTION)
            d, g_old, g_abs = state.d[rows], state.grad[rows], grads.abs()
            numbers = torch.stack([f.to(grads), _dot(grads, d), g_abs.amax(1), _dot(grads, grads), _dot(grads, g_old),
                                   g_abs.sum(1), _dot(g_old, d), d.abs().amax(1)], 1).tolist()
            accepted, going, turned = _search(pending, numbers, grads, recs, searches, search)
            if turned:                                   # directions that did not descend: -g instead
                state.steepest(state.rows(turned), [recs[k].first for k in turned])
            if going:                                    # the searches' next trial steps
                state.step[state.rows([k for k, _ in going])] = state.put([t for _, t in going])
            going += [(k, None) for k in turned]
            if accepted:                                 # each moves, and gets its next direction if it goes on
                fresh = _accept(state, accepted, recs, history, precondition is not None, max_iter, tol, ftol)
                searches.update(dict.fromkeys(fresh))
                going += [(k, None) for k in fresh]
            pending = sorted(k for k, _ in going)
            if on_iter is not None:
                on_iter(calls, recs)
            if pending and should_stop is not None and should_stop():
                for k in pending:
                    recs[k].status = "stopped"
                break
    theta = state.theta.view(K, C, D + 1)                # copies made here are ordinary tensors
    return LBFGSResult(theta[..., :D].clone(memory_format=torch.contiguous_format),
                       theta[..., D].clone(memory_format=torch.contiguous_format),
                       torch.tensor([r.f for r in recs], dtype=torch.float64),
                       torch.tensor([r.grad_max for r in recs], dtype=torch.float64),
                       torch.tensor([r.iterations for r in recs]), torch.tensor([r.evaluations for r in recs]),
                       [r.status for r in recs], calls, [r.trace for r in recs])


def _search(pending, numbers, grads, recs, searches, search):
    """The host's part of a round: each pending member's line search takes its trial's numbers (a row of
    numbers: _TRIAL then _DIRECTION); grads (A, P) the trials' gradients. -> accepted [(k, t, f, (numbers
    row, gradient row), moved)] (the start points as steps of 0), going [(k, the next trial step)]; a
    search that failed sets its member's status; turned: the members whose new direction does not descend
    (g_old.d >= 0: rounding, or a preconditioner that is not positive definite), which drop their pairs and
    turn to -g (that trial wasted), and stall if -g does not descend either."""
    accepted, going, turned = [], [], []
    for j, k in enumerate(pending):
        row = numbers[j]
        f_t, gtd_t = row[:2]
        gtd, d_max = row[len(_TRIAL):]
        rec, kept = recs[k], (row, grads[j])
        rec.evaluations += 1
        if k not in searches:                        # the start point
            accepted.append((k, 0.0, f_t, kept, False))
            continue
        if searches[k] is None:
            if not gtd < 0:
                if rec.fallback:
                    rec.status = "stalled"
                    del searches[k]
                else:
                    rec.pairs, rec.first, rec.fallback = 0, rec.plain, True
                    turned.append(k)
                continue
            searches[k] = search(rec.f, gtd, rec.first, d_max)
            next(searches[k])                        # its first trial: `first`, evaluated already
            rec.reached = False
        rec.reached |= math.isfinite(f_t)
        try:
            going.append((k, searches[k].send((f_t, gtd_t, kept))))
        except StopIteration as stop:
            del searches[k]
            if stop.value is not None:
                accepted.append((k, *stop.value, True))
            else:
                rec.status = "stalled" if rec.reached else "nonfinite"
    return accepted, going, turned


def _accept(state, accepted, recs, m, preconditioned, max_iter, tol, ftol):
    """The members that accepted a point (_search's accepted) move there; the host keeps the (s, y) pair
    of each where s.y > 1e-10 y.y (the curvature condition, which keeps H positive definite; a start
    point, a step of 0, never passes it), from the round's numbers: s.y = t (g.d - g_old.d), y.y =
    g.g - 2 g.g_old + g_old.g_old. Those that go on get their next directions, from their newest
    min(m, pairs) pairs; the first step along it is 1, or min(1, 1 / |g|_1) without history and
    preconditioner (scipy's first step). -> the members that go on."""
    slots, fresh, rows_fresh = [], [], []
    for j, (k, t, f_new, (row, _), moved) in enumerate(accepted):
        rec = recs[k]
        f_t, gtd_t, gmax, gg, gg_old, _ = row[:len(_TRIAL)]
        sy, yy = t * (gtd_t - row[len(_TRIAL)]), gg - 2 * gg_old + rec.gg
        if moved and sy > 1e-10 * yy:
            slots.append((j, k * m + rec.pairs % m))
            rec.pairs += 1
        rec.gg = gg
        if _advance(rec, moved, f_new, gmax, max_iter, tol, ftol):
            fresh.append(k)
            rows_fresh.append(j)
    members = [a[0] for a in accepted]
    g_new = torch.stack([a[3][1] for a in accepted])
    state.move(state.rows(members), state.put([a[1] for a in accepted]), g_new, slots)
    if fresh:
        used = max(1, min(m, max(recs[k].pairs for k in fresh)))       # the older slots of all are empty
        window, live = [], []
        for j, k in zip(rows_fresh, fresh):
            rec, g1 = recs[k], accepted[j][3][0][len(_TRIAL) - 1]
            p = rec.pairs
            window += [k * m + (p - used + i) % m for i in range(used)]
            live.append([p - used + i >= 0 for i in range(used)])
            rec.plain = 1.0 if preconditioned or not g1 > 0 else min(1.0, 1 / g1)
            rec.first, rec.fallback = 1.0 if preconditioned or p > 0 else rec.plain, False
        g = g_new if len(fresh) == len(accepted) else g_new[rows_fresh]
        state.directions(state.rows(fresh), fresh, g, window, None if all(map(all, live)) else live,
                         [recs[k].first for k in fresh])
    return fresh


def _advance(rec, moved, f_new, grad_max, max_iter, tol, ftol):
    """Member rec accepted a point (moved: a line search's step, else its start point) with value f_new
    and max |g| grad_max: its record updated, its status set if it ends here. -> whether it goes on."""
    if not moved:
        rec.f, rec.grad_max = f_new, grad_max
        if not (math.isfinite(f_new) and math.isfinite(grad_max)):
            rec.status = "nonfinite"
            return False
    else:
        stalled = rec.f - f_new <= ftol * max(abs(rec.f), abs(f_new), 1.0)
        rec.f, rec.grad_max = f_new, grad_max
        rec.iterations += 1
        rec.trace.append(f_new)
        if stalled and grad_max > tol:
            rec.status = "stalled"
            return False
    if grad_max <= tol:
        rec.status = "converged"
    elif rec.iterations >= max_iter:
        rec.status = "max_iter"
    return rec.status == "running"


def full_batch_evaluator(loader, objective, *, dtype=None):
    """An evaluate(W, b, active) for lbfgs: streams every batch of loader.batches(0) ((x (B, D),
    y (B,)) pairs), sums the data loss and its gradient (Objective.data_and_grad, reduction "sum")
    in float64, divides by N, and adds reg * R(W) and its gradient once, in float64.

    objective: an Objective whose reg is a number or a (K,) tensor (sliced by `active`). The GEMMs
    run in dtype (default: the batches' dtype). The objective must be smooth (Objective.smooth):
    the softmax loss or the squared hinge with the l2 penalty. The hinge and l1/elastic-net are refused
    (ValueError): L-BFGS assumes a gradient that varies continuously (lintorch.bench.lbfgs_compare
    --nonsmooth shows them ending at max_iter far from tol).
    """
    nonsmooth = objective.nonsmooth()
    if nonsmooth:
        raise ValueError(f"lbfgs needs a smooth objective, not {' and '.join(nonsmooth)}: L-BFGS has no "
                         "convergence guarantee at kinks and stalls there; train nonsmooth objectives with SGD")
    reg_all = torch.as_tensor(objective.reg, dtype=torch.float64)
    reg2_all = (2.0 * reg_all).view(-1, 1, 1)           # (K, 1, 1) or (1, 1, 1): 2 reg, R(W)'s gradient's factor
    class_weight = objective.class_weight

    def evaluate(W, b, active):
        if reg_all.dim():
            active = active.to(reg_all.device)
            r, r2 = reg_all[active], reg2_all[active]
        else:
            r, r2 = reg_all, reg2_all
        # f summed where the batches are: no host sync per batch (the driver reads f once per evaluation)
        f = dW = db = None
        n = 0.0                                      # a float: dividing by it casts nothing
        cast = {}                                    # (device, dtype) -> W, b and the class weights there, once
        for xb, yb in loader.batches(0):
            where = (xb.device, dtype or xb.dtype)
            if where not in cast:
                cast[where] = (W.to(*where), b.to(*where), None if class_weight is None else class_weight.to(*where))
            Wc, bc, cw = cast[where]
            xb = xb if xb.dtype == where[1] else xb.to(where[1])
            data, gW, gb = objective.data_and_grad(xb, Wc, bc, yb, class_weight=cw, reduction="sum")
            data, gW, gb = data.to(torch.float64), gW.to(W.device, torch.float64), gb.to(b.device, torch.float64)
            if f is None:                            # the first batch's own tensors start the sums
                f, dW, db = data, gW, gb
            else:
                f, dW, db = f + data, dW.add_(gW), db.add_(gb)
            n += len(yb)
        W64 = W.to(torch.float64)
        r, r2 = r.to(W64.device, non_blocking=True), r2.to(W64.device, non_blocking=True)
        f = f.to(W64.device).div_(n).add_(r * W64.square().sum((-2, -1)))
        return f, dW.div_(n).add_(r2 * W64), db.div_(n)
    return evaluate
