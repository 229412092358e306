"""Synthetic mixtures of daskgmm.datasets: shapes, reproducibility on any scheduler,
agreement of large samples with the true parameters, and write_gmm's files.

References: the ``truth`` returned with the data, with tolerances from the sample
size (standard errors of proportions, means and covariances); scipy's Gaussian
densities for the Bayes labels; the same data computed in memory for the files.
"""

from __future__ import annotations

import itertools
import warnings

import dask
import numpy as np
import pandas as pd
import pytest
import zarr
from dask.utils import key_split
from distributed import get_task_stream
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import multivariate_normal

from daskgmm import ConvergenceWarning, GaussianMixture
from daskgmm.datasets import MixtureTruth, make_gmm, random_mixture, write_gmm
from tests.conftest import local_client

# The scheduler's HTTP server binds a port even without a dashboard; another
# cluster on this machine may hold distributed's default 8787.
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use")


def pairwise_distances(means: np.ndarray) -> np.ndarray:
    return np.array(
        [np.linalg.norm(a - b) for a, b in itertools.combinations(means, 2)]
    )


@pytest.fixture(scope="module")
def large_sample() -> tuple[np.ndarray, np.ndarray, MixtureTruth]:
    X, y, truth = make_gmm(200_000, 3, 4, chunks=50_000, random_state=3)
    X, y = dask.compute(X, y)
    return X, y, truth


###############################################################################
# Shapes, types, validation


def test_shapes_chunks_and_types():
    X, y, truth = make_gmm(1000, 3, 4, chunks=300)
    assert X.shape == (1000, 3)
    assert X.chunks == ((300, 300, 300, 100), (3,))
    assert y.shape == (1000,)
    assert y.chunks == ((300, 300, 300, 100),)
    assert X.dtype == np.float64
    assert y.dtype == np.int64
    Xv, yv = dask.compute(X, y)
    assert Xv.dtype == np.float64 and Xv.shape == (1000, 3)
    assert yv.dtype == np.int64
    assert set(np.unique(yv)) == {0, 1, 2, 3}
    assert truth.weights.shape == (4,)
    assert truth.means.shape == (4, 3)
    assert truth.covariances.shape == (4, 3, 3)
    assert_allclose(truth.weights.sum(), 1.0, rtol=1e-14)
    assert np.all(truth.weights > 0)


def test_float32_are_the_float64_draws_rounded():
    X64, y64, _ = make_gmm(500, 2, 3, chunks=128, random_state=5)
    X32, y32, _ = make_gmm(500, 2, 3, chunks=128, random_state=5, dtype=np.float32)
    assert X32.dtype == np.float32
    values = X32.compute()
    assert values.dtype == np.float32
    assert_array_equal(values, X64.compute().astype(np.float32))
    assert_array_equal(y32.compute(), y64.compute())
    assert X32.name != X64.name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"n_samples": 0},
            "The 'n_samples' parameter of make_gmm must be an int in the range "
            "[1, inf). Got 0 instead.",
        ),
        (
            {"n_samples": 10, "chunks": 0},
            "The 'chunks' parameter of make_gmm must be an int in the range "
            "[1, inf). Got 0 instead.",
        ),
        (
            {"n_samples": 10, "n_components": 0},
            "The 'n_components' parameter of make_gmm must be an int in the range "
            "[1, inf). Got 0 instead.",
        ),
    ],
)
def test_bad_sizes_raise(kwargs, message):
    with pytest.raises(ValueError) as info:
        make_gmm(**kwargs)
    assert str(info.value) == message


def test_unknown_covariance_type_raises():
    with pytest.raises(ValueError, match="covariance_type"):
        make_gmm(10, covariance_type="ful")


###############################################################################
# Reproducibility


def test_same_random_state_same_data_other_state_other_data():
    a = dask.compute(*make_gmm(2000, 3, 3, chunks=500, random_state=1)[:2])
    b = dask.compute(*make_gmm(2000, 3, 3, chunks=500, random_state=1)[:2])
    c = dask.compute(*make_gmm(2000, 3, 3, chunks=500, random_state=2)[:2])
    assert_array_equal(a[0], b[0])
    assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


def test_same_data_on_threads_sync_and_a_distributed_cluster():
    X, y, _ = make_gmm(3000, 3, 3, chunks=400, random_state=7)
    threads = dask.compute(X, y, scheduler="threads")
    sync = dask.compute(X, y, scheduler="sync")
    with local_client(2) as client:
        X2, y2, _ = make_gmm(3000, 3, 3, chunks=400, random_state=7)
        with get_task_stream(client) as stream:
            distributed = client.compute([X2, y2], sync=True)
        # every block was drawn on the cluster's workers
        drawn = [t for t in stream.data if key_split(t["key"]).startswith("make-gmm")]
        assert len(drawn) == 2 * 8
    for got in (sync, distributed):
        assert_array_equal(got[0], threads[0])
        assert_array_equal(got[1], threads[1])


def test_rows_do_not_depend_on_chunks_or_length():
    X, y, _ = make_gmm(150_000, 2, 3, chunks=10_000)
    X_long, y_long, _ = make_gmm(150_050, 2, 3, chunks=10_000)
    # The first rows are the same whatever n_samples is.
    assert_array_equal(X_long[:150_000].compute(), X.compute())
    assert_array_equal(y_long[:150_000].compute(), y.compute())
    # A block computed alone equals the same rows of the whole array.
    assert_array_equal(X.blocks[7].compute(), X.compute()[70_000:80_000])
    # Other chunkings (ragged, across the 65,536-row generation blocks) give the
    # same rows.
    for chunks in (65_536, 70_001, 150_000, 999):
        X_other, y_other, _ = make_gmm(150_000, 2, 3, chunks=chunks)
        assert_array_equal(X_other.compute(), X.compute())
        assert_array_equal(y_other.compute(), y.compute())
    # Another seed draws other rows.
    assert not np.allclose(make_gmm(150_000, 2, 3, random_state=1)[0], X)


###############################################################################
# Agreement with the truth


def test_sample_weights_means_and_covariances_match_the_truth(large_sample):
    X, y, truth = large_sample
    n = len(X)
    counts = np.bincount(y, minlength=4)
    # Proportions: 5 standard errors sqrt(w (1 - w) / n).
    se = np.sqrt(truth.weights * (1 - truth.weights) / n)
    assert np.all(np.abs(counts / n - truth.weights) < 5 * se)
    for k in range(4):
        rows = X[y == k]
        cov = truth.covariances[k]
        # Means: 5 standard errors sqrt(Σ_ii / n_k) per coordinate.
        se_mean = np.sqrt(np.diag(cov) / counts[k])
        assert np.all(np.abs(rows.mean(axis=0) - truth.means[k]) < 5 * se_mean)
        # Covariances: var(S_ij) = (Σ_ii Σ_jj + Σ_ij²) / n_k for Gaussian rows.
        se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / counts[k])
        assert np.all(np.abs(np.cov(rows.T) - cov) < 5 * se_cov)
        # and the tolerance is tight enough to tell the components apart
        assert np.all(5 * se_mean < 0.1)


@pytest.mark.parametrize(
    "n_components, n_features, separation",
    [(3, 2, 6.0), (8, 2, 4.0), (30, 2, 6.0), (5, 5, 10.0), (12, 1, 3.0)],
)
def test_means_are_at_least_separation_apart(n_components, n_features, separation):
    for seed in range(3):
        _, _, truth = make_gmm(
            10, n_features, n_components, separation=separation, random_state=seed
        )
        assert truth.means.shape == (n_components, n_features)
        assert pairwise_distances(truth.means).min() >= separation


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_covariances_have_the_shape_of_their_type(covariance_type):
    truth = random_mixture(4, 3, covariance_type=covariance_type, random_state=2)
    covs = truth.covariances
    assert covs.shape == (4, 3, 3)
    for cov in covs:
        assert_allclose(cov, cov.T, rtol=0, atol=0)
        assert np.linalg.eigvalsh(cov).min() > 0
    off = covs - np.einsum("kii->ki", covs)[:, :, None] * np.eye(3)
    diag = np.einsum("kii->ki", covs)
    if covariance_type in ("full", "tied"):
        assert np.abs(off).max() > 0.05
    else:
        assert_array_equal(off, 0)
    if covariance_type == "full":
        assert not np.allclose(covs[0], covs[1])
    if covariance_type == "tied":
        assert all(np.array_equal(c, covs[0]) for c in covs)
    if covariance_type == "diag":
        assert not np.allclose(diag[:, 0], diag[:, 1])
    if covariance_type == "spherical":
        assert_array_equal(diag, np.repeat(diag[:, :1], 3, axis=1))
        assert not np.allclose(diag[0], diag[1])


def test_labels_are_the_generating_components(large_sample):
    X, y, truth = large_sample
    X, y = X[:40_000], y[:40_000]
    # Bayes classifier under the true mixture (scipy densities).
    log_post = np.column_stack(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(X)
            for w, m, c in zip(
                truth.weights, truth.means, truth.covariances, strict=True
            )
        ]
    )
    assert np.mean(log_post.argmax(axis=1) == y) >= 0.99
    # A fit started at the truth labels the rows with their components.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(
            4,
            weights_init=truth.weights,
            means_init=truth.means,
            precisions_init=np.linalg.inv(truth.covariances),
            max_iter=3,
        ).fit(X)
    assert np.mean(gm.predict(X) == y) >= 0.99
    assert_allclose(gm.weights_, truth.weights, atol=0.01)


###############################################################################
# write_gmm


def test_write_gmm_zarr_equals_make_gmm(tmp_path):
    path = tmp_path / "gmm.zarr"
    truth = write_gmm(str(path), 2500, 3, 4, chunks=600, random_state=9, separation=8.0)
    X, y, expected = make_gmm(2500, 3, 4, chunks=600, random_state=9, separation=8.0)
    for name in ("weights", "means", "covariances"):
        assert_array_equal(getattr(truth, name), getattr(expected, name))
    root = zarr.open_group(path, mode="r")
    assert sorted(root.array_keys()) == ["X", "y"]
    assert root["X"].chunks == (600, 3)
    assert root["y"].dtype == np.int64
    assert_array_equal(root["X"][:], X.compute())
    assert_array_equal(root["y"][:], y.compute())
    attrs = root.attrs.asdict()
    assert_array_equal(np.array(attrs["weights"]), expected.weights)
    assert_array_equal(np.array(attrs["means"]), expected.means)
    assert_array_equal(np.array(attrs["covariances"]), expected.covariances)


def test_write_gmm_parquet_equals_make_gmm(tmp_path):
    path = tmp_path / "gmm.parquet"
    write_gmm(str(path), 2500, 3, 4, format="parquet", chunks=600, random_state=9)
    X, y, _ = make_gmm(2500, 3, 4, chunks=600, random_state=9)
    frame = pd.read_parquet(path)
    assert list(frame.columns) == ["row_id", "x_0", "x_1", "x_2", "label"]
    assert_array_equal(frame["row_id"].to_numpy(), np.arange(2500))
    assert_array_equal(frame[["x_0", "x_1", "x_2"]].to_numpy(), X.compute())
    assert_array_equal(frame["label"].to_numpy(), y.compute())
    assert sorted(p.name for p in path.iterdir()) == [
        ".daskgmm",
        *(f"part.{i:05d}.parquet" for i in range(5)),
    ]


def test_write_gmm_bad_format_and_existing_path(tmp_path):
    with pytest.raises(ValueError) as info:
        write_gmm(str(tmp_path / "x"), 10, format="csv")
    assert str(info.value) == (
        "The 'format' parameter of write_gmm must be one of {'zarr', 'parquet'}. "
        "Got 'csv' instead."
    )
    write_gmm(str(tmp_path / "x.zarr"), 10, chunks=4)
    with pytest.raises(FileExistsError, match="already exists"):
        write_gmm(str(tmp_path / "x.zarr"), 10, chunks=4, random_state=1)
    write_gmm(str(tmp_path / "x.zarr"), 10, chunks=4, random_state=1, overwrite=True)
    X, _, _ = make_gmm(10, chunks=4, random_state=1)
    assert_array_equal(zarr.open_group(tmp_path / "x.zarr")["X"][:], X.compute())
