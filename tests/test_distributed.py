"""GaussianMixture on a distributed cluster gives the threaded scheduler's results.

One in-process LocalCluster (2 workers, 1 thread each) is shared by the module; one
test starts a cluster of 2 worker processes.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from dask.utils import key_split
from distributed import get_task_stream
from numpy.testing import assert_allclose, assert_array_equal

from daskgmm import GaussianMixture
from tests.conftest import assert_same_fit as same_fit
from tests.conftest import local_client, quiet_process_client

# The scheduler's HTTP server (metrics, health) binds a port even without a
# dashboard; another cluster on this machine may hold distributed's default 8787.
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use")


def make_data(seed: int = 0) -> np.ndarray:
    """Three overlapping clusters in 3-D: EM needs a few iterations."""
    rng = np.random.RandomState(seed)
    return rng.randn(3000, 3) + np.repeat(np.eye(3) * 4, 1000, axis=0)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return make_data()


@pytest.fixture(scope="module")
def client():
    with local_client(2) as c:
        yield c


def threaded_fit(X, **kwargs) -> GaussianMixture:
    """The reference: the same fit on dask's threaded scheduler."""
    with dask.config.set(scheduler="threads"):
        return GaussianMixture(3, random_state=0, tol=1e-8, **kwargs).fit(X)


def assert_same_fit(gm: GaussianMixture, ref: GaussianMixture) -> None:
    same_fit(gm, ref, rtol=1e-12, history=True, params_rtol=1e-10, params_atol=1e-10)


def task_prefixes(stream: list[dict]) -> dict[str, set]:
    """Task-name prefix -> workers that ran such tasks."""
    out: dict[str, set] = {}
    for record in stream:
        out.setdefault(key_split(record["key"]), set()).add(record["worker"])
    return out


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_fit_on_dask_array_matches_threaded_scheduler(client, data, covariance_type):
    Xd = da.from_array(data, chunks=(250, 3))
    ref = threaded_fit(Xd, covariance_type=covariance_type)
    assert ref.n_iter_ > 2
    with get_task_stream(client) as stream:
        gm = GaussianMixture(
            3, random_state=0, tol=1e-8, covariance_type=covariance_type
        ).fit(Xd)
    assert_same_fit(gm, ref)
    # The passes ran on the cluster: one E-step task per block and iteration.
    ran = task_prefixes(stream.data)
    assert ran["gmm-estep"] <= set(client.scheduler_info()["workers"])
    n_estep = sum(key_split(r["key"]) == "gmm-estep" for r in stream.data)
    assert n_estep == 12 * gm.n_iter_
    # The root combine of each pass runs in the client: no such task, no transfer.
    assert "gmm-estep-total" not in ran


def test_fit_on_numpy_with_persist_auto_keeps_the_data_on_the_cluster(
    client, data, caplog
):
    ref = threaded_fit(data)
    with get_task_stream(client) as stream:
        gm = GaussianMixture(
            3, random_state=0, tol=1e-8, persist="auto", verbose=1
        ).fit(data)
    assert_same_fit(gm, ref)
    messages = [r.getMessage() for r in caplog.records if r.name == "daskgmm"]
    assert any(
        m.startswith("keeping the data in memory during the fit (") for m in messages
    ), messages
    assert "gmm-estep" in task_prefixes(stream.data)


def test_predict_is_lazy_and_computes_on_the_cluster(client, data):
    Xd = da.from_array(data, chunks=(250, 3))
    gm = GaussianMixture(3, random_state=0, tol=1e-8).fit(Xd)
    ref = threaded_fit(data)
    for method, prefix in [
        ("predict", "gmm-label"),
        ("predict_proba", "gmm-proba"),
        ("score_samples", "gmm-score"),
    ]:
        with get_task_stream(client) as stream:
            lazy = getattr(gm, method)(Xd)
        assert isinstance(lazy, da.Array)
        assert lazy.chunks[0] == Xd.chunks[0]
        assert stream.data == []  # nothing ran yet
        with get_task_stream(client) as stream:
            values = lazy.compute()
        assert sum(key_split(r["key"]) == prefix for r in stream.data) == 12
        with dask.config.set(scheduler="threads"):
            expected = getattr(ref, method)(data)
        if method == "predict":
            assert_array_equal(values, expected)
        else:
            assert_allclose(values, expected, rtol=1e-10, atol=1e-12)


def test_score_bic_aic_on_the_cluster_match_threaded(client, data):
    Xd = da.from_array(data, chunks=(250, 3))
    gm = GaussianMixture(3, random_state=0, tol=1e-8).fit(Xd)
    with dask.config.set(scheduler="threads"):
        expected = (gm.score(Xd), gm.bic(Xd), gm.aic(Xd))
    assert_allclose((gm.score(Xd), gm.bic(Xd), gm.aic(Xd)), expected, rtol=1e-12)


def test_fit_with_worker_processes_matches_threaded_scheduler(data):
    Xd = da.from_array(data, chunks=(500, 3))
    ref = threaded_fit(Xd)
    with quiet_process_client(2) as c:
        with get_task_stream(c) as stream:
            gm = GaussianMixture(3, random_state=0, tol=1e-8).fit(Xd)
        labels = gm.predict(Xd).compute()
        workers = set(c.scheduler_info()["workers"])
    assert_same_fit(gm, ref)
    assert task_prefixes(stream.data)["gmm-estep"] <= workers
    with dask.config.set(scheduler="threads"):
        assert_array_equal(labels, ref.predict(data))


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_the_client_m_step_runs_single_threaded_blas(client, data):
    # Multi-threaded BLAS on the client waits for cores the workers keep busy:
    # ~5 ms per 3x3 triangular solve on 2 cores (75 ms of client CPU/iteration).
    if max(_blas_threads(), default=1) < 2:
        pytest.skip("BLAS is single-threaded here already")
    seen: list[list[int]] = []
    GaussianMixture(3, random_state=0, tol=0, max_iter=3).fit(
        data, iteration_callback=lambda init, state: seen.append(_blas_threads())
    )
    assert len(seen) == 3
    assert all(threads and max(threads) == 1 for threads in seen), seen
    assert max(_blas_threads()) >= 2  # restored after the fit


def _many_blocks(X: np.ndarray) -> da.Array:
    """40 row blocks computed by tasks (not data in memory yet)."""
    return da.from_array(X, chunks=(1000, 3)).map_blocks(np.multiply, 1.0)


def _one_block(X: np.ndarray) -> da.Array:
    return da.from_array(X, chunks=-1).map_blocks(np.multiply, 1.0)


@pytest.mark.parametrize(
    "source", [np.asarray, _many_blocks, _one_block], ids=["numpy", "40", "1"]
)
def test_data_kept_in_memory_gets_one_block_per_worker_thread(client, source):
    # A task costs 1.5-3 ms on distributed: a pass over data in memory runs one
    # E-step task per worker thread (2 here), whatever the source's blocks.
    X = np.random.RandomState(1).randn(40_000, 3) + np.repeat(
        np.eye(3) * 3, [13_000, 13_000, 14_000], axis=0
    )
    ref = threaded_fit(X)  # 40,000 rows: the init sample is every row
    with get_task_stream(client) as stream:
        gm = GaussianMixture(3, random_state=0, tol=1e-8, persist=True).fit(source(X))
    assert_same_fit(gm, ref)
    n_estep = sum(key_split(r["key"]) == "gmm-estep" for r in stream.data)
    assert n_estep == 2 * gm.n_iter_
