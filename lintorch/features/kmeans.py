"""Coates, Lee & Ng (2011) single-layer k-means features, batched on the device.

Shapes: N images (N, 3, S, S) uint8, r the receptive field (6), P = 3 r r patch length (108),
L = S - r + 1 positions per side (27 for S = 32), K centroids, g the pooling grid (2: the paper's
quadrants), D = g^2 K features.

Learning (``learn``), as in Coates' kmeans_demo.m: random r x r patches of the training images,
per-patch brightness/contrast normalisation p <- (p - mean p) / sqrt(var p + 10) (pixels in 0..255,
unbiased variance), ZCA whitening w = (p - m) Z with Z = V (E + 0.1)^-1/2 V^T, then k-means.
Encoding (``encode``): every patch at stride 1 is normalised and whitened the same way, z_k = ||w - c_k||,
f_k = max(0, mean_k z - z_k) (the "triangle" code), or (encoding "soft", Coates & Ng 2011) the
soft threshold with polarity splitting [max(0, d.w - alpha), max(0, -d.w - alpha)] over the unit-length
centroids d (2 K codes), sum-pooled over a g x g grid of regions, then raised to `power` (0.5: the
signed square root, the codes being >= 0) when power != 1: g = 2 is
the paper's four quadrants (the first ceil(L/2) rows/columns form the top/left halves, as MATLAB's
round(27/2) = 14); region edges are round(L i / g), halves rounded up (other grids: bench/RESULTS.md,
"Features: extractors compared").

Two equal formulations, tested against a per-patch reference:
  "gemm": unfold the patches (B L^2, P), normalise, whiten, then one GEMM with augmented operands
          [w, ||w||^2, 1] . [-2 c; 1; ||c||^2] gives the squared distances directly.
  "conv": never materialise patches: per-patch mean/variance by box filters (avg_pool of x and x^2),
          w.c_k = ((x * F_k) - mu sum F_k) / sigma - m.F_k with F = C Z (conv2d filters), and
          ||w||^2 = || ((x * Z) - mu sum Z) / sigma - m Z ||^2 from 108 more conv output channels.
"""
import logging
import math

import torch
import torch.nn.functional as F

from ..errors import FeatureError
from .base import Extractor
from .settings import KMEANS, defaults

log = logging.getLogger(__name__)

NORM_EPS = 10.0      # added to the patch variance (0..255 pixel units), Coates' code
ZCA_EPS = defaults(KMEANS)["zca_eps"]       # added to the covariance eigenvalues, Coates' code
METHODS = ("gemm", "conv")
ENCODINGS = ("triangle", "soft")


# --------------------------------------------------------------------------- learning

def sample_patches(x, n, rf=6, seed=0):
    """x uint8 (N, 3, S, S) -> float32 (n, 3 rf rf): n random rf x rf patches (image i mod N, as Coates)."""
    N, C, S, _ = x.shape
    g = torch.Generator().manual_seed(seed)
    img = torch.arange(n) % N
    r = torch.randint(0, S - rf + 1, (n,), generator=g)
    c = torch.randint(0, S - rf + 1, (n,), generator=g)
    ar = torch.arange(rf)
    idx = (img.view(n, 1, 1, 1), torch.arange(C).view(1, C, 1, 1),
           (r.view(n, 1) + ar).view(n, 1, rf, 1), (c.view(n, 1) + ar).view(n, 1, 1, rf))
    dev = x.device
    return x[tuple(t.to(dev) for t in idx)].reshape(n, -1).float()


def normalize_patches(p):
    """p (n, P) -> (p - mean) / sqrt(unbiased var + 10), row by row."""
    return (p - p.mean(1, keepdim=True)) / (p.var(1, keepdim=True) + NORM_EPS).sqrt()


def fit_zca(p, eps=ZCA_EPS):
    """p (n, P) normalised patches -> (mean m (P,), Z (P, P) symmetric): w = (p - m) Z is white
    (eps added to the covariance's eigenvalues)."""
    pd = p.double()
    m = pd.mean(0)
    cov = torch.cov(pd.T)                                       # unbiased, as MATLAB's cov
    e, V = torch.linalg.eigh(cov)
    Z = (V * (e.clamp_min(0) + eps).rsqrt()) @ V.T
    return m.float(), Z.float()


def cluster_sums(x, labels, k):
    """x (B, P), labels (B,) in 0..k-1 -> (sums (k, P), counts (k,)), float64: each cluster's rows summed,
    the same on every run. On the CPU by index_add_ in x's dtype, which adds the rows in order. On CUDA
    index_add_ adds with atomics, in an order (so a float rounding) that changes from run to run: there
    the rows are sorted by cluster (a stable sort), summed as float64 prefix sums and differenced at the
    clusters' edges (bincount would read its size back from the GPU). The prefix sums cost about 6x
    index_add_ on the CPU, which is why the CPU keeps index_add_."""
    if x.device.type == "cpu":
        sums = torch.zeros(k, x.shape[1], dtype=x.dtype).index_add_(0, labels, x)
        counts = torch.zeros(k, dtype=x.dtype).index_add_(0, labels, torch.ones(len(x), dtype=x.dtype))
        return sums.double(), counts.double()
    sorted_labels, order = labels.sort(stable=True)
    prefix = x.new_zeros(len(x) + 1, x.shape[1], dtype=torch.float64)               # row 0 stays 0
    torch.cumsum(x.index_select(0, order), 0, dtype=torch.float64, out=prefix[1:])
    edges = torch.searchsorted(sorted_labels, torch.arange(k + 1, device=labels.device))   # (k + 1,)
    return prefix[edges[1:]] - prefix[edges[:-1]], (edges[1:] - edges[:-1]).to(torch.float64)


def kmeans(X, k, iterations=10, batch_size=8192, seed=0):
    """X (n, P) -> centroids (k, P): Lloyd's k-means, assignments by argmax of c.x - ||c||^2 / 2 in batches,
    centroid sums by cluster_sums (reproducible on CUDA).

    Starts from k distinct random rows; an empty cluster is re-seeded with a random row (Coates'
    code zeroes it instead, which wastes the centroid).
    """
    n = X.shape[0]
    g = torch.Generator().manual_seed(seed)
    C = X[torch.randperm(n, generator=g)[:k].to(X.device)].clone()
    for it in range(iterations):
        half_c2 = 0.5 * C.square().sum(1)                      # (k,)
        sums = torch.zeros(C.shape, dtype=torch.float64, device=X.device)
        counts = torch.zeros(k, dtype=torch.float64, device=X.device)
        loss = torch.zeros((), dtype=torch.float64, device=X.device)     # summed on the device: no sync per batch
        for i in range(0, n, batch_size):
            xb = X[i:i + batch_size]
            val, lab = torch.addmm(-half_c2, xb, C.T).max(1)   # (B,)
            loss += (0.5 * xb.square().sum(1) - val).sum()
            batch_sums, batch_counts = cluster_sums(xb, lab, k)
            sums += batch_sums
            counts += batch_counts
        empty = counts == 0
        C = (sums / counts.clamp_min(1).unsqueeze(1)).to(X.dtype)
        if empty.any():
            ne = int(empty.sum())
            C[empty] = X[torch.randint(0, n, (ne,), generator=g).to(X.device)]
            log.info("k-means iteration %d: re-seeded %d empty cluster(s)", it + 1, ne)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("k-means iteration %d/%d: loss %.4g", it + 1, iterations, 2 * float(loss) / n)
    return C


def learn(x, k=1600, patches=400_000, rf=6, iterations=10, seed=0, device="cpu", zca_eps=ZCA_EPS):
    """x uint8 (N, 3, S, S) training images -> state {"centroids" (k, P), "mean" (P,), "zca" (P, P)}."""
    p = normalize_patches(sample_patches(x.to(device), patches, rf, seed))
    m, Z = fit_zca(p, zca_eps)
    w = (p - m) @ Z
    del p
    return {"centroids": kmeans(w, k, iterations, seed=seed), "mean": m, "zca": Z}


# --------------------------------------------------------------------------- encoding

def pool_edges(L, g):
    """[e_0 = 0, ..., e_g = L]: region i spans rows/columns e_i .. e_{i+1} - 1, e_i = round(L i / g)
    with halves rounded up (MATLAB's round), so g = 2 gives Coates' quadrants."""
    return [(2 * L * i + g) // (2 * g) for i in range(g + 1)]


def _grid_pool(a, L, g):
    """a (B, L, L, K) activations -> (B, g^2 K): region sums, column-major over the grid
    (g = 2: top-left, bottom-left, top-right, bottom-right, the order of Coates' code)."""
    e = pool_edges(L, g)
    return torch.cat([a[:, e[i]:e[i + 1], e[j]:e[j + 1]].sum((1, 2)) for j in range(g) for i in range(g)], 1)


def _pool_matrix(L, g, device, dtype):
    """(g^2, L^2) 0/1 matrix: the grid pooling of (L^2, K) activations as one (batched) GEMM."""
    e = pool_edges(L, g)
    r = torch.arange(L, device=device)
    bands = [(r >= e[i]) & (r < e[i + 1]) for i in range(g)]
    return torch.stack([(bands[i].view(L, 1) & bands[j].view(1, L)).reshape(-1)
                        for j in range(g) for i in range(g)]).to(dtype)


def _triangle_(d2):
    """d2 (..., K) squared distances -> max(0, mean_k z - z_k) with z = sqrt(d2), in place."""
    z = d2.clamp_min_(0).sqrt_()
    mu = z.mean(-1, keepdim=True)
    return torch.sub(mu, z, out=z).clamp_min_(0)


def _soft(dots, alpha):
    """dots (..., K) d_k.w -> (..., 2 K) [max(0, d.w - alpha), max(0, -d.w - alpha)]."""
    return torch.cat([(dots - alpha).clamp_min_(0), (dots.neg_() - alpha).clamp_min_(0)], -1)


class Encoder:
    """The learned state made into the two operand sets the encoders need, once per device.
    encoding "triangle" or "soft" (threshold alpha, polarity split); power applied after pooling."""

    def __init__(self, state, rf=6, device="cpu", pool=2, encoding="triangle", alpha=0.25, power=1.0):
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown k-means encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
        C = state["centroids"].to(device, torch.float32)       # (K, P)
        m = state["mean"].to(device, torch.float32)            # (P,)
        Z = state["zca"].to(device, torch.float32)             # (P, P)
        self.rf, self.K, self.device, self.pool = rf, C.shape[0], device, pool
        self.encoding, self.alpha, self.power = encoding, float(alpha), float(power)
        self.m, self.Z, self.mZ = m, Z, m @ Z
        soft = encoding == "soft"
        if soft:      # unit-length dictionary atoms: d.w with no ||w||^2 or ||c||^2 terms
            C = C / C.norm(dim=1, keepdim=True).clamp_min(1e-12)
            self.aug = C.T.contiguous()                         # (P, K)
        else:         # gemm: [w, ||w||^2, 1] @ aug = ||w||^2 - 2 w.c + ||c||^2
            self.aug = torch.cat([-2 * C.T, torch.ones(1, self.K, device=device),
                                  C.square().sum(1, keepdim=True).T], 0)   # (P + 2, K)
        # conv: filters F = C Z (the centroids seen through the whitening) and (triangle) Z's rows
        Fk = C @ Z                                              # (K, P)
        filt = Fk if soft else torch.cat([Fk, Z], 0)            # (K [+ P], P)
        self.weight = filt.view(-1, 3, rf, rf).contiguous()
        self.fsum = filt.sum(1)                                 # (K [+ P],)
        self.fm = filt @ m                                      # (K [+ P],)
        self.c2 = C.square().sum(1)                             # (K,)

    def _finish(self, pooled):
        """(B, g^2 K') pooled codes -> raised to the power (codes are >= 0, so this is the signed power)."""
        return pooled if self.power == 1.0 else pooled.pow_(self.power)

    def _codes(self, wc, d2=None):
        """(..., K) w.c (and squared distances for the triangle) -> (..., K') codes."""
        return _soft(wc, self.alpha) if self.encoding == "soft" else _triangle_(d2)

    def gemm(self, x):
        """x float (B, 3, S, S) -> (B, g^2 K')."""
        B, _, S, _ = x.shape
        L = S - self.rf + 1
        p = F.unfold(x, self.rf).transpose(1, 2).reshape(B * L * L, -1)   # (B L^2, P)
        p = normalize_patches(p)
        w = torch.addmm(-self.mZ, p, self.Z)                    # (p - m) Z
        if self.encoding == "soft":
            a = _soft(w @ self.aug, self.alpha)
        else:
            w = torch.cat([w, w.square().sum(1, keepdim=True), torch.ones_like(w[:, :1])], 1)
            a = _triangle_(w @ self.aug)
        a = a.view(B, L * L, -1)                               # (B, L^2, K')
        return self._finish(torch.matmul(_pool_matrix(L, self.pool, x.device, a.dtype), a).reshape(B, -1))

    def conv(self, x):
        """x float (B, 3, S, S) -> (B, g^2 K'), with no patch matrix."""
        B, _, S, _ = x.shape
        rf, K, P = self.rf, self.K, 3 * self.rf ** 2
        x = x - 128.0                          # the normalisation ignores offsets; float32 cancels less
        mu = F.avg_pool2d(x.mean(1, keepdim=True), rf, 1)                # (B, 1, L, L) patch means
        ex2 = F.avg_pool2d(x.square().mean(1, keepdim=True), rf, 1)
        inv = ((ex2 - mu.square()) * (P / (P - 1)) + NORM_EPS).rsqrt()   # 1 / sigma
        out = F.conv2d(x, self.weight)                                   # (B, K [+ P], L, L)
        # ((x*f) - mu sum f) / sigma - m.f for every filter f, in place
        out.addcmul_(mu, self.fsum.view(1, -1, 1, 1), value=-1).mul_(inv).sub_(self.fm.view(1, -1, 1, 1))
        if self.encoding == "soft":
            a = _soft(out.permute(0, 2, 3, 1), self.alpha)               # (B, L, L, 2 K)
        else:
            wc, wZ = out[:, :K], out[:, K:]
            d2 = wZ.square().sum(1, keepdim=True) + self.c2.view(1, K, 1, 1) - 2 * wc   # (B, K, L, L)
            a = _triangle_(d2.permute(0, 2, 3, 1))                        # (B, L, L, K)
        return self._finish(_grid_pool(a, S - rf + 1, self.pool))


def encode(x, state, rf=6, method="gemm", batch_size=16, encoder=None, pool=2, encoding="triangle",
           alpha=0.25, power=1.0):
    """x uint8 or float (N, 3, S, S) on the device -> float32 (N, pool^2 K') features, K' = K
    (triangle) or 2 K (soft, polarity split)."""
    if method not in METHODS:
        raise ValueError(f"unknown k-means encoding {method!r}; expected one of {', '.join(METHODS)}")
    enc = encoder or Encoder(state, rf, x.device, pool, encoding, alpha, power)
    fn = getattr(enc, method)
    return torch.cat([fn(x[i:i + batch_size].float()) for i in range(0, x.shape[0], batch_size)])


# --------------------------------------------------------------------------- pictures

def centroid_grid(state, rf=6, nrow=None, dewhiten=False, limit=400, scale=4):
    """-> uint8 (3, H, W): the first `limit` centroids as rf x rf colour tiles (each min-max stretched).

    As the paper shows them: in whitened space (dewhiten=False), or mapped back to normalised-pixel
    space with Z^-1 and the mean added (dewhiten=True).
    """
    from torchvision.utils import make_grid
    C = state["centroids"][:limit].double().cpu()
    if dewhiten:
        C = torch.linalg.solve(state["zca"].double().cpu(), C.T).T + state["mean"].double().cpu()
    lo, hi = C.min(1, keepdim=True).values, C.max(1, keepdim=True).values
    tiles = ((C - lo) / (hi - lo).clamp_min(1e-12)).view(-1, 3, rf, rf).float()
    tiles = F.interpolate(tiles, scale_factor=scale, mode="nearest")
    nrow = nrow or max(1, int(math.ceil(math.sqrt(tiles.shape[0]))))
    grid = make_grid(tiles, nrow=nrow, padding=1, pad_value=1.0)
    return (grid * 255).round().clamp(0, 255).to(torch.uint8)


def centroid_picture(state, rf=6, limit=400):
    """centroids.png: centroid_grid under a caption that says how many of how many filters it shows."""
    from ..output.visualize import captioned
    K = state["centroids"].shape[0]
    shown = f"all {K:,}" if K <= limit else f"the first {limit:,} of {K:,}"
    return captioned(centroid_grid(state, rf, limit=limit),
                     f"k-means filters: {shown} ({rf}x{rf} patches, whitened, each stretched on its own)")


# --------------------------------------------------------------------------- the extractor

class KMeansFeatures(Extractor):
    """features "kmeans": fit learns centroids/whitening from training images, transform encodes (N, pool^2 K)."""

    NAME = "kmeans"
    SETTINGS = KMEANS
    DEFAULTS = {**defaults(KMEANS), "rf": 6, "seed": 0, "method": "gemm", "chunk": None}   # the rest: no flag
    RUNTIME = ("method", "chunk")
    LEARNS = True

    @property
    def dim(self):
        s = self.settings
        return s["pool"] ** 2 * s["k"] * (2 if s["encoding"] == "soft" else 1)

    def _check_size(self, image_size):
        rf, g = self.settings["rf"], self.settings["pool"]
        if image_size - rf + 1 < g:
            lower = " or lower --pool" if g > 1 else ""
            raise FeatureError(f"kmeans features pool {rf} x {rf} patches on a {g} x {g} grid: they need images of "
                               f"at least {g + rf - 1} px, --image-size is {image_size} (raise it{lower})")

    def check_settings(self, image_size):
        s = self.settings
        self._check_size(image_size)
        P = 3 * s["rf"] ** 2
        if s["zca_eps"] > 1e3 * P and not getattr(self, "_warned_zca", False):
            # a normalised patch's covariance has trace < P (each row's squared deviations sum to < P),
            # so every eigenvalue is < P: eps far above it leaves a scaling, not a whitening
            self._warned_zca = True
            log.warning(f"warning: --zca-eps {s['zca_eps']:g} is far above every eigenvalue of the patches' covariance "
                        f"(all < {P}): the whitening no longer whitens, it shrinks each patch by about "
                        f"{s['zca_eps'] ** -0.5:.2g}, and soft-threshold codes (--encoding soft) go to 0; Coates' "
                        f"value is {ZCA_EPS:g}")
        if s["patches"] < max(2, s["k"]):
            raise FeatureError(f"kmeans needs --patches >= --centroids (its starting centroids are distinct "
                               f"patches) and >= 2 (for the whitening): --patches {s['patches']}, --centroids {s['k']}")
        if s["k"] == 1 and s["encoding"] == "triangle":
            raise FeatureError("kmeans with --centroids 1 and the triangle encoding makes every feature 0 (a patch's "
                               "distance to the one centroid is also the mean distance): use --centroids >= 2")

    def check_images(self, x):
        super().check_images(x)
        self._check_size(x.shape[-1])

    def fit(self, x, device="cpu"):
        s = self.settings
        self.check_images(x)
        self.check_settings(x.shape[-1])
        self.state = learn(x, s["k"], s["patches"], s["rf"], s["iterations"], s["seed"], device, s["zca_eps"])
        self._encoder = None
        return self

    def load_state(self, state):
        self._encoder = None
        return super().load_state(state)

    def transform(self, x):
        if "centroids" not in self.state:
            raise FeatureError("kmeans features are not fitted: call fit(train images) first")
        self.check_images(x)
        enc = getattr(self, "_encoder", None)
        if enc is None or enc.device != x.device:
            s = self.settings
            enc = self._encoder = Encoder(self.state, s["rf"], x.device, s["pool"], s["encoding"], s["alpha"], s["power"])
        # small chunks keep the (chunk L^2, K) distance matrix in the CPU's cache
        chunk = self.settings["chunk"] or (2 if x.device.type == "cpu" else 64)
        return encode(x, self.state, self.settings["rf"], self.settings["method"], chunk, enc, self.settings["pool"])
