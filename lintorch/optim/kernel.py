"""L-BFGS's preconditioner where N < D: precondition.gram_preconditioners' M_k = X^T X / N + 2 reg_k I
from a low-rank eigendecomposition shared by every member, instead of a D x D factor each.

Shapes: N examples, D features, C classes, K members; v (m, P) rows of P = C (D + 1) parameters
(precondition.Preconditioner's layout).
"""
import torch

from .precondition import Preconditioner

__all__ = ["kernel_preconditioners", "KernelPreconditioner"]


def kernel_preconditioners(loader, regs, num_classes, *, memory=None, rank=256, seed=0):
    """For N < D, where gram_preconditioners' D x D factor per member costs more than the data:
    M_k = X^T X / N + 2 reg_k I from the top `rank` eigenpairs of X^T X / N = V diag(lam) V^T (a
    randomized range finder with one power iteration on the rows, seeded by a local generator),
    the rest of the spectrum taken at lam_min, the smallest kept (Nystrom preconditioning):
        M_k^-1 v = V diag(1 / (lam + 2 reg_k)) V^T v + (v - V V^T v) / (lam_min + 2 reg_k).
    Exact where rank >= min(N, D) (the whole row space). One factorization serves every member.
    CIFAR-10 pixels (N 2,667, D 3,072, rank 256): 2.7 s where an N x N eigh took 30 s (1 thread,
    load 11). Costs: the rows gathered (N D floats) and about 8 N D rank flops.
    -> (a Preconditioner of the K members, None), or (None, the reason) when it would need more than `memory` bytes."""
    regs = torch.as_tensor(regs, dtype=torch.float64).reshape(-1)
    X = torch.cat([xb for xb, _ in loader.batches(0)])                       # (N, D)
    N, D = X.shape
    k = min(rank, N, D)
    if memory is not None and (N + 2 * k) * D * X.element_size() > memory:
        return None, f"the preconditioner for N {N} x D {D} needs {(N + 2 * k) * D * X.element_size() / 2**30:.1f} GiB"
    if not bool(torch.isfinite(X).all()):
        raise FloatingPointError("the training inputs hold NaN/inf")
    g = torch.Generator(device=X.device).manual_seed(seed)
    Q = torch.randn(D, k, generator=g, device=X.device, dtype=X.dtype)
    for _ in range(2):                                                        # range, then one power iteration
        Q = torch.linalg.qr(X.T @ (X @ Q)).Q                                  # (D, k) orthonormal
    B = (X @ Q).to(torch.float64)                                             # (N, k)
    lam, U = torch.linalg.eigh(B.T @ B / N)                                   # ascending
    V = Q @ U.to(Q.dtype)                                                     # (D, k) orthonormal
    lam = lam.clamp_min(0)
    floor = 1e-8 * max(float(lam.max()), 1e-30)                               # reg 0 leaves M singular
    shift = (2 * regs).clamp_min(floor).to(lam.device)                     # (K,)
    # the unkept directions at lam_min (none left where rank covers the row space)
    tail = 1 / ((lam[0] if k < min(N, D) else 0.0) + shift)                   # (K,)
    inside = 1 / (lam + shift[:, None]) - tail[:, None]                       # (K, k)
    return KernelPreconditioner(V, tail.to(V.dtype), inside.to(V.dtype), num_classes), None


class KernelPreconditioner(Preconditioner):
    """M_k^-1 W = W tail_k + ((W V) inside_k) V^T for every member at once: V (D, k) shared, tail (K,),
    inside (K, k); on rows of D + 1 (weights, then the bias), V with a zero last row and tail_k with a
    last 1 leave the bias as it is."""

    def __init__(self, V, tail, inside, num_classes):
        super().__init__(num_classes, V.shape[0], len(tail))
        self.V, self.tail, self.inside = V, tail, inside
        self.V1 = torch.cat([V, V.new_zeros(1, V.shape[1])])                       # (D + 1, k)
        self.tail1 = torch.cat([tail[:, None].expand(-1, V.shape[0]), tail.new_ones(len(tail), 1)], 1)  # (K, D + 1)

    def __getitem__(self, members):
        members = list(members)
        return KernelPreconditioner(self.V, self.tail[members], self.inside[members], self.C)

    def solve(self, W, members):                                              # W (A, n, D + 1)
        V = self.V1
        rows = torch.tensor(members).to(V.device, non_blocking=True)
        tail, inside = self.tail1.index_select(0, rows), self.inside.index_select(0, rows)
        W = W.to(V.device, V.dtype)
        return W * tail[:, None, :] + ((W @ V) * inside[:, None, :]) @ V.T
