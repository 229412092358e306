"""Rows with missing values: the E-step on each row's observed features.

A Gaussian mixture uses the observed part of a row exactly (Ghahramani and Jordan,
1994). With ``o`` the row's observed features and ``m`` its missing ones, component
``k``'s density of the row is the marginal ``N(x_o | μ_o, Σ_oo)``; the
responsibilities follow as usual, and the missing values enter the statistics by
their conditional expectation and covariance given the observed ones:

    x̂_m = μ_m + Σ_mo Σ_oo⁻¹ (x_o − μ_o)        C = Σ_mm − Σ_mo Σ_oo⁻¹ Σ_om
    S1_k += γ (x̂ − c_k)                        S2_k += γ ((x̂ − c_k)(x̂ − c_k)ᵀ + C)

(``C`` in the ``m × m`` block). Both come from the component's precision
``P = Σ⁻¹`` and the small ``m × m`` block of it (a Schur complement):

    Σ_oo⁻¹ = P_oo − P_om P_mm⁻¹ P_mo        log det Σ_oo = log det Σ + log det P_mm
    x̂_m = μ_m − P_mm⁻¹ P_mo (x_o − μ_o)    C = P_mm⁻¹

so with ``r = P (x − μ)`` (missing entries of ``x − μ`` set to 0, one matrix
product for every row) a row costs the factorisation of its ``m × m`` block only.
Rows are grouped by their number of missing values and the blocks factorised in
batches, so the cost does not grow with the number of distinct patterns. The rows
with every value observed go through the complete-data kernel (compiled or NumPy),
so a block without a missing value gives exactly the complete-data statistics.
The patterns of ``PATTERN_KERNEL_ROWS`` rows or more in a block go through the
complete-data kernel too, on their observed features with the marginal mixture
(:func:`_pattern_statistics`). Pure NumPy, as :mod:`daskgmm._kernels`, and tested
against a row-by-row reference; with the compiled kernels (``mp.compiled``) a
block is one compiled call (``missing_block_statistics``) doing the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    precisions : ndarray of shape (K, d, d)
    log_det_precisions : ndarray of shape (K,)
        ``Σ_k⁻¹`` and ``log det Σ_k⁻¹``.
    whiteners : ndarray of shape (K, d, d)
        Lower triangular ``A_k`` with ``Σ_k⁻¹ = A_kᵀ A_k`` (the inverse Cholesky
        factor of ``Σ_k``).
    compiled : module or None
        The compiled kernels (:mod:`daskgmm._compiled`, injected: this module does
        not import it) for the rows with missing values (``row_codes``,
        ``missing_block_statistics``, ``missing_rows_statistics``), or None for NumPy.
    """

    kp: K.KernelParams
    complete: Callable
    means: np.ndarray
    covariances: np.ndarray
    log_weights: np.ndarray
    shifts: np.ndarray
    precisions: np.ndarray
    log_det_precisions: np.ndarray
    whiteners: np.ndarray
    compiled: Any = None

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
    compiled: Any = None,
) -> MissingParams:
    """The marginalising E-step's parameters of the mixture of ``kp`` (whose
    statistics it accumulates about ``kp``'s shifts); ``compiled`` is the module
    of compiled kernels for the rows with missing values (else NumPy)."""
    k, d = kp.n_components, kp.n_features
    full = np.ascontiguousarray(full_covariances(covariances, kp.covariance_type, k, d))
    chol = np.linalg.cholesky(full)
    inv_chol = np.linalg.inv(chol)
    return MissingParams(
        kp,
        complete,
        np.asarray(means, dtype=np.float64),
        full,
        np.asarray(log_weights, dtype=np.float64),
        kp.center + kp.shifts,
        np.swapaxes(inv_chol, 1, 2) @ inv_chol,
        -2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1),
        np.ascontiguousarray(np.tril(inv_chol)),
        compiled,
    )


###############################################################################
# Rows with missing values


@dataclass
class Marginal:
    """What rows with missing values give under each component.

    Attributes
    ----------
    lp : ndarray of shape (n, K)
        ``log π_k + log N(x_o | μ_o, Σ_oo)`` per row (the responsibilities once
        normalised in place).
    filled : list of ndarray of shape (n, d)
        Per component, the rows with their missing values replaced by ``x̂_m``.
    groups : list of (rows, idx)
        Rows with ``m`` missing values (for each ``m`` present) and the indices
        (r, m) of their missing features.
    inverses : list of list of ndarray of shape (r, m, m)
        Per component and group, the conditional covariances ``C = P_mm⁻¹``.
    """

    lp: np.ndarray
    filled: list[np.ndarray]
    groups: list[tuple[np.ndarray, np.ndarray]]
    inverses: list[list[np.ndarray]]


def _groups(missing: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rows grouped by their pattern of missing values when the patterns are few
    (each group's blocks are then factorised once), else by their number of
    missing values; with the (sorted) indices (r, m) of the missing features."""
    width = missing.sum(axis=1)
    keys = width
    if missing.shape[1] <= 62:  # a pattern as the bits of an int64
        pattern = missing @ (np.int64(1) << np.arange(missing.shape[1], dtype=np.int64))
        if np.unique(pattern).size * _ROWS_PER_PATTERN <= missing.shape[0]:
            keys = pattern
    groups = []
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        m = int(width[rows[0]])
        groups.append((rows, np.nonzero(missing[rows])[1].reshape(rows.size, m)))
    return groups


# Rows per distinct pattern above which a block is grouped by pattern.
_ROWS_PER_PATTERN = 64


def _shared(idx: np.ndarray) -> bool:
    """Whether every row of a group misses the same features."""
    return bool(idx.shape[0] > 1 and (idx == idx[0]).all())


def _marginal_rows(X: np.ndarray, mp: MissingParams) -> Marginal:
    """:class:`Marginal` of rows ``X`` (float64, NaN for missing; none all-NaN
    or infinite)."""
    missing = np.isnan(X)
    observed = ~missing
    n, d = X.shape
    n_observed = d - missing.sum(axis=1)
    groups = _groups(missing)
    lp = np.empty((n, mp.means.shape[0]))
    filled, inverses = [], []
    for k, (mean, prec) in enumerate(zip(mp.means, mp.precisions, strict=True)):
        diff = np.where(observed, X - mean, 0.0)
        r = diff @ prec
        quad = np.einsum("ij,ij->i", diff, r)
        log_det_mm = np.zeros(n)
        xhat = np.where(observed, X, mean)
        inv_k = []
        for rows, idx in groups:
            if not idx.shape[1]:
                inv_k.append(np.zeros((rows.size, 0, 0)))
                continue
            one = idx[:1] if _shared(idx) else idx  # a pattern's block once
            block = prec[one[:, :, None], one[:, None, :]]
            chol = np.linalg.cholesky(block)
            log_det_mm[rows] = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(
                axis=1
            )
            inv_chol = np.linalg.inv(chol)
            inverse = np.swapaxes(inv_chol, 1, 2) @ inv_chol
            inverse = np.broadcast_to(inverse, (rows.size, *inverse.shape[1:]))
            r_m = np.take_along_axis(r[rows], idx, axis=1)
            t = np.einsum("rab,rb->ra", inverse, r_m)
            quad[rows] -= np.einsum("ra,ra->r", r_m, t)
            xhat[rows[:, None], idx] = mean[idx] - t
            inv_k.append(inverse)
        lp[:, k] = (
            mp.log_weights[k]
            - 0.5 * n_observed * K.LOG_2PI
            + 0.5 * (mp.log_det_precisions[k] - log_det_mm)
            - 0.5 * quad
        )
        filled.append(xhat)
        inverses.append(inv_k)
    return Marginal(lp, filled, groups, inverses)


def _weighted_conditional(g: np.ndarray, marg: Marginal, k: int, d: int) -> np.ndarray:
    """``Σ_i g_i C_ik`` (d, d), each ``C`` in the block of the row's missing
    features."""
    out = np.zeros(d * d)
    for (rows, idx), inverse in zip(marg.groups, marg.inverses[k], strict=True):
        if not idx.shape[1]:
            continue
        flat = idx[:, :, None] * d + idx[:, None, :]
        out += np.bincount(
            flat.ravel(),
            weights=(g[rows][:, None, None] * inverse).ravel(),
            minlength=d * d,
        )
    return out.reshape(d, d)


def _accumulate(stats: dict, resp: np.ndarray, marg: Marginal, mp: MissingParams):
    """Add the rows' statistics (``resp`` already multiplied by the row weights)."""
    ctype = mp.covariance_type
    d = mp.means.shape[1]
    nk = resp.sum(axis=0)
    stats["nk"] += nk
    for k, xhat in enumerate(marg.filled):
        g = resp[:, k]
        diff = xhat - mp.shifts[k]
        stats["s1"][k] += g @ diff
        cond = _weighted_conditional(g, marg, k, d)
        if ctype in ("full", "tied"):
            second = (diff * g[:, None]).T @ diff + cond
            if ctype == "full":
                stats["s2"][k] += second
            else:
                stats["s2"] += second
        else:
            stats["s2"][k] += g @ diff**2 + np.diagonal(cond)


###############################################################################
# A block


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


###############################################################################
# Frequent patterns: the complete-data kernel on the observed features
#
# Under component k the completed row is affine in the observed values,
# x̂ = J_k x_o + c_k (J_k: the identity on o, B_k = Σ_mo Σ_oo⁻¹ on m; c_k: 0 on o,
# μ_m − B_k μ_o on m), so the statistics of rows sharing a pattern follow from the
# complete-data kernel run on their observed features with the marginal mixture
# (μ_o, Σ_oo): with its statistics N, S1, S2 about a_k and δ = J a_k + c_k − s_k,
#
#     Σ γ (x̂ − s) = J S1 + N δ
#     Σ γ ((x̂ − s)(x̂ − s)ᵀ + C) = J S2 Jᵀ + (J S1) δᵀ + δ (J S1)ᵀ + N δδᵀ + N C.

# Rows of one pattern in a block from which it goes through the complete-data kernel.
PATTERN_KERNEL_ROWS = 64


def _frequent_patterns(
    missing: np.ndarray, rows: np.ndarray
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """The patterns of ``PATTERN_KERNEL_ROWS`` rows or more (their rows of the
    block, and the observed features), and the other rows."""
    d = missing.shape[1]
    if d > 62 or rows.size < PATTERN_KERNEL_ROWS:
        return [], rows
    keys = missing @ (np.int64(1) << np.arange(d, dtype=np.int64))
    _, first, index, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    index = index.reshape(-1)
    big = np.flatnonzero(counts >= PATTERN_KERNEL_ROWS)
    if not big.size:
        return [], rows
    frequent = [(rows[index == p], ~missing[first[p]]) for p in big]
    return frequent, rows[~np.isin(index, big)]


def _pattern_statistics(
    X: np.ndarray,
    weights: np.ndarray | None,
    observed: np.ndarray,
    mp: MissingParams,
    block_index: int,
) -> dict:
    """Statistics of rows with the same observed features ``observed``: the
    complete-data kernel on those features, mapped to every feature."""
    o = np.flatnonzero(observed)
    m = np.flatnonzero(~observed)
    ctype = mp.covariance_type
    sub = "diag" if ctype in ("diag", "spherical") else "full"
    cov_oo = mp.covariances[:, o][:, :, o]
    cov_sub = np.diagonal(cov_oo, axis1=1, axis2=2) if sub == "diag" else cov_oo
    chol = K.precision_cholesky_from_covariances(cov_sub, sub)
    weights_k = np.exp(mp.log_weights - mp.log_weights.max())
    kp = K.prepare(
        weights_k / weights_k.sum(),
        mp.means[:, o],
        chol,
        sub,
        log_weights=mp.log_weights,
    )
    st = mp.complete(np.ascontiguousarray(X[:, o]), kp, block_index, weights)
    about = kp.center + kp.shifts
    k, d = mp.means.shape
    out = K.empty_stats(k, d, ctype)
    for key in ("loglik", "n", "w", "n_bad", "n_bad_weights", "first_bad"):
        out[key] = st[key]
    out["nk"] = st["nk"].copy()
    for j in range(k):
        cov = mp.covariances[j]
        regression = np.linalg.solve(cov[np.ix_(o, o)], cov[np.ix_(o, m)]).T
        J = np.zeros((d, o.size))
        J[o, np.arange(o.size)] = 1.0
        J[m] = regression
        offset = np.zeros(d)
        offset[m] = mp.means[j, m] - regression @ mp.means[j, o]
        delta = J @ about[j] + offset - mp.shifts[j]
        n = st["nk"][j]
        first = J @ st["s1"][j]
        out["s1"][j] = first + n * delta
        conditional = cov[np.ix_(m, m)] - regression @ cov[np.ix_(o, m)]
        if sub == "diag":
            second = np.zeros(d)
            second[o] = st["s2"][j]
            second += 2.0 * first * delta + n * delta**2
            second[m] += n * np.diagonal(conditional)
            out["s2"][j] = second
            continue
        second = J @ st["s2"][j] @ J.T
        cross = np.outer(first, delta)
        second += cross + cross.T + n * np.outer(delta, delta)
        second[np.ix_(m, m)] += n * conditional
        if ctype == "tied":
            out["s2"] += second
        else:
            out["s2"][j] = second
    return out


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
    if mp.compiled is not None and X.shape[1] <= 62:
        return _compiled_block(X, mp, block_index, weights)
    complete, partial, empty, inf = _usable(X)
    if complete.all():
        return mp.complete(X, mp.kp, block_index, weights)
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    parts = [
        mp.complete(X[complete], mp.kp, block_index, None if w is None else w[complete])
    ]
    rows = np.flatnonzero(partial)
    frequent, rows = _frequent_patterns(np.isnan(X[rows]), rows)
    for pattern_rows, observed in frequent:
        wr = None if w is None else w[pattern_rows]
        parts.append(
            _pattern_statistics(X[pattern_rows], wr, observed, mp, block_index)
        )
    extra = _rows_statistics(X, rows, w, mp)
    extra["n"] += int(empty.sum() + inf.sum())
    _note_rows(extra, empty, "bad", block_index)
    _note_rows(extra, inf, "inf", block_index)
    return K.combine_stats(*parts, extra)


def _rows_statistics(
    X: np.ndarray, rows: np.ndarray, w: np.ndarray | None, mp: MissingParams
) -> dict:
    """Statistics of the rows ``rows`` of ``X`` (each missing some values), row by
    row: compiled, or in NumPy grouped by pattern or number of missing values."""
    extra = K.empty_stats(mp.kp.n_components, X.shape[1], mp.covariance_type)
    wp = K.row_weights(None if w is None else w[rows], rows.size, extra)
    extra["n"] = rows.size
    if rows.size and mp.compiled is not None:
        nk, s1, s2, extra["loglik"] = mp.compiled.missing_rows_statistics(
            X.take(rows, axis=0),
            wp,
            mp.means,
            mp.precisions,
            mp.whiteners,
            mp.log_det_precisions,
            mp.log_weights,
            mp.shifts,
            mp.covariance_type,
        )
        extra["nk"] += nk
        extra["s1"] += s1
        extra["s2"] += s2
    elif rows.size:
        marg = _marginal_rows(np.asarray(X[rows], dtype=np.float64), mp)
        lse, _ = K.normalize_in_place(marg.lp)  # now the responsibilities
        if wp is not None:
            marg.lp *= wp[:, None]
        extra["loglik"] = float(lse.sum() if wp is None else lse @ wp)
        _accumulate(extra, marg.lp, marg, mp)
    return extra


def _compiled_block(
    X: np.ndarray, mp: MissingParams, block_index: int, weights: np.ndarray | None
) -> dict:
    """:func:`estep_missing_block` with the compiled kernels (at most 62
    features): rows classified by their pattern in one pass; the patterns of
    ``PATTERN_KERNEL_ROWS`` rows or more through the complete-data kernel on their
    observed features, the other rows one by one."""
    codes = mp.compiled.row_codes(X)
    if not codes.any():
        return mp.complete(X, mp.kp, block_index, weights)
    return mp.compiled.missing_block_statistics(
        X, codes, mp, block_index, weights, PATTERN_KERNEL_ROWS
    )


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
        lp = _marginal_rows(X[rows], mp).lp
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
        marg = _marginal_rows(X[rows], mp)
        K.normalize_in_place(marg.lp)
        mean = sum(marg.lp[:, k : k + 1] * xhat for k, xhat in enumerate(marg.filled))
        out[rows] = np.where(np.isnan(X[rows]), mean, X[rows])
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
        marg = _marginal_rows(X[rows], mp)
        K.normalize_in_place(marg.lp)
        chosen = _components(marg.lp, rng)
        for (group, idx), *inverses in zip(marg.groups, *marg.inverses, strict=True):
            for j in range(k):
                sel = chosen[group] == j
                here = group[sel]
                if not here.size or not idx.shape[1]:
                    continue
                factor = np.linalg.cholesky(inverses[j][sel])
                noise = np.einsum(
                    "rab,rb->ra", factor, rng.standard_normal((here.size, idx.shape[1]))
                )
                cols = idx[sel]
                values = np.take_along_axis(marg.filled[j][here], cols, axis=1)
                out[rows[here][:, None], cols] = values + noise
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
