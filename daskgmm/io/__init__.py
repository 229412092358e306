"""Sources and sinks: Zarr, Parquet, .npy (and images), read and written chunk by chunk."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

# Imported on first use, so that a worker reading Zarr or .npy blocks does not load
# pyarrow (about 65 MB per process).
_MODULES = {
    "image_to_pixels": "_image",
    "pixels_to_image": "_image",
    "read_image": "_image",
    "read_npy": "_npy",
    "ParquetSource": "_parquet",
    "read_parquet": "_parquet",
    "MARKER": "_sinks",
    "atomic_path": "_sinks",
    "check_output_apart": "_sinks",
    "UnsafeOutputError": "_sinks",
    "label_dtype": "_sinks",
    "write_label_image": "_sinks",
    "write_parquet": "_sinks",
    "write_zarr": "_sinks",
    "open_zarr_array": "_zarr",
    "read_zarr": "_zarr",
}

if TYPE_CHECKING:
    from daskgmm.io._image import image_to_pixels, pixels_to_image, read_image
    from daskgmm.io._npy import read_npy
    from daskgmm.io._parquet import ParquetSource, read_parquet
    from daskgmm.io._sinks import (
        MARKER,
        UnsafeOutputError,
        atomic_path,
        check_output_apart,
        label_dtype,
        write_label_image,
        write_parquet,
        write_zarr,
    )
    from daskgmm.io._zarr import open_zarr_array, read_zarr


def _module(name: str) -> ModuleType:
    """The submodule ``name`` (one of a fixed few), imported now."""
    if name == "_image":
        from daskgmm.io import _image as module
    elif name == "_npy":
        from daskgmm.io import _npy as module
    elif name == "_parquet":
        from daskgmm.io import _parquet as module
    elif name == "_sinks":
        from daskgmm.io import _sinks as module
    else:
        from daskgmm.io import _zarr as module
    return module


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_module(_MODULES[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "MARKER",
    "ParquetSource",
    "UnsafeOutputError",
    "atomic_path",
    "check_output_apart",
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
