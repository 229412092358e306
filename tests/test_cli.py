"""The ``daskgmm`` command run in a subprocess: exit codes, messages, outputs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import daskgmm
from daskgmm.cli import summary_lines
from tests.conftest import DEMO, REPO, daskgmm_cmd, run_args


def test_version():
    result = daskgmm_cmd("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"daskgmm {daskgmm.__version__}"


def test_validate_demo_config():
    result = daskgmm_cmd("validate", str(DEMO))
    assert result.returncode == 0, result.stderr
    assert "valid cluster job" in result.stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    result = daskgmm_cmd(
        "run",
        str(DEMO),
        "--set",
        "data.synthetic.n_samples=40000",
        "--set",
        "data.rows_per_chunk=10000",
        "--set",
        f"output.directory={out}",
        "--set",
        "cluster.n_workers=2",
        "--json",
        cwd=tmp_path_factory.mktemp("elsewhere"),
    )
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout), result.stderr


def test_demo_job_writes_model_predictions_and_metrics(demo_run):
    out, result, log = demo_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 40_000
    assert metrics["n_components"] == 5
    assert metrics["converged"] is True
    assert result["bic"] == pytest.approx(metrics["bic"])
    labels = zarr.open_group(str(out / "predictions.zarr"), mode="r")["label"][:]
    assert labels.shape == (40_000,)
    # The saved model predicts the same labels on the same (regenerated) data.
    from daskgmm.datasets import make_gmm

    X, _, _ = make_gmm(40_000, 3, 5, chunks=10_000, random_state=0)
    model = daskgmm.load(str(out / "model"))
    np.testing.assert_array_equal(model.predict(X.compute()), labels)
    # Log lines per iteration went to stderr.
    assert " iteration 1  mean log-likelihood " in log
    assert f" iteration {result['n_iter']}  mean log-likelihood " in log
    assert not any(p.name.startswith(".out.tmp") for p in out.parent.iterdir())


def test_metrics_split_the_fit_time_into_setup_and_em(demo_run):
    out, _, _ = demo_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["setup_seconds"] + metrics["em_seconds"] == pytest.approx(
        metrics["fit_seconds"]
    )
    # n_init is 1: one EM pass per iteration.
    assert metrics["seconds_per_iteration"] == pytest.approx(
        metrics["em_seconds"] / metrics["n_iter"]
    )
    assert 0 <= metrics["compile_seconds"] <= metrics["setup_seconds"]


def test_run_prints_a_short_summary_not_the_metrics(demo_run):
    out, result, _ = demo_run
    lines = summary_lines(result, str(out))
    assert lines[0] == (
        f"fitted 5 components (full) to 40,000 rows x 3 features: "
        f"{result['n_iter']} EM iterations, converged"
    )
    assert lines[1].startswith(f"lower bound {result['lower_bound']:.6g}, BIC ")
    number = r"[0-9.]+(e-?[0-9]+)?"
    assert re.fullmatch(
        rf"time: {number} s: setup {number} s( \(compiling the kernels {number} s\))?"
        rf", EM {number} s \({number} s per iteration\)",
        lines[2],
    ), lines[2]
    assert f"output: {out}" in lines
    assert lines[-1] == f"every figure: {out}/metrics.json (or --json)"
    assert len(lines) <= 12


def test_info_describes_the_saved_model(demo_run):
    out, _, _ = demo_run
    result = daskgmm_cmd("info", str(out / "model"))
    assert result.returncode == 0, result.stderr
    meta = json.loads(result.stdout)
    assert meta["params"]["n_components"] == 5


def test_predict_writes_labels_for_new_data(demo_run, tmp_path):
    out, _, _ = demo_run
    X = np.random.default_rng(0).normal(size=(500, 3))
    np.save(tmp_path / "x.npy", X)
    result = daskgmm_cmd(
        "predict",
        str(out / "model"),
        str(tmp_path / "x.npy"),
        "--out",
        str(tmp_path / "p.zarr"),
    )
    assert result.returncode == 0, result.stderr
    labels = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["label"][:]
    np.testing.assert_array_equal(labels, daskgmm.load(str(out / "model")).predict(X))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


GOOD = """
data: {source: synthetic}
output: {directory: out}
"""


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (
            GOOD + "model: {bogus: 1}\n",
            [],
            "model.bogus: unknown key (not allowed here)",
        ),
        (
            GOOD,
            ["model.n_components=0"],
            "model.n_components: Input should be greater than 0",
        ),
        (
            GOOD,
            ["model.covariance_type=ful"],
            "model.covariance_type: Input should be 'full', 'tied', 'diag' or 'spherical'",
        ),
        ("output: {directory: out}\n", [], "data: required key missing"),
        (
            GOOD,
            ["cluster.address=localhost:8786"],
            "cluster.address: Value error, the address must start with tcp:// or tls://",
        ),
        (
            GOOD,
            ["model.n_components"],
            "--set 'model.n_components': expected key.path=value",
        ),
        ("data: [1, 2\n", [], "not valid YAML (line 2)"),
    ],
)
def test_bad_config_exits_2_with_the_field_path(tmp_path, text, overrides, message):
    path = _write(tmp_path, text)
    args = ["run", str(path)]
    for item in overrides:
        args += ["--set", item]
    result = daskgmm_cmd(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_config_file_exits_2(tmp_path):
    result = daskgmm_cmd("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "config file not found" in result.stderr


def test_missing_data_file_exits_1_without_output(tmp_path):
    path = _write(
        tmp_path, "data: {source: zarr, path: missing.zarr}\noutput: {directory: out}\n"
    )
    result = daskgmm_cmd("run", str(path))
    assert result.returncode == 1
    assert f"data.path: not found: {tmp_path / 'missing.zarr'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_unreachable_scheduler_exits_1_quickly_without_output(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    path = _write(tmp_path, GOOD)
    result = daskgmm_cmd(
        "run",
        str(path),
        "--set",
        f"cluster.address=tcp://127.0.0.1:{port}",
        "--set",
        "cluster.timeout=2",
        timeout=60,
    )
    assert result.returncode == 1
    assert (
        f"cannot reach the dask scheduler at tcp://127.0.0.1:{port} within 2 s"
        in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_existing_output_exits_2_unless_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    path = _write(tmp_path, GOOD)
    result = daskgmm_cmd("run", str(path))
    assert result.returncode == 2
    assert "already exists; remove it or set output.overwrite: true" in result.stderr
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_debug_shows_the_traceback(tmp_path):
    path = _write(
        tmp_path, "data: {source: zarr, path: missing.zarr}\noutput: {directory: out}\n"
    )
    result = daskgmm_cmd("--debug", "run", str(path))
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert os.path.basename(str(path))  # the run failed before writing anything
    assert not (tmp_path / "out").exists()


def _example_data(kind: str, folder: Path) -> Path:
    from PIL import Image

    from daskgmm.datasets import write_gmm

    if kind == "parquet":
        path = folder / "table.parquet"
        write_gmm(str(path), 20_000, 4, 6, format="parquet", chunks=5_000)
    elif kind == "zarr":
        path = folder / "features.zarr"
        write_gmm(str(path), 20_000, 8, 8, chunks=5_000)
    else:
        path = folder / "photo.png"
        rng = np.random.default_rng(0)
        colours = rng.integers(0, 256, size=(5, 3))
        regions = np.repeat(np.arange(5), 16)[None, :].repeat(60, axis=0)
        pixels = colours[regions] + rng.normal(scale=4, size=(60, 80, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("kind", ["parquet", "zarr", "image"])
def test_example_configs_run_at_small_size(tmp_path, kind):
    data = _example_data(kind, tmp_path)
    out = tmp_path / "out"
    result = daskgmm_cmd(*run_args(kind, out, f"data.path={data}"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    expected_rows = {"parquet": 20_000, "zarr": 20_000, "image": 60 * 80}[kind]
    assert metrics["n_samples"] == expected_rows
    if kind == "parquet":
        import pandas as pd

        table = pd.read_parquet(out / "predictions.parquet")
        source = pd.read_parquet(data)
        kept = source[source["x_0"] > -50]
        assert len(table) == len(kept)
        assert {"proba_0", "log_density"} <= set(table.columns)
        # The carried-through ids line up row for row with the input rows, and the
        # labels are the saved model's predictions for those rows.
        np.testing.assert_array_equal(table["row_id"], kept["row_id"])
        model = daskgmm.load(str(out / "model"))
        features = kept[[f"x_{i}" for i in range(4)]]
        np.testing.assert_array_equal(table["label"], model.predict(features))


def test_progress_bar_on_a_terminal(tmp_path):
    """On a terminal the job shows a tqdm bar of EM iterations (any scheduler)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    args = [
        sys.executable,
        "-m",
        "daskgmm.cli",
        "run",
        str(DEMO),
        "--set",
        "data.synthetic.n_samples=20000",
        "--set",
        "model.tol=0",
        "--set",
        "model.max_iter=3",
        "--set",
        "output.report=false",
        "--set",
        f"output.directory={tmp_path / 'out'}",
        "--set",
        "cluster.n_workers=1",
    ]
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode("utf8", "replace")
    assert "EM: 100%" in text
    assert "3/3" in text
    assert "loglik=" in text
    assert "ConvergenceWarning: Best performing initialization did not converge" in text


@pytest.mark.parametrize(
    "path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_example_config_validates(path):
    result = daskgmm_cmd("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: valid ")


def test_parquet_job_with_a_weight_column(tmp_path):
    import pandas as pd

    from daskgmm.io import ParquetSource

    data = _example_data("parquet", tmp_path)
    frame = pd.read_parquet(data)
    frame["w"] = np.random.default_rng(1).integers(0, 3, size=len(frame)).astype(float)
    frame.to_parquet(tmp_path / "weighted.parquet")
    job = _write(
        tmp_path,
        "data: {source: parquet, path: weighted.parquet, columns: [x_0, x_1, x_2, x_3], "
        "weight_column: w}\n"
        "model: {n_components: 6, random_state: 0}\n"
        "cluster: {n_workers: 1}\n"
        "output: {directory: out}\n",
    )
    result = daskgmm_cmd("run", str(job), "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["total_weight"] == pytest.approx(frame["w"].sum())
    assert metrics["n_samples"] == len(frame)
    source = ParquetSource(tmp_path / "weighted.parquet", [f"x_{i}" for i in range(4)])
    direct = daskgmm.GaussianMixture(6, random_state=0, verbose_interval=1).fit(
        source.features(), sample_weight=source.column("w")
    )
    saved = daskgmm.load(str(tmp_path / "out" / "model"))
    np.testing.assert_allclose(saved.lower_bound_, direct.lower_bound_, rtol=1e-12)
    np.testing.assert_allclose(saved.means_, direct.means_, rtol=1e-10)


def test_fast_zarr_compression_of_the_predictions(tmp_path):
    out = tmp_path / "out"
    result = daskgmm_cmd(
        "run",
        str(DEMO),
        "--set",
        "data.synthetic.n_samples=20000",
        "--set",
        f"output.directory={out}",
        "--set",
        "output.probabilities=true",
        "--set",
        "output.zarr_compression=fast",
        "--set",
        "output.report=false",
        "--set",
        "cluster.n_workers=1",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    # Without --json: the summary, whose last line points to the metrics.
    assert result.stdout.startswith("fitted 5 components (full) to 20,000 rows")
    assert result.stdout.splitlines()[-1].endswith("metrics.json (or --json)")
    group = zarr.open_group(str(out / "predictions.zarr"), mode="r")
    names = {name: type(c).__name__ for name in group for c in group[name].compressors}
    assert names == {"label": "BloscCodec"}, names
    assert group["proba"].compressors == ()
    assert group["label"].shape == (20000,)
