"""Never destroy the user's data, never trust a damaged model (docs/reliability.md)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from daskgmm import GaussianMixture, load
from daskgmm.io import atomic_path, check_output_apart

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daskgmm.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def _digest(path: Path) -> str:
    """SHA-256 of every file under ``path`` (names and bytes)."""
    out = hashlib.sha256()
    files = (
        [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    )
    for f in files:
        out.update(str(f.relative_to(path.parent)).encode())
        out.update(f.read_bytes())
    return out.hexdigest()


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A model, a Zarr store and a Parquet file of the same 500 x 2 rows."""
    X = np.random.default_rng(0).normal(size=(500, 2))
    GaussianMixture(2, random_state=0).fit(X).save(tmp_path / "model")
    store = zarr.open_array(
        str(tmp_path / "v.zarr"), mode="w", shape=X.shape, chunks=(100, 2), dtype="f8"
    )
    store[:] = X
    pd.DataFrame(X, columns=["a", "b"]).to_parquet(tmp_path / "v.parquet")
    return tmp_path


@pytest.mark.parametrize(
    ("data", "out", "message"),
    [
        ("v.zarr", "v.zarr", "the output v.zarr is the input DATA v.zarr"),
        ("v.parquet", "v.parquet", "the output v.parquet is the input DATA v.parquet"),
        ("v.zarr", "./v.zarr/", "the output ./v.zarr/ is the input DATA v.zarr"),
        ("v.zarr", "v.zarr/labels.zarr", "lies inside the input DATA v.zarr"),
        ("v.zarr", "model/labels.zarr", "lies inside the input MODEL model"),
        ("v.zarr", "link.zarr", "the output link.zarr is the input DATA v.zarr"),
    ],
    ids=["zarr", "parquet", "slashes", "inside-data", "inside-model", "symlink"],
)
def test_predict_never_writes_over_its_inputs(inputs, data, out, message):
    os.symlink(inputs / "v.zarr", inputs / "link.zarr")
    before = {name: _digest(inputs / name) for name in ("v.zarr", "v.parquet", "model")}
    result = _cli("predict", "model", data, "--out", out, "--overwrite", cwd=inputs)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert message in line
    assert line.endswith("choose an output path outside the inputs")
    after = {name: _digest(inputs / name) for name in before}
    assert after == before


def test_overwrite_replaces_only_what_daskgmm_wrote(inputs):
    mine = inputs / "mine.zarr"
    mine.mkdir()
    (mine / "precious.txt").write_text("not daskgmm's")
    result = _cli(
        "predict", "model", "v.zarr", "--out", "mine.zarr", "--overwrite", cwd=inputs
    )
    assert result.returncode == 2
    assert "exists and was not written by daskgmm (it has no .daskgmm file)" in (
        result.stderr
    )
    assert (mine / "precious.txt").read_text() == "not daskgmm's"
    # An earlier daskgmm output is replaced.
    assert (
        _cli("predict", "model", "v.zarr", "--out", "ok.zarr", cwd=inputs).returncode
        == 0
    )
    assert (inputs / "ok.zarr" / ".daskgmm").is_file()
    again = _cli(
        "predict", "model", "v.zarr", "--out", "ok.zarr", "--overwrite", cwd=inputs
    )
    assert again.returncode == 0, again.stderr
    labels = zarr.open_group(str(inputs / "ok.zarr"), mode="r")["label"][:]
    assert labels.shape == (500,)


def test_a_job_never_writes_over_its_data(inputs):
    job = inputs / "job.yaml"
    job.write_text(
        "data: {source: zarr, path: v.zarr}\n"
        "model: {n_components: 2, random_state: 0}\n"
        "cluster: {n_workers: 1}\n"
        "output: {directory: v.zarr, overwrite: true, report: false}\n"
    )
    before = _digest(inputs / "v.zarr")
    result = _cli("run", str(job), "--quiet", cwd=inputs)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "is the input data.path" in line
    assert _digest(inputs / "v.zarr") == before
    assert sorted(p.name for p in inputs.iterdir()) == [
        "job.yaml",
        "model",
        "v.parquet",
        "v.zarr",
    ]


def test_check_output_apart_on_resolved_paths(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    check_output_apart(tmp_path / "elsewhere", {"data": data})  # no error
    check_output_apart(tmp_path / "data2", {"data": data})  # a prefix is not a parent
    with pytest.raises(ValueError, match=r"contains the input data "):
        check_output_apart(tmp_path, {"data": data})
    with pytest.raises(ValueError, match=r"is the input data "):
        check_output_apart(tmp_path / "x" / ".." / "data", {"data": data})


def test_atomic_path_under_a_file_says_so(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with (
        pytest.raises(
            NotADirectoryError,
            match=r"a-file is a file, not a directory; choose another output path",
        ),
        atomic_path(tmp_path / "a-file" / "out"),
    ):
        pass


###############################################################################
# Damaged model files


def _damage(model: Path, **changes) -> None:
    """Rewrite arrays.npz with some arrays changed."""
    with np.load(model / "arrays.npz", allow_pickle=False) as npz:
        arrays = dict(npz)
    for name, change in changes.items():
        arrays[name] = change(arrays[name])
    os.remove(model / "arrays.npz")
    np.savez(model / "arrays.npz", **arrays)


def _flip_offdiagonal(cov: np.ndarray) -> np.ndarray:
    cov = cov.copy()
    cov[0, 0, 1] = cov[0, 1, 0] = 10 * np.sqrt(cov[0, 0, 0] * cov[0, 1, 1])
    return cov


DAMAGE = {
    "negative weight": (
        {"weights_": lambda w: np.array([-0.5, 1.5])},
        "weights_ has negative values (min -0.5)",
    ),
    "weights sum to 10": ({"weights_": lambda w: w * 10}, "weights_ sums to 10, not 1"),
    "NaN mean": (
        {
            "means_": lambda m: np.where(
                np.arange(m.size).reshape(m.shape) == 0, np.nan, m
            )
        },
        "means_ holds NaN or infinity",
    ),
    "covariance not positive definite": (
        {"covariances_": _flip_offdiagonal},
        "covariances_ is not positive definite",
    ),
    "precision factors of other covariances": (
        {"covariances_": lambda c: c * 4},
        "precisions_cholesky_ does not match covariances_",
    ),
    "precisions not matching": (
        {"precisions_": lambda p: p * 2},
        "precisions_ does not match precisions_cholesky_",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_model_is_refused_by_load_info_and_predict(inputs, case):
    changes, problem = DAMAGE[case]
    model = inputs / "model"
    _damage(model, **changes)
    npz = str(model / "arrays.npz")
    with pytest.raises(ValueError, match=re.escape(problem)) as info:
        load(model)
    assert str(info.value).startswith(f"{npz}: {problem}")
    assert str(info.value).endswith("the model file is corrupt")
    for args in (("info", "model"), ("predict", "model", "v.zarr", "--out", "o.zarr")):
        result = _cli(*args, cwd=inputs)
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert f"{npz}: {problem}" in line
    assert not (inputs / "o.zarr").exists()


def test_an_intact_model_passes_the_checks_in_float32(tmp_path):
    X = np.random.default_rng(1).normal(size=(400, 3)).astype(np.float32)
    for ctype in ("full", "tied", "diag", "spherical"):
        path = tmp_path / ctype
        GaussianMixture(3, covariance_type=ctype, random_state=0).fit(X).save(path)
        assert load(path).means_.dtype == np.float32
        meta = json.loads((path / "model.json").read_text())
        assert meta["data"]["dtype"] == "float32"


###############################################################################
# Precise messages


def test_an_all_null_column_is_reported_as_missing_values_not_weights(tmp_path):
    frame = pd.DataFrame({"a": np.arange(200.0), "b": [None] * 200}, dtype="float64")
    frame.to_parquet(tmp_path / "t.parquet")
    from daskgmm.io import ParquetSource

    X = ParquetSource(tmp_path / "t.parquet", ["a", "b"]).features()
    with pytest.raises(ValueError) as info:
        GaussianMixture(2, random_state=0).fit(X)
    message = str(info.value)
    assert message.startswith(
        "Input X contains NaN or infinity (or values too large for float64) in 200 "
        "row(s)"
    )
    assert "sample_weight" not in message


def test_npy_path_that_is_not_a_file_says_what_it_is(tmp_path):
    from daskgmm.io import read_npy

    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(ValueError, match=r"dir\.npy is not a regular file"):
        read_npy(tmp_path / "dir.npy")


def test_a_failed_write_in_an_unwritable_folder_raises_the_real_error(
    tmp_path, monkeypatch
):
    from daskgmm.io import _sinks

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    with pytest.raises(RuntimeError, match="the real error"):
        with atomic_path(tmp_path / "out") as tmp:
            os.makedirs(tmp)
            monkeypatch.setattr(_sinks, "open", refuse, raising=False)
            raise RuntimeError("the real error")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_filter_on_a_missing_column_is_a_configuration_error(inputs):
    job = inputs / "job.yaml"
    job.write_text(
        "data: {source: parquet, path: v.parquet, filters: [[zz, '>', 0]]}\n"
        "model: {n_components: 2}\n"
        "cluster: {n_workers: 1}\n"
        "output: {directory: out, report: false}\n"
    )
    result = _cli("run", str(job), "--quiet", cwd=inputs)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"daskgmm: error: data.filters[0]: {inputs / 'v.parquet'} has no column 'zz' "
        "to filter on; its columns are ['a', 'b']"
    )
    assert not (inputs / "out").exists()


def test_a_job_on_a_store_with_a_missing_chunk_fails_unless_told_to_fill(inputs):
    os.remove(inputs / "v.zarr" / "c" / "2" / "0")  # rows 200-299
    job = inputs / "job.yaml"
    job.write_text(
        "data: {source: zarr, path: v.zarr}\n"
        "model: {n_components: 2, random_state: 0}\n"
        "cluster: {n_workers: 1}\n"
        "output: {directory: out, report: false}\n"
    )
    result = _cli("run", str(job), "--quiet", cwd=inputs)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert (
        f"Zarr array {inputs / 'v.zarr'} is missing 1 of 5 chunks (first: c/2/0)"
        in (line)
    )
    assert "(job: data.missing_chunks: fill)" in line
    assert not (inputs / "out").exists()
    filled = _cli(
        "run", str(job), "--quiet", "--set", "data.missing_chunks=fill", cwd=inputs
    )
    assert filled.returncode == 0, filled.stderr
    assert json.loads((inputs / "out" / "metrics.json").read_text())["n_samples"] == 500
