"""Zarr sources: v2 and v3 stores, local directories, zip files and fsspec URLs."""

from __future__ import annotations

import itertools
import logging
import math
import os
from typing import Any

import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize

from daskgmm import _chunks as C
from daskgmm._reduce import source_block_rows

logger = logging.getLogger(__name__)


MISSING_CHUNKS = ("error", "fill")


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
    missing_chunks: str | None = None,
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
    missing_chunks : {'error', 'fill'}, optional
        ``'error'``: list the store's keys once and refuse an array with chunks (or
        shards) missing, see :func:`check_chunks`. ``'fill'`` or None (the default,
        for callers that only read metadata): no check.

    Raises
    ------
    FileNotFoundError
        No store at that path.
    ValueError
        The path names a group (the message lists its arrays) or nothing; chunks
        are missing and ``missing_chunks='error'``.
    """
    if missing_chunks not in (None, *MISSING_CHUNKS):
        raise ValueError(
            f"missing_chunks must be 'error' or 'fill', got {missing_chunks!r}"
        )
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
    if missing_chunks == "error":
        check_chunks(node, array_label(store, array))
    return node


def array_label(store: Any, array: str | None = None) -> str:
    """How messages name an array: ``<store>`` or ``<store>/<array>``."""
    text = os.fspath(store) if isinstance(store, (str, os.PathLike)) else repr(store)
    return text.rstrip("/") + (f"/{array}" if array else "")


def _fill_value(arr: zarr.Array) -> Any:
    """The value a missing chunk reads as (a Python scalar)."""
    fill = arr.fill_value
    if fill is None:  # Zarr v2 without a fill value: zarr-python reads zeros
        fill = np.zeros((), dtype=arr.dtype)
    try:
        return np.asarray(fill, dtype=arr.dtype).item()
    except (TypeError, ValueError):
        return fill


def _storage_grid(arr: zarr.Array) -> tuple[int, ...]:
    """Stored objects along each axis: shards, or chunks when unsharded."""
    unit = getattr(arr, "shards", None) or arr.chunks
    return tuple(math.ceil(n / c) for n, c in zip(arr.shape, unit, strict=True))


def _stored_keys(arr: zarr.Array) -> set[str] | None:
    """Keys under the array's path (relative to it), listed once; None if the
    store cannot be listed."""
    from zarr.core.sync import sync

    store = arr.store_path.store
    if not getattr(store, "supports_listing", False):
        return None
    prefix = arr.store_path.path.strip("/")
    if isinstance(store, zarr.storage.LocalStore):
        # os.walk: a few times faster than the store's pathlib rglob
        top = os.path.join(os.fspath(store.root), *prefix.split("/"))
        keys = set()
        for folder, _, files in os.walk(top):
            rel = os.path.relpath(folder, top).replace(os.sep, "/")
            keys.update(name if rel == "." else f"{rel}/{name}" for name in files)
        return keys

    async def listing() -> set[str]:
        if not prefix:
            return {key async for key in store.list_prefix("")}
        head = prefix + "/"
        return {
            key[len(head) :]
            async for key in store.list_prefix(prefix)
            if key.startswith(head)
        }

    return sync(listing())


def check_chunks(arr: zarr.Array, label: str) -> None:
    """Refuse an array whose store lacks chunk (or, sharded, shard) objects.

    Zarr reads a missing chunk as the fill value, silently; a store with chunks
    deleted or never written would be fitted as rows of that value. The store's
    keys are listed once (no data is read) and compared with the keys the shape
    implies. A store that cannot be listed is not checked (logged at debug level).

    Raises
    ------
    ValueError
        One line naming the array, how many chunks are missing, the first one and
        the fill value.
    """
    grid = _storage_grid(arr)
    total = math.prod(grid)
    if total == 0:
        return
    try:
        stored = _stored_keys(arr)
    except Exception as exc:  # a store that lists badly is read unchecked
        logger.debug("%s: chunks not checked (listing failed: %r)", label, exc)
        return
    if stored is None:
        logger.debug("%s: chunks not checked (the store cannot be listed)", label)
        return
    encode = arr.metadata.encode_chunk_key
    first = None
    missing = 0
    for coords in itertools.product(*map(range, grid)):
        key = encode(coords)
        if key not in stored:
            missing += 1
            first = first or key
    if missing:
        fill = _fill_value(arr)
        raise ValueError(
            f"Zarr array {label} is missing {missing} of {total} chunks (first: "
            f"{first}); the data would read as the fill value {fill!r}. Rewrite the "
            "store, or pass missing_chunks='fill' (job: data.missing_chunks: fill) "
            f"to read them as {fill!r}"
        )


# Exceptions of a block read that are not the data's fault: passed on unchanged.
_NOT_DAMAGE = (OSError, MemoryError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _damaged_key(arr: zarr.Array, selection: tuple) -> tuple[str | None, BaseException]:
    """The first stored object (shard or chunk) under ``selection`` that cannot be
    read, and its exception; ``(None, None)`` if each reads on its own."""
    unit = getattr(arr, "shards", None) or arr.chunks
    selection = selection + (slice(None),) * (arr.ndim - len(selection))
    ranges = []
    for sel, n, c in zip(selection, arr.shape, unit, strict=True):
        if isinstance(sel, slice):
            start, stop, _ = sel.indices(n)
        elif isinstance(sel, (int, np.integer)):
            start, stop = int(sel) % n, int(sel) % n + 1
        else:  # fancy indexing: search the whole axis
            start, stop = 0, n
        if stop <= start:
            return None, None
        ranges.append(range(start // c, (stop - 1) // c + 1))
    for coords in itertools.product(*ranges):
        region = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(coords, unit, arr.shape, strict=True)
        )
        try:
            arr[region]
        except _NOT_DAMAGE:
            raise
        except Exception as exc:
            return arr.metadata.encode_chunk_key(coords), exc
    return None, None


def read_region(arr: zarr.Array, selection: Any, label: str) -> np.ndarray:
    """``arr[selection]``, a codec or decode failure becoming one line naming the
    store and the damaged chunk.

    On a failure, each stored object (shard, or chunk) under ``selection`` is read
    on its own to find the one that fails; when none does, the original exception
    is raised unchanged (not damage: e.g. a bad selection).

    Raises
    ------
    ValueError
        ``cannot read chunk <key> of Zarr array <label>: <Type>: <message>; the
        store is damaged (rewrite it)`` (a plain, picklable ValueError).
    """
    try:
        return arr[selection]
    except _NOT_DAMAGE:
        raise
    except Exception:
        selection = selection if isinstance(selection, tuple) else (selection,)
        try:
            key, cause = _damaged_key(arr, selection)
        except Exception:  # e.g. a selection this search does not understand
            key, cause = None, None
        if key is None:  # no stored object fails on its own: not damage
            raise
        raise ValueError(
            f"cannot read chunk {key} of Zarr array {label}: "
            f"{type(cause).__name__}: {_one_line(cause)}; the store is damaged "
            "(rewrite it)"
        ) from None


class CheckedZarrArray:
    """A Zarr array for :func:`dask.array.from_array` whose block reads name the
    store and chunk when a chunk cannot be decoded (see :func:`read_region`).

    Picklable (the Zarr array and a label), so distributed workers read through it.
    """

    def __init__(self, arr: zarr.Array, label: str) -> None:
        self.array = arr
        self.label = label
        self.shape = tuple(arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.ndim = arr.ndim
        self.chunks = arr.chunks

    def __getitem__(self, selection: Any) -> np.ndarray:
        return read_region(self.array, selection, self.label)

    def __dask_tokenize__(self) -> Any:
        return ("CheckedZarrArray", tokenize(self.array), self.label)


def storage_rows(arr: zarr.Array) -> tuple[int, int]:
    """Rows of one shard (or chunk when unsharded) and of one inner chunk."""
    inner = arr.chunks[0]
    shards = getattr(arr, "shards", None)
    return (shards[0] if shards else inner), inner


def aligned_rows(arr: zarr.Array, rows_per_chunk: int | None, row_bytes: int) -> int:
    """Rows per dask block, aligned to the store's shards (or inner chunks).

    Blocks are whole shards when a shard fits in the budget: ``_chunks.SOURCE_BLOCK_BYTES``,
    or less for a small store, so that it gives about 4 blocks per thread
    (:func:`daskgmm._reduce.source_block_rows`); several shards per block if they are
    small; otherwise whole inner chunks, so no store chunk is read by two tasks.
    """
    shard_rows, inner_rows = storage_rows(arr)
    if rows_per_chunk is not None:
        return int(rows_per_chunk)
    budget_rows = source_block_rows(arr.shape[0], row_bytes, C.SOURCE_BLOCK_BYTES)
    unit = shard_rows if shard_rows <= budget_rows else inner_rows
    return max(unit, (budget_rows // unit) * unit)


def read_zarr(
    store: Any,
    array: str | None = None,
    *,
    rows_per_chunk: int | None = None,
    storage_options: dict | None = None,
    missing_chunks: str = "error",
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
    missing_chunks : {'error', 'fill'}, default='error'
        What to do when the store lacks chunk objects (shards, for sharded v3
        arrays), which Zarr reads as the array's fill value. ``'error'``: raise
        ``ValueError`` naming how many are missing and the first key; the check
        lists the store's keys once when the array is opened, reading no data (a
        store that cannot be listed is not checked). ``'fill'``: no check; missing
        chunks read as the fill value (right for stores written without their
        empty chunks, e.g. by zarr-python 3 with ``write_empty_chunks=False``).

    Returns
    -------
    dask.array.Array
        A chunk that cannot be decoded (a truncated or corrupt file) fails the
        computation that reads it with a ``ValueError`` naming the store and the
        chunk key.

    Raises
    ------
    ValueError
        Not a 2-D array; chunks missing with ``missing_chunks='error'``.
    """
    _missing_chunks(missing_chunks)
    arr = open_zarr_array(store, array, storage_options=storage_options)
    if arr.ndim != 2:
        raise ValueError(
            f"{store}{'/' + array if array else ''} has shape {arr.shape}; a 2-D "
            "(n_samples, n_features) array is needed (for images use read_image)"
        )
    if missing_chunks == "error":
        check_chunks(arr, array_label(store, array))
    rows = aligned_rows(arr, rows_per_chunk, arr.shape[1] * arr.dtype.itemsize)
    logger.debug("zarr %s: %s rows per block", store, rows)
    chunks = (rows, arr.shape[1])
    return da.from_array(
        CheckedZarrArray(arr, array_label(store, array)),
        chunks=chunks,
        name="from-zarr-" + tokenize(arr, chunks),
        asarray=True,
        meta=np.empty((0, 0), dtype=arr.dtype),
    )


def _missing_chunks(value: str) -> str:
    if value not in MISSING_CHUNKS:
        raise ValueError(f"missing_chunks must be 'error' or 'fill', got {value!r}")
    return value
