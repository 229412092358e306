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


def _usable(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows with every value observed, rows with some missing (NaN), rows with
    every value missing (left out), and rows with an infinite value (an error)."""
    nan = np.isnan(X)
    inf = np.isinf(X).any(axis=1)
    some = nan.any(axis=1)
    empty = nan.all(axis=1) & ~inf
    return ~some & ~inf, some & ~empty & ~inf, empty, inf


def _note_rows(stats: dict, rows: np.ndarray, key: str, block_index: int) -> None:
    """Count the rows ``rows`` (bool) in ``n_<key>`` and locate the first."""
    if rows.any():
        stats[f"n_{key}"] = stats.get(f"n_{key}", 0) + int(rows.sum())
        if stats.get(f"first_{key}") is None:
            stats[f"first_{key}"] = (block_index, int(np.flatnonzero(rows)[0]))


@K.quiet
def estep_missing_block(
    X: np.ndarray,
    mp: MissingParams,
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """E-step statistics of a block whose rows may have missing values (NaN).

    The same keys and meaning as :func:`daskgmm._kernels.estep_block`; the
    log-likelihood is that of every row's observed values. Rows with every value
    missing carry no information and are left out (counted in ``n_bad``); rows
    with an infinite value are counted in ``n_inf`` (the pass raises). A block
    without a missing value is the complete-data kernel's alone.
    """
    X = np.asarray(X)
    complete, partial, empty, inf = _usable(X)
    if complete.all():
        return mp.complete(X, mp.kp, block_index, weights)
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    stats = mp.complete(
        X[complete], mp.kp, block_index, None if w is None else w[complete]
    )
    extra = K.empty_stats(mp.kp.n_components, X.shape[1], mp.covariance_type)
    rows = np.flatnonzero(partial)
    wp = K.row_weights(None if w is None else w[rows], rows.size, extra)
    extra["n"] = rows.size + int(empty.sum() + inf.sum())
    if rows.size:
        lp, _, parts = _marginal_rows(np.asarray(X[rows], dtype=np.float64), mp)
        lse, _ = K.normalize_in_place(lp)  # lp now holds the responsibilities
        if wp is not None:
            lp *= wp[:, None]
        extra["loglik"] = float(lse.sum() if wp is None else lse @ wp)
        for idx, filled, conditional in parts:
            _accumulate_pattern(extra, lp[idx], filled, conditional, mp)
    _note_rows(extra, empty, "bad", block_index)
    _note_rows(extra, inf, "inf", block_index)
    return K.combine_stats(stats, extra)


@K.quiet
def missing_loglik_block(
    X: np.ndarray,
    mp: MissingParams,
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """:func:`daskgmm._kernels.loglik_block` of rows that may have missing values:
    the (weighted) sum of the log-densities of every row's observed values. Rows
    with every value missing are left out (``n_bad``, their weight not in ``w``),
    rows with an infinite value counted in ``n_inf``; ``n_missing`` counts the
    missing values of each feature, ``n_incomplete`` the rows with one."""
    X = np.asarray(X)
    n = X.shape[0]
    stats = {"loglik": 0.0, "n": n, "n_bad": 0, "n_bad_weights": 0, "first_bad": None}
    w = K.row_weights(weights, n, stats)
    _, _, empty, inf = _usable(X)
    lse, _ = missing_loglik(X, mp)
    used = ~(empty | inf)
    K.note_bad_rows(stats, ~empty, 0, block_index, w)
    if inf.any():
        _note_rows(stats, inf, "inf", block_index)
        stats["w"] -= float(inf.sum() if w is None else w[inf].sum())
    lse = np.where(used, lse, 0.0)
    stats["loglik"] = float(lse.sum() if w is None else lse @ w)
    missing = np.isnan(X)
    stats["n_missing"] = missing.sum(axis=0)  # per feature
    stats["n_incomplete"] = int(missing.any(axis=1).sum())
    return stats


def missing_loglik(X: np.ndarray, mp: MissingParams) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the log-density of its observed values (``lse``) and the
    responsibilities (n, K); NaN for rows that cannot be used."""
    X = np.asarray(X, dtype=np.float64)
    complete, partial, _, _ = _usable(X)
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


# The passes raise their own error for the rows these kernels cannot use.
estep_missing_block.uses_observed = True  # type: ignore[attr-defined]
missing_loglik_block.uses_observed = True  # type: ignore[attr-defined]


def impute_rows(X: np.ndarray, mp: MissingParams) -> np.ndarray:
    """Each missing value replaced by its conditional expectation under the
    mixture, ``Σ_k γ_k E[x_m | x_o, k]`` (observed values kept); a row with every
    value missing gets the mixture's mean ``Σ_k π_k μ_k``."""
    X = np.asarray(X, dtype=np.float64)
    out = X.copy()
    _, partial, _, _ = _usable(X)
    rows = np.flatnonzero(partial)
    if rows.size:
        lp, _, parts = _marginal_rows(X[rows], mp)
        K.normalize_in_place(lp)
        for idx, filled, _ in parts:
            mean = sum(lp[idx, k : k + 1] * xhat for k, xhat in enumerate(filled))
            missing = np.isnan(X[rows[idx]])
            out[rows[idx]] = np.where(missing, mean, X[rows[idx]])
    empty = np.isnan(X).all(axis=1)
    if empty.any():
        out[empty] = _mixture_weights(mp) @ mp.means
    return out


def _mixture_weights(mp: MissingParams) -> np.ndarray:
    """The normalised weights ``exp(log_weights)``."""
    w = np.exp(mp.log_weights - mp.log_weights.max())
    return w / w.sum()


def _components(resp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One component per row, drawn by its probabilities ``resp`` (n, K)."""
    cumulative = np.cumsum(resp, axis=1)
    u = rng.random(resp.shape[0]) * cumulative[:, -1]
    return np.minimum((cumulative < u[:, None]).sum(axis=1), resp.shape[1] - 1)


def draw_missing(
    X: np.ndarray, mp: MissingParams, rng: np.random.Generator
) -> np.ndarray:
    """One draw of the missing values from their conditional distribution under the
    mixture: a component by its responsibility, then ``N(x̂_m, C)``; a row with
    every value missing is a draw from the mixture."""
    X = np.asarray(X, dtype=np.float64)
    out = X.copy()
    _, partial, _, _ = _usable(X)
    empty = np.isnan(X).all(axis=1)
    k, d = mp.means.shape
    rows = np.flatnonzero(partial)
    if rows.size:
        lp, _, parts = _marginal_rows(X[rows], mp)
        K.normalize_in_place(lp)
        chosen = _components(lp, rng)
        for idx, filled, conditional in parts:
            m = np.flatnonzero(np.isnan(X[rows[idx[0]]]))
            for j in range(k):
                here = np.flatnonzero(chosen[idx] == j)
                if not here.size:
                    continue
                factor = _cholesky_psd(conditional[j][np.ix_(m, m)])
                noise = rng.standard_normal((here.size, m.size)) @ factor.T
                out[np.ix_(rows[idx[here]], m)] = filled[j][here][:, m] + noise
    empty_rows = np.flatnonzero(empty)
    if empty_rows.size:
        weights = np.broadcast_to(_mixture_weights(mp), (empty_rows.size, k))
        chosen = _components(weights, rng)
        for j in range(k):
            here = empty_rows[chosen == j]
            factor = _cholesky_psd(mp.covariances[j])
            noise = rng.standard_normal((here.size, d)) @ factor.T
            out[here] = mp.means[j] + noise
    return out


def _cholesky_psd(matrix: np.ndarray) -> np.ndarray:
    """A factor ``L`` with ``L Lᵀ = matrix`` for a positive semi-definite matrix."""
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return vectors * np.sqrt(np.clip(values, 0.0, None))
