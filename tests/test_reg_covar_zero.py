"""reg_covar=0 and a component on one row (or identical rows): a singular covariance.

scikit-learn fits on rounding noise there (variances of 1e-26 .. 1e-11) or raises its
"ill-defined empirical covariance" error, depending on rounding; daskgmm's own
arithmetic did the same (variances of 1e-40 that passed the Cholesky factorisation).
daskgmm now raises one ValueError from the M-step that names the component(s), the
iteration and the fix, and ends with scikit-learn's message. Fits whose covariances
are positive definite are unchanged (compared with scikit-learn below).
"""

from __future__ import annotations

import re
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

import daskgmm._em as em
from daskgmm import GaussianMixture

SKLEARN_MESSAGE = (
    "Fitting the mixture model failed because some components have ill-defined "
    "empirical covariance (for instance caused by singleton or collapsed samples). "
    "Try to decrease the number of components, increase reg_covar, or scale the "
    "input data."
)
FIX = "; set reg_covar > 0, e.g. 1e-6, or use fewer components. "
CENTERS = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
OUTLIER = np.array([123.456, 78.9])
MEANS_INIT = np.vstack([CENTERS, [[120.0, 80.0]]])


def identity_precisions(ctype: str, k: int, d: int) -> np.ndarray:
    return {
        "full": np.tile(np.eye(d), (k, 1, 1)),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[ctype]


def clusters_and_outlier(copies: int = 1) -> np.ndarray:
    """Three blobs of 200 rows and ``copies`` identical rows far from them."""
    rng = np.random.RandomState(0)
    blobs = [c + rng.randn(200, 2) for c in CENTERS]
    return np.vstack([*blobs, np.tile(OUTLIER, (copies, 1))])


def fit(X, ctype: str, **kwargs) -> GaussianMixture:
    kwargs.setdefault("means_init", MEANS_INIT)
    kwargs.setdefault(
        "precisions_init", identity_precisions(ctype, *kwargs["means_init"].shape)
    )
    k = kwargs["means_init"].shape[0]
    return GaussianMixture(k, covariance_type=ctype, reg_covar=0.0, **kwargs).fit(X)


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical"])
@pytest.mark.parametrize("use_dask", [False, True])
def test_a_component_on_one_row_is_named_with_its_iteration_and_the_fix(
    ctype, use_dask
):
    X = clusters_and_outlier()
    data = da.from_array(X, chunks=101) if use_dask else X
    message = (
        "component 3 holds 1 row(s) of weight 0.00166 at iteration 1: its covariance "
        "is singular with reg_covar=0" + FIX + SKLEARN_MESSAGE
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        fit(data, ctype)


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical"])
def test_identical_rows_are_counted(ctype):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "component 3 holds 3 row(s) of weight 0.00498 at iteration 1: its "
            "covariance is singular with reg_covar=0; set reg_covar > 0"
        ),
    ):
        fit(clusters_and_outlier(copies=3), ctype)


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical"])
def test_a_pattern_written_for_scikit_learn_still_matches(ctype):
    X = clusters_and_outlier()
    init = dict(means_init=MEANS_INIT, precisions_init=identity_precisions(ctype, 4, 2))
    # The oracle, on the same data and start: its error (full) or a fit on rounding
    # noise (diag, spherical: variances of about 1e-11 for one row).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sk = SklearnGaussianMixture(
                4, covariance_type=ctype, reg_covar=0.0, **init
            ).fit(X)
        except ValueError as exc:
            assert str(exc) == SKLEARN_MESSAGE
        else:
            assert 0 < np.max(sk.covariances_[3]) < 1e-10
    for pattern in (
        "ill-defined empirical covariance",
        re.escape(SKLEARN_MESSAGE),
        r"ill-defined empirical covariance.*reg_covar",
    ):
        with pytest.raises(ValueError, match=pattern):
            fit(X, ctype)


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical"])
def test_rounding_noise_that_passes_cholesky_is_caught(ctype, monkeypatch):
    # A start far from the outlier: the exact pass about the new mean leaves the
    # one-row variances at ~1e-40 (not 0), which the Cholesky factorisation accepts.
    rng = np.random.RandomState(0)
    outlier = np.array([500.1, -600.3])
    X = np.vstack([rng.randn(200, 2), rng.randn(200, 2) + 10, outlier])
    init = dict(
        means_init=np.vstack([[0.0, 0.0], [10.0, 10.0], outlier * 0.5 + 20]),
        max_iter=1,
    )
    with pytest.raises(
        ValueError,
        match=re.escape(
            "component 2 holds 1 row(s) of weight 0.00249 at iteration 1: its "
            "covariance is singular with reg_covar=0; set reg_covar > 0, e.g. 1e-6"
        ),
    ):
        fit(X, ctype, **init)
    # Without the rounding-noise test this start "fits" on the noise.
    monkeypatch.setattr(
        em, "collapsed_components", lambda *args: np.array([], dtype=int)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        noisy = fit(X, ctype, **init)
    assert 0 < np.max(noisy.covariances_[2]) < 1e-38
    np.testing.assert_array_equal(noisy.means_[2], outlier)


def test_tied_with_one_row_in_a_component_is_fine_and_matches_scikit_learn():
    # The pooled covariance stays positive definite: no error, the same fit.
    X = clusters_and_outlier()
    init = dict(means_init=MEANS_INIT, precisions_init=np.eye(2))
    ours = fit(X, "tied")
    sk = SklearnGaussianMixture(
        4, covariance_type="tied", reg_covar=0.0, tol=1e-3, **init
    ).fit(X)
    assert ours.converged_ and ours.n_iter_ == sk.n_iter_ == 3
    np.testing.assert_allclose(ours.weights_[3], 1 / 601, rtol=1e-12)
    np.testing.assert_allclose(ours.means_[3], OUTLIER, rtol=1e-12)
    np.testing.assert_allclose(
        ours.covariances_,
        [[9.41295771e-01, -4.66693966e-04], [-4.66693966e-04, 9.51420406e-01]],
        rtol=1e-6,
    )
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(ours, name), getattr(sk, name), rtol=1e-6, atol=1e-12
        )
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, rel=1e-9)


def test_tied_raises_only_when_the_pooled_covariance_is_singular():
    # Three distinct points, 50 copies each: the responsibilities harden onto one
    # point per component, the pooled variances shrink (2.4e-17 after iteration 8)
    # and reach 0 at iteration 9.
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    X = np.repeat(points, 50, axis=0)
    init = dict(means_init=points + 0.1, precisions_init=np.eye(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eight = fit(X, "tied", max_iter=8, **init)
    assert 0 < np.diag(eight.covariances_).max() < 1e-16
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the tied covariance (pooled over the 3 components) is singular with "
            "reg_covar=0 at iteration 9: within every component the rows are "
            "(nearly) identical in some direction" + FIX + SKLEARN_MESSAGE
        ),
    ):
        fit(X, "tied", **init)
    with pytest.raises(ValueError, match=re.escape(SKLEARN_MESSAGE)):
        SklearnGaussianMixture(
            3, covariance_type="tied", reg_covar=0.0, max_iter=100, **init
        ).fit(X)


def test_one_point_starts_are_named_at_initialisation():
    # random_from_data starts every component on one row, covariance reg_covar = 0.
    X = clusters_and_outlier()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "components 0, 1, 2 of weights 0.333, 0.333, 0.333 at initialisation: "
            "their covariances are singular" + FIX
        ),
    ):
        GaussianMixture(
            3, init_params="random_from_data", reg_covar=0.0, random_state=0
        ).fit(X)


def test_a_covariance_not_positive_definite_with_reg_covar_says_increase_it():
    # reg_covar > 0 too small for the rounding of the data: the M-step's error.
    weights = np.array([0.5, 0.25, 0.25])
    cov = np.array([[1.0, 1.0], [1.0, -1e-12], [-1e-12, 1.0]])
    with pytest.raises(
        ValueError,
        match="^"
        + re.escape(
            "components 1, 2 hold 2, 2 row(s) of weights 0.25, 0.25 at iteration 4: "
            "their covariances are singular with reg_covar=1e-12; increase reg_covar "
            "(now 1e-12), or use fewer components. " + SKLEARN_MESSAGE
        )
        + "$",
    ):
        em.precision_parameters(
            weights,
            np.zeros((3, 2)),
            cov,
            "diag",
            reg_covar=1e-12,
            rows=np.array([4.0, 2.0, 2.0]),
            iteration=4,
        )


###############################################################################
# No false positives: positive definite covariances with reg_covar=0


def well_conditioned(seed: int = 0) -> tuple[np.ndarray, dict]:
    rng = np.random.RandomState(seed)
    A = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 2.0]])
    centers = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 2.0], [0.0, 8.0, -3.0]])
    sizes = (300, 200, 100)
    X = np.vstack(
        [c + rng.randn(n, 3) @ A for c, n in zip(centers, sizes, strict=True)]
    )
    return X, dict(weights_init=np.array([0.5, 0.3, 0.2]), means_init=centers + 0.5)


def well_conditioned_fit(ctype: str) -> tuple[np.ndarray, dict, dict]:
    """:func:`well_conditioned` rows, their initial parameters (identity precisions
    of ``ctype``) and the settings of a tight fit with ``reg_covar=0``."""
    X, init = well_conditioned()
    init["precisions_init"] = identity_precisions(ctype, 3, 3)
    kwargs = dict(covariance_type=ctype, reg_covar=0.0, tol=1e-8, max_iter=200)
    return X, init, kwargs


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_reg_covar_zero_fits_as_scikit_learn_when_positive_definite(ctype):
    X, init, kwargs = well_conditioned_fit(ctype)
    ours = GaussianMixture(3, **kwargs, **init).fit(X)
    sk = SklearnGaussianMixture(3, **kwargs, **init).fit(X)
    assert ours.converged_ and sk.converged_
    assert ours.n_iter_ == sk.n_iter_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(ours, name), getattr(sk, name), rtol=1e-6, atol=1e-10
        )
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, rel=1e-9)
    # The blobs are found: weights of the generating 300/200/100 rows.
    np.testing.assert_allclose(ours.weights_, [0.5, 1 / 3, 1 / 6], atol=2e-3)


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_a_large_offset_is_not_mistaken_for_rounding_noise(ctype):
    # Unit variances at 1e8: 16 digits hold them (the floor is (64 eps 1e8)^2 ~ 2e-12).
    X, init, kwargs = well_conditioned_fit(ctype)
    base = GaussianMixture(3, **kwargs, **init).fit(X)
    init["means_init"] = init["means_init"] + 1e8
    shifted = GaussianMixture(3, **kwargs, **init).fit(X + 1e8)
    np.testing.assert_allclose(shifted.weights_, base.weights_, rtol=1e-6)
    np.testing.assert_allclose(shifted.means_ - 1e8, base.means_, atol=1e-6)
    np.testing.assert_allclose(shifted.covariances_, base.covariances_, rtol=1e-6)


def test_collapsed_components_threshold():
    means = np.array([[1e3, 0.0], [1e3, 5.0]])
    eps = np.finfo(np.float64).eps
    floor = (64 * eps * 1e3) ** 2
    diag = np.array([[floor, 1.0], [1.001 * floor, 1.0]])
    np.testing.assert_array_equal(
        em.collapsed_components(None, means, diag, "diag"), [0]
    )
    # A zero mean has a zero floor: only a variance <= 0 counts there.
    zero = np.array([[1.0, 0.0], [1.0, 1e-300]])
    np.testing.assert_array_equal(
        em.collapsed_components(None, np.zeros((2, 2)), zero, "diag"), [0]
    )
    full = np.array([np.diag(v) for v in diag])
    np.testing.assert_array_equal(
        em.collapsed_components(None, means, full, "full"), [0]
    )
    np.testing.assert_array_equal(
        em.collapsed_components(
            np.array([0.5, 0.5]), means, np.diag([0.5 * floor, 1.0]), "tied"
        ),
        [0],
    )
    np.testing.assert_array_equal(
        em.collapsed_components(
            np.array([0.5, 0.5]), means, np.diag([2 * floor, 1.0]), "tied"
        ),
        [],
    )
