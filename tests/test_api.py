"""Public API of daskgmm.GaussianMixture: scikit-learn compatibility, inputs and
outputs, parameters, validation errors, and the shape of the dask graph of a pass.

References are independent of the code under test wherever possible: scikit-learn's
GaussianMixture evaluated with the same parameters, closed-form covariances, the
ground truth of well-separated blobs, hand-counted tree sizes.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from dask.utils import key_split
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

import daskgmm
import daskgmm._em
import daskgmm._runner
import daskgmm.mixture
from daskgmm import ConvergenceWarning, GaussianMixture, NotFittedError
from tests.conftest import FITTED_ARRAYS, SKLEARN_DEFAULTS, assert_same_fit

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
PARAM_NAMES = [
    "n_components",
    "covariance_type",
    "tol",
    "reg_covar",
    "max_iter",
    "n_init",
    "init_params",
    "weights_init",
    "means_init",
    "precisions_init",
    "random_state",
    "warm_start",
    "verbose",
    "verbose_interval",
    "split_every",
    "persist",
    "init_sample_size",
    "scale",
    "log1p",
    "nan_policy",
    "kernel",
]
NOT_FITTED = (
    "This GaussianMixture instance is not fitted yet. Call 'fit' with appropriate "
    "arguments before using this estimator."
)
NOT_CONVERGED = (
    "Best performing initialization did not converge. Try different init "
    "parameters, or increase max_iter, tol, or check for degenerate data."
)
CENTERS = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])


###############################################################################
# Data and helpers


def make_blobs(seed: int = 0, n_per: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated unit-variance blobs in 2-D and their true labels."""
    rng = np.random.RandomState(seed)
    X = np.vstack([rng.randn(n_per, 2) + c for c in CENTERS])
    return X, np.repeat(np.arange(len(CENTERS)), n_per)


def make_overlapping(seed: int = 0) -> np.ndarray:
    """Three overlapping correlated clusters: EM needs tens of iterations."""
    rng = np.random.RandomState(seed)
    shift = np.repeat([[0.0, 0.0], [2.0, 1.0], [4.0, -1.0]], [700, 700, 600], axis=0)
    return rng.randn(2000, 2) @ np.array([[1.0, 0.5], [0.0, 1.0]]) + shift


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return make_blobs()


@pytest.fixture(scope="module")
def overlapping() -> np.ndarray:
    return make_overlapping()


def sklearn_twin(gm: GaussianMixture) -> SklearnGaussianMixture:
    """scikit-learn's GaussianMixture holding the parameters of a fitted ``gm``."""
    twin = SklearnGaussianMixture(gm.n_components, covariance_type=gm.covariance_type)
    for name in FITTED_ARRAYS:
        setattr(twin, name, np.asarray(getattr(gm, name), dtype=np.float64))
    twin.n_features_in_ = gm.n_features_in_
    twin.converged_, twin.n_iter_, twin.lower_bound_ = True, 1, 0.0
    return twin


def unknown_chunks(X: np.ndarray, npartitions: int) -> da.Array:
    """A dask array with unknown (NaN) row chunk sizes, as from a dask DataFrame."""
    df = pd.DataFrame(X, columns=[f"c{j}" for j in range(X.shape[1])])
    array = dd.from_pandas(df, npartitions=npartitions).to_dask_array()
    assert np.isnan(array.shape[0])
    return array


class RecordPasses:
    """Wraps ``daskgmm._em.tree_reduce`` to keep the graph of every data pass."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.passes: list[tuple[str, dict]] = []
        original = daskgmm._em.tree_reduce

        def recording(X, kernel, params, combine, *, name, split_every, **kwargs):
            graph = original(
                X, kernel, params, combine, name=name, split_every=split_every, **kwargs
            )
            self.passes.append((name, dict(graph.__dask_graph__())))
            return graph

        monkeypatch.setattr(daskgmm._em, "tree_reduce", recording)

    def graphs(self, name: str) -> list[dict]:
        return [g for n, g in self.passes if n == name]


###############################################################################
# 1. scikit-learn compatibility


def test_get_params_lists_every_constructor_argument_with_its_default():
    params = GaussianMixture().get_params()
    assert list(params) == PARAM_NAMES
    assert params == {
        **SKLEARN_DEFAULTS,
        "verbose": 0,
        "verbose_interval": 10,
        "split_every": 16,
        "persist": "auto",
        "init_sample_size": 50_000,
        "scale": "none",
        "log1p": None,
        "nan_policy": "raise",
        "kernel": "auto",
    }
    # Same names and defaults as scikit-learn for every parameter they share.
    sk_params = SklearnGaussianMixture().get_params()
    assert set(sk_params) <= set(params)
    assert {name: params[name] for name in sk_params} == sk_params


def test_get_params_returns_the_values_set():
    means = np.zeros((3, 2))
    gm = GaussianMixture(3, covariance_type="diag", tol=0.5, means_init=means)
    params = gm.get_params(deep=False)
    assert params["n_components"] == 3
    assert params["covariance_type"] == "diag"
    assert params["tol"] == 0.5
    assert params["means_init"] is means


def test_set_params_sets_values_and_returns_self():
    gm = GaussianMixture()
    assert gm.set_params(n_components=4, persist=False, split_every=2) is gm
    params = gm.get_params()
    assert (params["n_components"], params["persist"], params["split_every"]) == (
        4,
        False,
        2,
    )


def test_set_params_rejects_an_unknown_name():
    with pytest.raises(
        ValueError,
        match=re.escape("Invalid parameter 'bogus' for estimator GaussianMixture()."),
    ):
        GaussianMixture().set_params(bogus=1)


def test_clone_copies_params_and_drops_the_fit(blobs):
    X, _ = blobs
    means = CENTERS + 0.5
    gm = GaussianMixture(
        3, covariance_type="tied", means_init=means, random_state=7, persist=False
    ).fit(X)
    copy = clone(gm)
    assert copy is not gm
    params, copied = gm.get_params(), copy.get_params()
    assert set(params) == set(copied)
    for name in params:
        if name == "means_init":
            assert_array_equal(copied[name], means)
        else:
            assert copied[name] == params[name]
    assert not hasattr(copy, "means_")
    with pytest.raises(NotFittedError):
        copy.predict(X)
    assert_same_fit(copy.fit(X), gm, rtol=0)


def test_repr_shows_only_the_parameters_that_differ_from_the_defaults():
    assert repr(GaussianMixture()) == "GaussianMixture()"
    assert repr(GaussianMixture(1, tol=1e-3)) == "GaussianMixture()"
    gm = GaussianMixture(3, covariance_type="diag", tol=0.01, persist=False)
    assert repr(gm) == (
        "GaussianMixture(n_components=3, covariance_type='diag', tol=0.01, "
        "persist=False)"
    )
    assert repr(GaussianMixture(random_state=0)) == "GaussianMixture(random_state=0)"


def test_last_step_of_a_pipeline_after_standard_scaler(blobs):
    X, y = blobs
    X_raw = X * [1.0, 1000.0] + [0.0, 5e4]  # very different scales
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("gmm", GaussianMixture(3, random_state=0, tol=1e-8)),
        ]
    ).fit(X_raw)
    Z = StandardScaler().fit_transform(X_raw)
    direct = GaussianMixture(3, random_state=0, tol=1e-8).fit(Z)
    assert_array_equal(pipe.predict(X_raw), direct.predict(Z))
    assert_allclose(pipe.predict_proba(X_raw), direct.predict_proba(Z), rtol=1e-12)
    assert isinstance(pipe.score(X_raw), float)
    assert_allclose(pipe.score(X_raw), direct.score(Z), rtol=1e-12)
    # Independent references: the true labels and scikit-learn's fit of the same data.
    assert adjusted_rand_score(y, pipe.predict(X_raw)) == 1.0
    reference = SklearnGaussianMixture(3, random_state=0, tol=1e-8).fit(Z)
    assert_allclose(pipe.score(X_raw), reference.score(Z), rtol=1e-7)
    check_is_fitted(pipe[-1])


@pytest.mark.parametrize(
    "method, args",
    [
        ("predict", "X"),
        ("predict_proba", "X"),
        ("score_samples", "X"),
        ("score", "X"),
        ("bic", "X"),
        ("aic", "X"),
        ("sample", 3),
    ],
)
def test_methods_before_fit_raise_not_fitted_error(blobs, method, args):
    X, _ = blobs
    arg = X if args == "X" else args
    with pytest.raises(NotFittedError, match=re.escape(NOT_FITTED)) as info:
        getattr(GaussianMixture(2), method)(arg)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, AttributeError)


def test_check_is_fitted_follows_fit(blobs):
    X, _ = blobs
    gm = GaussianMixture(2, random_state=0)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(gm)
    assert not hasattr(gm, "means_")
    gm.fit(X)
    assert check_is_fitted(gm) is None


def test_fit_predict_equals_fit_then_predict(blobs):
    X, y = blobs
    kwargs = dict(init_params="random_from_data", random_state=5, tol=1e-6)
    labels = GaussianMixture(3, **kwargs).fit_predict(X)
    assert isinstance(labels, np.ndarray)
    assert_array_equal(labels, GaussianMixture(3, **kwargs).fit(X).predict(X))
    assert adjusted_rand_score(y, labels) == 1.0
    Xd = da.from_array(X, chunks=(128, 2))
    lazy = GaussianMixture(3, **kwargs).fit_predict(Xd)
    assert isinstance(lazy, da.Array)
    assert_array_equal(lazy.compute(), labels)


###############################################################################
# 2. Inputs and outputs


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_dask_array_input_matches_numpy_and_gives_lazy_outputs(blobs, covariance_type):
    X, _ = blobs
    Xd = da.from_array(X, chunks=(137, 2))  # ragged row blocks
    kwargs = dict(covariance_type=covariance_type, random_state=0, tol=1e-8)
    gm_np = GaussianMixture(3, **kwargs).fit(X)
    gm_da = GaussianMixture(3, **kwargs).fit(Xd)
    assert_same_fit(gm_da, gm_np, rtol=1e-10)
    twin = sklearn_twin(gm_da)
    references = {
        "predict": twin.predict(X),
        "predict_proba": twin.predict_proba(X),
        "score_samples": twin.score_samples(X),
    }
    for method, reference in references.items():
        lazy = getattr(gm_da, method)(Xd)
        assert isinstance(lazy, da.Array)
        assert lazy.chunks[0] == Xd.chunks[0]
        computed = lazy.compute()
        assert computed.dtype == lazy.dtype
        eager = getattr(gm_da, method)(X)
        assert type(eager) is np.ndarray
        assert_allclose(computed, eager, rtol=1e-12, atol=1e-12)
        assert_allclose(eager, reference, rtol=1e-9, atol=1e-12)


def test_feature_axis_split_in_chunks_is_rechunked():
    rng = np.random.RandomState(3)
    means = np.array([[0.0, 0, 0, 0], [6, 6, 0, 0], [0, 0, 6, 6]])
    X = np.vstack([rng.randn(200, 4) + m for m in means])
    Xd = da.from_array(X, chunks=(100, 1))
    assert Xd.numblocks == (6, 4)
    gm_np = GaussianMixture(3, random_state=0).fit(X)
    gm_da = GaussianMixture(3, random_state=0).fit(Xd)
    assert_same_fit(gm_da, gm_np, rtol=1e-10)
    proba = gm_da.predict_proba(Xd)
    assert proba.chunks == (Xd.chunks[0], (3,))
    assert_allclose(proba.compute(), gm_np.predict_proba(X), rtol=1e-10, atol=1e-12)
    labels = gm_da.predict(Xd)
    assert labels.chunks == (Xd.chunks[0],)
    assert_array_equal(labels.compute(), gm_np.predict(X))


def test_pandas_dataframe_sets_feature_names(blobs):
    X, _ = blobs
    df = pd.DataFrame(X, columns=["a", "b"])
    gm = GaussianMixture(3, random_state=0).fit(df)
    assert gm.feature_names_in_.tolist() == ["a", "b"]
    assert gm.n_features_in_ == 2
    gm_np = GaussianMixture(3, random_state=0).fit(X)
    assert_same_fit(gm, gm_np, rtol=1e-12)
    assert not hasattr(gm_np, "feature_names_in_")
    assert_array_equal(gm.predict(df), gm_np.predict(X))
    assert_array_equal(gm.predict(X), gm_np.predict(X))  # no names: no check
    # Refitting on an array without names forgets the names.
    gm.fit(X)
    assert not hasattr(gm, "feature_names_in_")


@pytest.mark.parametrize("columns", [["a", "c"], ["b", "a"]])
def test_predict_with_other_column_names_raises(blobs, columns):
    X, _ = blobs
    gm = GaussianMixture(3, random_state=0).fit(pd.DataFrame(X, columns=["a", "b"]))
    message = (
        "The feature names should match those that were passed during fit: "
        f"got {columns}, expected ['a', 'b']"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        gm.predict(pd.DataFrame(X, columns=columns))


def test_pandas_dataframe_with_non_string_column_names_has_no_feature_names(blobs):
    X, _ = blobs
    gm = GaussianMixture(3, random_state=0).fit(pd.DataFrame(X))
    assert not hasattr(gm, "feature_names_in_")
    assert gm.n_features_in_ == 2


def test_pandas_dataframe_with_int_float_and_bool_columns(blobs):
    X, _ = blobs
    df = pd.DataFrame(
        {"i": np.round(X[:, 0] * 10).astype(np.int32), "f": X[:, 1], "b": X[:, 1] > 4}
    )
    gm = GaussianMixture(3, random_state=0, reg_covar=1e-3).fit(df)
    reference = GaussianMixture(3, random_state=0, reg_covar=1e-3).fit(
        df.to_numpy(dtype=np.float64)
    )
    assert gm.means_.dtype == np.float64
    assert_same_fit(gm, reference, rtol=1e-12)


DASK_DATAFRAME_BUG = (
    "check_input (daskgmm/_validation.py) calls X.to_dask_array(lengths=False); dask 2026.8 "
    'accepts only None, True or a sequence and raises "Unexpected value for '
    "'lengths': 'False'\", so no dask DataFrame can be fitted"
)


def test_dask_dataframe_input_fits_and_predicts_lazily(blobs):
    X, _ = blobs
    ddf = dd.from_pandas(pd.DataFrame(X, columns=["a", "b"]), npartitions=3)
    gm = GaussianMixture(3, random_state=0).fit(ddf)
    assert gm.feature_names_in_.tolist() == ["a", "b"]
    assert_same_fit(gm, GaussianMixture(3, random_state=0).fit(X), rtol=1e-10)
    for method in ("predict", "predict_proba", "score_samples"):
        lazy = getattr(gm, method)(ddf)
        assert isinstance(lazy, da.Array)
        assert lazy.numblocks[0] == 3
        assert_allclose(lazy.compute(), getattr(gm, method)(X), rtol=1e-12)


def test_dask_dataframe_n_components_above_unknown_length_raises():
    rng = np.random.RandomState(0)
    ddf = dd.from_pandas(pd.DataFrame(rng.randn(5, 2), columns=["a", "b"]), 2)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Expected n_samples >= n_components but got n_components = 6, n_samples = 5"
        ),
    ):
        GaussianMixture(6).fit(ddf)


def test_dask_array_with_unknown_chunk_sizes(blobs):
    X, _ = blobs
    Xu = unknown_chunks(X, npartitions=4)
    gm_np = GaussianMixture(3, random_state=0, tol=1e-8).fit(X)
    gm = GaussianMixture(3, random_state=0, tol=1e-8).fit(Xu)
    assert_same_fit(gm, gm_np, rtol=1e-10)
    for method in ("predict", "predict_proba", "score_samples"):
        lazy = getattr(gm, method)(Xu)
        assert isinstance(lazy, da.Array)
        assert lazy.numblocks[0] == Xu.numblocks[0]
        assert all(np.isnan(c) for c in lazy.chunks[0])
        assert_allclose(
            lazy.compute(), getattr(gm_np, method)(X), rtol=1e-10, atol=1e-12
        )
    assert_allclose(gm.score(Xu), gm_np.score(X), rtol=1e-12)


def test_float32_input_keeps_float32_outputs(blobs):
    X, _ = blobs
    X32 = X.astype(np.float32)
    gm32 = GaussianMixture(3, random_state=0).fit(X32)
    # The kernels accumulate in float64: same fit as on the float64 copy of the data.
    gm64 = GaussianMixture(3, random_state=0).fit(X32.astype(np.float64))
    for name in FITTED_ARRAYS:
        assert getattr(gm32, name).dtype == np.float32, name
        assert_array_equal(getattr(gm32, name), getattr(gm64, name).astype(np.float32))
    assert gm32.lower_bound_ == gm64.lower_bound_
    Xd32 = da.from_array(X32, chunks=(100, 2))
    for data in (X32, Xd32):
        proba, scores = gm32.predict_proba(data), gm32.score_samples(data)
        labels = gm32.predict(data)
        assert proba.dtype == scores.dtype == np.float32
        assert labels.dtype == np.int64
        proba, scores = np.asarray(proba), np.asarray(scores)  # computes dask
        assert proba.dtype == scores.dtype == np.float32
        assert_allclose(proba, gm64.predict_proba(X32), rtol=1e-4, atol=1e-6)
        assert_allclose(scores, gm64.score_samples(X32), rtol=1e-5)


@pytest.mark.parametrize("kind", ["int", "bool"])
@pytest.mark.parametrize("use_dask", [False, True])
def test_integer_and_bool_input_are_cast_to_float64(blobs, kind, use_dask):
    X, _ = blobs
    data = np.round(X * 10).astype(np.int64) if kind == "int" else X > 4
    as_float = data.astype(np.float64)
    if use_dask:
        data, as_float = (da.from_array(a, chunks=(150, 2)) for a in (data, as_float))
    kwargs = dict(random_state=0, reg_covar=1e-3)
    gm = GaussianMixture(3, **kwargs).fit(data)
    reference = GaussianMixture(3, **kwargs).fit(as_float)
    for name in FITTED_ARRAYS:
        assert getattr(gm, name).dtype == np.float64
    assert_same_fit(gm, reference, rtol=1e-12)
    assert np.asarray(gm.score_samples(data)).dtype == np.float64
    assert_array_equal(
        np.asarray(gm.predict(data)), np.asarray(reference.predict(data))
    )


###############################################################################
# 3. Every parameter is honoured


def test_n_init_keeps_the_run_with_the_best_lower_bound(monkeypatch):
    rng = np.random.RandomState(1)
    X = np.vstack([rng.randn(200, 2) + c for c in [[0, 0], [6, 0], [0, 6], [6, 6]]])
    runs = []
    original = daskgmm._runner.run_em_batched

    def recording(passes, batch, **kwargs):
        starts = [run.params for run in batch]
        original(passes, batch, **kwargs)
        runs.extend(zip(starts, [run.result() for run in batch], strict=True))

    monkeypatch.setattr(daskgmm._runner, "run_em_batched", recording)
    kwargs = dict(init_params="random_from_data", random_state=0, tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(4, n_init=4, **kwargs).fit(X)
    monkeypatch.undo()
    assert len(runs) == 4
    assert len({round(r.lower_bound, 8) for _, r in runs}) >= 2  # starts differ
    # Each start fitted separately, from its parameters given as *_init.
    separate = []
    for start, _ in runs:
        precisions = start.precisions_cholesky @ np.swapaxes(
            start.precisions_cholesky, -1, -2
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            one = GaussianMixture(
                4,
                weights_init=start.weights,
                means_init=start.means,
                precisions_init=precisions,
                tol=1e-6,
            ).fit(X)
        separate.append(one)
    best = max(separate, key=lambda g: g.lower_bound_)
    assert_allclose(gm.lower_bound_, best.lower_bound_, rtol=1e-12)
    assert gm.lower_bound_ == max(r.lower_bound for _, r in runs)
    assert_allclose(gm.means_, best.means_, rtol=1e-8, atol=1e-10)
    # n_init=1 with the same seed is the first of these runs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = GaussianMixture(4, n_init=1, **kwargs).fit(X)
    assert first.lower_bound_ == runs[0][1].lower_bound
    assert gm.lower_bound_ >= first.lower_bound_


def _match_rows(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Rows of ``found`` reordered to be nearest to the rows of ``expected``."""
    order = [int(np.argmin(((found - e) ** 2).sum(axis=1))) for e in expected]
    assert sorted(order) == list(range(len(expected)))
    return found[order]


@pytest.mark.parametrize("method", INIT_METHODS)
def test_init_params_start_where_the_method_says(blobs, method):
    X, _ = blobs
    reg = 1e-4
    gm = GaussianMixture(
        3, init_params=method, random_state=0, max_iter=0, reg_covar=reg
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # none for max_iter=0
        gm.fit(X)
    assert gm.n_iter_ == 0 and not gm.converged_
    if method in ("k-means++", "random_from_data"):
        # Means are data rows (up to rounding: k-means++ works on centred rows);
        # one-point components of covariance reg_covar.
        gap = np.abs(X[None, :, :] - gm.means_[:, None, :]).max(axis=2).min(axis=1)
        assert (gap < 1e-12).all()
        assert len(np.unique(gm.means_, axis=0)) == 3
        assert_allclose(gm.covariances_, np.broadcast_to(reg * np.eye(2), (3, 2, 2)))
        assert_allclose(gm.weights_, 1 / 3)
    elif method == "kmeans":
        # Lloyd + hard assignment on separated blobs: close to the truth.
        assert_allclose(_match_rows(gm.means_, CENTERS), CENTERS, atol=0.25)
        assert_allclose(gm.weights_, 1 / 3, atol=0.01)
    else:
        # Uniform random responsibilities: every mean near the global mean.
        assert_allclose(gm.means_, np.broadcast_to(X.mean(axis=0), (3, 2)), atol=0.8)
        assert_allclose(gm.weights_, 1 / 3, atol=0.05)
        assert not np.allclose(gm.means_[0], gm.means_[1], atol=1e-6)


def test_init_params_give_different_starts(blobs):
    X, _ = blobs
    starts = [
        GaussianMixture(3, init_params=m, random_state=0, max_iter=0).fit(X).means_
        for m in INIT_METHODS
    ]
    for i in range(len(starts)):
        for j in range(i + 1, len(starts)):
            assert not np.allclose(starts[i], starts[j]), (
                INIT_METHODS[i],
                INIT_METHODS[j],
            )
    # random_state is honoured too.
    other = GaussianMixture(3, init_params="k-means++", random_state=1, max_iter=0)
    assert not np.allclose(other.fit(X).means_, starts[1])


@pytest.mark.parametrize("method", INIT_METHODS)
def test_init_params_fit_separated_blobs_reproducibly(blobs, method):
    X, y = blobs
    Xd = da.from_array(X, chunks=(150, 2))
    kwargs = dict(init_params=method, random_state=2, tol=1e-6, max_iter=300)
    gm = GaussianMixture(3, **kwargs).fit(Xd)
    assert gm.converged_
    assert adjusted_rand_score(y, gm.predict(X)) >= 0.95
    again = GaussianMixture(3, **kwargs).fit(Xd)
    assert_same_fit(again, gm, rtol=0)


@pytest.mark.filterwarnings("ignore::daskgmm.ConvergenceWarning")
def test_warm_start_continues_from_the_previous_solution(overlapping):
    X = overlapping
    cold = GaussianMixture(3, random_state=0, max_iter=4, tol=0).fit(X)
    gm = GaussianMixture(3, random_state=0, max_iter=3, tol=0, warm_start=True).fit(X)
    assert_allclose(gm.lower_bounds_, cold.lower_bounds_[:3], rtol=1e-12)
    gm.set_params(max_iter=1).fit(X)
    assert gm.n_iter_ == 1
    assert_allclose(gm.lower_bounds_, cold.lower_bounds_[3:], rtol=1e-12)
    assert_allclose(gm.means_, cold.means_, rtol=1e-12)
    assert_allclose(gm.covariances_, cold.covariances_, rtol=1e-12)
    # Without warm_start the second fit starts again from the initialisation.
    fresh = GaussianMixture(3, random_state=0, max_iter=3, tol=0).fit(X)
    fresh.set_params(max_iter=1).fit(X)
    assert_allclose(fresh.lower_bounds_, cold.lower_bounds_[:1], rtol=1e-12)


def test_warm_start_stops_at_once_when_already_converged(overlapping):
    X = overlapping
    gm = GaussianMixture(3, random_state=0, tol=1e-6, warm_start=True).fit(X)
    n_first = gm.n_iter_
    assert gm.converged_ and n_first > 2
    gm.fit(X)
    assert gm.n_iter_ == 1 and gm.converged_


def test_tol_changes_the_number_of_iterations(overlapping):
    X = overlapping
    n_iter = []
    for tol in (1e-1, 1e-3, 1e-6):
        gm = GaussianMixture(3, random_state=0, tol=tol, max_iter=500).fit(X)
        assert gm.converged_
        changes = np.abs(np.diff(gm.lower_bounds_))
        assert changes[-1] < tol
        assert (changes[:-1] >= tol).all()
        assert len(gm.lower_bounds_) == gm.n_iter_
        n_iter.append(gm.n_iter_)
    assert n_iter[0] < n_iter[1] < n_iter[2]


@pytest.mark.parametrize("reg_covar", [1e-2, 1e-5])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_reg_covar_on_the_diagonal_of_a_constant_feature(covariance_type, reg_covar):
    rng = np.random.RandomState(0)
    x = rng.randn(500) * 3 + 1
    X = np.column_stack([x, np.full(500, 3.0)])
    gm = GaussianMixture(1, covariance_type=covariance_type, reg_covar=reg_covar)
    gm.fit(X)
    var = x.var()  # the one component is the whole data set
    expected = {
        "full": np.array([[[var + reg_covar, 0.0], [0.0, reg_covar]]]),
        "tied": np.array([[var + reg_covar, 0.0], [0.0, reg_covar]]),
        "diag": np.array([[var + reg_covar, reg_covar]]),
        "spherical": np.array([var / 2 + reg_covar]),
    }[covariance_type]
    assert_allclose(gm.covariances_, expected, rtol=1e-9, atol=1e-15)
    assert_allclose(gm.means_, [[x.mean(), 3.0]], rtol=1e-12)


def test_reg_covar_zero_on_a_constant_feature_raises_ill_defined():
    rng = np.random.RandomState(0)
    X = np.column_stack([rng.randn(100), np.full(100, 3.0)])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Fitting the mixture model failed because some components have ill-defined "
            "empirical covariance"
        ),
    ):
        GaussianMixture(1, reg_covar=0.0).fit(X)


def _iteration_lines(messages: list[str]) -> list[int]:
    return [int(m.split()[1]) for m in messages if m.startswith("iteration ")]


@pytest.mark.filterwarnings("ignore::daskgmm.ConvergenceWarning")
@pytest.mark.parametrize(
    "interval, expected", [(2, [2, 4]), (3, [3]), (1, [1, 2, 3, 4, 5])]
)
def test_verbose_logs_every_verbose_interval(overlapping, caplog, interval, expected):
    gm = GaussianMixture(
        3, random_state=0, tol=0, max_iter=5, verbose=1, verbose_interval=interval
    )
    gm.fit(overlapping)
    messages = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("daskgmm") and r.levelno >= logging.INFO
    ]
    assert _iteration_lines(messages) == expected
    assert (
        f"initialization 0 did not converge; lower bound {gm.lower_bound_:.10g}"
        in messages
    )
    assert logging.getLogger("daskgmm").level == logging.NOTSET  # restored


@pytest.mark.filterwarnings("ignore::daskgmm.ConvergenceWarning")
def test_verbose_zero_logs_nothing(overlapping, caplog):
    GaussianMixture(3, random_state=0, tol=0, max_iter=5, verbose_interval=1).fit(
        overlapping
    )
    assert [r for r in caplog.records if r.name.startswith("daskgmm")] == []


@pytest.mark.filterwarnings("ignore::daskgmm.ConvergenceWarning")
def test_verbose_writes_to_stderr_when_logging_is_not_configured(
    overlapping, capsys, monkeypatch
):
    logger = logging.getLogger("daskgmm")
    monkeypatch.setattr(logger, "propagate", False)
    assert not logger.hasHandlers()
    gm = GaussianMixture(3, random_state=0, tol=0, max_iter=4, verbose=2)
    gm.set_params(verbose_interval=2).fit(overlapping)
    err = capsys.readouterr().err.splitlines()
    assert _iteration_lines(err) == [2, 4]
    line = next(e for e in err if e.startswith("iteration 4 "))
    assert f"mean log-likelihood {gm.lower_bounds_[3]:.10g}" in line
    assert logger.handlers == []  # the temporary handler is removed


def test_split_every_and_persist_give_identical_results(blobs, monkeypatch):
    X, _ = blobs
    Xd = da.from_array(X, chunks=(50, 2))  # 12 row blocks
    recorder = RecordPasses(monkeypatch)
    fits = {}
    for split_every in (2, 3, 16):
        for persist in (True, False, "auto"):
            gm = GaussianMixture(
                3, random_state=0, tol=1e-8, split_every=split_every, persist=persist
            )
            fits[split_every, persist] = gm.fit(Xd)
    reference = fits[16, "auto"]
    for (split_every, _persist), gm in fits.items():
        # Same tree: bitwise equal; another tree: the last bits may differ.
        assert_same_fit(gm, fits[split_every, True], rtol=0)
        assert_same_fit(gm, reference, rtol=1e-12)
    # split_every is honoured: combine tasks per pass for 12 blocks (the root
    # combine is the 'total' task).
    n_combine = [
        sum(key_split(k) in ("gmm-estep-combine", "gmm-estep-total") for k in graph)
        for graph in recorder.graphs("estep")
    ]
    per_fit = reference.n_iter_
    assert len(n_combine) == 9 * per_fit
    assert set(n_combine[: 3 * per_fit]) == {6 + 3 + 2 + 1}
    assert set(n_combine[3 * per_fit : 6 * per_fit]) == {4 + 2 + 1}
    assert set(n_combine[6 * per_fit :]) == {1}


class CountingSource:
    """An array-like for ``da.from_array`` that counts the blocks read from it."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.reads = 0
        self._lock = threading.Lock()

    def __getitem__(self, index):
        out = self.array[index]
        if out.size:
            with self._lock:
                self.reads += 1
        return out


@pytest.mark.parametrize("persist", [True, False, "auto"])
def test_persist_reads_the_source_once_or_at_every_pass(blobs, persist):
    X, _ = blobs
    source = CountingSource(X)
    Xd = da.from_array(source, chunks=(100, 2), name="counting-source")
    gm = GaussianMixture(3, random_state=0, tol=1e-8, persist=persist).fit(Xd)
    n_blocks = 6
    # Passes: the initialisation sample, the k-means hard assignment, n_iter_ E-steps.
    n_passes = 2 + gm.n_iter_
    # 'auto' keeps this small dask array in memory (threaded scheduler).
    expected = n_blocks * n_passes if persist is False else n_blocks
    assert source.reads == expected
    assert_same_fit(gm, GaussianMixture(3, random_state=0, tol=1e-8).fit(X), rtol=1e-10)


def test_convergence_warning_when_max_iter_is_too_small(overlapping):
    assert issubclass(ConvergenceWarning, UserWarning)
    assert daskgmm.ConvergenceWarning is ConvergenceWarning
    gm = GaussianMixture(3, random_state=0, max_iter=2, tol=1e-10)
    with pytest.warns(ConvergenceWarning, match=re.escape(NOT_CONVERGED)):
        gm.fit(overlapping)
    assert not gm.converged_
    assert gm.n_iter_ == 2 and len(gm.lower_bounds_) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert (
            GaussianMixture(3, random_state=0, max_iter=500).fit(overlapping).converged_
        )


def test_convergence_warning_points_at_the_callers_line(overlapping):
    with pytest.warns(ConvergenceWarning) as record:
        GaussianMixture(3, random_state=0, max_iter=1).fit(overlapping)
    assert record[0].filename == __file__


def test_max_iter_zero_returns_the_given_initial_parameters(blobs):
    X, _ = blobs
    weights = np.array([0.2, 0.3, 0.5])
    means = CENTERS + 0.5
    precisions = np.stack([np.eye(2) * s for s in (1.0, 2.0, 4.0)])
    gm = GaussianMixture(
        3,
        weights_init=weights,
        means_init=means,
        precisions_init=precisions,
        max_iter=0,
    ).fit(X)
    assert_array_equal(gm.weights_, weights)
    assert_array_equal(gm.means_, means)
    assert_allclose(gm.precisions_, precisions, rtol=1e-12)
    assert_allclose(gm.covariances_, np.linalg.inv(precisions), rtol=1e-12)
    assert gm.n_iter_ == 0 and not gm.converged_ and gm.lower_bounds_ == []
    # The first EM iteration starts from them: its lower bound is their mean
    # log-likelihood, computed independently by scikit-learn.
    one = GaussianMixture(
        3, weights_init=weights, means_init=means, precisions_init=precisions, tol=0
    )
    with pytest.warns(ConvergenceWarning):
        one.set_params(max_iter=1).fit(X)
    assert_allclose(one.lower_bounds_, [sklearn_twin(gm).score(X)], rtol=1e-12)


###############################################################################
# 4. Validation errors


@pytest.mark.parametrize(
    "params, error, message",
    [
        (
            {"n_components": 0},
            ValueError,
            "The 'n_components' parameter of GaussianMixture must be an int in the "
            "range [1, inf). Got 0 instead.",
        ),
        (
            {"n_components": 2.0},
            TypeError,
            "The 'n_components' parameter of GaussianMixture must be an int in the "
            "range [1, inf). Got 2.0 of type float instead.",
        ),
        (
            {"covariance_type": "bogus"},
            ValueError,
            "The 'covariance_type' parameter of GaussianMixture must be one of "
            "{'full', 'tied', 'diag', 'spherical'}. Got 'bogus' instead.",
        ),
        (
            {"tol": -1},
            ValueError,
            "The 'tol' parameter of GaussianMixture must be a float in the range "
            "[0.0, inf). Got -1 instead.",
        ),
        (
            {"tol": float("nan")},
            ValueError,
            "The 'tol' parameter of GaussianMixture must be a float in the range "
            "[0.0, inf). Got nan instead.",
        ),
        (
            {"reg_covar": -1},
            ValueError,
            "The 'reg_covar' parameter of GaussianMixture must be a float in the range "
            "[0.0, inf). Got -1 instead.",
        ),
        (
            {"max_iter": -1},
            ValueError,
            "The 'max_iter' parameter of GaussianMixture must be an int in the range "
            "[0, inf). Got -1 instead.",
        ),
        (
            {"n_init": 0},
            ValueError,
            "The 'n_init' parameter of GaussianMixture must be an int in the range "
            "[1, inf). Got 0 instead.",
        ),
        (
            {"init_params": "bogus"},
            ValueError,
            "The 'init_params' parameter of GaussianMixture must be one of "
            "{'kmeans', 'k-means++', 'random', 'random_from_data'}. Got 'bogus' instead.",
        ),
        (
            {"random_state": "x"},
            TypeError,
            "The 'random_state' parameter of GaussianMixture must be None, an int or a "
            "numpy.random.RandomState. Got 'x' of type str instead.",
        ),
        (
            {"split_every": 1},
            ValueError,
            "The 'split_every' parameter of GaussianMixture must be an int in the range "
            "[2, inf). Got 1 instead.",
        ),
        (
            {"persist": "sometimes"},
            ValueError,
            "The 'persist' parameter of GaussianMixture must be one of "
            "{'auto', True, False}. Got 'sometimes' instead.",
        ),
        (
            {"warm_start": 1},
            ValueError,
            "The 'warm_start' parameter of GaussianMixture must be one of "
            "{True, False}. Got 1 instead.",
        ),
        (
            {"verbose_interval": 0},
            ValueError,
            "The 'verbose_interval' parameter of GaussianMixture must be an int in the "
            "range [1, inf). Got 0 instead.",
        ),
        (
            {"init_sample_size": 0},
            ValueError,
            "The 'init_sample_size' parameter of GaussianMixture must be an int in the "
            "range [1, inf). Got 0 instead.",
        ),
    ],
)
def test_bad_parameter_raises_a_clear_error(blobs, params, error, message):
    X, _ = blobs
    with pytest.raises(error, match=re.escape(message)):
        GaussianMixture(**params).fit(X)


def test_one_dimensional_input_raises(blobs):
    X, _ = blobs
    message = (
        "Expected a 2-D array for X, got a 1-D array instead. Reshape your data with "
        "X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) if it is a "
        "single sample"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianMixture(2).fit(X[:, 0])
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianMixture(2).fit(da.from_array(X[:, 0]))
    gm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match=re.escape(message)):
        gm.predict(X[0])


@pytest.mark.parametrize("use_dask", [False, True])
@pytest.mark.parametrize(
    ("shape", "message"),
    [
        pytest.param(
            (0, 2),
            "Found array with 0 sample(s) (shape=(0, 2)) in X while a minimum of 2 is "
            "required",
            id="empty",
        ),
        pytest.param(
            (10, 0),
            "Found array with 0 feature(s) (shape=(10, 0)) while a minimum of 1 is "
            "required: X has no columns",
            id="zero_features",
        ),
    ],
)
def test_degenerate_input_raises(shape, message, use_dask):
    X = np.empty(shape)
    data = da.from_array(X) if use_dask else X
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianMixture(1).fit(data)


def test_sparse_input_raises_a_clear_error():
    X = sp.csr_matrix(np.random.RandomState(0).rand(20, 3))
    with pytest.raises(TypeError, match="sparse"):
        GaussianMixture(2).fit(X)


N_ABOVE = "Expected n_samples >= n_components but got n_components = 6, n_samples = 5"


def test_n_components_above_n_samples_raises():
    X = np.random.RandomState(0).randn(5, 2)
    with pytest.raises(ValueError, match=re.escape(N_ABOVE)):
        GaussianMixture(6).fit(X)
    with pytest.raises(ValueError, match=re.escape(N_ABOVE)):
        GaussianMixture(6).fit(da.from_array(X, chunks=(2, 2)))
    assert GaussianMixture(5, random_state=0, reg_covar=1e-3).fit(X).n_components == 5


def test_n_components_above_unknown_n_samples_raises_after_the_first_pass():
    X = np.random.RandomState(0).randn(5, 2)
    Xu = unknown_chunks(X, npartitions=2)
    # Discovered by the initialisation's sampling pass...
    with pytest.raises(ValueError, match=re.escape(N_ABOVE)):
        GaussianMixture(6).fit(Xu)
    # ... or, when every *_init is given (no sampling), by the first EM pass.
    inits = dict(
        weights_init=np.full(6, 1 / 6),
        means_init=np.zeros((6, 2)),
        precisions_init=np.stack([np.eye(2)] * 6),
    )
    with pytest.raises(ValueError, match=re.escape(N_ABOVE)):
        GaussianMixture(6, **inits).fit(Xu)


def _nan_message(n_bad: int, where: str) -> str:
    return (
        "Input X contains NaN or infinity (or values too large for float64) in "
        f"{n_bad} row(s){where}; drop or impute those rows before fitting or predicting"
    )


@pytest.fixture(scope="module")
def with_non_finite() -> np.ndarray:
    X = np.random.RandomState(0).randn(50, 2)
    X[7, 1] = np.nan
    X[9, 0] = np.inf
    X[40, :] = -np.inf
    return X


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_non_finite_row_count_against_a_row_by_row_check(with_non_finite, dtype):
    from daskgmm._validation import count_non_finite_rows

    def brute(X):
        rows = [i for i in range(X.shape[0]) if not np.isfinite(X[i]).all()]
        return len(rows), (rows[0] if rows else None)

    big = np.finfo(dtype).max
    overflow = np.full((6, 2), big, dtype=dtype)  # finite rows, infinite sum
    mixed = overflow.copy()
    mixed[4, 1] = np.nan
    cancel = np.zeros((5, 3), dtype=dtype)
    cancel[2, 0], cancel[3, 1] = np.inf, -np.inf  # inf - inf: NaN sum
    for X in (with_non_finite.astype(dtype), overflow, mixed, cancel, overflow[:0]):
        assert count_non_finite_rows(X) == brute(X)
    assert count_non_finite_rows(overflow) == (0, None)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_nan_and_inf_in_fit_name_the_rows(with_non_finite, kind):
    X = with_non_finite
    data = X if kind == "numpy" else da.from_array(X, chunks=(5, 2))
    with pytest.raises(
        ValueError, match=re.escape(_nan_message(3, " (first at row 7)"))
    ):
        GaussianMixture(2).fit(data)


def test_nan_in_fit_with_unknown_chunks_names_the_block(with_non_finite):
    Xu = unknown_chunks(with_non_finite, npartitions=5)  # 10 rows per block
    message = _nan_message(3, " (first in row block 0, row 7 of the block)")
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianMixture(2).fit(Xu)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_in_fit_with_every_init_given_is_found_by_the_first_em_pass(
    with_non_finite,
):
    inits = dict(
        weights_init=[0.5, 0.5], means_init=np.zeros((2, 2)), precisions_init=np.ones(2)
    )
    gm = GaussianMixture(2, covariance_type="spherical", **inits)
    with pytest.raises(
        ValueError, match=re.escape(_nan_message(3, " (first at row 7)"))
    ):
        gm.fit(da.from_array(with_non_finite, chunks=(5, 2)))


@pytest.mark.parametrize(
    "method", ["predict", "predict_proba", "score_samples", "score"]
)
def test_nan_and_inf_at_predict_on_numpy_name_the_rows(with_non_finite, method):
    gm = GaussianMixture(2, random_state=0).fit(
        np.nan_to_num(with_non_finite, posinf=0.0, neginf=0.0)
    )
    with pytest.raises(
        ValueError, match=re.escape(_nan_message(3, " (first at row 7)"))
    ):
        getattr(gm, method)(with_non_finite)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_and_inf_in_score_on_dask_name_the_rows(with_non_finite):
    gm = GaussianMixture(2, random_state=0).fit(
        np.nan_to_num(with_non_finite, posinf=0.0, neginf=0.0)
    )
    Xd = da.from_array(with_non_finite, chunks=(5, 2))
    with pytest.raises(
        ValueError, match=re.escape(_nan_message(3, " (first at row 7)"))
    ):
        gm.score(Xd)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples"])
def test_nan_at_lazy_predict_on_dask_counts_the_rows_of_the_block(
    with_non_finite, method
):
    X = np.nan_to_num(with_non_finite, posinf=0.0, neginf=0.0)
    gm = GaussianMixture(2, random_state=0).fit(X)
    X[[7, 9], [1, 0]] = [np.nan, np.inf]
    lazy = getattr(gm, method)(da.from_array(X, chunks=(5, 2)))
    # Blocks of 5 rows: rows 7 and 9 are both in block 1 (the error is raised
    # when the lazy result is computed).
    where = " of the block of rows 5 to 9 (first at row 7)"
    with pytest.raises(ValueError, match=re.escape(_nan_message(2, where))):
        lazy.compute(scheduler="sync")


def test_nan_at_lazy_predict_on_dask_names_the_first_row(with_non_finite):
    X = np.nan_to_num(with_non_finite, posinf=0.0, neginf=0.0)
    gm = GaussianMixture(2, random_state=0).fit(X)
    X[7, 1] = np.nan  # the only bad row: its block is the one that fails
    lazy = gm.predict(da.from_array(X, chunks=(5, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ValueError, match=re.escape("(first at row 7)")):
            lazy.compute(scheduler="sync")


@pytest.mark.parametrize("use_dask", [False, True])
def test_wrong_number_of_features_at_predict_raises(blobs, use_dask):
    X, _ = blobs
    gm = GaussianMixture(2, random_state=0).fit(X)
    X3 = np.random.RandomState(0).randn(10, 3)
    data = da.from_array(X3, chunks=(5, 3)) if use_dask else X3
    message = "X has 3 features, but GaussianMixture is expecting 2 features as input"
    for method in ("predict", "predict_proba", "score_samples", "score", "bic"):
        with pytest.raises(ValueError, match=re.escape(message)):
            getattr(gm, method)(data)


@pytest.mark.parametrize("use_dask", [False, True])
def test_non_numeric_dataframe_column_raises_type_error_naming_it(blobs, use_dask):
    X, _ = blobs
    df = pd.DataFrame({"a": X[:, 0], "name": ["x"] * len(X), "b": X[:, 1]})
    data = dd.from_pandas(df, npartitions=2) if use_dask else df
    with pytest.raises(TypeError, match=r"X has non-numeric columns 'name' \(") as info:
        GaussianMixture(2).fit(data)
    assert "select numeric columns first, e.g. X.select_dtypes('number')" in str(
        info.value
    )
    assert "'a'" not in str(info.value) and "'b'" not in str(info.value)


def test_string_arrays_raise_type_error():
    with pytest.raises(
        TypeError,
        match=re.escape(
            "X must hold numbers (int, float or bool), got dtype <U1; convert or drop "
            "non-numeric columns first"
        ),
    ):
        GaussianMixture(1).fit(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "X must hold numbers, got objects that are not numbers (could not convert "
            "string to float: 'a'); convert or drop non-numeric columns first"
        ),
    ):
        GaussianMixture(1).fit(np.array([["a", 1.0], ["c", 2.0]], dtype=object))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Complex data not supported: X has dtype complex128; pass its real part "
            "(X.real) or its magnitude (abs(X))"
        ),
    ):
        GaussianMixture(1).fit(np.ones((3, 2), dtype=complex))


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"means_init": np.zeros((3, 2))},
            "The parameter 'means' should have the shape of (2, 2), but got (3, 2): "
            "means_init must have shape (n_components, n_features)",
        ),
        (
            {"weights_init": [1.0]},
            "The parameter 'weights' should have the shape of (2,), but got (1,): "
            "weights_init must have shape (n_components,)",
        ),
        (
            {"precisions_init": np.ones((2, 2))},
            "The parameter 'full precision' should have the shape of (2, 2, 2), but "
            "got (2, 2): precisions_init must have shape (n_components, n_features, "
            "n_features) for covariance_type='full'",
        ),
        (
            {"covariance_type": "tied", "precisions_init": np.ones((2, 2, 2))},
            "The parameter 'tied precision' should have the shape of (2, 2), but got "
            "(2, 2, 2): precisions_init must have shape (n_features, n_features) for "
            "covariance_type='tied'",
        ),
        (
            {"covariance_type": "diag", "precisions_init": np.ones(2)},
            "The parameter 'diag precision' should have the shape of (2, 2), but got "
            "(2,): precisions_init must have shape (n_components, n_features) for "
            "covariance_type='diag'",
        ),
        (
            {"covariance_type": "spherical", "precisions_init": np.ones((2, 2))},
            "The parameter 'spherical precision' should have the shape of (2,), but "
            "got (2, 2): precisions_init must have shape (n_components,) for "
            "covariance_type='spherical'",
        ),
        (
            {"weights_init": [0.5, 0.6]},
            "The parameter 'weights' should be normalized, but got sum(weights) = "
            "1.10000: weights_init must sum to 1 (divide it by its sum)",
        ),
        (
            {"weights_init": [-0.5, 1.5]},
            "The parameter 'weights' should be in the range [0, 1], but got max value "
            "1.50000, min value -0.50000: every weights_init value must be in [0, 1]",
        ),
        (
            {"means_init": [[0.0, np.nan], [1.0, 1.0]]},
            "means_init must be finite, got NaN or infinity",
        ),
        (
            {"precisions_init": np.array([np.eye(2), -np.eye(2)])},
            "'full precision' should be symmetric, positive-definite: precisions_init "
            "must hold symmetric positive-definite matrices (inverse covariances)",
        ),
        (
            {"precisions_init": np.array([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])},
            "'full precision' should be symmetric, positive-definite: precisions_init "
            "must hold symmetric positive-definite matrices (inverse covariances)",
        ),
        (
            {"precisions_init": np.array([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]])},
            "'full precision' should be symmetric, positive-definite: precisions_init "
            "must hold symmetric positive-definite matrices (inverse covariances)",
        ),
        (
            {"covariance_type": "tied", "precisions_init": [[1.0, 2.0], [2.0, 1.0]]},
            "'tied precision' should be symmetric, positive-definite: precisions_init "
            "must hold symmetric positive-definite matrices (inverse covariances)",
        ),
        (
            {"covariance_type": "diag", "precisions_init": [[1.0, 1.0], [1.0, 0.0]]},
            "'diag precision' should be positive: every precisions_init value "
            "must be > 0",
        ),
        (
            {"covariance_type": "spherical", "precisions_init": [1.0, -1.0]},
            "'spherical precision' should be positive: every precisions_init value "
            "must be > 0",
        ),
    ],
)
def test_bad_init_arrays_raise(blobs, params, message):
    X, _ = blobs
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianMixture(2, **params).fit(X)


def test_sample_with_bad_n_samples_raises(blobs):
    gm = GaussianMixture(2, random_state=0).fit(blobs[0])
    for bad in (0, -1, 2.5):
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"Invalid value for 'n_samples': {bad!r}. The sampling requires at "
                "least one sample."
            ),
        ):
            gm.sample(bad)


###############################################################################
# 5. score, bic, aic, sample


@pytest.mark.parametrize(
    "covariance_type, n_parameters",
    # K=3 components, d=2 features: covariance + means (K·d) + weights (K−1).
    [
        ("full", 9 + 6 + 2),
        ("tied", 3 + 6 + 2),
        ("diag", 6 + 6 + 2),
        ("spherical", 3 + 6 + 2),
    ],
)
def test_score_bic_aic_on_dask_equal_numpy_and_scikit_learn(
    blobs, covariance_type, n_parameters
):
    X, _ = blobs
    n = len(X)
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    Xd = da.from_array(X, chunks=(77, 2))
    score = gm.score(X)
    assert isinstance(score, float) and isinstance(gm.score(Xd), float)
    assert_allclose(gm.score(Xd), score, rtol=1e-12)
    assert_allclose(gm.bic(Xd), gm.bic(X), rtol=1e-12)
    assert_allclose(gm.aic(Xd), gm.aic(X), rtol=1e-12)
    assert_allclose(gm.bic(X), -2 * n * score + n_parameters * np.log(n), rtol=1e-12)
    assert_allclose(gm.aic(X), -2 * n * score + 2 * n_parameters, rtol=1e-12)
    twin = sklearn_twin(gm)
    assert_allclose(score, twin.score(X), rtol=1e-10)
    assert_allclose(gm.bic(Xd), twin.bic(X), rtol=1e-10)
    assert_allclose(gm.aic(Xd), twin.aic(X), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_shapes_labels_and_distribution(blobs, covariance_type):
    X, _ = blobs
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    rows, labels = gm.sample(3000)
    assert rows.shape == (3000, 2) and labels.shape == (3000,)
    assert rows.dtype == np.float64 and labels.dtype == np.int64
    assert set(np.unique(labels)) == {0, 1, 2}
    assert_allclose(np.bincount(labels) / 3000, gm.weights_, atol=0.04)
    for k in range(3):
        assert_allclose(rows[labels == k].mean(axis=0), gm.means_[k], atol=0.15)
    # Separated blobs: the model assigns almost every drawn row to its component.
    assert (gm.predict(rows) == labels).mean() > 0.99
    one_row, one_label = gm.sample()
    assert one_row.shape == (1, 2) and one_label.shape == (1,)
    # An int random_state gives the same draws every time.
    assert_array_equal(gm.sample(10)[0], gm.sample(10)[0])


###############################################################################
# 6. The dask graph of a pass


def test_predict_parameters_are_one_graph_key_shared_by_every_block(blobs):
    X, _ = blobs
    gm = GaussianMixture(3, random_state=0).fit(X)
    Xd = da.from_array(X, chunks=(50, 2))
    for method, name in [("predict", "gmm-label"), ("predict_proba", "gmm-proba")]:
        graph = dict(getattr(gm, method)(Xd).__dask_graph__())
        params_keys = [k for k in graph if key_split(k) == "gmm-params"]
        assert len(params_keys) == 1
        blocks = [k for k in graph if key_split(k) == name]
        assert len(blocks) == 12
        for key in blocks:
            assert params_keys[0] in graph[key].dependencies


@pytest.mark.filterwarnings("ignore::daskgmm.ConvergenceWarning")
def test_tasks_per_pass_do_not_grow_between_iterations(overlapping, monkeypatch):
    X = overlapping
    Xd = da.from_array(X, chunks=(250, 2))  # 8 blocks
    recorder = RecordPasses(monkeypatch)
    gm = GaussianMixture(3, random_state=0, tol=0, max_iter=6, persist=True).fit(Xd)
    assert gm.n_iter_ == 6
    graphs = recorder.graphs("estep")
    assert len(graphs) == 6
    sizes = [len(g) for g in graphs]
    # 8 persisted blocks + 8 block tasks (small parameters inside) + 1 total (the
    # combine).
    assert sizes == [8 + 8 + 1] * 6
    for graph in graphs:
        names = [key_split(k) for k in graph]
        assert names.count("gmm-params") == 0
        assert names.count("gmm-estep") == 8
        assert names.count("gmm-estep-combine") == 0
        assert names.count("gmm-estep-total") == 1
    # The other passes of the fit: the initialisation sample and k-means.
    assert [name for name, _ in recorder.passes] == ["sample", "init-kmeans"] + [
        "estep"
    ] * 6


def test_one_compute_per_iteration(overlapping, monkeypatch):
    calls = []
    original = dask.compute

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(daskgmm._em.dask, "compute", counting)
    gm = GaussianMixture(3, random_state=0, tol=1e-4).fit(overlapping)
    assert len(calls) == 2 + gm.n_iter_  # sample + k-means pass + one per iteration
