"""A job against a real ``dask scheduler`` and two ``dask worker`` processes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DASK, DEMO, daskgmm_cmd, start_dask, stop_processes


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    if not DASK.exists():
        pytest.skip("the dask command is not installed beside this Python")
    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    procs = [
        start_dask(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
            log=folder / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the dask scheduler did not start")
            time.sleep(0.2)
        for i in range(2):
            procs.append(
                start_dask(
                    "worker",
                    "--scheduler-file",
                    str(scheduler_file),
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--no-nanny",
                    log=folder / f"worker{i}.log",
                )
            )
        info = json.loads(scheduler_file.read_text())
        yield {"address": info["address"], "scheduler_file": str(scheduler_file)}
    finally:
        stop_processes(procs)


def _wait_for_workers(address: str, n: int) -> None:
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(n, timeout=60)


@pytest.mark.parametrize("how", ["address", "scheduler_file"])
def test_demo_job_on_a_real_scheduler(scheduler, tmp_path, how):
    _wait_for_workers(scheduler["address"], 2)
    out = tmp_path / "out"
    result = daskgmm_cmd(
        "run",
        str(DEMO),
        "--set",
        "data.synthetic.n_samples=30000",
        "--set",
        "data.rows_per_chunk=5000",
        "--set",
        f"output.directory={out}",
        "--set",
        f"cluster.{how}={scheduler[how]}",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 30_000
    assert metrics["converged"] is True
    assert f"connected to {scheduler[how]}" in result.stderr


def test_remote_cluster_example_config(scheduler, tmp_path):
    _wait_for_workers(scheduler["address"], 2)
    out = tmp_path / "out"
    result = daskgmm_cmd(
        "run",
        str(DEMO.with_name("remote-cluster.yaml")),
        "--set",
        "data.synthetic.n_samples=20000",
        "--set",
        f"output.directory={out}",
        "--set",
        f"cluster.address={scheduler['address']}",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "metrics.json").read_text())["n_samples"] == 20_000


def _make_certs(folder: Path) -> dict[str, str]:
    """A throw-away CA and one certificate it signs (server and client)."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=daskgmm-test-ca", "-keyout", "ca.key", "-out", "ca.pem",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "node.key", "-out", "node.csr",
    )  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "node.pem",
    )  # fmt: skip
    return {
        k: str(folder / v)
        for k, v in (("ca", "ca.pem"), ("cert", "node.pem"), ("key", "node.key"))
    }


def test_job_on_a_tls_scheduler_with_certificates_from_the_config(tmp_path):
    if not DASK.exists():
        pytest.skip("the dask command is not installed beside this Python")
    certs = _make_certs(tmp_path)
    tls = [
        "--tls-ca-file",
        certs["ca"],
        "--tls-cert",
        certs["cert"],
        "--tls-key",
        certs["key"],
    ]
    scheduler_file = tmp_path / "scheduler.json"
    procs = [
        start_dask(
            "scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0",
            "--no-dashboard", "--scheduler-file", str(scheduler_file), *tls,
            log=tmp_path / "scheduler.log",
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, "the TLS scheduler did not start"
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tls://")
        procs.append(
            start_dask(
                "worker", address, "--nthreads", "1", "--no-dashboard", "--no-nanny",
                "--host", "127.0.0.1", *tls, log=tmp_path / "worker.log",
            )
        )  # fmt: skip
        job = tmp_path / "job.yaml"
        job.write_text(
            "data: {source: synthetic, synthetic: {n_samples: 20000, n_features: 2, "
            "n_components: 3}}\n"
            "model: {n_components: 3}\n"
            f"cluster: {{address: '{address}', timeout: 20, tls: {{ca_file: ca.pem, "
            "cert: node.pem, key: node.key}}\n"
            "output: {directory: out}\n"
        )
        result = daskgmm_cmd("run", str(job))
        assert result.returncode == 0, result.stderr
        assert (
            json.loads((tmp_path / "out" / "metrics.json").read_text())["n_samples"]
            == 20_000
        )
        # Without the certificates the same scheduler is refused.
        plain = tmp_path / "plain.yaml"
        plain.write_text(
            job.read_text()
            .replace(
                "tls: {ca_file: ca.pem, cert: node.pem, key: node.key}", "tls: null"
            )
            .replace("timeout: 20", "timeout: 3")
            .replace("out}", "out2}")
        )
        result = daskgmm_cmd("run", str(plain))
        assert result.returncode == 2
        assert (
            "cluster: Value error, a tls:// address needs the tls certificates"
            in result.stderr
        )
        assert not (tmp_path / "out2").exists()
    finally:
        stop_processes(procs)


@pytest.mark.parametrize(
    ("memory_limit", "n_workers", "kept"),
    [("4GiB", 2, True), ("1GiB", 2, False), ("256MiB", 1, False)],
)
def test_embedded_workers_keep_freed_memory_when_they_have_room(
    memory_limit, n_workers, kept
):
    from daskgmm.jobs import WORKER_TRIM_THRESHOLD, worker_allocator_settings

    settings = worker_allocator_settings(memory_limit, n_workers)
    key = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
    assert settings == ({key: str(WORKER_TRIM_THRESHOLD)} if kept else {})


def _trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_embedded_cluster_workers_get_the_trim_threshold():
    from daskgmm.config import ClusterConfig
    from daskgmm.jobs import WORKER_TRIM_THRESHOLD, connect

    cfg = ClusterConfig(n_workers=1, memory_limit="3GiB")
    with connect(cfg) as client:
        (value,) = client.run(_trim_threshold).values()
    assert value == str(WORKER_TRIM_THRESHOLD)


@pytest.mark.parametrize(
    "inherited, expected",
    [("65536", "WORKER"), ("12345", "12345")],
    ids=["left-by-an-earlier-nanny", "exported-by-the-user"],
)
def test_the_trim_threshold_survives_an_earlier_cluster(
    monkeypatch, inherited, expected
):
    # distributed's nanny writes MALLOC_TRIM_THRESHOLD_=65536 into this process's
    # environment for good, and the environment overrides the config: the embedded
    # cluster must still get its own value; a value the user exported is kept.
    from daskgmm.config import ClusterConfig
    from daskgmm.jobs import WORKER_TRIM_THRESHOLD, connect

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", inherited)
    cfg = ClusterConfig(n_workers=1, memory_limit="3GiB")
    with connect(cfg) as client:
        (value,) = client.run(_trim_threshold).values()
    assert value == (str(WORKER_TRIM_THRESHOLD) if expected == "WORKER" else expected)
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == inherited  # restored
