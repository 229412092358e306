"""The chunk kernels of ``daskgmm._kernels`` against independent references.

Every formula is checked on small NumPy arrays against scipy.stats, ``np.cov`` with
weights, ``np.linalg`` or a brute-force NumPy computation on the whole array.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from daskgmm import _kernels as K
from tests.conftest import full_covariances

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

###############################################################################
# Helpers: random mixtures, full covariance matrices, brute-force references


def random_spd(rng: np.random.Generator, d: int, scale: float = 1.0) -> np.ndarray:
    """A random symmetric positive definite matrix with condition number < ~50."""
    a = rng.normal(size=(d, d))
    return (a @ a.T / d + 0.3 * np.eye(d)) * scale**2


def random_covariances(
    rng: np.random.Generator, k: int, d: int, ctype: str, scale: float = 1.0
) -> np.ndarray:
    if ctype == "full":
        return np.stack([random_spd(rng, d, scale) for _ in range(k)])
    if ctype == "tied":
        return random_spd(rng, d, scale)
    if ctype == "diag":
        return rng.uniform(0.2, 3.0, size=(k, d)) * scale**2
    return rng.uniform(0.2, 3.0, size=k) * scale**2


def random_mixture(rng, k, d, ctype, scale=1.0, offset=0.0):
    """Weights, means, covariances of a random mixture and its precision factors."""
    weights = rng.dirichlet(np.full(k, 2.0))
    means = offset + rng.normal(scale=3.0 * scale, size=(k, d))
    cov = random_covariances(rng, k, d, ctype, scale)
    prec_chol = K.precision_cholesky_from_covariances(cov, ctype)
    return weights, means, cov, prec_chol


def draw_rows(rng, n, weights, means, full_cov):
    """Rows drawn from the mixture, plus a few outliers far in the tails."""
    labels = rng.choice(len(weights), size=n, p=weights)
    noise = np.stack(
        [rng.multivariate_normal(np.zeros(means.shape[1]), full_cov[j]) for j in labels]
    ).reshape(n, means.shape[1])
    X = means[labels] + noise
    n_out = n // 10
    if n_out:
        X[:n_out] += rng.normal(scale=20.0, size=(n_out, means.shape[1])) * np.sqrt(
            full_cov[0].diagonal()
        )
    return X


def scipy_weighted_log_prob(X, weights, means, full_cov):
    """log π_k + log N(x | μ_k, Σ_k) by scipy.stats, shape (n, K)."""
    n = X.shape[0]
    return np.stack(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(X).reshape(n)
            for w, m, c in zip(weights, means, full_cov, strict=True)
        ],
        axis=1,
    )


def brute_force_stats(X, weights, means, full_cov, ctype):
    """E-step statistics of the whole array, shifted by the means, by brute force.

    Also returns ``*_abs``: the same sums of absolute values of the terms, the scale
    against which the rounding error of a sum is measured.
    """
    lp = scipy_weighted_log_prob(X, weights, means, full_cov)
    lse = logsumexp(lp, axis=1)
    resp = np.exp(lp - lse[:, None])
    diff = X[:, None, :] - means[None, :, :]  # (n, K, d)
    s2_full = np.einsum("nk,nki,nkj->kij", resp, diff, diff)
    s2_full_abs = np.einsum("nk,nki,nkj->kij", resp, np.abs(diff), np.abs(diff))
    if ctype == "full":
        s2, s2_abs = s2_full, s2_full_abs
    elif ctype == "tied":
        s2, s2_abs = s2_full.sum(axis=0), s2_full_abs.sum(axis=0)
    else:
        s2 = np.einsum("kii->ki", s2_full)
        s2_abs = np.einsum("kii->ki", s2_full_abs)
    return {
        "nk": resp.sum(axis=0),
        "s1": np.einsum("nk,nkd->kd", resp, diff),
        "s1_abs": np.einsum("nk,nkd->kd", resp, np.abs(diff)),
        "s2": s2,
        "s2_abs": s2_abs,
        "loglik": float(lse.sum()),
        "loglik_abs": float(np.abs(lse).sum()),
        "n": X.shape[0],
    }


def assert_sums_close(got, want, abs_scale, rtol, what):
    """|got − want| ≤ rtol · Σ|terms| elementwise (a sum's natural error bound)."""
    got, want, abs_scale = np.asarray(got), np.asarray(want), np.asarray(abs_scale)
    assert got.shape == want.shape, what
    bound = rtol * abs_scale + 1e-300
    excess = np.abs(got - want) - bound
    assert np.all(excess <= 0), (
        f"{what}: max |error| {np.max(np.abs(got - want)):.3e}, "
        f"max excess over the bound {np.max(excess):.3e}"
    )


def assert_stats_match(got, ref, rtol=1e-9):
    assert got["n"] == ref["n"]
    assert got["n_bad"] == 0
    assert got["first_bad"] is None
    for key in ("nk", "s1", "s2"):
        assert np.all(np.isfinite(got[key])), key
        assert got[key].dtype == np.float64, key
    assert_sums_close(got["nk"], ref["nk"], ref["nk"], rtol, "nk")
    assert_sums_close(got["s1"], ref["s1"], ref["s1_abs"], rtol, "s1")
    assert_sums_close(got["s2"], ref["s2"], ref["s2_abs"], rtol, "s2")
    assert_sums_close(got["loglik"], ref["loglik"], ref["loglik_abs"], rtol, "loglik")


def make_problem(seed, n, d, k, ctype, offset=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    weights, means, cov, prec_chol = random_mixture(rng, k, d, ctype, scale, offset)
    full_cov = full_covariances(cov, ctype, k, d)
    X = draw_rows(rng, n, weights, means, full_cov)
    kp = K.prepare(weights, means, prec_chol, ctype)
    return X, weights, means, cov, full_cov, prec_chol, kp


def tree_combine(parts, split_every, combine=K.combine_stats):
    """Combine partial results in a tree of fan-in ``split_every`` (as _reduce does)."""
    level = list(parts)
    while len(level) > 1:
        level = [
            combine(*level[j : j + split_every])
            for j in range(0, len(level), split_every)
        ]
    return level[0]


# Non-finite rows make NumPy warn (NaN·0 in a product, squares that overflow) before
# the kernels mask them; those warnings are expected in the tests that feed such rows.
nonfinite_warnings = pytest.mark.filterwarnings(
    "ignore:(invalid value|overflow) encountered:RuntimeWarning"
)

SHAPES = [(1, 1, 1), (37, 2, 3), (200, 5, 4), (130, 9, 6)]  # (n, d, K); d=9 ≥ SMALL_D


def over_problems(test):
    """Parametrize ``test(ctype, n, d, k, offset)`` over the covariance types, the
    SHAPES and the offsets 0 and 1e6."""
    test = pytest.mark.parametrize("offset", [0.0, 1e6])(test)
    test = pytest.mark.parametrize(("n", "d", "k"), SHAPES)(test)
    return pytest.mark.parametrize("ctype", COVARIANCE_TYPES)(test)


def shaped_problem(salt, ctype, n, d, k, offset):
    """:func:`make_problem` seeded by the shape (and ``salt``, one per test)."""
    return make_problem(n * 100 + d * 10 + k + salt, n, d, k, ctype, offset)


###############################################################################
# Log-densities


@over_problems
def test_weighted_log_prob_matches_scipy(ctype, n, d, k, offset):
    X, weights, means, _, full_cov, _, kp = shaped_problem(0, ctype, n, d, k, offset)
    ref = scipy_weighted_log_prob(X, weights, means, full_cov)
    got = K.weighted_log_prob(X - kp.center, kp)
    assert got.shape == (n, k)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


@over_problems
def test_per_row_outputs_match_scipy(ctype, n, d, k, offset):
    X, weights, means, _, full_cov, _, kp = shaped_problem(1, ctype, n, d, k, offset)
    lp = scipy_weighted_log_prob(X, weights, means, full_cov)
    lse = logsumexp(lp, axis=1)
    score = K.score_samples_block(X, kp)
    assert score.dtype == np.float64
    np.testing.assert_allclose(score, lse, rtol=1e-9, atol=1e-9)
    proba = K.predict_proba_block(X, kp)
    np.testing.assert_allclose(proba, np.exp(lp - lse[:, None]), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    labels = K.predict_block(X, kp)
    assert labels.dtype == np.int64
    # Rows whose two best components are within rounding of each other may go
    # either way; every other row must take the reference's argmax.
    top2 = np.sort(lp, axis=1)[:, -2:] if k > 1 else np.c_[lp - 1.0, lp]
    clear = top2[:, 1] - top2[:, 0] > 1e-6
    np.testing.assert_array_equal(labels[clear], lp.argmax(axis=1)[clear])
    total = K.loglik_block(X, kp, block_index=3)
    assert total["n"] == n and total["n_bad"] == 0 and total["first_bad"] is None
    np.testing.assert_allclose(total["loglik"], lse.sum(), rtol=1e-10)


def test_per_row_outputs_cast_to_the_requested_dtype():
    X, weights, means, _, full_cov, _, kp = make_problem(5, 40, 3, 2, "full")
    lse = logsumexp(scipy_weighted_log_prob(X, weights, means, full_cov), axis=1)
    score = K.score_samples_block(X.astype(np.float32), kp, out_dtype=np.float32)
    assert score.dtype == np.float32
    np.testing.assert_allclose(score, lse, rtol=1e-5)
    proba = K.predict_proba_block(X.astype(np.float32), kp, out_dtype=np.float32)
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


@nonfinite_warnings
def test_per_row_outputs_reject_rows_with_nan_or_inf():
    X, *_, kp = make_problem(6, 30, 2, 2, "diag")
    X[4, 0] = np.nan
    X[9, 1] = np.inf
    message = (
        r"Input X contains NaN or infinity \(or values too large for float64\) "
        r"in 2 row\(s\) of a block of 30 rows \(first at row 4 of the block\); drop "
        r"or impute those rows before fitting or predicting"
    )
    for kernel in (K.predict_block, K.predict_proba_block, K.score_samples_block):
        with pytest.raises(ValueError, match=message):
            kernel(X, kp)


def test_zero_weight_component_gets_no_responsibility():
    X, _, means, _, full_cov, prec_chol, _ = make_problem(7, 60, 3, 3, "full")
    weights = np.array([0.5, 0.0, 0.5])
    kp = K.prepare(weights, means, prec_chol, "full")
    proba = K.predict_proba_block(X, kp)
    assert np.all(proba[:, 1] == 0.0)
    lp = scipy_weighted_log_prob(X, [0.5, 1.0, 0.5], means, full_cov)[:, [0, 2]]
    np.testing.assert_allclose(
        K.score_samples_block(X, kp), logsumexp(lp, axis=1), rtol=1e-10
    )


###############################################################################
# E-step statistics


@over_problems
def test_estep_block_matches_brute_force(ctype, n, d, k, offset):
    X, weights, means, _, full_cov, _, kp = shaped_problem(2, ctype, n, d, k, offset)
    ref = brute_force_stats(X, weights, means, full_cov, ctype)
    got = K.estep_block(X, kp, block_index=2)
    assert_stats_match(got, ref, rtol=1e-9)


@nonfinite_warnings
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize(("d", "k"), [(3, 4), (9, 2)])
def test_estep_block_across_sub_blocks(ctype, d, k, monkeypatch):
    """Rows split into many sub-blocks of 7 give the same totals."""
    monkeypatch.setattr(K, "SUBBLOCK_ELEMENTS", 1)
    monkeypatch.setattr(K, "MIN_SUBBLOCK_ROWS", 7)
    assert K.subblock_rows(k, d) == 7
    X, weights, means, _, full_cov, _, kp = make_problem(11 + d, 50, d, k, ctype)
    ref = brute_force_stats(X, weights, means, full_cov, ctype)
    assert_stats_match(K.estep_block(X, kp), ref, rtol=1e-9)
    # A bad row in the third sub-block is located within the block.
    X[17, -1] = np.nan
    X[30, 0] = -np.inf
    got = K.estep_block(X, kp, block_index=4)
    assert got["n_bad"] == 2
    assert got["first_bad"] == (4, 17)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_estep_block_float32_accumulates_in_float64(ctype):
    X, weights, means, _, full_cov, _, kp = make_problem(21, 300, 4, 3, ctype, 100.0)
    X32 = X.astype(np.float32)
    got = K.estep_block(X32, kp)
    same_numbers = K.estep_block(X32.astype(np.float64), kp)
    for key in ("nk", "s1", "s2"):
        assert got[key].dtype == np.float64
        np.testing.assert_array_equal(got[key], same_numbers[key])
    assert isinstance(got["loglik"], float)
    assert got["loglik"] == same_numbers["loglik"]
    # And those are the brute-force statistics of the float32 numbers, to float64
    # accuracy (a float32 accumulation would be off by ~1e-5 here).
    ref = brute_force_stats(X32.astype(np.float64), weights, means, full_cov, ctype)
    assert_stats_match(got, ref, rtol=1e-9)


def test_estep_block_empty_block_gives_zero_statistics():
    *_, kp = make_problem(3, 10, 3, 2, "full")
    got = K.estep_block(np.empty((0, 3)), kp, block_index=1)
    assert got["n"] == 0 and got["n_bad"] == 0 and got["first_bad"] is None
    assert got["loglik"] == 0.0
    for key, shape in (("nk", (2,)), ("s1", (2, 3)), ("s2", (2, 3, 3))):
        assert got[key].shape == shape
        assert not got[key].any()


@nonfinite_warnings
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_non_finite_rows_are_counted_and_left_out(ctype):
    X, weights, means, _, full_cov, _, kp = make_problem(31, 60, 3, 3, ctype)
    bad_rows = [3, 7, 8, 41]
    clean = np.delete(X, bad_rows, axis=0)
    X[3, 1] = np.nan
    X[7, 0] = np.inf
    X[8, 2] = -np.inf
    X[41] = 1e200  # finite, but its squared distance overflows float64
    got = K.estep_block(X, kp, block_index=5)
    assert got["n_bad"] == 4
    assert got["first_bad"] == (5, 3)
    assert got["n"] == 60
    ref = brute_force_stats(clean, weights, means, full_cov, ctype)
    ref["n"] = 60
    got_clean = dict(got, n_bad=0, first_bad=None)
    assert_stats_match(got_clean, ref, rtol=1e-9)
    # Same for the log-likelihood-only pass.
    ll = K.loglik_block(X, kp, block_index=5)
    assert ll["n_bad"] == 4 and ll["first_bad"] == (5, 3) and ll["n"] == 60
    np.testing.assert_allclose(ll["loglik"], ref["loglik"], rtol=1e-10)


###############################################################################
# Combining statistics


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_combine_stats_is_order_fixed_and_equals_the_whole_block(ctype):
    X, weights, means, _, full_cov, _, kp = make_problem(41, 230, 4, 3, ctype, 50.0)
    edges = [0, 31, 31, 100, 170, 171, 230]  # includes an empty and a 1-row block
    parts = [
        K.estep_block(X[a:b], kp, block_index=i)
        for i, (a, b) in enumerate(itertools.pairwise(edges))
    ]
    snapshot = [{key: np.copy(v) for key, v in p.items()} for p in parts]
    first = K.combine_stats(K.combine_stats(*parts[:2]), K.combine_stats(*parts[2:]))
    second = K.combine_stats(K.combine_stats(*parts[:2]), K.combine_stats(*parts[2:]))
    for key in ("nk", "s1", "s2"):
        np.testing.assert_array_equal(first[key], second[key])
    assert first["loglik"] == second["loglik"]
    # The inputs are not modified.
    for part, snap in zip(parts, snapshot, strict=True):
        for key in ("nk", "s1", "s2"):
            np.testing.assert_array_equal(part[key], snap[key])
    whole = K.estep_block(X, kp)
    assert first["n"] == whole["n"] == 230
    for key in ("nk", "s1", "s2"):
        np.testing.assert_allclose(first[key], whole[key], rtol=1e-11, atol=1e-9)
    np.testing.assert_allclose(first["loglik"], whole["loglik"], rtol=1e-12)
    ref = brute_force_stats(X, weights, means, full_cov, ctype)
    assert_stats_match(first, ref, rtol=1e-9)


@nonfinite_warnings
def test_combine_stats_keeps_the_first_bad_row_in_block_order():
    *_, kp = make_problem(43, 10, 2, 2, "diag")
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(5, 2)) for _ in range(4)]
    blocks[1][2, 0] = np.nan
    blocks[3][0, 1] = np.nan
    blocks[3][4, 1] = np.inf
    parts = [K.estep_block(b, kp, block_index=i) for i, b in enumerate(blocks)]
    total = K.combine_stats(K.combine_stats(parts[0], parts[1]), parts[2], parts[3])
    assert total["n_bad"] == 3
    assert total["first_bad"] == (1, 2)
    assert total["n"] == 20
    total = K.combine_stats(parts[0], K.combine_stats(parts[2], parts[3]))
    assert total["first_bad"] == (3, 0)


###############################################################################
# Other pass kernels: hard assignments, random responsibilities


@nonfinite_warnings
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_hard_assign_block_matches_brute_force(ctype):
    rng = np.random.default_rng(51)
    X = rng.normal(size=(120, 3)) * 2.0 + 1e4
    centers = X[[0, 40, 80]] + 0.1
    got = K.hard_assign_block(X, (centers, ctype), block_index=0)
    d2 = ((X[:, None, :] - centers[None]) ** 2).sum(axis=2)
    resp = np.eye(3)[d2.argmin(axis=1)]
    diff = X[:, None, :] - centers[None]
    s2_full = np.einsum("nk,nki,nkj->kij", resp, diff, diff)
    want_s2 = {
        "full": s2_full,
        "tied": s2_full.sum(axis=0),
        "diag": np.einsum("kii->ki", s2_full),
        "spherical": np.einsum("kii->ki", s2_full),
    }[ctype]
    np.testing.assert_array_equal(got["nk"], resp.sum(axis=0))
    np.testing.assert_allclose(
        got["s1"], np.einsum("nk,nkd->kd", resp, diff), rtol=1e-9, atol=1e-8
    )
    np.testing.assert_allclose(got["s2"], want_s2, rtol=1e-9, atol=1e-8)
    assert got["n"] == 120 and got["n_bad"] == 0
    X[10, 1] = np.nan
    X[11] = 1e300  # overflows the squared distance
    got = K.hard_assign_block(X, (centers, ctype), block_index=2)
    assert got["n_bad"] == 2 and got["first_bad"] == (2, 10)
    assert np.isfinite(got["s2"]).all()
    np.testing.assert_array_equal(got["nk"].sum(), 118.0)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_random_resp_block_statistics(ctype):
    rng = np.random.default_rng(61)
    X = rng.normal(size=(500, 3)) + 7.0
    center = X.mean(axis=0) + 0.5
    spec = (1234, 4, center, ctype)
    got = K.random_resp_block(X, spec, block_index=3)
    # Responsibilities sum to one per row, whatever they are: summed over components
    # the statistics are those of the rows themselves.
    diff = X - center
    np.testing.assert_allclose(got["nk"].sum(), 500.0, rtol=1e-12)
    np.testing.assert_allclose(got["s1"].sum(axis=0), diff.sum(axis=0), rtol=1e-10)
    outer = diff.T @ diff
    s2_total = {
        "full": got["s2"].sum(axis=0),
        "tied": got["s2"],
        "diag": got["s2"].sum(axis=0),
        "spherical": got["s2"].sum(axis=0),
    }[ctype]
    want = outer if ctype in ("full", "tied") else np.diag(outer)
    np.testing.assert_allclose(s2_total, want, rtol=1e-10)
    # Uniform random responsibilities: every component gets about a quarter.
    np.testing.assert_allclose(got["nk"] / 500.0, 0.25, atol=0.05)
    # Keyed by (seed, block_index): reproducible, and different per block.
    again = K.random_resp_block(X, spec, block_index=3)
    np.testing.assert_array_equal(again["nk"], got["nk"])
    other = K.random_resp_block(X, spec, block_index=4)
    assert not np.array_equal(other["nk"], got["nk"])
    # The responsibilities are the documented generator's draws, normalised.
    gen = np.random.default_rng(np.random.SeedSequence([1234, 3]))
    resp = gen.uniform(size=(500, 4))
    resp /= resp.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got["nk"], resp.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(got["s1"], resp.T @ diff, rtol=1e-10)


###############################################################################
# M-step


def weighted_problem(seed, n=200, d=3, k=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(scale=5, size=d)
    resp = rng.dirichlet(np.ones(k), size=n)
    shifts = X[rng.choice(n, size=k, replace=False)] + rng.normal(size=(k, d))
    diff = X[:, None, :] - shifts[None]
    s2_full = np.einsum("nk,nki,nkj->kij", resp, diff, diff)
    stats = {
        "nk": resp.sum(axis=0),
        "s1": np.einsum("nk,nkd->kd", resp, diff),
        "s2_full": s2_full,
    }
    return X, resp, shifts, stats


def stats_for(stats, ctype):
    s2 = {
        "full": stats["s2_full"],
        "tied": stats["s2_full"].sum(axis=0),
        "diag": np.einsum("kii->ki", stats["s2_full"]),
        "spherical": np.einsum("kii->ki", stats["s2_full"]),
    }[ctype]
    return {"nk": stats["nk"], "s1": stats["s1"], "s2": s2}


def np_cov_reference(X, resp):
    """Weighted means and biased weighted covariances (no regularisation) by np.cov."""
    _, d = X.shape
    means = np.stack([np.average(X, axis=0, weights=r) for r in resp.T])
    covs = np.stack([np.cov(X.T, aweights=r, bias=True).reshape(d, d) for r in resp.T])
    return means, covs


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize(("d", "k"), [(1, 2), (3, 3), (9, 4)])
def test_m_step_matches_weighted_np_cov(ctype, d, k):
    X, resp, shifts, raw = weighted_problem(71 + d + k, d=d, k=k)
    reg = 1e-3
    weights, means, cov = K.m_step(stats_for(raw, ctype), shifts, reg, ctype)
    ref_means, ref_covs = np_cov_reference(X, resp)
    nk = resp.sum(axis=0)
    np.testing.assert_allclose(weights, nk / X.shape[0], rtol=1e-12)
    np.testing.assert_allclose(means, ref_means, rtol=1e-10, atol=1e-10)
    eye = np.eye(d)
    if ctype == "full":
        want = ref_covs + reg * eye
    elif ctype == "tied":
        want = np.einsum("k,kij->ij", nk, ref_covs) / nk.sum() + reg * eye
    elif ctype == "diag":
        want = np.einsum("kii->ki", ref_covs) + reg
    else:
        want = (np.einsum("kii->ki", ref_covs) + reg).mean(axis=1)
    assert cov.shape == want.shape
    np.testing.assert_allclose(cov, want, rtol=1e-10, atol=1e-12)
    if ctype in ("full", "tied"):
        np.testing.assert_array_equal(cov, np.swapaxes(cov, -1, -2))


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_m_step_does_not_depend_on_the_shift(ctype):
    X, resp, shifts, raw = weighted_problem(81)
    first = K.m_step(stats_for(raw, ctype), shifts, 0.0, ctype)
    shifts2 = shifts + np.array([30.0, -20.0, 5.0])
    diff = X[:, None, :] - shifts2[None]
    raw2 = {
        "nk": raw["nk"],
        "s1": np.einsum("nk,nkd->kd", resp, diff),
        "s2_full": np.einsum("nk,nki,nkj->kij", resp, diff, diff),
    }
    second = K.m_step(stats_for(raw2, ctype), shifts2, 0.0, ctype)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


###############################################################################
# Precisions, Cholesky factors, determinants


def random_cov_of_type(seed, ctype, k=3, d=4):
    return random_covariances(np.random.default_rng(seed), k, d, ctype)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_precision_cholesky_inverts_the_covariance(ctype):
    cov = random_cov_of_type(91, ctype)
    prec_chol = K.precision_cholesky_from_covariances(cov, ctype)
    assert prec_chol.shape == cov.shape
    precisions = K.precisions_from_cholesky(prec_chol, ctype)
    if ctype in ("full", "tied"):
        np.testing.assert_allclose(
            precisions, np.linalg.inv(cov), rtol=1e-10, atol=1e-12
        )
        # Upper triangular with a positive diagonal.
        np.testing.assert_array_equal(prec_chol, np.triu(prec_chol))
        assert np.all(np.diagonal(prec_chol, axis1=-2, axis2=-1) > 0)
    else:
        np.testing.assert_allclose(precisions, 1.0 / cov, rtol=1e-12)
    back = K.covariances_from_cholesky(prec_chol, ctype)
    np.testing.assert_allclose(back, cov, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_precision_cholesky_from_precisions_round_trip(ctype):
    cov = random_cov_of_type(93, ctype)
    precisions = np.linalg.inv(cov) if ctype in ("full", "tied") else 1.0 / cov
    prec_chol = K.precision_cholesky_from_precisions(precisions, ctype)
    np.testing.assert_allclose(
        K.precisions_from_cholesky(prec_chol, ctype), precisions, rtol=1e-12, atol=1e-14
    )
    # The upper-triangular factor with a positive diagonal is unique: the one
    # computed from the covariances is the same.
    np.testing.assert_allclose(
        prec_chol,
        K.precision_cholesky_from_covariances(cov, ctype),
        rtol=1e-9,
        atol=1e-12,
    )
    if ctype in ("full", "tied"):
        np.testing.assert_array_equal(prec_chol, np.triu(prec_chol))
    np.testing.assert_allclose(
        K.covariances_from_cholesky(prec_chol, ctype), cov, rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_log_det_cholesky_matches_slogdet(ctype):
    k, d = 3, 4
    cov = random_cov_of_type(95, ctype, k, d)
    prec_chol = K.precision_cholesky_from_covariances(cov, ctype)
    got = K.log_det_cholesky(prec_chol, ctype, d)
    full = full_covariances(cov, ctype, k, d)
    sign, logdet = np.linalg.slogdet(full)
    assert np.all(sign == 1)
    want = -0.5 * logdet  # log det(U) = -1/2 log det(covariance)
    if ctype == "tied":
        assert isinstance(got, float)
        np.testing.assert_allclose(got, want[0], rtol=1e-12)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-12)


ILL_DEFINED = (
    r"Fitting the mixture model failed because some components have ill-defined "
    r"empirical covariance \(for instance caused by singleton or collapsed samples\)\. "
    r"Try to decrease the number of components, increase reg_covar, or scale the "
    r"input data\."
)


@pytest.mark.parametrize(
    ("ctype", "cov"),
    [
        ("full", np.array([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])),
        ("full", np.array([np.zeros((2, 2))])),
        ("tied", np.array([[1.0, 1.0], [1.0, 1.0]])),
        ("diag", np.array([[1.0, 0.0], [1.0, 2.0]])),
        ("diag", np.array([[1.0, -1e-3]])),
        ("spherical", np.array([1.0, -0.5])),
        ("spherical", np.array([0.0])),
    ],
)
def test_non_positive_definite_covariance_raises(ctype, cov):
    with pytest.raises(ValueError, match=ILL_DEFINED):
        K.precision_cholesky_from_covariances(cov, ctype)


@pytest.mark.parametrize("ctype", ["full", "tied"])
def test_non_positive_definite_precision_raises(ctype):
    bad = np.array([[1.0, 2.0], [2.0, 1.0]])
    precisions = bad[None] if ctype == "full" else bad
    with pytest.raises(
        ValueError,
        match=(
            f"precisions_init: the '{ctype}' precision must be symmetric positive "
            "definite; pass inverse covariance matrices"
        ),
    ):
        K.precision_cholesky_from_precisions(precisions, ctype)


@pytest.mark.parametrize(
    ("ctype", "expected"),
    [
        ("full", 3 * 6 + 3 * 3 + 2),
        ("tied", 6 + 9 + 2),
        ("diag", 9 + 9 + 2),
        ("spherical", 3 + 9 + 2),
    ],
)
def test_n_parameters(ctype, expected):
    assert K.n_parameters(3, 3, ctype) == expected


###############################################################################
# Uniform row sample


def sample_all_blocks(X, edges, seed, size, rate):
    return [
        K.sample_block(X[a:b], (seed, size, rate), block_index=i)
        for i, (a, b) in enumerate(itertools.pairwise(edges))
    ]


def documented_keys(edges, seed):
    """Keys u ~ U(0, 1) from a generator keyed by (seed, block_index)."""
    return np.concatenate(
        [
            np.random.default_rng(np.random.SeedSequence([seed, i])).random(b - a)
            for i, (a, b) in enumerate(itertools.pairwise(edges))
        ]
    )


@pytest.mark.parametrize(
    ("size", "rate"), [(25, 0.4), (25, 1.0), (500, 1.0), (40, 0.2)]
)
def test_combined_sample_is_the_rows_with_the_smallest_keys(size, rate):
    rng = np.random.default_rng(101)
    n = 300
    X = np.c_[np.arange(n, dtype=np.float64), rng.normal(size=(n, 2))]
    edges = [0, 60, 60, 61, 200, 300]
    parts = sample_all_blocks(X, edges, seed=7, size=size, rate=rate)
    result = tree_combine(parts, 2, K.combine_samples)
    keys = documented_keys(edges, seed=7)
    candidates = np.flatnonzero(keys < rate)
    chosen = candidates[np.argsort(keys[candidates])][:size]
    assert result["n"] == n and result["n_bad"] == 0 and result["first_bad"] is None
    assert result["rows"].shape == (min(size, candidates.size), 3)
    got_rows = result["rows"][:, 0].astype(np.int64)
    np.testing.assert_array_equal(np.sort(got_rows), np.sort(chosen))
    # Each row comes with its own key, and the rows are the original rows.
    np.testing.assert_array_equal(result["keys"], keys[got_rows])
    np.testing.assert_array_equal(result["rows"], X[got_rows])
    # A different tree gives the same sample; the same call gives the same arrays.
    flat = K.combine_samples(*parts)
    np.testing.assert_array_equal(np.sort(flat["keys"]), np.sort(result["keys"]))
    again = tree_combine(
        sample_all_blocks(X, edges, seed=7, size=size, rate=rate), 2, K.combine_samples
    )
    np.testing.assert_array_equal(again["rows"], result["rows"])
    np.testing.assert_array_equal(again["keys"], result["keys"])
    other = tree_combine(
        sample_all_blocks(X, edges, seed=8, size=size, rate=rate), 2, K.combine_samples
    )
    if size < n:
        assert not np.array_equal(np.sort(other["keys"]), np.sort(result["keys"]))


def test_sample_keeps_every_row_in_order_when_size_covers_the_data():
    X = np.arange(40.0).reshape(20, 2)
    parts = sample_all_blocks(X, [0, 7, 7, 20], seed=1, size=20, rate=1.0)
    result = K.combine_samples(*parts)
    np.testing.assert_array_equal(result["rows"], X)


@nonfinite_warnings
def test_sample_never_picks_rows_with_nan_or_inf_and_counts_them():
    rng = np.random.default_rng(103)
    n = 90
    X = np.c_[np.arange(n, dtype=np.float64), rng.normal(size=(n, 2))]
    X[[5, 33, 34, 70], 1] = [np.nan, np.inf, -np.inf, np.nan]
    X[50, 1:] = 1.7e308  # the row sum overflows, but every entry is finite
    edges = [0, 30, 60, 90]
    parts = sample_all_blocks(X, edges, seed=3, size=1000, rate=1.0)
    result = tree_combine(parts, 2, K.combine_samples)
    assert result["n"] == n
    assert result["n_bad"] == 4
    assert result["first_bad"] == (0, 5)
    got = np.sort(result["rows"][:, 0].astype(np.int64))
    np.testing.assert_array_equal(got, np.setdiff1d(np.arange(n), [5, 33, 34, 70]))
    assert np.isfinite(result["rows"]).all()
    assert [p["first_bad"] for p in parts] == [(0, 5), (1, 3), (2, 10)]
    # With a small size the bad rows are still never picked.
    small = tree_combine(
        sample_all_blocks(X, edges, seed=3, size=10, rate=0.5), 2, K.combine_samples
    )
    assert np.isfinite(small["rows"]).all()
    assert small["n_bad"] == 4


def test_sample_keeps_the_block_dtype():
    X = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    result = K.sample_block(X, (0, 10, 1.0), block_index=0)
    assert result["rows"].dtype == np.float32
    assert result["rows"].shape == (10, 2)


###############################################################################
# Property: chunked statistics equal the brute-force statistics of the whole array


@st.composite
def chunked_problems(draw):
    n = draw(st.integers(1, 300))
    d = draw(st.integers(1, 6))
    k = draw(st.integers(1, 5))
    ctype = draw(st.sampled_from(COVARIANCE_TYPES))
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    split_every = draw(st.integers(2, 5))
    offset = draw(st.sampled_from([0.0, 100.0, 1e4]))
    scale = draw(st.sampled_from([1e-2, 1.0, 30.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    return n, d, k, ctype, sorted(cuts), split_every, offset, scale, seed


@settings(max_examples=50, deadline=None)
@given(chunked_problems())
def test_chunked_statistics_equal_brute_force(problem):
    n, d, k, ctype, cuts, split_every, offset, scale, seed = problem
    X, weights, means, _, full_cov, _, kp = make_problem(
        seed, n, d, k, ctype, offset, scale
    )
    edges = [0, *cuts, n]
    parts = [
        K.estep_block(X[a:b], kp, block_index=i)
        for i, (a, b) in enumerate(itertools.pairwise(edges))
    ]
    total = tree_combine(parts, split_every)
    ref = brute_force_stats(X, weights, means, full_cov, ctype)
    assert np.isfinite(total["loglik"])
    assert_stats_match(total, ref, rtol=1e-9)
