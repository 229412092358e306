"""Helpers shared by the test modules: the ``daskgmm`` command, local clusters bound
to 127.0.0.1, fit comparisons and small data makers.

Import them as ``from tests.conftest import ...``.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.testing import assert_allclose

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
DASK = Path(sys.executable).with_name("dask")

FITTED_ARRAYS = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
)

# GaussianMixture's constructor defaults that scikit-learn has too.
SKLEARN_DEFAULTS = {
    "n_components": 1,
    "covariance_type": "full",
    "tol": 1e-3,
    "reg_covar": 1e-6,
    "max_iter": 100,
    "n_init": 1,
    "init_params": "kmeans",
    "weights_init": None,
    "means_init": None,
    "precisions_init": None,
    "random_state": None,
    "warm_start": False,
}


###############################################################################
# The command line


def daskgmm_cmd(
    *args: str, cwd: Path | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    """Run ``python -m daskgmm.cli ...`` (what the ``daskgmm`` script calls)."""
    return subprocess.run(
        [sys.executable, "-m", "daskgmm.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def run_args(
    config: str | Path, out: Path, *settings: str, workers: int = 1, quiet: bool = True
) -> list[str]:
    """The arguments of ``daskgmm run CONFIG --set SETTING ... [--quiet]``: ``config``
    a path, or the name of a bundled ``configs/NAME.yaml``; the ``settings`` are
    followed by ``output.directory=OUT`` and ``cluster.n_workers=WORKERS``."""
    if isinstance(config, str):
        config = REPO / "configs" / f"{config}.yaml"
    tail = (f"output.directory={out}", f"cluster.n_workers={workers}")
    args = ["run", str(config)]
    for setting in (*settings, *tail):
        args += ["--set", setting]
    return [*args, "--quiet"] if quiet else args


def run_job(
    directory: Path, text: str, *, timeout: float = 180
) -> subprocess.CompletedProcess:
    """Write the job ``text`` to ``DIRECTORY/job.yaml`` and ``daskgmm run`` it
    (``--quiet``)."""
    job = directory / "job.yaml"
    job.write_text(text)
    return daskgmm_cmd("run", str(job), "--quiet", timeout=timeout)


###############################################################################
# Local clusters and processes


@contextlib.contextmanager
def local_client(
    n_workers: int = 2, *, processes: bool = False, **kwargs: Any
) -> Iterator[Any]:
    """A ``Client`` of a LocalCluster bound to 127.0.0.1 (no dashboard), both closed
    on exit. ``processes=False`` asks for TCP: the default inproc:// protocol rejects
    ``host="127.0.0.1"``."""
    from distributed import Client, LocalCluster

    kwargs.setdefault("threads_per_worker", 1)
    if not processes:
        kwargs.setdefault("protocol", "tcp")
    with (
        LocalCluster(
            n_workers=n_workers,
            processes=processes,
            host="127.0.0.1",
            dashboard_address=None,
            **kwargs,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def quiet_process_client(n_workers: int = 2, **kwargs: Any):
    """:func:`local_client` with worker processes and their logs silenced."""
    return local_client(n_workers, processes=True, silence_logs=logging.ERROR, **kwargs)


def start_dask(*args: str, log: Path) -> subprocess.Popen:
    """Start ``dask ARGS`` (a scheduler or a worker), its output to ``log``."""
    return subprocess.Popen(
        [str(DASK), *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def stop_processes(procs: Sequence[subprocess.Popen]) -> None:
    """Terminate the processes (the last started first), killing any that hang."""
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


###############################################################################
# Comparing fits


def assert_parameters_close(
    got: Any,
    want: Any,
    *,
    rtol: float,
    atol: float = 0.0,
    atol_scale: float | None = None,
) -> None:
    """Every fitted array of ``got`` of ``want``'s shape and close to it; ``atol_scale``
    scales the absolute tolerance by the largest magnitude of each reference array."""
    for name in FITTED_ARRAYS:
        value, ref = getattr(got, name), getattr(want, name)
        assert np.shape(value) == np.shape(ref), name
        assert_allclose(
            value,
            ref,
            rtol=rtol,
            atol=atol if atol_scale is None else atol_scale * np.abs(ref).max(),
            err_msg=name,
        )


def assert_same_fit(
    got: Any,
    want: Any,
    *,
    rtol: float,
    params_rtol: float | None = None,
    params_atol: float | None = None,
    atol_scale: float | None = None,
    history: bool = False,
) -> None:
    """The same EM path: iterations, convergence, lower bound(s) to ``rtol`` and the
    fitted arrays to ``params_rtol``/``params_atol`` (both ``rtol`` by default)."""
    assert got.n_iter_ == want.n_iter_
    assert got.converged_ == want.converged_
    assert_allclose(got.lower_bound_, want.lower_bound_, rtol=rtol, atol=0)
    if history:
        assert_allclose(got.lower_bounds_, want.lower_bounds_, rtol=rtol, atol=0)
    assert_parameters_close(
        got,
        want,
        rtol=rtol if params_rtol is None else params_rtol,
        atol=rtol if params_atol is None else params_atol,
        atol_scale=atol_scale,
    )


###############################################################################
# Data


def full_covariances(cov: np.ndarray, ctype: str, k: int, d: int) -> np.ndarray:
    """The (K, d, d) covariance matrices a covariance of any type stands for."""
    if ctype == "full":
        return cov
    if ctype == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if ctype == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([c * np.eye(d) for c in cov])


def stacked_blobs(
    centers: Any, scales: Any, n_per: int | Sequence[int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs ``randn * scale + center`` stacked, and their labels."""
    rng = np.random.RandomState(seed)
    centers = np.asarray(centers, dtype=np.float64)
    sizes = np.broadcast_to(n_per, len(centers))
    scales = np.broadcast_to(scales, len(centers))
    X = np.vstack(
        [
            rng.randn(n, centers.shape[1]) * s + c
            for c, s, n in zip(centers, scales, sizes, strict=True)
        ]
    )
    return X, np.repeat(np.arange(len(centers)), sizes)


def four_blobs(n_per: int = 800, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four 3-D blobs of different spreads (the true number of components is 4)."""
    centers = [[0.0, 0.0, 0.0], [8.0, 0.0, 1.0], [0.0, 8.0, -1.0], [8, 8, 8]]
    return stacked_blobs(centers, [0.5, 1.0, 0.8, 1.2], n_per, seed)


def make_mixture(
    rng: np.random.RandomState, k: int, d: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a random full-covariance mixture: (X, weights, means, covariances)."""
    weights = rng.dirichlet(np.ones(k) * 3)
    means = rng.randn(k, d) * 3
    A = rng.randn(k, d, d) * 0.4
    covariances = A @ np.transpose(A, (0, 2, 1)) + 0.5 * np.eye(d)
    labels = rng.choice(k, size=n, p=weights)
    z = rng.randn(n, d)
    chol = np.linalg.cholesky(covariances)[labels]
    X = means[labels] + np.einsum("nij,nj->ni", chol, z)
    return X, weights, means, covariances
