"""BayesianGaussianMixture against scikit-learn's, from the same responsibilities."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SklearnBayesian

from daskgmm import BayesianGaussianMixture, load
from daskgmm import _kernels as K
from daskgmm import _variational as V
from daskgmm._em import run_em_batched
from daskgmm._init import InitPlan, plan_statistics
from daskgmm._plan import plan_fit
from daskgmm._preprocess import Scaling
from daskgmm._runner import Candidate, FitSpace, _moments_call, _prior
from daskgmm.datasets import make_gmm
from daskgmm.fitted import FittedMixture
from daskgmm.mixture import set_fitted

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
N_ITER = 25


def _synthetic() -> np.ndarray:
    X, _, _ = make_gmm(600, 3, 4, chunks=600, separation=3.0, random_state=3)
    return X.compute()


DATA = {
    "iris": lambda: load_iris().data,
    "wine": lambda: load_wine().data,
    "synthetic": _synthetic,
}


def _labels(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    km = KMeans(n_clusters=k, n_init=1, random_state=0).fit(X)
    return km.labels_, km.cluster_centers_


class _Seeded(SklearnBayesian):
    """scikit-learn's estimator started from given labels."""

    labels: np.ndarray = None

    def _initialize_parameters(self, X, random_state, xp=None):
        resp = np.zeros((X.shape[0], self.n_components))
        resp[np.arange(X.shape[0]), self.labels] = 1.0
        self._initialize(X, resp)


def _reference(X, labels, k, ctype, prior_type) -> SklearnBayesian:
    model = _Seeded(
        n_components=k,
        covariance_type=ctype,
        weight_concentration_prior_type=prior_type,
        max_iter=N_ITER,
        tol=0.0,
        random_state=0,
    )
    model.labels = labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        model.fit(X)
    return model


def _ours(X, centers, k, ctype, prior_type) -> V.VariationalRun:
    """The same start (hard assignment to the k-means centres) on daskgmm's passes."""
    passes = plan_fit(X).passes
    space = FitSpace(passes, Scaling.identity(X.shape[1]))
    plan = InitPlan(
        ctype,
        1e-6,
        kernel=K.hard_assign_block,
        kernel_params=(centers, ctype),
        name="init-kmeans",
        shifts=centers,
    )
    center = X[:10].mean(axis=0)
    (stats,), (moments,) = plan_statistics(
        passes, [plan], [_moments_call(center, space)]
    )
    cand = Candidate(
        k,
        ctype,
        variational={
            "prior_type": prior_type,
            "weight_concentration_prior": None,
            "mean_precision_prior": None,
            "mean_prior": None,
            "degrees_of_freedom_prior": None,
            "covariance_prior": None,
        },
    )
    prior = _prior(cand, moments, center, space)
    start = V.posterior(*plan.counts(stats), prior, ctype)
    run = V.VariationalRun(start, ctype, 0.0, 1e-6, N_ITER, prior=prior)
    run.set_posterior(start)
    run_em_batched(passes, [run])
    return run


def _posterior_pairs(run: V.VariationalRun, ref: SklearnBayesian) -> list:
    post = run.posterior
    wc = post.weight_concentration
    ref_wc = ref.weight_concentration_
    pairs = [
        ("weight_concentration", np.ravel(wc), np.ravel(ref_wc)),
        ("mean_precision", post.mean_precision, ref.mean_precision_),
        ("means", post.means, ref.means_),
        ("degrees_of_freedom", post.degrees_of_freedom, ref.degrees_of_freedom_),
        ("covariances", post.covariances, ref.covariances_),
        ("precisions_cholesky", post.precisions_cholesky, ref.precisions_cholesky_),
        ("weights", run.params.weights, ref.weights_),
    ]
    return pairs


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("data", list(DATA))
def test_same_lower_bounds_and_posterior_as_scikit_learn(data, ctype, prior_type):
    X = DATA[data]()
    k = 4
    labels, centers = _labels(X, k)
    ref = _reference(X, labels, k, ctype, prior_type)
    run = _ours(X, centers, k, ctype, prior_type)
    # The priors scikit-learn takes from the data.
    assert_allclose(run.prior.mean, ref.mean_prior_, rtol=1e-10)
    assert_allclose(run.prior.covariance, ref.covariance_prior_, rtol=1e-10)
    assert run.n_iter == N_ITER == len(ref.lower_bounds_)
    assert_allclose(run.history, np.ravel(ref.lower_bounds_), rtol=1e-8)
    for name, ours, theirs in _posterior_pairs(run, ref):
        assert_allclose(ours, theirs, rtol=1e-8, atol=1e-12, err_msg=name)


def _five_blobs(n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    means = np.array(
        [[0, 0, 0], [8, 0, 0], [0, 8, 0], [0, 0, 8], [8, 8, 8]], dtype=np.float64
    )
    labels = rng.integers(0, 5, size=n)
    return means[labels] + rng.normal(scale=0.7, size=(n, 3)), means


def _surviving_means(model, threshold: float = 0.01) -> np.ndarray:
    keep = model.weights_ > threshold
    return model.means_[keep]


def _assert_five_found(model, truth: np.ndarray) -> None:
    assert model.converged_
    found = _surviving_means(model)
    assert found.shape[0] == 5
    error = np.min(np.linalg.norm(found[:, None] - truth[None], axis=2), axis=0)
    assert error.max() < 0.05


def test_five_components_survive_of_twelve_on_numpy():
    X, truth = _five_blobs()
    model = BayesianGaussianMixture(12, random_state=0, max_iter=600).fit(X)
    _assert_five_found(model, truth)
    assert len(np.unique(model.predict(X))) == 5


def test_five_components_survive_of_twelve_on_zarr_on_a_local_cluster(tmp_path):
    from daskgmm.io import read_zarr, write_zarr
    from tests.conftest import local_client

    X, truth = _five_blobs()
    write_zarr(da.from_array(X, chunks=(2500, 3)), tmp_path / "x.zarr")
    with local_client(2, processes=True):
        model = BayesianGaussianMixture(12, random_state=0, max_iter=600).fit(
            read_zarr(tmp_path / "x.zarr")
        )
    _assert_five_found(model, truth)


def test_save_and_load_keep_the_posterior(tmp_path):
    X, _ = _five_blobs(3000)
    model = BayesianGaussianMixture(
        6, weight_concentration_prior_type="dirichlet_process", random_state=0
    ).fit(X)
    model.save(tmp_path / "m")
    back = load(tmp_path / "m")
    assert type(back) is BayesianGaussianMixture
    for name in ("weights_", "means_", "covariances_", "mean_precision_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(model, name))
    for a, b in zip(
        back.weight_concentration_, model.weight_concentration_, strict=True
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(back.score_samples(X), model.score_samples(X))


def test_predictions_use_the_variational_densities_as_scikit_learn():
    X = load_iris().data
    labels, _ = _labels(X, 3)
    ref = _reference(X, labels, 3, "full", "dirichlet_process")
    ours = BayesianGaussianMixture(3, random_state=0)
    # The reference's posterior as ours (attributes), then predictions compared.
    fm = FittedMixture(
        "full",
        ref.weights_,
        ref.means_,
        ref.covariances_,
        ref.precisions_,
        ref.precisions_cholesky_,
        Scaling.identity(4),
        True,
        N_ITER,
        float(ref.lower_bound_),
        list(ref.lower_bounds_),
        4,
        estimator="BayesianGaussianMixture",
        prior_type="dirichlet_process",
        variational={
            "weight_concentration_": ref.weight_concentration_,
            "mean_precision_": ref.mean_precision_,
            "degrees_of_freedom_": ref.degrees_of_freedom_,
            "weight_concentration_prior_": ref.weight_concentration_prior_,
            "mean_precision_prior_": ref.mean_precision_prior_,
            "mean_prior_": ref.mean_prior_,
            "degrees_of_freedom_prior_": ref.degrees_of_freedom_prior_,
            "covariance_prior_": ref.covariance_prior_,
        },
    )
    set_fitted(ours, fm)
    assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-9, atol=1e-12)
    assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-10)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_a_sweep_holds_a_bayesian_row_beside_the_bic_sweep():
    from daskgmm import select_model

    X, _ = _five_blobs(8000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        selection = select_model(
            X,
            range(2, 9),
            ["full", "diag"],
            random_state=0,
            bayesian=True,
            max_iter=600,
        )
    table = selection.table
    best = table[table["best"]].iloc[0]
    assert best["kind"] == "gaussian" and best["n_components"] == 5
    bayesian = table[table["kind"] == "bayesian"]
    assert list(bayesian["covariance_type"]) == ["full", "diag"]
    assert list(bayesian["n_components"]) == [8, 8]
    assert list(bayesian["effective_components"]) == [5, 5]
    assert bayesian["bic"].isna().all()
    model = selection.models_[("bayesian", "full")]
    assert type(model).__name__ == "BayesianGaussianMixture"
    assert (model.weights_ > 0.01).sum() == 5


def test_segment_auto_k_picks_the_number_of_segments(tmp_path):
    import json
    import subprocess
    import sys

    from PIL import Image

    rng = np.random.default_rng(0)
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]])
    regions = np.repeat(np.arange(3), 40)[None, :].repeat(90, axis=0)  # 90 x 120
    pixels = colours[regions] + rng.normal(scale=6.0, size=(90, 120, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(tmp_path / "i.png")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "daskgmm.cli", "segment", str(tmp_path / "i.png")),
            *("--auto-k", "--max-components", "10", "--out", str(tmp_path / "out")),
            *("--workers", "1", "--max-iter", "500", "--quiet", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["model"]["kind"] == "bayesian"
    assert summary["model"]["n_components"] == 10
    assert summary["model"]["effective_components"] == 3
    import zarr

    labels = zarr.open_array(str(tmp_path / "out" / "labels.zarr"), mode="r")[:]
    assert len(np.unique(labels)) == 3


def _quiet_fit(X, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BayesianGaussianMixture(**params).fit(X)


def test_integer_weights_equal_repeated_rows():
    X, _ = _five_blobs(1500)
    w = np.random.default_rng(2).integers(0, 3, size=len(X))
    params = dict(n_components=6, random_state=0, max_iter=40, tol=0.0)
    weighted = BayesianGaussianMixture(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weighted.fit(X, sample_weight=w)
    # The priors come from the data: the weighted rows' equal the repeated rows'.
    repeated = _quiet_fit(np.repeat(X, w, axis=0), init_params="kmeans", **params)
    assert_allclose(weighted.mean_prior_, repeated.mean_prior_, rtol=1e-10)
    assert_allclose(weighted.covariance_prior_, repeated.covariance_prior_, rtol=1e-9)


def test_dask_input_in_any_chunks_gives_the_same_fit():
    X, _ = _five_blobs(4000)
    params = dict(n_components=6, random_state=0, max_iter=30, init_params="kmeans")
    ref = _quiet_fit(X, **params)
    for chunks in (4000, 1000, 333):
        got = _quiet_fit(
            da.from_array(X, chunks=(chunks, 3)), **params, init_sample_size=4000
        )
        assert_allclose(got.lower_bounds_, ref.lower_bounds_, rtol=1e-10)
        assert_allclose(got.means_, ref.means_, rtol=1e-9, atol=1e-12)


def test_nan_rows_omitted_scaling_and_restarts():
    X, truth = _five_blobs()
    X = X + 1e6  # far from the origin
    X[::97] = np.nan
    model = _quiet_fit(
        X,
        n_components=8,
        random_state=0,
        max_iter=600,
        nan_policy="omit",
        scale="standard",
        n_init=2,
    )
    assert model.n_omitted_ == len(X[::97])
    assert (model.weights_ > 0.01).sum() == 5
    found = model.means_[model.weights_ > 0.01]
    error = np.min(np.linalg.norm(found[:, None] - (truth + 1e6)[None], axis=2), axis=0)
    assert error.max() < 0.05
    labels = model.predict(X)
    assert (labels[::97] == -1).all()
