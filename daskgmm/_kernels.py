"""Pure NumPy math of EM for Gaussian mixtures, on one block of rows.

Nothing here imports dask: every function is a pure function of NumPy arrays, so
each formula can be tested on a small array against an independent reference.

Conventions
-----------
The parameters of a component are its weight, its mean and the Cholesky factor of its
precision, ``precisions_cholesky`` (upper triangular ``U`` with ``precision = U @ U.T``,
as in scikit-learn). The chunk kernels work on rows shifted by a pilot ``center`` (the
weighted mean of the component means) and accumulate, per component ``k`` and in
float64 whatever the input dtype, the *shifted* sufficient statistics

    nk[k]  = Σ_n γ_nk
    s1[k]  = Σ_n γ_nk (x_n − μ_k)
    s2[k]  = Σ_n γ_nk (x_n − μ_k)(x_n − μ_k)ᵀ     (full; summed over k for tied;
                                                   the diagonal only for diag/spherical)

with ``μ_k`` the mean the responsibilities were computed with. The M-step then needs no
subtraction of two large numbers, ``Σ_k = s2/nk − δδᵀ`` with ``δ = s1/nk`` small, so data
far from the origin (offsets of 1e8, float32 pixels) keep all their digits.

Rows are processed in sub-blocks whose temporaries stay around a few MiB whatever the
chunk size; the temporaries live in per-thread buffers reused from call to call
(freshly touched memory is slow: every new page costs a page fault; see
docs/performance.md, "Workers of the embedded cluster").
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
LOG_2PI = math.log(2.0 * math.pi)
EPS = np.finfo(np.float64).eps
# Largest number of float64 elements of one (rows, K, d) temporary in a sub-block.
SUBBLOCK_ELEMENTS = 1 << 19
MIN_SUBBLOCK_ROWS = 64
MAX_SUBBLOCK_ROWS = 16384
# Below this number of features, squared norms go through a matrix product and the
# full/tied statistics are accumulated on transposed (d, rows) buffers (measured on
# 2**18 rows, K=8: d=8 390 -> 290 ns/row; d=16 is better on the row layout).
SMALL_D = 16
# From this number of features, full-covariance products skip the zero / mirrored
# half-blocks of triangular and symmetric matrices (BLAS is compute-bound there).
LARGE_D = 32

ILL_DEFINED_MESSAGE = (
    "Fitting the mixture model failed because some components have ill-defined "
    "empirical covariance (for instance caused by singleton or collapsed samples). "
    "Try to decrease the number of components, increase reg_covar, or scale the "
    "input data."
)


###############################################################################
# Per-thread scratch buffers


_local = threading.local()


def _scratch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Return a float64 scratch array of ``shape``, reused by later calls in this thread.

    The contents are undefined. Different names never alias each other.
    """
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    size = math.prod(shape)
    buf = buffers.get(name)
    if buf is None or buf.size < size:
        buf = buffers[name] = np.empty(max(size, 1), dtype=np.float64)
    return buf[:size].reshape(shape)


def quiet(func: Callable) -> Callable:
    """Run a kernel with NumPy's invalid/overflow warnings off.

    Rows with NaN, inf or overflowing values are detected and reported by the kernels
    themselves (``n_bad``, a ValueError); NumPy's RuntimeWarnings about them would only
    precede that clear message with noise.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(invalid="ignore", over="ignore"):
            return func(*args, **kwargs)

    return wrapper


def subblock_rows(n_components: int, n_features: int) -> int:
    """Number of rows per sub-block so the (rows, K, d) temporaries stay small."""
    per_row = n_components * n_features + n_components + n_features
    rows = SUBBLOCK_ELEMENTS // max(per_row, 1)
    return int(min(max(rows, MIN_SUBBLOCK_ROWS), MAX_SUBBLOCK_ROWS))


###############################################################################
# Parameters: precisions, Cholesky factors, determinants (client side)


def precision_cholesky_from_covariances(
    covariances: np.ndarray, covariance_type: str
) -> np.ndarray:
    """Cholesky factors of the precisions from covariances.

    Parameters
    ----------
    covariances : ndarray
        ``full``: (K, d, d); ``tied``: (d, d); ``diag``: (K, d); ``spherical``: (K,).
    covariance_type : {'full', 'tied', 'diag', 'spherical'}

    Returns
    -------
    precisions_cholesky : ndarray of the same shape
        Upper-triangular ``U`` with ``inv(covariance) = U @ U.T``.

    Raises
    ------
    ValueError
        When a covariance is not positive definite.
    """
    covariances = np.asarray(covariances, dtype=np.float64)
    if covariance_type in ("diag", "spherical"):
        if not np.all(covariances > 0.0):
            raise ValueError(ILL_DEFINED_MESSAGE)
        return 1.0 / np.sqrt(covariances)
    stack = covariances[None] if covariance_type == "tied" else covariances
    from scipy.linalg import solve_triangular  # client side only: workers skip scipy

    d = stack.shape[-1]
    out = np.empty_like(stack)
    eye = np.eye(d)
    for k, cov in enumerate(stack):
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ValueError(ILL_DEFINED_MESSAGE) from None
        # inv(cov) = inv(L).T @ inv(L): the factor is inv(L).T, upper triangular.
        out[k] = solve_triangular(chol, eye, lower=True).T
    return out[0] if covariance_type == "tied" else out


def _flip(a: np.ndarray) -> np.ndarray:
    return a[..., ::-1, ::-1]


def precision_cholesky_from_precisions(
    precisions: np.ndarray, covariance_type: str
) -> np.ndarray:
    """Upper-triangular ``U`` with ``precision = U @ U.T``, from the precisions.

    With ``J`` the exchange matrix, ``J P J = L Lᵀ`` gives ``P = (J L J)(J L J)ᵀ``
    and ``J L J`` is upper triangular.
    """
    precisions = np.asarray(precisions, dtype=np.float64)
    if covariance_type in ("diag", "spherical"):
        return np.sqrt(precisions)
    try:
        return _flip(np.linalg.cholesky(_flip(precisions)))
    except np.linalg.LinAlgError:
        raise ValueError(
            f"precisions_init: the '{covariance_type}' precision must be symmetric "
            "positive definite; pass inverse covariance matrices"
        ) from None


def precisions_from_cholesky(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    """Precisions ``U @ U.T`` (full, tied) or ``U**2`` (diag, spherical)."""
    if covariance_type in ("diag", "spherical"):
        return prec_chol**2
    return prec_chol @ np.swapaxes(prec_chol, -1, -2)


def covariances_from_cholesky(
    prec_chol: np.ndarray, covariance_type: str
) -> np.ndarray:
    """Covariances ``inv(U @ U.T) = inv(U).T @ inv(U)`` from precision Cholesky factors."""
    if covariance_type in ("diag", "spherical"):
        return 1.0 / prec_chol**2
    from scipy.linalg import solve_triangular

    stack = prec_chol[None] if covariance_type == "tied" else prec_chol
    eye = np.eye(stack.shape[-1])
    inv = np.stack([solve_triangular(u, eye, lower=False) for u in stack])
    cov = np.swapaxes(inv, -1, -2) @ inv
    return cov[0] if covariance_type == "tied" else cov


def log_det_cholesky(
    prec_chol: np.ndarray, covariance_type: str, n_features: int
) -> np.ndarray | float:
    """Log-determinant of the precision Cholesky factor, per component.

    ``log det(U) = ½ log det(precision) = −½ log det(covariance)``.
    """
    if covariance_type == "full":
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    if covariance_type == "tied":
        return float(np.log(np.diagonal(prec_chol)).sum())
    if covariance_type == "diag":
        return np.log(prec_chol).sum(axis=1)
    return n_features * np.log(prec_chol)


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Number of free parameters of the mixture (for BIC/AIC)."""
    cov_params = {
        "full": n_components * n_features * (n_features + 1) / 2.0,
        "tied": n_features * (n_features + 1) / 2.0,
        "diag": n_components * n_features,
        "spherical": n_components,
    }[covariance_type]
    return int(cov_params + n_features * n_components + n_components - 1)


###############################################################################
# What the chunk kernels receive


@dataclass(frozen=True)
class KernelParams:
    """Parameters of the mixture in the form the chunk kernels use them.

    Built once per iteration on the client by :func:`prepare`; small (K·d² floats).

    Attributes
    ----------
    covariance_type : str
    center : ndarray of shape (d,)
        Pilot shift subtracted from every row before any product.
    shifts : ndarray of shape (K, d)
        Component means minus ``center``.
    proj : ndarray
        ``full``: (d, K·d), the K precision Cholesky factors side by side;
        ``tied``: (d, d); ``diag``/``spherical``: (K, d).
    proj_shifts : ndarray
        ``shifts`` projected by the factors: (K·d,) for full, (K, d) otherwise.
    log_norm : ndarray of shape (K,)
        ``log π_k + log det U_k − d/2 log 2π``.
    proj_lower : ndarray or None
        ``full`` with many features only: the lower-right blocks ``U_k[h:, h:]`` side
        by side, (d − h, K·(d − h)), ``h = d // 2``. The factors are triangular, so
        rows ``h:`` of ``proj`` vanish outside these blocks; skipping them saves a
        quarter of the E-step's flops.
    """

    covariance_type: str
    center: np.ndarray
    shifts: np.ndarray
    proj: np.ndarray
    proj_shifts: np.ndarray
    log_norm: np.ndarray
    proj_lower: np.ndarray | None = None

    @property
    def n_components(self) -> int:
        return self.shifts.shape[0]

    @property
    def n_features(self) -> int:
        return self.shifts.shape[1]


def weighted_center(weights: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The ``weights``-weighted mean of ``means`` (their plain mean if all are 0)."""
    total = weights.sum()
    return (weights / total) @ means if total > 0 else means.mean(axis=0)


def prepare(
    weights: np.ndarray,
    means: np.ndarray,
    prec_chol: np.ndarray,
    covariance_type: str,
    center: np.ndarray | None = None,
    log_weights: np.ndarray | None = None,
) -> KernelParams:
    """Turn mixture parameters into the arrays the chunk kernels need.

    ``center`` (subtracted from every row first) defaults to the weighted mean of
    the means. ``log_weights`` replaces ``log(weights)`` in the log-densities (a
    variational mixture's expected log weights and precision terms).
    """
    weights = np.asarray(weights, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    prec_chol = np.asarray(prec_chol, dtype=np.float64)
    n_components, n_features = means.shape
    center = weighted_center(weights, means) if center is None else center
    center = np.asarray(center, dtype=np.float64)
    shifts = means - center
    if covariance_type == "full":
        # proj[:, k*d:(k+1)*d] = U_k
        proj = np.ascontiguousarray(
            prec_chol.transpose(1, 0, 2).reshape(n_features, n_components * n_features)
        )
        proj_shifts = np.einsum("ki,kij->kj", shifts, prec_chol).reshape(-1)
    elif covariance_type == "tied":
        proj = np.ascontiguousarray(prec_chol)
        proj_shifts = shifts @ prec_chol
    else:
        if covariance_type == "spherical":
            prec_chol = np.repeat(prec_chol[:, None], n_features, axis=1)
        proj = np.ascontiguousarray(prec_chol)
        proj_shifts = shifts * prec_chol
    proj_lower = None
    if covariance_type == "full" and n_features >= LARGE_D:
        h = n_features // 2
        proj_lower = np.ascontiguousarray(
            prec_chol[:, h:, h:].transpose(1, 0, 2).reshape(n_features - h, -1)
        )
    log_det = log_det_cholesky(
        np.asarray(prec_chol) if covariance_type != "spherical" else prec_chol[:, 0],
        covariance_type,
        n_features,
    )
    if log_weights is None:
        with np.errstate(divide="ignore"):
            log_weights = np.log(weights)
    log_norm = log_weights + log_det - 0.5 * n_features * LOG_2PI
    return KernelParams(
        covariance_type=covariance_type,
        center=center,
        shifts=np.ascontiguousarray(shifts),
        proj=proj,
        proj_shifts=np.ascontiguousarray(proj_shifts),
        log_norm=np.broadcast_to(log_norm, (n_components,)).astype(np.float64),
        proj_lower=proj_lower,
    )


###############################################################################
# Log-densities of one sub-block


def _mahalanobis(x0: np.ndarray, kp: KernelParams) -> np.ndarray:
    """Squared Mahalanobis distances (b, K) of centred rows ``x0`` (b, d)."""
    b, d = x0.shape
    k = kp.n_components
    if kp.covariance_type == "full":
        y = _scratch("y", (b, k * d))
        if kp.proj_lower is None:
            np.matmul(x0, kp.proj, out=y)
        else:
            # y = x0[:, :h] @ proj[:h] + x0[:, h:] @ proj[h:], the second product
            # restricted to the columns j >= h of each factor (the others are 0).
            h = d - kp.proj_lower.shape[0]
            np.matmul(x0[:, :h], kp.proj[:h], out=y)
            z = _scratch("ylower", (b, k * (d - h)))
            np.matmul(x0[:, h:], kp.proj_lower, out=z)
            y.reshape(b, k, d)[:, :, h:] += z.reshape(b, k, d - h)
        y -= kp.proj_shifts
        return _row_sq_norms(y.reshape(b, k, d))
    z = _scratch("z", (b, k, d))
    if kp.covariance_type == "tied":
        y = _scratch("y", (b, d))
        np.matmul(x0, kp.proj, out=y)
        np.subtract(y[:, None, :], kp.proj_shifts, out=z)
    else:
        np.multiply(x0[:, None, :], kp.proj, out=z)
        z -= kp.proj_shifts
    return _row_sq_norms(z)


def _row_sq_norms(z: np.ndarray) -> np.ndarray:
    """``(z**2).sum(axis=2)`` of a (b, K, d) array, fast for small and large d."""
    b, k, d = z.shape
    if d >= SMALL_D:
        return np.einsum("bkd,bkd->bk", z, z)
    z *= z
    # A matrix product with a block indicator sums the short last axis far faster
    # than numpy's reduction over an axis of length 2-7.
    return z.reshape(b, k * d) @ _indicator(k, d)


def _indicator(k: int, d: int) -> np.ndarray:
    """(K·d, K) matrix with ones where row j belongs to component j // d (cached)."""
    cache = getattr(_local, "indicators", None)
    if cache is None:
        cache = _local.indicators = {}
    ind = cache.get((k, d))
    if ind is None:
        ind = cache[(k, d)] = np.kron(np.eye(k), np.ones((d, 1)))
    return ind


def weighted_log_prob(x0: np.ndarray, kp: KernelParams) -> np.ndarray:
    """``log π_k + log N(x | μ_k, Σ_k)`` for centred rows, shape (b, K)."""
    lp = _mahalanobis(x0, kp)
    lp *= -0.5
    lp += kp.log_norm
    return lp


def normalize_in_place(lp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-sum-exp over components; turns ``lp`` into responsibilities in place.

    Returns
    -------
    lse : ndarray of shape (b,)
        ``log Σ_k exp(lp[:, k])``; 0 for rows whose log-densities are not finite.
    ok : ndarray of bool of shape (b,)
        False for rows with no finite log-density (NaN, inf or overflowing input);
        their responsibilities are set to 0.
    """
    m = lp.max(axis=1)
    ok = np.isfinite(m)
    all_ok = bool(ok.all())
    if not all_ok:
        lp[~ok] = 0.0
        m[~ok] = 0.0
    lp -= m[:, None]
    np.exp(lp, out=lp)
    s = lp.sum(axis=1)
    lp /= s[:, None]
    lse = np.log(s)
    lse += m
    if not all_ok:
        lp[~ok] = 0.0
        lse[~ok] = 0.0
    return lse, ok


###############################################################################
# Sufficient statistics


def empty_stats(n_components: int, n_features: int, covariance_type: str) -> dict:
    """Zeroed statistics of a block: the unit of the tree reduction."""
    k, d = n_components, n_features
    s2_shape = {"full": (k, d, d), "tied": (d, d)}.get(covariance_type, (k, d))
    return {
        "nk": np.zeros(k),
        "s1": np.zeros((k, d)),
        "s2": np.zeros(s2_shape),
        "loglik": 0.0,
        "n": 0,
        "w": 0.0,
        "n_bad": 0,
        "n_bad_weights": 0,
        "first_bad": None,
    }


def _accumulate(
    x0: np.ndarray, resp: np.ndarray, shifts: np.ndarray, stats: dict, ctype: str
) -> None:
    """Add ``Σ γ``, ``Σ γ (x − c_k)`` and the second moments of one sub-block."""
    b, d = x0.shape
    stats["nk"] += resp.sum(axis=0)
    if ctype in ("full", "tied") and d < SMALL_D:
        # Few features: work on (d, b) so every elementwise loop runs along b.
        x0t = _scratch("x0t", (d, b))
        x0t[:] = x0.T
        resp_t = _scratch("respt", resp.shape[::-1])
        resp_t[:] = resp.T
        diff = _scratch("difft", (d, b))
        w = _scratch("wt", (d, b))
        for k in range(shifts.shape[0]):
            np.subtract(x0t, shifts[k][:, None], out=diff)
            stats["s1"][k] += diff @ resp_t[k]
            np.multiply(diff, resp_t[k], out=w)
            if ctype == "full":
                stats["s2"][k] += w @ diff.T
            else:
                stats["s2"] += w @ diff.T
        return
    if ctype in ("full", "tied"):
        diff = _scratch("diff", (b, d))
        w = _scratch("w", (b, d))
        s2 = stats["s2"]
        h = d // 2 if d >= LARGE_D else d
        for k in range(shifts.shape[0]):
            np.subtract(x0, shifts[k], out=diff)
            stats["s1"][k] += resp[:, k] @ diff
            np.multiply(diff, resp[:, k : k + 1], out=w)
            target = s2[k] if ctype == "full" else s2
            # Upper block rows only when large; _mirror_lower fills the rest.
            target[:h] += w[:, :h].T @ diff
            if h < d:
                target[h:, h:] += w[:, h:].T @ diff[:, h:]
        return
    diff = _scratch("zdiff", (b, shifts.shape[0], d))
    np.subtract(x0[:, None, :], shifts, out=diff)
    w = _scratch("zw", diff.shape)
    np.multiply(diff, resp[:, :, None], out=w)
    stats["s1"] += w.sum(axis=0)
    w *= diff
    stats["s2"] += w.sum(axis=0)


def _mirror_lower(stats: dict, ctype: str) -> None:
    """Fill the lower-left block of full/tied ``s2`` that :func:`_accumulate` skipped."""
    if ctype not in ("full", "tied"):
        return
    s2 = stats["s2"]
    d = s2.shape[-1]
    if d >= LARGE_D:
        h = d // 2
        s2[..., h:, :h] = np.swapaxes(s2[..., :h, h:], -1, -2)


def row_weights(weights: np.ndarray | None, n: int, stats: dict) -> np.ndarray | None:
    """Row weights as float64, bad ones (negative, NaN, inf) counted and zeroed.

    Also sets ``stats["w"]``, the total weight (the row count when unweighted).
    """
    if weights is None:
        stats["w"] = float(n)
        return None
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    bad = ~(np.isfinite(w) & (w >= 0))
    if bad.any():
        stats["n_bad_weights"] = stats.get("n_bad_weights", 0) + int(bad.sum())
        w = np.where(bad, 0.0, w)
    stats["w"] = float(w.sum())
    return w


def note_bad_rows(
    stats: dict,
    ok: np.ndarray,
    start: int,
    block_index: int,
    weights: np.ndarray | None = None,
) -> None:
    """Count the rows of a sub-block (from ``start``) without a finite density.

    Their weight (1 each when ``weights`` is None) leaves the total ``stats["w"]``,
    so totals describe the rows used (``nan_policy="omit"``).
    """
    n_bad = int(ok.size - np.count_nonzero(ok))
    if n_bad:
        stats["n_bad"] += n_bad
        if stats["first_bad"] is None:
            stats["first_bad"] = (block_index, start + int(np.argmin(ok)))
        if "w" in stats:
            if weights is None:
                stats["w"] -= n_bad
            else:
                stats["w"] -= float(weights[start : start + ok.size][~ok].sum())


def centred(xb: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Rows minus ``center`` in float64 in a scratch buffer (casts float32 on the fly)."""
    x0 = _scratch("x0", xb.shape)
    np.subtract(xb, center, out=x0, dtype=np.float64, casting="unsafe")
    return x0


@quiet
def estep_block(
    X: np.ndarray,
    kp: KernelParams,
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """E-step statistics of one block of rows under the mixture ``kp``.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Rows of any float dtype; everything is accumulated in float64.
    kp : KernelParams
    block_index : int
        Position of the block, to locate the first non-finite row.
    weights : ndarray of shape (n,), optional
        Row weights: responsibilities and log-likelihoods are multiplied by them.

    Returns
    -------
    stats : dict
        ``nk`` (K,), ``s1`` (K, d), ``s2``, ``loglik`` (weighted sum of per-row
        log-likelihood), ``n`` (rows), ``w`` (total weight), ``n_bad`` (rows with no
        finite log-density), ``n_bad_weights`` and ``first_bad`` ((block, row) of the
        first bad row, or None). ``s1``/``s2`` are shifted by the means of ``kp``.
    """
    n, d = X.shape
    ctype = kp.covariance_type
    stats = empty_stats(kp.n_components, d, ctype)
    w = row_weights(weights, n, stats)
    rows = subblock_rows(kp.n_components, d)
    loglik = 0.0
    for start in range(0, n, rows):
        x0 = centred(X[start : start + rows], kp.center)
        resp = weighted_log_prob(x0, kp)
        lse, ok = normalize_in_place(resp)
        if not ok.all():
            note_bad_rows(stats, ok, start, block_index, w)
            x0[~ok] = 0.0
        if w is None:
            loglik += float(lse.sum())
        else:
            wb = w[start : start + rows]
            loglik += float(lse @ wb)
            resp *= wb[:, None]
        _accumulate(x0, resp, kp.shifts, stats, ctype)
    stats["loglik"] = loglik
    stats["n"] = n
    _mirror_lower(stats, ctype)
    return stats


@quiet
def hard_assign_block(
    X: np.ndarray,
    centers_and_type: tuple[np.ndarray, str],
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """Statistics of a block with every row given wholly to its nearest centre.

    Used by the ``kmeans`` initialisation after Lloyd iterations on a sample.
    ``centers_and_type`` is ``(centers (K, d), covariance_type)``; ``s1`` and ``s2``
    are shifted by ``centers``.
    """
    centers, ctype = centers_and_type
    n, d = X.shape
    k = centers.shape[0]
    center = centers.mean(axis=0)
    shifts = centers - center
    stats = empty_stats(k, d, ctype)
    w = row_weights(weights, n, stats)
    rows = subblock_rows(k, d)
    for start in range(0, n, rows):
        x0 = centred(X[start : start + rows], center)
        b = x0.shape[0]
        z = _scratch("z", (b, k, d))
        np.subtract(x0[:, None, :], shifts, out=z)
        z *= z
        dist = z.sum(axis=2)
        ok = np.isfinite(dist).all(axis=1)
        if not ok.all():
            note_bad_rows(stats, ok, start, block_index, w)
            x0[~ok] = 0.0
        resp = _scratch("resp", (b, k))
        resp[:] = 0.0
        resp[np.arange(b), dist.argmin(axis=1)] = 1.0
        resp[~ok] = 0.0
        if w is not None:
            resp *= w[start : start + rows, None]
        _accumulate(x0, resp, shifts, stats, ctype)
    stats["n"] = n
    _mirror_lower(stats, ctype)
    return stats


@quiet
def random_resp_block(
    X: np.ndarray,
    spec: tuple[int, int, np.ndarray, str],
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """Statistics of a block under uniform random responsibilities (``init='random'``).

    ``spec`` is ``(seed, n_components, center, covariance_type)``; the random numbers
    come from a generator keyed by ``(seed, block_index)`` so the result does not
    depend on which worker runs the block. ``s1``/``s2`` are shifted by ``center`` for
    every component.
    """
    seed, n_components, center, ctype = spec
    n, d = X.shape
    rng = np.random.default_rng(np.random.SeedSequence([seed, block_index]))
    shifts = np.zeros((n_components, d))
    stats = empty_stats(n_components, d, ctype)
    w = row_weights(weights, n, stats)
    rows = subblock_rows(n_components, d)
    for start in range(0, n, rows):
        x0 = centred(X[start : start + rows], center)
        resp = rng.uniform(size=(x0.shape[0], n_components))
        resp /= resp.sum(axis=1, keepdims=True)
        ok = np.isfinite(x0).all(axis=1)
        if not ok.all():
            note_bad_rows(stats, ok, start, block_index, w)
            x0[~ok] = 0.0
            resp[~ok] = 0.0
        if w is not None:
            resp *= w[start : start + rows, None]
        _accumulate(x0, resp, shifts, stats, ctype)
    stats["n"] = n
    _mirror_lower(stats, ctype)
    return stats


def combine_stats(*parts: dict) -> dict:
    """Sum block statistics in a fixed order (bitwise reproducible)."""
    out = {
        key: (v.copy() if isinstance(v, np.ndarray) else v)
        for key, v in parts[0].items()
    }
    for part in parts[1:]:
        for key in ("nk", "s1", "s2"):
            out[key] += part[key]
        out["loglik"] += part["loglik"]
        out["n"] += part["n"]
        out["w"] += part["w"]
        out["n_bad"] += part["n_bad"]
        out["n_bad_weights"] += part["n_bad_weights"]
        if out["first_bad"] is None:
            out["first_bad"] = part["first_bad"]
        if "n_inf" in part:  # rows with an infinite value (nan_policy='marginalize')
            out["n_inf"] = out.get("n_inf", 0) + part["n_inf"]
            if out.get("first_inf") is None:
                out["first_inf"] = part["first_inf"]
    return out


###############################################################################
# M-step (client side)


def m_step(
    stats: dict, shifts: np.ndarray, reg_covar: float, covariance_type: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New weights, means and covariances from the reduced statistics.

    Parameters
    ----------
    stats : dict
        Reduced statistics with ``s1``/``s2`` shifted by ``shifts``.
    shifts : ndarray of shape (K, d)
        The per-component shifts (absolute coordinates) the statistics used.
    reg_covar : float
        Added to the diagonal of every covariance.
    covariance_type : str

    Returns
    -------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
    covariances : ndarray, shape by ``covariance_type``
    """
    nk = stats["nk"] + 10 * EPS
    delta = stats["s1"] / nk[:, None]
    means = shifts + delta
    s2 = stats["s2"]
    if covariance_type == "full":
        cov = s2 / nk[:, None, None] - delta[:, :, None] * delta[:, None, :]
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        cov[:, np.arange(cov.shape[1]), np.arange(cov.shape[1])] += reg_covar
    elif covariance_type == "tied":
        cov = (s2 - np.einsum("k,ki,kj->ij", nk, delta, delta)) / nk.sum()
        cov = 0.5 * (cov + cov.T)
        cov.flat[:: cov.shape[0] + 1] += reg_covar
    else:
        cov = s2 / nk[:, None] - delta**2 + reg_covar
        if covariance_type == "spherical":
            cov = cov.mean(axis=1)
    return nk / nk.sum(), means, cov


def shift_loss(stats: dict, covariance_type: str, live: np.ndarray) -> float:
    """How much larger the shifted second moments are than the variances they give.

    The M-step computes ``Σ = S2/N − δδᵀ`` (``δ`` the mean's move from the shift);
    its diagonal loses about ``log10`` of this factor in digits to cancellation
    (1 when the shifts are the means). ``live`` masks the components that count.
    Infinite when a variance comes out zero or negative from non-zero moments.
    """
    nk = stats["nk"] + 10 * EPS
    delta = stats["s1"] / nk[:, None]
    s2 = stats["s2"]
    if covariance_type == "tied":
        moments = np.diag(s2)
        variances = moments - (nk[live, None] * delta[live] ** 2).sum(axis=0)
    else:
        diagonal = np.diagonal(s2, axis1=1, axis2=2) if s2.ndim == 3 else s2
        moments = (diagonal / nk[:, None])[live]
        variances = moments - delta[live] ** 2
    if moments.size == 0:
        return 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(variances > 0, moments / variances, np.inf)
    ratio = np.where(moments > 0, ratio, 1.0)
    return float(ratio.max())


def recentred(
    weights: np.ndarray,
    means: np.ndarray,
    prec_chol: np.ndarray,
    covariance_type: str,
    about: np.ndarray,
    about_weights: np.ndarray,
    log_weights: np.ndarray | None = None,
) -> KernelParams:
    """Kernel parameters of the mixture that accumulate about the means ``about``.

    The densities are those of ``weights, means, prec_chol`` (the same
    responsibilities and log-likelihood), computed from rows centred at the
    ``about_weights``-weighted mean of ``about``; the statistics are shifted by
    ``about``, so that with the new means there the M-step's covariances are the
    exact two-pass ones.
    """
    about = np.asarray(about, dtype=np.float64)
    center = weighted_center(about_weights, about)
    kp = prepare(
        weights, means, prec_chol, covariance_type, center, log_weights=log_weights
    )
    return replace(kp, shifts=np.ascontiguousarray(about - center))


###############################################################################
# Per-row outputs (predict, predict_proba, score_samples)


def row_offset(block_info: dict | None) -> int | None:
    """First row of the block in the whole array, from dask's ``block_info``."""
    try:
        start = block_info[0]["array-location"][0][0]
    except (TypeError, KeyError, IndexError):
        return None
    return None if start is None or start != start else int(start)


@quiet
def _per_row(
    X: np.ndarray,
    kp: KernelParams,
    what: str,
    block_info: dict | None = None,
    nan_policy: str = "raise",
) -> np.ndarray:
    """Labels, responsibilities or log-densities of the rows of a block.

    Rows without a finite density raise the NaN/inf error, or with
    ``nan_policy="omit"`` get label -1 and NaN responsibilities / log-density.
    """
    n, d = X.shape
    k = kp.n_components
    out = np.empty((n, k) if what == "proba" else (n,), dtype=np.float64)
    rows = subblock_rows(k, d)
    stats = {"n_bad": 0, "first_bad": None}
    missing = -1.0 if what == "label" else np.nan
    for start in range(0, n, rows):
        x0 = centred(X[start : start + rows], kp.center)
        lp = weighted_log_prob(x0, kp)
        part = out[start : start + rows]
        if what == "label":
            ok = np.isfinite(lp.max(axis=1))
            part[:] = lp.argmax(axis=1)
        else:
            lse, ok = normalize_in_place(lp)
            part[:] = lp if what == "proba" else lse
        note_bad_rows(stats, ok, start, 0)
        if nan_policy == "omit" and not ok.all():
            part[~ok] = missing
    if stats["n_bad"] and nan_policy != "omit":
        offset = row_offset(block_info)
        row = stats["first_bad"][1]
        if offset is None:
            where = f" of a block of {n} rows (first at row {row} of the block)"
        else:
            where = (
                f" of the block of rows {offset} to {offset + n - 1} "
                f"(first at row {offset + row})"
            )
        raise_non_finite(stats["n_bad"], "X", where)
    return out


def predict_block(
    X: np.ndarray,
    kp: KernelParams,
    block_info: dict | None = None,
    nan_policy: str = "raise",
) -> np.ndarray:
    """Index of the most probable component per row, int64 (n,); -1 for rows
    omitted under ``nan_policy="omit"``."""
    return _per_row(X, kp, "label", block_info, nan_policy).astype(np.int64)


def predict_proba_block(
    X: np.ndarray,
    kp: KernelParams,
    out_dtype: Any = np.float64,
    block_info: dict | None = None,
    nan_policy: str = "raise",
) -> np.ndarray:
    """Responsibilities (n, K)."""
    return _per_row(X, kp, "proba", block_info, nan_policy).astype(
        out_dtype, copy=False
    )


def score_samples_block(
    X: np.ndarray,
    kp: KernelParams,
    out_dtype: Any = np.float64,
    block_info: dict | None = None,
    nan_policy: str = "raise",
) -> np.ndarray:
    """Log-density of each row under the mixture (n,)."""
    return _per_row(X, kp, "score", block_info, nan_policy).astype(
        out_dtype, copy=False
    )


@quiet
def loglik_block(
    X: np.ndarray,
    kp: KernelParams,
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """(Weighted) sum of log-densities, rows and total weight of a block.

    For score, BIC and AIC.
    """
    n, d = X.shape
    rows = subblock_rows(kp.n_components, d)
    stats = {"loglik": 0.0, "n": n, "n_bad": 0, "n_bad_weights": 0, "first_bad": None}
    w = row_weights(weights, n, stats)
    for start in range(0, n, rows):
        x0 = centred(X[start : start + rows], kp.center)
        lse, ok = normalize_in_place(weighted_log_prob(x0, kp))
        if not ok.all():
            note_bad_rows(stats, ok, start, block_index, w)
        stats["loglik"] += float(
            lse.sum() if w is None else lse @ w[start : start + rows]
        )
    return stats


def combine_loglik(*parts: dict) -> dict:
    """Sum :func:`loglik_block` results in a fixed order (and the counts of missing
    values of ``daskgmm._missing.missing_loglik_block``)."""
    out = dict(parts[0])
    for part in parts[1:]:
        for key in ("n_missing", "n_incomplete"):
            if key in part:
                out[key] = out[key] + part[key]
        out["loglik"] += part["loglik"]
        out["n"] += part["n"]
        out["w"] += part["w"]
        out["n_bad"] += part["n_bad"]
        out["n_bad_weights"] += part["n_bad_weights"]
        if out["first_bad"] is None:
            out["first_bad"] = part["first_bad"]
        if "n_inf" in part:  # rows with an infinite value (nan_policy='marginalize')
            out["n_inf"] = out.get("n_inf", 0) + part["n_inf"]
            if out.get("first_inf") is None:
                out["first_inf"] = part["first_inf"]
    return out


def raise_non_finite(n_bad: int, name: str, context: str) -> None:
    """Raise the one-line error for rows with NaN, infinity or overflowing values."""
    raise ValueError(
        f"Input {name} contains NaN or infinity (or values too large for float64) in "
        f"{n_bad} row(s){context}; drop or impute those rows before fitting or predicting "
        "(or leave them out with nan_policy='omit', or use their observed values "
        "with nan_policy='marginalize')"
    )


###############################################################################
# Uniform row sample (initialisation)


@quiet
def sample_block(
    X: np.ndarray,
    seed_size_rate: tuple,
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """A uniform random sample of the block's rows, by priority keys.

    ``seed_size_rate`` is ``(seed, size, rate)``, or ``(seed, size, rate, True)``
    to sample rows with missing values (NaN) too.

    Every row gets a key ``u ~ U(0, 1)`` from a generator keyed by
    ``(seed, block_index)``; rows with ``u < rate`` are kept (at most ``size`` of the
    smallest). Keeping the ``size`` smallest keys over all blocks is a uniform sample
    without replacement, reproducible for a given chunking.

    With row weights, rows of weight 0 are never sampled and the sampled rows carry
    their weights (the initialisation weighs them).

    Returns
    -------
    dict
        ``keys`` (m,), ``rows`` (m, d) in the block's dtype, ``weights`` (m,), ``n``,
        ``w`` (total weight), ``n_bad`` (rows with NaN or inf), ``n_bad_weights`` and
        ``first_bad``.
    """
    seed, size, rate, *missing = seed_size_rate
    n = X.shape[0]
    rng = np.random.default_rng(np.random.SeedSequence([seed, block_index]))
    keys = rng.random(n)
    if missing and missing[0]:
        # Rows with missing values (NaN) are sampled too, not those with an
        # infinite value or with every value missing.
        nan = np.isnan(X)
        ok = ~(np.isinf(X).any(axis=1) | nan.all(axis=1))
    else:
        ok = np.isfinite(X.sum(axis=1, dtype=np.float64))
    stats = {"n": n, "n_bad": 0, "n_bad_weights": 0, "first_bad": None}
    w = row_weights(weights, n, stats)
    if w is not None:
        keys[w == 0] = 2.0
    if not ok.all():
        if not (missing and missing[0]):
            # A row sum may overflow with finite entries: confirm on those rows.
            ok[~ok] = np.isfinite(X[~ok]).all(axis=1)
        note_bad_rows(stats, ok, 0, block_index, w)
        keys[~ok] = 2.0
    picked = np.flatnonzero(keys < rate)
    if picked.size > size:
        picked = picked[np.argsort(keys[picked], kind="stable")[:size]]
    stats["keys"] = keys[picked]
    stats["rows"] = np.asarray(X[picked])
    stats["weights"] = np.ones(picked.size) if w is None else w[picked]
    stats["size"] = size
    return stats


def combine_samples(*parts: dict) -> dict:
    """Keep the rows with the smallest keys among several samples."""
    keys = np.concatenate([p["keys"] for p in parts])
    rows = np.concatenate([p["rows"] for p in parts])
    weights = np.concatenate([p["weights"] for p in parts])
    size = parts[0]["size"]
    if keys.size > size:
        order = np.argsort(keys, kind="stable")[:size]
        keys, rows, weights = keys[order], rows[order], weights[order]
    first_bad = next(
        (p["first_bad"] for p in parts if p["first_bad"] is not None), None
    )
    return {
        "keys": keys,
        "rows": rows,
        "weights": weights,
        "size": size,
        "n": sum(p["n"] for p in parts),
        "w": sum(p["w"] for p in parts),
        "n_bad": sum(p["n_bad"] for p in parts),
        "n_bad_weights": sum(p["n_bad_weights"] for p in parts),
        "first_bad": first_bad,
    }
