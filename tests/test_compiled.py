"""The compiled E-step kernel against the NumPy reference ``_kernels.estep_block``.

Every statistic must agree to ~1e-10 of the scale of its terms, on shapes that cover
both accumulation strategies (per-lane, row-major), partial sub-blocks, float32 and
float64, row weights (with zeros and invalid ones) and rows with NaN, inf or
overflowing values.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskgmm import _compiled as C
from daskgmm import _kernels as K
from tests.test_kernels import random_mixture

pytestmark = pytest.mark.skipif(not C.available(), reason="numba is not installed")

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
FEATURES = (1, 2, 3, 5, 8, 16, 17, 33, 64)
COMPONENTS = (1, 2, 5, 8)
RTOL = 1e-10

###############################################################################
# Helpers


def problem(seed, n, d, k, ctype, offset=0.0, scale=1.0, dtype=np.float64):
    """Rows around a random mixture (plus a few far outliers) and its KernelParams."""
    rng = np.random.default_rng(seed)
    weights, means, _, prec_chol = random_mixture(rng, k, d, ctype, scale, offset)
    labels = rng.choice(k, size=n, p=weights)
    X = means[labels] + rng.normal(scale=scale, size=(n, d))
    X[: n // 20] += rng.normal(scale=30.0 * scale, size=(n // 20, d))
    return X.astype(dtype), K.prepare(weights, means, prec_chol, ctype)


def row_weights(seed, n):
    """Random row weights with some zeros, a negative, a NaN and an infinity."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.0, 3.0, size=n)
    w[rng.random(n) < 0.2] = 0.0
    if n > 4:
        w[[1, 2, 3]] = [-1.0, np.nan, np.inf]
    return w


def term_scales(X, kp, weights=None):
    """Sums of the absolute values of the terms of each statistic (by brute force):
    the scale of its rounding errors, so near-zero sums are compared in absolute
    terms."""
    ctype = kp.covariance_type
    w = K.row_weights(weights, X.shape[0], {})
    x0 = np.asarray(X, dtype=np.float64) - kp.center
    with np.errstate(invalid="ignore", over="ignore"):
        lp = K.weighted_log_prob(x0, kp)
        ok = np.isfinite(lp.max(axis=1))
    lp, x0 = lp[ok], x0[ok]
    resp = np.exp(lp - lp.max(axis=1, keepdims=True))
    lse = np.log(resp.sum(axis=1)) + lp.max(axis=1)
    resp /= resp.sum(axis=1, keepdims=True)
    if w is not None:
        resp *= w[ok, None]
        lse *= w[ok]
    diff = np.abs(x0[:, None, :] - kp.shifts)
    s2 = np.einsum("nk,nki,nkj->kij", resp, diff, diff)
    if ctype == "tied":
        s2 = s2.sum(axis=0)
    elif ctype in ("diag", "spherical"):
        s2 = np.einsum("kii->ki", s2)
    return {
        "nk": resp.sum(axis=0),
        "s1": np.einsum("nk,nkd->kd", resp, diff),
        "s2": s2,
        "loglik": np.abs(lse).sum(),
    }


def assert_same_stats(got, ref, scales, rtol=RTOL):
    """Compiled and NumPy statistics agree: counts exactly, sums to ``rtol`` of the
    sum of the absolute values of their terms.

    Plus an absolute 1e-150 of the statistic's largest scale: the compiled kernel
    drops responsibilities below exp(-500) of a row's largest, so a component made
    only of such rows has e.g. ``nk`` 0 where the NumPy kernel has 1e-230.
    """
    assert set(got) == set(ref)
    for key in ("n", "n_bad", "n_bad_weights", "first_bad"):
        assert got[key] == ref[key], key
    # The total weight of the rows used: sums in a different order.
    assert got["w"] == pytest.approx(ref["w"], rel=1e-13, abs=1e-13)
    assert isinstance(got["loglik"], float)
    for key in ("nk", "s1", "s2", "loglik"):
        got_key, ref_key = np.asarray(got[key]), np.asarray(ref[key])
        assert got_key.dtype == np.float64, key
        assert got_key.shape == ref_key.shape, key
        bound = rtol * scales[key] + 1e-150 * np.max(scales[key]) + 1e-300
        excess = np.abs(got_key - ref_key) - bound
        assert np.all(excess <= 0), (
            f"{key}: max |difference| {np.max(np.abs(got_key - ref_key)):.3e}, "
            f"max excess over the bound {np.max(excess):.3e}"
        )


def full_factors(kp):
    """The (K, d, d) precision Cholesky factors of a full KernelParams."""
    k, d = kp.shifts.shape
    return kp.proj.reshape(d, k, d).transpose(1, 0, 2)


def compare(X, kp, block_index=0, weights=None):
    got = C.estep_block(X, kp, block_index=block_index, weights=weights)
    ref = K.estep_block(X, kp, block_index=block_index, weights=weights)
    assert_same_stats(got, ref, term_scales(X, kp, weights))
    return got


###############################################################################
# Against the NumPy kernel


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("d", FEATURES)
def test_matches_numpy_kernel(ctype, d):
    """Every K, both dtypes, with and without weights; n not a multiple of 256."""
    for k in COMPONENTS:
        n = (37, 1, 300, 1100)[k % 4] if d < 33 else (257, 1, 90, 600)[k % 4]
        for dtype in (np.float64, np.float32):
            X, kp = problem(d * 100 + k, n, d, k, ctype, dtype=dtype)
            compare(X, kp, block_index=3)
            compare(X, kp, block_index=3, weights=row_weights(k, n))


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize(("n", "d", "k"), [(700, 3, 4), (300, 17, 3), (260, 33, 2)])
def test_far_from_the_origin(ctype, n, d, k):
    X, kp = problem(7, n, d, k, ctype, offset=1e6)
    compare(X, kp)
    X, kp = problem(8, n, d, k, ctype, offset=1e8, scale=1e-2)
    compare(X, kp)


@pytest.mark.filterwarnings(
    "ignore:(invalid value|overflow) encountered:RuntimeWarning"
)
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("d", [3, 20])
def test_non_finite_rows_are_counted_and_left_out(ctype, d):
    n = 700
    X, kp = problem(11, n, d, 3, ctype)
    X[0, 0] = np.nan  # first row
    X[300, -1] = np.inf  # second sub-block
    X[301] = -np.inf
    X[450] = 1e200  # finite, but its squared distance overflows
    X[n - 1, d // 2] = np.nan  # last row, in a partial sub-block
    got = compare(X, kp, block_index=5)
    assert got["n_bad"] == 5
    assert got["first_bad"] == (5, 0)
    assert got["w"] == n - 5
    got = compare(X[1:], kp, block_index=2, weights=row_weights(3, n - 1))
    assert got["n_bad"] == 4
    assert got["first_bad"] == (2, 299)
    assert got["n_bad_weights"] == 3
    assert np.isfinite(got["loglik"])


def test_a_component_of_weight_zero_gets_nothing():
    X, kp = problem(5, 500, 4, 3, "full")
    weights = np.array([0.5, 0.0, 0.5])
    kp = K.prepare(weights, kp.shifts + kp.center, full_factors(kp), "full")
    got = compare(X, kp)
    assert got["nk"][1] == 0.0
    assert not got["s1"][1].any()
    assert not got["s2"][1].any()


def test_all_rows_bad_when_every_component_has_weight_zero():
    X, kp = problem(6, 40, 2, 2, "diag")
    kp = K.prepare(np.zeros(2), kp.shifts + kp.center, np.ones((2, 2)), "diag")
    got = compare(X, kp, block_index=1)
    assert got["n_bad"] == 40
    assert got["first_bad"] == (1, 0)
    assert got["loglik"] == 0.0


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 600),
    d=st.integers(1, 36),
    k=st.integers(1, 8),
    ctype=st.sampled_from(COVARIANCE_TYPES),
    offset=st.sampled_from([0.0, 1e3, 1e6]),
    scale=st.sampled_from([1e-3, 1.0, 50.0]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_numpy_kernel(n, d, k, ctype, offset, scale, weighted, seed):
    X, kp = problem(seed, n, d, k, ctype, offset, scale)
    weights = np.random.default_rng(seed).uniform(0, 2, size=n) if weighted else None
    compare(X, kp, weights=weights)


###############################################################################
# Dtypes, layouts, determinism


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("d", [3, 40])
def test_float32_is_read_exactly(ctype, d):
    """float32 rows give the statistics of the same numbers in float64, bitwise."""
    X, kp = problem(21, 500, d, 3, ctype, offset=100.0, dtype=np.float32)
    got = C.estep_block(X, kp)
    same = C.estep_block(X.astype(np.float64), kp)
    assert_bitwise_equal(got, same)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("d", [3, 40])
def test_deterministic_and_layout_independent(ctype, d):
    X, kp = problem(22, 900, d, 4, ctype)
    first = C.estep_block(X, kp)
    assert_bitwise_equal(first, C.estep_block(X.copy(), kp))
    assert_bitwise_equal(first, C.estep_block(np.asfortranarray(X), kp))
    wide = np.empty((900, 2 * d))
    wide[:, ::2] = X
    assert_bitwise_equal(first, C.estep_block(wide[:, ::2], kp))


def assert_bitwise_equal(a, b):
    for key in ("nk", "s1", "s2"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for key in ("loglik", "n", "w", "n_bad", "n_bad_weights", "first_bad"):
        assert a[key] == b[key], key


def test_empty_block_gives_zero_statistics():
    _, kp = problem(3, 10, 3, 2, "full")
    got = C.estep_block(np.empty((0, 3)), kp, block_index=1)
    ref = K.estep_block(np.empty((0, 3)), kp, block_index=1)
    assert_bitwise_equal(got, ref)
    assert got["n"] == 0 and got["loglik"] == 0.0


def test_mismatched_shapes_are_rejected():
    X, kp = problem(4, 20, 3, 2, "full")
    with pytest.raises(ValueError, match="X has 2 features but the mixture has 3"):
        C.estep_block(X[:, :2], kp)
    with pytest.raises(ValueError, match="weights has 19 values for a block of 20"):
        C.estep_block(X, kp, weights=np.ones(19))


def test_blocks_combine_to_the_whole():
    """Statistics of a split array, combined, equal those of the whole."""
    X, kp = problem(9, 2000, 5, 4, "full")
    parts = [C.estep_block(X[a:b], kp) for a, b in [(0, 1), (1, 700), (700, 2000)]]
    whole = C.estep_block(X, kp)
    assert_same_stats(K.combine_stats(*parts), whole, term_scales(X, kp))


###############################################################################
# Elementary functions and the fallback


def test_exp_and_log_agree_with_numpy_to_an_ulp_or_two():
    x = np.concatenate([-np.geomspace(1e-300, 499.999, 4000), [0.0, -0.0]])
    got = np.array([C._exp_nonpositive(v) for v in x])
    want = np.exp(x)
    assert np.all(np.abs(got - want) <= 2 * np.spacing(want))
    assert got[-2:].tolist() == [1.0, 1.0]
    # Below exp(-500) (negligible next to the largest responsibility, 1): 0.
    flushed = [-500.0001, -700.0, -745.5, -1e300, -np.inf]
    assert [C._exp_nonpositive(v) for v in flushed] == [0.0] * 5
    s = np.concatenate([np.linspace(1.0, 2.0, 2001), np.geomspace(1.0, 1e300, 2000)])
    got = np.array([C._log_atleast1(v) for v in s])
    want = np.log(s)
    assert np.all(np.abs(got - want) <= 2 * np.spacing(np.maximum(want, 1e-300)))
    assert C._log_atleast1(1.0) == 0.0


def test_tiny_responsibilities_do_not_matter():
    """Far-apart clusters in 64 dimensions: many responsibilities below exp(-500)."""
    rng = np.random.default_rng(12)
    means = rng.normal(scale=6.0, size=(6, 64))
    X = means[rng.integers(6, size=800)] + rng.normal(size=(800, 64))
    prec_chol = K.precision_cholesky_from_covariances(np.ones((6, 64)) * 1.5, "diag")
    for ctype in ("diag", "full"):
        pc = prec_chol if ctype == "diag" else np.stack([np.diag(p) for p in prec_chol])
        kp = K.prepare(np.full(6, 1 / 6), means + 0.1, pc, ctype)
        lp = K.weighted_log_prob(X - kp.center, kp)
        assert np.mean(lp - lp.max(axis=1, keepdims=True) < -500.0) > 0.3
        compare(X, kp)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("d", [8, 64])
def test_components_without_rows_in_a_sub_block_are_skipped(ctype, d):
    """Far-apart clusters, rows sorted by cluster: in most sub-blocks all but one
    component have responsibility exactly 0 (skipped), and one component gets no
    row at all; rows of the others are compacted for the row-major moments."""
    rng = np.random.default_rng(13)
    k = 5
    means = rng.normal(scale=60.0 / np.sqrt(d), size=(k, d))
    labels = np.sort(rng.integers(k - 1, size=1500))  # component k - 1: no rows
    X = means[labels] + rng.normal(size=(1500, d))
    variances = np.ones((k, d)) * 1.5
    prec_chol = K.precision_cholesky_from_covariances(variances, "diag")
    pc = {
        "full": np.stack([np.diag(p) for p in prec_chol]),
        "tied": np.diag(prec_chol[0]),
        "diag": prec_chol,
        "spherical": prec_chol[:, 0],
    }[ctype]
    kp = K.prepare(np.full(k, 1 / k), means + 0.1, pc, ctype)
    lp = K.weighted_log_prob(X - kp.center, kp)
    assert np.mean(lp - lp.max(axis=1, keepdims=True) < -500.0) > 0.5
    got = compare(X, kp)
    assert got["nk"][k - 1] == 0.0
    assert not got["s1"][k - 1].any()
    if ctype != "tied":
        assert not got["s2"][k - 1].any()
    compare(X, kp, weights=row_weights(4, X.shape[0]))


def test_without_numba_reports_unavailable(monkeypatch):
    monkeypatch.setattr(C, "_numba_ok", None)
    monkeypatch.setitem(sys.modules, "numba", None)
    assert C.available() is False
    X, kp = problem(1, 5, 2, 2, "full")
    with pytest.raises(RuntimeError, match="the compiled E-step needs numba"):
        C.estep_block(X, kp)


def test_module_imports_without_numba():
    code = (
        "import sys; sys.modules['numba'] = None; "
        "import daskgmm._compiled as c; print(c.available())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("d", [3, 16, 64])
@pytest.mark.parametrize("weighted", [False, True])
def test_hard_assign_and_loglik_twins_match_numpy(ctype, d, weighted):
    rng = np.random.default_rng(d)
    X = rng.normal(size=(3001, d)) * 3 + 1e3
    X[7, 1] = np.nan
    w = rng.uniform(0, 2, size=len(X)) if weighted else None
    centers = X[rng.choice(np.arange(10, len(X)), 5, replace=False)] + 0.1
    ours = C.hard_assign_block(X, (centers, ctype), 4, w)
    ref = K.hard_assign_block(X, (centers, ctype), 4, w)
    for key in ("nk", "s1", "s2"):
        np.testing.assert_allclose(
            ours[key], ref[key], rtol=1e-12, atol=1e-9 * np.abs(ref[key]).max()
        )
    assert ours["first_bad"] == ref["first_bad"] == (4, 7)
    assert ours["n_bad"] == ref["n_bad"] == 1
    np.testing.assert_allclose(ours["w"], ref["w"], rtol=1e-14)
    cov = {
        "full": np.stack([np.eye(d)] * 5) * 4,
        "tied": np.eye(d) * 4,
        "diag": np.full((5, d), 4.0),
        "spherical": np.full(5, 4.0),
    }[ctype]
    prec = K.precision_cholesky_from_covariances(cov, ctype)
    kp = K.prepare(np.full(5, 0.2), centers, prec, ctype)
    ours = C.loglik_block(X, kp, 2, w)
    ref = K.loglik_block(X, kp, 2, w)
    assert ours.keys() == ref.keys()
    np.testing.assert_allclose(ours["loglik"], ref["loglik"], rtol=1e-13)
    assert (ours["n"], ours["n_bad"], ours["first_bad"]) == (3001, 1, (2, 7))
    np.testing.assert_allclose(ours["w"], ref["w"], rtol=1e-14)
