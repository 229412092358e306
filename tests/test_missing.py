"""EM on rows with missing values (nan_policy='marginalize') against a row-by-row
reference."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from daskgmm import _compiled, _missing
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
    """NumPy, or with ``kernel`` compiled the compiled kernels throughout."""
    chol = K.precision_cholesky_from_covariances(cov, ctype)
    # Statistics about points other than the means, as in a fit (recentred).
    about = means + np.linspace(-0.5, 0.5, means.size).reshape(means.shape)
    kp = K.recentred(weights, means, chol, ctype, about, weights)
    compiled = None if kernel is K.estep_block else _compiled
    return missing_params(kp, kernel, means, cov, np.log(weights), compiled)


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


@pytest.mark.parametrize("d", [3, 6])
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("route", ["kernel", "pattern", "count"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_statistics_equal_a_row_by_row_reference(
    ctype, weighted, compiled, route, d, monkeypatch
):
    if compiled and not _compiled.available():
        pytest.skip("numba is not installed")
    # Each pattern through the complete-data kernel on its observed features
    # ("kernel"); or row by row (compiled), or in NumPy grouped by pattern
    # (factorised once per pattern) or by their number of missing values
    # (factorised row by row in batches).
    kernel_rows = 1 if route == "kernel" else 10**9
    monkeypatch.setattr(_missing, "PATTERN_KERNEL_ROWS", kernel_rows)
    monkeypatch.setattr(
        _missing, "_ROWS_PER_PATTERN", 1 if route == "pattern" else 10**9
    )
    weights, means, cov = _mixture(ctype, d=d)
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


@pytest.mark.parametrize("d", [12, 20, 70])
@pytest.mark.parametrize("kernel_rows", [8, 10**9])
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_the_compiled_statistics_equal_numpys(ctype, kernel_rows, d, monkeypatch):
    if not _compiled.available():
        pytest.skip("numba is not installed")
    # Patterns of 8 rows or more grouped (compiled) against NumPy row by row; or
    # every row on its own in both. Up to 16 features the compiled code sorts the
    # rows by pattern by counting, beyond by merging; beyond 62 (no pattern codes)
    # NumPy groups the patterns and the compiled kernel takes the other rows.
    monkeypatch.setattr(_missing, "PATTERN_KERNEL_ROWS", kernel_rows)
    rng = np.random.default_rng(8)
    weights, means, cov = _mixture(ctype, k=4, d=d, seed=2)
    X = means[rng.integers(0, 4, 4500)] + rng.normal(scale=2.0, size=(4500, d))
    X[:3000][rng.random((3000, d)) < 0.3] = np.nan  # thousands of patterns
    X[3000:, [2, 7]] = np.nan  # and one of 1500 rows (per-lane moments)
    X[[10, 3500]] = np.nan  # rows without an observed value: left out
    w = rng.uniform(0.2, 3.0, len(X))
    with monkeypatch.context() as numpy_rows:
        numpy_rows.setattr(_missing, "PATTERN_KERNEL_ROWS", 10**9)
        numpy = estep_missing_block(X, _params(weights, means, cov, ctype), 1, w)
    compiled = _params(weights, means, cov, ctype, _compiled.estep_block)
    got = estep_missing_block(X, compiled, 1, w)
    for key in ("nk", "s1", "s2"):
        scale = np.abs(numpy[key]).max()
        assert_allclose(got[key], numpy[key], rtol=0, atol=1e-12 * scale, err_msg=key)
    assert got["loglik"] == pytest.approx(numpy["loglik"], rel=1e-13)
    assert got["w"] == pytest.approx(numpy["w"], rel=1e-14)
    assert got["w"] == pytest.approx(w.sum() - w[[10, 3500]].sum(), rel=1e-14)
    assert (got["n"], got["n_bad"], got["first_bad"]) == (4500, 2, (1, 10))
    assert (numpy["n"], numpy["n_bad"], numpy["first_bad"]) == (4500, 2, (1, 10))


def test_a_block_without_missing_values_is_the_complete_data_kernels():
    weights, means, cov = _mixture("full")
    X = _rows(means, share=0.0)
    mp = _params(weights, means, cov, "full")
    got = estep_missing_block(X, mp, 0, None)
    want = K.estep_block(X, mp.kp, 0, None)
    for key in ("nk", "s1", "s2", "loglik", "n", "w"):
        np.testing.assert_array_equal(got[key], want[key])


def test_rows_with_every_value_missing_are_left_out_and_infinities_counted():
    weights, means, cov = _mixture("diag")
    X = _rows(means)
    mp = _params(weights, means, cov, "diag")
    want = estep_missing_block(np.delete(X, [5, 9], axis=0), mp, 2, None)
    X[5] = np.nan
    X[9, 0] = np.inf
    got = estep_missing_block(X, mp, 2, None)
    assert (got["n_bad"], got["first_bad"]) == (1, (2, 5))
    assert (got["n_inf"], got["first_inf"]) == (1, (2, 9))
    assert got["n"] == len(X) and got["w"] == len(X) - 2
    for key in ("nk", "s1", "s2"):
        assert_allclose(got[key], want[key], rtol=1e-12)
    assert got["loglik"] == pytest.approx(want["loglik"], rel=1e-12)


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


###############################################################################
# The estimator


def _observed_logpdf(X, weights, means, cov, ctype):
    """Per row, by scipy: log Σ_k π_k N(x_o | μ_o, Σ_oo); and the responsibilities."""
    k, d = means.shape
    full = full_covariances(cov, ctype, k, d)
    out, resp = [], []
    for x in X:
        o = ~np.isnan(x)
        lp = np.array(
            [
                np.log(weights[j])
                + multivariate_normal(means[j, o], full[j][np.ix_(o, o)]).logpdf(x[o])
                for j in range(k)
            ]
        )
        out.append(logsumexp(lp))
        resp.append(np.exp(lp - logsumexp(lp)))
    return np.array(out), np.array(resp)


def _missing_data(n: int = 3000, d: int = 3, share: float = 0.25, seed: int = 3):
    _, means, _ = _mixture("full", k=3, d=d, seed=seed)
    return _rows(means, n=n, share=share, seed=seed + 1)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_fit_without_missing_values_is_the_complete_data_fit(ctype):
    from daskgmm import GaussianMixture

    X = np.nan_to_num(_missing_data(), nan=100.0)
    kwargs = dict(n_components=3, covariance_type=ctype, random_state=0)
    a = GaussianMixture(nan_policy="marginalize", **kwargs).fit(X)
    b = GaussianMixture(**kwargs).fit(X)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)
    assert a.lower_bound_ == b.lower_bound_


@pytest.mark.parametrize("scale", ["none", "standard"])
@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_predictions_and_lower_bound_match_scipy_on_the_observed_values(ctype, scale):
    from daskgmm import GaussianMixture

    X = _missing_data()
    gm = GaussianMixture(
        3, covariance_type=ctype, nan_policy="marginalize", scale=scale, random_state=0
    ).fit(X)
    ref, resp = _observed_logpdf(
        X, gm.weights_, gm.means_, gm.covariances_, gm.covariance_type
    )
    assert_allclose(gm.score_samples(X), ref, rtol=1e-10, atol=1e-10)
    assert_allclose(gm.predict_proba(X), resp, atol=1e-9)
    np.testing.assert_array_equal(gm.predict(X), resp.argmax(axis=1))
    assert gm.score(X) == pytest.approx(ref.mean(), rel=1e-11)
    # The lower bound is the mean log-likelihood before the last M-step: close to,
    # and not above, the final one (EM never decreases it).
    assert gm.converged_
    assert gm.lower_bound_ <= ref.mean() + 1e-12
    assert gm.lower_bound_ == pytest.approx(ref.mean(), abs=1e-3)
    assert np.all(np.diff(gm.lower_bounds_) >= -1e-10)
    n_params = 3 * 3 + (3 * 6 if ctype == "full" else 9) + 2
    assert gm.bic(X) == pytest.approx(-2 * ref.sum() + n_params * np.log(len(X)))


def test_log1p_columns_with_missing_values_score_in_original_units():
    from daskgmm import GaussianMixture

    X = _missing_data(d=3)
    X[:, 1] = np.exp(X[:, 1] / 40.0)  # positive, log1p-able; NaN stays NaN
    gm = GaussianMixture(
        2, nan_policy="marginalize", scale="standard", log1p=[1], random_state=0
    ).fit(X)
    Y = X.copy()
    Y[:, 1] = np.log1p(Y[:, 1])
    ref, _ = _observed_logpdf(Y, gm.weights_, gm.means_, gm.covariances_, "full")
    jacobian = -np.nan_to_num(Y[:, 1])  # d log1p(x)/dx = 1/(1+x), where observed
    assert_allclose(gm.score_samples(X), ref + jacobian, rtol=1e-9, atol=1e-9)
    assert gm.lower_bound_ == pytest.approx((ref + jacobian).mean(), abs=1e-3)


def test_missing_values_are_independent_of_chunking():
    import dask.array as da
    import pandas as pd

    from daskgmm import GaussianMixture

    X = _missing_data(n=4000)
    kwargs = dict(n_components=3, nan_policy="marginalize", random_state=0)
    a = GaussianMixture(**kwargs).fit(X)
    b = GaussianMixture(**kwargs).fit(da.from_array(X, chunks=(700, 3)))
    assert_allclose(b.means_, a.means_, rtol=1e-9)
    assert b.lower_bound_ == pytest.approx(a.lower_bound_, rel=1e-11)
    lazy = b.score_samples(da.from_array(X, chunks=(900, 3))).compute()
    assert_allclose(lazy, a.score_samples(X), rtol=1e-9)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    c = GaussianMixture(**kwargs).fit(frame)
    assert_allclose(c.means_, a.means_, rtol=1e-9)
    assert_allclose(c.impute(frame), a.impute(X), rtol=1e-9)


def test_rows_without_an_observed_value_are_left_out_and_infinities_raise():
    from daskgmm import GaussianMixture

    X = _missing_data()
    X[7] = np.nan
    kwargs = dict(n_components=2, nan_policy="marginalize", random_state=0)
    gm = GaussianMixture(**kwargs).fit(X)
    ref = GaussianMixture(**kwargs).fit(np.delete(X, 7, axis=0))
    assert gm.n_omitted_ == 1 and ref.n_omitted_ == 0
    assert_allclose(gm.means_, ref.means_, rtol=1e-12)
    assert gm.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-12)
    assert gm.predict(X)[7] == -1 and np.isnan(gm.score_samples(X)[7])
    assert np.isnan(gm.predict_proba(X)[7]).all()
    assert gm.score(X) == pytest.approx(ref.score(np.delete(X, 7, axis=0)), rel=1e-12)
    assert_allclose(gm.impute(X)[7], gm.weights_ @ gm.means_, rtol=1e-12)
    X[11, 1] = -np.inf
    with pytest.raises(ValueError, match=r"1 row\(s\) with an infinite value.*row 11"):
        GaussianMixture(**kwargs).fit(X)
    with pytest.raises(ValueError, match=r"infinite value \(first at row 11\)"):
        gm.predict(X)
    X[:] = np.nan
    with pytest.raises(ValueError, match="no row of X has an observed value"):
        GaussianMixture(**kwargs).fit(X)


def test_imputation_is_the_conditional_mean_and_draws_average_to_it():
    from daskgmm import GaussianMixture

    X = _missing_data(n=2000)
    gm = GaussianMixture(
        3, nan_policy="marginalize", scale="standard", random_state=0
    ).fit(X)
    missing = np.isnan(X)
    # Reference: Σ_k γ_k (μ_m + Σ_mo Σ_oo⁻¹ (x_o − μ_o)) row by row.
    _, resp = _observed_logpdf(X, gm.weights_, gm.means_, gm.covariances_, "full")
    want = X.copy()
    for i, x in enumerate(X[:300]):
        o, m = ~missing[i], missing[i]
        if not m.any():
            continue
        fill = 0.0
        for k in range(3):
            c = gm.covariances_[k]
            fill = fill + resp[i, k] * (
                gm.means_[k, m]
                + c[np.ix_(m, o)]
                @ np.linalg.solve(c[np.ix_(o, o)], x[o] - gm.means_[k, o])
            )
        want[i, m] = fill
    got = gm.impute(X)
    assert_allclose(got[:300], want[:300], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got[~missing], X[~missing])  # observed kept
    draws = np.stack(
        [gm.impute(X[:300], draw=True, random_state=s) for s in range(300)]
    )
    assert not np.isnan(draws).any()
    np.testing.assert_array_equal(draws[:, ~missing[:300]][0], X[:300][~missing[:300]])
    spread = draws.std(axis=0)[missing[:300]]
    error = np.abs(draws.mean(axis=0) - want[:300])[missing[:300]]
    assert (error < 5 * spread / np.sqrt(300) + 1e-12).mean() > 0.99
    assert spread.min() > 0.1  # draws, not the expectation


def test_scaling_moments_use_every_observed_value():
    from daskgmm import _preprocess as P

    X = _missing_data(n=500, share=0.4)
    w = np.random.default_rng(0).random(len(X))
    parts = [
        P.observed_moments_block(X[i : i + 130], (), i // 130, w[i : i + 130])
        for i in range(0, len(X), 130)
    ]
    stats = P.combine_moments(*parts)
    obs = ~np.isnan(X)
    for j in range(X.shape[1]):
        x, wj = X[obs[:, j], j], w[obs[:, j]]
        mean = np.average(x, weights=wj)
        assert stats["mean"][j] == pytest.approx(mean, rel=1e-12)
        assert stats["m2"][j] == pytest.approx(wj @ (x - mean) ** 2, rel=1e-10)
        assert stats["weight"][j] == pytest.approx(wj.sum(), rel=1e-12)
        assert stats["min"][j] == x.min() and stats["max"][j] == x.max()
    assert stats["rows_weight"] == pytest.approx(w.sum(), rel=1e-12)


MARGINALIZE_JOB = (
    "data: {source: parquet, path: t.parquet}\n"
    "model: {n_components: 3, nan_policy: marginalize, random_state: 0}\n"
    "output: {directory: out, labels: true, imputed: true, imputation_draws: 2}\n"
    "cluster: {n_workers: 1}\n"
)


def test_a_job_fits_a_table_with_nulls_on_its_observed_values(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    from daskgmm import GaussianMixture
    from tests.conftest import run_job

    X = _missing_data(n=3000)
    X[5] = np.nan  # no observed value: left out
    # Nulls (not NaN) in the table: Parquet's missing values.
    table = pa.table(
        {c: pa.array(X[:, j], mask=np.isnan(X[:, j])) for j, c in enumerate("abc")}
    )
    assert table.column("a").null_count > 0
    pq.write_table(table, tmp_path / "t.parquet")
    result = run_job(tmp_path, MARGINALIZE_JOB)
    assert result.returncode == 0, result.stderr
    assert "1 row(s) with every value missing left out of the fit" in result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    gm = GaussianMixture(3, nan_policy="marginalize", random_state=0).fit(X)
    assert metrics["n_omitted"] == 1
    assert metrics["mean_log_likelihood"] == pytest.approx(gm.score(X), rel=1e-9)
    missing = metrics["missing_values"]
    assert_allclose(missing["share_per_feature"], np.isnan(X).mean(axis=0), rtol=1e-12)
    assert missing["rows_with_missing"] == int(np.isnan(X).any(axis=1).sum())
    got = zarr.open_array(str(tmp_path / "out" / "predictions.zarr" / "label"))[:]
    assert got[5] == -1
    # The same clustering as the estimator's, up to the order of the components.
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(got, gm.predict(X)) > 0.999
    store = str(tmp_path / "out" / "predictions.zarr")
    imputed = zarr.open_array(store + "/imputed")[:]
    assert_allclose(imputed, gm.impute(X), rtol=1e-6, atol=1e-6)
    draws = [zarr.open_array(f"{store}/imputed_draw_{i}")[:] for i in range(2)]
    observed = ~np.isnan(X)
    for draw in draws:
        np.testing.assert_array_equal(draw[observed], X[observed])
        assert not np.isnan(draw).any()
    assert not np.array_equal(draws[0], draws[1])


def test_a_parquet_output_has_one_imputed_column_per_feature(tmp_path):
    import pandas as pd

    from daskgmm import GaussianMixture
    from tests.conftest import run_job

    X = _missing_data(n=2000)
    pd.DataFrame(X, columns=["a", "b", "c"]).to_parquet(tmp_path / "t.parquet")
    job = MARGINALIZE_JOB.replace("imputation_draws: 2", "format: parquet")
    result = run_job(tmp_path, job)
    assert result.returncode == 0, result.stderr
    out = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert list(out.columns) == ["label", "imputed_a", "imputed_b", "imputed_c"]
    gm = GaussianMixture(3, nan_policy="marginalize", random_state=0).fit(X)
    assert_allclose(out.iloc[:, 1:].to_numpy(), gm.impute(X), rtol=1e-6, atol=1e-6)


def test_a_marginalizing_model_is_saved_and_loaded(tmp_path):
    import daskgmm
    from daskgmm import GaussianMixture

    X = _missing_data()
    gm = GaussianMixture(3, nan_policy="marginalize", random_state=0).fit(X)
    gm.save(str(tmp_path / "model"))
    loaded = daskgmm.load(str(tmp_path / "model"))
    assert loaded.nan_policy == "marginalize"
    np.testing.assert_array_equal(loaded.score_samples(X), gm.score_samples(X))
    np.testing.assert_array_equal(loaded.impute(X), gm.impute(X))


def test_a_bayesian_mixture_on_observed_values_keeps_the_components_it_needs():
    from daskgmm import BayesianGaussianMixture, GaussianMixture

    _, means, _ = _mixture("full", k=3, d=3, seed=3)
    means = 100.0 + 3.0 * (means - 100.0)  # well apart: the approximation is close
    X = _rows(means, n=4000, share=0.25, seed=4)
    bgm = BayesianGaussianMixture(
        n_components=8, nan_policy="marginalize", random_state=0, max_iter=500
    ).fit(X)
    assert (bgm.weights_ > 0.02).sum() == 3
    gm = GaussianMixture(3, nan_policy="marginalize", random_state=0).fit(X)
    kept = bgm.means_[bgm.weights_ > 0.02]
    for mean, true in zip(gm.means_, means[_nearest(gm.means_, means)], strict=True):
        assert np.linalg.norm(kept - mean, axis=1).min() < 0.1  # noise std 2
        assert np.linalg.norm(true - mean) < 0.25
    assert bgm.score(X) == pytest.approx(gm.score(X), abs=0.01)


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of ``a``, the index of the nearest row of ``b``."""
    return np.linalg.norm(a[:, None] - b[None], axis=2).argmin(axis=1)


@pytest.mark.filterwarnings("ignore:Best performing initialization")
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_the_lower_bound_is_the_observed_log_likelihood_to_1e10(ctype, weighted):
    """The lower bound of iteration n is the (weighted) mean log-likelihood of the
    observed values under the parameters of iteration n - 1: scipy, row by row."""
    from daskgmm import GaussianMixture

    X = _missing_data(n=1500)
    w = np.random.default_rng(5).uniform(0.2, 3.0, len(X)) if weighted else None
    kwargs = dict(n_components=3, covariance_type=ctype, tol=0.0, random_state=0)
    kwargs["nan_policy"] = "marginalize"
    before = GaussianMixture(max_iter=4, **kwargs).fit(X, sample_weight=w)
    after = GaussianMixture(max_iter=5, **kwargs).fit(X, sample_weight=w)
    ref, _ = _observed_logpdf(
        X, before.weights_, before.means_, before.covariances_, ctype
    )
    want = np.average(ref, weights=w)
    assert after.lower_bounds_[:4] == before.lower_bounds_
    assert after.lower_bound_ == pytest.approx(want, rel=1e-10, abs=0)


@pytest.mark.parametrize("share", [0.3, 0.5])
def test_without_complete_rows_the_clusters_are_still_found(share):
    """16 features, 30% or 50% of the values missing: almost no complete row, so
    the start is k-means on the observed values (k-POD)."""
    from sklearn.metrics import adjusted_rand_score

    from daskgmm import GaussianMixture

    rng = np.random.default_rng(11)
    d, k, n = 16, 4, 4000
    centres = rng.normal(scale=4.0, size=(k, d))
    truth = rng.integers(0, k, n)
    full = centres[truth] + rng.normal(size=(n, d))
    X = full.copy()
    X[rng.random(X.shape) < share] = np.nan
    assert (~np.isnan(X).any(axis=1)).sum() < 0.01 * n
    gm = GaussianMixture(k, nan_policy="marginalize", random_state=0).fit(X)
    assert adjusted_rand_score(truth, gm.predict(full)) == 1.0
    # Each cluster's mean of its observed values (no correlation within a cluster:
    # the maximum-likelihood means are close to them).
    observed_means = np.array([np.nanmean(X[truth == j], axis=0) for j in range(k)])
    error = gm.means_ - observed_means[_nearest(gm.means_, centres)]
    assert np.abs(error).max() < 0.03  # σ = 1 per feature; ~1000 rows a cluster


def test_k_pod_fills_missing_values_from_the_centres():
    from daskgmm._init import fill_from_centers, lloyd

    rows = np.array([[0.0, 0.0], [0.2, 0.0], [10.0, 10.0], [10.2, 10.0], [0.1, 5.0]])
    missing = np.zeros_like(rows, dtype=bool)
    missing[4, 1] = True  # (0.1, ?) belongs with the first two
    centres = np.array([[0.0, 0.0], [10.0, 10.0]])
    got = lloyd(rows, centres, missing=missing)
    assert_allclose(got, [[0.1, 0.0], [10.1, 10.0]], atol=0.05)  # to k-means tol
    # Without the mask the made-up 5.0 pulls the first centre.
    assert lloyd(rows, centres)[0, 1] == pytest.approx(5.0 / 3)
    filled = fill_from_centers(rows, missing, got)
    assert_allclose(filled[4], [0.1, 0.0], atol=0.05)


def test_a_marginalizing_fit_readies_the_missing_value_kernels_and_says_so(
    monkeypatch, caplog
):
    if not _compiled.available():
        pytest.skip("numba is not installed")
    from daskgmm import GaussianMixture

    # As on a machine whose cache holds the EM kernels but not these.
    monkeypatch.setattr(_compiled, "_warm", set())
    monkeypatch.setattr(
        _compiled, "_in_cache", lambda kernel="_estep": kernel == "_estep"
    )
    X = _missing_data(n=600)

    def fit_messages() -> list[str]:
        caplog.clear()
        with caplog.at_level("INFO", logger="daskgmm"):
            GaussianMixture(
                2, kernel="compiled", nan_policy="marginalize", random_state=0
            ).fit(X)
        return [r.getMessage() for r in caplog.records if "compiling" in r.getMessage()]

    assert fit_messages() == [
        "compiling the kernels for missing values for this machine "
        "(first run only, ~25 s)"
    ]
    assert {"float64", "missing float64"} <= _compiled._warm
    assert fit_messages() == []  # once per process
