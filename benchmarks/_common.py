"""Helpers the benchmark scripts share; not a benchmark.

The scripts are run from the repository root as ``python benchmarks/NAME.py``, so
``benchmarks/`` is the first entry of ``sys.path`` and they import this module as
``import _common``. Only public API of ``daskgmm`` (and of dask, distributed) is used
here, as in the scripts.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

# Where the scripts keep the data they generate once (ignored by git).
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_data")

T = TypeVar("T")

# The data shapes (N x d) of bench_em.py and bench_kernel.py, and their K.
CASES = {
    "a": (2_000_000, 3),
    "b": (1_000_000, 16),
    "c": (200_000, 64),
}
N_COMPONENTS = 8


# ------------------------------------------------------------------ schedulers


@contextlib.contextmanager
def local_client(
    n_workers: int = 2, threads_per_worker: int = 1, **cluster_options: Any
) -> Iterator[Any]:
    """A ``distributed.Client`` on a ``LocalCluster`` bound to 127.0.0.1 (no
    dashboard); the client and the cluster are closed on leaving, also on an error.
    ``cluster_options`` go to ``LocalCluster`` (``memory_limit``, ``processes``...)."""
    from distributed import Client, LocalCluster

    options = {"host": "127.0.0.1", "dashboard_address": None, **cluster_options}
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(
            LocalCluster(
                n_workers=n_workers, threads_per_worker=threads_per_worker, **options
            )
        )
        yield stack.enter_context(Client(cluster))


@contextlib.contextmanager
def threads() -> Iterator[None]:
    """Dask's threaded scheduler (all cores) inside the block."""
    import dask

    with dask.config.set(scheduler="threads"):
        yield


# ------------------------------------------------------------------ timing


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall seconds of ``fn()`` and what it returned."""
    tic = time.perf_counter()
    out = fn()
    return time.perf_counter() - tic, out


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn()``."""
    return statistics.median(timed(fn)[0] for _ in range(repeats))


class Sampler:
    """Calls ``sample()`` every ``interval`` seconds in a background thread, from
    entering the ``with`` block until leaving it."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self: T) -> T:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------ data


def mixture_rows(
    rng: np.random.Generator, n: int, d: int, k: int, *, scaled: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``n`` rows of a random mixture of ``k`` Gaussians in ``d`` dimensions (centres
    at scale 4; with ``scaled``, a random standard deviation per component and
    feature, else 1), drawn from ``rng``; returns the rows, centres and scales."""
    centers = rng.normal(scale=4.0, size=(k, d))
    scales = rng.uniform(0.5, 2.0, size=(k, d)) if scaled else None
    labels = rng.integers(k, size=n)
    noise = rng.normal(size=(n, d))
    X = centers[labels] + (noise * scales[labels] if scaled else noise)
    return X, centers, scales


def write_gmm_once(path: str, n: int, d: int, k: int, *, chunks: int) -> str:
    """A Zarr store of ``write_gmm`` rows at ``path``, written unless a finished one
    (with its ``.complete`` marker) is there already; returns ``path``."""
    from daskgmm.datasets import write_gmm

    marker = os.path.join(path, ".complete")
    if not os.path.exists(marker):
        write_gmm(path, n, d, k, chunks=chunks, overwrite=True)
        open(marker, "w").close()
    return path
