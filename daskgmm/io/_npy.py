"""``.npy`` sources read by memory map, one row slice per task."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
from dask._task_spec import Task
from dask.base import tokenize

from daskgmm import _chunks as C
from daskgmm._reduce import source_block_rows


def npy_header(path: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Shape, dtype and Fortran order of a ``.npy`` file, from its header alone."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        reader = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if reader is None:
            raise ValueError(f"{path}: unsupported .npy format version {version}")
        shape, fortran, dtype = reader(f)
    return shape, dtype, fortran


def _read_rows(path: str, start: int, stop: int) -> np.ndarray:
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    return np.array(data[start:stop])


def read_npy(path: str | os.PathLike, *, rows_per_chunk: int | None = None) -> da.Array:
    """A 2-D ``.npy`` file as a dask array; each task memory-maps its own rows.

    The graph holds the path, not the data, so it is cheap to send to a cluster whose
    workers see the same file system.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f".npy file not found: {path}")
    if not os.path.isfile(path):
        raise ValueError(
            f"{path} is not a regular file (a directory or a device); give a .npy file"
        )
    shape, dtype, _ = npy_header(path)
    if len(shape) != 2:
        raise ValueError(
            f"{path} has shape {shape}; a 2-D (n_samples, n_features) array is needed"
        )
    if dtype.hasobject:
        raise TypeError(f"{path} holds Python objects; only numeric arrays are read")
    n, d = shape
    rows = rows_per_chunk or source_block_rows(
        n, d * dtype.itemsize, C.SOURCE_BLOCK_BYTES
    )
    starts = list(range(0, n, rows)) or [0]
    name = "read-npy-" + tokenize(path, os.stat(path).st_mtime_ns, rows)
    graph = {
        (name, i, 0): Task((name, i, 0), _read_rows, path, s, min(n, s + rows))
        for i, s in enumerate(starts)
    }
    chunks = (tuple(min(n, s + rows) - s for s in starts), (d,))
    return da.Array(graph, name, chunks=chunks, dtype=dtype)
