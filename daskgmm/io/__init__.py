"""Sources and sinks: Zarr, Parquet, .npy (and images), read and written chunk by chunk."""

from __future__ import annotations

from daskgmm.io._npy import read_npy
from daskgmm.io._parquet import ParquetSource, read_parquet
from daskgmm.io._zarr import open_zarr_array, read_zarr

__all__ = ["ParquetSource", "open_zarr_array", "read_npy", "read_parquet", "read_zarr"]
