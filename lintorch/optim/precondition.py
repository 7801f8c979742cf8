"""L-BFGS's preconditioners: each member's M_k = X^T X / N + 2 reg_k I on every class's weight row (the
bias left as it is), applied as M_k^-1 to all the members that ask at once.

Shapes: N examples, D features, C classes, K members; v (A, r, P): r rows of P = C (D + 1) parameters
for each of A members, each class's D weights then its bias.

- Preconditioner: the batched application lbfgs calls (a fixed number of kernels whatever A).
- gram_preconditioners: a D x D Cholesky factor per member (N >= D), or M_k^-1 itself where D is
  small; optim.kernel's low-rank form shares one factorization where N < D.
"""
import torch

from .gram import GramSum, shifted

__all__ = ["Preconditioner", "gram_preconditioners"]


class Preconditioner:
    """K members' M_k^-1, applied together. pre(v (A, r, P), members [A] indices into the K) -> M^-1 v
    row by row, M the member's own. A row of P = C (D + 1) numbers is C rows of D + 1, a class's
    weights then its bias (lbfgs's layout), so one (D + 1) x (D + 1) operator, M^-1 with a 1 in the
    bias's corner, applies to all of them at once and leaves the biases as they are. len(pre) is K;
    pre[ks] (a list) is the preconditioner of those members alone. Subclasses give solve(W (A, n, D + 1),
    members) -> (A, n, D + 1), the bias column unchanged."""

    def __init__(self, num_classes, D, K):
        self.C, self.D, self.K = num_classes, D, K

    def __len__(self):
        return self.K

    def __call__(self, v, members):
        A, r, P = v.shape
        return self.solve(v.view(A, r * self.C, self.D + 1), list(members)).view(A, r, P).to(v)


def _with_unit_corner(M):
    """(K, D, D) -> (K, D + 1, D + 1): M, then a last row and column of e_{D+1} (the bias's)."""
    out = torch.zeros(M.shape[0], M.shape[1] + 1, M.shape[2] + 1, dtype=M.dtype, device=M.device)
    out[:, :-1, :-1] = M
    out[:, -1, -1] = 1
    return out


# Up to this D, M_k^-1 is kept whole and applied by one batched product, not by two triangular solves
# with its Cholesky factor: forming it costs about 2 D^3 / 3 flops more (under 25 ms at D = 256 on one
# core), and each application saves the solves' fixed cost (about 50-150 us per L-BFGS round on this
# project's CPU at D = 64, the ~1 ms round of a 2,000 x 64 probe).
INVERSE_MAX_D = 256


class GramPreconditioner(Preconditioner):
    """M_k^-1, all K stacked (K, D + 1, D + 1) with the bias's unit corner: factor=True, by two
    triangular solves with M_k's lower Cholesky factor L_k; factor=False, M_k^-1 itself (symmetric),
    by one product."""

    def __init__(self, M, num_classes, factor=True):
        super().__init__(num_classes, M.shape[-1] - 1, len(M))
        self.M, self.factor = M, factor

    def __getitem__(self, members):
        return GramPreconditioner(self.M[list(members)], self.C, self.factor)

    def solve(self, W, members):
        M = self.M
        if members != list(range(self.K)):     # a copy of each one asked for: cheaper than solving with all
            M = M.index_select(0, torch.tensor(members).to(M.device, non_blocking=True))
        W = W.to(M.device, M.dtype)
        return torch.cholesky_solve(W.mT, M).mT if self.factor else W @ M        # (A, n, D + 1)


def _cholesky(G, shift, tries=40):
    """The lower Cholesky factor of G + shift I, the shift raised tenfold until it exists (at most
    `tries` times). FloatingPointError when G holds NaN/inf, which no shift can repair (the loop
    used to spin forever on one, deaf to SIGTERM)."""
    _check_finite(G)
    for _ in range(tries):
        L, info = torch.linalg.cholesky_ex(shifted(G, shift))
        if int(info) == 0:
            return L
        shift *= 10
    raise FloatingPointError(f"X^T X / N + {shift:.3g} I has no Cholesky factor")


def _choleskys(G, shifts):
    """_cholesky of G at each of the shifts (R,) -> (R, D, D) lower factors: G checked once, every
    member factored by one batched call (the same factors as one by one); a member whose factor fails
    goes on alone, its shift raised tenfold."""
    _check_finite(G)
    eye = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    L, info = torch.linalg.cholesky_ex(G + shifts.to(G).view(-1, 1, 1) * eye)
    for k in info.nonzero().flatten().tolist():
        L[k] = _cholesky(G, float(shifts[k]) * 10, tries=39)
    return L


def _check_finite(G):
    if not bool(torch.isfinite(G).all()):
        raise FloatingPointError("the training inputs' Gram matrix X^T X / N holds NaN/inf")


def gram_preconditioners(loader, regs, num_classes, *, memory=None, block=None):
    """One preconditioner per member for lbfgs: M_k = X^T X / N + 2 reg_k I on each class's weight
    row (the bias left as it is), applied as M_k^-1 v by two triangular solves with its Cholesky
    factor, or where D <= INVERSE_MAX_D by one product with M_k^-1 formed from it. The data part of the softmax or squared-hinge Hessian is X^T Diag X / N with
    per-example curvatures, so M_k captures the input's correlations, which make plain L-BFGS crawl
    on correlated features (k-means features, 40,000 x 6,400, squared hinge, reg 3e-3: converged in
    65 iterations, where 300 plain iterations ended unconverged at max |gradient| 2e-3).

    One streamed pass builds the Gram (N D^2 flops, summed in float64), each factor costs D^3 / 3
    and is kept in the data's dtype (K D^2 floats for float32 inputs); applying one reads it twice,
    once per iteration for the direction and the newest curvature pair together. The Gram is summed
    by gram.GramSum (on and below the diagonal in the batches' dtype, into float64 every FLUSH_ROWS rows).
    memory: bytes free where the batches are (training.devices.free_memory), None for no limit.
    block: gram.GramSum's column block (None: chosen from D).
    -> (a Preconditioner of the K members, None), or (None, the reason) when the factors would need
    more than `memory` bytes.
    """
    regs = torch.as_tensor(regs, dtype=torch.float64).reshape(-1)
    gram, n, dtype = None, 0, torch.float64
    for xb, _ in loader.batches(0):
        if gram is None:
            D = xb.shape[1]
            need = (len(regs) * xb.element_size() + 16) * D * D
            if memory is not None and need > memory:        # before the pass, not after it
                return None, f"{len(regs)} preconditioners of {D} x {D} need {need / 2**30:.1f} GiB"
            gram = GramSum(D, xb.dtype, xb.device, block)   # in the batches' dtype, into float64 every FLUSH_ROWS
            dtype = xb.dtype                 # factors in the data's precision: half the memory traffic
        gram.add(xb)
        n += xb.shape[0]
    G = gram.total().div_(n)
    floor = 1e-8 * max(float(G.diagonal().mean()), 1e-30)     # reg 0 and D > N leave G singular
    factor = D > INVERSE_MAX_D
    shifts = [max(2 * r, floor) for r in regs.tolist()]
    if factor:                  # one at a time: K float64 factors of a large D at once would be K Grams more
        M = torch.empty(len(regs), D, D, dtype=dtype, device=G.device)
        for k, shift in enumerate(shifts):
            M[k] = _cholesky(G, shift)
    else:                       # small: factored together, kept in float64 as L-BFGS's state
        M = _choleskys(G, torch.tensor(shifts, dtype=torch.float64))
        for k in range(len(M)):     # one by one: a batched cholesky_inverse differs in the last bit
            M[k] = torch.cholesky_inverse(M[k])
    del G
    return GramPreconditioner(_with_unit_corner(M), num_classes, factor), None
