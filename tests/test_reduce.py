"""The reduction layer (:mod:`daskgmm._reduce`): block tasks and the tree that
combines them.

References: flat NumPy sums over the whole array (``math.fsum``, exact integer
sums), the kernel applied to the whole array in one block, and hand-counted tree
sizes.
"""

from __future__ import annotations

import math
import pickle

import dask
import dask.array as da
import numpy as np
import pytest
from dask._task_spec import Task, TaskRef
from dask.utils import key_split
from numpy.testing import assert_allclose, assert_array_equal

from daskgmm import _kernels as K
from daskgmm._reduce import (
    block_keys,
    block_sources,
    compute_root_here,
    map_rows,
    tree_reduce,
)
from tests.conftest import local_client

###############################################################################
# Results against flat references


def _sum_block(block: np.ndarray, params: float, index: int, *weights) -> dict:
    """Column sums (weighted when given), row count and the block's index."""
    w = np.ones(block.shape[0]) if not weights else weights[0]
    return {
        "sum": (block * w[:, None]).sum(axis=0) * params,
        "n": block.shape[0],
        "blocks": [index],
    }


def _combine_sums(*parts: dict) -> dict:
    return {
        "sum": np.sum([p["sum"] for p in parts], axis=0),
        "n": sum(p["n"] for p in parts),
        "blocks": [i for p in parts for i in p["blocks"]],
    }


def _column_sums(X: np.ndarray, rows, split_every: int, weights=None) -> dict:
    """:func:`_sum_block` tree-reduced over ``X`` cut into blocks of ``rows`` rows
    (with the ``weights`` cut alike when given), computed synchronously."""
    if weights is not None:
        weights = da.from_array(weights, chunks=(rows,))
    Xd = da.from_array(X, chunks=(rows, X.shape[1]))
    kwargs = dict(name="sum", split_every=split_every, weights=weights)
    delayed = tree_reduce(Xd, _sum_block, 1.0, _combine_sums, **kwargs)
    return delayed.compute(scheduler="sync")


RAGGED = {
    "even": (10,) * 12,
    "ragged": (1, 7, 3, 20, 2, 11, 5, 5, 9, 4, 1, 12),
    "empty-blocks": (0, 6, 0, 0, 30, 1, 0, 13, 0, 0, 0, 30),
    "one-block": (80,),
}


@pytest.mark.parametrize("split_every", [2, 3, 4, 16])
@pytest.mark.parametrize("layout", list(RAGGED))
def test_tree_reduce_equals_a_flat_sum(split_every, layout):
    rows = RAGGED[layout]
    n = sum(rows)
    rng = np.random.RandomState(1)
    X = rng.randn(n, 3) * 10.0 ** rng.randint(-3, 4, size=(n, 1))
    Xd = da.from_array(X, chunks=(rows, 3))
    delayed = tree_reduce(
        Xd, _sum_block, 2.0, _combine_sums, name="sum", split_every=split_every
    )
    result = delayed.compute(scheduler="sync")
    assert result["n"] == n
    # The combine runs in block order, every block once.
    assert result["blocks"] == list(range(len(rows)))
    flat = [2.0 * math.fsum(X[:, j]) for j in range(3)]
    assert_allclose(result["sum"], flat, rtol=1e-12, atol=1e-12 * np.abs(X).sum())
    # Integer-valued rows sum exactly whatever the tree.
    Z = np.round(X * 100)
    exact = _column_sums(Z, rows, split_every)
    assert_array_equal(exact["sum"], Z.sum(axis=0))


@pytest.mark.parametrize("layout", ["ragged", "empty-blocks"])
def test_tree_reduce_passes_the_weight_blocks(layout):
    rows = RAGGED[layout]
    n = sum(rows)
    rng = np.random.RandomState(2)
    X = rng.randint(-50, 50, size=(n, 2)).astype(np.float64)
    w = rng.randint(0, 4, size=n).astype(np.float64)
    result = _column_sums(X, rows, 3, weights=w)
    assert_array_equal(result["sum"], w @ X)


@pytest.mark.parametrize("split_every", [2, 5, 16])
def test_tree_reduce_is_bitwise_reproducible(split_every):
    rng = np.random.RandomState(3)
    X = rng.randn(997, 3) * 1e3 + 1e5
    Xd = da.from_array(X, chunks=(37, 3))
    kp = K.prepare(
        np.array([0.3, 0.7]),
        rng.randn(2, 3) * 1e3 + 1e5,
        np.stack([np.eye(3)] * 2),
        "full",
    )

    def once(scheduler: str) -> dict:
        return tree_reduce(
            Xd,
            K.estep_block,
            kp,
            K.combine_stats,
            name="estep",
            split_every=split_every,
        ).compute(scheduler=scheduler)

    first = once("sync")
    for scheduler in ("sync", "threads", "sync"):
        again = once(scheduler)
        for name in ("nk", "s1", "s2", "loglik"):
            assert_array_equal(again[name], first[name])


def test_the_root_computed_here_equals_the_root_task():
    rng = np.random.RandomState(4)
    X = rng.randn(600, 2)
    Xd = da.from_array(X, chunks=(40, 2))  # 15 blocks: combines below the root
    kp = K.prepare(
        np.array([0.5, 0.5]), rng.randn(2, 2), np.stack([np.eye(2)] * 2), "full"
    )
    delayed = tree_reduce(
        Xd, K.estep_block, kp, K.combine_stats, name="estep", split_every=4
    )
    (want,) = dask.compute(delayed, scheduler="sync")
    with local_client(2) as client:
        got = compute_root_here(delayed, client)
    for name in ("nk", "s1", "s2", "loglik"):
        assert_array_equal(got[name], want[name])


def _scaled_rows(block: np.ndarray, params: np.ndarray) -> np.ndarray:
    return block * params


def _row_norms(block: np.ndarray, params: np.ndarray, power: int = 2) -> np.ndarray:
    return (np.abs(block * params) ** power).sum(axis=1)


def test_map_rows_equals_the_kernel_on_the_whole_array():
    rng = np.random.RandomState(5)
    X = rng.randn(103, 3)
    Xd = da.from_array(X, chunks=((20, 0, 50, 33), 3))
    scale = np.array([1.0, -2.0, 0.5])
    out = map_rows(Xd, _scaled_rows, scale, name="scaled", n_columns=3, dtype=float)
    assert out.chunks == Xd.chunks
    assert_array_equal(out.compute(scheduler="sync"), X * scale)
    norms = map_rows(
        Xd, _row_norms, scale, name="norm", n_columns=None, dtype=float, power=1
    )
    assert norms.chunks == (Xd.chunks[0],)
    assert_allclose(norms.compute(scheduler="sync"), np.abs(X * scale).sum(axis=1))
    graph = dict(norms.__dask_graph__())
    assert len([k for k in graph if key_split(k) == "gmm-params"]) == 1
    assert len([k for k in graph if key_split(k) == "gmm-norm"]) == 4


def test_block_sources_inline_the_block_tasks_and_reference_persisted_blocks():
    X = np.arange(40.0).reshape(20, 2)
    Xd = da.from_array(X, chunks=(5, 2)) + 1  # a task per block
    sources = block_sources(Xd)
    assert len(sources) == len(block_keys(Xd)) == 4
    assert all(isinstance(s, Task) for s in sources)
    persisted = Xd.persist(scheduler="sync")
    refs = block_sources(persisted)
    assert all(isinstance(s, TaskRef) for s in refs)
    assert [s.key for s in refs] == block_keys(persisted)
    with pytest.raises(ValueError, match="feature axis must be a single chunk"):
        block_keys(da.from_array(X, chunks=(5, 1)))


###############################################################################
# The shape of the graph


def _big_kernel_params(n_components: int = 8, n_features: int = 64) -> K.KernelParams:
    rng = np.random.RandomState(0)
    prec_chol = np.stack([np.eye(n_features)] * n_components)
    return K.prepare(
        np.full(n_components, 1 / n_components),
        rng.randn(n_components, n_features),
        prec_chol,
        "full",
    )


def test_parameters_are_one_graph_key_shared_by_every_block_task():
    X = np.random.RandomState(0).randn(400, 64)
    Xd = da.from_array(X, chunks=(25, 64))  # 16 blocks
    kp = _big_kernel_params()
    params_bytes = len(pickle.dumps(kp))
    assert params_bytes > 250_000  # K·d² floats, below dask's 1 MB inlining limit
    delayed = tree_reduce(Xd, K.estep_block, kp, K.combine_stats, name="estep")
    graph = dict(delayed.__dask_graph__())
    params_keys = [
        k for k in graph if isinstance(k, str) and k.startswith("gmm-params-")
    ]
    assert len(params_keys) == 1
    block_keys = [k for k in graph if key_split(k) == "gmm-estep"]
    assert len(block_keys) == 16
    for key in block_keys:
        task = graph[key]
        assert params_keys[0] in task.dependencies
        # The parameters are referenced, not copied into the task.
        assert len(pickle.dumps(task)) < 2_000
    # The tree-combined statistics are those of the whole array in one block.
    result = delayed.compute(scheduler="sync")
    reference = K.estep_block(X, kp)
    assert result["n"] == 400
    for name in ("nk", "s1", "s2", "loglik"):
        assert_allclose(result[name], reference[name], rtol=1e-10)


def test_small_parameters_are_copied_into_the_block_tasks():
    X = np.random.RandomState(0).randn(400, 3)
    Xd = da.from_array(X, chunks=(25, 3))  # 16 blocks
    kp = _big_kernel_params(n_components=8, n_features=3)
    delayed = tree_reduce(Xd, K.estep_block, kp, K.combine_stats, name="estep")
    graph = dict(delayed.__dask_graph__())
    assert not [k for k in graph if key_split(k) == "gmm-params"]
    for key in graph:
        if key_split(key) == "gmm-estep":
            # Only the block's own source is a dependency.
            assert {key_split(d) for d in graph[key].dependencies} == {"array"}
    result = delayed.compute(scheduler="sync")
    reference = K.estep_block(X, kp)
    for name in ("nk", "s1", "s2", "loglik"):
        assert_allclose(result[name], reference[name], rtol=1e-10)


def _tree_depth(graph: dict, key) -> int:
    """Longest chain of combine tasks above the block tasks, from ``key`` down."""
    deps = [d for d in graph[key].dependencies if key_split(d).startswith("gmm-estep")]
    if key_split(key) == "gmm-estep":
        return 0
    depth = max(_tree_depth(graph, d) for d in deps)
    # The root ('total') combines too, unless it only names a single block's result.
    combines = key_split(key) == "gmm-estep-combine" or len(deps) > 1
    return depth + combines


@pytest.mark.parametrize(
    "n_blocks, split_every, depth, n_combine",
    [
        # n_combine: combine tasks below the root, which is the 'total' task.
        (100, 4, 4, 25 + 7 + 2),  # 4**3 = 64 < 100 <= 4**4
        (64, 4, 3, 16 + 4),
        (65, 4, 4, 17 + 5 + 2),
        (16, 16, 1, 0),
        (17, 16, 2, 2),
        (5, 2, 3, 3 + 2),
        (1, 16, 0, 0),
    ],
)
def test_reduction_tree_depth_is_ceil_log_split_every(
    n_blocks, split_every, depth, n_combine
):
    Xd = da.zeros((n_blocks * 3, 2), chunks=(3, 2))
    kp = K.prepare(np.ones(1), np.zeros((1, 2)), np.eye(2)[None], "full")
    delayed = tree_reduce(
        Xd, K.estep_block, kp, K.combine_stats, name="estep", split_every=split_every
    )
    graph = dict(delayed.__dask_graph__())
    counts = {}
    for key in graph:
        counts[key_split(key)] = counts.get(key_split(key), 0) + 1
    assert counts["gmm-estep"] == n_blocks
    assert counts.get("gmm-estep-combine", 0) == n_combine
    assert counts["gmm-estep-total"] == 1
    assert _tree_depth(graph, delayed.key) == depth
    assert depth == next(d for d in range(10) if split_every**d >= n_blocks)
    # Every combine task has a fan-in of at most split_every.
    for key, task in graph.items():
        if key_split(key) == "gmm-estep-combine":
            assert 1 <= len(task.dependencies) <= split_every
    assert delayed.compute(scheduler="sync")["n"] == n_blocks * 3


def test_the_fan_in_is_lowered_for_big_partials(monkeypatch):
    import daskgmm._reduce as R
    from daskgmm import _chunks

    Xd = da.from_array(np.random.RandomState(0).randn(160, 64), chunks=(10, 64))
    kp = _big_kernel_params()  # 8 x 64 x 64 floats: 262 KB
    # Room for 4 partials of that size in one combine task: fan-in 4, not 16.
    monkeypatch.setattr(_chunks, "COMBINE_INPUT_BYTES", 4 * R.array_bytes(kp) + 100)
    delayed = tree_reduce(
        Xd, K.estep_block, kp, K.combine_stats, name="estep", split_every=16
    )
    graph = dict(delayed.__dask_graph__())
    fan_in = [
        len(task.dependencies)
        for key, task in graph.items()
        if key_split(key) in ("gmm-estep-combine", "gmm-estep-total")
    ]
    assert sorted(fan_in) == [4] * 5  # 16 blocks: 4 combines of 4, a root of 4
    assert _tree_depth(graph, delayed.key) == 2
    monkeypatch.undo()
    graph = dict(
        tree_reduce(
            Xd, K.estep_block, kp, K.combine_stats, name="estep", split_every=16
        ).__dask_graph__()
    )
    assert not [k for k in graph if key_split(k) == "gmm-estep-combine"]
