"""The EM loop (:mod:`daskgmm._em`) and the runner over it (:mod:`daskgmm._runner`).

References: one E+M step in NumPy brute force (responsibilities from
``scipy.stats.multivariate_normal``, means by ``np.average`` and covariances by
``np.cov`` with the responsibilities as ``aweights``), hand-built statistics for the
dead-component rules, and each candidate or restart run on its own.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from daskgmm import ConvergenceWarning, GaussianMixture, _compiled
from daskgmm import _kernels as K
from daskgmm._em import (
    DEAD_SHARE,
    DataPasses,
    Run,
    dead_components,
    precision_parameters,
    reseed,
    run_em_batched,
)
from daskgmm._init import (
    draw_sample,
    plan_initial,
    run_plans,
    sample_from_result,
)
from daskgmm._plan import plan_fit
from daskgmm._runner import Candidate, run_candidates
from daskgmm._validation import check_random_state
from tests.conftest import full_covariances, make_mixture

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
REG = 1e-6


def _quiet_fit(X, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(**kwargs).fit(X)


def _typed(full: np.ndarray, ctype: str, nk: np.ndarray) -> np.ndarray:
    """(k, d, d) covariances as ``ctype`` stores them (tied: pooled by ``nk``)."""
    if ctype == "full":
        return full
    if ctype == "tied":
        return np.tensordot(nk / nk.sum(), full, axes=1)
    diag = np.diagonal(full, axis1=1, axis2=2)
    return diag if ctype == "diag" else diag.mean(axis=1)


def _data_and_start(seed: int, ctype: str, k: int = 3, d: int = 2, n: int = 500):
    """Rows of a random mixture and a start of type ``ctype`` near it: weights,
    means moved by half a unit, covariances."""
    rng = np.random.RandomState(seed)
    X, weights, means, cov = make_mixture(rng, k, d, n)
    return X, (weights, means + rng.randn(k, d) * 0.5, _typed(cov, ctype, weights))


def brute_force_em_step(X, weights, means, full_cov, ctype, reg_covar):
    """One E+M step by the textbook formulas; returns the new (weights, means,
    covariances of type ``ctype``) and the mean log-likelihood of the E-step."""
    k, d = means.shape
    log_dens = np.column_stack(
        [
            np.log(weights[j]) + multivariate_normal(means[j], full_cov[j]).logpdf(X)
            for j in range(k)
        ]
    )
    log_norm = logsumexp(log_dens, axis=1)
    resp = np.exp(log_dens - log_norm[:, None])
    nk = resp.sum(axis=0)
    new_means = np.stack([np.average(X, axis=0, weights=resp[:, j]) for j in range(k)])
    cov = np.stack(
        [np.cov(X, rowvar=False, aweights=resp[:, j], bias=True) for j in range(k)]
    )
    new_cov = _typed(cov, ctype, nk)
    if ctype in ("full", "tied"):
        new_cov = new_cov + reg_covar * np.eye(d)
    else:
        new_cov = new_cov + reg_covar
    return nk / X.shape[0], new_means, new_cov, log_norm.mean()


def _kernels() -> list[str]:
    return ["numpy", "compiled"] if _compiled.available() else ["numpy"]


###############################################################################
# One EM step against NumPy brute force


@pytest.mark.parametrize("kernel", _kernels())
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_one_em_step_equals_the_brute_force_step(ctype, kernel):
    X, (weights, means, cov) = _data_and_start(0, ctype)
    start = precision_parameters(weights, means, cov, ctype)
    want = brute_force_em_step(
        X, weights, means, full_covariances(cov, ctype, 3, 2), ctype, REG
    )
    # Through the loop: one pass over ragged blocks, tree-combined.
    passes = DataPasses(
        da.from_array(X, chunks=((60, 140, 7, 93, 200), 2)), 2, kernel=kernel
    )
    run = Run(start, ctype, tol=0.0, reg_covar=REG, max_iter=1)
    run_em_batched(passes, [run])
    # Run.step alone on the statistics of the whole array in one block.
    alone = Run(start, ctype, tol=0.0, reg_covar=REG, max_iter=1)
    kp = K.prepare(weights, means, start.precisions_cholesky, ctype)
    alone.step(K.estep_block(X, kp))
    for got in (run, alone):
        assert got.n_iter == 1 and not got.active
        assert_allclose(got.lower_bound, want[3], rtol=1e-12)
        assert got.history == [got.lower_bound]
        for new, ref in zip(got.params.arrays()[:3], want[:3], strict=True):
            assert_allclose(new, ref, rtol=1e-12, atol=1e-14)
        assert_allclose(
            got.params.precisions_cholesky,
            K.precision_cholesky_from_covariances(want[2], ctype),
            rtol=1e-10,
        )


def test_the_lower_bound_change_and_convergence_follow_tol():
    X, (weights, means, cov) = _data_and_start(1, "full", k=2, n=300)
    start = precision_parameters(weights, means, cov, "full")
    run = Run(start, "full", tol=1e-3, reg_covar=REG, max_iter=200)
    run_em_batched(DataPasses(da.from_array(X, chunks=(64, 2)), 4), [run])
    assert run.converged and run.n_iter < 200
    diffs = np.diff(run.history)
    assert abs(diffs[-1]) < 1e-3 <= np.abs(diffs[:-1]).min()
    # EM never decreases the likelihood.
    assert (diffs > -1e-12).all()


###############################################################################
# Components that lose their rows


def test_dead_components_on_constructed_statistics():
    stats = {"n": 100, "w": 100.0, "nk": np.array([50.0, 1e-9, 49.0, 1.0])}
    assert_array_equal(dead_components(stats), [1])
    # Weighted: the share is of an average row's weight (here 2).
    w_stats = {"n": 100, "w": 200.0, "nk": np.array([0.0, 1.9 * DEAD_SHARE, 3e-6])}
    assert_array_equal(dead_components(w_stats), [0, 1])
    assert dead_components({"n": 0, "w": 0.0, "nk": np.zeros(3)}).size == 0


def _log_best(rows, weights, means, full_cov):
    return np.max(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(rows)
            for w, m, c in zip(weights, means, full_cov, strict=True)
        ],
        axis=0,
    )


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_reseed_moves_dead_components_to_the_worst_explained_rows(ctype):
    k, d = 4, 2
    _, (weights, means, cov) = _data_and_start(2, ctype, k=k, d=d)
    rng = np.random.RandomState(2)
    previous = precision_parameters(weights, means, cov, ctype)
    rows = np.vstack([rng.randn(40, d), [[30.0, -30.0]], [[-25.0, 10.0]]])
    rng.shuffle(rows)
    new_w = np.array([0.5, 0.0, 0.3, 0.0])
    new_cov = cov * 1.5
    dead = np.array([1, 3])
    got = reseed((new_w, means.copy(), new_cov), dead, rows, previous, ctype)
    # The two rows the previous mixture explains worst, worst first.
    order = np.argsort(
        _log_best(rows, weights, means, full_covariances(cov, ctype, k, d))
    )
    assert_array_equal(got[1][dead], rows[order[:2]])
    assert_array_equal(got[1][[0, 2]], means[[0, 2]])
    want_w = new_w.copy()
    want_w[dead] = 1.0 / rows.shape[0]
    assert_allclose(got[0], want_w / want_w.sum(), rtol=1e-15)
    if ctype == "tied":
        assert_array_equal(got[2], new_cov)
    else:
        live = np.average(new_cov[[0, 2]], axis=0, weights=[0.5, 0.3])
        assert_allclose(got[2][dead], np.stack([live, live]), rtol=1e-14)
        assert_array_equal(got[2][[0, 2]], new_cov[[0, 2]])
    again = reseed((new_w, means.copy(), new_cov), dead, rows, previous, ctype)
    for a, b in zip(got, again, strict=True):
        assert_array_equal(a, b)


def test_a_run_reseeds_a_component_that_lost_its_rows():
    from daskgmm.exceptions import ComponentReseededWarning

    rng = np.random.RandomState(3)
    X = np.vstack([rng.randn(200, 2), rng.randn(200, 2) + 10])
    # Component 2 starts far from every row: it gets no responsibility.
    means = np.array([[0.0, 0.0], [10.0, 10.0], [1e3, 1e3]])
    start = precision_parameters(
        np.full(3, 1 / 3), means, np.stack([np.eye(2)] * 3), "full"
    )
    passes = DataPasses(da.from_array(X, chunks=(100, 2)), 4)
    kept = Run(start, "full", 0.0, REG, 1)
    with pytest.warns(ComponentReseededWarning, match="kept with weight ~0"):
        run_em_batched(passes, [kept])
    assert kept.n_reseeded == 0 and kept.params.weights[2] < 1e-15
    sample = X[::7]
    moved = Run(start, "full", 0.0, REG, 1, reseed_rows=sample)
    with pytest.warns(ComponentReseededWarning, match="re-seeded at the sample rows"):
        run_em_batched(passes, [moved])
    assert moved.n_reseeded == 1
    want = reseed(
        K.m_step(
            K.estep_block(
                X, K.prepare(*start.arrays()[:2], start.precisions_cholesky, "full")
            ),
            means,
            REG,
            "full",
        ),
        np.array([2]),
        sample,
        start,
        "full",
    )
    assert_allclose(moved.params.means, want[1], rtol=1e-12)
    assert_allclose(moved.params.weights, want[0], rtol=1e-12)


###############################################################################
# Batched runs equal runs alone


def test_batched_restarts_equal_restarts_one_after_another():
    """GaussianMixture(n_init=R): the same runs as R sequential initialisations."""
    X = np.random.RandomState(5).standard_t(3, size=(3000, 2))  # no clear clusters
    kwargs = dict(n_components=4, covariance_type="full", tol=1e-4, max_iter=40)
    batched = _quiet_fit(X, n_init=4, random_state=11, init_params="kmeans", **kwargs)
    # Sequential reference built from the loop layer's pieces, one run at a time.
    passes = plan_fit(X).passes
    rng = check_random_state(11)
    seed = int(rng.randint(np.iinfo(np.int32).max))
    result = draw_sample(passes, seed, 50_000, X.shape[0])
    sample = sample_from_result(result, weighted=False)
    results = []
    for _ in range(4):
        plan = plan_initial(
            "kmeans",
            sample,
            n_components=4,
            covariance_type="full",
            reg_covar=1e-6,
            rng=rng,
        )
        ((weights, means, cov),) = run_plans(passes, [plan])
        start = precision_parameters(weights, means, cov, "full")
        run = Run(start, "full", 1e-4, 1e-6, 40, reseed_rows=sample.rows)
        run_em_batched(passes, [run])
        results.append(run.result())
    best = max(results, key=lambda r: r.lower_bound)
    assert (
        len({r.n_iter for r in results} | {round(r.lower_bound, 9) for r in results})
        >= 3
    )
    assert batched.lower_bound_ == best.lower_bound
    assert batched.n_iter_ == best.n_iter
    np.testing.assert_array_equal(batched.means_, best.params.means)


def _same_result(got, want) -> None:
    assert got.n_iter == want.n_iter
    assert got.converged == want.converged
    assert got.lower_bound == want.lower_bound
    assert got.lower_bounds == want.lower_bounds
    for a, b in zip(got.params.arrays(), want.params.arrays(), strict=True):
        assert_array_equal(a, b)


def test_run_candidates_of_two_equals_each_candidate_alone():
    rng = np.random.RandomState(4)
    X, *_ = make_mixture(rng, 3, 2, 1200)
    candidates = [
        Candidate(2, "full", tol=1e-6, max_iter=15, random_state=0),
        Candidate(3, "diag", tol=1e-6, max_iter=15, n_init=2, random_state=1),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        both = run_candidates(plan_fit(da.from_array(X, chunks=(250, 2))), candidates)
        alone = [
            run_candidates(plan_fit(da.from_array(X, chunks=(250, 2))), [c])
            for c in candidates
        ]
    assert len(both.outcomes) == 2
    for out, single in zip(both.outcomes, alone, strict=True):
        (ref,) = single.outcomes
        assert out.error is None and ref.error is None
        assert len(out.runs) == out.candidate.n_init == len(ref.runs)
        _same_result(out.best, ref.best)
        for run, ref_run in zip(out.runs, ref.runs, strict=True):
            _same_result(run.result(), ref_run.result())
    # The passes are shared: as many EM passes as the longest candidate alone.
    assert both.em_passes == max(s.em_passes for s in alone)
