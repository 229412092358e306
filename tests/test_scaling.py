"""Scaling in the estimator, model files and jobs (``scale`` and ``log1p``).

The references are independent of the code under test: scalings from NumPy's mean,
standard deviation, min and max; a model fitted by hand on the scaled rows and its
parameters mapped back with NumPy; log-densities from ``scipy.stats``; clusterings
against known labels (adjusted Rand index).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

import daskgmm
from daskgmm import ConvergenceWarning, GaussianMixture, select_model
from daskgmm._em import DataPasses
from daskgmm._preprocess import Scaling
from tests.conftest import run_job

CENTRES = np.array([[0.0, 0.0], [6.0, 0.0], [3.0, 5.2]])  # 6 sd apart
SKEWED_MEANS = np.array([1.0, 2.5, 4.0])  # of log1p(amount) per cluster


###############################################################################
# Data


def clusters(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three round clusters in two columns 1e6 apart in scale: a thickness in
    metres (sd 2.6e-4) and a price in euros (sd 265)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    z = CENTRES[labels] + rng.normal(size=(n, 2))
    X = np.column_stack([0.002 + 1e-4 * z[:, 0], 4000.0 + 100.0 * z[:, 1]])
    return X, labels


def with_amount(n: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`clusters` plus a skewed positive column whose log1p is Gaussian."""
    X, labels = clusters(n, seed)
    rng = np.random.default_rng(seed + 1)
    amount = np.expm1(SKEWED_MEANS[labels] + 0.3 * rng.normal(size=n))
    frame = pd.DataFrame(
        {"thickness_m": X[:, 0], "amount": amount, "price_eur": X[:, 1]}
    )
    return frame, labels


def hand_scaling(Y: np.ndarray, method: str, w: np.ndarray | None = None) -> tuple:
    """Offset and scale by NumPy (ddof 0, weighted by ``w``)."""
    if method == "standard":
        mean = np.average(Y, axis=0, weights=w)
        return mean, np.sqrt(np.average((Y - mean) ** 2, axis=0, weights=w))
    return Y.min(axis=0), Y.max(axis=0) - Y.min(axis=0)


def map_back(ref: GaussianMixture, offset: np.ndarray, scale: np.ndarray) -> dict:
    """A model fitted on ``(y − offset) / scale`` in the units of ``y``, by hand."""
    D = np.diag(scale)
    cov = ref.covariances_
    covariances = {
        "full": lambda: np.stack([D @ c @ D for c in cov]),
        "tied": lambda: D @ cov @ D,
        "diag": lambda: cov * scale**2,
    }[ref.covariance_type]()
    return {"means": ref.means_ * scale + offset, "covariances": covariances}


def mixture_logpdf_diag(Y: np.ndarray, weights, means, variances) -> np.ndarray:
    """log Σ_k w_k Π_j N(y_j | μ_kj, σ²_kj), by scipy.stats.norm."""
    parts = [
        np.log(weights[k]) + norm(means[k], np.sqrt(variances[k])).logpdf(Y).sum(1)
        for k in range(len(weights))
    ]
    return logsumexp(np.stack(parts, axis=1), axis=1)


@pytest.fixture(scope="module")
def table() -> tuple[np.ndarray, np.ndarray]:
    return clusters()


###############################################################################
# The fitted model in the original units


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag"])
def test_standard_scaling_equals_a_fit_on_scaled_data_mapped_back_by_hand(
    table, covariance_type
):
    X, _ = table
    model = GaussianMixture(
        3, covariance_type=covariance_type, scale="standard", random_state=0
    ).fit(X)
    offset, scale = hand_scaling(X, "standard")
    assert model.scaling_.method == "standard"
    assert_allclose(model.scaling_.offset, offset, rtol=1e-14)
    assert_allclose(model.scaling_.scale, scale, rtol=1e-12)

    # The same fit by hand: scale with NumPy, fit, map the parameters back.
    b, s = model.scaling_.offset, model.scaling_.scale
    Z = (X - b) / s
    ref = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(Z)
    expected = map_back(ref, b, s)
    assert model.n_iter_ == ref.n_iter_
    assert_allclose(model.weights_, ref.weights_, rtol=1e-12)
    assert_allclose(model.means_, expected["means"], rtol=1e-12)
    assert_allclose(model.covariances_, expected["covariances"], rtol=1e-12)
    precisions = (
        1.0 / expected["covariances"]
        if covariance_type == "diag"
        else np.linalg.inv(expected["covariances"])
    )
    assert_allclose(model.precisions_, precisions, rtol=1e-9)

    # Log-densities of the original rows: the scaled model's plus log |det A|.
    log_det = -np.log(s).sum()  # A = diag(1 / s)
    assert log_det == pytest.approx(2.655, abs=0.001)  # -log(2.6e-4) - log(265)
    assert_allclose(
        model.score_samples(X) - ref.score_samples(Z), log_det, rtol=0, atol=1e-10
    )
    assert model.lower_bound_ == pytest.approx(ref.lower_bound_ + log_det, abs=1e-10)
    assert_allclose(model.lower_bounds_, np.add(ref.lower_bounds_, log_det), 1e-12)
    assert model.score(X) == pytest.approx(ref.score(Z) + log_det, abs=1e-10)
    n = len(X)
    assert model.bic(X) == pytest.approx(ref.bic(Z) - 2 * n * log_det, rel=1e-12)
    assert model.aic(X) == pytest.approx(ref.aic(Z) - 2 * n * log_det, rel=1e-12)
    assert_array_equal(model.predict(X), ref.predict(Z))
    assert_allclose(model.predict_proba(X), ref.predict_proba(Z), atol=1e-12)


@pytest.mark.parametrize("scale", ["standard", "minmax"])
def test_columns_1e6_apart_in_scale_are_clustered_only_with_scaling(table, scale):
    X, labels = table
    assert X[:, 1].std() / X[:, 0].std() == pytest.approx(1e6, rel=0.02)
    raw = GaussianMixture(3, random_state=0).fit(X)
    scaled = GaussianMixture(3, scale=scale, random_state=0).fit(X)
    raw_ari = adjusted_rand_score(labels, raw.predict(X))
    scaled_ari = adjusted_rand_score(labels, scaled.predict(X))
    assert raw_ari < 0.6
    assert scaled_ari >= 0.95
    # Both log-likelihoods are of the original rows, so they compare: the scaled
    # fit is the better model of the data, not only a different one.
    assert scaled.score(X) > raw.score(X) + 1.0


def test_minmax_scaling_maps_the_range_onto_0_1(table):
    X, _ = table
    model = GaussianMixture(
        3, covariance_type="diag", scale="minmax", random_state=0
    ).fit(X)
    offset, scale = hand_scaling(X, "minmax")
    assert_array_equal(model.scaling_.offset, offset)
    assert_allclose(model.scaling_.scale, scale, rtol=1e-15)
    Z = (X - model.scaling_.offset) / model.scaling_.scale
    assert Z.min() == 0.0 and Z.max() == pytest.approx(1.0, rel=1e-15)
    ref = GaussianMixture(3, covariance_type="diag", random_state=0).fit(Z)
    expected = map_back(ref, model.scaling_.offset, model.scaling_.scale)
    assert_allclose(model.means_, expected["means"], rtol=1e-12)
    assert_allclose(model.covariances_, expected["covariances"], rtol=1e-12)
    assert_allclose(
        model.score_samples(X) - ref.score_samples(Z),
        -np.log(model.scaling_.scale).sum(),
        rtol=0,
        atol=1e-10,
    )


def test_log1p_columns_against_scipy():
    """log1p then standard: parameters on the log1p scale for that column, and the
    density of the original rows (with the log1p Jacobian) equal to scipy's."""
    frame, labels = with_amount()
    X = frame.to_numpy()
    model = GaussianMixture(
        3, covariance_type="diag", scale="standard", log1p=[1], random_state=0
    ).fit(X)
    Y = X.copy()
    Y[:, 1] = np.log1p(Y[:, 1])
    offset, scale = hand_scaling(Y, "standard")
    assert model.scaling_.log1p == (1,)
    assert_allclose(model.scaling_.offset, offset, rtol=1e-14)
    assert_allclose(model.scaling_.scale, scale, rtol=1e-12)
    assert adjusted_rand_score(labels, model.predict(X)) >= 0.95
    order = np.argsort(model.means_[:, 1])
    assert_allclose(model.means_[order, 1], SKEWED_MEANS, atol=0.02)

    reference = mixture_logpdf_diag(
        Y, model.weights_, model.means_, model.covariances_
    ) - np.log1p(X[:, 1])
    assert_allclose(model.score_samples(X), reference, rtol=0, atol=1e-9)
    assert model.score(X) == pytest.approx(reference.mean(), abs=1e-9)

    # Columns by name on a DataFrame: the same model.
    named = GaussianMixture(
        3, covariance_type="diag", scale="standard", log1p=["amount"], random_state=0
    ).fit(frame)
    assert named.scaling_ == model.scaling_
    assert_array_equal(named.means_, model.means_)

    # Samples come back in the original units: expm1 on the log1p column.
    rows, components = model.set_params(random_state=1).sample(200_000)
    assert rows.shape == (200_000, 3) and (rows[:, 1] > -1).all()
    back = rows.copy()
    back[:, 1] = np.log1p(back[:, 1])
    for k in range(3):
        part = back[components == k]
        stderr = np.sqrt(model.covariances_[k] / len(part))
        assert np.all(np.abs(part.mean(axis=0) - model.means_[k]) < 5 * stderr)
        assert_allclose(part.var(axis=0), model.covariances_[k], rtol=0.05)


def test_log1p_alone_with_spherical_components_against_scipy():
    """scale='none' with log1p: only the log1p columns change; spherical is fine
    (the scales are all 1)."""
    frame, _ = with_amount(3000)
    # log1p(amount) has sd 0.3 within a cluster, the second column sd 0.5.
    X = np.column_stack([frame["amount"], (frame["price_eur"] - 4000) / 200])
    model = GaussianMixture(
        3, covariance_type="spherical", log1p=[0], random_state=0
    ).fit(X)
    assert model.scaling_ == Scaling.identity(2, (0,))
    Y = X.copy()
    Y[:, 0] = np.log1p(Y[:, 0])
    reference = GaussianMixture(3, covariance_type="spherical", random_state=0).fit(Y)
    assert_array_equal(model.means_, reference.means_)
    variances = np.repeat(model.covariances_[:, None], 2, axis=1)
    expected = mixture_logpdf_diag(
        Y, model.weights_, model.means_, variances
    ) - np.log1p(X[:, 0])
    assert_allclose(model.score_samples(X), expected, rtol=0, atol=1e-10)
    jacobian = -np.log1p(X[:, 0]).mean()
    assert model.lower_bound_ == pytest.approx(
        reference.lower_bound_ + jacobian, abs=1e-12
    )


def test_float32_input_keeps_float32_attributes(table):
    X, labels = table
    model = GaussianMixture(3, scale="standard", random_state=0).fit(
        X.astype(np.float32)
    )
    assert model.means_.dtype == np.float32 and model.covariances_.dtype == np.float32
    assert model._scaled_params_.means.dtype == np.float64
    assert adjusted_rand_score(labels, model.predict(X.astype(np.float32))) >= 0.95
    scores = model.score_samples(X.astype(np.float32))
    assert scores.dtype == np.float32
    assert_allclose(scores, model.score_samples(X), rtol=1e-5, atol=1e-5)


def test_weighted_fits_use_weighted_moments():
    frame, _ = with_amount(3000)
    X = frame.to_numpy()
    w = np.random.default_rng(3).integers(0, 4, size=len(X)).astype(float)
    params = dict(covariance_type="full", scale="standard", log1p=[1], random_state=0)
    model = GaussianMixture(3, **params).fit(X, sample_weight=w)
    Y = X.copy()
    Y[:, 1] = np.log1p(Y[:, 1])
    offset, scale = hand_scaling(Y, "standard", w)
    assert_allclose(model.scaling_.offset, offset, rtol=1e-13)
    assert_allclose(model.scaling_.scale, scale, rtol=1e-12)
    unweighted = hand_scaling(Y, "standard")
    assert not np.allclose(model.scaling_.scale, unweighted[1], rtol=1e-3)
    repeated = np.repeat(X, w.astype(int), axis=0)
    by_rows = GaussianMixture(3, **params).fit(repeated)
    assert_allclose(by_rows.scaling_.offset, model.scaling_.offset, rtol=1e-13)
    assert_allclose(by_rows.scaling_.scale, model.scaling_.scale, rtol=1e-12)

    # The weighted lower bound includes the weighted mean log1p Jacobian.
    b, s = model.scaling_.offset, model.scaling_.scale
    ref = GaussianMixture(3, covariance_type="full", random_state=0).fit(
        (Y - b) / s, sample_weight=w
    )
    jacobian = -np.log(s).sum() - np.average(np.log1p(X[:, 1]), weights=w)
    assert model.lower_bound_ == pytest.approx(ref.lower_bound_ + jacobian, abs=1e-10)
    assert model.score(X, sample_weight=w) == pytest.approx(
        model.score(repeated), rel=1e-12
    )
    assert model.bic(X, sample_weight=w) == pytest.approx(
        model.bic(repeated), rel=1e-12
    )


def test_dask_input_with_odd_chunks_equals_numpy_input(table):
    """Same scaling and EM whatever the row blocks; *_init read in original units."""
    X, _ = table
    # A start in the original units: the cluster centres, round covariances.
    means = np.column_stack([0.002 + 1e-4 * CENTRES[:, 0], 4000 + 100 * CENTRES[:, 1]])
    precisions = np.broadcast_to(np.diag([1e8, 1e-4]), (3, 2, 2)).copy()
    params = dict(
        weights_init=np.full(3, 1 / 3),
        means_init=means,
        precisions_init=precisions,
        scale="standard",
        tol=1e-8,
    )
    eager = GaussianMixture(3, **params).fit(X)
    chunks = ((1, 999, 0, 3, 2500, 1497, 1000),)
    lazy = GaussianMixture(3, **params).fit(da.from_array(X, chunks=(*chunks, (2,))))
    assert_allclose(lazy.scaling_.offset, eager.scaling_.offset, rtol=1e-15)
    assert_allclose(lazy.scaling_.scale, eager.scaling_.scale, rtol=1e-14)
    assert lazy.n_iter_ == eager.n_iter_
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        assert_allclose(getattr(lazy, name), getattr(eager, name), rtol=1e-9)
    Xd = da.from_array(X, chunks=((7, 5993), (2,)))
    labels = lazy.predict(Xd)
    assert isinstance(labels, da.Array)
    assert_array_equal(labels.compute(), eager.predict(X))
    assert_allclose(
        lazy.score_samples(Xd).compute(), eager.score_samples(X), rtol=0, atol=1e-12
    )

    # max_iter=0 returns the start, read back in the units it was given in.
    start = GaussianMixture(3, max_iter=0, **params).fit(X)
    assert_allclose(start.means_, means, rtol=1e-13)
    assert_allclose(start.precisions_, precisions, rtol=1e-10)


def test_the_scaling_shares_the_sampling_pass(table, monkeypatch):
    X, _ = table
    names: list[str] = []
    run = DataPasses.run

    def spy(self, kernel, params, name, combine, check=True):
        names.append(name)
        return run(self, kernel, params, name, combine, check)

    monkeypatch.setattr(DataPasses, "run", spy)
    params = dict(tol=0.0, max_iter=2, random_state=0)
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, **params).fit(X)
    assert names == ["sample", "init-kmeans", "estep", "estep"]
    names.clear()
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, scale="standard", log1p=[1], **params).fit(X)
    assert names == ["sample", "init-kmeans", "estep", "estep"]
    names.clear()
    inits = {
        "weights_init": np.full(3, 1 / 3),
        "means_init": X[:3],
        "precisions_init": np.broadcast_to(np.diag([1e8, 1e-4]), (3, 2, 2)),
    }
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, **inits, **params).fit(X)
    assert names == ["estep", "estep"]
    names.clear()
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, scale="standard", **inits, **params).fit(X)
    assert names == ["moments", "estep", "estep"]  # no sample to share a pass with


###############################################################################
# Warm starts, checkpoints, parameters


def test_warm_start_continues_exactly_in_the_scaled_space(table):
    X, _ = table
    params = dict(scale="standard", log1p=None, tol=0.0, random_state=0)
    with pytest.warns(ConvergenceWarning):
        straight = GaussianMixture(3, max_iter=4, **params).fit(X)
    with pytest.warns(ConvergenceWarning):
        stepped = GaussianMixture(3, max_iter=2, warm_start=True, **params).fit(X)
    with pytest.warns(ConvergenceWarning):
        stepped.fit(X)
    assert stepped.lower_bounds_ == straight.lower_bounds_[2:]
    assert_array_equal(stepped.means_, straight.means_)
    assert_array_equal(stepped.covariances_, straight.covariances_)


def test_iteration_callback_is_in_original_units_and_a_resume_is_exact(tmp_path):
    """What iteration_callback reports is in the original units, and a fit resumed
    from a checkpoint (states kept in the scaled space) ends exactly as the
    uninterrupted fit."""
    from daskgmm.checkpoint import Checkpoint

    frame, _ = with_amount(3000)
    X = frame.to_numpy()
    params = dict(scale="standard", log1p=[1], tol=0.0, random_state=0)
    states = []
    with pytest.warns(ConvergenceWarning):
        model = GaussianMixture(3, max_iter=6, **params).fit(
            X, iteration_callback=lambda i, state: states.append(state)
        )
    assert [s.n_iter for s in states] == [1, 2, 3, 4, 5, 6]
    last = states[-1]
    assert_allclose(last.params.means, model.means_, rtol=1e-15)
    assert_allclose(last.params.covariances, model.covariances_, rtol=1e-15)
    assert last.lower_bounds == model.lower_bounds_

    # Stop after iteration 3 with a checkpoint, then resume it.
    checkpoint = Checkpoint(str(tmp_path / "ckpt"), "job")
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, max_iter=3, **params).fit(X, checkpoint=checkpoint)
    assert [s.n_iter for s in checkpoint.read()] == [3]
    with pytest.warns(ConvergenceWarning):
        resumed = GaussianMixture(3, max_iter=6, **params).fit(
            X, checkpoint=checkpoint, resume=True
        )
    assert resumed.scaling_ == model.scaling_
    assert resumed.lower_bounds_ == model.lower_bounds_
    assert_array_equal(resumed.means_, model.means_)
    assert_array_equal(resumed.covariances_, model.covariances_)
    assert_array_equal(resumed.predict(X), model.predict(X))


def test_scale_none_without_log1p_is_the_unscaled_model(table):
    X, _ = table
    plain = GaussianMixture(3, random_state=0).fit(X)
    for log1p in (None, []):
        same = GaussianMixture(3, scale="none", log1p=log1p, random_state=0).fit(X)
        assert same.scaling_ == Scaling.identity(2) and same.scaling_.is_identity
        assert same.lower_bounds_ == plain.lower_bounds_
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            assert_array_equal(getattr(same, name), getattr(plain, name))
        assert not hasattr(same, "_scaled_params_")


def test_scale_and_log1p_are_estimator_parameters(table):
    X, _ = table
    model = GaussianMixture(3, scale="minmax", log1p=[0], random_state=0)
    params = model.get_params()
    assert (params["scale"], params["log1p"]) == ("minmax", [0])
    assert repr(model) == (
        "GaussianMixture(n_components=3, random_state=0, scale='minmax', log1p=[0])"
    )
    assert model.set_params(scale="standard") is model
    assert model.scale == "standard"
    copy = clone(model)
    assert copy.get_params()["log1p"] == [0] and not hasattr(copy, "scaling_")
    fitted, again = model.fit(X), copy.fit(X)
    assert again.scaling_ == fitted.scaling_
    assert_array_equal(again.means_, fitted.means_)


###############################################################################
# Errors: one line each, saying what to do


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"scale": "zscore"},
            "The 'scale' parameter must be one of {'none', 'standard', 'minmax'}. "
            "Got 'zscore' instead.",
        ),
        ({"log1p": [5]}, "log1p column 5 is out of range for 2 feature(s)"),
        (
            {"log1p": "price_eur"},
            "log1p must be None or a list of column indices or names, got 'price_eur'",
        ),
        (
            {"log1p": [1.5]},
            "log1p must list column indices (ints) or names (strings), got 1.5 of "
            "type float",
        ),
        ({"log1p": [1, -1]}, "log1p lists a column twice: [1, -1]"),
        (
            {"log1p": ["price_eur"]},
            "log1p names the column 'price_eur' but X has no column names; give "
            "column indices (e.g. log1p=[0, 3])",
        ),
        (
            {"scale": "standard", "covariance_type": "spherical"},
            "covariance_type='spherical' cannot be used with scale='standard': a "
            "per-feature scaling makes spherical components non-spherical in the "
            "original units. Use covariance_type='diag' (one variance per feature), "
            "or scale='none'.",
        ),
    ],
)
def test_bad_parameters_are_one_line_errors(table, params, message):
    X, _ = table
    with pytest.raises(ValueError) as info:
        GaussianMixture(3, **params).fit(X)
    assert str(info.value) == message


def test_log1p_of_values_at_or_below_minus_one_is_refused(table):
    X, _ = table
    bad = X.copy()
    bad[:, 0] -= 0.0023  # about half the thickness column below 0, none below -1
    bad[[7, 40], 0] = [-1.0, -2.5]
    with pytest.raises(ValueError) as info:
        GaussianMixture(3, log1p=[0]).fit(da.from_array(bad, chunks=1000))
    assert str(info.value) == (
        "log1p column 0 has 2 value(s) <= -1 (first at row 7); log1p needs values "
        "> -1: remove the column from log1p, or shift it first"
    )
    model = GaussianMixture(3, log1p=[0], random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"^log1p column 0 has 1 value\(s\) <= -1"):
        model.predict(bad[:20])
    lazy = model.score_samples(da.from_array(bad, chunks=1000))
    with pytest.raises(ValueError, match=r"<= -1 \(first at row 7\); log1p needs"):
        lazy.compute()


def test_a_warm_start_cannot_change_the_log1p_columns(table):
    X, _ = table
    model = GaussianMixture(3, log1p=[0], warm_start=True, random_state=0).fit(X)
    with pytest.raises(ValueError) as info:
        model.set_params(log1p=None).fit(X)
    assert str(info.value) == (
        "warm_start: the model was fitted with log1p columns [0], this fit has []; "
        "fit with warm_start=False to change them"
    )


###############################################################################
# Model selection


def test_select_model_sweeps_on_scaled_rows(table):
    X, labels = table
    selection = select_model(
        X, [2, 3], ["full", "diag"], scale="standard", random_state=0
    )
    best = selection.best_
    assert (best.n_components, best.covariance_type) == (3, "diag")
    assert adjusted_rand_score(labels, best.predict(X)) >= 0.95
    alone = GaussianMixture(
        3, covariance_type="diag", scale="standard", random_state=0
    ).fit(X)
    assert best.scaling_ == alone.scaling_
    assert_allclose(best.means_, alone.means_, rtol=1e-10)
    assert_allclose(best.lower_bound_, alone.lower_bound_, rtol=1e-12)
    row = selection.table[selection.table["best"]].iloc[0]
    assert row.bic == pytest.approx(alone.bic(X), rel=1e-10)
    with pytest.raises(ValueError, match="cannot be used with scale='standard'"):
        select_model(X, [2], ["spherical"], scale="standard")


###############################################################################
# Model files


def test_save_and_load_a_scaled_model_exactly(tmp_path):
    frame, _ = with_amount(3000)
    model = GaussianMixture(
        3, scale="standard", log1p=["amount"], tol=0.0, max_iter=3, random_state=0
    )
    with pytest.warns(ConvergenceWarning):
        model.fit(frame)
    path = model.save(tmp_path / "model")
    document = json.loads((Path(path) / "model.json").read_text())
    assert document["params"]["scale"] == "standard"
    assert document["params"]["log1p"] == ["amount"]
    assert document["scaling"] == model.scaling_.to_dict()
    assert document["scaling"]["log1p"] == [1]
    assert document["arrays"][5:] == [
        "scaled_weights",
        "scaled_means",
        "scaled_covariances",
        "scaled_precisions_cholesky",
    ]

    loaded = daskgmm.load(path)
    assert set(vars(loaded)) == set(vars(model))
    assert loaded.scaling_ == model.scaling_
    assert loaded.get_params() == model.get_params()
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        assert getattr(loaded, name).tobytes() == getattr(model, name).tobytes()
    for field in ("weights", "means", "covariances", "precisions_cholesky"):
        assert_array_equal(
            getattr(loaded._scaled_params_, field),
            getattr(model._scaled_params_, field),
        )
    assert loaded._scaled_lower_bound_ == model._scaled_lower_bound_
    assert loaded.lower_bounds_ == model.lower_bounds_
    for method in ("predict", "predict_proba", "score_samples"):
        assert_array_equal(
            getattr(loaded, method)(frame), getattr(model, method)(frame)
        )
    assert_array_equal(loaded.sample(50)[0], model.sample(50)[0])

    # A warm start of the loaded model continues like the original's.
    for m in (model, loaded):
        m.set_params(warm_start=True)
        with pytest.warns(ConvergenceWarning):
            m.fit(frame)
    assert loaded.lower_bounds_ == model.lower_bounds_
    assert_array_equal(loaded.means_, model.means_)


def test_unscaled_model_files_are_unchanged_and_tuples_keep_their_type(tmp_path):
    X, _ = clusters(600)
    plain = GaussianMixture(2, random_state=0).fit(X)
    document = json.loads((Path(plain.save(tmp_path / "a")) / "model.json").read_text())
    assert "scale" not in document["params"] and "log1p" not in document["params"]
    assert "scaling" not in document
    loaded = daskgmm.load(tmp_path / "a")
    assert loaded.scale == "none" and loaded.log1p is None
    assert loaded.scaling_.is_identity

    logged = GaussianMixture(2, log1p=(0,), random_state=0).fit(np.abs(X))
    loaded = daskgmm.load(logged.save(tmp_path / "b"))
    assert loaded.log1p == (0,)
    assert loaded.scaling_ == Scaling.identity(2, (0,))
    assert_array_equal(loaded.score_samples(np.abs(X)), logged.score_samples(np.abs(X)))


def test_a_scaled_model_file_without_its_scaling_is_corrupt(tmp_path):
    X, _ = clusters(600)
    path = Path(
        GaussianMixture(2, scale="minmax", random_state=0).fit(X).save(tmp_path / "m")
    )
    document = json.loads((path / "model.json").read_text())
    del document["scaling"]
    (path / "model.json").write_text(json.dumps(document))
    with pytest.raises(ValueError) as info:
        daskgmm.load(path)
    assert str(info.value) == (
        f"{path / 'model.json'}: fitted scaled_lower_bound_ without a scaling "
        "section; the model file is corrupt"
    )


###############################################################################
# Jobs: the features block


def daskgmm_cmd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daskgmm.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_job_with_a_features_block_on_a_parquet_table(tmp_path):
    frame, labels = with_amount(20_000)
    frame.insert(0, "row_id", np.arange(len(frame)))
    frame["ignored"] = 1.0
    frame.to_parquet(tmp_path / "table.parquet", row_group_size=5_000)
    result = run_job(
        tmp_path,
        "data: {source: parquet, path: table.parquet, id_columns: [row_id]}\n"
        "features:\n"
        "  columns: [thickness_m, amount, price_eur]\n"
        "  scale: standard\n"
        "  log1p: [amount]\n"
        "model: {n_components: 3, covariance_type: diag, random_state: 0}\n"
        "cluster: {n_workers: 1}\n"
        "output: {directory: out, format: parquet, log_densities: true}\n",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr

    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_samples"], metrics["n_features"]) == (20_000, 3)
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert_array_equal(predictions["row_id"], frame["row_id"])
    assert adjusted_rand_score(labels, predictions["label"]) >= 0.95

    model = daskgmm.load(out / "model")
    assert model.scale == "standard" and model.log1p == [1]
    assert model.scaling_.log1p == (1,)
    assert list(model.feature_names_in_) == ["thickness_m", "amount", "price_eur"]
    features = frame[["thickness_m", "amount", "price_eur"]]
    assert_array_equal(model.predict(features), predictions["label"])
    assert_allclose(
        model.score_samples(features), predictions["log_density"], rtol=1e-12
    )
    assert metrics["mean_log_likelihood"] == pytest.approx(
        predictions["log_density"].mean(), rel=1e-10
    )

    # `daskgmm predict` with the saved model reads the same columns, same labels.
    result = daskgmm_cmd(
        "predict",
        str(out / "model"),
        str(tmp_path / "table.parquet"),
        "--out",
        str(tmp_path / "again.parquet"),
    )
    assert result.returncode == 0, result.stderr
    again = pd.read_parquet(tmp_path / "again.parquet")
    assert_array_equal(again["label"], predictions["label"])


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (
            "{columns: [a, b]}",
            "(top level): Value error, give the feature columns once, in "
            "features.columns (data.columns is its older spelling)",
        ),
        ("{scale: zscore}", "features.scale: Input should be 'none', 'standard' or"),
        (
            "{log1p: [c]}",
            "(top level): Value error, features.log1p names ['c'], which are not in "
            "features.columns ['a', 'b']",
        ),
    ],
)
def test_bad_features_block_exits_2_with_one_line(tmp_path, features, message):
    job = tmp_path / "job.yaml"
    job.write_text(
        "data: {source: parquet, path: t.parquet, columns: [a, b]}\n"
        f"features: {features}\n"
        "output: {directory: out}\n"
    )
    result = daskgmm_cmd("validate", str(job))
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
