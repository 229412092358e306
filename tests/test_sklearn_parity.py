"""The whole fit against scikit-learn's GaussianMixture from the same starting point.

scikit-learn is the oracle: given the same ``weights_init``, ``means_init`` and
``precisions_init`` both run the same EM iterations, so every fitted attribute, the
lower-bound history and the number of iterations must agree to rounding.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

import daskgmm
from daskgmm import GaussianMixture
from tests.conftest import FITTED_ARRAYS, assert_parameters_close

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
PARAMETERS = FITTED_ARRAYS

###############################################################################
# Data


def synthetic(seed: int = 0, n: int = 400, d: int = 3) -> tuple[np.ndarray, dict]:
    """Three well separated Gaussian blobs with known parameters (full covariances)."""
    rng = np.random.default_rng(seed)
    weights = np.array([0.2, 0.3, 0.5])
    means = np.array([[0.0] * d, [6.0] * d, [-5.0, 5.0, 0.0][:d] + [0.0] * (d - 3)])
    covs = []
    for _ in range(3):
        a = rng.normal(size=(d, d))
        covs.append(a @ a.T / d + 0.5 * np.eye(d))
    counts = rng.multinomial(n, weights)
    X = np.concatenate(
        [
            rng.multivariate_normal(m, c, size=int(c_n))
            for m, c, c_n in zip(means, covs, counts, strict=True)
        ]
    )
    return X, {"weights": weights, "means": means, "covariances": np.stack(covs)}


@functools.cache
def dataset(name: str) -> np.ndarray:
    if name == "iris":
        return load_iris().data
    if name == "wine":
        # Raw Wine: features from ~0.1 to ~1700 (proline), condition number of the
        # covariance ~1e7. Ill-conditioned, but both fits still agree to ~1e-10.
        return load_wine().data
    if name == "wine-std":
        X = load_wine().data
        return (X - X.mean(axis=0)) / X.std(axis=0)
    if name == "synthetic":
        return synthetic()[0]
    raise ValueError(name)


DATASETS = ("iris", "wine", "wine-std", "synthetic")


def precisions_of_type(covariances: np.ndarray, ctype: str) -> np.ndarray:
    """Precisions of ``ctype`` derived from full (K, d, d) covariances."""
    if ctype == "full":
        return np.linalg.inv(covariances)
    if ctype == "tied":
        return np.linalg.inv(covariances.mean(axis=0))
    diag = np.einsum("kii->ki", covariances)
    if ctype == "diag":
        return 1.0 / diag
    return 1.0 / diag.mean(axis=1)


@functools.cache
def _inits(name: str, ctype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = dataset(name)
    if name == "synthetic":
        # The truth, deliberately perturbed.
        _, truth = synthetic()
        rng = np.random.default_rng(1)
        weights = truth["weights"] * rng.uniform(0.7, 1.3, size=3)
        weights /= weights.sum()
        means = truth["means"] + rng.normal(scale=0.8, size=truth["means"].shape)
        covs = truth["covariances"] * rng.uniform(0.6, 1.6, size=(3, 1, 1))
        return weights, means, precisions_of_type(covs, ctype)
    # A short scikit-learn fit from its own k-means initialisation.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        short = SklearnGaussianMixture(
            3, covariance_type=ctype, max_iter=2, random_state=0
        ).fit(X)
    return short.weights_, short.means_, short.precisions_


def inits(name: str, ctype: str) -> dict:
    weights, means, precisions = _inits(name, ctype)
    return {
        "weights_init": weights.copy(),
        "means_init": means.copy(),
        "precisions_init": precisions.copy(),
    }


def fit_both(X, ctype, *, tol=1e-6, max_iter=500, init=None, **kwargs):
    """scikit-learn's and daskgmm's fits from the same starting point."""
    init = init if init is not None else {}
    common = dict(
        n_components=3,
        covariance_type=ctype,
        tol=tol,
        max_iter=max_iter,
        **init,
        **kwargs,
    )
    sk = SklearnGaussianMixture(
        init_params="random_from_data", random_state=0, **common
    )
    sk.fit(X)
    ours = GaussianMixture(**common).fit(X)
    return sk, ours


def with_parameters_of(model: GaussianMixture, **kwargs) -> SklearnGaussianMixture:
    """A scikit-learn GaussianMixture holding ``model``'s fitted parameters."""
    sk = SklearnGaussianMixture(
        n_components=model.n_components, covariance_type=model.covariance_type, **kwargs
    )
    for name in (
        *PARAMETERS,
        "converged_",
        "n_iter_",
        "lower_bound_",
        "lower_bounds_",
        "n_features_in_",
    ):
        setattr(sk, name, getattr(model, name))
    return sk


###############################################################################
# The fit


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("name", DATASETS)
def test_fit_matches_sklearn_from_the_same_start(name, ctype):
    X = dataset(name)
    sk, ours = fit_both(X, ctype, init=inits(name, ctype))
    assert sk.converged_ and ours.converged_
    assert ours.n_iter_ == sk.n_iter_
    assert ours.n_iter_ >= 2
    np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=1e-8)
    assert len(ours.lower_bounds_) == len(sk.lower_bounds_) == ours.n_iter_
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-8)
    assert ours.lower_bound_ == ours.lower_bounds_[-1]
    assert_parameters_close(ours, sk, rtol=1e-6, atol_scale=1e-9)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_unconverged_fit_matches_sklearn(ctype):
    """Stopped by max_iter: same parameters, both not converged, both warn."""
    X = dataset("wine-std")
    init = inits("wine-std", ctype)
    sk = SklearnGaussianMixture(
        3, covariance_type=ctype, tol=0.0, max_iter=4, random_state=0, **init
    ).fit(X)
    with pytest.warns(
        daskgmm.ConvergenceWarning,
        match="Best performing initialization did not converge",
    ):
        ours = GaussianMixture(
            3, covariance_type=ctype, tol=0.0, max_iter=4, **init
        ).fit(X)
    assert not sk.converged_ and not ours.converged_
    assert ours.n_iter_ == sk.n_iter_ == 4
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-10)
    assert_parameters_close(ours, sk, rtol=1e-6, atol_scale=1e-9)


###############################################################################
# Methods of a fitted model


def points_to_score(X: np.ndarray) -> np.ndarray:
    """The data plus points around and far outside it."""
    rng = np.random.default_rng(5)
    spread = X.std(axis=0)
    far = X.mean(axis=0) + rng.normal(size=(10, X.shape[1])) * spread * 8.0
    return np.concatenate([X, far])


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("name", ["iris", "wine", "synthetic"])
def test_methods_match_sklearn_for_the_same_parameters(name, ctype):
    X = dataset(name)
    ours = GaussianMixture(
        3, covariance_type=ctype, tol=1e-6, **inits(name, ctype)
    ).fit(X)
    sk = with_parameters_of(ours)
    Z = points_to_score(X)
    ref_log = sk.score_samples(Z)
    got_log = ours.score_samples(Z)
    assert got_log.dtype == np.float64
    np.testing.assert_allclose(got_log, ref_log, rtol=1e-10)
    ref_proba = sk.predict_proba(Z)
    got_proba = ours.predict_proba(Z)
    np.testing.assert_allclose(got_proba, ref_proba, rtol=1e-8, atol=1e-12)
    # Labels: identical except where the two best components tie to rounding.
    got_labels = ours.predict(Z)
    top2 = np.sort(ref_proba, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-9
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(got_labels[clear], sk.predict(Z)[clear])
    np.testing.assert_allclose(ours.score(Z), sk.score(Z), rtol=1e-12)
    np.testing.assert_allclose(ours.bic(Z), sk.bic(Z), rtol=1e-12)
    np.testing.assert_allclose(ours.aic(Z), sk.aic(Z), rtol=1e-12)
    # The fitted lower bound is the mean log-likelihood of the parameters before the
    # last M-step, not after: only close to score(X) at convergence.
    np.testing.assert_allclose(ours.score(X), ours.lower_bound_, rtol=1e-4)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_sample_matches_sklearn_for_the_same_parameters(ctype):
    X = dataset("synthetic")
    ours = GaussianMixture(
        3, covariance_type=ctype, random_state=11, **inits("synthetic", ctype)
    ).fit(X)
    sk = with_parameters_of(ours, random_state=11)
    for n_samples in (1, 7, 500):
        got_X, got_y = ours.sample(n_samples)
        want_X, want_y = sk.sample(n_samples)
        assert got_X.shape == want_X.shape == (n_samples, X.shape[1])
        np.testing.assert_allclose(got_X, want_X, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(got_y, want_y)
    # Same random_state, same draws on a second call; and the draws follow the model.
    again_X, _ = ours.sample(500)
    np.testing.assert_array_equal(again_X, got_X)
    np.testing.assert_allclose(
        np.bincount(got_y, minlength=3) / 500, ours.weights_, atol=0.07
    )


###############################################################################
# float32


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_float32_input_gives_float32_like_sklearn(ctype):
    X32 = dataset("iris").astype(np.float32)
    init = {k: v.astype(np.float32) for k, v in inits("iris", ctype).items()}
    sk, ours = fit_both(X32, ctype, tol=1e-4, init=init)
    for name in PARAMETERS:
        assert getattr(sk, name).dtype == np.float32, name  # the oracle's own rule
        assert getattr(ours, name).dtype == np.float32, name
    for method in ("predict_proba", "score_samples"):
        assert getattr(sk, method)(X32).dtype == np.float32
        assert getattr(ours, method)(X32).dtype == np.float32
        # float64 rows on a float32 model give float64, as in scikit-learn.
        assert getattr(ours, method)(X32.astype(np.float64)).dtype == np.float64
        assert getattr(sk, method)(X32.astype(np.float64)).dtype == np.float64
    assert ours.predict(X32).dtype == np.int64
    # daskgmm accumulates in float64: the float32 fit is the float64 fit of the same
    # numbers, rounded to float32 at the end.
    f64 = GaussianMixture(
        3,
        covariance_type=ctype,
        tol=1e-4,
        **{k: v.astype(np.float64) for k, v in init.items()},
    ).fit(X32.astype(np.float64))
    assert ours.n_iter_ == f64.n_iter_
    np.testing.assert_allclose(ours.lower_bound_, f64.lower_bound_, rtol=1e-12)
    assert_parameters_close(ours, f64, rtol=1e-6, atol_scale=1e-7)
    np.testing.assert_allclose(
        ours.score_samples(X32), f64.score_samples(X32), rtol=1e-6, atol=1e-6
    )
    # scikit-learn computes in float32: close, but only loosely.
    np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=1e-5)
    assert_parameters_close(ours, sk, rtol=1e-3, atol_scale=1e-3)


###############################################################################
# The log-likelihood never decreases


def assert_non_decreasing(values, what):
    values = np.asarray(values)
    slack = 1e-12 * np.abs(values[1:])
    drops = values[1:] - values[:-1]
    assert np.all(drops >= -slack), f"{what}: largest decrease {-drops.min():.3e}"


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("name", ["iris", "wine-std", "synthetic"])
@pytest.mark.filterwarnings("ignore::daskgmm.ConvergenceWarning")
def test_lower_bounds_never_decrease(name, ctype):
    X = dataset(name)
    # reg_covar=0: the exact M-step, for which EM's monotonicity is a theorem.
    # Random responsibilities to start: a long way to climb.
    gmm = GaussianMixture(
        3,
        covariance_type=ctype,
        reg_covar=0.0,
        tol=1e-9,
        max_iter=60,
        init_params="random",
        random_state=0,
    ).fit(X)
    assert len(gmm.lower_bounds_) == gmm.n_iter_ >= 5
    assert_non_decreasing(gmm.lower_bounds_, f"{name}/{ctype}")


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.filterwarnings("ignore::daskgmm.ConvergenceWarning")
def test_warm_start_one_iteration_at_a_time(ctype):
    X = dataset("wine-std")
    params = dict(
        n_components=3, covariance_type=ctype, reg_covar=0.0, tol=1e-6, random_state=3
    )
    full = GaussianMixture(max_iter=200, **params).fit(X)
    assert full.converged_
    stepper = GaussianMixture(max_iter=1, warm_start=True, **params)
    bounds, scores = [], []
    for _ in range(full.n_iter_):
        stepper.fit(X)
        assert stepper.n_iter_ == 1
        bounds.append(stepper.lower_bound_)
        scores.append(stepper.score(X))
        if stepper.converged_:
            break
    assert stepper.converged_
    assert len(bounds) == full.n_iter_
    assert_non_decreasing(scores, f"score after each step ({ctype})")
    assert_non_decreasing(bounds, f"lower bound after each step ({ctype})")
    # Stepping is the same computation as one fit: same bounds, same parameters.
    np.testing.assert_allclose(bounds, full.lower_bounds_, rtol=1e-12)
    # The bound of iteration t+1 is the mean log-likelihood after step t.
    np.testing.assert_allclose(scores[:-1], full.lower_bounds_[1:], rtol=1e-10)
    assert_parameters_close(stepper, full, rtol=1e-12, atol_scale=1e-14)


###############################################################################
# max_iter=0


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_max_iter_zero_returns_the_initial_parameters(ctype):
    X = dataset("iris")
    init = inits("iris", ctype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", daskgmm.ConvergenceWarning)
        gmm = GaussianMixture(3, covariance_type=ctype, max_iter=0, **init).fit(X)
    assert gmm.n_iter_ == 0
    assert gmm.converged_ is False
    assert gmm.lower_bound_ == -np.inf
    assert gmm.lower_bounds_ == []
    np.testing.assert_array_equal(gmm.weights_, init["weights_init"])
    np.testing.assert_array_equal(gmm.means_, init["means_init"])
    precisions = init["precisions_init"]
    np.testing.assert_allclose(gmm.precisions_, precisions, rtol=1e-12, atol=1e-14)
    covariances = (
        np.linalg.inv(precisions) if ctype in ("full", "tied") else 1 / precisions
    )
    np.testing.assert_allclose(gmm.covariances_, covariances, rtol=1e-10, atol=1e-14)
    chol = gmm.precisions_cholesky_
    if ctype in ("full", "tied"):
        np.testing.assert_array_equal(chol, np.triu(chol))
    # (scikit-learn 1.9 is no oracle here: with max_iter=0 and precisions_init its
    # fit raises AttributeError, 'covariances_' being never set.)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize(
    "init_params", ["kmeans", "k-means++", "random", "random_from_data"]
)
def test_max_iter_zero_gives_the_start_of_the_fit(ctype, init_params):
    """The parameters of max_iter=0 are where a fit with the same seed starts."""
    X = dataset("synthetic")
    params = dict(
        n_components=3, covariance_type=ctype, init_params=init_params, random_state=4
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", daskgmm.ConvergenceWarning)
        start = GaussianMixture(max_iter=0, **params).fit(X)
    assert start.n_iter_ == 0
    assert np.all(np.isfinite(start.means_)) and np.all(start.weights_ > 0)
    np.testing.assert_allclose(start.weights_.sum(), 1.0, rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", daskgmm.ConvergenceWarning)
        direct = GaussianMixture(max_iter=3, tol=0.0, **params).fit(X)
        resumed = GaussianMixture(
            max_iter=3,
            tol=0.0,
            weights_init=start.weights_,
            means_init=start.means_,
            precisions_init=start.precisions_,
            **params,
        ).fit(X)
    np.testing.assert_allclose(resumed.lower_bounds_, direct.lower_bounds_, rtol=1e-10)
    assert_parameters_close(resumed, direct, rtol=1e-8, atol_scale=1e-10)
