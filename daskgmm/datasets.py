"""Synthetic data from a known Gaussian mixture, generated lazily block by block."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from daskgmm import _chunks as C
from daskgmm._kernels import COVARIANCE_TYPES
from daskgmm._validation import check_int, check_option


@dataclass(frozen=True)
class MixtureTruth:
    """Parameters of the mixture the data were drawn from.

    Attributes
    ----------
    weights : ndarray of shape (n_components,)
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray of shape (n_components, n_features, n_features)
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray


def random_mixture(
    n_components: int,
    n_features: int,
    *,
    separation: float = 6.0,
    covariance_type: str = "full",
    random_state: int = 0,
) -> MixtureTruth:
    """A random mixture whose means are at least ``separation`` apart (covariances ~1).

    Means are drawn uniformly in a box and redrawn while closer than ``separation``
    to an earlier mean (the box grows if that takes too long).
    """
    rng = np.random.default_rng(random_state)
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = _separated_means(rng, n_components, n_features, separation)
    covs = np.empty((n_components, n_features, n_features))
    check_option(
        covariance_type,
        "covariance_type",
        COVARIANCE_TYPES,
        owner="random_mixture",
    )
    for k in range(n_components):
        if covariance_type in ("full", "tied"):
            a = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
            covs[k] = a @ a.T + 0.5 * np.eye(n_features)
        elif covariance_type == "diag":
            covs[k] = np.diag(rng.uniform(0.3, 1.5, size=n_features))
        else:
            covs[k] = rng.uniform(0.3, 1.5) * np.eye(n_features)
    if covariance_type == "tied":
        covs[:] = covs[0]
    return MixtureTruth(weights, means, covs)


def _separated_means(
    rng: np.random.Generator, n_components: int, n_features: int, separation: float
) -> np.ndarray:
    half = separation * max(1.0, n_components ** (1.0 / n_features))
    means: list[np.ndarray] = []
    attempts = 0
    while len(means) < n_components:
        candidate = rng.uniform(-half, half, size=n_features)
        if all(np.linalg.norm(candidate - m) >= separation for m in means):
            means.append(candidate)
        attempts += 1
        if attempts % 1000 == 0:
            half *= 1.5
    return np.array(means)


def _draw_rows(
    truth: MixtureTruth, seed: int, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Components and standard normal draws of rows ``[start, stop)``.

    Rows come in generation blocks of ``_chunks.GENERATION_ROWS``, block ``g`` drawn from a
    generator keyed by ``(seed, g)``: any row is the same whatever the dask chunks,
    the number of rows or the worker that computes it.
    """
    comps, zs = [], []
    n_features = truth.means.shape[1]
    for g in range(start // C.GENERATION_ROWS, -(-stop // C.GENERATION_ROWS)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, g]))
        comp = rng.choice(truth.weights.size, size=C.GENERATION_ROWS, p=truth.weights)
        z = rng.standard_normal(size=(C.GENERATION_ROWS, n_features))
        lo = max(start, g * C.GENERATION_ROWS) - g * C.GENERATION_ROWS
        hi = min(stop, (g + 1) * C.GENERATION_ROWS) - g * C.GENERATION_ROWS
        comps.append(comp[lo:hi])
        zs.append(z[lo:hi])
    if not comps:
        return np.empty(0, dtype=np.int64), np.empty((0, n_features))
    return np.concatenate(comps), np.concatenate(zs)


def _draw_block(
    block_info: dict | None = None,
    *,
    truth: MixtureTruth,
    seed: int,
    out_dtype: np.dtype,
    labels: bool,
) -> np.ndarray:
    start, stop = block_info[None]["array-location"][0]
    comp, z = _draw_rows(truth, seed, start, stop)
    if labels:
        return comp.astype(np.int64)
    chols = np.linalg.cholesky(truth.covariances)
    rows = truth.means[comp] + np.einsum("nij,nj->ni", chols[comp], z)
    return rows.astype(out_dtype, copy=False)


def make_gmm(
    n_samples: int,
    n_features: int = 2,
    n_components: int = 3,
    *,
    chunks: int = C.SYNTHETIC_BLOCK_ROWS,
    covariance_type: str = "full",
    separation: float = 6.0,
    dtype: type = np.float64,
    random_state: int = 0,
) -> tuple[da.Array, da.Array, MixtureTruth]:
    """Rows drawn from a random Gaussian mixture, as lazy dask arrays.

    Rows are drawn in generation blocks of 65,536 rows, block ``g`` from a generator
    keyed by ``(random_state, g)``, so the data are the same whatever the chunks, the
    number of workers or the order blocks run in (row ``i`` does not depend on
    ``n_samples`` either). Chunks that are multiples of 65,536 rows waste no draws.

    Parameters
    ----------
    n_samples, n_features, n_components : int
    chunks : int
        Rows per dask block.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
        Shape of the true covariances.
    separation : float
        Smallest distance between two true means (covariances are of order 1).
    dtype : numpy dtype
    random_state : int

    Returns
    -------
    X : dask.array.Array of shape (n_samples, n_features)
    y : dask.array.Array of int64 of shape (n_samples,)
        The true component of every row.
    truth : MixtureTruth
    """
    check_int(n_samples, "n_samples", 1, owner="make_gmm")
    check_int(n_features, "n_features", 1, owner="make_gmm")
    check_int(n_components, "n_components", 1, owner="make_gmm")
    check_int(chunks, "chunks", 1, owner="make_gmm")
    truth = random_mixture(
        n_components,
        n_features,
        separation=separation,
        covariance_type=covariance_type,
        random_state=random_state,
    )
    row_chunks = da.core.normalize_chunks((chunks,), (n_samples,))[0]
    dtype = np.dtype(dtype)
    token = tokenize(
        truth.weights, truth.means, truth.covariances, random_state, row_chunks
    )
    common = {"truth": truth, "seed": int(random_state)}
    X = da.map_blocks(
        _draw_block,
        chunks=(row_chunks, (n_features,)),
        dtype=dtype,
        meta=np.empty((0, 0), dtype=dtype),
        name=f"make-gmm-X-{token}-{dtype}",
        out_dtype=dtype,
        labels=False,
        **common,
    )
    y = da.map_blocks(
        _draw_block,
        chunks=(row_chunks,),
        dtype=np.int64,
        meta=np.empty((0,), dtype=np.int64),
        name=f"make-gmm-y-{token}",
        out_dtype=np.dtype(np.int64),
        labels=True,
        **common,
    )
    return X, y, truth


def write_gmm(
    path: str,
    n_samples: int,
    n_features: int = 2,
    n_components: int = 3,
    *,
    format: str = "zarr",
    chunks: int = 262_144,
    dtype: type = np.float64,
    random_state: int = 0,
    overwrite: bool = False,
    compressors: Any = "auto",
    **kwargs: Any,
) -> MixtureTruth:
    """Generate :func:`make_gmm` data and write it to Zarr or Parquet, chunk by chunk.

    Zarr: a group with arrays ``X`` (n_samples, n_features) and ``y`` (labels), chunked
    like the generation. Parquet: a dataset directory with columns ``row_id``,
    ``x_0 …`` and ``label``, one file per chunk. The truth is stored in the Zarr
    attributes / returned. ``compressors`` is passed to :func:`daskgmm.io.write_zarr`
    (``"fast"`` for a store that streams fastest).

    Returns
    -------
    MixtureTruth
    """
    from daskgmm.io import write_parquet, write_zarr

    check_option(format, "format", ("zarr", "parquet"), owner="write_gmm")
    X, y, truth = make_gmm(
        n_samples,
        n_features,
        n_components,
        chunks=chunks,
        dtype=dtype,
        random_state=random_state,
        **kwargs,
    )
    if format == "zarr":
        attrs = {
            "weights": truth.weights.tolist(),
            "means": truth.means.tolist(),
            "covariances": truth.covariances.tolist(),
        }
        write_zarr(
            {"X": X, "y": y},
            path,
            overwrite=overwrite,
            attrs=attrs,
            compressors=compressors,
        )
    else:
        row_id = da.arange(n_samples, chunks=X.chunks[0], dtype=np.int64)
        write_parquet({"row_id": row_id, "x": X, "label": y}, path, overwrite=overwrite)
    return truth
