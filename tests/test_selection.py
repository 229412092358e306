"""Batched model selection and batched restarts (one pass advances every candidate)."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose

from daskgmm import ConvergenceWarning, GaussianMixture, select_model
from tests.conftest import four_blobs


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return four_blobs()


def _quiet_select(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return select_model(*args, **kwargs)


def _quiet_fit(X, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(**kwargs).fit(X)


@pytest.mark.parametrize("criterion", ["bic", "aic"])
def test_the_criterion_picks_the_true_number_of_components(blobs, criterion):
    X, _ = blobs
    sel = _quiet_select(
        X, range(1, 8), ("full", "diag"), criterion=criterion, random_state=0
    )
    best = sel.table[sel.table["best"]]
    assert len(best) == 1
    assert int(best["n_components"].iloc[0]) == 4
    assert sel.best_.n_components == 4
    assert sel.table[criterion].min() == best[criterion].iloc[0]
    # The best model is fitted and usable.
    assert sel.best_.predict(X).shape == (X.shape[0],)


def test_table_columns_and_order(blobs):
    X, _ = blobs
    sel = _quiet_select(X, [2, 3], ("diag", "spherical"), random_state=0)
    assert tuple(sel.table.columns) == (
        *("n_components", "covariance_type", "n_parameters", "lower_bound"),
        *("log_likelihood", "bic", "aic", "converged", "n_iter", "status"),
        *("error", "best", "kind", "effective_components"),
    )
    assert set(sel.table["kind"]) == {"gaussian"}
    assert list(
        zip(sel.table["covariance_type"], sel.table["n_components"], strict=True)
    ) == [
        ("diag", 2),
        ("diag", 3),
        ("spherical", 2),
        ("spherical", 3),
    ]
    # n_parameters as scikit-learn counts them: d=3.
    assert list(sel.table["n_parameters"]) == [13, 20, 9, 14]
    assert set(sel.models_) == {
        (2, "diag"),
        (3, "diag"),
        (2, "spherical"),
        (3, "spherical"),
    }


@pytest.mark.parametrize("use_dask", [False, True])
def test_batched_candidates_equal_sequential_fits(blobs, use_dask):
    X, _ = blobs
    data = da.from_array(X, chunks=(700, 3)) if use_dask else X
    sel = _quiet_select(
        data,
        [1, 3, 4, 6],
        ("full", "tied", "diag", "spherical"),
        random_state=7,
        max_iter=30,
        n_init=2,
    )
    for row in sel.table.itertuples():
        alone = _quiet_fit(
            data,
            n_components=row.n_components,
            covariance_type=row.covariance_type,
            random_state=7,
            max_iter=30,
            n_init=2,
        )
        assert_allclose(row.lower_bound, alone.lower_bound_, rtol=1e-10)
        assert row.n_iter == alone.n_iter_
        assert row.converged == alone.converged_
        assert_allclose(row.bic, alone.bic(data), rtol=1e-10)
        assert_allclose(row.aic, alone.aic(data), rtol=1e-10)
        model = sel.models_[(row.n_components, row.covariance_type)]
        assert_allclose(model.means_, alone.means_, rtol=1e-10, atol=1e-12)
        assert_allclose(model.covariances_, alone.covariances_, rtol=1e-10, atol=1e-12)


def test_a_sweep_reads_the_data_once_per_iteration(blobs):
    X, _ = blobs
    sel = _quiet_select(X, range(1, 7), ("full",), random_state=0, max_iter=50)
    # One sampling pass, one k-means hard-assignment pass for all candidates, the
    # EM passes of the slowest candidate, one scoring pass.
    assert sel.n_passes == 3 + int(sel.table["n_iter"].max())


def test_a_failing_candidate_is_reported_not_fatal():
    rng = np.random.RandomState(0)
    # Three distinct points repeated, plus a few spread ones: with reg_covar=0 six
    # components collapse onto single points.
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), 50, axis=0)
    X = np.vstack([X, rng.randn(30, 2) * 3])
    sel = _quiet_select(X, [1, 2, 3, 6, 500], ("full",), random_state=0, reg_covar=0)
    table = sel.table.set_index("n_components")
    assert table.loc[6, "status"] == "failed"
    assert "ill-defined empirical covariance" in table.loc[6, "error"]
    assert np.isnan(table.loc[6, "bic"])
    assert table.loc[500, "status"] == "failed"
    assert "n_components = 500, n_samples = 180" in table.loc[500, "error"]
    assert (table.loc[[1, 2, 3], "status"] == "ok").all()
    assert sel.best_.n_components in (1, 2, 3)
    assert (6, "full") not in sel.models_


def test_every_candidate_failing_is_an_error():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0]]), 20, axis=0)
    with pytest.raises(ValueError, match="every candidate of the sweep failed"):
        _quiet_select(X, [50, 60], ("full",), random_state=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_components=[]), "n_components is empty"),
        (dict(n_components=[0, 1]), "integers >= 1"),
        (dict(n_components=[2, 2]), "repeated"),
        (dict(covariance_types=("full", "round")), "covariance_types has 'round'"),
        (dict(covariance_types=()), "covariance_types is empty"),
        (dict(criterion="mdl"), "criterion must be 'bic' or 'aic'"),
        (dict(means_init=np.zeros((2, 3))), "select_model sets means_init"),
        (dict(covariance_type="full"), "select_model sets covariance_type"),
        (dict(tol=-1.0), "tol"),
    ],
)
def test_bad_arguments_are_one_line_errors(blobs, kwargs, match):
    X, _ = blobs
    with pytest.raises(ValueError, match=match):
        select_model(X, **{"n_components": [1, 2], **kwargs})


def test_integer_weights_equal_repeated_rows(blobs):
    X, _ = blobs
    X = X[::8]
    w = np.random.RandomState(3).randint(1, 4, size=X.shape[0])
    kwargs = dict(n_components=[2, 4], covariance_types=("full",), random_state=0)
    # Each candidate is given its initial means, so both runs start alike.
    weighted = _quiet_select(X, sample_weight=w, init_params="k-means++", **kwargs)
    for row in weighted.table.itertuples():
        model = weighted.models_[(row.n_components, "full")]
        alone = GaussianMixture(
            row.n_components, random_state=0, init_params="k-means++"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            alone.fit(X, sample_weight=w)
        assert_allclose(model.means_, alone.means_, rtol=1e-10)
        assert_allclose(row.bic, alone.bic(X, sample_weight=w), rtol=1e-10)


###############################################################################
# k-means comparison (soft versus hard clustering)


def test_adjusted_rand_index_matches_scikit_learn():
    from sklearn.metrics import adjusted_rand_score

    from daskgmm.compare import adjusted_rand_index

    rng = np.random.RandomState(0)
    for _ in range(5):
        a = rng.randint(0, 4, size=500)
        b = np.where(rng.rand(500) < 0.7, a, rng.randint(0, 5, size=500))
        table = np.zeros((4, 5))
        np.add.at(table, (a, b), 1)
        assert_allclose(
            adjusted_rand_index(table), adjusted_rand_score(a, b), rtol=1e-12
        )


@pytest.mark.parametrize("use_dask", [False, True])
def test_compare_with_kmeans_against_brute_force(use_dask):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from daskgmm.compare import compare_with_kmeans

    rng = np.random.RandomState(2)
    # Two overlapping components and one apart: some rows are uncertain.
    X = np.vstack(
        [
            rng.randn(1500, 2),
            rng.randn(1500, 2) + np.array([2.0, 0.0]),
            rng.randn(1000, 2) + 9,
        ]
    )
    data = da.from_array(X, chunks=(900, 2)) if use_dask else X
    gm = GaussianMixture(3, random_state=0).fit(data)
    result = compare_with_kmeans(gm, data, random_state=0)
    proba = np.asarray(gm.predict_proba(X))
    assert_allclose(result["uncertain_share"], np.mean(proba.max(axis=1) < 0.9))
    assert 0.05 < result["uncertain_share"] < 0.6
    centers = np.asarray(result["kmeans_centers"])
    km_labels = ((X[:, None, :] - centers) ** 2).sum(axis=2).argmin(axis=1)
    gm_labels = proba.argmax(axis=1)
    assert_allclose(
        result["kmeans_adjusted_rand_index"],
        adjusted_rand_score(gm_labels, km_labels),
        rtol=1e-10,
    )
    assert np.asarray(result["contingency"]).sum() == X.shape[0]
    assert result["kmeans_converged"]
    reference = KMeans(3, n_init=10, random_state=0).fit(X)
    assert_allclose(result["kmeans_inertia"], reference.inertia_, rtol=1e-3)
    assert 0.5 < result["kmeans_agreement"] <= 1.0


###############################################################################
# The select_model job


def test_sweep_config_runs_and_writes_the_table_and_report(tmp_path):
    import json

    import pandas as pd

    from tests.conftest import daskgmm_cmd, run_args

    out = tmp_path / "out"
    result = daskgmm_cmd(
        *run_args(
            "sweep",
            out,
            "data.synthetic.n_samples=20000",
            "select.n_components=[1,2,3,4,5,6]",
        )
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "selection.csv")
    assert len(table) == 12  # 6 K x (full, diag)
    best = table[table["best"]]
    assert list(best["n_components"]) == [4]  # the synthetic data has 4 components
    assert best["bic"].iloc[0] == table["bic"].min()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_components"] == 4
    assert metrics["selection"]["candidates"] == 12
    assert metrics["selection"]["passes"] == 3 + table["n_iter"].max()
    assert len(metrics["candidates"]) == 12
    assert 0.9 < metrics["kmeans"]["kmeans_adjusted_rand_index"] <= 1.0
    assert 0.0 <= metrics["kmeans"]["uncertain_share"] < 0.1
    report = (out / "report" / "report.md").read_text()
    assert "## Model selection" in report and "selection.png" in report
    assert "## Soft versus hard clustering" in report
    assert (out / "report" / "selection.png").stat().st_size > 10_000
    model = json.loads((out / "model" / "model.json").read_text())
    assert model["params"]["n_components"] == 4


def test_sweep_job_refuses_initial_parameters(tmp_path):
    from tests.conftest import REPO, daskgmm_cmd

    out = tmp_path / "out"
    base = [
        "run",
        str(REPO / "configs" / "sweep.yaml"),
        "--set",
        "data.synthetic.n_samples=2000",
        "--set",
        f"output.directory={out}",
        "--quiet",
    ]
    result = daskgmm_cmd(*base, "--set", "model.weights_init=[0.5,0.5]")
    assert result.returncode == 1
    assert "model.weights_init is not used by select_model" in result.stderr
    assert not out.exists()


def test_a_sweep_resumed_from_its_checkpoint_ends_as_an_uninterrupted_one(
    tmp_path, blobs
):
    from daskgmm.checkpoint import Checkpoint

    X, _ = blobs
    grid = dict(n_components=[1, 2, 4], covariance_types=["full", "diag"])
    kwargs = dict(random_state=3, tol=0.0, n_init=2, **grid)
    straight = _quiet_select(X, max_iter=8, **kwargs)
    checkpoint = Checkpoint(str(tmp_path / "ckpt"), "sweep")
    _quiet_select(X, max_iter=3, checkpoint=checkpoint, **kwargs)
    states = checkpoint.read()
    assert len(states) == 6 * 2  # every run of every candidate
    assert {s.n_iter for s in states} == {3}
    resumed = _quiet_select(X, max_iter=8, checkpoint=checkpoint, resume=True, **kwargs)
    assert resumed.table["bic"].tolist() == straight.table["bic"].tolist()
    for key, model in straight.models_.items():
        assert resumed.models_[key].lower_bounds_ == model.lower_bounds_
        np.testing.assert_array_equal(resumed.models_[key].means_, model.means_)
