"""Sample weights: integer weights equal repeated rows, equal weights change nothing."""

from __future__ import annotations

import re

import dask.array as da
import numpy as np
import pytest

from daskgmm import GaussianMixture
from daskgmm import _kernels as K

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = np.vstack(
        [
            rng.normal(size=(200, 3)),
            rng.normal(size=(150, 3)) * [1.0, 2.0, 0.5] + [6.0, 0.0, 3.0],
            rng.normal(size=(150, 3)) + np.array([0.0, 7.0, -4.0]),
        ]
    )
    return X, rng.integers(0, 4, size=len(X))


def _start(X: np.ndarray, covariance_type: str) -> dict:
    ref = GaussianMixture(
        3, covariance_type=covariance_type, max_iter=1, random_state=1
    )
    with pytest.warns(match="did not converge"):
        ref.fit(X)
    return {
        "weights_init": ref.weights_,
        "means_init": ref.means_,
        "precisions_init": ref.precisions_,
    }


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_rows(data, covariance_type):
    X, w = data
    init = _start(X, covariance_type)
    params = dict(n_components=3, covariance_type=covariance_type, tol=1e-10, **init)
    weighted = GaussianMixture(max_iter=200, **params).fit(X, sample_weight=w)
    repeated = GaussianMixture(max_iter=200, **params).fit(np.repeat(X, w, axis=0))
    assert weighted.n_iter_ == repeated.n_iter_
    np.testing.assert_allclose(
        weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-10
    )
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            getattr(weighted, name), getattr(repeated, name), rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_equal_weights_change_nothing(data, covariance_type):
    X, _ = data
    init = _start(X, covariance_type)
    params = dict(n_components=3, covariance_type=covariance_type, **init)
    plain = GaussianMixture(**params).fit(X)
    weighted = GaussianMixture(**params).fit(X, sample_weight=np.full(len(X), 2.5))
    np.testing.assert_allclose(weighted.lower_bound_, plain.lower_bound_, rtol=1e-12)
    np.testing.assert_allclose(weighted.covariances_, plain.covariances_, rtol=1e-10)


def test_dask_weights_with_other_chunks_are_aligned(data):
    X, w = data
    init = _start(X, "full")
    numpy_fit = GaussianMixture(3, max_iter=5, tol=0, **init)
    with pytest.warns(match="did not converge"):
        numpy_fit.fit(X, sample_weight=w)
    dask_fit = GaussianMixture(3, max_iter=5, tol=0, **init)
    with pytest.warns(match="did not converge"):
        dask_fit.fit(
            da.from_array(X, chunks=(120, 3)),
            sample_weight=da.from_array(w.astype(float), chunks=77),
        )
    np.testing.assert_allclose(
        dask_fit.lower_bound_, numpy_fit.lower_bound_, rtol=1e-12
    )
    np.testing.assert_allclose(dask_fit.means_, numpy_fit.means_, rtol=1e-10)


def test_rows_of_weight_zero_are_ignored_from_initialisation_on(data):
    X, _ = data
    outliers = np.full((40, 3), 1e4)
    w = np.concatenate([np.ones(len(X)), np.zeros(len(outliers))])
    for init_params in ("kmeans", "k-means++", "random_from_data", "random"):
        model = GaussianMixture(3, init_params=init_params, random_state=0, tol=1e-6)
        model.fit(np.vstack([X, outliers]), sample_weight=w)
        # No component is pulled to the outliers (any local optimum of the clean
        # rows is acceptable for the random initialisations).
        assert np.abs(model.means_).max() < 20, init_params
    model = GaussianMixture(3, random_state=0, tol=1e-6)
    model.fit(np.vstack([X, outliers]), sample_weight=w)
    clean = GaussianMixture(3, random_state=0, tol=1e-6).fit(X)
    np.testing.assert_allclose(
        np.sort(model.means_[:, 0]), np.sort(clean.means_[:, 0]), atol=0.05
    )


def test_weighted_statistics_kernel_equals_brute_force():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(97, 2))
    w = rng.random(97) * 3
    means = rng.normal(size=(2, 2))
    prec_chol = K.precision_cholesky_from_covariances(np.stack([np.eye(2)] * 2), "full")
    kp = K.prepare(np.array([0.4, 0.6]), means, prec_chol, "full")
    stats = K.estep_block(X, kp, 0, w)
    plain = [K.estep_block(X[i : i + 1], kp) for i in range(len(X))]
    np.testing.assert_allclose(
        stats["nk"], sum(p["nk"] * wi for p, wi in zip(plain, w, strict=True))
    )
    np.testing.assert_allclose(
        stats["s2"], sum(p["s2"] * wi for p, wi in zip(plain, w, strict=True))
    )
    np.testing.assert_allclose(
        stats["loglik"], sum(p["loglik"] * wi for p, wi in zip(plain, w, strict=True))
    )
    assert stats["w"] == pytest.approx(w.sum())
    assert stats["n"] == 97


@pytest.mark.parametrize(
    ("weights", "error", "message"),
    [
        ([-1.0] + [1.0] * 499, ValueError, "sample_weight has 1 negative, NaN or infinite value(s); weights must be finite and >= 0"),
        ([np.nan, np.inf] + [1.0] * 498, ValueError, "sample_weight has 2 negative, NaN or infinite value(s)"),
        ([0.0] * 500, ValueError, "sample_weight sums to zero; give at least one row a positive weight"),
        ([1.0] * 10, ValueError, "sample_weight has 10 values but X has 500 rows"),
        ([[1.0] * 500], ValueError, "sample_weight must be 1-D of shape (n_samples,), got shape (1, 500)"),
        (["a"] * 500, TypeError, "sample_weight must hold numbers, got dtype <U1"),
    ],
)  # fmt: skip
def test_bad_weights_raise_clear_errors(data, weights, error, message):
    X, _ = data
    with pytest.raises(error, match=re.escape(message)):
        GaussianMixture(3, random_state=0).fit(X, sample_weight=np.array(weights))


def test_score_bic_aic_with_integer_weights_equal_repeated_rows(data):
    X, w = data
    model = GaussianMixture(3, random_state=0).fit(X, sample_weight=w)
    repeated = np.repeat(X, w, axis=0)
    np.testing.assert_allclose(
        model.score(X, sample_weight=w), model.score(repeated), rtol=1e-12
    )
    np.testing.assert_allclose(
        model.bic(X, sample_weight=w), model.bic(repeated), rtol=1e-12
    )
    np.testing.assert_allclose(
        model.aic(da.from_array(X, chunks=100), sample_weight=w),
        model.aic(repeated),
        rtol=1e-12,
    )
    # Unweighted: the number of rows is the sample size; 3 full components in d
    # features have 3 d(d+1)/2 covariance, 3 d mean and 2 weight parameters.
    d = X.shape[1]
    n_parameters = 3 * d * (d + 1) // 2 + 3 * d + 2
    np.testing.assert_allclose(
        model.bic(X),
        -2 * model.score_samples(X).sum() + n_parameters * np.log(len(X)),
        rtol=1e-12,
    )
