"""Wiring of the chunk kernels into dask graphs.

A pass over the data is one graph: a task per row block calling a pure kernel with the
block and the parameters (copied into the tasks when small, else one graph key shared
by every block task), then a tree of combine tasks of fan-in ``split_every`` whose
root is the result. Keys are named after what the
tasks do (``gmm-estep``, ``gmm-combine``...) so the dashboard tells them apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask._task_spec import DataNode, Task, TaskRef
from dask.base import tokenize
from dask.core import flatten
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from daskgmm import _chunks as C

logger = logging.getLogger(__name__)

DEFAULT_SPLIT_EVERY = 16


def active_client() -> Any:
    """The distributed ``Client`` that computes dask collections now, or None."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        client = distributed.get_client()
    except ValueError:
        return None
    scheduler = dask.base.get_scheduler()
    return client if getattr(scheduler, "__self__", None) is client else None


def worker_memory_limits(client: Any) -> list[int]:
    """Each worker's memory limit in bytes (0 where it has none)."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return [w.get("memory_limit") or 0 for w in workers]


def workers_on_this_machine(client: Any) -> bool:
    """Whether every worker of ``client`` runs on this machine (an embedded or local
    cluster), so that they share its file caches."""
    local = {"127.0.0.1", "localhost", "::1", socket.gethostname()}
    with contextlib.suppress(OSError):
        local.add(socket.gethostbyname(socket.gethostname()))
    for address in client.scheduler_info(n_workers=-1)["workers"]:
        scheme, _, rest = address.partition("://")
        host = rest.rsplit(":", 1)[0].strip("[]")
        if scheme != "inproc" and host not in local:
            return False
    return True


def array_bytes(obj: Any) -> int:
    """Bytes of the NumPy arrays in ``obj`` (tuples, lists, dicts, dataclasses)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (tuple, list)):
        return sum(array_bytes(item) for item in obj)
    if isinstance(obj, dict):
        return sum(array_bytes(item) for item in obj.values())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(array_bytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    return 0


def worker_threads(client: Any) -> list[int]:
    """Each worker's number of threads."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return [int(w.get("nthreads") or 1) for w in workers]


def scheduler_threads(client: Any) -> int:
    """Threads a pass runs on: those of ``client``'s workers, or with no client the
    cores of this machine (dask's threaded scheduler)."""
    if client is None:
        return os.cpu_count() or 1
    return sum(worker_threads(client)) or 1


def source_block_rows(n_rows: int, row_bytes: int, max_bytes: int) -> int:
    """Rows per block read from a source on the scheduler that will read it
    (:func:`daskgmm._chunks.source_block_rows`)."""
    threads = scheduler_threads(active_client())
    return C.source_block_rows(n_rows, row_bytes, max_bytes, threads)


def block_keys(X: da.Array) -> list:
    """Keys of the row blocks of a 2-D dask array whose feature axis is one chunk."""
    if X.ndim != 2 or X.numblocks[1] != 1:
        raise ValueError("internal: the feature axis must be a single chunk")
    return list(flatten(X.__dask_keys__()))


def block_sources(X: da.Array) -> list:
    """What each block task reads: X's own task for the block, inlined, when it has one.

    A block computed by a task of X's graph (a read from Zarr, Parquet, .npy, a
    generator...) is fused into the kernel task that consumes it, so the raw block
    never waits in worker memory as a separate result (with one thread per worker,
    distributed keeps up to two queued root tasks beside the running one: three
    chunks held instead of one) and a pass costs one task per block, not two.
    Persisted or in-memory blocks are referenced by key.
    """
    graph = X.__dask_graph__()
    sources = []
    keys = block_keys(X) if X.ndim == 2 else list(flatten(X.__dask_keys__()))
    for key in keys:
        node = graph.get(key) if hasattr(graph, "get") else None
        sources.append(node if isinstance(node, Task) else TaskRef(key))
    return sources


def tree_reduce(
    X: da.Array,
    kernel: Callable[..., Any],
    params: Any,
    combine: Callable[..., Any],
    *,
    name: str,
    split_every: int = DEFAULT_SPLIT_EVERY,
    sources: list | None = None,
    weights: da.Array | None = None,
    weight_sources: list | None = None,
) -> Delayed:
    """Map ``kernel(block, params, block_index)`` over the row blocks, tree-combine.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        Feature axis in one chunk.
    kernel : callable
        Pure function of a NumPy block, ``params`` and the block's index.
    params : object
        Copied into every block task up to ``_chunks.INLINE_PARAMS_BYTES`` of arrays, else
        passed by reference: one key in the graph, whatever its size.
    combine : callable
        ``combine(*partials)`` returning a partial of the same kind; called in block
        order, so the result is bitwise reproducible.
    name : str
        Task-name prefix, e.g. ``"estep"`` gives ``gmm-estep-<token>``.
    split_every : int
        Fan-in of the tree (at least 2); lower when ``split_every`` partials of about
        the parameters' size would exceed ``_chunks.COMBINE_INPUT_BYTES``.
    sources : list, optional
        :func:`block_sources` of ``X``, when the caller computed them already.
    weights : dask array of shape (n_samples,), optional
        Row weights with X's row blocks: block ``i`` of them is passed to the kernel
        as a fourth argument.
    weight_sources : list, optional
        :func:`block_sources` of ``weights``, when already computed.

    Returns
    -------
    dask.delayed.Delayed
        The combined result; compute it once.
    """
    # A combine task holds split_every partials, each about the size of the
    # parameters (K·d² floats): the fan-in is lowered for big models.
    partial_bytes = max(array_bytes(params), 1)
    split_every = max(min(int(split_every), C.COMBINE_INPUT_BYTES // partial_bytes), 2)
    if sources is None:
        sources = block_sources(X)
    if weights is not None and weight_sources is None:
        weight_sources = block_sources(weights)
    token = tokenize(
        X.name, None if weights is None else weights.name, params, kernel, combine
    )
    token = tokenize(token, split_every)
    graph: dict = {}
    if array_bytes(params) <= C.INLINE_PARAMS_BYTES:
        # Small parameters travel inside every block task: a separate key would be
        # one more task per pass and, on distributed, a transfer to every other
        # worker before its blocks can start (measured 2-8 ms per pass).
        params_arg: Any = DataNode(None, params)
    else:
        params_key = f"gmm-params-{token}"
        graph[params_key] = DataNode(params_key, params)
        params_arg = TaskRef(params_key)
    level = []
    for i, source in enumerate(sources):
        task_key = (f"gmm-{name}-{token}", i)
        extra = () if weight_sources is None else (weight_sources[i],)
        graph[task_key] = Task(task_key, kernel, source, params_arg, i, *extra)
        level.append(task_key)
    # The root combine is the result (a separate final task would cost a scheduler
    # round trip per pass on distributed); one block only needs a named copy.
    final_key = f"gmm-{name}-total-{token}"
    depth = 0
    while len(level) > split_every:
        depth += 1
        nxt = []
        for j in range(0, len(level), split_every):
            group = level[j : j + split_every]
            task_key = (f"gmm-{name}-combine-{token}", depth, j // split_every)
            graph[task_key] = Task(task_key, combine, *[TaskRef(k) for k in group])
            nxt.append(task_key)
        level = nxt
    root = combine if len(level) > 1 else _identity
    graph[final_key] = Task(final_key, root, *[TaskRef(k) for k in level])
    dependencies = [X] if weights is None else [X, weights]
    hlg = HighLevelGraph.from_collections(final_key, graph, dependencies=dependencies)
    return Delayed(final_key, hlg)


def compute_root_here(reduced: Delayed, client: Any) -> Any:
    """Compute a :func:`tree_reduce` result on ``client`` with its root combine run
    here: the root's inputs (the block results, or the last combines) come straight
    from the workers that made them.

    Measured on a LocalCluster of 2 x 1 (2M x 3, K=8, one block per worker): 36-47
    -> 32-33 ms per iteration; no combine task, no transfer between workers and one
    message fewer per pass. The inputs are combined in the root's order, so the
    result is bitwise that of the root task.
    """
    graph = dict(reduced.__dask_graph__())
    root = graph.pop(reduced.key)
    keys = [arg.key for arg in root.args]
    parts = client.get(graph, keys, sync=True)
    return root.func(*parts)


def _identity(x: Any) -> Any:
    return x


def map_rows(
    X: da.Array,
    kernel: Callable[..., np.ndarray],
    params: Any,
    *,
    name: str,
    n_columns: int | None,
    dtype: Any,
    **kwargs: Any,
) -> da.Array:
    """Lazy per-row output of ``kernel(block, params, **kwargs)`` with X's row chunks.

    ``n_columns=None`` gives a 1-D output (n_samples,), otherwise (n_samples, n_columns).
    ``params`` becomes one graph key shared by every block.
    """
    token = tokenize(X.name, params, kernel, kwargs)
    params_delayed = dask.delayed(params, pure=True, name=f"gmm-params-{token}")
    out_name = f"gmm-{name}-{token}"
    if n_columns is None:
        return X.map_blocks(
            kernel, params_delayed, drop_axis=1, dtype=dtype, name=out_name, **kwargs
        )
    return X.map_blocks(
        kernel,
        params_delayed,
        chunks=(X.chunks[0], (n_columns,)),
        dtype=dtype,
        name=out_name,
        **kwargs,
    )
