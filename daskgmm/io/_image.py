"""Image sources (TIFF, PNG, JPEG, Zarr) as lazy (height, width, channels) dask arrays.

Images are read in horizontal strips of full width whose height is a multiple of the
file's tile or chunk height, so a strip reshaped to (rows·width, channels) lists its
pixels in row-major order: turning an image into a (pixels, features) table, and
labels back into an image, is a reshape of each block, never a shuffle.

TIFF files (BigTIFF and tiled included) are read lazily through tifffile's Zarr
interface, each task opening the file itself (the graph holds the path, not a file
handle). PNG and JPEG have no random access: Pillow decodes them whole, once.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import dask.array as da
import numpy as np
from dask._task_spec import Task
from dask.base import tokenize

from daskgmm import _chunks as C

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")


def strip_rows(
    height: int, row_bytes: int, unit: int, target: int | None = None
) -> int:
    """Rows per strip: a multiple of ``unit`` (tile height) near ``target`` bytes."""
    target = target or C.IMAGE_STRIP_BYTES
    unit = max(1, min(unit, height))
    return int(min(height, unit * max(1, target // max(unit * row_bytes, 1))))


def _yxc_order(axes: str, shape: tuple[int, ...], path: str) -> tuple[int, ...]:
    """Axis permutation to (Y, X, C) for a tifffile series ``axes`` string."""
    extra = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] != 1]
    if "Y" not in axes or "X" not in axes or len(extra) > 1:
        raise ValueError(
            f"{path}: image axes {axes!r} with shape {shape} are not (height, width"
            "[, channels]); only 2-D images with one channel axis are read"
        )
    ones = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] == 1]
    channel = extra or ones[:1]
    return (axes.index("Y"), axes.index("X"), *channel)


def _open_tiff(path: str) -> tuple[Any, Any]:
    import tifffile
    import zarr

    store = tifffile.imread(path, aszarr=True, series=0, level=0)
    return store, zarr.open(store, mode="r")


def _read_tiff_strip(
    path: str, order: tuple[int, ...], start: int, stop: int
) -> np.ndarray:
    store, z = _open_tiff(path)
    try:
        index = [slice(None)] * z.ndim
        index[order[0]] = slice(start, stop)
        block = np.asarray(z[tuple(index)])
    finally:
        store.close()
    block = np.transpose(
        block, order + tuple(i for i in range(block.ndim) if i not in order)
    )
    block = block.reshape(block.shape[0], block.shape[1], -1)
    return block


def read_tiff(path: str, *, strip_bytes: int | None = None) -> da.Array:
    """A TIFF (BigTIFF, tiled, multi-channel) as a lazy (height, width, channels) array."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
        page = series.pages[0] if series.pages else None
        tile_h = int(
            getattr(page, "tilelength", 0) or getattr(page, "rowsperstrip", 0) or 1
        )
    order = _yxc_order(axes, shape, path)
    height, width = shape[order[0]], shape[order[1]]
    channels = shape[order[2]] if len(order) > 2 else 1
    rows = strip_rows(height, width * channels * dtype.itemsize, tile_h, strip_bytes)
    name = "read-tiff-" + tokenize(path, os.stat(path).st_mtime_ns, rows)
    starts = range(0, height, rows)
    graph = {
        (name, i, 0, 0): Task(
            (name, i, 0, 0), _read_tiff_strip, path, order, s, min(height, s + rows)
        )
        for i, s in enumerate(starts)
    }
    chunks = (tuple(min(height, s + rows) - s for s in starts), (width,), (channels,))
    return da.Array(graph, name, chunks=chunks, dtype=dtype)


def read_pil(path: str, *, strip_bytes: int | None = None) -> da.Array:
    """A PNG or JPEG decoded by Pillow, as a (height, width, channels) array."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        pixels = np.asarray(im)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    rows = strip_rows(height, width * channels * pixels.itemsize, 1, strip_bytes)
    return da.from_array(pixels, chunks=(rows, width, channels), name=False)


def _read_zarr_strip(
    store: str, array: str | None, start: int, stop: int
) -> np.ndarray:
    from daskgmm.io._zarr import array_label, open_zarr_array, read_region

    arr = open_zarr_array(store, array)
    block = np.asarray(read_region(arr, slice(start, stop), array_label(store, array)))
    return block if block.ndim == 3 else block[:, :, None]


def read_zarr_image(
    store: str,
    array: str | None = None,
    *,
    strip_bytes: int | None = None,
    missing_chunks: str = "error",
) -> da.Array:
    """A Zarr array of shape (height, width[, channels]) as a lazy image.

    ``missing_chunks`` as in :func:`daskgmm.io.read_zarr`: by default an image whose
    store lacks chunks is refused when opened; a chunk that cannot be decoded fails
    the read naming the store and the chunk.
    """
    from daskgmm.io._zarr import (
        array_label,
        check_chunks,
        open_zarr_array,
        storage_rows,
    )

    if missing_chunks not in ("error", "fill"):
        raise ValueError(
            f"missing_chunks must be 'error' or 'fill', got {missing_chunks!r}"
        )
    arr = open_zarr_array(store, array)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{store}: Zarr image has shape {arr.shape}; (height, width[, channels]) "
            "is needed"
        )
    if missing_chunks == "error":
        check_chunks(arr, array_label(store, array))
    height, width = arr.shape[:2]
    channels = arr.shape[2] if arr.ndim == 3 else 1
    shard_rows, _ = storage_rows(arr)
    rows = strip_rows(
        height, width * channels * arr.dtype.itemsize, shard_rows, strip_bytes
    )
    name = "read-zarr-image-" + tokenize(store, array, rows, arr.shape, str(arr.dtype))
    starts = range(0, height, rows)
    graph = {
        (name, i, 0, 0): Task(
            (name, i, 0, 0),
            _read_zarr_strip,
            os.fspath(store),
            array,
            s,
            min(height, s + rows),
        )
        for i, s in enumerate(starts)
    }
    chunks = (tuple(min(height, s + rows) - s for s in starts), (width,), (channels,))
    return da.Array(graph, name, chunks=chunks, dtype=arr.dtype)


def read_image(
    path: str | os.PathLike,
    *,
    array: str | None = None,
    strip_bytes: int | None = None,
    missing_chunks: str = "error",
) -> da.Array:
    """An image file or Zarr image as a lazy (height, width, channels) dask array.

    Parameters
    ----------
    path : str or path
        ``.tif``/``.tiff`` (BigTIFF, tiled), ``.png``, ``.jpg``/``.jpeg``, or a Zarr store.
    array : str, optional
        Array path inside a Zarr group.
    strip_bytes : int, optional
        Bytes per strip of full-width rows (default about 32 MiB).
    missing_chunks : {'error', 'fill'}, default='error'
        Zarr images only: refuse a store that lacks chunks (``'error'``), or read
        them as the fill value (``'fill'``); see :func:`daskgmm.io.read_zarr`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image not found: {path}")
    lower = path.lower().rstrip("/")
    if lower.endswith(TIFF_SUFFIXES):
        return read_tiff(path, strip_bytes=strip_bytes)
    if lower.endswith(PIL_SUFFIXES):
        return read_pil(path, strip_bytes=strip_bytes)
    if lower.endswith((".zarr", ".zip")) or os.path.isdir(path):
        return read_zarr_image(
            path, array, strip_bytes=strip_bytes, missing_chunks=missing_chunks
        )
    raise ValueError(
        f"{path}: unknown image type; use .tif/.tiff, .png, .jpg/.jpeg or a Zarr store"
    )


def image_to_pixels(image: da.Array) -> da.Array:
    """(height, width, channels) → (height·width, channels), row-major, block by block.

    Blocks that do not span the full width and all channels are first merged along
    those axes (never along the height), then each block is reshaped.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(
            f"an image of shape (height, width[, channels]) is needed, got {image.shape}"
        )
    image = image.rechunk({1: -1, 2: -1})
    _, width, channels = image.shape
    return image.map_blocks(
        lambda b: b.reshape(-1, b.shape[2]),
        chunks=(tuple(h * width for h in image.chunks[0]), (channels,)),
        drop_axis=2,
        dtype=image.dtype,
        name="image-to-pixels-" + tokenize(image.name),
    )


def pixels_to_image(values: da.Array, height: int, width: int) -> da.Array:
    """Per-pixel values (height·width[, k]) back to (height, width[, k]) by block reshape.

    ``values`` must have row chunks that are whole image rows (as produced from
    :func:`image_to_pixels` output).
    """
    row_chunks = values.chunks[0]
    if any(c % width for c in row_chunks) or sum(row_chunks) != height * width:
        raise ValueError(
            "pixel values are not chunked in whole image rows of width "
            f"{width}; use the output of image_to_pixels"
        )
    heights = tuple(c // width for c in row_chunks)
    if values.ndim == 1:
        return values.map_blocks(
            lambda b: b.reshape(-1, width),
            chunks=(heights, (width,)),
            new_axis=1,
            dtype=values.dtype,
        )
    k = values.shape[1]
    return values.map_blocks(
        lambda b: b.reshape(-1, width, b.shape[1]),
        chunks=(heights, (width,), (k,)),
        new_axis=2,
        dtype=values.dtype,
    )
