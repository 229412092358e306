"""A job against a real ``dask scheduler`` and two ``dask worker`` processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import DEMO, daskgmm_cmd

DASK = Path(sys.executable).with_name("dask")


def _start(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(DASK), *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    if not DASK.exists():
        pytest.skip("the dask command is not installed beside this Python")
    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    procs = [
        _start(
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
                _start(
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
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


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
