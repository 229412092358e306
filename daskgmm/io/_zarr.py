"""Zarr sources: v2 and v3 stores, local directories, zip files and fsspec URLs."""

from __future__ import annotations

import logging
import os
from typing import Any

import dask.array as da
import zarr

from daskgmm._reduce import source_block_rows

logger = logging.getLogger(__name__)

# Bytes of one row block read from a store, unless the caller says otherwise.
DEFAULT_CHUNK_BYTES = 16 * 2**20


def _open_store(store: Any, mode: str, storage_options: dict | None) -> Any:
    """A zarr store object or path for ``store`` (zip files opened as ZipStore)."""
    if isinstance(store, (str, os.PathLike)):
        text = os.fspath(store)
        if "://" in text:
            return text
        if not os.path.exists(text):
            raise FileNotFoundError(f"Zarr store not found: {text}")
        if text.endswith(".zip"):
            return zarr.storage.ZipStore(text, mode=mode)
        return text
    return store


def open_zarr_array(
    store: Any,
    array: str | None = None,
    *,
    storage_options: dict | None = None,
) -> zarr.Array:
    """Open a Zarr array for reading: a store holding an array, or one inside a group.

    Parameters
    ----------
    store : str, path or zarr store
        Local directory, ``.zip`` file, fsspec URL (``s3://…``, ``memory://…``) or store.
    array : str, optional
        Path of the array inside the store's group (``"features"``, ``"a/b"``).
    storage_options : dict, optional
        Passed to fsspec for URLs.

    Raises
    ------
    FileNotFoundError
        No store at that path.
    ValueError
        The path names a group (the message lists its arrays) or nothing.
    """
    opened = _open_store(store, "r", storage_options)
    kwargs = (
        {"storage_options": storage_options}
        if isinstance(opened, str) and "://" in opened
        else {}
    )
    try:
        node = zarr.open(opened, mode="r", path=array or "", **kwargs)
    except (FileNotFoundError, KeyError) as exc:
        where = f"{store}" + (f" (array {array!r})" if array else "")
        raise ValueError(f"no Zarr array or group at {where}: {exc}") from None
    if isinstance(node, zarr.Group):
        names = [
            name
            for name, member in node.members(max_depth=None)
            if isinstance(member, zarr.Array)
        ]
        listed = ", ".join(names[:10]) or "none"
        raise ValueError(
            f"{store}{'/' + array if array else ''} is a Zarr group, not an array; "
            f"name the array inside it (arrays here: {listed})"
        )
    return node


def storage_rows(arr: zarr.Array) -> tuple[int, int]:
    """Rows of one shard (or chunk when unsharded) and of one inner chunk."""
    inner = arr.chunks[0]
    shards = getattr(arr, "shards", None)
    return (shards[0] if shards else inner), inner


def aligned_rows(arr: zarr.Array, rows_per_chunk: int | None, row_bytes: int) -> int:
    """Rows per dask block, aligned to the store's shards (or inner chunks).

    Blocks are whole shards when a shard fits in the budget: ``DEFAULT_CHUNK_BYTES``,
    or less for a small store, so that it gives about 4 blocks per thread
    (:func:`daskgmm._reduce.source_block_rows`); several shards per block if they are
    small; otherwise whole inner chunks, so no store chunk is read by two tasks.
    """
    shard_rows, inner_rows = storage_rows(arr)
    if rows_per_chunk is not None:
        return int(rows_per_chunk)
    budget_rows = source_block_rows(arr.shape[0], row_bytes, DEFAULT_CHUNK_BYTES)
    unit = shard_rows if shard_rows <= budget_rows else inner_rows
    return max(unit, (budget_rows // unit) * unit)


def read_zarr(
    store: Any,
    array: str | None = None,
    *,
    rows_per_chunk: int | None = None,
    storage_options: dict | None = None,
) -> da.Array:
    """A 2-D Zarr array as a dask array (n_samples, n_features), features in one chunk.

    Parameters
    ----------
    store : str, path or zarr store
        Local directory, ``.zip`` file or fsspec URL of a Zarr v2 or v3 store.
    array : str, optional
        Path of the array inside the store's group.
    rows_per_chunk : int, optional
        Rows per dask block; by default whole shards/chunks of about 16 MiB.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    dask.array.Array
    """
    arr = open_zarr_array(store, array, storage_options=storage_options)
    if arr.ndim != 2:
        raise ValueError(
            f"{store}{'/' + array if array else ''} has shape {arr.shape}; a 2-D "
            "(n_samples, n_features) array is needed (for images use read_image)"
        )
    rows = aligned_rows(arr, rows_per_chunk, arr.shape[1] * arr.dtype.itemsize)
    logger.debug("zarr %s: %s rows per block", store, rows)
    return da.from_zarr(arr, chunks=(rows, arr.shape[1]))
