"""Reliability: worker faults, degenerate data, and nothing unsafe read or run."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from daskgmm import ConvergenceWarning, GaussianMixture
from daskgmm.exceptions import ComponentReseededWarning
from tests.conftest import local_client

REPO = Path(__file__).resolve().parents[1]
FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")


###############################################################################
# Degenerate data: finite parameters or a clear error, never NaN


def _degenerate_cases() -> dict[str, np.ndarray]:
    rng = np.random.RandomState(0)
    return {
        "duplicated points": np.repeat(rng.randn(5, 2), 200, axis=0),
        "constant feature": np.c_[rng.randn(1000, 2), np.full(1000, 3.0)],
        "fewer distinct points than components": np.repeat(rng.randn(2, 2), 100, 0),
        "float32 with tiny variance": (1000 + 1e-4 * rng.randn(1000, 2)).astype(
            np.float32
        ),
        "huge values 1e150": rng.randn(1000, 2) * 1e150,
        "rows at 1e150 (one value in float64)": rng.randn(1000, 2) + 1e150,
        "tiny values 1e-150": rng.randn(1000, 2) * 1e-150,
        "one far outlier": np.r_[rng.randn(999, 2), [[1e6, 1e6]]],
    }


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("case", list(_degenerate_cases()))
def test_degenerate_data_gives_finite_parameters(case, ctype, init):
    X = _degenerate_cases()[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", ComponentReseededWarning)
        gm = GaussianMixture(
            3, covariance_type=ctype, init_params=init, random_state=0
        ).fit(X)
    for name in FITTED:
        value = getattr(gm, name)
        assert np.isfinite(value).all(), f"{name} has NaN or inf"
    assert np.isfinite(gm.lower_bound_)
    assert abs(gm.weights_.sum() - 1) < 1e-6
    labels = gm.predict(X)
    assert labels.min() >= 0 and labels.max() < 3
    assert np.isfinite(gm.score_samples(X)).all()


def test_no_variance_without_regularisation_is_a_clear_error():
    X = np.repeat(np.random.RandomState(0).randn(2, 2), 100, axis=0)
    with pytest.raises(
        ValueError, match=r"ill-defined empirical covariance.*reg_covar"
    ):
        GaussianMixture(2, reg_covar=0.0, random_state=0).fit(X)


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("use_dask", [False, True])
def test_a_mean_that_moves_far_in_one_step_keeps_every_digit(ctype, use_dask, caplog):
    # The start is 1e8 standard deviations from the rows: about the old means the
    # second moments are 1e16 times the covariance (every digit cancels), so the pass
    # runs again about the new means and gives the two-pass covariance.
    rng = np.random.RandomState(0)
    X = rng.randn(2000, 3) @ np.array([[1.0, 0.3, 0.0], [0, 1, 0.5], [0, 0, 2]])
    precisions = {
        "full": np.eye(3)[None],
        "tied": np.eye(3),
        "diag": np.ones((1, 3)),
        "spherical": np.ones(1),
    }[ctype]
    gm = GaussianMixture(
        1,
        covariance_type=ctype,
        max_iter=1,
        means_init=np.full((1, 3), 1e8),
        precisions_init=precisions,
        reg_covar=0.0,
    )
    caplog.set_level(logging.DEBUG, logger="daskgmm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(da.from_array(X, chunks=300) if use_dask else X)
    assert "one more pass about the new means" in caplog.text
    cov = np.cov(X, rowvar=False, bias=True)
    expected = {
        "full": cov[None],
        "tied": cov,
        "diag": np.diag(cov)[None],
        "spherical": np.diag(cov).mean()[None],
    }[ctype]
    np.testing.assert_allclose(gm.means_[0], X.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(gm.covariances_, expected, rtol=1e-12, atol=1e-14)


def test_no_extra_pass_when_the_means_move_little(caplog):
    rng = np.random.RandomState(1)
    X = np.vstack([rng.randn(500, 2), rng.randn(500, 2) + 8])
    caplog.set_level(logging.DEBUG, logger="daskgmm")
    GaussianMixture(2, random_state=0).fit(X)
    assert "one more pass" not in caplog.text


def test_a_component_that_loses_all_its_rows_is_reseeded():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(500, 2), rng.randn(500, 2) + np.array([10.0, 0.0])])
    X = np.vstack([X, rng.randn(300, 2) * 0.3 + [5.0, 8.0]])
    # The third start is far from every row: its responsibilities are all 0.
    means = np.array([[0.0, 0.0], [10.0, 0.0], [1e3, 1e3]])
    with pytest.warns(ComponentReseededWarning, match=r"component\(s\) 2 lost all"):
        gm = GaussianMixture(3, means_init=means, random_state=0, max_iter=200).fit(X)
    assert np.isfinite(gm.means_).all()
    # Re-seeded at the worst explained rows, it finds the third cluster.
    found = sorted(gm.means_.round().tolist())
    assert found == [[0.0, 0.0], [5.0, 8.0], [10.0, 0.0]]
    assert gm.weights_.min() > 0.2


def test_a_dead_component_without_a_sample_is_kept_with_a_warning():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(500, 2), rng.randn(500, 2) + np.array([10.0, 0.0])])
    means = np.array([[0.0, 0.0], [10.0, 0.0], [1e3, 1e3]])
    with pytest.warns(ComponentReseededWarning, match="no initialisation sample"):
        gm = GaussianMixture(
            3,
            means_init=means,
            weights_init=np.full(3, 1 / 3),
            precisions_init=np.stack([np.eye(2)] * 3),
        ).fit(X)
    assert np.isfinite(gm.means_).all()
    assert gm.weights_[2] < 1e-10


###############################################################################
# Worker faults on a process-based cluster


@pytest.fixture(scope="module")
def process_cluster():
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        local_client(2, processes=True) as client,
    ):
        yield client


def _worker_pids(client) -> dict:
    return client.run(os.getpid)


def test_a_worker_killed_mid_iteration_gives_the_same_model_bitwise(process_cluster):
    client = process_cluster
    from daskgmm.datasets import make_gmm

    # Generated inside the graph: a lost block is recomputed from its seed.
    data, _, _ = make_gmm(1_179_648, 4, 4, chunks=65_536, separation=3.0)
    kwargs = dict(random_state=0, tol=0, max_iter=6, persist=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        calm = GaussianMixture(4, **kwargs).fit(data)
        before = _worker_pids(client)
        victim = next(iter(before.values()))
        killed = threading.Event()

        def kill_soon(init, state):
            if state.n_iter == 2 and not killed.is_set():
                killed.set()
                # Lands while the third pass runs.
                threading.Timer(0.15, os.kill, (victim, signal.SIGKILL)).start()

        hit = GaussianMixture(4, **kwargs).fit(data, iteration_callback=kill_soon)
    assert killed.is_set()
    client.wait_for_workers(2, timeout=60)
    after = _worker_pids(client)
    assert victim not in after.values()  # the worker really died and was replaced
    for name in FITTED:
        np.testing.assert_array_equal(getattr(hit, name), getattr(calm, name))
    assert hit.lower_bounds_ == calm.lower_bounds_


def _kill_on_block_3(block: np.ndarray, block_info=None) -> np.ndarray:
    if block_info is not None and block_info[0]["chunk-location"][0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return block


def test_a_task_that_keeps_killing_workers_ends_with_one_clear_error(process_cluster):
    X = da.from_array(np.random.RandomState(0).randn(8000, 2), chunks=(1000, 2))
    poisoned = X.map_blocks(_kill_on_block_3, dtype=X.dtype)
    tic = time.perf_counter()
    with pytest.raises(RuntimeError, match="killed every worker that ran it") as err:
        GaussianMixture(2, random_state=0, persist=False).fit(poisoned)
    assert time.perf_counter() - tic < 120
    message = str(err.value)
    assert "\n" not in message
    assert "KilledWorker" in message and "memory_limit" in message
    process_cluster.wait_for_workers(2, timeout=60)


###############################################################################
# Security: nothing unpickled, no YAML tags, nothing imported by name


def _package_sources() -> list[Path]:
    return sorted((REPO / "daskgmm").rglob("*.py")) + sorted(
        (REPO / "pipelines").rglob("*.py")
    )


@pytest.mark.parametrize(
    "pattern",
    [
        r"\bimport pickle\b",
        r"\bpickle\.",
        r"\bcloudpickle\b",
        r"allow_pickle\s*=\s*True",
        r"yaml\.load\(",
        r"yaml\.unsafe_load",
        r"\beval\(",
        r"\bexec\(",
        r"import_module\(",
        r"__import__\(",
    ],
)
def test_the_package_never_unpickles_evaluates_or_imports_by_name(pattern):
    offenders = [
        str(path.relative_to(REPO))
        for path in _package_sources()
        if re.search(pattern, path.read_text())
    ]
    assert offenders == []


def test_a_yaml_tag_that_would_run_code_is_refused(tmp_path):
    from tests.conftest import daskgmm_cmd

    witness = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(
        f"pipeline: !!python/object/apply:os.system ['touch {witness}']\n"
        "data: {source: synthetic}\noutput: {directory: out}\n"
    )
    result = daskgmm_cmd("validate", str(config))
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr
    assert not witness.exists()


def test_a_config_cannot_name_code_to_run(tmp_path):
    from tests.conftest import daskgmm_cmd

    config = tmp_path / "job.yaml"
    config.write_text(
        "pipeline: os.system\ndata: {source: synthetic}\noutput: {directory: out}\n"
    )
    result = daskgmm_cmd("validate", str(config))
    assert result.returncode == 2
    assert "pipeline: Input should be 'cluster'" in result.stderr


###############################################################################
# nan_policy="omit": rows with NaN or infinity left out, and counted


def _with_bad_rows(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    X = np.vstack([rng.randn(700, 3), rng.randn(700, 3) + 5.0])
    bad = np.sort(rng.choice(len(X), 37, replace=False))
    X[bad[:20], rng.randint(0, 3, 20)] = np.nan
    X[bad[20:30], 0] = np.inf
    X[bad[30:], 2] = -np.inf
    return X, bad


def _given_start(d: int = 3) -> dict:
    return dict(
        weights_init=[0.5, 0.5],
        means_init=[[0.5] * d, [4.0] * d],
        precisions_init=np.stack([np.eye(d)] * 2),
    )


@pytest.mark.parametrize("scale", ["none", "standard"])
@pytest.mark.parametrize("use_dask", [False, True])
def test_omit_fits_the_finite_rows_only(use_dask, scale):
    X, bad = _with_bad_rows()
    clean = np.delete(X, bad, axis=0)
    data = da.from_array(X, chunks=(333, 3)) if use_dask else X
    kwargs = dict(tol=1e-8, max_iter=50, scale=scale, **_given_start())
    gm = GaussianMixture(2, nan_policy="omit", **kwargs).fit(data)
    ref = GaussianMixture(2, **kwargs).fit(clean)
    assert gm.n_omitted_ == 37
    assert gm.n_iter_ == ref.n_iter_
    for name in FITTED:
        np.testing.assert_allclose(
            getattr(gm, name), getattr(ref, name), rtol=1e-9, atol=1e-12
        )
    np.testing.assert_allclose(gm.lower_bound_, ref.lower_bound_, rtol=1e-10)
    # score, bic: over the finite rows, with their count as the sample size.
    np.testing.assert_allclose(gm.score(data), ref.score(clean), rtol=1e-10)
    np.testing.assert_allclose(gm.bic(data), ref.bic(clean), rtol=1e-10)


def test_omit_gives_omitted_rows_label_minus_one_and_nan():
    X, bad = _with_bad_rows(1)
    gm = GaussianMixture(2, nan_policy="omit", random_state=0).fit(X)
    labels = gm.predict(X)
    proba = gm.predict_proba(X)
    dens = gm.score_samples(X)
    good = np.setdiff1d(np.arange(len(X)), bad)
    assert (labels[bad] == -1).all()
    assert np.isnan(proba[bad]).all() and np.isnan(dens[bad]).all()
    np.testing.assert_array_equal(labels[good], gm.predict(X[good]))
    np.testing.assert_allclose(dens[good], gm.score_samples(X[good]), rtol=1e-12)
    lazy = gm.predict(da.from_array(X, chunks=(400, 3))).compute()
    np.testing.assert_array_equal(lazy, labels)


def test_omit_with_weights_leaves_out_the_rows_and_their_weights():
    X, bad = _with_bad_rows(2)
    w = np.random.RandomState(2).randint(1, 4, size=len(X)).astype(float)
    good = np.setdiff1d(np.arange(len(X)), bad)
    kwargs = dict(tol=1e-8, **_given_start())
    gm = GaussianMixture(2, nan_policy="omit", **kwargs).fit(X, sample_weight=w)
    ref = GaussianMixture(2, **kwargs).fit(X[good], sample_weight=w[good])
    np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-9)
    np.testing.assert_allclose(
        gm.bic(X, sample_weight=w), ref.bic(X[good], sample_weight=w[good]), rtol=1e-10
    )


def test_omit_with_nothing_left_is_an_error():
    X = np.full((50, 2), np.nan)
    with pytest.raises(ValueError, match=r"every row of X .* has NaN or infinity"):
        GaussianMixture(2, nan_policy="omit", **_given_start(2)).fit(X)


def test_raise_is_the_default_and_points_to_omit():
    X, _ = _with_bad_rows()
    with pytest.raises(ValueError, match=r"in 37 row\(s\).*nan_policy='omit'"):
        GaussianMixture(2).fit(X)
    with pytest.raises(
        ValueError, match="The 'nan_policy' parameter of GaussianMixture must be one of"
    ):
        GaussianMixture(2, nan_policy="drop").fit(X)


def test_omit_is_saved_with_the_model(tmp_path):
    import daskgmm

    X, bad = _with_bad_rows(3)
    gm = GaussianMixture(2, nan_policy="omit", random_state=0).fit(X)
    gm.save(str(tmp_path / "model"))
    loaded = daskgmm.load(str(tmp_path / "model"))
    assert loaded.nan_policy == "omit" and loaded.n_omitted_ == 37
    np.testing.assert_array_equal(loaded.predict(X), gm.predict(X))
    assert (loaded.predict(X)[bad] == -1).all()


OMIT_JOB = (
    "data: {source: parquet, path: t.parquet}\n"
    "model: {n_components: 2, nan_policy: omit}\n"
    "output: {directory: out, labels: true}\n"
    "cluster: {n_workers: 1}\n"
)


def test_a_job_with_nan_policy_omit_runs(tmp_path):
    import json

    import pandas as pd

    from tests.conftest import run_job

    X, _ = _with_bad_rows(4)
    table = pd.DataFrame(X, columns=["a", "b", "c"])
    table.to_parquet(tmp_path / "t.parquet")
    result = run_job(tmp_path, OMIT_JOB)
    assert result.returncode == 0, result.stderr
    assert "37 row(s) with NaN or infinity left out of the fit" in result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n_samples"] == len(X)
    assert metrics["n_omitted"] == 37
