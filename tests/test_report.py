"""Fit reports of ``daskgmm.report``: the geometry against independent math, and the
files ``write_report`` writes (valid PNGs, JSON, Markdown, atomic and overwrite).

References: covariance matrices built by hand from the fitted attributes and checked
through scipy's ``multivariate_normal`` against the model's own log-densities; the
Mahalanobis distance by ``np.linalg.solve``; principal axes by ``np.linalg.eigh`` of
``np.cov``; projected covariances by the sample covariance of projected draws;
responsibilities by scipy with ``logsumexp``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from numpy.testing import assert_allclose
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

import daskgmm.report
from daskgmm import GaussianMixture, NotFittedError
from daskgmm.report import (
    covariance_matrices,
    ellipse_points,
    json_safe,
    label_agreement,
    mixture_density_1d,
    principal_axes,
    project_gaussians,
    projection_planes,
    share_uncertain,
    write_report,
)

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
PNGS = ("loglik", "projections", "responsibility_hist")
COMPUTED_KEYS = ("n_components", "covariance_type", "converged", "n_iter")
N_ROWS = 1500


###############################################################################
# Data, fits and references


def mixture_data(
    n_features: int, seed: int = 0, spread: float = 3.5
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 3 correlated Gaussians whose means are ``spread`` apart (some overlap)."""
    rng = np.random.default_rng(seed)
    if n_features == 1:
        centres = spread * np.array([[0.0], [1.0], [2.0]])
    else:
        corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(0.75)]])
        centres = np.zeros((3, n_features))
        centres[:, :2] = spread * corners
    labels = rng.integers(0, 3, size=N_ROWS)
    rows = np.empty((N_ROWS, n_features))
    for k in range(3):
        b = rng.normal(size=(n_features, n_features))
        cov = 0.5 * np.eye(n_features) + 0.5 * b @ b.T / n_features
        rows[labels == k] = rng.multivariate_normal(
            centres[k], cov, size=(labels == k).sum()
        )
    return rows, labels


_FITS: dict[tuple[int, str], tuple[GaussianMixture, np.ndarray, np.ndarray]] = {}


def fitted(
    n_features: int, covariance_type: str = "full"
) -> tuple[GaussianMixture, np.ndarray, np.ndarray]:
    """A 3-component fit on ``mixture_data`` (cached: fits take a few 100 ms)."""
    key = (n_features, covariance_type)
    if key not in _FITS:
        X, y = mixture_data(n_features)
        model = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(
            X
        )
        _FITS[key] = (model, X, y)
    return _FITS[key]


def hand_built_covariances(model) -> np.ndarray:
    """Full (K, d, d) covariances written out for each covariance type."""
    k, d = model.means_.shape
    cov = model.covariances_
    if model.covariance_type == "full":
        return np.array([cov[j] for j in range(k)])
    if model.covariance_type == "tied":
        return np.array([cov for _ in range(k)])
    if model.covariance_type == "diag":
        return np.array([np.diag(cov[j]) for j in range(k)])
    return np.array([cov[j] * np.eye(d) for j in range(k)])


def scipy_log_joint(weights, means, covariances, X) -> np.ndarray:
    """log π_k + log N(x | μ_k, Σ_k) of every row and component, by scipy."""
    return np.column_stack(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(X).reshape(-1)
            for w, m, c in zip(weights, means, covariances, strict=True)
        ]
    )


def scipy_responsibilities(model, X) -> np.ndarray:
    cov = hand_built_covariances(model)
    log_joint = scipy_log_joint(model.weights_, model.means_, cov, X)
    return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))


def assert_valid_png(path: str) -> None:
    """A PNG of a figure: large enough and more than a handful of colours."""
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    height, width = image.shape[:2]
    assert height >= 300 and width >= 400, image.shape
    rgb = np.round(image[..., :3] * 255).astype(np.uint32)
    colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
    assert len(colours) > 50, f"{path}: only {len(colours)} colours"
    assert image[..., :3].std() > 0.02


def read_json(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def no_temporary_leftovers(parent) -> bool:
    return not [name for name in os.listdir(parent) if ".tmp-" in name]


###############################################################################
# covariance_matrices


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_covariance_matrices_equal_the_full_matrices_built_by_hand(covariance_type):
    model, X, _ = fitted(3, covariance_type)
    full = covariance_matrices(model)
    assert full.shape == (3, 3, 3)
    assert_allclose(full, hand_built_covariances(model), rtol=0, atol=0)
    # The matrices give the model's own log-densities through scipy.
    log_joint = scipy_log_joint(model.weights_, model.means_, full, X[:200])
    assert_allclose(
        logsumexp(log_joint, axis=1), model.score_samples(X[:200]), rtol=1e-9
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_covariance_matrices_of_a_scikit_learn_model(covariance_type):
    X, _ = mixture_data(3)
    model = SklearnGaussianMixture(
        3, covariance_type=covariance_type, random_state=0
    ).fit(X)
    full = covariance_matrices(model)
    assert_allclose(full, hand_built_covariances(model), rtol=0, atol=0)
    log_joint = scipy_log_joint(model.weights_, model.means_, full, X[:200])
    assert_allclose(
        logsumexp(log_joint, axis=1), model.score_samples(X[:200]), rtol=1e-9
    )


def test_covariance_matrices_of_an_unfitted_model_raise():
    with pytest.raises(NotFittedError, match="This GaussianMixture instance is not"):
        covariance_matrices(GaussianMixture(2))


###############################################################################
# ellipse_points


@pytest.mark.parametrize("n_std", [1.0, 2.0, 3.5])
@pytest.mark.parametrize("seed", range(5))
def test_ellipse_points_lie_at_mahalanobis_distance_n_std(seed, n_std):
    rng = np.random.default_rng(seed)
    mean = rng.normal(scale=10, size=2)
    b = rng.normal(size=(2, 2))
    cov = b @ b.T + 0.01 * np.eye(2) * 10.0 ** rng.uniform(-2, 2)
    points = ellipse_points(mean, cov, n_std, n=257)
    assert points.shape == (257, 2)
    diff = points - mean
    distance = np.sqrt(np.einsum("ni,ni->n", diff, np.linalg.solve(cov, diff.T).T))
    assert np.abs(distance - n_std).max() < 1e-9
    assert_allclose(points[0], points[-1], atol=1e-12)  # a closed curve
    # All the way round: the whitened directions cover every quadrant.
    white = np.linalg.solve(np.linalg.cholesky(cov), diff.T).T
    angles = np.arctan2(white[:, 1], white[:, 0])
    assert np.histogram(angles, bins=4, range=(-np.pi, np.pi))[0].min() > 50


def test_ellipse_points_of_a_diagonal_covariance_reach_the_axis_ends():
    points = ellipse_points([1.0, -2.0], np.diag([4.0, 0.25]), 2.0, n=401)
    assert_allclose(points[:, 0].max(), 1.0 + 2.0 * 2.0, rtol=1e-6)
    assert_allclose(points[:, 1].min(), -2.0 - 2.0 * 0.5, rtol=1e-6)


def test_ellipse_points_reject_a_covariance_that_is_not_2_by_2():
    with pytest.raises(
        ValueError, match=r"cov2 must have shape \(2, 2\), got \(3, 3\)"
    ):
        ellipse_points([0.0, 0.0], np.eye(3), 1.0)


###############################################################################
# Projections


def test_principal_axes_are_the_leading_eigenvectors_of_the_sample_covariance():
    X, _ = mixture_data(6)
    axes, explained = principal_axes(X)
    values, vectors = np.linalg.eigh(np.cov(X, rowvar=False))
    order = np.argsort(values)[::-1][:2]
    for row, j in zip(axes, order, strict=True):
        assert abs(abs(row @ vectors[:, j]) - 1.0) < 1e-9
        assert row[np.abs(row).argmax()] > 0
    assert_allclose(explained, values[order] / values.sum(), rtol=1e-9)


def test_projection_map_beyond_four_features_is_orthonormal_and_projects_gaussians():
    X, _ = mixture_data(6)
    (plane,) = projection_planes(X, [f"f{j}" for j in range(6)])
    A = plane.axes
    assert A.shape == (2, 6)
    assert_allclose(A @ A.T, np.eye(2), atol=1e-12)
    assert plane.xlabel.startswith("PC 1: ") and plane.ylabel.startswith("PC 2: ")

    rng = np.random.default_rng(1)
    mean = rng.normal(size=6)
    b = rng.normal(size=(6, 6))
    cov = b @ b.T / 6 + 0.3 * np.eye(6)
    means2, covs2 = project_gaussians(mean[None], cov[None], A)
    n = 200_000
    projected = rng.multivariate_normal(mean, cov, size=n) @ A.T
    # Standard errors: var(x̄_i) = Σ_ii / n, var(S_ij) ≈ (Σ_ii Σ_jj + Σ_ij²) / n.
    c = covs2[0]
    mean_se = np.sqrt(np.diag(c) / n)
    cov_se = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / n)
    assert (np.abs(projected.mean(axis=0) - means2[0]) < 5 * mean_se).all()
    assert (np.abs(np.cov(projected, rowvar=False) - c) < 5 * cov_se).all()


@pytest.mark.parametrize(
    ("n_features", "pairs"),
    [
        (2, [(0, 1)]),
        (3, [(0, 1), (0, 2), (1, 2)]),
        (4, [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]),
    ],
)
def test_projection_planes_up_to_four_features_are_the_feature_pairs(n_features, pairs):
    X, _ = mixture_data(n_features)
    names = ["alpha", "beta", "gamma", "delta"][:n_features]
    planes = projection_planes(X, names)
    assert [(p.xlabel, p.ylabel) for p in planes] == [
        (names[i], names[j]) for i, j in pairs
    ]
    for plane, (i, j) in zip(planes, pairs, strict=True):
        assert_allclose(X @ plane.axes.T, X[:, [i, j]], rtol=0, atol=0)


def test_mixture_density_1d_equals_the_scipy_mixture_and_integrates_to_one():
    model, _, _ = fitted(1)
    grid = np.linspace(-10.0, 20.0, 20_001)
    density = mixture_density_1d(model, grid)
    expected = [
        w * norm(m[0], np.sqrt(c.reshape(-1)[0])).pdf(grid)
        for w, m, c in zip(
            model.weights_, model.means_, model.covariances_, strict=True
        )
    ]
    assert_allclose(density, expected, rtol=1e-12, atol=1e-300)
    assert_allclose(np.trapezoid(density.sum(axis=0), grid), 1.0, rtol=1e-6)


###############################################################################
# Metrics helpers


def test_share_uncertain_counts_rows_below_the_threshold():
    resp = np.array([[0.95, 0.05], [0.5, 0.5], [0.9, 0.1], [0.1, 0.89]])
    # 0.9 is not below 0.9; the last row's largest value is 0.89
    assert share_uncertain(resp) == 0.5


def test_label_agreement_matches_labels_one_to_one():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert label_agreement(labels, np.array([5, 5, 7, 7, 7, 9])) == 5 / 6
    assert label_agreement(labels, np.array([2, 2, 0, 0, 1, 1])) == 1.0
    assert label_agreement(labels, np.zeros(6, dtype=int)) == 2 / 6


def test_json_safe_converts_numpy_values_and_non_finite_numbers():
    value = {
        "a": np.float32(1.5),
        "b": np.int64(7),
        "c": [np.inf, -np.inf, np.nan, 2.0],
        "d": np.array([[1, 2], [3, 4]]),
        "e": (np.bool_(True), None, "x"),
        1: {"nested": np.float64(np.nan)},
    }
    assert json_safe(value) == {
        "a": 1.5,
        "b": 7,
        "c": [None, None, None, 2.0],
        "d": [[1, 2], [3, 4]],
        "e": [True, None, "x"],
        "1": {"nested": None},
    }
    assert isinstance(json_safe(np.int64(3)), int)


def test_json_safe_names_a_value_it_cannot_convert():
    with pytest.raises(
        TypeError, match=r"metrics\['x'\]\[1\] of type object cannot be written"
    ):
        json_safe({"x": [1, object()]})


###############################################################################
# write_report


@pytest.mark.parametrize("n_features", [1, 2, 3, 6])
def test_write_report_writes_every_file(tmp_path, n_features):
    model, X, y = fitted(n_features)
    out = tmp_path / "report"
    given = {
        "lower_bound": np.float64(model.lower_bound_),
        "bic": model.bic(X),
        "n_samples": np.int64(len(X)),
        "seconds_per_iteration": np.float32(0.25),
    }
    paths = write_report(model, X, out, metrics=given, kmeans_labels=(y + 1) % 3)

    assert set(paths) == {
        "loglik",
        "projections",
        "responsibility_hist",
        "metrics",
        "report",
    }
    assert sorted(os.listdir(out)) == sorted(
        [".daskgmm", *(os.path.basename(p) for p in paths.values())]
    )
    for key in PNGS:
        assert paths[key] == str(out / f"{key}.png")
        assert_valid_png(paths[key])

    metrics = read_json(paths["metrics"])
    assert metrics["n_components"] == 3
    assert metrics["covariance_type"] == "full"
    assert metrics["converged"] is bool(model.converged_)
    assert metrics["n_iter"] == model.n_iter_ == len(model.lower_bounds_)
    assert metrics["sample_rows"] == len(X)
    expected_share = np.mean(scipy_responsibilities(model, X).max(axis=1) < 0.9)
    assert metrics["share_uncertain"] == expected_share
    assert 0.0 < metrics["share_uncertain"] < 0.5  # the data overlap somewhat
    assert metrics["lower_bound"] == model.lower_bound_
    assert metrics["n_samples"] == N_ROWS
    assert metrics["seconds_per_iteration"] == 0.25
    # Labels from k-means are matched to the mixture's, whatever their names.
    assert metrics["kmeans_agreement"] == label_agreement(model.predict(X), y)
    assert metrics["kmeans_agreement"] > 0.8

    text = (out / "report.md").read_text(encoding="utf-8")
    assert text.startswith("# Gaussian mixture fit report\n")
    assert "| metric | value |" in text
    for key in metrics:
        assert f"| {key} | " in text
    for key in PNGS:
        assert re.search(rf"!\[[^\]]+\]\({key}\.png\)", text), key  # image
        assert f"[{key}.png]({key}.png)" in text  # link


def test_metrics_json_holds_null_for_non_finite_values(tmp_path):
    model, X, _ = fitted(2)
    paths = write_report(
        model,
        X,
        tmp_path / "r",
        metrics={"aic": np.inf, "bic": np.float64(np.nan), "sizes": np.arange(3)},
    )
    with open(paths["metrics"], encoding="utf-8") as f:
        raw = f.read()
    assert "NaN" not in raw and "Infinity" not in raw
    metrics = json.loads(raw)
    assert metrics["aic"] is None and metrics["bic"] is None
    assert metrics["sizes"] == [0, 1, 2]
    with open(paths["report"], encoding="utf-8") as f:
        assert "| aic | n/a |" in f.read()


def test_computed_metrics_replace_given_ones_with_a_warning(tmp_path, caplog):
    model, X, _ = fitted(2)
    with caplog.at_level(logging.WARNING, logger="daskgmm"):
        paths = write_report(model, X, tmp_path / "r", metrics={"n_iter": 999})
    assert read_json(paths["metrics"])["n_iter"] == model.n_iter_
    assert "metrics['n_iter'] = 999 replaced by the computed value" in caplog.text


@pytest.mark.filterwarnings("ignore::daskgmm.ConvergenceWarning")
@pytest.mark.parametrize("max_iter", [0, 1])
def test_write_report_after_zero_or_one_iteration(tmp_path, max_iter):
    X, _ = mixture_data(2)
    model = GaussianMixture(3, max_iter=max_iter, random_state=0).fit(X)
    paths = write_report(model, X, tmp_path / "r", metrics={})
    for key in PNGS:
        assert_valid_png(paths[key])
    metrics = read_json(paths["metrics"])
    assert metrics["n_iter"] == max_iter
    assert metrics["converged"] is False


def test_write_report_plots_a_subsample_and_counts_every_row(tmp_path, monkeypatch):
    monkeypatch.setattr(daskgmm.report, "MAX_POINTS", 200)
    model, X, _ = fitted(2)
    paths = write_report(model, X, tmp_path / "r", metrics={})
    metrics = read_json(paths["metrics"])
    assert metrics["sample_rows"] == len(X)
    expected = np.mean(scipy_responsibilities(model, X).max(axis=1) < 0.9)
    assert metrics["share_uncertain"] == expected
    assert_valid_png(paths["projections"])


def test_write_report_checks_its_inputs_before_writing(tmp_path):
    model, X, y = fitted(2)
    out = tmp_path / "r"
    with pytest.raises(ValueError, match=r"sample must have shape \(n_rows, 2\)"):
        write_report(model, X[:, :1], out, metrics={})
    with pytest.raises(ValueError, match="feature_names has 3 names for 2 features"):
        write_report(model, X, out, metrics={}, feature_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="kmeans_labels has 10 labels for 1500"):
        write_report(model, X, out, metrics={}, kmeans_labels=y[:10])
    with pytest.raises(TypeError, match=r"metrics\['when'\] of type object"):
        write_report(model, X, out, metrics={"when": object()})
    with pytest.raises(NotFittedError, match="not fitted yet"):
        write_report(GaussianMixture(2), X, out, metrics={})
    assert os.listdir(tmp_path) == []


def _dir_holding(path: Path, name: str, text: str) -> Path:
    """``path`` made a directory holding one file ``name`` of ``text``."""
    path.mkdir()
    (path / name).write_text(text)
    return path


def test_existing_out_dir_is_an_error_and_left_alone(tmp_path):
    model, X, _ = fitted(2)
    out = _dir_holding(tmp_path / "r", "keep.txt", "mine")
    with pytest.raises(FileExistsError, match="already exists; remove it or allow"):
        write_report(model, X, out, metrics={})
    assert os.listdir(out) == ["keep.txt"]
    assert no_temporary_leftovers(tmp_path)


def test_overwrite_replaces_the_whole_directory(tmp_path):
    model, X, _ = fitted(2)
    out = _dir_holding(tmp_path / "r", "stale.txt", "old")
    # A directory daskgmm did not write is never replaced.
    with pytest.raises(FileExistsError, match="was not written by daskgmm"):
        write_report(model, X, out, metrics={"run": 2}, overwrite=True)
    assert os.listdir(out) == ["stale.txt"]
    (out / ".daskgmm").write_text("")  # as an earlier report left it
    write_report(model, X, out, metrics={"run": 2}, overwrite=True)
    assert "stale.txt" not in os.listdir(out)
    assert read_json(out / "metrics.json")["run"] == 2
    assert sorted(os.listdir(tmp_path)) == ["r"]


def test_a_failure_while_writing_leaves_the_previous_report(tmp_path, monkeypatch):
    model, X, _ = fitted(2)
    out = tmp_path / "r"
    write_report(model, X, out, metrics={"run": 1})
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(daskgmm.report, "_plot_responsibility", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(model, X, out, metrics={"run": 2}, overwrite=True)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(model, X, tmp_path / "new", metrics={})
    assert sorted(os.listdir(tmp_path)) == ["r"]


def test_import_daskgmm_and_its_report_module_do_not_import_matplotlib():
    code = (
        "import sys; import daskgmm, daskgmm.report; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
