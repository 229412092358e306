"""Fits that must not depend on how the rows are chunked, nor on where the data sit.

The statistics of a pass are tree-reduced block sums, so any chunking (ragged, with
empty blocks, one block, many blocks), any fan-in ``split_every`` and NumPy, dask
array or dask DataFrame input give the same fit to rounding. The per-component shift
keeps the covariances exact far from the origin (offsets of 1e6 and 1e8).
"""

from __future__ import annotations

import functools
import os
import warnings

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from daskgmm import GaussianMixture
from tests.conftest import FITTED_ARRAYS
from tests.conftest import assert_same_fit as same_fit

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
PARAMETERS = FITTED_ARRAYS
N_SAMPLES = 150
N_FEATURES = 3


@functools.cache
def blobs() -> tuple[np.ndarray, dict]:
    """150 rows from three overlapping blobs, and a perturbed truth to start from."""
    rng = np.random.default_rng(2024)
    means = np.array([[0.0, 0.0, 0.0], [3.0, 2.0, -1.0], [-2.0, 3.0, 1.5]])
    covs = []
    for _ in range(3):
        a = rng.normal(size=(N_FEATURES, N_FEATURES))
        covs.append(a @ a.T / N_FEATURES + 0.4 * np.eye(N_FEATURES))
    labels = rng.choice(3, size=N_SAMPLES, p=[0.3, 0.3, 0.4])
    X = np.stack([rng.multivariate_normal(means[j], covs[j]) for j in labels])
    start = {
        "weights": np.array([0.25, 0.35, 0.4]),
        "means": means + rng.normal(scale=0.7, size=means.shape),
        "covariances": np.stack(covs) * rng.uniform(0.5, 2.0, size=(3, 1, 1)),
    }
    return X, start


def inits(ctype: str, shift: float = 0.0) -> dict:
    """Starting parameters of ``ctype`` (means moved by ``shift``)."""
    _, start = blobs()
    covs = start["covariances"]
    if ctype == "full":
        precisions = np.linalg.inv(covs)
    elif ctype == "tied":
        precisions = np.linalg.inv(covs.mean(axis=0))
    elif ctype == "diag":
        precisions = 1.0 / np.einsum("kii->ki", covs)
    else:
        precisions = 1.0 / np.einsum("kii->ki", covs).mean(axis=1)
    return {
        "weights_init": start["weights"].copy(),
        "means_init": start["means"] + shift,
        "precisions_init": precisions,
    }


def masked_unknown_sizes(X: np.ndarray) -> da.Array:
    """``X`` selected by a boolean mask from a longer array: row counts unknown
    (NaN chunks) until computed, and the middle block selects no row at all."""
    junk = np.full((20, X.shape[1]), 1e3)
    longer = np.concatenate([X[:50], junk, X[50:]])
    keep = np.r_[np.ones(50, bool), np.zeros(20, bool), np.ones(len(X) - 50, bool)]
    chunks = ((50, 20, len(X) - 50),)
    return da.from_array(longer, chunks=(chunks[0], (X.shape[1],)))[
        da.from_array(keep, chunks=chunks)
    ]


def layouts() -> dict:
    """The same rows in different containers and chunkings."""
    X, _ = blobs()
    d = N_FEATURES
    # (da.concatenate drops a 0-row piece; the other layouts keep empty blocks.)
    pieces = [X[:40], X[40:40], X[40:41], X[41:]]
    return {
        "one-chunk": da.from_array(X, chunks=(N_SAMPLES, d)),
        "ragged-with-empty": da.from_array(X, chunks=((50, 0, 73, 27), (d,))),
        "concatenate-pieces": da.concatenate(
            [da.from_array(p, chunks=(max(len(p), 1), d)) for p in pieces]
        ),
        "unknown-sizes-empty-block": masked_unknown_sizes(X),
        "leading-and-trailing-empty": da.from_array(X, chunks=((0, 75, 75, 0), (d,))),
        "many-chunks": da.from_array(X, chunks=(7, d)),
        "single-row-chunks": da.from_array(X, chunks=(1, d)),
        "features-split": da.from_array(X, chunks=(40, 1)),
    }


LAYOUTS = tuple(layouts())


def fit(X, ctype, **kwargs) -> GaussianMixture:
    params = dict(n_components=3, covariance_type=ctype, tol=1e-6, max_iter=300)
    params.update(kwargs)
    return GaussianMixture(**params).fit(X)


@functools.cache
def reference(ctype: str) -> GaussianMixture:
    """The NumPy-input fit from the perturbed truth."""
    return fit(blobs()[0], ctype, **inits(ctype))


def assert_same_fit(got: GaussianMixture, want: GaussianMixture) -> None:
    assert got.converged_ and want.converged_
    same_fit(got, want, rtol=1e-10, history=True, params_rtol=1e-9, atol_scale=1e-12)


def test_the_layouts_hold_what_they_claim():
    chunks = {name: arr.chunks[0] for name, arr in layouts().items()}
    assert chunks["one-chunk"] == (150,)
    assert chunks["ragged-with-empty"] == (50, 0, 73, 27)
    assert chunks["concatenate-pieces"] == (40, 1, 109)
    assert all(np.isnan(c) for c in chunks["unknown-sizes-empty-block"])
    blocks = dask.compute(*layouts()["unknown-sizes-empty-block"].to_delayed().ravel())
    assert [len(b) for b in blocks] == [50, 0, 100]
    assert chunks["leading-and-trailing-empty"] == (0, 75, 75, 0)
    assert len(chunks["many-chunks"]) == 22
    assert len(chunks["single-row-chunks"]) == 150
    assert layouts()["features-split"].numblocks == (4, 3)
    for arr in layouts().values():
        np.testing.assert_array_equal(arr.compute(), blobs()[0])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_fit_does_not_depend_on_chunking(ctype, layout):
    X = layouts()[layout]
    got = fit(X, ctype, **inits(ctype))
    assert_same_fit(got, reference(ctype))
    assert reference(ctype).n_iter_ >= 3  # enough iterations for differences to show


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ctype", ["full", "spherical"])
def test_predictions_do_not_depend_on_chunking(ctype, layout):
    X, _ = blobs()
    model = reference(ctype)
    data = layouts()[layout]
    labels = model.predict(data)
    proba = model.predict_proba(data)
    log_density = model.score_samples(data)
    assert isinstance(proba, da.Array) and isinstance(log_density, da.Array)
    np.testing.assert_array_equal(labels.compute(), model.predict(X))
    np.testing.assert_allclose(proba.compute(), model.predict_proba(X), rtol=1e-12)
    np.testing.assert_allclose(
        log_density.compute(), model.score_samples(X), rtol=1e-12
    )
    np.testing.assert_allclose(model.score(data), model.score(X), rtol=1e-12)
    np.testing.assert_allclose(model.bic(data), model.bic(X), rtol=1e-12)


@pytest.mark.parametrize("split_every", [2, 3, 16])
@pytest.mark.parametrize("chunks", [7, 1, ((50, 0, 73, 27), (N_FEATURES,))])
def test_fit_does_not_depend_on_split_every(split_every, chunks):
    X = da.from_array(
        blobs()[0], chunks=chunks if isinstance(chunks, tuple) else (chunks, -1)
    )
    got = fit(X, "full", split_every=split_every, **inits("full"))
    assert_same_fit(got, reference("full"))


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_same_chunking_is_bitwise_reproducible(ctype):
    X = da.from_array(blobs()[0], chunks=(11, -1))
    first = fit(X, ctype, split_every=3, **inits(ctype))
    second = fit(X, ctype, split_every=3, **inits(ctype))
    assert first.lower_bounds_ == second.lower_bounds_
    for name in PARAMETERS:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_dask_array_with_unknown_chunk_sizes(ctype):
    X, _ = blobs()
    ddf = dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]), npartitions=5)
    unknown = ddf.to_dask_array()
    assert all(np.isnan(c) for c in unknown.chunks[0])
    assert_same_fit(fit(unknown, ctype, **inits(ctype)), reference(ctype))
    # Rows dropped by a filter, partition by partition.
    kept = X[:, 0] > -1.0
    filtered = unknown[unknown[:, 0] > -1.0]
    assert_same_fit(
        fit(filtered, ctype, **inits(ctype)), fit(X[kept], ctype, **inits(ctype))
    )


@pytest.mark.parametrize("ctype", ["full", "spherical"])
def test_dask_dataframe_with_unknown_chunk_sizes(ctype):
    X, _ = blobs()
    ddf = dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]), npartitions=5)
    got = fit(ddf, ctype, **inits(ctype))
    assert_same_fit(got, reference(ctype))
    np.testing.assert_array_equal(got.feature_names_in_, ["a", "b", "c"])
    kept = X[:, 0] > -1.0
    filtered = fit(ddf[ddf["a"] > -1.0], ctype, **inits(ctype))
    assert_same_fit(filtered, fit(X[kept], ctype, **inits(ctype)))


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_default_init_is_chunk_independent_when_the_sample_is_all_rows(ctype):
    """With init_sample_size >= n_samples the initial sample is every row, in order."""
    X, _ = blobs()
    want = fit(X, ctype, random_state=5, init_sample_size=N_SAMPLES)
    for data in (
        da.from_array(X, chunks=((50, 0, 73, 27), (N_FEATURES,))),
        da.from_array(X, chunks=(9, -1)),
        masked_unknown_sizes(X),
    ):
        got = fit(
            data, ctype, random_state=5, init_sample_size=N_SAMPLES, split_every=2
        )
        assert_same_fit(got, want)


###############################################################################
# Far from the origin


@pytest.mark.parametrize("shift", [1e6, 1e8])
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_far_from_origin_gives_the_centred_covariances(ctype, shift):
    X, _ = blobs()
    centred = reference(ctype)
    for data in (X + shift, da.from_array(X + shift, chunks=(23, -1))):
        far = fit(data, ctype, **inits(ctype, shift))
        assert far.converged_
        for name in ("covariances_", "precisions_", "weights_"):
            want = getattr(centred, name)
            np.testing.assert_allclose(
                getattr(far, name), want, rtol=1e-4, atol=1e-6 * np.abs(want).max()
            )
        # Absolute means: as exact as float64 allows at this offset.
        np.testing.assert_allclose(
            far.means_ - shift, centred.means_, rtol=0, atol=1e-5
        )
        np.testing.assert_allclose(far.lower_bound_, centred.lower_bound_, rtol=1e-6)
        # The densities are those of the centred model at the centred rows.
        np.testing.assert_allclose(
            far.score_samples(X + shift), centred.score_samples(X), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_default_kmeans_init_works_at_1e8(ctype):
    X, _ = blobs()
    centred = fit(X, ctype, random_state=0)
    far = fit(X + 1e8, ctype, random_state=0)
    assert far.converged_
    for name in PARAMETERS:
        assert np.all(np.isfinite(getattr(far, name))), name
    # The initialisation works on centred rows, so it picks the same seeds: the same
    # fit, up to the digits the offset costs.
    assert far.n_iter_ == centred.n_iter_
    np.testing.assert_allclose(far.covariances_, centred.covariances_, rtol=1e-4)
    np.testing.assert_allclose(far.means_ - 1e8, centred.means_, rtol=0, atol=1e-5)


def test_sklearn_loses_the_diag_covariances_at_1e8():
    """Documents why the shift matters: the textbook one-pass form fails at 1e8."""
    from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

    X, _ = blobs()
    init = inits("diag", 1e8)
    ours = fit(X + 1e8, "diag", **init)
    np.testing.assert_allclose(
        ours.covariances_, reference("diag").covariances_, rtol=1e-4
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sk = SklearnGaussianMixture(
                3,
                covariance_type="diag",
                tol=1e-6,
                max_iter=300,
                init_params="random_from_data",
                random_state=0,
                **init,
            ).fit(X + 1e8)
        except ValueError as exc:
            assert "ill-defined empirical covariance" in str(exc)
            return
    error = np.abs(sk.covariances_ - reference("diag").covariances_).max()
    assert error > 1e-2 * np.abs(reference("diag").covariances_).max()


@pytest.mark.parametrize("chunks", [-1, 100, 4096])
def test_data_computed_into_memory_is_rechunked_for_the_threads(chunks):
    """Threaded scheduler: data a fit computes into memory keeps its blocks when it
    has one to 8 per core, and is otherwise cut into about 4 per core (at least
    4096 rows each); the values do not change."""
    from daskgmm._plan import fit_array
    from daskgmm._validation import check_input

    n = 60_000
    X = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    source = da.from_array(X, chunks=(chunks, 2)).map_blocks(np.multiply, 1.0)
    cores = os.cpu_count() or 1
    given = source.numblocks[0]  # 1, 600, 15
    rows = max(4096, -(-n // (4 * cores)))  # 7500 on 2 cores
    expected = given if cores <= given <= 8 * cores else -(-n // rows)
    with dask.config.set(scheduler="threads"):
        array = fit_array(check_input(source), persist=True)
        assert array.numblocks[0] == expected
        np.testing.assert_array_equal(array.compute(), X)
