"""The initialisation layer (:mod:`daskgmm._init`).

References: scikit-learn's ``kmeans_plusplus`` (same draws from the same
RandomState), Lloyd's algorithm in NumPy brute force (``scipy.spatial.distance.cdist``
assignments, ``np.average`` centres), and hard-assignment statistics by
``np.average``/``np.cov`` of the labelled rows.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.spatial.distance import cdist
from sklearn.cluster import kmeans_plusplus as sklearn_kmeans_plusplus

from daskgmm._em import DataPasses
from daskgmm._init import (
    draw_sample,
    kmeans_plusplus,
    lloyd,
    plan_initial,
    run_plans,
    sample_from_result,
)
from tests.conftest import four_blobs

REG = 1e-6


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return four_blobs(n_per=60, seed=1)[0]


@pytest.mark.parametrize("k", [1, 2, 4, 9])
def test_kmeans_plusplus_draws_scikit_learns_seeds(rows, k):
    got = kmeans_plusplus(rows, k, np.random.RandomState(3), np.ones(len(rows)))
    centers, want = sklearn_kmeans_plusplus(
        rows, k, random_state=np.random.RandomState(3)
    )
    assert_array_equal(got, want)
    assert_array_equal(rows[got], centers)


def test_kmeans_plusplus_picks_distinct_sample_rows_reproducibly(rows):
    a = kmeans_plusplus(rows, 6, np.random.RandomState(0))
    b = kmeans_plusplus(rows, 6, np.random.RandomState(0))
    c = kmeans_plusplus(rows, 6, np.random.RandomState(1))
    assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype.kind == "i" and len(set(a.tolist())) == 6
    assert ((a >= 0) & (a < len(rows))).all()
    # Rows of zero weight are never picked.
    w = np.zeros(len(rows))
    w[::5] = 1.0
    for seed in range(5):
        picked = kmeans_plusplus(rows, 4, np.random.RandomState(seed), w)
        assert (w[picked] > 0).all()


def brute_force_lloyd(S, centers, weights=None):
    """Lloyd's algorithm until the labels no longer change."""
    centers = centers.copy()
    labels = None
    while True:
        new = cdist(S, centers, "sqeuclidean").argmin(axis=1)
        if labels is not None and np.array_equal(new, labels):
            return centers, labels
        labels = new
        for j in range(len(centers)):
            mine = labels == j
            w = None if weights is None else weights[mine]
            if mine.any() and (w is None or w.sum() > 0):
                centers[j] = np.average(S[mine], axis=0, weights=w)


@pytest.mark.parametrize("weighted", [False, True])
def test_lloyd_converges_to_the_brute_force_result(rows, weighted):
    rng = np.random.RandomState(4)
    weights = rng.randint(1, 5, size=len(rows)).astype(float) if weighted else None
    start = rows[[0, 1, 2, 3]] + 0.1  # all in the first blob: many iterations
    got = lloyd(rows, start, tol=0.0, weights=weights)
    want, labels = brute_force_lloyd(rows, start, weights)
    assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert len(np.unique(labels)) == 4


def test_lloyd_keeps_a_centre_without_rows():
    S = np.array([[0.0], [1.0], [10.0], [11.0]])
    start = np.array([[0.0], [10.0], [1e6]])
    assert_allclose(lloyd(S, start), [[0.5], [10.5], [1e6]])


def test_sample_from_result_refuses_fewer_than_two_rows():
    with pytest.raises(ValueError, match="Found array with 1 sample"):
        sample_from_result({"n": 1, "rows": np.zeros((1, 2)), "weights": None}, False)
    result = {"n": 5, "rows": np.ones((2, 2), np.float32), "weights": np.ones(2)}
    sample = sample_from_result(result, weighted=False)
    assert sample.rows.dtype == np.float64 and sample.weights is None
    assert sample.n_samples == 5
    assert sample_from_result(result, weighted=True).weights is result["weights"]


def _sample(X: np.ndarray, size: int):
    passes = DataPasses(da.from_array(X, chunks=(47, X.shape[1])), 4)
    return passes, sample_from_result(draw_sample(passes, 7, size, len(X)), False)


def test_a_sample_as_big_as_the_data_is_every_row_in_order(rows):
    _, sample = _sample(rows, len(rows) + 10)
    assert_array_equal(sample.rows, rows)
    assert sample.n_samples == len(rows)
    _, part = _sample(rows, 50)
    assert part.rows.shape == (50, rows.shape[1])
    # Every sampled row is a row of the data.
    assert (cdist(part.rows, rows).min(axis=1) == 0).all()


@pytest.mark.parametrize("method", ["k-means++", "random_from_data"])
def test_point_initialisations_put_the_means_on_sample_rows(rows, method):
    _, sample = _sample(rows, 100)
    plan = plan_initial(
        method,
        sample,
        n_components=4,
        covariance_type="diag",
        reg_covar=REG,
        rng=np.random.RandomState(0),
    )
    assert plan.kernel is None
    weights, means, cov = plan.finish()
    assert_allclose(weights, 0.25)
    assert (cdist(means, sample.rows).min(axis=1) < 1e-9).all()
    assert_array_equal(cov, np.full((4, rows.shape[1]), REG))


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_kmeans_initialisation_is_the_hard_assignment_statistics(rows, ctype):
    passes, sample = _sample(rows, len(rows))

    def kmeans_plan():
        return plan_initial(
            "kmeans",
            sample,
            n_components=4,
            covariance_type=ctype,
            reg_covar=REG,
            rng=np.random.RandomState(0),
        )

    plan = kmeans_plan()
    centers = plan.kernel_params[0]
    ((weights, means, cov),) = run_plans(passes, [plan])
    labels = cdist(rows, centers, "sqeuclidean").argmin(axis=1)
    assert len(np.unique(labels)) == 4
    assert_allclose(weights, np.bincount(labels) / len(rows), rtol=1e-12)
    for j in range(4):
        mine = rows[labels == j]
        assert_allclose(means[j], mine.mean(axis=0), rtol=1e-12, atol=1e-12)
        want = np.cov(mine, rowvar=False, bias=True) + REG * np.eye(rows.shape[1])
        if ctype == "diag":
            want = np.diag(want)
        assert_allclose(cov[j], want, rtol=1e-10, atol=1e-12)
    # Two plans share one pass and give what each gives alone.
    again = kmeans_plan()
    shared = run_plans(passes, [plan, again])
    for a, b in zip(shared[0] + shared[1], (weights, means, cov) * 2, strict=True):
        assert_array_equal(a, b)
