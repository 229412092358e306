"""Sinks written chunk by chunk and atomically: Zarr arrays and Parquet datasets.

Every writer writes into a hidden temporary path beside the destination and renames
it into place only when every chunk is written, so a failed or killed job leaves no
half-written output (at most a ``.<name>.tmp-*`` directory, removed on failure).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import dask
import dask.array as da
import numpy as np

from daskgmm import _chunks as C

logger = logging.getLogger(__name__)

ABANDON_GRACE_SECONDS = 3.0


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


# The file every output directory daskgmm writes holds: ``overwrite`` replaces a
# directory only when it has one (or when the writer knows its kind, see ``owned``).
MARKER = ".daskgmm"


class UnsafeOutputError(ValueError):
    """An output path that would destroy an input: the same path, inside it, or
    holding it."""


def _is_ours(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def check_output_apart(output: str | os.PathLike, inputs: Mapping[str, Any]) -> None:
    """Refuse an ``output`` path that equals, lies inside or contains one of the
    ``inputs`` (name to path; None and URLs are skipped), on resolved real paths
    (symbolic links, relative paths, trailing slashes).

    Raises
    ------
    UnsafeOutputError
        One line naming the output, the input and the fix.
    """
    out = os.path.realpath(os.path.abspath(os.fspath(output)))
    for name, path in inputs.items():
        if path is None or "://" in str(path):
            continue
        source = os.path.realpath(os.path.abspath(os.fspath(path)))
        if out == source:
            where = "is"
        elif os.path.commonpath([out, source]) == source:
            where = "lies inside"
        elif os.path.commonpath([out, source]) == out:
            where = "contains"
        else:
            continue
        raise UnsafeOutputError(
            f"the output {output} {where} the input {name} {path}; writing it would "
            "destroy the input: choose an output path outside the inputs"
        )


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    owned: Any = None,
    marker: bool = True,
) -> Iterator[str]:
    """Yield a temporary path to write into; move it to ``path`` on success.

    A directory written here gets a ``.daskgmm`` marker file, and ``overwrite``
    replaces an existing directory only if it has one (an earlier daskgmm output)
    or ``owned(path)`` says it is one (a model directory of an older version):
    never an arbitrary directory. An existing file is replaced only by a file.

    Parameters
    ----------
    path : str or path
        Final destination (file or directory).
    overwrite : bool
        Replace an existing destination written by daskgmm; otherwise it is an
        error, raised before anything is written.
    owned : callable, optional
        ``owned(path) -> bool`` for directories daskgmm writes without a marker
        (model directories: ``model.json`` and ``arrays.npz`` only).
    marker : bool, default=True
        Whether a directory written here gets the marker file.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False, or it is not daskgmm's.
    NotADirectoryError
        A parent of ``path`` is a file.
    """
    final = os.path.abspath(os.fspath(path))
    if os.path.lexists(final):
        if not overwrite:
            raise FileExistsError(
                f"{final} already exists; remove it or allow overwriting"
            )
        if os.path.isdir(final) and not (_is_ours(final) or (owned and owned(final))):
            raise FileExistsError(
                f"{final} exists and was not written by daskgmm (it has no {MARKER} "
                "file); refusing to overwrite it: remove it yourself or choose "
                "another output path"
            )
    parent = os.path.dirname(final)
    _check_parent(parent, final)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(
        parent, f".{os.path.basename(final)}.tmp-{uuid.uuid4().hex[:12]}"
    )
    try:
        yield tmp
    except BaseException:
        _abandon(tmp)
        raise
    if marker and os.path.isdir(tmp):
        with open(os.path.join(tmp, MARKER), "w") as f:
            f.write("written by daskgmm; `overwrite` may replace this directory\n")
    if os.path.lexists(final):
        if os.path.isdir(final) != os.path.isdir(tmp):
            _abandon(tmp)
            raise FileExistsError(
                f"{final} exists and is a {'directory' if os.path.isdir(final) else 'file'}"
                "; refusing to replace it by another kind: remove it yourself"
            )
        # Replace: move the old output aside first so the swap is two renames.
        old = f"{tmp}.old"
        os.rename(final, old)
        os.rename(tmp, final)
        _remove(old)
    else:
        os.rename(tmp, final)


def _check_parent(parent: str, final: str) -> None:
    """A file where a parent directory of ``final`` should be: say so."""
    ancestor = parent
    while ancestor and not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if ancestor and not os.path.isdir(ancestor):
        raise NotADirectoryError(
            f"{final}: {ancestor} is a file, not a directory; choose another output "
            "path"
        )


def abort_marker(tmp: str) -> str:
    """Path of the file that tells late write tasks their output was abandoned."""
    return f"{tmp}.abort"


def _abandon(tmp: str, grace: float = ABANDON_GRACE_SECONDS) -> None:
    """Remove a failed write's temporary output, including late writes into it.

    When one task fails, dask raises at once while other write tasks may still be
    running (threads, other workers). The abort marker makes every task that starts
    from now on skip its write; the temporary path is removed again until it stays
    gone through ``grace`` seconds, then the marker is removed.
    """
    marker = abort_marker(tmp)
    try:
        with open(marker, "w"):
            pass
    except OSError as exc:
        # The caller's own error (often the same: the folder is not writable) is
        # the one to see; nothing of this write can be left behind anyway.
        logger.debug("cannot write %s (%s); removing %s", marker, exc, tmp)
        with contextlib.suppress(OSError):
            _remove(tmp)
        return
    deadline = time.monotonic() + grace
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        if os.path.lexists(tmp):
            _remove(tmp)
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 0.5:
            break
        time.sleep(0.05)
    _remove(tmp)
    _remove(marker)


def _regular_rows(array: da.Array) -> da.Array:
    """Rows in blocks of one size (but the last) of at most ``_chunks.ZARR_WRITE_CHUNK_BYTES``,
    other axes in one block.

    Zarr chunks are regular, and two dask blocks must never write the same Zarr
    chunk. The caller's array is not modified.
    """
    array = da.Array(array.dask, array.name, array.chunks, meta=array._meta)
    rows = array.chunks[0]
    if any(math.isnan(c) for c in rows):
        logger.warning(
            "row counts of the blocks are unknown; computing them costs an extra pass"
        )
        array = array.compute_chunk_sizes()
        rows = array.chunks[0]
    row_bytes = array.dtype.itemsize * math.prod(array.shape[1:])
    most = max(1, C.ZARR_WRITE_CHUNK_BYTES // max(row_bytes, 1))
    if max(rows, default=0) > most:
        array = array.rechunk({0: most})
    elif len(rows) > 1 and (len(set(rows[:-1])) > 1 or rows[-1] > rows[0]):
        array = array.rechunk({0: max(rows)})
    if any(n > 1 for n in array.numblocks[1:]):
        array = array.rechunk({axis: -1 for axis in range(1, array.ndim)})
    return array


def _store_block(
    block: np.ndarray, *, root: str, array_path: str, block_info: dict | None = None
) -> np.ndarray:
    """Write one block into its region of a Zarr array (skipped after an abort)."""
    import zarr

    done = np.zeros((1,) * block.ndim, dtype=np.int64)
    if os.path.exists(abort_marker(root)):
        return done
    region = tuple(slice(a, b) for a, b in block_info[0]["array-location"])
    # Every chunk is written, those equal to the fill value included (zarr-python
    # skips them by default): a chunk missing from the store is then always damage,
    # which read_zarr refuses.
    target = zarr.open_array(root, path=array_path, mode="r+")
    target.with_config({"write_empty_chunks": True})[region] = block
    return done + 1


def _compressors(choice: Any, dtype: np.dtype) -> Any:
    """Zarr compressors for ``choice`` ('fast': see :func:`write_zarr`)."""
    if not (isinstance(choice, str) and choice == "fast"):
        return choice
    if np.dtype(dtype).kind == "f":
        return None
    from zarr.codecs import BloscCodec, BloscShuffle

    return BloscCodec(cname="lz4", clevel=1, shuffle=BloscShuffle.shuffle)


def write_zarr(
    arrays: Mapping[str, da.Array] | da.Array,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    compressors: Any = "auto",
    attrs: Mapping[str, Any] | None = None,
) -> str:
    """Write one or several dask arrays to a Zarr v3 store, chunk by chunk, atomically.

    Parameters
    ----------
    arrays : dask array or mapping of name to dask array
        A single array is written as the store's root array; a mapping as arrays of
        a group. Row chunks become the Zarr chunks (made regular if needed, and
        cut to at most 4 MiB, a quarter of the block size :func:`read_zarr` reads,
        so that a pass over a small store runs on every core).
    path : str or path
        Destination directory (``.zarr``).
    overwrite : bool
    compressors : zarr compressors, 'auto' or 'fast', default 'auto'
        'auto' is zarr's default (Zstandard level 0). 'fast' writes floating-point
        arrays uncompressed and integer arrays (labels) with Blosc LZ4 level 1 and
        byte shuffle: measurement noise does not compress (2M x 3 float64: 44.3 MiB
        with Zstandard, 45.8 MiB raw) and the raw store reads about 2.8x faster
        (0.016 s instead of 0.046 s here), so a fit streaming from it is no longer
        bound by decompression. Anything else is passed to zarr as is.
    attrs : mapping, optional
        JSON-serialisable attributes stored on the root.

    Returns
    -------
    str
        The absolute path written.
    """
    import zarr

    single = isinstance(arrays, da.Array)
    items = {"": arrays} if single else dict(arrays)
    with atomic_path(path, overwrite=overwrite) as tmp:
        root = None if single else zarr.open_group(tmp, mode="w", zarr_format=3)
        writes = []
        for name, array in items.items():
            array = _regular_rows(array)
            target = zarr.create_array(
                tmp if single else root.store,
                name=name or None,
                shape=array.shape,
                chunks=tuple(max(c) if c else 1 for c in array.chunks),
                dtype=array.dtype,
                compressors=_compressors(compressors, array.dtype),
                zarr_format=3,
            )
            if single and attrs:
                target.attrs.update(dict(attrs))
            writes.append(
                array.map_blocks(
                    _store_block,
                    root=tmp,
                    array_path=name,
                    chunks=tuple((1,) * n for n in array.numblocks),
                    dtype=np.int64,
                    name=f"write-zarr-{uuid.uuid4().hex}",
                ).sum()
            )
        if root is not None and attrs:
            root.attrs.update(dict(attrs))
        dask.compute(*writes)
    return os.path.abspath(os.fspath(path))


def _write_part(path: str, names: tuple[str, ...], *blocks: np.ndarray) -> int:
    import pyarrow as pa  # here only: Zarr writers skip its 65 MB
    import pyarrow.parquet as pq

    if os.path.exists(abort_marker(os.path.dirname(path))):
        return 0
    columns = {}
    for name, block in zip(names, blocks, strict=True):
        if block.ndim == 2:
            for j in range(block.shape[1]):
                columns[f"{name}_{j}"] = block[:, j]
        else:
            columns[name] = block
    table = pa.table(columns)
    # No dictionary for float columns (it never pays for measurements and makes
    # readers hold twice the data); row groups of 64Ki rows keep a reader's
    # buffers small, and daskgmm's reader joins them into bounded pieces.
    dictionary = [
        name
        for name, col in columns.items()
        if not np.issubdtype(col.dtype, np.floating)
    ]
    pq.write_table(
        table, path, row_group_size=C.PARQUET_ROW_GROUP_ROWS, use_dictionary=dictionary
    )
    return len(blocks[0]) if blocks else 0


def write_parquet(
    columns: Mapping[str, da.Array],
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> str:
    """Write aligned dask arrays as columns of a Parquet dataset, one file per block.

    Parameters
    ----------
    columns : mapping of name to dask array
        1-D arrays become one column; 2-D arrays (n, k) become columns
        ``name_0 … name_{k-1}``. All must share the same row blocks (for example
        predictions of ``X`` and pass-through columns read from the same source).
    path : str or path
        Destination directory.
    overwrite : bool

    Returns
    -------
    str
        The absolute path written.
    """
    names = tuple(columns)
    arrays = [columns[n] for n in names]
    n_blocks = {a.numblocks[0] for a in arrays}
    if len(n_blocks) != 1:
        raise ValueError(
            "columns written together must have the same row blocks; got "
            f"{ {n: a.numblocks[0] for n, a in zip(names, arrays, strict=True)} }"
        )
    for a in arrays:
        if a.ndim == 2 and a.numblocks[1] != 1:
            raise ValueError("2-D columns must have their second axis in one chunk")
    with atomic_path(path, overwrite=overwrite) as tmp:
        os.makedirs(tmp)
        blocks = [a.to_delayed().reshape(-1) for a in arrays]
        writes = [
            dask.delayed(_write_part, pure=False)(
                os.path.join(tmp, f"part.{i:05d}.parquet"), names, *parts
            )
            for i, parts in enumerate(zip(*blocks, strict=True))
        ]
        dask.compute(*writes)
    return os.path.abspath(os.fspath(path))


def label_dtype(n_labels: int) -> np.dtype:
    """Smallest unsigned integer type holding labels ``0 … n_labels - 1``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_labels - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def write_label_image(
    labels: da.Array,
    height: int,
    width: int,
    path: str | os.PathLike,
    *,
    n_labels: int,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
) -> str:
    """Per-pixel labels back to a (height, width) Zarr image, uint8/uint16, atomically.

    Parameters
    ----------
    labels : dask array of shape (height·width,)
        Labels in row-major pixel order, chunked in whole image rows (the output of
        ``predict`` on :func:`~daskgmm.io.image_to_pixels`).
    height, width : int
    path : str or path
    n_labels : int
        Number of possible labels (n_components); sets the integer type.
    overwrite : bool
    attrs : mapping, optional
    """
    from daskgmm.io._image import pixels_to_image

    image = pixels_to_image(labels, height, width).astype(label_dtype(n_labels))
    return write_zarr(image, path, overwrite=overwrite, attrs=attrs)
