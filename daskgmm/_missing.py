"""Rows with missing values: the E-step on each row's observed features.

A Gaussian mixture uses the observed part of a row exactly (Ghahramani and Jordan,
1994). With ``o`` the row's observed features and ``m`` its missing ones, component
``k``'s density of the row is the marginal ``N(x_o | μ_o, Σ_oo)``; the
responsibilities follow as usual, and the missing values enter the statistics by
their conditional expectation and covariance given the observed ones:

    x̂_m = μ_m + Σ_mo Σ_oo⁻¹ (x_o − μ_o)        C = Σ_mm − Σ_mo Σ_oo⁻¹ Σ_om
    S1_k += γ (x̂ − c_k)                        S2_k += γ ((x̂ − c_k)(x̂ − c_k)ᵀ + C)

(``C`` in the ``m × m`` block). Rows are grouped by their pattern of missing values,
so each pattern costs one small factorisation per component; the rows with every
value observed go through the complete-data kernel (compiled or NumPy), so a block
without a missing value gives exactly the complete-data statistics. Pure NumPy, as
:mod:`daskgmm._kernels`, and tested against a row-by-row reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from daskgmm import _kernels as K


@dataclass(frozen=True)
class MissingParams:
    """What a marginalising E-step needs (built on the client once per pass).

    Attributes
    ----------
    kp : KernelParams
        The complete-data kernel's parameters (rows with every value observed).
    complete : callable
        The complete-data E-step kernel (NumPy or its compiled twin).
    means : ndarray of shape (K, d)
    covariances : ndarray of shape (K, d, d)
        Every covariance type as full matrices (diagonal for diag and spherical,
        the same one K times for tied).
    log_weights : ndarray of shape (K,)
        ``log π_k`` (or a variational mixture's replacement).
    shifts : ndarray of shape (K, d)
        What the statistics are accumulated about (absolute coordinates).
    """

    kp: K.KernelParams
    complete: Callable
    means: np.ndarray
    covariances: np.ndarray
    log_weights: np.ndarray
    shifts: np.ndarray

    @property
    def covariance_type(self) -> str:
        return self.kp.covariance_type


def full_covariances(covariances: np.ndarray, covariance_type: str, k: int, d: int):
    """Covariances of any type as (K, d, d) matrices."""
    cov = np.asarray(covariances, dtype=np.float64)
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if covariance_type == "spherical":
        cov = np.repeat(cov[:, None], d, axis=1)
    out = np.zeros((k, d, d))
    out[:, np.arange(d), np.arange(d)] = cov
    return out


def missing_params(
    kp: K.KernelParams,
    complete: Callable,
    means: np.ndarray,
    covariances: np.ndarray,
    log_weights: np.ndarray,
) -> MissingParams:
    """The marginalising E-step's parameters of the mixture of ``kp`` (whose
    statistics it accumulates about ``kp``'s shifts)."""
    k, d = kp.n_components, kp.n_features
    return MissingParams(
        kp,
        complete,
        np.asarray(means, dtype=np.float64),
        np.ascontiguousarray(full_covariances(covariances, kp.covariance_type, k, d)),
        np.asarray(log_weights, dtype=np.float64),
        kp.center + kp.shifts,
    )


###############################################################################
# One pattern of missing values


def _pattern_terms(
    mp: MissingParams, observed: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Per component, for the observed features ``observed`` (bool (d,)): the
    Cholesky factor of ``Σ_oo``, the regression ``B = Σ_mo Σ_oo⁻¹``, the conditional
    covariance ``C`` of the missing features and ``log π_k − ½ log det Σ_oo −
    d_o/2 log 2π``."""
    o = np.flatnonzero(observed)
    m = np.flatnonzero(~observed)
    terms = []
    for k in range(mp.means.shape[0]):
        cov = mp.covariances[k]
        chol = np.linalg.cholesky(cov[np.ix_(o, o)])
        # B = Σ_mo Σ_oo⁻¹ by two triangular solves of Σ_om.
        half = np.linalg.solve(chol, cov[np.ix_(o, m)])
        regression = np.linalg.solve(chol.T, half).T
        conditional = cov[np.ix_(m, m)] - half.T @ half
        const = (
            mp.log_weights[k]
            - np.log(np.diagonal(chol)).sum()
            - 0.5 * o.size * K.LOG_2PI
        )
        terms.append((chol, regression, conditional, const))
    return terms


def _pattern_rows(
    rows: np.ndarray, mp: MissingParams, observed: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Log-densities ``lp`` (n, K) of rows with the same observed features, each
    component's completed rows ``x̂`` (n, d) and conditional covariance ``C``."""
    o = np.flatnonzero(observed)
    m = np.flatnonzero(~observed)
    n, d = rows.shape
    lp = np.empty((n, mp.means.shape[0]))
    filled, conditional = [], []
    for k, (chol, regression, cond, const) in enumerate(_pattern_terms(mp, observed)):
        diff = rows[:, o] - mp.means[k, o]
        sol = np.linalg.solve(chol, diff.T)
        lp[:, k] = const - 0.5 * np.einsum("ij,ij->j", sol, sol)
        xhat = np.empty((n, d))
        xhat[:, o] = rows[:, o]
        xhat[:, m] = mp.means[k, m] + diff @ regression.T
        filled.append(xhat)
        full = np.zeros((d, d))
        full[np.ix_(m, m)] = cond
        conditional.append(full)
    return lp, filled, conditional


def _accumulate_pattern(
    stats: dict,
    resp: np.ndarray,
    filled: list[np.ndarray],
    conditional: list[np.ndarray],
    mp: MissingParams,
) -> None:
    """Add the rows' statistics (``resp`` already multiplied by the row weights)."""
    ctype = mp.covariance_type
    nk = resp.sum(axis=0)
    stats["nk"] += nk
    for k, (xhat, cond) in enumerate(zip(filled, conditional, strict=True)):
        g = resp[:, k]
        diff = xhat - mp.shifts[k]
        stats["s1"][k] += g @ diff
        if ctype in ("full", "tied"):
            second = (diff * g[:, None]).T @ diff + nk[k] * cond
            if ctype == "full":
                stats["s2"][k] += second
            else:
                stats["s2"] += second
        else:
            stats["s2"][k] += g @ diff**2 + nk[k] * np.diagonal(cond)


###############################################################################
# A block


def _patterns(missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct patterns (bool (p, d)) and each row's pattern index."""
    packed = np.packbits(missing, axis=1)
    _, first, index = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    return missing[first], index.reshape(-1)


def _marginal_rows(
    X: np.ndarray, mp: MissingParams
) -> tuple[np.ndarray, np.ndarray, list]:
    """Log-densities (n, K) of rows with missing values, by pattern; and per
    pattern its rows and completed rows (for the statistics)."""
    missing = np.isnan(X)
    patterns, index = _patterns(missing)
    lp = np.empty((X.shape[0], mp.means.shape[0]))
    parts = []
    for p, pattern in enumerate(patterns):
        rows = np.flatnonzero(index == p)
        lp_p, filled, conditional = _pattern_rows(X[rows], mp, ~pattern)
        lp[rows] = lp_p
        parts.append((rows, filled, conditional))
    return lp, index, parts


def _usable(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows with every value observed, rows with some missing (NaN), and rows that
    cannot be used: an infinite value, or every value missing."""
    nan = np.isnan(X)
    inf = np.isinf(X).any(axis=1)
    some = nan.any(axis=1)
    bad = inf | nan.all(axis=1)
    return ~some & ~inf, some & ~bad, bad


@K.quiet
def estep_missing_block(
    X: np.ndarray,
    mp: MissingParams,
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """E-step statistics of a block whose rows may have missing values (NaN).

    The same keys and meaning as :func:`daskgmm._kernels.estep_block`; the
    log-likelihood is that of every row's observed values. Rows with an infinite
    value or with every value missing are counted in ``n_bad`` (the pass raises).
    A block without a missing value is the complete-data kernel's alone.
    """
    X = np.asarray(X)
    complete, partial, bad = _usable(X)
    if complete.all():
        return mp.complete(X, mp.kp, block_index, weights)
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    stats = mp.complete(
        X[complete], mp.kp, block_index, None if w is None else w[complete]
    )
    extra = K.empty_stats(mp.kp.n_components, X.shape[1], mp.covariance_type)
    rows = np.flatnonzero(partial)
    wp = K.row_weights(None if w is None else w[rows], rows.size, extra)
    extra["n"] = rows.size
    if rows.size:
        lp, _, parts = _marginal_rows(np.asarray(X[rows], dtype=np.float64), mp)
        lse, _ = K.normalize_in_place(lp)  # lp now holds the responsibilities
        if wp is not None:
            lp *= wp[:, None]
        extra["loglik"] = float(lse.sum() if wp is None else lse @ wp)
        for idx, filled, conditional in parts:
            _accumulate_pattern(extra, lp[idx], filled, conditional, mp)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        extra["n_bad"] = int(bad.sum())
        extra["first_bad"] = (block_index, first)
        extra["n"] += int(bad.sum())
    return K.combine_stats(stats, extra)


def missing_loglik(X: np.ndarray, mp: MissingParams) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the log-density of its observed values (``lse``) and the
    responsibilities (n, K); NaN for rows that cannot be used."""
    X = np.asarray(X, dtype=np.float64)
    complete, partial, _ = _usable(X)
    n, k = X.shape[0], mp.means.shape[0]
    resp = np.full((n, k), np.nan)
    lse = np.full(n, np.nan)
    for mask in (complete, partial):
        rows = np.flatnonzero(mask)
        if not rows.size:
            continue
        lp, _, _ = _marginal_rows(X[rows], mp)
        lse_rows, ok = K.normalize_in_place(lp)
        resp[rows] = np.where(ok[:, None], lp, np.nan)
        lse[rows] = np.where(ok, lse_rows, np.nan)
    return lse, resp


def impute_rows(X: np.ndarray, mp: MissingParams) -> np.ndarray:
    """Each missing value replaced by its conditional expectation under the
    mixture, ``Σ_k γ_k E[x_m | x_o, k]`` (observed values kept); rows that cannot
    be used stay NaN."""
    X = np.asarray(X, dtype=np.float64)
    out = X.copy()
    rows = np.flatnonzero(_usable(X)[1])
    if rows.size:
        lp, _, parts = _marginal_rows(X[rows], mp)
        K.normalize_in_place(lp)
        for idx, filled, _ in parts:
            mean = sum(lp[idx, k : k + 1] * xhat for k, xhat in enumerate(filled))
            missing = np.isnan(X[rows[idx]])
            out[rows[idx]] = np.where(missing, mean, X[rows[idx]])
    return out


def draw_missing(
    X: np.ndarray, mp: MissingParams, rng: np.random.Generator
) -> np.ndarray:
    """One draw of the missing values from their conditional distribution under the
    mixture: a component by its responsibility, then ``N(x̂_m, C)``."""
    X = np.asarray(X, dtype=np.float64)
    out = X.copy()
    rows = np.flatnonzero(_usable(X)[1])
    if not rows.size:
        return out
    missing = np.isnan(X[rows])
    lp, _, parts = _marginal_rows(X[rows], mp)
    K.normalize_in_place(lp)
    for idx, filled, conditional in parts:
        m = np.flatnonzero(missing[idx[0]])
        for j, row in enumerate(idx):
            k = rng.choice(lp.shape[1], p=lp[row] / lp[row].sum())
            cond = conditional[k][np.ix_(m, m)]
            value = filled[k][j, m] + _cholesky_psd(cond) @ rng.standard_normal(m.size)
            out[rows[row], m] = value
    return out


def _cholesky_psd(matrix: np.ndarray) -> np.ndarray:
    """A factor ``L`` with ``L Lᵀ = matrix`` for a positive semi-definite matrix."""
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return vectors * np.sqrt(np.clip(values, 0.0, None))
