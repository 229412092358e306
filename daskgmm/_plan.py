"""The fit plan: any input, its row weights, its NaN policy and its scaling, turned
into the passes EM runs on.

:func:`plan_fit` checks the input (NumPy, dask arrays, pandas or dask DataFrames) and
decides how it is held during the fit: NumPy input wrapped as row blocks without a
copy, dask input optimised once, kept in (cluster) memory when it fits
(``persist``) or read from its source at every pass, row weights aligned with the
row blocks. :func:`plan_score` does the same for one pass (score, BIC, AIC). The
sizes come from :mod:`daskgmm._chunks`, the chunking and persistence policy; every
decision made from them is here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask._task_spec import DataNode, GraphNode
from threadpoolctl import threadpool_limits

from daskgmm import _chunks as C
from daskgmm import _kernels as K
from daskgmm import _preprocess as P
from daskgmm._em import DataPasses
from daskgmm._reduce import (
    active_client,
    block_keys,
    scheduler_threads,
    worker_memory_limits,
)
from daskgmm._validation import Data, check_input, count_non_finite_rows

logger = logging.getLogger("daskgmm")


@dataclass
class FitPlan:
    """What a fit (or a scoring pass) runs on, and how the data are held.

    Attributes
    ----------
    data : Data
        The checked input (row count, features, fit dtype, feature names).
    sample_weight : array-like or None
        As given; aligned with the row blocks when :attr:`passes` is made.
    nan_policy, persist, split_every, kernel : as the estimator's parameters
    scale : str
        The scaling method (``'none'``: the rows as given).
    log1p : tuple of int
        Columns taken ``log1p`` of before the scaling.
    """

    data: Data
    sample_weight: Any = None
    nan_policy: str = "raise"
    persist: str | bool = "auto"
    split_every: int = 16
    kernel: str = "auto"
    scale: str = "none"
    log1p: tuple[int, ...] = ()

    @property
    def scaled(self) -> bool:
        """Whether EM runs on scaled rows (a pass of moments comes first)."""
        return self.scale != "none" or bool(self.log1p)

    @functools.cached_property
    def passes(self) -> DataPasses:
        """Passes over the data as held for the fit, made (and the data persisted,
        when that is the decision) on first use."""
        array = fit_array(self.data, self.persist)
        return self._passes(array)

    def _passes(self, array: da.Array) -> DataPasses:
        weights = None
        if self.sample_weight is not None:
            weights = aligned_weights(self.sample_weight, array, self.data)
        return DataPasses(
            array,
            self.split_every,
            weights=weights,
            nan_policy=self.nan_policy,
            kernel=self.kernel,
        )


# The estimator parameters a fit plan depends on.
PLAN_PARAMS = ("nan_policy", "persist", "split_every", "kernel", "scale", "log1p")


def plan_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`plan_fit` from an estimator's parameters."""
    return {name: params[name] for name in PLAN_PARAMS}


def plan_fit(
    X: Any,
    *,
    sample_weight: Any = None,
    nan_policy: str = "raise",
    persist: str | bool = "auto",
    split_every: int = 16,
    kernel: str = "auto",
    scale: str = "none",
    log1p: Any = None,
    min_samples: int = 2,
) -> FitPlan:
    """The plan of a fit on ``X``: input checked, ``log1p`` columns resolved.

    Nothing is computed here but the NaN/inf check of NumPy input under
    ``nan_policy='raise'``; the data are persisted when the plan's passes are
    first used.
    """
    data = check_input(X, min_samples=min_samples)
    columns = log1p_columns(log1p, data)
    if not data.is_dask and nan_policy == "raise":
        raise_if_non_finite(data.array)
    return FitPlan(
        data, sample_weight, nan_policy, persist, split_every, kernel, scale, columns
    )


def plan_score(
    data: Data,
    *,
    sample_weight: Any = None,
    nan_policy: str = "raise",
    split_every: int = 16,
    kernel: str = "auto",
) -> FitPlan:
    """The plan of one pass over checked rows (score, BIC, AIC): read where they
    are, never persisted."""
    if not data.is_dask and nan_policy == "raise":
        raise_if_non_finite(data.array)
    plan = FitPlan(data, sample_weight, nan_policy, False, split_every, kernel)
    array = data.array if data.is_dask else numpy_to_dask(data.array)
    plan.__dict__["passes"] = plan._passes(array)
    return plan


def raise_if_non_finite(array: np.ndarray) -> None:
    n_bad, first = count_non_finite_rows(array)
    if n_bad:
        K.raise_non_finite(n_bad, "X", f" (first at row {first})")


def _target_blocks(client: Any) -> tuple[int, int]:
    """:func:`daskgmm._chunks.target_blocks` on the scheduler that runs the passes."""
    return C.target_blocks(scheduler_threads(client), client is not None)


def numpy_to_dask(array: np.ndarray) -> da.Array:
    """Wrap a NumPy array as a dask array of a few row blocks, without copying.

    ``da.from_array`` copies its input (dask >= 2025), doubling the memory of a large
    in-memory table; here every block is a view of ``array``. The number of blocks
    suits the scheduler (:func:`daskgmm._chunks.target_blocks`).
    """
    n, d = array.shape
    blocks = _target_blocks(active_client())[1]
    rows = C.memory_block_rows(n, d * array.itemsize, blocks)
    starts = range(0, n, rows)
    name = f"numpy-rows-{uuid.uuid4().hex}"
    graph = {
        (name, i, 0): DataNode((name, i, 0), array[s : s + rows])
        for i, s in enumerate(starts)
    }
    chunks = (tuple(min(n, s + rows) - s for s in starts), (d,))
    return da.Array(graph, name, chunks=chunks, dtype=array.dtype)


def _blocks_in_memory(array: da.Array) -> bool:
    """Whether every row block of ``array`` is data already (persisted, NumPy), not
    the result of a task."""
    graph = array.__dask_graph__()
    for key in block_keys(array):
        node = graph.get(key)
        if isinstance(node, GraphNode) and not isinstance(node, DataNode):
            return False
    return True


def _rechunked_for_memory(array: da.Array, client: Any) -> da.Array:
    """``array`` with row blocks suited to a pass over it in memory, when it is about
    to be computed into memory anyway (its blocks come from tasks: a read, a
    conversion); blocks already in memory (persisted, NumPy) are left where they
    are, since moving them costs a transfer.

    Too few blocks would leave threads idle; on distributed, many more blocks than
    worker threads cost a task each per pass (:func:`daskgmm._chunks.target_blocks`).
    """
    rows_known = not any(math.isnan(c) for c in array.chunks[0])
    if not rows_known or _blocks_in_memory(array):
        return array
    least, most = _target_blocks(client)
    n_blocks = array.numblocks[0]
    if least <= n_blocks <= 2 * most:
        return array
    n, d = array.shape
    rows = C.memory_block_rows(n, d * array.dtype.itemsize, most)
    if math.ceil(n / rows) == n_blocks:
        return array
    logger.info(
        "re-chunking %d row blocks into blocks of %d rows for the passes in memory",
        n_blocks,
        rows,
    )
    return array.rechunk({0: rows})


def aligned_weights(sample_weight: Any, array: da.Array, data: Data) -> da.Array:
    """Row weights as a 1-D dask array with the fit array's row blocks.

    Values are checked in the fit's passes (negative, NaN, inf, all zero).
    """
    weights = sample_weight
    if not isinstance(weights, da.Array):
        weights = np.asarray(weights)
        if weights.dtype.kind not in "biuf":
            raise TypeError(
                f"sample_weight must hold numbers, got dtype {weights.dtype}"
            )
    if weights.ndim != 1:
        raise ValueError(
            "sample_weight must be 1-D of shape (n_samples,), got shape "
            f"{weights.shape}"
        )
    if data.n_samples is not None and weights.shape[0] != data.n_samples:
        raise ValueError(
            f"sample_weight has {weights.shape[0]} values but X has "
            f"{data.n_samples} rows"
        )
    rows_known = not any(math.isnan(c) for c in array.chunks[0])
    if not isinstance(weights, da.Array):
        weights = da.from_array(
            weights.astype(np.float64, copy=False),
            chunks=(array.chunks[0],) if rows_known else -1,
            name=False,
        )
    if weights.chunks[0] != array.chunks[0]:
        if rows_known:
            weights = weights.rechunk({0: array.chunks[0]})
        elif weights.numblocks[0] != array.numblocks[0]:
            raise ValueError(
                "sample_weight must be chunked like X's rows when X's row counts "
                "are unknown"
            )
    (weights,) = dask.optimize(weights)
    return weights


def _available_memory(client: Any) -> float:
    """Bytes the data may occupy: worker memory limits, or free RAM here."""
    if client is not None:
        return float(sum(worker_memory_limits(client)))
    import psutil

    return float(psutil.virtual_memory().available)


def fit_array(data: Data, persist: str | bool) -> da.Array:
    """The dask array a fit iterates over: optimised once, in memory if asked or if it fits."""
    if data.is_dask:
        array = data.array
        if array.dtype != data.dtype:
            array = array.astype(data.dtype)
    else:
        array = numpy_to_dask(data.array)
    client = active_client()
    nbytes = array.nbytes if not math.isnan(array.shape[0]) else math.nan
    if persist == "auto":
        if not data.is_dask and client is None:
            keep = False  # already in this process's memory
            reason = "NumPy input, threaded scheduler"
        else:
            budget = C.PERSIST_SHARE * _available_memory(client)
            keep = nbytes <= budget  # False for unknown sizes (nan)
            reason = (
                f"{nbytes / 2**20:.1f} MiB of data, {budget / 2**20:.0f} MiB budget"
            )
    else:
        keep, reason = bool(persist), f"persist={persist}"
    (array,) = dask.optimize(array)
    if keep:
        logger.info("keeping the data in memory during the fit (%s)", reason)
        array = _rechunked_for_memory(array, client).persist()
    else:
        logger.info("reading the data from its source at every pass (%s)", reason)
    return array


def log1p_columns(log1p: Any, data: Data) -> tuple[int, ...]:
    """The ``log1p`` parameter as sorted column indices of ``data``."""
    if log1p is None:
        return ()
    names = None if data.feature_names is None else list(data.feature_names)
    columns = []
    for item in log1p:
        if not isinstance(item, str):
            columns.append(item)
        elif names is None:
            raise ValueError(
                f"log1p names the column {item!r} but X has no column names; give "
                "column indices (e.g. log1p=[0, 3])"
            )
        elif item not in names:
            raise ValueError(
                f"log1p names the column {item!r}, which X does not have; its "
                f"columns are {names}"
            )
        else:
            columns.append(names.index(item))
    return P.check_log1p(columns, data.n_features)


@contextlib.contextmanager
def one_blas_thread_per_task() -> Iterator[None]:
    """Single-threaded BLAS in this process while a fit or score runs.

    On dask's threaded scheduler each thread already works on its own block; BLAS
    threads on top of that fight for the same cores (measured: 2x slower per
    iteration on 2 cores). With a distributed client the M-step's tiny (K, d, d)
    factorisations run here while the workers keep the cores busy: multi-threaded
    BLAS then waits for its threads to get a core, ~5 ms per 3x3 triangular solve
    (measured on a LocalCluster of 2 x 1 on 2 cores, 2M x 3, K=8: 75 ms of client
    and scheduler CPU per iteration, 12 ms single-threaded). Worker processes are
    started with ``OPENBLAS_NUM_THREADS=1`` by distributed
    (``nanny.pre-spawn-environ``).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@contextlib.contextmanager
def verbose_logging(verbose: int) -> Iterator[None]:
    """Show the package's INFO lines during a fit when ``verbose`` asks.

    The level of the ``daskgmm`` logger is lowered to INFO for the fit; a stderr
    handler is added only when logging is not configured at all.
    """
    if not verbose:
        yield
        return
    handler = None
    if not logger.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(previous)
        if handler is not None:
            logger.removeHandler(handler)
