"""Initialisation strategies that scale: a uniform row sample, then seeds from it.

One pass draws a uniform sample of rows (seeded per block). ``k-means++`` and
``random_from_data`` pick the means among the sampled rows (covariances ``reg_covar``,
as scikit-learn's single-point components); ``kmeans`` runs k-means++ then Lloyd
iterations on the sample, then one full pass of hard assignments gives the weights,
means and covariances; ``random`` makes one full pass with uniform random
responsibilities.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from daskgmm import _kernels as K

logger = logging.getLogger(__name__)

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")


@dataclass(frozen=True)
class Sample:
    """A uniform sample of rows and what the sampling pass learnt about the data."""

    rows: np.ndarray  # (m, d) float64
    n_samples: int
    weights: np.ndarray | None = None  # (m,) row weights; None when unweighted
    # Where ``rows`` had missing values (filled in: nan_policy='marginalize').
    missing: np.ndarray | None = None


def sample_rate(size: int, n_samples: int | None) -> float:
    """Probability a row gets a key small enough to be a candidate.

    Large enough that, with overwhelming probability, at least ``size`` rows qualify
    (mean ``size + 5·sqrt(size) + 10``); 1 when the row count is unknown.
    """
    if not n_samples:
        return 1.0
    return min(1.0, (size + 5.0 * math.sqrt(size) + 10.0) / n_samples)


def draw_sample(passes: object, seed: int, size: int, n_samples: int | None) -> dict:
    """One pass drawing a uniform sample of about ``size`` rows (see ``sample_block``).

    ``passes`` is a ``DataPasses``; returns the combined sample (rows, weights, row
    count and total weight).
    """
    spec = (seed, size, sample_rate(size, n_samples))
    return passes.run(K.sample_block, spec, "sample", K.combine_samples)


def sample_from_result(result: dict, weighted: bool) -> Sample:
    """The :class:`Sample` of a sampling pass's combined result.

    Raises
    ------
    ValueError
        Fewer than 2 rows in the data.
    """
    if result["n"] < 2:
        raise ValueError(
            f"Found array with {result['n']} sample(s) while a minimum of 2 is required"
        )
    logger.debug("initialisation sample of %d rows", result["rows"].shape[0])
    return Sample(
        np.asarray(result["rows"], dtype=np.float64),
        result["n"],
        result["weights"] if weighted else None,
    )


def kmeans_plusplus(
    S: np.ndarray,
    n_clusters: int,
    rng: np.random.RandomState,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii; scikit-learn's variant).

    Parameters
    ----------
    S : ndarray of shape (m, d)
        Rows to seed from (centred by the caller for accuracy).
    n_clusters : int
    rng : RandomState
    weights : ndarray of shape (m,), optional
        Row weights: the first seed is drawn in proportion to them and the D²
        potentials are weighted.

    Returns
    -------
    indices : ndarray of int of shape (n_clusters,)
    """
    m = S.shape[0]
    n_trials = 2 + int(np.log(n_clusters))
    sq_norms = np.einsum("ij,ij->i", S, S)
    indices = np.empty(n_clusters, dtype=np.int64)
    w = np.ones(m) if weights is None else weights
    if weights is None:
        indices[0] = rng.randint(m)
    else:
        indices[0] = rng.choice(m, p=w / w.sum())
    closest = _sq_dist(S, sq_norms, indices[:1])[0]
    potential = (closest * w).sum()
    for c in range(1, n_clusters):
        draws = rng.uniform(size=n_trials) * potential
        candidates = np.searchsorted(np.cumsum(closest * w), draws)
        np.clip(candidates, None, m - 1, out=candidates)
        dist = np.minimum(closest, _sq_dist(S, sq_norms, candidates))
        potentials = dist @ w
        best = int(np.argmin(potentials))
        indices[c] = candidates[best]
        closest, potential = dist[best], potentials[best]
    return indices


def _sq_dist(S: np.ndarray, sq_norms: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Squared distances (len(idx), m) from rows ``S[idx]`` to every row."""
    d2 = sq_norms[idx][:, None] - 2.0 * (S[idx] @ S.T) + sq_norms[None, :]
    return np.maximum(d2, 0.0)


def lloyd(
    S: np.ndarray,
    centers: np.ndarray,
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    weights: np.ndarray | None = None,
    missing: np.ndarray | None = None,
) -> np.ndarray:
    """Lloyd iterations of k-means on the rows ``S`` from ``centers``.

    Stops when the labels no longer change or the squared centre shift falls below
    ``tol`` times the mean feature variance (scikit-learn's tolerance). A centre that
    loses all its rows stays where it was. With ``weights`` the centres are weighted
    means. With ``missing`` (bool, the entries of ``S`` that were missing values,
    filled in by the caller), each iteration fills them from the row's centre first:
    k-means on the observed values (k-POD, Chi, Chi and Baraniuk 2016).
    """
    centers = centers.copy()
    threshold = tol * float(np.mean(np.var(S, axis=0)))
    given = S
    sq_norms = np.einsum("ij,ij->i", S, S)
    labels = None
    k = centers.shape[0]
    for _ in range(max_iter):
        if missing is not None and labels is not None:
            S = np.where(missing, centers[labels], given)
            sq_norms = np.einsum("ij,ij->i", S, S)
        d2 = (
            sq_norms[:, None]
            - 2.0 * (S @ centers.T)
            + np.einsum("ij,ij->i", centers, centers)
        )
        new_labels = d2.argmin(axis=1)
        if (
            missing is None
            and labels is not None
            and np.array_equal(labels, new_labels)
        ):
            break  # (with missing values the filled-in values still move the centres)
        labels = new_labels
        counts = np.bincount(labels, weights=weights, minlength=k)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, S if weights is None else S * weights[:, None])
        moved = counts > 0
        new_centers = centers.copy()
        new_centers[moved] = sums[moved] / counts[moved, None]
        shift = float(((new_centers - centers) ** 2).sum())
        centers = new_centers
        if shift <= threshold:
            break
    return centers


def fill_from_centers(
    rows: np.ndarray, missing: np.ndarray, centers: np.ndarray
) -> np.ndarray:
    """``rows`` with their missing entries (``missing``) taken from the centre
    nearest on the observed values."""
    d2 = np.stack(
        [(np.where(missing, 0.0, rows - c) ** 2).sum(axis=1) for c in centers], axis=1
    )
    return np.where(missing, centers[d2.argmin(axis=1)], rows)


def point_components(
    means: np.ndarray, covariance_type: str, reg_covar: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal weights, the given means and covariances ``reg_covar`` (one-point components)."""
    n_components, n_features = means.shape
    cov = {
        "full": np.broadcast_to(
            np.eye(n_features), (n_components, n_features, n_features)
        ),
        "tied": np.eye(n_features),
        "diag": np.ones((n_components, n_features)),
        "spherical": np.ones(n_components),
    }[covariance_type] * reg_covar
    weights = np.full(n_components, 1.0 / n_components)
    return weights, means.copy(), np.array(cov)


@dataclass(frozen=True)
class InitPlan:
    """What an initialisation still needs after its client-side work.

    Either ``params`` (weights, means, covariances) are final, or one full pass of
    ``kernel(block, kernel_params)`` over the data gives the statistics that
    :meth:`finish` turns into them. Plans of several initialisations (restarts, the
    candidates of a model sweep) can share that pass.
    """

    covariance_type: str
    reg_covar: float
    params: tuple | None = None
    kernel: Callable | None = None
    kernel_params: object = None
    name: str = ""
    shifts: np.ndarray | None = None

    def finish(self, stats: dict | None = None) -> tuple:
        """Weights, means and covariances (from the pass's ``stats`` if it needed one)."""
        if self.kernel is None:
            assert self.params is not None
            return self.params
        assert stats is not None and self.shifts is not None
        return K.m_step(stats, self.shifts, self.reg_covar, self.covariance_type)

    def counts(self, stats: dict | None = None) -> tuple:
        """Row counts, means and covariances of the initial responsibilities
        (scikit-learn's ``nk``, ``xk``, ``sk``, with its ``10 eps`` in ``nk``): a
        start chosen among rows (k-means++, random_from_data) is one row per
        component, covariance ``reg_covar``."""
        weights, means, covariances = self.finish(stats)
        if self.kernel is None:
            nk = np.ones(len(weights))
        else:
            nk = np.asarray(stats["nk"], dtype=np.float64)
        return nk + 10 * K.EPS, means, covariances


def plan_initial(
    method: str,
    sample: Sample,
    *,
    n_components: int,
    covariance_type: str,
    reg_covar: float,
    rng: np.random.RandomState,
) -> InitPlan:
    """The client-side part of the initialisation ``method`` (see :class:`InitPlan`).

    Parameters
    ----------
    method : {'kmeans', 'k-means++', 'random', 'random_from_data'}
    sample : Sample
    n_components, covariance_type, reg_covar : as the estimator
    rng : RandomState
        Client-side randomness (seeding, per-block seeds of the random pass).
    """
    rows = sample.rows
    w = sample.weights
    center = np.average(rows, axis=0, weights=w)
    centred = rows - center
    plan = InitPlan(covariance_type, reg_covar)
    if method in ("k-means++", "kmeans"):
        seeds = centred[kmeans_plusplus(centred, n_components, rng, w)]
        if method == "k-means++":
            return replace(
                plan,
                params=point_components(seeds + center, covariance_type, reg_covar),
            )
        centers = lloyd(centred, seeds, weights=w, missing=sample.missing) + center
        return replace(
            plan,
            kernel=K.hard_assign_block,
            kernel_params=(centers, covariance_type),
            name="init-kmeans",
            shifts=centers,
        )
    if method == "random_from_data":
        p = None if w is None else w / w.sum()
        idx = rng.choice(rows.shape[0], size=n_components, replace=False, p=p)
        return replace(
            plan, params=point_components(rows[idx], covariance_type, reg_covar)
        )
    seed = int(rng.randint(np.iinfo(np.int32).max))
    # Shift by a real row near the mean, not the mean itself: far from the origin
    # (1e150 + noise rounds every row to one value) a mean one ulp off every row
    # would make the shifted second moments cancel catastrophically.
    pivot = rows[int(np.argmin((centred**2).sum(axis=1)))]
    return replace(
        plan,
        kernel=K.random_resp_block,
        kernel_params=(seed, n_components, pivot, covariance_type),
        name="init-random",
        shifts=np.broadcast_to(pivot, (n_components, pivot.size)),
    )


def plan_statistics(
    passes: object, plans: list[InitPlan], extra: list[tuple] = ()
) -> tuple[list[dict | None], list]:
    """The pass statistics of the plans that need one (None for the others) and the
    results of ``extra`` ``(kernel, params, combine)`` calls, in one pass over
    ``passes`` (none when nothing needs one)."""
    pending = [i for i, plan in enumerate(plans) if plan.kernel is not None]
    calls = [
        (plans[i].kernel, plans[i].kernel_params, K.combine_stats) for i in pending
    ]
    stats: list[dict | None] = [None] * len(plans)
    if not calls and not extra:
        return stats, []
    names = {plans[i].name for i in pending}
    name = names.pop() if len(names) == 1 and not extra else "init"
    results = passes.run_many([*calls, *extra], name)
    for i, result in zip(pending, results, strict=False):
        stats[i] = result
    return stats, list(results[len(calls) :])


def run_plans(passes: object, plans: list[InitPlan]) -> list[tuple]:
    """Finish initialisation plans; those needing a pass share one (``passes``)."""
    stats, _ = plan_statistics(passes, plans)
    return [plan.finish(s) for plan, s in zip(plans, stats, strict=True)]
