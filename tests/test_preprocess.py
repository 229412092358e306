"""Feature preprocessing (``daskgmm._preprocess``) against independent references.

Moments are checked against NumPy on the whole array (and exact rational arithmetic)
over many chunkings; mapped mixture parameters against ``scipy.stats`` log-densities
through the change of variables; the log1p Jacobian against scipy's log-normal.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import dask.array as da
import numpy as np
import pytest
from dask.base import tokenize
from scipy.special import logsumexp
from scipy.stats import lognorm, multivariate_normal, norm
from sklearn.metrics import adjusted_rand_score

from daskgmm import GaussianMixture
from daskgmm import _kernels as K
from daskgmm import _preprocess as P
from daskgmm._em import DataPasses
from daskgmm._reduce import map_rows, tree_reduce
from tests.conftest import full_covariances

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
CHUNKINGS = {
    "one block": (200,),
    "even": (50, 50, 50, 50),
    "ragged": (1, 7, 64, 3, 125),
    "with empty blocks": (0, 30, 0, 0, 100, 70, 0),
    "single rows first": (1, 1, 1, 1, 196),
}

###############################################################################
# Helpers


def summarize_moments(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Mean, variance (ddof 0), min, max, rows and weight from reduced moments."""
    weight = stats["weight"]
    var = stats["m2"] / weight if weight > 0 else np.full_like(stats["m2"], np.nan)
    return {
        "mean": stats["mean"],
        "var": var,
        "min": stats["min"],
        "max": stats["max"],
        "count": stats["count"],
        "weight": weight,
    }


def table(rng: np.random.Generator, n: int = 200, offset: float = 0.0) -> np.ndarray:
    """Columns of very different scales and locations, all > -1 (log1p-able)."""
    X = rng.normal(size=(n, 4)) * np.array([1.0, 1e-3, 1e4, 0.5])
    X[:, 3] = rng.lognormal(size=n)  # skewed, positive: a log1p candidate
    return X + offset


def reduced_moments(
    X: np.ndarray,
    chunks: tuple[int, ...],
    log1p: tuple[int, ...] = (),
    weights: np.ndarray | None = None,
    split_every: int = 2,
) -> dict:
    """:func:`P.moments_block` over dask row blocks, tree-combined by ``tree_reduce``."""
    Xd = da.from_array(X, chunks=(chunks, X.shape[1]))
    wd = None if weights is None else da.from_array(weights, chunks=(chunks,))
    graph = tree_reduce(
        Xd,
        P.moments_block,
        log1p,
        P.combine_moments,
        name="moments",
        split_every=split_every,
        weights=wd,
    )
    return graph.compute(scheduler="sync")


def assert_moments_match(stats: dict, Y: np.ndarray, w: np.ndarray | None = None):
    """Mean, variance (ddof 0), min and max of ``stats`` equal NumPy's on ``Y``.

    NumPy's two-pass variance runs on ``Y − Y[0]`` (exact for data far from 0,
    Sterbenz): on ``Y`` itself its mean, rounded to the float64 grid at 1e9
    (1.2e-7), would put a relative error of ~1e-9 on a column of spread 1e-3.
    """
    summary = summarize_moments(stats)
    positive = slice(None) if w is None else w > 0
    D = Y - Y[positive][0]
    dmean = np.average(D, axis=0, weights=w)
    mean = Y[positive][0] + dmean
    var = np.average((D - dmean) ** 2, axis=0, weights=w)
    np.testing.assert_allclose(summary["mean"], mean, rtol=1e-12, atol=0)
    np.testing.assert_allclose(summary["var"], var, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(summary["min"], Y[positive].min(axis=0))
    np.testing.assert_array_equal(summary["max"], Y[positive].max(axis=0))


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.3 * np.eye(d)


def random_mixture(rng: np.random.Generator, k: int, d: int, ctype: str) -> tuple:
    """Weights, means, covariances and precision factors of a mixture on z."""
    weights = rng.dirichlet(np.full(k, 2.0))
    means = rng.normal(scale=2.0, size=(k, d))
    cov = {
        "full": lambda: np.stack([random_spd(rng, d) for _ in range(k)]),
        "tied": lambda: random_spd(rng, d),
        "diag": lambda: rng.uniform(0.2, 3.0, size=(k, d)),
        "spherical": lambda: rng.uniform(0.2, 3.0, size=k),
    }[ctype]()
    return weights, means, cov, K.precision_cholesky_from_covariances(cov, ctype)


def scipy_log_density(Y: np.ndarray, weights, means, cov, ctype) -> np.ndarray:
    """log Σ_k π_k N(y | μ_k, Σ_k) by scipy.stats."""
    k, d = means.shape
    dense = full_covariances(cov, ctype, k, d)
    parts = [
        np.log(weights[j]) + multivariate_normal(means[j], dense[j]).logpdf(Y)
        for j in range(k)
    ]
    return logsumexp(np.stack(parts, axis=1), axis=1)


def scaling_for(ctype: str, log1p: tuple[int, ...] = ()) -> P.Scaling:
    """Scales from 0.05 to 40 (one common scale for spherical), offsets of a few
    scales: scipy's multivariate_normal refuses covariances of condition > ~1e8 as
    singular, and float64 keeps ~|offset / scale| · eps of the scaled values."""
    scale = np.full(3, 2.5) if ctype == "spherical" else np.array([0.05, 1.0, 40.0])
    return P.Scaling("standard", log1p, scale * [10.0, -2.0, 75.0], scale)


###############################################################################
# Moments pass


@pytest.mark.parametrize("offset", [0.0, 1e9])
@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_moments_match_numpy_for_any_chunking(chunks, offset):
    X = table(np.random.default_rng(0), offset=offset)
    stats = reduced_moments(X, chunks)
    assert stats["n"] == stats["count"] == 200
    assert stats["n_bad"] == 0 and stats["first_bad"] is None
    assert_moments_match(stats, X)


@pytest.mark.parametrize("offset", [0.0, 1e9])
@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_weighted_moments_match_numpy_for_any_chunking(chunks, offset):
    rng = np.random.default_rng(1)
    X = table(rng, offset=offset)
    w = rng.uniform(0.0, 3.0, size=200)
    w[::9] = 0.0
    X[9] += 1e6  # weight 0: left out of the moments, the min and the max
    stats = reduced_moments(X, chunks, weights=w)
    assert stats["weight"] == pytest.approx(w.sum(), rel=1e-14)
    assert_moments_match(stats, X, w)


def test_moments_far_from_origin_are_exact_to_rounding():
    """At 1e9 with unit spread the naive Σx²/n − mean² loses every digit; the merged
    moments keep the variance to a few ulps of the exact rational value."""
    X = np.random.default_rng(2).normal(size=(300, 2)) + 1e9
    stats = reduced_moments(X, (17, 100, 0, 183))
    var = summarize_moments(stats)["var"]
    for j in range(2):
        col = [Fraction(v) for v in X[:, j]]
        mean = sum(col) / len(col)
        exact = sum((c - mean) ** 2 for c in col) / len(col)
        assert abs(float((Fraction(var[j]) - exact) / exact)) < 1e-14
    naive = (X**2).mean(axis=0) - X.mean(axis=0) ** 2
    assert np.all(np.abs(naive / X.var(axis=0) - 1) > 1e-3)


def test_moments_do_not_depend_on_how_blocks_are_grouped():
    X = table(np.random.default_rng(3), offset=1e9)
    parts = [
        P.moments_block(X[a:b], (3,), i)
        for i, (a, b) in enumerate([(0, 40), (40, 41), (41, 41), (41, 200)])
    ]
    flat = P.combine_moments(*parts)
    nested = P.combine_moments(
        P.combine_moments(parts[0], parts[1]), P.combine_moments(parts[2], parts[3])
    )
    for key in ("mean", "m2", "min", "max"):
        np.testing.assert_allclose(flat[key], nested[key], rtol=1e-13)
    assert flat["count"] == nested["count"] == 200


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(4)
    X = table(rng)
    counts = rng.integers(0, 4, size=200)
    weighted = summarize_moments(reduced_moments(X, (60, 140), weights=counts * 1.0))
    repeated = summarize_moments(
        reduced_moments(np.repeat(X, counts, axis=0), (int(counts.sum()),))
    )
    for key in ("mean", "var", "min", "max"):
        np.testing.assert_allclose(weighted[key], repeated[key], rtol=1e-12)


def test_moments_sub_blocks_a_large_block():
    """A block longer than one sub-block merges its sub-blocks like separate blocks."""
    X = np.random.default_rng(5).normal(size=(300_000, 2)) * [1.0, 1e5] + 1e8
    stats = P.moments_block(X, ())
    assert stats["count"] == 300_000
    assert_moments_match(stats, X)


def test_moments_apply_log1p_first():
    X = table(np.random.default_rng(6))
    stats = reduced_moments(X, (50, 150), log1p=(3,))
    Y = X.copy()
    Y[:, 3] = np.log1p(Y[:, 3])
    assert stats["log1p"] == (3,)
    assert_moments_match(stats, Y)


def test_non_finite_rows_are_counted_located_and_left_out():
    X = table(np.random.default_rng(7))
    X[13, 1] = np.nan
    X[150, 0] = np.inf
    stats = reduced_moments(X, (10,) * 20)
    assert stats["n_bad"] == 2
    assert stats["first_bad"] == (1, 3)
    assert stats["count"] == 198 and stats["n"] == 200
    assert_moments_match(stats, np.delete(X, [13, 150], axis=0))
    passes = DataPasses(da.from_array(X, chunks=(10, 4)), split_every=4)
    with pytest.raises(
        ValueError,
        match=r"^Input X contains NaN or infinity \(or values too large for float64\) "
        r"in 2 row\(s\) \(first at row 13\); drop or impute",
    ):
        passes.run(P.moments_block, (), "moments", P.combine_moments)


def test_log1p_values_at_or_below_minus_one_are_counted_and_refused():
    X = table(np.random.default_rng(8))
    X[12, 3] = -1.0
    X[25, 3] = -3.0
    X[30, 3] = np.nan  # a NaN is reported as a NaN, not as a log1p problem
    stats = reduced_moments(X, (10,) * 20, log1p=(3,))
    assert stats["n_bad_log1p"].tolist() == [2]
    assert stats["first_bad_log1p"] == (1, 2, 3)
    assert stats["n_bad"] == 1
    assert stats["count"] == 197
    with pytest.raises(
        ValueError,
        match=r"^log1p column 3 has 2 value\(s\) <= -1 \(first in row block 1, row 2 "
        r"of the block\); log1p needs values > -1",
    ):
        P.fit_scaling(stats, "standard", (3,))
    offsets = np.arange(0, 200, 10)
    with pytest.raises(ValueError, match=r"\(first at row 12\)"):
        P.fit_scaling(stats, "none", (3,), row_offsets=offsets)


def test_bad_weights_are_counted_like_the_em_passes():
    X = table(np.random.default_rng(9))
    w = np.ones(200)
    w[[4, 5]] = [-1.0, np.nan]
    stats = reduced_moments(X, (100, 100), weights=w)
    assert stats["n_bad_weights"] == 2
    assert stats["count"] == 198
    passes = DataPasses(
        da.from_array(X, chunks=(100, 4)),
        split_every=2,
        weights=da.from_array(w, chunks=100),
    )
    with pytest.raises(ValueError, match=r"^sample_weight has 2 negative, NaN or inf"):
        passes.run(P.moments_block, (), "moments", P.combine_moments)


###############################################################################
# Fitting the scaling


@pytest.mark.parametrize("weighted", [False, True])
def test_fit_scaling_standard_minmax_none(weighted):
    rng = np.random.default_rng(10)
    X = table(rng, offset=1e9)
    w = rng.uniform(0.5, 2.0, size=200) if weighted else None
    stats = reduced_moments(X, (70, 130), log1p=(3,), weights=w)
    Y = X.copy()
    Y[:, 3] = np.log1p(Y[:, 3])
    D = Y - Y[0]  # exact far from 0 (see assert_moments_match)
    dmean = np.average(D, axis=0, weights=w)
    mean = Y[0] + dmean
    std = np.sqrt(np.average((D - dmean) ** 2, axis=0, weights=w))

    standard = P.fit_scaling(stats, "standard", (3,))
    np.testing.assert_allclose(standard.offset, mean, rtol=1e-14)
    np.testing.assert_allclose(standard.scale, std, rtol=1e-12)
    Z = P.transform_block(X, standard)
    # The offset is one float64: at 1e9 it is rounded by up to half a spacing
    # (6e-8), 6e-5 of the column of spread 1e-3.
    bias = np.abs(np.average(Z, axis=0, weights=w))
    assert np.all(bias <= np.spacing(standard.offset) / standard.scale + 1e-12)
    np.testing.assert_allclose(np.average(Z**2, axis=0, weights=w), 1.0, rtol=1e-6)

    minmax = P.fit_scaling(stats, "minmax", (3,))
    Z = P.transform_block(X, minmax)
    np.testing.assert_array_equal(Z.min(axis=0), 0.0)
    np.testing.assert_allclose(Z.max(axis=0), 1.0, rtol=1e-15)

    none = P.fit_scaling(stats, "none", (3,))
    assert none == P.Scaling.identity(4, (3,))
    np.testing.assert_array_equal(P.transform_block(X, none), Y)


@pytest.mark.parametrize("method", ["standard", "minmax"])
def test_constant_column_gets_scale_one(method):
    X = table(np.random.default_rng(11))
    X[:, 1] = 1e9 + 0.1  # constant, far from 0, not a round binary number
    stats = reduced_moments(X, (3, 97, 100))
    scaling = P.fit_scaling(stats, method)
    assert scaling.scale[1] == 1.0
    assert scaling.offset[1] == 1e9 + 0.1
    Z = P.transform_block(X, scaling)
    assert np.all(Z[:, 1] == 0.0)
    assert np.isfinite(Z).all()


def test_fit_scaling_errors():
    X = table(np.random.default_rng(12))
    stats = reduced_moments(X, (200,))
    with pytest.raises(ValueError, match=r"^The 'scale' parameter must be one of"):
        P.fit_scaling(stats, "robust")
    zero = reduced_moments(X, (200,), weights=np.zeros(200))
    with pytest.raises(ValueError, match=r"^no row with finite values and a positive"):
        P.fit_scaling(zero, "standard")
    huge = np.array([[1e200, 0.0], [-1e200, 1.0]])
    with pytest.raises(ValueError, match=r"^column 0 is too spread out to scale"):
        P.fit_scaling(P.moments_block(huge, ()), "standard")


###############################################################################
# Applying the scaling to rows


def test_transform_block_and_its_inverse():
    X = table(np.random.default_rng(13)).astype(np.float32)
    scaling = P.Scaling("standard", (3,), [1.0, 2.0, 3.0, 0.5], [2.0, 1e-3, 1e4, 3.0])
    Z = P.transform_block(X, scaling)
    assert Z.dtype == np.float64
    Y = X.astype(np.float64)
    Y[:, 3] = np.log1p(Y[:, 3])
    np.testing.assert_array_equal(Z, (Y - scaling.offset) / scaling.scale)
    assert P.transform_block(X, scaling, out_dtype=np.float32).dtype == np.float32
    np.testing.assert_allclose(P.inverse_transform_block(Z, scaling), X, rtol=1e-12)
    np.testing.assert_allclose(
        P.invert_log1p(Y, scaling), X.astype(np.float64), rtol=1e-12
    )


def test_transform_under_map_blocks_reports_log1p_domain_row():
    X = table(np.random.default_rng(14))
    X[13, 3] = -1.5
    scaling = P.Scaling.identity(4, (3,))
    lazy = da.from_array(X, chunks=(10, 4)).map_blocks(
        P.transform_block, scaling, dtype=np.float64
    )
    with pytest.raises(
        ValueError, match=r"^log1p column 3 has 1 value\(s\) <= -1 \(first at row 13\)"
    ):
        lazy.compute(scheduler="sync")
    with pytest.raises(
        ValueError,
        match=r"^log1p column 3 has 1 value\(s\) <= -1 in a block of 200 rows "
        r"\(first at row 13\)",
    ):
        P.log_jacobian_block(X, scaling)


def test_row_kernels_run_under_map_rows():
    """``map_rows`` (one graph key for the Scaling) gives the eager results."""
    X = np.abs(table(np.random.default_rng(16)))
    scaling = P.Scaling("standard", (3,), [1.0, 0.0, 2.0, 0.5], [2.0, 1e-3, 1e4, 3.0])
    Xd = da.from_array(X, chunks=(30, 4))
    Z = map_rows(
        Xd,
        P.transform_block,
        scaling,
        name="scale",
        n_columns=4,
        dtype=np.float32,
        out_dtype=np.float32,
    )
    jac = map_rows(
        Xd, P.log_jacobian_block, scaling, name="jac", n_columns=None, dtype=float
    )
    assert Z.dtype == np.float32
    np.testing.assert_array_equal(
        Z.compute(scheduler="sync"), P.transform_block(X, scaling, np.float32)
    )
    np.testing.assert_array_equal(
        jac.compute(scheduler="sync"), P.log_jacobian_block(X, scaling)
    )


def test_log_jacobian_and_log_abs_det():
    X = np.abs(table(np.random.default_rng(15)))
    scaling = P.Scaling("minmax", (0, 3), np.zeros(4), [2.0, 0.5, 4.0, 1.0])
    np.testing.assert_allclose(
        P.log_jacobian_block(X, scaling),
        -np.log(1 + X[:, 0]) - np.log(1 + X[:, 3]),
        rtol=1e-14,
    )
    np.testing.assert_array_equal(
        P.log_jacobian_block(X, P.Scaling.identity(4)), np.zeros(200)
    )
    assert P.log_abs_det(scaling) == pytest.approx(-np.log(4.0), rel=1e-15)


###############################################################################
# Parameters between the scaled space and the original units


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_to_original_then_to_scaled_is_identity(ctype):
    params = random_mixture(np.random.default_rng(16), 3, 3, ctype)
    scaling = scaling_for(ctype)
    there = P.to_original_units(*params, ctype, scaling)
    back = P.to_scaled_units(*there, ctype, scaling)
    again = P.to_original_units(*back, ctype, scaling)
    # Identity up to rounding: the means lose ~|offset / scale| · eps (here 75 eps).
    for a, b in zip(params, back, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-13)
    for a, c in zip(there, again, strict=True):
        np.testing.assert_allclose(c, a, rtol=1e-13)
    assert P.to_original_units(None, None, None, None, ctype, scaling) == (None,) * 4


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_mapped_precision_factor_is_the_cholesky_of_the_mapped_covariance(ctype):
    params = random_mixture(np.random.default_rng(17), 3, 3, ctype)
    _, _, cov, prec_chol = P.to_original_units(*params, ctype, scaling_for(ctype))
    expected = K.precision_cholesky_from_covariances(cov, ctype)
    np.testing.assert_allclose(prec_chol, expected, rtol=1e-12)
    if ctype in ("full", "tied"):
        np.testing.assert_array_equal(np.tril(prec_chol, -1), 0.0)


@pytest.mark.parametrize("log1p", [(), (1,)], ids=["affine", "log1p"])
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_log_density_of_the_original_rows(ctype, log1p):
    """log p_x(x) under the mapped parameters (scipy) = log p_z(z) + log|det A|
    (+ the log1p Jacobian), to 1e-10."""
    rng = np.random.default_rng(18)
    weights, means, cov, prec_chol = random_mixture(rng, 3, 3, ctype)
    scaling = scaling_for(ctype, log1p)
    Z = means[rng.integers(0, 3, size=500)] + rng.normal(scale=1.5, size=(500, 3))
    X = P.inverse_transform_block(Z, scaling)

    kp = K.prepare(weights, means, prec_chol, ctype)
    scaled = K.score_samples_block(P.transform_block(X, scaling), kp)
    ours = scaled + P.log_abs_det(scaling) + P.log_jacobian_block(X, scaling)

    w, mu, sigma, _ = P.to_original_units(weights, means, cov, None, ctype, scaling)
    Y = X.copy()
    Y[:, list(log1p)] = np.log1p(Y[:, list(log1p)])
    reference = scipy_log_density(Y, w, mu, sigma, ctype)
    reference -= np.log1p(X[:, list(log1p)]).sum(axis=1)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-10)
    if not log1p:  # the exact offset of the issue: log |det A| = −Σ log scale
        np.testing.assert_allclose(
            ours - scaled, -np.log(scaling.scale).sum(), rtol=0, atol=1e-13
        )


def test_log1p_jacobian_against_scipy_lognormal():
    """A Gaussian on log1p(x) is a log-normal on 1 + x: an independent reference."""
    rng = np.random.default_rng(19)
    scaling = P.Scaling("standard", (0,), [1.2, 3.0], [0.5, 4.0])
    means, var = np.array([[0.3, -0.7]]), np.array([[0.8, 1.6]])
    prec_chol = K.precision_cholesky_from_covariances(var, "diag")
    X = rng.uniform([-0.9, -20.0], [30.0, 20.0], size=(400, 2))
    kp = K.prepare(np.ones(1), means, prec_chol, "diag")
    ours = (
        K.score_samples_block(P.transform_block(X, scaling), kp)
        + P.log_abs_det(scaling)
        + P.log_jacobian_block(X, scaling)
    )
    _, mu, sigma2, _ = P.to_original_units(
        np.ones(1), means, var, None, "diag", scaling
    )
    sd = np.sqrt(sigma2[0])
    reference = lognorm(s=sd[0], scale=np.exp(mu[0, 0]), loc=-1.0).logpdf(X[:, 0])
    reference += norm(mu[0, 1], sd[1]).logpdf(X[:, 1])
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-10)


def test_spherical_with_different_scales_is_refused():
    params = random_mixture(np.random.default_rng(20), 2, 3, "spherical")
    with pytest.raises(
        ValueError,
        match=r"^covariance_type='spherical' cannot be mapped to the original units",
    ):
        P.to_original_units(*params, "spherical", scaling_for("full"))
    with pytest.raises(
        ValueError,
        match=r"^covariance_type='spherical' cannot be used with scale='standard': .* "
        r"Use covariance_type='diag'",
    ):
        P.check_covariance_type("standard", "spherical")
    P.check_covariance_type("none", "spherical")
    P.check_covariance_type("minmax", "diag")


def test_scaling_a_mixture_by_hand_recovers_clusters_across_1e6_scales():
    """Columns 1e6 apart in scale: the raw fit misses the clusters (reg_covar swamps
    the small column), the scaled fit finds them and, mapped back, scores the
    original rows exactly log |det A| below the scaled rows."""
    rng = np.random.default_rng(21)
    labels = rng.integers(0, 3, size=1500)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 8.66]])  # 10 sd apart
    X = (centres[labels] + rng.normal(size=(1500, 2))) * [1e-6, 1.0]
    scaling = P.fit_scaling(reduced_moments(X, (500, 1000)), "standard")
    Z = P.transform_block(X, scaling)

    scaled = GaussianMixture(3, random_state=0).fit(Z)
    assert adjusted_rand_score(labels, scaled.predict(Z)) >= 0.95
    raw = GaussianMixture(3, random_state=0).fit(X)
    assert adjusted_rand_score(labels, raw.predict(X)) < 0.5

    ctype = scaled.covariance_type
    w, mu, _, prec = P.to_original_units(
        scaled.weights_,
        scaled.means_,
        None,
        scaled.precisions_cholesky_,
        ctype,
        scaling,
    )
    original = K.score_samples_block(X, K.prepare(w, mu, prec, ctype))
    np.testing.assert_allclose(
        original, scaled.score_samples(Z) + P.log_abs_det(scaling), rtol=0, atol=1e-10
    )


###############################################################################
# The Scaling record


def test_scaling_dict_round_trip_through_json():
    scaling = P.Scaling(
        "standard", (2, 0), [1e9 + 0.1, 1 / 3, -0.0], [1e-300, np.pi, 7.0]
    )
    document = json.loads(json.dumps(scaling.to_dict()))
    assert document == {
        "method": "standard",
        "log1p": [0, 2],
        "offset": [1e9 + 0.1, 1 / 3, -0.0],
        "scale": [1e-300, np.pi, 7.0],
    }
    again = P.Scaling.from_dict(document)
    assert again == scaling
    np.testing.assert_array_equal(again.offset, scaling.offset)
    assert tokenize(again) == tokenize(scaling)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"method": "none", "log1p": []}, r"^scaling must be a mapping with keys"),
        (
            {"method": "none", "log1p": [], "offset": [0.0], "scale": [True]},
            r"^scaling.scale must be a list of numbers",
        ),
        (
            {"method": "none", "log1p": [], "offset": [0.0], "scale": [0.0]},
            r"^Scaling.scale must be > 0",
        ),
        (
            {"method": "none", "log1p": [], "offset": [0.0, 1.0], "scale": [1.0]},
            r"^Scaling.offset and Scaling.scale differ in length: 2 and 1",
        ),
        (
            {"method": "none", "log1p": [1], "offset": [0.0], "scale": [1.0]},
            r"^log1p column 1 is out of range for 1 feature\(s\)",
        ),
        (
            {"method": "zscore", "log1p": [], "offset": [0.0], "scale": [1.0]},
            r"^The 'scale' parameter must be one of \{'none', 'standard', 'minmax'\}",
        ),
    ],
)
def test_scaling_from_dict_errors(document, message):
    with pytest.raises(ValueError, match=message):
        P.Scaling.from_dict(document)


def test_scaling_is_immutable_and_owns_its_arrays():
    offset = np.zeros(2)
    scaling = P.Scaling("standard", (), offset, np.ones(2))
    offset[0] = 5.0
    assert scaling.offset[0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        scaling.scale[0] = 2.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        scaling.method = "minmax"
    assert P.Scaling.identity(2).is_identity
    assert not P.Scaling.identity(2, (1,)).is_identity


def test_check_log1p():
    assert P.check_log1p([-1, 0], 3) == (0, 2)
    assert P.check_log1p(np.array([1]), 3) == (1,)
    with pytest.raises(ValueError, match=r"^log1p lists a column twice"):
        P.check_log1p([2, -1], 3)
    with pytest.raises(ValueError, match=r"^log1p must hold column indices \(ints\)"):
        P.check_log1p([True], 3)
    with pytest.raises(ValueError, match=r"^log1p must be a list of column indices"):
        P.check_log1p("income", 3)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_precisions_to_scaled_units_inverts_the_mapped_covariances(ctype):
    """A user's precisions in the units of f(x) (the inverse of the mapped
    covariances) come back as the inverse of the scaled-space covariances."""
    weights, means, cov, _ = random_mixture(np.random.default_rng(22), 3, 3, ctype)
    scaling = scaling_for(ctype)
    _, _, original, _ = P.to_original_units(weights, means, cov, None, ctype, scaling)
    inverse = {
        "full": np.linalg.inv,
        "tied": np.linalg.inv,
        "diag": lambda c: 1.0 / c,
        "spherical": lambda c: 1.0 / c,
    }[ctype]
    scaled = P.precisions_to_scaled_units(inverse(original), ctype, scaling)
    np.testing.assert_allclose(scaled, inverse(cov), rtol=1e-10)
