"""Sources and sinks: Zarr, Parquet, .npy (and images), read and written chunk by chunk."""

from __future__ import annotations

from daskgmm.io._image import image_to_pixels, pixels_to_image, read_image
from daskgmm.io._npy import read_npy
from daskgmm.io._parquet import ParquetSource, read_parquet
from daskgmm.io._sinks import (
    atomic_path,
    label_dtype,
    write_label_image,
    write_parquet,
    write_zarr,
)
from daskgmm.io._zarr import open_zarr_array, read_zarr

__all__ = [
    "ParquetSource",
    "atomic_path",
    "image_to_pixels",
    "label_dtype",
    "open_zarr_array",
    "pixels_to_image",
    "read_image",
    "read_npy",
    "read_parquet",
    "read_zarr",
    "write_label_image",
    "write_parquet",
    "write_zarr",
]
