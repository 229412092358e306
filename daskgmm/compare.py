"""Soft versus hard clustering: a fitted mixture compared with k-means on the same data.

k-means runs on every row (Lloyd iterations, one tree-reduced pass each, from
k-means++ seeds on a uniform sample); one more pass counts, for every row, the
mixture's label against the k-means label (a contingency table) and whether the
mixture's assignment is uncertain (largest responsibility below a threshold). From the
table come the adjusted Rand index and the share of rows on which both agree once
the labels are matched one to one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskgmm import _kernels as K
from daskgmm._em import DataPasses
from daskgmm._init import (
    draw_sample,
    kmeans_plusplus,
    lloyd,
    sample_from_result,
)
from daskgmm._plan import plan_score
from daskgmm._validation import check_random_state
from daskgmm.fitted import as_fitted, check_rows, kernel_params

logger = logging.getLogger(__name__)

UNCERTAIN_BELOW = 0.9


@dataclass(frozen=True)
class KMeansResult:
    """k-means on every row of the data."""

    centers: np.ndarray
    inertia: float
    n_iter: int
    converged: bool


def kmeans(
    passes: DataPasses,
    n_clusters: int,
    *,
    random_state: Any = None,
    max_iter: int = 100,
    tol: float = 1e-4,
    sample_size: int = 50_000,
) -> KMeansResult:
    """Lloyd's k-means over all rows, one pass per iteration.

    Seeds: k-means++ then Lloyd on a uniform sample (one pass draws it). Stops when
    the centres move less than ``tol`` times the mean feature variance (squared
    distance, summed over centres; scikit-learn's rule) or after ``max_iter`` passes.
    A centre that loses all its rows stays where it was.
    """
    rng = check_random_state(random_state)
    size = max(sample_size, n_clusters)
    seed = int(rng.randint(np.iinfo(np.int32).max))
    result = draw_sample(passes, seed, size, None)
    sample = sample_from_result(result, passes.weights is not None)
    if sample.n_samples < n_clusters:
        raise ValueError(
            f"k-means needs at least {n_clusters} rows, the data have {sample.n_samples}"
        )
    center = np.average(sample.rows, axis=0, weights=sample.weights)
    centred = sample.rows - center
    seeds = centred[kmeans_plusplus(centred, n_clusters, rng, sample.weights)]
    centers = lloyd(centred, seeds, weights=sample.weights) + center
    variance = np.average(centred**2, axis=0, weights=sample.weights).mean()
    threshold = tol * variance
    inertia = math.inf
    converged = False
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        stats = passes.stats(K.hard_assign_block, (centers, "diag"), "kmeans")
        inertia = float(stats["s2"].sum())
        nk = stats["nk"]
        moved = np.where(
            nk[:, None] > 0, stats["s1"] / np.maximum(nk, 1e-300)[:, None], 0
        )
        centers = centers + moved
        shift = float((moved**2).sum())
        if shift <= threshold:
            converged = True
            break
    logger.info(
        "k-means: %d iterations, inertia %.6g%s",
        n_iter,
        inertia,
        "" if converged else " (did not converge)",
    )
    return KMeansResult(centers, inertia, n_iter, converged)


@K.quiet
def agreement_block(
    X: np.ndarray,
    spec: tuple[K.KernelParams, np.ndarray, float],
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """Contingency of mixture labels against nearest-centre labels, and uncertain rows.

    ``spec`` is ``(kernel params of the mixture, k-means centres, threshold)``.
    Rows are counted (weights only decide nothing here: a row is a row).
    """
    kp, centers, threshold = spec
    n, d = X.shape
    k_gmm, k_km = kp.n_components, centers.shape[0]
    table = np.zeros((k_gmm, k_km))
    uncertain = 0
    stats = {"n": n, "n_bad": 0, "n_bad_weights": 0, "first_bad": None}
    K.row_weights(weights, n, stats)
    shifts = centers - kp.center
    rows = K.subblock_rows(max(k_gmm, k_km), d)
    for start in range(0, n, rows):
        x0 = K.centred(X[start : start + rows], kp.center)
        resp = K.weighted_log_prob(x0, kp)
        _, ok = K.normalize_in_place(resp)
        if not ok.all():
            K.note_bad_rows(stats, ok, start, block_index)
        dist = ((x0[:, None, :] - shifts) ** 2).sum(axis=2)
        gmm_labels = resp.argmax(axis=1)[ok]
        km_labels = dist.argmin(axis=1)[ok]
        table += np.bincount(
            gmm_labels * k_km + km_labels, minlength=k_gmm * k_km
        ).reshape(k_gmm, k_km)
        uncertain += int((resp.max(axis=1)[ok] < threshold).sum())
    stats["table"] = table
    stats["uncertain"] = uncertain
    return stats


def combine_agreement(*parts: dict) -> dict:
    """Sum :func:`agreement_block` results in a fixed order."""
    out = dict(parts[0])
    out["table"] = parts[0]["table"].copy()
    for part in parts[1:]:
        out["table"] += part["table"]
        for key in ("n", "w", "n_bad", "n_bad_weights", "uncertain"):
            out[key] += part[key]
        if out["first_bad"] is None:
            out["first_bad"] = part["first_bad"]
    return out


def _pairs(x: np.ndarray) -> float:
    return float((x * (x - 1) / 2).sum())


def adjusted_rand_index(table: np.ndarray) -> float:
    """Adjusted Rand index of two labellings from their contingency table."""
    n = table.sum()
    if n < 2:
        return 1.0
    index = _pairs(table)
    rows, cols = _pairs(table.sum(axis=1)), _pairs(table.sum(axis=0))
    expected = rows * cols / (n * (n - 1) / 2)
    best = (rows + cols) / 2
    if best == expected:
        return 1.0
    return float((index - expected) / (best - expected))


def matched_agreement(table: np.ndarray) -> float:
    """Share of rows with the same label once labels are matched one to one."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-table)
    total = table.sum()
    return float(table[rows, cols].sum() / total) if total else 1.0


def compare_with_kmeans(
    model: Any,
    X: Any,
    *,
    random_state: Any = None,
    threshold: float = UNCERTAIN_BELOW,
    max_iter: int = 100,
) -> dict:
    """How the fitted mixture's soft clustering of ``X`` relates to k-means'.

    Parameters
    ----------
    model : fitted GaussianMixture
    X : array-like or dask array of shape (n_samples, n_features)
    random_state : int, RandomState or None
        Seeds of k-means.
    threshold : float, default=0.9
        A row's mixture assignment is uncertain when its largest responsibility is
        below this.
    max_iter : int, default=100
        Lloyd iterations at most.

    Returns
    -------
    dict
        ``kmeans_adjusted_rand_index`` and ``kmeans_agreement`` (share of rows with
        matched labels) between the mixture's and k-means' labels,
        ``uncertain_share``, ``kmeans_inertia``, ``kmeans_iterations``,
        ``kmeans_converged``, ``kmeans_centers`` and the ``contingency`` table
        (mixture components in rows, k-means clusters in columns).
    """
    fm = as_fitted(model)
    passes = plan_score(
        check_rows(fm, X),
        nan_policy=getattr(model, "nan_policy", "raise"),
        split_every=getattr(model, "split_every", 16),
        kernel=getattr(model, "kernel", "auto"),
    ).passes
    km = kmeans(
        passes, int(fm.n_components), random_state=random_state, max_iter=max_iter
    )
    result = passes.run(
        agreement_block,
        (kernel_params(fm), km.centers, threshold),
        "agreement",
        combine_agreement,
    )
    table = result["table"]
    n = int(result["n"])
    return {
        "kmeans_iterations": km.n_iter,
        "kmeans_converged": km.converged,
        "kmeans_inertia": km.inertia,
        "kmeans_centers": km.centers.tolist(),
        "kmeans_adjusted_rand_index": adjusted_rand_index(table),
        "kmeans_agreement": matched_agreement(table),
        "uncertain_share": result["uncertain"] / n if n else math.nan,
        "uncertain_below": threshold,
        "contingency": table.astype(np.int64).tolist(),
    }
