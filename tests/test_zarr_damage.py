"""Zarr stores with a chunk file missing or damaged: refused, naming store and chunk."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time
import zipfile

import dask
import numpy as np
import pytest
import zarr

import daskgmm
from daskgmm.io import read_image, read_zarr
from tests.conftest import local_client

FILL = -1.5
ROWS, COLS, CHUNK_ROWS, SHARD_ROWS = 1000, 3, 100, 400

# layout name -> (create_array keywords, the key of the stored object holding row 300)
LAYOUTS = {
    "v3": ({"zarr_format": 3}, "c/3/0"),
    "v2": ({"zarr_format": 2}, "3.0"),
    "v3-sharded": ({"zarr_format": 3, "shards": (SHARD_ROWS, COLS)}, "c/0/0"),
}
# Rows each layout's stored object covers, and how many objects there are.
SPAN = {"v3": (300, 400, 10), "v2": (300, 400, 10), "v3-sharded": (0, 400, 3)}


def _data() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(ROWS, COLS))


def _make(path, layout: str, store=None) -> np.ndarray:
    X = _data()
    kwargs, _ = LAYOUTS[layout]
    z = zarr.create_array(
        store if store is not None else path,
        shape=X.shape,
        chunks=(CHUNK_ROWS, COLS),
        dtype="f8",
        fill_value=FILL,
        **kwargs,
    )
    z[:] = X
    return X


def _missing_message(label: str, n: int, total: int, key: str) -> str:
    return re.escape(
        f"Zarr array {label} is missing {n} of {total} chunks (first: {key}); the data "
        f"would read as the fill value {FILL}. Rewrite the store, or pass "
        f"missing_chunks='fill' (job: data.missing_chunks: fill) to read them as {FILL}"
    )


def _damaged_message(label: str, key: str) -> str:
    return re.escape(f"cannot read chunk {key} of Zarr array {label}: ") + (
        r".*; the store is damaged \(rewrite it\)$"
    )


def _truncate(path) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_missing_chunk_is_an_error(tmp_path, layout):
    store = tmp_path / f"{layout}.zarr"
    X = _make(store, layout)
    key = LAYOUTS[layout][1]
    os.remove(store / key)
    start, stop, total = SPAN[layout]
    with pytest.raises(ValueError, match=_missing_message(str(store), 1, total, key)):
        read_zarr(store)

    filled = read_zarr(store, missing_chunks="fill").compute()
    assert np.all(filled[start:stop] == FILL)
    kept = np.ones(ROWS, dtype=bool)
    kept[start:stop] = False
    np.testing.assert_array_equal(filled[kept], X[kept])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_intact_store_reads(tmp_path, layout):
    store = tmp_path / f"{layout}.zarr"
    X = _make(store, layout)
    np.testing.assert_array_equal(read_zarr(store).compute(), X)


def test_missing_chunk_inside_a_group_names_the_array(tmp_path):
    store = tmp_path / "g.zarr"
    group = zarr.open_group(store, mode="w", zarr_format=3)
    X = _data()
    for name in ("X", "X2"):
        z = group.create_array(
            name, shape=X.shape, chunks=(CHUNK_ROWS, COLS), dtype="f8", fill_value=FILL
        )
        z[:] = X
    os.remove(store / "X2" / "c" / "5" / "0")
    # A sibling whose name starts with the array's is not counted as its chunks.
    np.testing.assert_array_equal(read_zarr(store, "X").compute(), X)
    with pytest.raises(
        ValueError, match=_missing_message(f"{store}/X2", 1, 10, "c/5/0")
    ):
        read_zarr(store, "X2")


def test_zip_store_missing_chunk(tmp_path):
    store = tmp_path / "d.zarr"
    _make(store, "v3")
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for root, _, files in os.walk(store):
            for name in files:
                full = os.path.join(root, name)
                rel = os.path.relpath(full, store).replace(os.sep, "/")
                if rel != "c/7/0":
                    zf.write(full, rel)
    with pytest.raises(
        ValueError, match=_missing_message(str(archive), 1, 10, "c/7/0")
    ):
        read_zarr(archive)
    filled = read_zarr(archive, missing_chunks="fill").compute()
    assert np.all(filled[700:800] == FILL)


def test_fsspec_url_missing_chunk():
    fsspec = pytest.importorskip("fsspec")
    url = "memory://daskgmm-damage/m.zarr"
    fs = fsspec.filesystem("memory")
    if fs.exists("/daskgmm-damage"):
        fs.rm("/daskgmm-damage", recursive=True)
    try:
        X = _make(None, "v3", store=url)
        np.testing.assert_array_equal(read_zarr(url).compute(), X)
        fs.rm("/daskgmm-damage/m.zarr/c/2/0")
        with pytest.raises(ValueError, match=_missing_message(url, 1, 10, "c/2/0")):
            read_zarr(url)
        filled = read_zarr(url, missing_chunks="fill").compute()
        assert np.all(filled[200:300] == FILL)
    finally:
        fs.rm("/daskgmm-damage", recursive=True)


def test_missing_chunks_value_is_checked(tmp_path):
    store = tmp_path / "d.zarr"
    _make(store, "v3")
    with pytest.raises(ValueError, match="missing_chunks must be 'error' or 'fill'"):
        read_zarr(store, missing_chunks="zero")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_damaged_chunk_names_store_and_chunk(tmp_path, layout):
    store = tmp_path / f"{layout}.zarr"
    _make(store, layout)
    key = LAYOUTS[layout][1]
    _truncate(store / key)
    X = read_zarr(store)  # opening lists keys only: the damage shows on reading
    with (
        dask.config.set(scheduler="threads"),
        pytest.raises(ValueError, match=_damaged_message(str(store), key)) as info,
    ):
        X.sum().compute()
    # One line, and picklable (distributed sends it back to the client).
    assert "\n" not in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is ValueError and str(again) == str(info.value)


def test_damaged_chunk_on_distributed(tmp_path):
    pytest.importorskip("distributed")
    store = tmp_path / "d.zarr"
    _make(store, "v3")
    _truncate(store / "c" / "3" / "0")
    # threads_per_worker=None: LocalCluster's default number of threads.
    with (
        local_client(1, threads_per_worker=None),
        pytest.raises(ValueError, match=_damaged_message(str(store), "c/3/0")),
    ):
        read_zarr(store).sum().compute()


def test_damaged_chunk_fails_a_fit(tmp_path):
    store = tmp_path / "d.zarr"
    _make(store, "v3-sharded")
    _truncate(store / "c" / "1" / "0")
    with pytest.raises(ValueError, match=_damaged_message(str(store), "c/1/0")):
        daskgmm.GaussianMixture(2, random_state=0).fit(read_zarr(store))


def test_zarr_image_missing_and_damaged_chunks(tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    for name in ("missing", "damaged"):
        z = zarr.create_array(
            tmp_path / f"{name}.zarr",
            shape=image.shape,
            chunks=(16, 48, 3),
            dtype="u1",
            fill_value=7,
        )
        z[:] = image
    os.remove(tmp_path / "missing.zarr" / "c" / "1" / "0" / "0")
    with pytest.raises(
        ValueError, match=re.escape("is missing 1 of 4 chunks (first: c/1/0/0)")
    ):
        read_image(tmp_path / "missing.zarr")
    filled = read_image(tmp_path / "missing.zarr", missing_chunks="fill").compute()
    assert np.all(filled[16:32] == 7)
    np.testing.assert_array_equal(filled[32:], image[32:])

    _truncate(tmp_path / "damaged.zarr" / "c" / "2" / "0" / "0")
    label = str(tmp_path / "damaged.zarr")
    with pytest.raises(ValueError, match=_damaged_message(label, "c/2/0/0")):
        read_image(tmp_path / "damaged.zarr", strip_bytes=16 * 48 * 3).compute()


def test_intact_store_of_a_million_rows_is_checked(tmp_path):
    store = tmp_path / "big.zarr"
    z = zarr.create_array(store, shape=(1_000_000, 4), chunks=(1_000, 4), dtype="f4")
    z[:] = np.ones((1_000_000, 4), dtype="f4")
    start = time.perf_counter()
    X = read_zarr(store)
    print(f"read_zarr of 1e6 rows in 1000 chunks: {time.perf_counter() - start:.3f} s")
    assert X.shape == (1_000_000, 4)


def test_cli_predict_on_a_damaged_store(tmp_path):
    model = tmp_path / "model"
    daskgmm.GaussianMixture(2, random_state=0).fit(_data()).save(model)
    store = tmp_path / "damaged.zarr"
    _make(store, "v3")
    _truncate(store / "c" / "3" / "0")
    out = tmp_path / "out.zarr"
    command = ["-m", "daskgmm.cli", "predict", str(model), str(store), "--out", out]
    done = subprocess.run(
        [sys.executable, *map(str, command)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(
        r"daskgmm: error: ValueError: " + _damaged_message(str(store), "c/3/0"),
        lines[0],
    ), lines[0]
    assert not out.exists()
