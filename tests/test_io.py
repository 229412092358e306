"""Sources and sinks of daskgmm.io: Zarr, Parquet, .npy and images read chunk by chunk,
Zarr and Parquet written atomically, and fits from every source equal to in-memory fits.

Every source is checked against the numbers it was written from (or against the
reader the format's own library provides: pandas for Parquet, ``np.load`` for .npy,
Pillow's decode for JPEG); every sink is read back with the format's own library.
All files are small and live in ``tmp_path``.
"""

from __future__ import annotations

import decimal
import logging
import os
import pickle
import time
import uuid
import warnings

import dask
import dask.array as da
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image

import daskgmm._chunks
import daskgmm._plan
import daskgmm.io._npy
import daskgmm.io._parquet
import daskgmm.io._zarr
from daskgmm import GaussianMixture
from daskgmm.io import (
    ParquetSource,
    atomic_path,
    image_to_pixels,
    label_dtype,
    pixels_to_image,
    read_image,
    read_npy,
    read_parquet,
    read_zarr,
    write_label_image,
    write_parquet,
    write_zarr,
)

N_ROWS = 1000
N_FEATURES = 4


###############################################################################
# Data and helpers


def features(n: int = N_ROWS, d: int = N_FEATURES, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def zarr_array(path, X: np.ndarray, **kwargs) -> zarr.Array:
    z = zarr.create_array(path, shape=X.shape, dtype=X.dtype, **kwargs)
    z[:] = X
    return z


def listing(path) -> list[str]:
    return sorted(os.listdir(path))


def parquet_table(n: int = 500, seed: int = 0) -> pa.Table:
    """Numeric columns of every kind (with nulls), a string column, ids out of order."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rng.integers(-5, 5, size=n)
    return pa.table(
        {
            "id": rng.permutation(n).astype(np.int64) * 3 + 11,
            "a": pa.array([None if i % 17 == 0 else v for i, v in enumerate(a)]),
            "b": pa.array(
                [None if i % 13 == 0 else int(v) for i, v in enumerate(b)],
                type=pa.int32(),
            ),
            "flag": rng.random(n) > 0.5,
            "name": [f"row{i}" for i in range(n)],
            "c": rng.normal(size=n).astype(np.float32),
            "u": rng.integers(0, 255, size=n).astype(np.uint8),
        }
    )


NUMERIC = ["id", "a", "b", "flag", "c", "u"]


@pytest.fixture
def parquet_file(tmp_path) -> tuple[str, pd.DataFrame]:
    """One file of 500 rows in row groups of 120 (4 x 120 + 20), and its pandas frame."""
    table = parquet_table()
    path = os.fspath(tmp_path / "one.parquet")
    pq.write_table(table, path, row_group_size=120)
    assert pq.ParquetFile(path).metadata.num_row_groups == 5
    return path, pd.read_parquet(path)


def as_float(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The pandas reference: nulls as NaN, ints and bools as floats."""
    return frame[columns].astype("float64").to_numpy()


###############################################################################
# Zarr sources


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_read_zarr_directory_v2_and_v3(tmp_path, zarr_format):
    X = features()
    path = tmp_path / f"v{zarr_format}.zarr"
    z = zarr_array(path, X, chunks=(100, N_FEATURES), zarr_format=zarr_format)
    assert z.metadata.zarr_format == zarr_format
    x = read_zarr(path)
    assert x.chunks == ((N_ROWS,), (N_FEATURES,))  # 32 KB: one block of ~16 MiB
    assert x.dtype == np.float64
    assert_array_equal(x.compute(), X)
    x = read_zarr(os.fspath(path), rows_per_chunk=300)
    assert x.chunks == ((300, 300, 300, 100), (N_FEATURES,))
    assert_array_equal(x.compute(), X)


def test_read_zarr_zip_file(tmp_path):
    X = features().astype(np.float32)
    path = tmp_path / "data.zip"
    store = zarr.storage.ZipStore(path, mode="w")
    zarr_array(store, X, chunks=(100, N_FEATURES))
    store.close()
    x = read_zarr(path, rows_per_chunk=250)
    assert x.chunks == ((250,) * 4, (N_FEATURES,))
    assert x.dtype == np.float32
    assert_array_equal(x.compute(), X)


@pytest.fixture
def memory_url():
    root = f"memory://daskgmm-test-{uuid.uuid4().hex}"
    yield root + "/data.zarr"
    fsspec.filesystem("memory").rm(root, recursive=True)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_read_zarr_fsspec_url(memory_url, zarr_format):
    X = features(seed=1)
    zarr_array(memory_url, X, chunks=(100, N_FEATURES), zarr_format=zarr_format)
    x = read_zarr(memory_url, rows_per_chunk=400, storage_options={})
    assert x.chunks == ((400, 400, 200), (N_FEATURES,))
    assert_array_equal(x.compute(scheduler="threads"), X)


def test_read_zarr_array_inside_a_group(tmp_path):
    X = features(seed=2)
    root = zarr.open_group(tmp_path / "g.zarr", mode="w")
    zarr_array(root.create_group("a").store_path / "b", X, chunks=(64, N_FEATURES))
    assert_array_equal(read_zarr(tmp_path / "g.zarr", array="a/b").compute(), X)


def test_read_zarr_sharded_blocks_are_whole_shards(tmp_path, monkeypatch):
    X = features()
    path = tmp_path / "sharded.zarr"
    zarr_array(path, X, chunks=(10, N_FEATURES), shards=(100, N_FEATURES))
    row_bytes = N_FEATURES * 8
    # dask's own reader splits at the inner chunk: 100 blocks of 10 rows.
    assert da.from_zarr(zarr.open_array(path, mode="r")).chunks[0] == (10,) * 100
    # A budget of 250 rows holds two whole shards per block.
    monkeypatch.setattr(daskgmm._chunks, "SOURCE_BLOCK_BYTES", 250 * row_bytes)
    x = read_zarr(path)
    assert x.chunks == ((200,) * 5, (N_FEATURES,))
    assert_array_equal(x.compute(), X)
    # A budget below one shard falls back to whole inner chunks (5 x 10 rows).
    monkeypatch.setattr(daskgmm._chunks, "SOURCE_BLOCK_BYTES", 55 * row_bytes)
    x = read_zarr(path)
    assert x.chunks == ((50,) * 20, (N_FEATURES,))
    assert_array_equal(x.compute(), X)


def test_a_small_store_is_read_in_about_four_blocks_per_core(tmp_path, monkeypatch):
    from daskgmm import _chunks

    X = features(4000, N_FEATURES)
    path = tmp_path / "small.zarr"
    zarr_array(path, X, chunks=(100, N_FEATURES))
    cores = os.cpu_count() or 1
    # 1 MiB blocks at least: the whole small store is one block.
    assert read_zarr(path).numblocks[0] == 1
    monkeypatch.setattr(_chunks, "MIN_SOURCE_BLOCK_BYTES", 1)
    x = read_zarr(path)
    rows = max(100, -(-4000 // (4 * cores)) // 100 * 100)  # whole chunks
    assert x.chunks[0][0] == rows
    assert x.numblocks[0] == -(-4000 // rows)
    assert_array_equal(x.compute(), X)
    # A .npy file alike.
    np.save(tmp_path / "x.npy", X)
    assert read_npy(tmp_path / "x.npy").chunks[0][0] == -(-4000 // (4 * cores))


def test_read_zarr_rows_per_chunk_overrides_the_shard_alignment(tmp_path):
    X = features()
    path = tmp_path / "sharded.zarr"
    zarr_array(path, X, chunks=(10, N_FEATURES), shards=(100, N_FEATURES))
    x = read_zarr(path, rows_per_chunk=130)
    assert x.chunks[0] == (130,) * 7 + (90,)
    assert_array_equal(x.compute(), X)


def test_read_zarr_missing_store_raises(tmp_path):
    missing = tmp_path / "missing.zarr"
    with pytest.raises(
        FileNotFoundError, match=r"^Zarr store not found: .*missing\.zarr$"
    ):
        read_zarr(missing)


def test_read_zarr_group_without_array_lists_the_arrays(tmp_path):
    root = zarr.open_group(tmp_path / "g.zarr", mode="w")
    root.create_group("a").create_array("b", shape=(3, 2), dtype="f8")
    root.create_array("c", shape=(3, 2), dtype="f8")
    with pytest.raises(ValueError, match="is a Zarr group, not an array") as info:
        read_zarr(tmp_path / "g.zarr")
    listed = str(info.value).split("(arrays here: ")[1].rstrip(")").split(", ")
    assert sorted(listed) == ["a/b", "c"]
    with pytest.raises(
        ValueError,
        match=r"g.zarr/a is a Zarr group, not an array; name the array inside it "
        r"\(arrays here: b\)$",
    ):
        read_zarr(tmp_path / "g.zarr", array="a")


def test_read_zarr_three_dimensional_array_raises(tmp_path):
    zarr.create_array(tmp_path / "cube.zarr", shape=(4, 5, 6), dtype="f8")
    with pytest.raises(
        ValueError,
        match=r"has shape \(4, 5, 6\); a 2-D \(n_samples, n_features\) array is needed",
    ):
        read_zarr(tmp_path / "cube.zarr")


###############################################################################
# Parquet sources


def test_read_parquet_default_columns_are_the_numeric_ones(parquet_file):
    path, frame = parquet_file
    x = read_parquet(path)
    assert x.dtype == np.float64
    assert x.shape == (500, len(NUMERIC))  # 'name' (string) is left out
    values = x.compute()
    assert_array_equal(values, as_float(frame, NUMERIC))  # nulls as NaN
    assert np.isnan(values[:, 1]).sum() == frame["a"].isna().sum() == 30
    assert np.isnan(values[:, 2]).sum() == frame["b"].isna().sum() == 39


def test_read_parquet_chosen_columns_in_the_given_order(parquet_file):
    path, frame = parquet_file
    columns = ["u", "a", "flag", "id"]
    x = read_parquet(path, columns)
    assert x.shape == (500, 4)
    assert_array_equal(x.compute(), as_float(frame, columns))


def test_read_parquet_float32(parquet_file):
    path, frame = parquet_file
    x = read_parquet(path, ["c", "b"], dtype=np.float32)
    values = x.compute()
    assert x.dtype == values.dtype == np.float32
    assert_array_equal(values, as_float(frame, ["c", "b"]).astype(np.float32))


def test_parquet_row_groups_split_with_sizes_from_the_footer(parquet_file, monkeypatch):
    path, frame = parquet_file
    reads = []
    original = daskgmm.io._parquet.read_piece

    def counting(*args):
        reads.append(1)
        return original(*args)

    monkeypatch.setattr(daskgmm.io._parquet, "read_piece", counting)
    x = read_parquet(path, ["a", "b"], rows_per_chunk=50)
    # Five row groups (120 x 4, 20), each cut into pieces of at most 50 rows.
    assert x.chunks == ((50, 50, 20) * 4 + (20,), (2,))
    assert reads == []  # the sizes came from the metadata alone
    assert_array_equal(x.compute(), as_float(frame, ["a", "b"]))
    assert len(reads) == 13  # one read per block
    # Any budget: blocks known up front, at most rows_per_chunk rows each.
    for rows in (7, 119, 120, 121, 250, 1000):
        x = read_parquet(path, rows_per_chunk=rows)
        assert sum(x.chunks[0]) == 500
        assert max(x.chunks[0]) <= rows
        assert_array_equal(x.compute(), as_float(frame, NUMERIC))
    assert sum(read_parquet(path, ["a"]).chunks[0]) == 500  # default budget


def test_read_parquet_decimal_and_half_float_columns(tmp_path):
    dec = [decimal.Decimal("1.25"), None, decimal.Decimal("-3.50"), decimal.Decimal(7)]
    table = pa.table(
        {
            "d": pa.array(dec, type=pa.decimal128(6, 2)),
            "h": np.array([0.5, 1.5, -2.25, 1e3], dtype=np.float16),
            "i": pa.array([1, 2, None, 4], type=pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "kinds.parquet", row_group_size=3)
    x = read_parquet(tmp_path / "kinds.parquet", rows_per_chunk=2)
    expected = [[1.25, 0.5, 1], [np.nan, 1.5, 2], [-3.5, -2.25, np.nan], [7, 1e3, 4]]
    assert_array_equal(x.compute(), expected)


@pytest.fixture
def parquet_dir(tmp_path) -> tuple[str, np.ndarray]:
    """A dataset directory: files at the top, in a subdirectory, and ones to skip."""
    root = tmp_path / "dataset"
    (root / "sub").mkdir(parents=True)
    (root / "_temporary").mkdir()
    parts = {
        "part-0.parquet": (0, 7),
        "part-1.parquet": (7, 12),
        "sub/part-2.parquet": (12, 15),
        "_common_metadata.parquet": (100, 103),  # skipped: starts with '_'
        "_temporary/part-9.parquet": (200, 204),  # skipped: directory with '_'
        ".hidden.parquet": (300, 302),  # skipped: starts with '.'
    }
    for name, (start, stop) in parts.items():
        ids = np.arange(start, stop)
        pq.write_table(
            pa.table({"id": ids, "x": ids * 0.5, "y": -ids.astype(np.int16)}),
            root / name,
        )
    (root / "_SUCCESS").write_bytes(b"")
    ids = np.arange(15)
    return os.fspath(root), np.column_stack([ids, ids * 0.5, -ids]).astype(float)


def test_read_parquet_directory_skips_underscore_and_hidden_files(parquet_dir):
    path, expected = parquet_dir
    x = read_parquet(path)
    assert x.chunks == ((7, 5, 3), (3,))
    values = x.compute()
    # Every row of the three data files once (set equality, order checked below).
    assert_array_equal(values[np.argsort(values[:, 0])], expected)


def test_read_parquet_flat_directory_reads_files_in_name_order(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i, name in enumerate(["b.parquet", "a.parquet", "c.parquet"]):
        pq.write_table(pa.table({"v": np.arange(3.0) + 10 * i}), root / name)
    got = read_parquet(root).compute()[:, 0]
    assert_array_equal(got, pd.read_parquet(root)["v"].to_numpy())
    assert_array_equal(got, [10, 11, 12, 0, 1, 2, 20, 21, 22])


def test_read_parquet_nested_directory_row_order_matches_pandas(tmp_path):
    root = tmp_path / "nested"
    (root / "a").mkdir(parents=True)
    pq.write_table(pa.table({"v": [0.0, 1.0]}), root / "b.parquet")
    pq.write_table(pa.table({"v": [2.0, 3.0]}), root / "a" / "part.parquet")
    expected = pd.read_parquet(root)["v"].to_numpy()
    assert_array_equal(expected, [2, 3, 0, 1])  # a/part.parquet < b.parquet
    assert_array_equal(read_parquet(root).compute()[:, 0], expected)


def test_read_parquet_dnf_filter(parquet_file):
    path, frame = parquet_file
    x = read_parquet(path, ["a", "c"], filters=[("b", ">", 0)], rows_per_chunk=50)
    assert len(x.chunks[0]) == 13
    assert all(np.isnan(c) for c in x.chunks[0])
    kept = frame[frame["b"] > 0]
    assert 100 < len(kept) < 400  # the filter removes rows of every piece
    assert_array_equal(x.compute(), as_float(kept, ["a", "c"]))


def test_read_parquet_expression_filter(parquet_file):
    path, frame = parquet_file
    expr = (pc.field("a") > 0.5) & pc.field("flag")
    x = read_parquet(path, ["id", "a"], filters=expr)
    assert np.isnan(x.shape[0])
    kept = frame[(frame["a"] > 0.5) & frame["flag"]]
    assert 0 < len(kept) < 500
    assert_array_equal(x.compute(), as_float(kept, ["id", "a"]))


def test_read_parquet_or_filter_keeping_no_rows_of_some_pieces(parquet_file):
    path, frame = parquet_file
    dnf = [[("id", "<", 100)], [("id", ">", 1400)]]
    x = read_parquet(path, ["id"], filters=dnf, rows_per_chunk=50)
    kept = frame[(frame["id"] < 100) | (frame["id"] > 1400)]
    assert_array_equal(x.compute(), as_float(kept, ["id"]))


@pytest.mark.parametrize("filters", [None, [("b", ">=", 0)]])
def test_parquet_column_lines_up_with_features(parquet_file, filters):
    path, frame = parquet_file
    source = ParquetSource(path, ["a", "c"], filters=filters, rows_per_chunk=40)
    ids = source.column("id")
    X = source.features()
    assert ids.dtype == np.int64
    assert ids.numblocks[0] == X.numblocks[0] == 13  # 3 pieces x 4 row groups + 1
    ids, X = dask.compute(ids, X)
    kept = frame if filters is None else frame[frame["b"] >= 0]
    assert_array_equal(ids, kept["id"].to_numpy())
    by_id = frame.set_index("id")
    assert_array_equal(X, as_float(by_id.loc[ids], ["a", "c"]))


def test_parquet_column_of_strings(parquet_file):
    path, frame = parquet_file
    names = ParquetSource(path, ["a"], rows_per_chunk=100).column("name").compute()
    assert names.tolist() == frame["name"].tolist()


def test_parquet_integer_column_with_nulls_computes_to_its_declared_dtype(
    parquet_file,
):
    path, _ = parquet_file
    column = ParquetSource(path, ["a"]).column("b")
    assert column.compute().dtype == column.dtype


def test_read_parquet_missing_column_raises_naming_it(parquet_file):
    path, _ = parquet_file
    message = (
        f"{path} has no column(s) ['zz']; its columns are "
        "['id', 'a', 'b', 'flag', 'name', 'c', 'u']"
    )
    with pytest.raises(ValueError) as info:
        read_parquet(path, ["a", "zz"])
    assert str(info.value) == message
    with pytest.raises(ValueError, match="has no column 'nope'; its columns are"):
        ParquetSource(path, ["a"]).column("nope")


def test_read_parquet_non_numeric_column_raises_naming_it(parquet_file):
    path, _ = parquet_file
    with pytest.raises(TypeError) as info:
        read_parquet(path, ["a", "name"])
    assert str(info.value) == (
        f"{path}: column(s) 'name' (string) are not numeric; choose numeric "
        "columns for the features"
    )


def test_read_parquet_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="Parquet file or directory not found"):
        read_parquet(tmp_path / "nope.parquet")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no Parquet files in directory"):
        read_parquet(tmp_path / "empty")


###############################################################################
# .npy sources


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_npy_equals_np_load(tmp_path, dtype):
    path = tmp_path / "x.npy"
    np.save(path, features(20_000, 5).astype(dtype))
    expected = np.load(path)
    x = read_npy(path, rows_per_chunk=3000)
    assert x.chunks == ((3000,) * 6 + (2000,), (5,))
    values = x.compute()
    assert x.dtype == values.dtype == dtype
    assert_array_equal(values, expected)
    assert read_npy(path).chunks == ((20_000,), (5,))  # below the 16 MiB default


def test_read_npy_fortran_order(tmp_path):
    X = np.asfortranarray(features(1000, 3))
    np.save(tmp_path / "f.npy", X)
    assert_array_equal(read_npy(tmp_path / "f.npy", rows_per_chunk=333).compute(), X)


def test_read_npy_graph_holds_the_path_not_the_data(tmp_path, monkeypatch):
    X = features(20_000, 5)  # 800 KB
    np.save(tmp_path / "x.npy", X)
    x = read_npy(tmp_path / "x.npy", rows_per_chunk=5000)
    size = len(pickle.dumps(dict(x.__dask_graph__())))
    assert size < X.nbytes / 100
    reads = []
    original = daskgmm.io._npy._read_rows
    monkeypatch.setattr(
        daskgmm.io._npy,
        "_read_rows",
        lambda *args: reads.append(args[1:]) or original(*args),
    )
    x = read_npy(tmp_path / "x.npy", rows_per_chunk=5000)
    assert reads == []
    assert_array_equal(x.compute(), X)
    assert sorted(reads) == [(0, 5000), (5000, 10000), (10000, 15000), (15000, 20000)]


def test_read_npy_one_dimensional_and_object_arrays_raise(tmp_path):
    np.save(tmp_path / "flat.npy", np.arange(5.0))
    with pytest.raises(ValueError, match=r"has shape \(5,\); a 2-D"):
        read_npy(tmp_path / "flat.npy")
    np.save(tmp_path / "obj.npy", np.array([[1, "a"]], dtype=object))
    with pytest.raises(TypeError, match="holds Python objects"):
        read_npy(tmp_path / "obj.npy")
    with pytest.raises(FileNotFoundError, match=r"\.npy file not found"):
        read_npy(tmp_path / "missing.npy")


###############################################################################
# Images


def assert_strips(image: da.Array, height: int, width: int, channels: int, unit: int):
    """Full-width strips whose heights are multiples of ``unit`` (but the last)."""
    rows, widths, chans = image.chunks
    assert widths == (width,)
    assert chans == (channels,)
    assert sum(rows) == height
    assert len(rows) > 1
    assert all(r % unit == 0 for r in rows[:-1])


def test_tiled_bigtiff_rgb_uint16(tmp_path):
    img = np.random.default_rng(0).integers(0, 65535, (100, 70, 3), dtype=np.uint16)
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, img, bigtiff=True, tile=(32, 32), photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.pages[0].is_tiled
    image = read_image(path)
    assert image.shape == (100, 70, 3)
    assert image.dtype == np.uint16
    assert_array_equal(image.compute(), img)
    # Strips of ~2 tile rows: 64 rows each, full width.
    image = read_image(path, strip_bytes=70 * 3 * 2 * 70)
    assert image.chunks[0] == (64, 36)
    assert_strips(image, 100, 70, 3, 32)
    assert_array_equal(image.compute(), img)
    image = read_image(path, strip_bytes=1)
    assert image.chunks[0] == (32, 32, 32, 4)
    assert_array_equal(image.compute(), img)


def test_planar_rgb_tiff(tmp_path):
    img = np.random.default_rng(1).integers(0, 255, (50, 30, 3), dtype=np.uint8)
    path = tmp_path / "planar.tiff"
    tifffile.imwrite(
        path,
        np.moveaxis(img, 2, 0),
        photometric="rgb",
        planarconfig="separate",
        rowsperstrip=8,
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "SYX"
    image = read_image(path, strip_bytes=1)
    assert_strips(image, 50, 30, 3, 8)
    assert_array_equal(image.compute(), img)


def test_single_channel_tiff(tmp_path):
    img = np.random.default_rng(2).normal(size=(40, 25))
    tifffile.imwrite(tmp_path / "gray.tif", img, rowsperstrip=5)
    image = read_image(tmp_path / "gray.tif", strip_bytes=25 * 8 * 11)
    assert image.shape == (40, 25, 1)
    assert image.dtype == np.float64
    assert image.chunks[0] == (10, 10, 10, 10)
    assert_array_equal(image.compute()[:, :, 0], img)


@pytest.mark.parametrize("layout", ["contig", "planes"])
def test_five_channel_float32_tiff(tmp_path, layout):
    img = np.random.default_rng(3).normal(size=(40, 30, 5)).astype(np.float32)
    path = tmp_path / "multi.tif"
    if layout == "contig":
        tifffile.imwrite(path, img, photometric="minisblack", planarconfig="contig")
    else:
        tifffile.imwrite(path, np.moveaxis(img, 2, 0), photometric="minisblack")
    image = read_image(path)
    assert image.shape == (40, 30, 5)
    assert image.dtype == np.float32
    assert_array_equal(image.compute(), img)


def test_png_rgb_and_sixteen_bit_gray(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 255, (50, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    image = read_image(tmp_path / "rgb.png")
    assert image.dtype == np.uint8
    assert_array_equal(image.compute(), rgb)
    gray = np.random.default_rng(5).integers(0, 65535, (30, 20), dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "gray16.png")
    image = read_image(tmp_path / "gray16.png")
    assert image.shape == (30, 20, 1)
    assert image.dtype == np.uint16
    assert_array_equal(image.compute()[:, :, 0], gray)


def test_palette_png_is_read_as_rgb(tmp_path):
    rgb = np.random.default_rng(15).integers(0, 255, (20, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).quantize(colors=8).save(tmp_path / "palette.png")
    with Image.open(tmp_path / "palette.png") as im:
        assert im.mode == "P"
        expected = np.asarray(im.convert("RGB"))
    image = read_image(tmp_path / "palette.png")
    assert image.shape == (20, 16, 3)
    assert_array_equal(image.compute(), expected)
    assert len(np.unique(expected.reshape(-1, 3), axis=0)) <= 8


def test_png_strips_are_whole_rows(tmp_path):
    rgb = np.random.default_rng(6).integers(0, 255, (50, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    image = read_image(tmp_path / "rgb.png", strip_bytes=40 * 3 * 12)
    assert image.chunks == ((12, 12, 12, 12, 2), (40,), (3,))
    assert_array_equal(image.compute(), rgb)


def test_jpeg_equals_pillows_decode(tmp_path):
    rgb = np.random.default_rng(7).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(path, quality=90)
    image = read_image(path)
    assert image.shape == (48, 64, 3)
    assert image.dtype == np.uint8
    with Image.open(path) as im:
        decoded = np.asarray(im)
    assert_array_equal(image.compute(), decoded)
    assert not np.array_equal(decoded, rgb)  # lossy: Pillow's decode is the reference


@pytest.mark.parametrize("channels", [None, 3])
def test_zarr_image(tmp_path, channels):
    shape = (70, 20) if channels is None else (70, 20, channels)
    img = np.random.default_rng(8).integers(0, 1000, shape).astype(np.uint16)
    path = tmp_path / "image.zarr"
    zarr_array(path, img, chunks=(16, 20, *shape[2:]))
    image = read_image(path, strip_bytes=1)
    assert_strips(image, 70, 20, channels or 1, 16)
    assert image.chunks[0] == (16, 16, 16, 16, 6)
    assert_array_equal(image.compute().reshape(shape), img)


def test_zarr_image_inside_a_group(tmp_path):
    img = np.random.default_rng(9).normal(size=(30, 10, 2))
    root = zarr.open_group(tmp_path / "images.zarr", mode="w")
    zarr_array(root.store_path / "scene", img, chunks=(8, 10, 2))
    image = read_image(tmp_path / "images.zarr", array="scene")
    assert_array_equal(image.compute(), img)


def test_unknown_image_suffix_and_missing_image_raise(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    with pytest.raises(
        ValueError, match=r"x\.npy: unknown image type; use \.tif/\.tiff"
    ):
        read_image(tmp_path / "x.npy")
    with pytest.raises(FileNotFoundError, match="image not found"):
        read_image(tmp_path / "missing.png")


def test_image_to_pixels_equals_reshape(tmp_path):
    img = np.random.default_rng(10).integers(0, 65535, (100, 70, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", img, tile=(32, 32), photometric="rgb")
    image = read_image(tmp_path / "t.tif", strip_bytes=1)
    pixels = image_to_pixels(image)
    assert pixels.chunks == ((32 * 70, 32 * 70, 32 * 70, 4 * 70), (3,))
    assert_array_equal(pixels.compute(), img.reshape(-1, 3))


def test_image_to_pixels_of_blocks_narrower_than_the_image():
    img = np.arange(30 * 7 * 2).reshape(30, 7, 2)
    image = da.from_array(img, chunks=(4, 3, 1))
    pixels = image_to_pixels(image)
    assert pixels.chunks == ((28,) * 7 + (14,), (2,))
    assert_array_equal(pixels.compute(), img.reshape(-1, 2))
    gray = image_to_pixels(da.from_array(img[:, :, 0], chunks=(5, 2)))
    assert_array_equal(gray.compute(), img[:, :, 0].reshape(-1, 1))


def test_pixels_to_image_round_trip():
    img = np.random.default_rng(11).normal(size=(30, 7, 3))
    pixels = image_to_pixels(da.from_array(img, chunks=(4, 7, 3)))
    back = pixels_to_image(pixels, 30, 7)
    assert back.chunks == ((4,) * 7 + (2,), (7,), (3,))
    assert_array_equal(back.compute(), img)
    one = pixels_to_image(pixels[:, 1], 30, 7)
    assert one.chunks == ((4,) * 7 + (2,), (7,))
    assert_array_equal(one.compute(), img[:, :, 1])


def test_pixels_to_image_needs_whole_rows():
    pixels = da.zeros((30 * 7,), chunks=50)
    with pytest.raises(ValueError, match="not chunked in whole image rows of width 7"):
        pixels_to_image(pixels, 30, 7)
    with pytest.raises(ValueError, match="not chunked in whole image rows"):
        pixels_to_image(da.zeros((28,), chunks=7), 30, 7)


###############################################################################
# Fitting from sources equals fitting in memory

K_FIT = 3
MEANS = np.array([[0.0, 0.0, 0.0], [5.0, 1.0, 0.0], [0.0, 5.0, 2.0]])


@pytest.fixture(scope="module")
def fit_data() -> np.ndarray:
    rng = np.random.default_rng(12)
    shift = np.repeat(MEANS, [2500, 2000, 1500], axis=0)
    return rng.normal(size=(6000, 3)) @ np.array(
        [[1.0, 0.3, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 1.0]]
    ) + rng.permutation(shift)


def fit_params() -> dict:
    return {
        "weights_init": np.full(K_FIT, 1 / K_FIT),
        "means_init": MEANS + 0.7,
        "precisions_init": np.tile(np.eye(3) * 0.8, (K_FIT, 1, 1)),
        "tol": 0,
        "max_iter": 4,
    }


def fit(X) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", daskgmm.ConvergenceWarning)
        return GaussianMixture(K_FIT, **fit_params()).fit(X)


def write_source(kind: str, X: np.ndarray, tmp_path) -> da.Array:
    if kind == "zarr":
        zarr_array(tmp_path / "x.zarr", X, chunks=(700, 3))
        return read_zarr(tmp_path / "x.zarr", rows_per_chunk=700)
    if kind == "npy":
        np.save(tmp_path / "x.npy", X)
        return read_npy(tmp_path / "x.npy", rows_per_chunk=900)
    frame = pd.DataFrame(X, columns=["p", "q", "r"])
    frame.to_parquet(tmp_path / "x.parquet", row_group_size=1500)
    if kind == "parquet":
        return read_parquet(tmp_path / "x.parquet", rows_per_chunk=1000)
    # Unknown row counts: a filter that keeps every row.
    return read_parquet(
        tmp_path / "x.parquet", filters=[("p", ">", -1e9)], rows_per_chunk=1000
    )


@pytest.mark.parametrize("kind", ["zarr", "parquet", "parquet-filtered", "npy"])
def test_fit_from_a_source_equals_the_fit_in_memory(fit_data, tmp_path, kind):
    reference = fit(fit_data)
    gm = fit(write_source(kind, fit_data, tmp_path))
    assert gm.n_iter_ == reference.n_iter_ == 4
    assert_allclose(gm.lower_bound_, reference.lower_bound_, rtol=1e-10)
    assert_allclose(gm.lower_bounds_, reference.lower_bounds_, rtol=1e-10)
    assert_allclose(gm.means_, reference.means_, rtol=1e-10, atol=1e-10)
    assert_allclose(gm.covariances_, reference.covariances_, rtol=1e-9, atol=1e-10)
    # and the fit moved away from its start, so equal results are not trivial
    assert np.abs(reference.means_ - (MEANS + 0.7)).max() > 0.3


def persist_lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "daskgmm"
        and r.getMessage().startswith(("keeping the data", "reading the data"))
    ]


@pytest.fixture
def npy_source(fit_data, tmp_path, monkeypatch):
    """The fit data as a .npy source of 6 blocks, and the list of blocks read."""
    np.save(tmp_path / "x.npy", fit_data)
    reads = []
    original = daskgmm.io._npy._read_rows
    monkeypatch.setattr(
        daskgmm.io._npy,
        "_read_rows",
        lambda *args: reads.append(args[1]) or original(*args),
    )
    return read_npy(tmp_path / "x.npy", rows_per_chunk=1000), reads


def test_persist_auto_keeps_small_dask_input_in_memory(npy_source, caplog):
    x, reads = npy_source
    caplog.set_level(logging.INFO, logger="daskgmm")
    fit(x)
    (line,) = persist_lines(caplog)
    assert line.startswith("keeping the data in memory during the fit (0.1 MiB of data")
    assert len(reads) == 6  # one read of every block for the 4 iterations


def test_persist_auto_streams_when_memory_is_short(npy_source, caplog, monkeypatch):
    x, reads = npy_source
    monkeypatch.setattr(daskgmm._plan, "_available_memory", lambda client: 1000.0)
    caplog.set_level(logging.INFO, logger="daskgmm")
    gm = fit(x)
    (line,) = persist_lines(caplog)
    assert line == (
        "reading the data from its source at every pass (0.1 MiB of data, 0 MiB budget)"
    )
    assert len(reads) == 6 * gm.n_iter_


@pytest.mark.parametrize("persist, keeps", [(True, True), (False, False)])
def test_persist_true_and_false_are_honoured(
    npy_source, caplog, monkeypatch, persist, keeps
):
    x, reads = npy_source
    # True keeps the data even when memory looks short; False streams even if ample.
    memory = 1000.0 if persist else 1e15
    monkeypatch.setattr(daskgmm._plan, "_available_memory", lambda client: memory)
    caplog.set_level(logging.INFO, logger="daskgmm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", daskgmm.ConvergenceWarning)
        GaussianMixture(K_FIT, persist=persist, **fit_params()).fit(x)
    (line,) = persist_lines(caplog)
    verb = "keeping the data in memory" if keeps else "reading the data from its source"
    assert line.startswith(verb)
    assert line.endswith(f"(persist={persist})")
    assert len(reads) == (6 if keeps else 24)


def test_persist_auto_streams_unknown_sizes_and_numpy(fit_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="daskgmm")
    fit(write_source("parquet-filtered", fit_data, tmp_path))
    fit(fit_data)
    first, second = persist_lines(caplog)
    assert first.startswith(
        "reading the data from its source at every pass (nan MiB of data"
    )
    assert second == (
        "reading the data from its source at every pass "
        "(NumPy input, threaded scheduler)"
    )


###############################################################################
# Sinks: Zarr


def slow_failure(fail_block: int, delay: float = 0.0):
    """A block function that raises on one row block (and sleeps on the others)."""

    def block(b, block_info=None):
        if block_info[0]["chunk-location"][0] == fail_block:
            raise RuntimeError(f"block {fail_block} failed")
        time.sleep(delay)
        return b

    return block


def test_write_zarr_single_array_keeps_regular_row_chunks(tmp_path):
    X = features(103, 3)
    path = write_zarr(
        da.from_array(X, chunks=(20, 3)), tmp_path / "x.zarr", attrs={"k": [1, 2]}
    )
    assert path == os.fspath(tmp_path / "x.zarr")
    z = zarr.open_array(path, mode="r")
    assert z.metadata.zarr_format == 3
    assert z.chunks == (20, 3)
    assert z.attrs.asdict() == {"k": [1, 2]}
    assert_array_equal(z[:], X)
    assert listing(tmp_path) == ["x.zarr"]


def test_write_zarr_makes_irregular_row_chunks_regular(tmp_path):
    X = features(103, 3)
    x = da.from_array(X, chunks=((10, 30, 3, 60), 3))
    z = zarr.open_array(write_zarr(x, tmp_path / "x.zarr"), mode="r")
    assert z.chunks == (60, 3)
    assert_array_equal(z[:], X)


def test_write_zarr_cuts_big_row_chunks_to_the_read_block_size(tmp_path, monkeypatch):

    monkeypatch.setattr(
        daskgmm._chunks, "ZARR_WRITE_CHUNK_BYTES", 24 * 8 * 3
    )  # 24 rows of 3 floats
    X = features(103, 3)
    x = da.from_array(X, chunks=(-1, 3))  # one block of 103 rows
    z = zarr.open_array(write_zarr(x, tmp_path / "x.zarr"), mode="r")
    assert z.chunks == (24, 3)
    assert_array_equal(z[:], X)


def test_write_zarr_unknown_row_chunks(fit_data, tmp_path):
    x = write_source("parquet-filtered", fit_data, tmp_path)
    assert len(x.chunks[0]) == 8  # pieces of 1000 and 500 rows, sizes unknown
    assert np.isnan(x.chunks[0]).all()
    z = zarr.open_array(write_zarr(x, tmp_path / "out.zarr"), mode="r")
    assert z.chunks == (1000, 3)
    assert_array_equal(z[:], fit_data)


def test_write_zarr_mapping_is_a_group(tmp_path):
    X = features(103, 3)
    y = np.arange(103) % 5
    path = write_zarr(
        {
            "X": da.from_array(X, chunks=((10, 30, 3, 60), 3)),
            "y": da.from_array(y, chunks=7),
        },
        tmp_path / "g.zarr",
        attrs={"source": "test", "n": 103},
    )
    root = zarr.open_group(path, mode="r")
    assert sorted(root.array_keys()) == ["X", "y"]
    assert root.attrs.asdict() == {"source": "test", "n": 103}
    assert root["X"].chunks == (60, 3)
    assert root["y"].chunks == (7,)
    assert_array_equal(root["X"][:], X)
    assert_array_equal(root["y"][:], y)
    assert root["y"].dtype == y.dtype


def test_write_zarr_existing_path_raises_before_computing(tmp_path):
    X = features(100, 2)
    write_zarr(da.from_array(X, chunks=25), tmp_path / "x.zarr")
    computed = []

    def counting(b):
        if b.size:  # map_blocks calls it once on an empty array for the metadata
            computed.append(len(b))
        return b * 0

    x = da.from_array(X, chunks=25).map_blocks(counting, dtype=X.dtype)
    with pytest.raises(FileExistsError, match=r"x\.zarr already exists"):
        write_zarr(x, tmp_path / "x.zarr")
    assert computed == []
    assert listing(tmp_path) == ["x.zarr"]
    assert_array_equal(zarr.open_array(tmp_path / "x.zarr", mode="r")[:], X)


def test_write_zarr_overwrite_replaces(tmp_path):
    X = features(100, 2)
    write_zarr(da.from_array(X, chunks=25), tmp_path / "x.zarr")
    write_zarr(
        da.from_array(X[:40] * 2, chunks=10), tmp_path / "x.zarr", overwrite=True
    )
    z = zarr.open_array(tmp_path / "x.zarr", mode="r")
    assert z.shape == (40, 2)
    assert z.chunks == (10, 2)
    assert_array_equal(z[:], X[:40] * 2)
    assert listing(tmp_path) == ["x.zarr"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_write_zarr_failure_leaves_nothing_behind(tmp_path, overwrite):
    out = tmp_path / "out"
    out.mkdir()
    X = features(100, 2)
    if overwrite:
        write_zarr(da.from_array(X, chunks=25), out / "x.zarr")
    x = da.from_array(X, chunks=25).map_blocks(slow_failure(2), dtype=X.dtype)
    # The synchronous scheduler runs no task after the failure.
    with dask.config.set(scheduler="sync"):
        with pytest.raises(RuntimeError, match="block 2 failed"):
            write_zarr(x + 1, out / "x.zarr", overwrite=overwrite)
    if overwrite:  # the old output is untouched
        assert listing(out) == ["x.zarr"]
        assert_array_equal(zarr.open_array(out / "x.zarr", mode="r")[:], X)
    else:
        assert listing(out) == []


def test_write_zarr_failure_on_threads_leaves_no_temporary_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    X = features(100, 2)
    x = da.from_array(X, chunks=25).map_blocks(slow_failure(0, 0.3), dtype=X.dtype)
    with dask.config.set(scheduler="threads", num_workers=4):
        with pytest.raises(RuntimeError, match="block 0 failed"):
            write_zarr(x, out / "x.zarr")
    time.sleep(1.0)  # the three other tasks finish their block and store it
    assert listing(out) == []


def test_write_zarr_with_irregular_feature_chunks_round_trips(tmp_path):
    X = features(20_000, 5) + 10.0  # no zero anywhere
    x = da.from_array(X, chunks=(100, (2, 1, 2)))
    with dask.config.set(scheduler="threads", num_workers=4):
        path = write_zarr(x, tmp_path / "x.zarr")
    assert_array_equal(zarr.open_array(path, mode="r")[:], X)


###############################################################################
# Sinks: Parquet


@pytest.fixture
def predictions_source(fit_data, tmp_path):
    """A Parquet dataset with features p, q, r and an id column in random order."""
    frame = pd.DataFrame(fit_data, columns=["p", "q", "r"])
    frame.insert(0, "id", np.random.default_rng(13).permutation(6000) * 7 + 5)
    path = tmp_path / "in.parquet"
    frame.to_parquet(path, row_group_size=1000)
    return os.fspath(path), frame


@pytest.mark.parametrize("filters", [None, [("q", "<", 2.0)]])
def test_write_parquet_predictions_beside_ids(predictions_source, tmp_path, filters):
    path, frame = predictions_source
    gm = fit(frame[["p", "q", "r"]].to_numpy())
    source = ParquetSource(path, ["p", "q", "r"], filters=filters, rows_per_chunk=400)
    X = source.features()
    out = write_parquet(
        {
            "id": source.column("id"),
            "label": gm.predict(X),
            "proba": gm.predict_proba(X),
            "logdens": gm.score_samples(X),
        },
        tmp_path / "out",
    )
    # pyarrow skips files starting with "." (the marker overwrite looks for).
    assert sorted(os.listdir(out)) == [".daskgmm"] + [
        f"part.{i:05d}.parquet" for i in range(18)
    ]
    back = pd.read_parquet(out)
    assert list(back.columns) == [
        "id",
        "label",
        "proba_0",
        "proba_1",
        "proba_2",
        "logdens",
    ]
    kept = frame if filters is None else frame[frame["q"] < 2.0]
    assert len(back) == len(kept) > 1000
    assert_array_equal(back["id"].to_numpy(), kept["id"].to_numpy())
    rows = kept[["p", "q", "r"]].to_numpy()
    assert_array_equal(back["label"].to_numpy(), gm.predict(rows))
    proba = back[["proba_0", "proba_1", "proba_2"]].to_numpy()
    assert_allclose(proba, gm.predict_proba(rows), rtol=1e-12, atol=1e-15)
    assert_allclose(back["logdens"].to_numpy(), gm.score_samples(rows), rtol=1e-12)
    assert len(np.unique(back["label"])) == (3 if filters is None else 2)


def test_write_parquet_mismatched_row_blocks_raise(tmp_path):
    a = da.arange(100, chunks=25)
    b = da.arange(100, chunks=50)
    with pytest.raises(
        ValueError,
        match=r"columns written together must have the same row blocks; "
        r"got \{'a': 4, 'b': 2\}",
    ):
        write_parquet({"a": a, "b": b}, tmp_path / "out")
    assert listing(tmp_path) == []


def test_write_parquet_failure_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    x = da.arange(100.0, chunks=25).map_blocks(slow_failure(3), dtype=float)
    with dask.config.set(scheduler="sync"):
        with pytest.raises(RuntimeError, match="block 3 failed"):
            write_parquet({"x": x, "i": da.arange(100, chunks=25)}, out / "p")
    assert listing(out) == []


def test_write_parquet_existing_path_raises(tmp_path):
    columns = {"v": da.arange(10, chunks=5)}
    write_parquet(columns, tmp_path / "p")
    with pytest.raises(FileExistsError, match="already exists"):
        write_parquet(columns, tmp_path / "p")
    write_parquet({"v": da.arange(10, 20, chunks=5)}, tmp_path / "p", overwrite=True)
    assert pd.read_parquet(tmp_path / "p")["v"].tolist() == list(range(10, 20))
    assert listing(tmp_path) == ["p"]


###############################################################################
# Sinks: label images


@pytest.mark.parametrize(
    "n_labels, dtype",
    [
        (1, np.uint8),
        (256, np.uint8),
        (257, np.uint16),
        (65536, np.uint16),
        (65537, np.uint32),
    ],
)
def test_label_dtype_boundaries(n_labels, dtype):
    assert label_dtype(n_labels) == np.dtype(dtype)
    assert np.iinfo(dtype).max >= n_labels - 1


def test_write_label_image_of_a_fitted_image(tmp_path):
    rng = np.random.default_rng(14)
    region = np.zeros((106, 40), dtype=int)
    region[40:, :20] = 1
    region[70:, 25:] = 2
    colors = np.array([[5000, 9000, 6000], [30000, 5000, 40000], [60000, 50000, 5000]])
    img = (colors[region] + rng.normal(0, 800, (106, 40, 3))).astype(np.uint16)
    assert np.abs(img - colors[region]).max() < 4000  # no wrap-around
    tifffile.imwrite(tmp_path / "scene.tif", img, tile=(32, 32), photometric="rgb")
    image = read_image(tmp_path / "scene.tif", strip_bytes=1)
    pixels = image_to_pixels(image)
    flat = img.reshape(-1, 3).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", daskgmm.ConvergenceWarning)
        gm = GaussianMixture(
            3,
            means_init=colors,
            precisions_init=np.tile(np.eye(3) / 800.0**2, (3, 1, 1)),
            weights_init=np.full(3, 1 / 3),
            max_iter=2,
        ).fit(flat)
    path = write_label_image(
        gm.predict(pixels), 106, 40, tmp_path / "labels.zarr", n_labels=3
    )
    z = zarr.open_array(path, mode="r")
    assert z.shape == (106, 40)
    assert z.dtype == np.uint8
    assert z.chunks == (32, 40)  # the TIFF strips
    expected = gm.predict(flat).reshape(106, 40)
    assert_array_equal(z[:], expected)
    assert_array_equal(z[:], region)  # and the fit found the regions


def test_write_label_image_with_more_than_256_labels(tmp_path):
    height, width = 30, 9
    labels = (da.arange(height * width, chunks=width * 8) * 7) % 300
    path = write_label_image(
        labels, height, width, tmp_path / "labels.zarr", n_labels=300, attrs={"k": 300}
    )
    z = zarr.open_array(path, mode="r")
    assert z.dtype == np.uint16
    assert z.chunks == (8, width)
    assert z.attrs["k"] == 300
    expected = ((np.arange(height * width) * 7) % 300).reshape(height, width)
    assert expected.max() == 299
    assert_array_equal(z[:], expected)


###############################################################################
# atomic_path


def test_atomic_path_renames_on_success(tmp_path):
    final = tmp_path / "result.txt"
    with atomic_path(final) as tmp:
        assert os.path.dirname(tmp) == os.fspath(tmp_path)
        assert os.path.basename(tmp).startswith(".result.txt.tmp-")
        assert not final.exists()
        with open(tmp, "w") as f:
            f.write("done")
    assert final.read_text() == "done"
    assert listing(tmp_path) == ["result.txt"]


def test_atomic_path_removes_the_temporary_on_error(tmp_path):
    with pytest.raises(KeyError, match="inside"):
        with atomic_path(tmp_path / "result") as tmp:
            os.makedirs(os.path.join(tmp, "a", "b"))
            raise KeyError("inside")
    assert listing(tmp_path) == []


def test_atomic_path_existing_destination(tmp_path):
    (tmp_path / "result").mkdir()
    (tmp_path / "result" / "old").write_text("old")
    entered = []
    with pytest.raises(FileExistsError, match="result already exists"):
        with atomic_path(tmp_path / "result"):
            entered.append(True)
    assert entered == []
    # overwrite replaces only a directory daskgmm wrote (it holds the marker).
    with (
        pytest.raises(FileExistsError, match="result exists and was not written by"),
        atomic_path(tmp_path / "result", overwrite=True),
    ):
        entered.append(True)
    assert entered == []
    assert listing(tmp_path / "result") == ["old"]
    (tmp_path / "result" / ".daskgmm").write_text("")
    with atomic_path(tmp_path / "result", overwrite=True) as tmp:
        os.makedirs(tmp)
        with open(os.path.join(tmp, "new"), "w") as f:
            f.write("new")
    assert listing(tmp_path / "result") == [".daskgmm", "new"]
    assert listing(tmp_path) == ["result"]


def test_fast_compression_stores_floats_raw_and_labels_with_lz4(tmp_path):
    rng = np.random.default_rng(0)
    X = da.from_array(rng.normal(size=(10_000, 3)), chunks=(4096, 3))
    y = da.from_array(rng.integers(0, 8, size=10_000).astype(np.uint8), chunks=4096)
    path = write_zarr({"X": X, "y": y}, tmp_path / "fast.zarr", compressors="fast")
    group = zarr.open_group(path, mode="r")
    assert group["X"].compressors == ()
    (codec,) = group["y"].compressors
    assert type(codec).__name__ == "BloscCodec"
    assert codec.cname.value == "lz4" and codec.clevel == 1
    np.testing.assert_array_equal(group["X"][:], X.compute())
    np.testing.assert_array_equal(group["y"][:], y.compute())
    default = zarr.open_group(write_zarr({"X": X}, tmp_path / "default.zarr"), mode="r")
    assert type(default["X"].compressors[0]).__name__ == "ZstdCodec"
