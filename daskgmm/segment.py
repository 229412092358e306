"""Image segmentation: a Gaussian mixture over pixel features, strip by strip.

An image (height, width, channels), read lazily in full-width strips by
:func:`daskgmm.io.read_image`, becomes one row of features per pixel, computed inside
the task that reads the strip (:class:`PixelFeatures`):

- ``rgb``: the channels scaled to [0, 1] — any number of them, multispectral too;
- ``lab``: CIELAB of an RGB image (scikit-image's ``rgb2lab``), L, a and b divided
  by 100;
- ``+xy``: the pixel's column and row divided by the image's long side, times
  ``xy_weight``, so that segments are compact in space as well as in colour.

Non-finite pixels, pixels equal to ``nodata`` in every channel and the pixels of an
optional mask are invalid: left out of the fit, labelled with the nodata label (the
largest value of the labels' integer type) and transparent in the pictures.

:func:`fit_pixels` gives the rows ``GaussianMixture.fit`` iterates over (every valid
pixel, or a uniform sample that does not depend on the chunking). :func:`segment_image`
then makes one pass over the image that evaluates the mixture once per pixel and from
it writes the labels (and probabilities) to Zarr, counts the pixels and sums the
colours of every segment, and averages the uncertainty over the cells of the preview
grid; a second, cheap pass over the written labels paints ``preview.png`` with each
segment's mean colour. Neither pass holds more than a strip per task.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import dask
import dask.array as da
import numpy as np

from daskgmm import _chunks as C
from daskgmm.io import atomic_path, label_dtype
from daskgmm.io._sinks import abort_marker

__all__ = [
    "FEATURES",
    "SAMPLE_IMAGES",
    "ChannelScale",
    "PixelFeatures",
    "channel_scale",
    "coarse_sums",
    "fit_pixels",
    "prepare_mask",
    "sample_image_path",
    "segment_image",
    "storage_tile",
    "strip_features",
    "write_png",
]

logger = logging.getLogger(__name__)

FEATURES = ("rgb", "lab", "rgb+xy", "lab+xy")
SCALES = ("dtype", "range")
# Long side of preview.png and uncertainty.png at most, in pixels.
PREVIEW_SIZE = 2000
FILES = {
    "labels": "labels.zarr",
    "probabilities": "probabilities.zarr",
    "preview": "preview.png",
    "uncertainty": "uncertainty.png",
}
# Photos shipped inside scikit-image's wheel (read from disk, never downloaded).
SAMPLE_IMAGES = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "moon": "moon.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
}


###############################################################################
# Sources


def sample_image_path(name: str) -> str:
    """Path of a photo shipped with scikit-image (``SAMPLE_IMAGES``; no download).

    Raises
    ------
    ValueError
        An unknown name (the message lists the known ones).
    ImportError
        scikit-image is not installed.
    """
    if name not in SAMPLE_IMAGES:
        raise ValueError(
            f"unknown sample image {name!r}; choose one of "
            f"{', '.join(sorted(SAMPLE_IMAGES))}"
        )
    try:
        import skimage.data
    except ImportError:
        raise ImportError(
            "sample images come with scikit-image: pip install 'daskgmm[image]'"
        ) from None
    path = os.path.join(skimage.data.data_dir, SAMPLE_IMAGES[name])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sample image {name!r} is missing from {path}")
    return path


def storage_tile(
    path: str | os.PathLike, array: str | None = None
) -> tuple[int, int] | None:
    """(rows, columns) of one tile of a tiled TIFF or one chunk of a Zarr image.

    None for PNG, JPEG and TIFF files stored in strips: outputs are then chunked
    in the strips they are read in.
    """
    path = os.fspath(path)
    lower = path.lower().rstrip("/")
    if lower.endswith((".png", ".jpg", ".jpeg")):
        return None
    if lower.endswith((".tif", ".tiff", ".btf", ".tf8")):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            page = series.pages[0] if series.pages else None
            if page is None or not getattr(page, "is_tiled", False):
                return None
            return int(page.tilelength), int(page.tilewidth)
    from daskgmm.io import open_zarr_array

    chunks = open_zarr_array(path, array).chunks
    return (int(chunks[0]), int(chunks[1])) if len(chunks) >= 2 else None


###############################################################################
# What a pixel becomes


@dataclass(frozen=True)
class PixelFeatures:
    """How each pixel of an image becomes a row of features.

    Parameters
    ----------
    kind : {'rgb', 'lab', 'rgb+xy', 'lab+xy'}, default='rgb'
        'rgb': every selected channel scaled to [0, 1], whatever their number
        (multispectral images included). 'lab': CIELAB of three RGB channels, L, a
        and b divided by 100 (L in [0, 1], a and b within about ±1). '+xy' appends
        the pixel's column and row divided by the image's long side, times
        ``xy_weight``.
    xy_weight : float, default=1.0
        Scale of the coordinates against the colours. A mixture with 'full',
        'tied' or 'diag' covariances is invariant to the scale of any feature, so
        there the weight only steers the k-means initialisation; with 'spherical'
        covariances it sets the trade-off between colour and place.
    channels : tuple of int, optional
        The channels to use, in this order (default: all).
    scale : {'dtype', 'range'}, default='dtype'
        'dtype': integer channels divided by their type's range (0-255, 0-65535),
        float channels taken as they are. 'range': each channel's smallest and
        largest value over the valid pixels become 0 and 1 (one extra pass; for
        12-bit data in 16-bit files, or floats in other units).
    nodata : float, optional
        Pixels whose selected channels all equal this value are invalid. Pixels
        with a NaN or infinite channel always are.
    """

    kind: str = "rgb"
    xy_weight: float = 1.0
    channels: tuple[int, ...] | None = None
    scale: str = "dtype"
    nodata: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FEATURES:
            raise ValueError(
                f"features must be one of {', '.join(FEATURES)}; got {self.kind!r}"
            )
        if self.scale not in SCALES:
            raise ValueError(f"scale must be 'dtype' or 'range'; got {self.scale!r}")
        if not self.xy_weight > 0:
            raise ValueError(f"xy_weight must be > 0; got {self.xy_weight}")
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    @property
    def lab(self) -> bool:
        """Whether the colours are converted to CIELAB."""
        return self.kind.startswith("lab")

    @property
    def xy(self) -> bool:
        """Whether the pixel coordinates are features."""
        return self.kind.endswith("+xy")

    def n_channels(self, image_channels: int) -> int:
        """Number of channels used from an image with ``image_channels``."""
        return image_channels if self.channels is None else len(self.channels)

    def check(self, image_channels: int) -> None:
        """Raise if these features cannot be computed for the image.

        Raises
        ------
        ValueError
            A channel index beyond the image's channels, or 'lab' on anything but
            three channels.
        ImportError
            'lab' without scikit-image.
        """
        if self.channels is not None and max(self.channels) >= image_channels:
            raise ValueError(
                f"channels {list(self.channels)} asked for, but the image has "
                f"{image_channels} channel(s) (0 to {image_channels - 1})"
            )
        n = self.n_channels(image_channels)
        if self.lab and n != 3:
            raise ValueError(
                f"features '{self.kind}' convert red, green and blue to CIELAB, but "
                f"{n} channel(s) are selected; use features 'rgb' or choose three "
                "channels (e.g. channels [0, 1, 2])"
            )
        if self.lab:
            _rgb2lab()

    def names(self, image_channels: int) -> list[str]:
        """Feature names, e.g. ``['L', 'a', 'b', 'x', 'y']``."""
        n = self.n_channels(image_channels)
        if self.lab:
            colour = ["L", "a", "b"]
        elif n == 3 and self.channels in (None, (0, 1, 2)):
            colour = ["red", "green", "blue"]
        else:
            picked = self.channels or tuple(range(n))
            colour = [f"channel_{c}" for c in picked]
        return colour + (["x", "y"] if self.xy else [])

    def n_features(self, image_channels: int) -> int:
        """Number of features per pixel."""
        return len(self.names(image_channels))


class ChannelScale(NamedTuple):
    """Per-channel affine map to [0, 1]: ``(value - low) / span``."""

    low: np.ndarray
    span: np.ndarray


def _rgb2lab() -> Any:
    try:
        from skimage.color import rgb2lab
    except ImportError:
        raise ImportError(
            "CIELAB features need scikit-image: pip install 'daskgmm[image]' "
            "(or use features 'rgb')"
        ) from None
    return rgb2lab


###############################################################################
# Features of one strip (pure NumPy, run inside the tasks)


def _selected(block: np.ndarray, features: PixelFeatures) -> np.ndarray:
    if features.channels is None:
        return block
    return block[..., list(features.channels)]


def _valid_pixels(
    selected: np.ndarray, mask: np.ndarray | None, nodata: float | None
) -> np.ndarray:
    """(h, w) True for pixels that take part: finite, not nodata, not masked."""
    valid = np.ones(selected.shape[:2], dtype=bool)
    if selected.dtype.kind in "fc":
        valid &= np.isfinite(selected).all(axis=-1)
    if nodata is not None and not math.isnan(nodata):
        valid &= ~(selected == nodata).all(axis=-1)
    if mask is not None:
        valid &= ~mask.reshape(valid.shape).astype(bool)
    return valid


def scaled_channels(
    block: np.ndarray,
    mask: np.ndarray | None,
    features: PixelFeatures,
    scale: ChannelScale,
) -> tuple[np.ndarray, np.ndarray]:
    """Selected channels of a strip mapped to [0, 1], and which pixels are valid.

    Returns
    -------
    scaled : ndarray of float32 of shape (h·w, channels)
        0 for invalid pixels.
    valid : ndarray of bool of shape (h·w,)
    """
    selected = _selected(block, features)
    valid = _valid_pixels(selected, mask, features.nodata).reshape(-1)
    pixels = selected.reshape(-1, selected.shape[-1])
    if pixels.dtype.kind in "ub" and pixels.dtype.itemsize <= 2:
        # Exact in float32 (integers below 2**24).
        scaled = pixels.astype(np.float32)
        scaled -= scale.low.astype(np.float32)
        scaled /= scale.span.astype(np.float32)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = ((pixels - scale.low) / scale.span).astype(np.float32)
    if not valid.all():
        scaled[~valid] = 0.0
    return scaled, valid


def strip_features(
    block: np.ndarray,
    mask: np.ndarray | None,
    *,
    features: PixelFeatures,
    scale: ChannelScale,
    row0: int,
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of the pixels of one full-width strip, in row-major order.

    Parameters
    ----------
    block : ndarray of shape (h, width, channels)
        Rows ``row0`` to ``row0 + h`` of the image.
    mask : ndarray of shape (h, width[, 1]), optional
        Nonzero for pixels to ignore.
    features : PixelFeatures
    scale : ChannelScale
    row0 : int
        First row of the strip in the image (the y feature is global, so features
        do not depend on where the strips begin).
    shape : (int, int)
        Height and width of the whole image.

    Returns
    -------
    X : ndarray of float32 of shape (h·width, n_features)
        0 for invalid pixels.
    scaled : ndarray of float32 of shape (h·width, channels)
        The selected channels in [0, 1] (for mean colours).
    valid : ndarray of bool of shape (h·width,)
    """
    scaled, valid = scaled_channels(block, mask, features, scale)
    if not (features.lab or features.xy):
        return scaled, scaled, valid
    h, w = block.shape[:2]
    n, c = scaled.shape
    X = np.empty(
        (n, (3 if features.lab else c) + (2 if features.xy else 0)), np.float32
    )
    if features.lab:
        rgb2lab = _rgb2lab()
        for s in range(0, n, C.LAB_ROWS):
            lab = rgb2lab(np.clip(scaled[s : s + C.LAB_ROWS], 0.0, 1.0))
            X[s : s + C.LAB_ROWS, :3] = lab / 100.0
    else:
        X[:, :c] = scaled
    if features.xy:
        unit = features.xy_weight / max(shape)
        X[:, -2] = np.tile((np.arange(w) + 0.5) * unit, h)
        X[:, -1] = np.repeat((np.arange(row0, row0 + h) + 0.5) * unit, w)
    if not valid.all():
        X[~valid] = 0.0
    return X, scaled, valid


def _in_sample(start: int, n: int, fraction: float, seed: int) -> np.ndarray:
    """Bernoulli(``fraction``) draws of pixels ``start`` to ``start + n``.

    Pixel ``i`` always gets the ``i``-th number of one Philox stream keyed by
    ``seed`` (a Philox counter step yields four numbers), so the sample does not
    depend on how the image is cut into strips.
    """
    bitgen = np.random.Philox(key=seed)
    bitgen.advance(start // 4)
    rng = np.random.Generator(bitgen)
    if start % 4:
        rng.random(start % 4)
    return rng.random(n) < fraction


###############################################################################
# Lazy arrays and strips


def _check_image(image: da.Array) -> da.Array:
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(
            f"an image of shape (height, width[, channels]) is needed, got {image.shape}"
        )
    if image.dtype.kind not in "buif":
        raise TypeError(f"image pixels must be numbers, got dtype {image.dtype}")
    return image.rechunk({1: -1, 2: -1})


def prepare_mask(mask: da.Array | np.ndarray, image: da.Array) -> da.Array:
    """A mask as a (height, width, 1) bool dask array with the image's strips.

    A pixel is masked (ignored) when any of its mask channels is nonzero.

    Raises
    ------
    ValueError
        The mask's height and width differ from the image's.
    """
    image = _check_image(image)
    mask = da.asarray(mask)
    if mask.ndim == 2:
        mask = mask[:, :, None]
    if mask.ndim != 3 or mask.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"the mask has shape {mask.shape[:2]} but the image is "
            f"{image.shape[0]} x {image.shape[1]} pixels (height x width)"
        )
    mask = (mask != 0).any(axis=2, keepdims=True)
    return mask.rechunk({0: image.chunks[0], 1: -1, 2: -1})


def _strips(image: da.Array, mask: da.Array | None) -> Iterator[tuple[int, Any, Any]]:
    """(first row, image block, mask block or None) of every strip, as delayed."""
    blocks = image.to_delayed().ravel()
    masks = mask.to_delayed().ravel() if mask is not None else [None] * len(blocks)
    starts = np.concatenate([[0], np.cumsum(image.chunks[0])[:-1]])
    yield from zip((int(s) for s in starts), blocks, masks, strict=True)


def _strip_range(
    block: np.ndarray, mask: np.ndarray | None, features: PixelFeatures
) -> tuple[np.ndarray, np.ndarray]:
    selected = _selected(block, features)
    valid = _valid_pixels(selected, mask, features.nodata)
    pixels = selected[valid].astype(np.float64)
    c = selected.shape[-1]
    if not len(pixels):
        return np.full(c, np.inf), np.full(c, -np.inf)
    return pixels.min(axis=0), pixels.max(axis=0)


def channel_scale(
    image: da.Array, features: PixelFeatures, mask: da.Array | None = None
) -> ChannelScale:
    """How the selected channels are mapped to [0, 1] (see ``PixelFeatures.scale``).

    'range' makes one pass over the image; 'dtype' none.

    Raises
    ------
    ValueError
        'range' on an image without any valid pixel.
    """
    image = _check_image(image)
    features.check(image.shape[2])
    c = features.n_channels(image.shape[2])
    dtype = image.dtype
    if features.scale == "dtype":
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            low, span = float(info.min), float(info.max) - float(info.min)
        else:
            low, span = 0.0, 1.0
        return ChannelScale(np.full(c, low), np.full(c, span))
    ranges = [
        dask.delayed(_strip_range)(block, m, features)
        for _, block, m in _strips(image, mask)
    ]
    parts = dask.compute(*ranges)
    low = np.min([p[0] for p in parts], axis=0)
    high = np.max([p[1] for p in parts], axis=0)
    if not np.all(np.isfinite(low)):
        raise ValueError("every pixel of the image is masked, nodata or not finite")
    span = high - low
    span[span == 0] = 1.0
    logger.info("channel ranges: %s to %s", low.tolist(), high.tolist())
    return ChannelScale(low, span)


def _fit_block(
    block: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    features: PixelFeatures,
    scale: ChannelScale,
    shape: tuple[int, int],
    fraction: float,
    seed: int,
    block_info: dict | None = None,
) -> np.ndarray:
    row0 = block_info[0]["array-location"][0][0]
    X, _, keep = strip_features(
        block, mask, features=features, scale=scale, row0=row0, shape=shape
    )
    if fraction < 1:
        keep = keep & _in_sample(row0 * shape[1], len(keep), fraction, seed)
    return X if keep.all() else X[keep]


def fit_pixels(
    image: da.Array,
    features: PixelFeatures,
    scale: ChannelScale,
    *,
    mask: da.Array | None = None,
    fraction: float | None = None,
    seed: int | None = None,
) -> da.Array:
    """The lazy (pixels, features) rows to fit a mixture on.

    Every valid pixel, or a uniform sample of about ``fraction`` of them (the
    same pixels whatever the chunking, for a given ``seed``). Each task reads its
    strip and computes the features itself, so nothing larger than a strip is held.

    Returns
    -------
    X : dask array of float32 of shape (n_pixels, n_features)
        Row counts per block are unknown (nan) when pixels are left out.
    """
    image = _check_image(image)
    features.check(image.shape[2])
    height, width, channels = image.shape
    fraction = 1.0 if fraction is None else float(fraction)
    d = features.n_features(channels)
    all_kept = (
        fraction >= 1
        and mask is None
        and features.nodata is None
        and image.dtype.kind in "bui"
    )
    rows = (
        tuple(h * width for h in image.chunks[0])
        if all_kept
        else (math.nan,) * image.numblocks[0]
    )
    arrays = [image] if mask is None else [image, prepare_mask(mask, image)]
    return da.map_blocks(
        _fit_block,
        *arrays,
        features=features,
        scale=scale,
        shape=(height, width),
        fraction=fraction,
        seed=0 if seed is None else int(seed),
        drop_axis=2,
        chunks=(rows, (d,)),
        dtype=np.float32,
        meta=np.empty((0, d), np.float32),
    )


###############################################################################
# Preview grids


def coarse_sums(values: np.ndarray, row0: int, factor: int) -> tuple[int, np.ndarray]:
    """Sums of a full-width strip over the cells of a ``factor`` x ``factor`` grid.

    The grid is the image's (cell ``i`` covers rows ``i·factor`` to
    ``(i+1)·factor``), so a cell cut by a strip boundary gets partial sums from the
    two strips, which the caller adds.

    Parameters
    ----------
    values : ndarray of shape (h, width, c)
    row0 : int
        First row of the strip in the image.
    factor : int

    Returns
    -------
    first_cell_row : int
    sums : ndarray of float64 of shape (cell rows, ceil(width / factor), c)
    """
    if factor == 1:
        return row0, values.astype(np.float64)
    h, w = values.shape[:2]
    cell_starts = np.arange(row0 - row0 % factor, row0 + h, factor)
    rows = np.add.reduceat(
        values, np.maximum(cell_starts - row0, 0), axis=0, dtype=np.float64
    )
    return row0 // factor, np.add.reduceat(rows, np.arange(0, w, factor), axis=1)


def _label_histograms(
    labels: np.ndarray, n_labels: int, row0: int, factor: int
) -> tuple[int, np.ndarray]:
    """Count of every label in every cell of a strip: (cell rows, cell cols, n_labels).

    Labels at or above ``n_labels - 1`` are counted as ``n_labels - 1``.
    """
    h, w = labels.shape
    cols = -(-w // factor)
    cell_rows = np.arange(row0, row0 + h) // factor - row0 // factor
    cells = cell_rows[:, None] * cols + np.arange(w)[None, :] // factor
    index = cells.ravel() * n_labels + np.minimum(labels.ravel(), n_labels - 1)
    n_cells = int(cell_rows[-1] + 1) * cols
    counts = np.bincount(index, minlength=n_cells * n_labels)
    return row0 // factor, counts.reshape(-1, cols, n_labels)


def _cell_pixels(height: int, width: int, factor: int) -> np.ndarray:
    """Number of image pixels in every cell of the preview grid."""
    rows = np.minimum(factor, height - np.arange(0, height, factor))
    cols = np.minimum(factor, width - np.arange(0, width, factor))
    return np.outer(rows, cols).astype(np.float64)


def _add_cells(grid: np.ndarray, parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    for first, sums in parts:
        grid[first : first + sums.shape[0]] += sums
    return grid


def _display_rgb(colours: np.ndarray) -> np.ndarray:
    """(K, channels) in [0, 1] → (K, 3) display colours.

    Three or more channels: the first three as red, green, blue; one: grey; two:
    red and green.
    """
    k, c = colours.shape
    if c == 1:
        rgb = np.repeat(colours, 3, axis=1)
    elif c == 2:
        rgb = np.column_stack([colours, np.zeros(k)])
    else:
        rgb = colours[:, :3]
    return np.clip(np.nan_to_num(rgb), 0.0, 1.0)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """[0, 1] → 0 … 255, rounded to the nearest."""
    return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(
    pixels: np.ndarray, path: str | os.PathLike, *, overwrite: bool = False
) -> str:
    """A uint8 (h, w) grey, (h, w, 2) grey+alpha, RGB or RGBA array as a PNG, atomically."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "PNG pictures need Pillow: pip install 'daskgmm[image]'"
        ) from None
    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")
    return os.path.abspath(os.fspath(path))


###############################################################################
# The prediction pass


def _write_region(path: str | None, start: int, values: np.ndarray) -> None:
    """Write rows ``start:`` of a Zarr array (skipped once the output is abandoned)."""
    import zarr

    if path is None or os.path.exists(abort_marker(path)):
        return
    zarr.open_array(path, mode="r+")[start : start + values.shape[0]] = values


def _predict_strip(
    block: np.ndarray,
    mask: np.ndarray | None,
    *,
    model: Any,
    features: PixelFeatures,
    scale: ChannelScale,
    row0: int,
    shape: tuple[int, int],
    factor: int,
    nodata_label: int,
    labels_path: str,
    proba_path: str | None,
) -> dict:
    """Evaluate the mixture once per pixel of a strip; write and summarise the result.

    The responsibilities are computed in float64 (``predict_proba`` on float64
    rows), so the label, their argmax, is ``model.predict``'s; the uncertainty is
    1 − their maximum.
    """
    h, w = block.shape[:2]
    X, scaled, valid = strip_features(
        block, mask, features=features, scale=scale, row0=row0, shape=shape
    )
    n, k = X.shape[0], model.n_components
    dtype = label_dtype(k + 1)
    labels = np.empty(n, dtype=dtype)
    top = np.empty(n, dtype=np.float32)
    proba = np.empty((n, k), dtype=np.float32) if proba_path else None
    for s in range(0, n, C.SEGMENT_PREDICT_ROWS):
        resp = model.predict_proba(X[s : s + C.SEGMENT_PREDICT_ROWS].astype(np.float64))
        best = resp.argmax(axis=1)
        labels[s : s + C.SEGMENT_PREDICT_ROWS] = best
        top[s : s + C.SEGMENT_PREDICT_ROWS] = resp[np.arange(len(best)), best]
        if proba is not None:
            proba[s : s + C.SEGMENT_PREDICT_ROWS] = resp
    labels[~valid] = nodata_label
    _write_region(labels_path, row0, labels.reshape(h, w))
    if proba is not None:
        proba[~valid] = np.nan
        _write_region(proba_path, row0, proba.reshape(h, w, k))
    good = labels[valid]
    counts = np.bincount(good, minlength=k)
    sums = np.stack(
        [
            np.bincount(good, weights=scaled[valid, j], minlength=k)
            for j in range(scaled.shape[1])
        ],
        axis=1,
    )
    uncertain = np.where(valid, 1.0 - top, 0.0).astype(np.float32)
    cells = coarse_sums(
        np.stack([uncertain, valid.astype(np.float32)], axis=1).reshape(h, w, 2),
        row0,
        factor,
    )
    return {"counts": counts, "sums": sums, "valid": int(valid.sum()), "cells": cells}


def _paint_strip(
    labels: np.ndarray, palette: np.ndarray, row0: int, factor: int
) -> tuple[int, np.ndarray]:
    """Cell sums of a strip painted with ``palette`` (K+1, 4): r, g, b and 1 for
    every label, zeros in the last row for the nodata label."""
    n_labels = palette.shape[0]
    if factor * factor >= n_labels:
        # Fewer numbers per cell than pixels: count the labels, then paint.
        first, counts = _label_histograms(labels, n_labels, row0, factor)
        return first, counts @ palette.astype(np.float64)
    return coarse_sums(palette[np.minimum(labels, n_labels - 1)], row0, factor)


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS thread per dask thread (several threads of this process run kernels)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@contextlib.contextmanager
def _label_store(path: str | None, scratch_dir: str, overwrite: bool) -> Iterator[str]:
    """Where the labels go: ``path`` atomically, or a scratch copy removed after."""
    if path is not None:
        with atomic_path(path, overwrite=overwrite) as tmp:
            yield tmp
        return
    tmp = tempfile.mkdtemp(prefix=".labels-scratch-", dir=scratch_dir)
    try:
        yield os.path.join(tmp, FILES["labels"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _label_chunks(image: da.Array, chunks: tuple[int, int] | None) -> tuple[int, int]:
    """Zarr chunks of the labels: ``chunks`` if every strip is made of whole chunk
    rows (no two tasks then write the same chunk), else one strip by the width."""
    strip = max(image.chunks[0])
    width = image.shape[1]
    if chunks is None:
        return strip, width
    rows, cols = int(chunks[0]), int(min(chunks[1], width))
    starts = np.cumsum((0, *image.chunks[0][:-1]))
    if rows <= 0 or np.any(starts % rows):
        logger.info(
            "labels chunked in strips of %d rows (%s does not fit the strips)",
            strip,
            chunks,
        )
        return strip, width
    return rows, cols


def _regular_strips(image: da.Array) -> da.Array:
    rows = image.chunks[0]
    if len(rows) > 1 and (len(set(rows[:-1])) > 1 or rows[-1] > rows[0]):
        image = image.rechunk({0: max(rows)})
    return image


def segment_image(
    image: da.Array,
    model: Any,
    out: str | os.PathLike,
    *,
    features: PixelFeatures,
    scale: ChannelScale,
    mask: da.Array | None = None,
    labels: bool = True,
    probabilities: bool = False,
    chunks: tuple[int, int] | None = None,
    preview_size: int = PREVIEW_SIZE,
    overwrite: bool = False,
) -> dict:
    """Label every pixel with a fitted mixture; write labels, pictures and counts.

    Writes, each atomically, into the directory ``out``:

    - ``labels.zarr``: (height, width) uint8 (uint16 beyond 255 segments), the
      segment of every pixel, the largest value of the type for invalid pixels
      (the attribute ``nodata``);
    - ``probabilities.zarr`` (if asked): (height, width, K) float32
      responsibilities, NaN for invalid pixels;
    - ``preview.png``: every pixel painted with its segment's mean colour,
      averaged over cells of ``factor`` x ``factor`` pixels so that the long side
      is at most ``preview_size`` (transparent where pixels are invalid);
    - ``uncertainty.png``: 1 − the largest responsibility, averaged over the same
      cells; black is certain, white is 1 − 1/K (every segment equally likely).

    Parameters
    ----------
    image : dask array of shape (height, width[, channels])
        Strips of whole rows (as :func:`daskgmm.io.read_image` gives).
    model : fitted GaussianMixture
        Fitted on ``features`` of images scaled by ``scale``.
    out : str or path
        Output directory (created if needed).
    features : PixelFeatures
    scale : ChannelScale
    mask : dask array of shape (height, width[, 1]), optional
        Nonzero for pixels to ignore.
    labels : bool, default=True
        Keep ``labels.zarr`` (the preview is painted from it either way).
    probabilities : bool, default=False
    chunks : (int, int), optional
        Zarr chunks (rows, columns) of the outputs, e.g. the input's tiles; used
        when every strip is made of whole chunk rows. Default: one strip.
    preview_size : int, default=2000
    overwrite : bool, default=False
        Replace existing outputs; otherwise they are an error, raised before any
        work.

    Returns
    -------
    dict
        Image size, pixel counts, per-segment ``pixel_count``, ``weight`` and mean
        colour, the paths written and the seconds each pass took.
    """
    import zarr

    image = _regular_strips(_check_image(image))
    features.check(image.shape[2])
    height, width, n_channels = image.shape
    if model.n_features_in_ != features.n_features(n_channels):
        raise ValueError(
            f"the model has {model.n_features_in_} features but features "
            f"'{features.kind}' of this image have "
            f"{features.n_features(n_channels)}"
        )
    if mask is not None:
        mask = prepare_mask(mask, image)
    k = int(model.n_components)
    dtype = label_dtype(k + 1)
    nodata_label = int(np.iinfo(dtype).max)
    out = os.path.abspath(os.fspath(out))
    wanted = ["preview", "uncertainty"]
    wanted += ["labels"] if labels else []
    wanted += ["probabilities"] if probabilities else []
    paths = {name: os.path.join(out, FILES[name]) for name in wanted}
    for path in paths.values():
        if os.path.lexists(path) and not overwrite:
            raise FileExistsError(
                f"{path} already exists; remove it or allow overwriting"
            )
    os.makedirs(out, exist_ok=True)
    rows, cols = _label_chunks(image, chunks)
    factor = max(1, math.ceil(max(height, width) / preview_size))
    grid_shape = (math.ceil(height / factor), math.ceil(width / factor))
    attrs = {
        "nodata": nodata_label,
        "n_components": k,
        "features": features.names(n_channels),
    }
    timings = {}
    with contextlib.ExitStack() as stack:
        labels_tmp = stack.enter_context(
            _label_store(paths.get("labels"), out, overwrite)
        )
        zarr.create_array(
            labels_tmp,
            shape=(height, width),
            chunks=(rows, cols),
            dtype=dtype,
            fill_value=nodata_label,
            attributes=attrs,
            zarr_format=3,
        )
        proba_tmp = None
        if probabilities:
            proba_tmp = stack.enter_context(
                atomic_path(paths["probabilities"], overwrite=overwrite)
            )
            zarr.create_array(
                proba_tmp,
                shape=(height, width, k),
                chunks=(rows, cols, k),
                dtype=np.float32,
                fill_value=np.nan,
                attributes=attrs,
                zarr_format=3,
            )
        start = time.perf_counter()
        tasks = [
            dask.delayed(_predict_strip)(
                block,
                m,
                model=model,
                features=features,
                scale=scale,
                row0=row0,
                shape=(height, width),
                factor=factor,
                nodata_label=nodata_label,
                labels_path=labels_tmp,
                proba_path=proba_tmp,
            )
            for row0, block, m in _strips(image, mask)
        ]
        with _one_blas_thread():
            parts = dask.compute(*tasks)
        timings["predict_write_seconds"] = time.perf_counter() - start
        counts = np.sum([p["counts"] for p in parts], axis=0)
        sums = np.sum([p["sums"] for p in parts], axis=0)
        n_valid = int(sum(p["valid"] for p in parts))
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts[:, None]
        cells = _add_cells(np.zeros((*grid_shape, 2)), [p["cells"] for p in parts])
        start = time.perf_counter()
        pixels_per_cell = _cell_pixels(height, width, factor)
        alpha = cells[..., 1] / pixels_per_cell
        masked = n_valid < height * width
        uncertainty = cells[..., 0] / np.maximum(cells[..., 1], 1.0)
        uncertainty = uncertainty / (1.0 - 1.0 / k) if k > 1 else uncertainty
        grey = [_to_uint8(uncertainty)] + ([_to_uint8(alpha)] if masked else [])
        write_png(
            np.stack(grey, axis=-1).squeeze(), paths["uncertainty"], overwrite=overwrite
        )
        palette = np.zeros((k + 1, 4), dtype=np.float32)
        palette[:k, :3] = _display_rgb(means)
        palette[:k, 3] = 1.0
        stored = da.from_zarr(labels_tmp, chunks=(max(image.chunks[0]), width))
        painted = [
            dask.delayed(_paint_strip)(block, palette, int(row0), factor)
            for row0, block in zip(
                np.cumsum((0, *stored.chunks[0][:-1])),
                stored.to_delayed().ravel(),
                strict=True,
            )
        ]
        grid = _add_cells(np.zeros((*grid_shape, 4)), dask.compute(*painted))
        colour = grid[..., :3] / np.maximum(grid[..., 3:], 1.0)
        planes = [_to_uint8(colour)] + ([_to_uint8(alpha)[..., None]] if masked else [])
        write_png(
            np.concatenate(planes, axis=-1), paths["preview"], overwrite=overwrite
        )
        timings["preview_seconds"] = time.perf_counter() - start
    weights = np.asarray(model.weights_, dtype=np.float64)
    display = _display_rgb(means)
    segments = [
        {
            "label": j,
            "pixel_count": int(counts[j]),
            "pixel_fraction": counts[j] / n_valid if n_valid else None,
            "weight": float(weights[j]),
            "mean_colour": means[j].tolist() if counts[j] else None,
            "mean_value": (scale.low + means[j] * scale.span).tolist()
            if counts[j]
            else None,
            "display_colour": "#" + "".join(f"{v:02x}" for v in _to_uint8(display[j]))
            if counts[j]
            else None,
        }
        for j in range(k)
    ]
    return {
        "height": height,
        "width": width,
        "channels": features.n_channels(n_channels),
        "label_dtype": str(dtype),
        "nodata_label": nodata_label,
        "pixels": {
            "total": height * width,
            "valid": n_valid,
            "invalid": height * width - n_valid,
        },
        "segments": segments,
        "preview": {"factor": factor, "height": grid_shape[0], "width": grid_shape[1]},
        "outputs": paths,
        "timings": timings,
    }
