"""EM on rows with missing values (nan_policy='marginalize') against a row-by-row
reference."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from daskgmm import _compiled
from daskgmm import _kernels as K
from daskgmm._missing import (
    estep_missing_block,
    full_covariances,
    impute_rows,
    missing_loglik,
    missing_params,
)

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def _mixture(ctype: str, k: int = 3, d: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(scale=3.0, size=(k, d)) + 100.0
    a = rng.normal(size=(k, d, d))
    full = a @ np.swapaxes(a, 1, 2) + d * np.eye(d)
    cov = {
        "full": full,
        "tied": full[0],
        "diag": np.diagonal(full, axis1=1, axis2=2).copy(),
        "spherical": np.diagonal(full, axis1=1, axis2=2).mean(axis=1),
    }[ctype]
    return weights, means, cov


def _rows(means, n: int = 400, share: float = 0.3, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = means[rng.integers(0, len(means), n)] + rng.normal(
        scale=2.0, size=(n, means.shape[1])
    )
    hide = rng.random(X.shape) < share
    hide[np.arange(n), rng.integers(0, X.shape[1], n)] = False  # keep one value
    X[hide] = np.nan
    return X


def _params(weights, means, cov, ctype, kernel=K.estep_block):
    chol = K.precision_cholesky_from_covariances(cov, ctype)
    kp = K.prepare(weights, means, chol, ctype)
    return missing_params(kp, kernel, means, cov, np.log(weights))


def _reference(X, weights, means, cov, ctype, shifts, w=None):
    """Row by row: marginal densities by scipy, conditional moments by inverses."""
    k, d = means.shape
    full = full_covariances(cov, ctype, k, d)
    w = np.ones(len(X)) if w is None else w
    nk = np.zeros(k)
    s1 = np.zeros((k, d))
    s2 = np.zeros((k, d, d))
    loglik = 0.0
    for x, wt in zip(X, w, strict=True):
        o = ~np.isnan(x)
        m = ~o
        lp = np.array(
            [
                np.log(weights[j])
                + multivariate_normal(means[j, o], full[j][np.ix_(o, o)]).logpdf(x[o])
                for j in range(k)
            ]
        )
        lse = logsumexp(lp)
        loglik += wt * lse
        gamma = np.exp(lp - lse) * wt
        for j in range(k):
            inv = np.linalg.inv(full[j][np.ix_(o, o)])
            xhat = x.copy()
            xhat[m] = means[j, m] + full[j][np.ix_(m, o)] @ inv @ (x[o] - means[j, o])
            cond = np.zeros((d, d))
            cond[np.ix_(m, m)] = (
                full[j][np.ix_(m, m)]
                - full[j][np.ix_(m, o)] @ inv @ full[j][np.ix_(o, m)]
            )
            diff = xhat - shifts[j]
            nk[j] += gamma[j]
            s1[j] += gamma[j] * diff
            s2[j] += gamma[j] * (np.outer(diff, diff) + cond)
    if ctype == "tied":
        s2 = s2.sum(axis=0)
    elif ctype in ("diag", "spherical"):
        s2 = np.diagonal(s2, axis1=1, axis2=2)
    return {"nk": nk, "s1": s1, "s2": s2, "loglik": loglik}


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_statistics_equal_a_row_by_row_reference(ctype, weighted, compiled):
    if compiled and not _compiled.available():
        pytest.skip("numba is not installed")
    weights, means, cov = _mixture(ctype)
    X = _rows(means)
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(X)) if weighted else None
    kernel = _compiled.estep_block if compiled else K.estep_block
    mp = _params(weights, means, cov, ctype, kernel)
    got = estep_missing_block(X, mp, 0, w)
    want = _reference(X, weights, means, cov, ctype, mp.shifts, w)
    for key in ("nk", "s1", "s2"):
        assert_allclose(got[key], want[key], rtol=1e-10, atol=1e-9, err_msg=key)
    assert_allclose(got["loglik"], want["loglik"], rtol=1e-12)
    assert got["n"] == len(X) and got["n_bad"] == 0
    assert_allclose(got["w"], len(X) if w is None else w.sum(), rtol=1e-13)


def test_a_block_without_missing_values_is_the_complete_data_kernels():
    weights, means, cov = _mixture("full")
    X = _rows(means, share=0.0)
    mp = _params(weights, means, cov, "full")
    got = estep_missing_block(X, mp, 0, None)
    want = K.estep_block(X, mp.kp, 0, None)
    for key in ("nk", "s1", "s2", "loglik", "n", "w"):
        np.testing.assert_array_equal(got[key], want[key])


def test_rows_with_every_value_missing_or_an_infinity_are_counted_bad():
    weights, means, cov = _mixture("diag")
    X = _rows(means)
    X[5] = np.nan
    X[9, 0] = np.inf
    got = estep_missing_block(X, _params(weights, means, cov, "diag"), 2, None)
    assert got["n_bad"] == 2
    assert got["first_bad"] is not None


def test_loglik_and_imputation_per_row():
    weights, means, cov = _mixture("full")
    X = _rows(means)
    mp = _params(weights, means, cov, "full")
    lse, resp = missing_loglik(X, mp)
    want = _reference(X, weights, means, cov, "full", mp.shifts)
    assert_allclose(lse.sum(), want["loglik"], rtol=1e-12)
    assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
    filled = impute_rows(X, mp)
    observed = ~np.isnan(X)
    np.testing.assert_array_equal(filled[observed], X[observed])
    assert not np.isnan(filled).any()
    # The conditional expectation of a row, by hand.
    row = int(np.flatnonzero(np.isnan(X).any(axis=1))[0])
    o = observed[row]
    expected = np.zeros(X.shape[1])
    for j in range(len(weights)):
        xhat = X[row].copy()
        inv = np.linalg.inv(cov[j][np.ix_(o, o)])
        xhat[~o] = means[j, ~o] + cov[j][np.ix_(~o, o)] @ inv @ (
            X[row, o] - means[j, o]
        )
        expected += resp[row, j] * xhat
    assert_allclose(filled[row], expected, rtol=1e-12)
