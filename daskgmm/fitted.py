"""A fitted mixture as one object, and the pure functions that use it.

:class:`FittedMixture` holds everything a fit produced: the parameters in the
original units (in the fit's dtype, as scikit-learn's attributes), the scaling and
the exact parameters of the scaled space EM ran in, the convergence history and
the timings. ``GaussianMixture`` keeps its scikit-learn attributes and converts to
and from this object (:func:`from_attributes`, ``daskgmm.mixture.set_fitted``);
model files store it (:mod:`daskgmm.model_io`), and jobs, the k-means comparison
and the segmentation predict and score with the functions here, none of which needs
the estimator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from daskgmm import _chunks as C
from daskgmm import _kernels as K
from daskgmm import _missing as M
from daskgmm import _preprocess as P
from daskgmm import _variational as V
from daskgmm import exceptions
from daskgmm._em import DataPasses, Parameters, RunResult
from daskgmm._plan import (
    numpy_to_dask,
    one_blas_thread_per_task,
    plan_score,
    raise_if_non_finite,
)
from daskgmm._reduce import map_rows
from daskgmm._validation import Data, check_input


@dataclass(frozen=True)
class FittedMixture:
    """A fitted Gaussian mixture.

    Attributes
    ----------
    covariance_type : str
    weights, means, covariances, precisions, precisions_cholesky : ndarray
        In the units of f(x) (``log1p`` columns on the log1p scale), in the fit's
        dtype: scikit-learn's ``weights_``, ``means_``...
    scaling : Scaling
        The preprocessing rows go through before the kernels (the identity when
        the rows are used as given).
    scaled : Parameters or None
        The float64 parameters of the scaled space EM ran in (None: no scaling);
        predictions of a scaled model use them (more precise than the reported
        ones on the original rows).
    scaled_lower_bound : float or None
    converged : bool
    n_iter : int
    lower_bound : float
    lower_bounds : list of float
        Mean log-likelihood per iteration, in the original units.
    n_features : int
    feature_names : ndarray of str or None
    n_omitted : int
        Rows left out of the fit for NaN or infinity.
    timings : dict or None
        Where the fit's time went (``GaussianMixture.fit_timings_``).
    """

    covariance_type: str
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions: np.ndarray
    precisions_cholesky: np.ndarray
    scaling: P.Scaling
    converged: bool
    n_iter: int
    lower_bound: float
    lower_bounds: list[float]
    n_features: int
    feature_names: np.ndarray | None = None
    scaled: Parameters | None = None
    scaled_lower_bound: float | None = None
    n_omitted: int = 0
    timings: dict | None = field(default=None, compare=False)
    # The estimator's class, and a variational mixture's prior type and fitted
    # attributes beyond GaussianMixture's (weight_concentration_, mean_precision_,
    # degrees_of_freedom_, the *_prior_ in use).
    estimator: str = "GaussianMixture"
    prior_type: str | None = None
    variational: dict | None = field(default=None, compare=False)

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return self.means.dtype

    @property
    def is_scaled(self) -> bool:
        return not self.scaling.is_identity

    @property
    def log_weights(self) -> np.ndarray | None:
        """What replaces ``log(weights)`` in the log-densities: a variational
        mixture's expected log weights and precision terms (scale-free), else
        None."""
        if self.variational is None:
            return None
        v = self.variational
        posterior = V.Posterior(
            v["weight_concentration_"],
            v["mean_precision_"],
            self.means,
            v["degrees_of_freedom_"],
            None,
            None,
        )
        return V.kernel_log_weights(posterior, self.prior_type)


###############################################################################
# From a fit, from attributes


def from_run(
    best: RunResult,
    space: Any,
    covariance_type: str,
    data: Data,
    *,
    n_omitted: int = 0,
    timings: dict | None = None,
    estimator: str = "GaussianMixture",
) -> FittedMixture:
    """The fitted mixture of an EM run made in ``space`` (``scaling`` and ``shift``:
    see :class:`daskgmm._runner.FitSpace`) on ``data``; a variational run's
    posterior and priors too (in the original units)."""
    scaling = space.scaling
    p = best.params
    lower_bound = float(best.lower_bound)
    lower_bounds = [float(v) for v in best.lower_bounds]
    scaled = scaled_bound = None
    if not scaling.is_identity:
        scaled = Parameters(
            *(
                np.array(a, dtype=np.float64)
                for a in (p.weights, p.means, p.covariances, p.precisions_cholesky)
            )
        )
        scaled_bound = lower_bound
        p = Parameters(*P.to_original_units(*p.arrays(), covariance_type, scaling))
        lower_bound += space.shift
        lower_bounds = [v + space.shift for v in lower_bounds]
    dtype = data.dtype
    return FittedMixture(
        covariance_type,
        p.weights.astype(dtype),
        p.means.astype(dtype),
        np.asarray(p.covariances).astype(dtype),
        K.precisions_from_cholesky(p.precisions_cholesky, covariance_type).astype(
            dtype
        ),
        p.precisions_cholesky.astype(dtype),
        scaling,
        bool(best.converged),
        int(best.n_iter),
        lower_bound,
        lower_bounds,
        data.n_features,
        data.feature_names,
        scaled,
        scaled_bound,
        n_omitted,
        timings,
        estimator,
        *_variational_attributes(best, space, covariance_type),
    )


def _variational_attributes(best: RunResult, space: Any, ctype: str) -> tuple:
    """A variational run's prior type and extra fitted attributes, or (None, None)."""
    if best.variational is None:
        return None, None
    post, prior = best.variational
    mean, cov = prior.mean, prior.covariance
    if not space.scaling.is_identity:
        covs = np.asarray(cov, dtype=np.float64)
        covs = (
            covs
            if ctype == "tied"
            else covs[None]
            if ctype != "spherical"
            else covs.reshape(1)
        )
        _, means, covs, _ = P.to_original_units(
            None, mean[None], covs, None, ctype, space.scaling
        )
        mean = means[0]
        cov = covs if ctype == "tied" else covs[0]
    return prior.weight_concentration_prior_type, {
        "weight_concentration_": post.weight_concentration,
        "mean_precision_": post.mean_precision,
        "degrees_of_freedom_": post.degrees_of_freedom,
        "weight_concentration_prior_": prior.weight_concentration,
        "mean_precision_prior_": prior.mean_precision,
        "mean_prior_": mean,
        "degrees_of_freedom_prior_": prior.degrees_of_freedom,
        "covariance_prior_": cov,
    }


# A Bayesian mixture's component with a weight above this share is one the data
# need (its "effective" components).
EFFECTIVE_WEIGHT = 0.01


# The estimator's fitted attributes, by FittedMixture field.
ATTRIBUTES = {
    "weights": "weights_",
    "means": "means_",
    "covariances": "covariances_",
    "precisions": "precisions_",
    "precisions_cholesky": "precisions_cholesky_",
    "converged": "converged_",
    "n_iter": "n_iter_",
    "lower_bound": "lower_bound_",
    "lower_bounds": "lower_bounds_",
    "n_features": "n_features_in_",
    "scaling": "scaling_",
    "n_omitted": "n_omitted_",
    "timings": "fit_timings_",
}
# Beyond scikit-learn's: a scaled model's parameters and lower bound in the scaled
# space (predictions use them; a warm start continues from them).
SCALED_ATTRIBUTES = {
    "scaled": "_scaled_params_",
    "scaled_lower_bound": "_scaled_lower_bound_",
}


# A variational mixture's fitted attributes beyond GaussianMixture's.
VARIATIONAL_ATTRIBUTES = (
    "weight_concentration_",
    "mean_precision_",
    "degrees_of_freedom_",
    "weight_concentration_prior_",
    "mean_precision_prior_",
    "mean_prior_",
    "degrees_of_freedom_prior_",
    "covariance_prior_",
)


def from_attributes(model: Any) -> FittedMixture:
    """The fitted mixture of an object with scikit-learn's fitted attributes
    (``weights_``, ``means_``...: a fitted ``GaussianMixture``)."""
    optional = {
        "scaling": P.Scaling.identity(model.n_features_in_),
        "n_omitted": 0,
        "timings": None,
    }
    values = {
        name: getattr(model, attribute, optional.get(name))
        for name, attribute in {**ATTRIBUTES, **SCALED_ATTRIBUTES}.items()
    }
    values["scaling"] = values["scaling"] or optional["scaling"]
    variational = None
    if hasattr(model, "weight_concentration_"):
        variational = {name: getattr(model, name) for name in VARIATIONAL_ATTRIBUTES}
    return FittedMixture(
        covariance_type=model.covariance_type,
        feature_names=getattr(model, "feature_names_in_", None),
        estimator=type(model).__name__,
        prior_type=getattr(model, "weight_concentration_prior_type", None),
        variational=variational,
        **values,
    )


def as_fitted(model: Any) -> FittedMixture:
    """``model`` itself if it is a FittedMixture, else that of a fitted estimator."""
    if isinstance(model, FittedMixture):
        return model
    if not hasattr(model, "converged_"):
        raise exceptions.NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet. Call 'fit' "
            "with appropriate arguments before using this estimator."
        )
    return from_attributes(model)


def float64_parameters(fm: FittedMixture) -> Parameters:
    """The reported parameters in float64 (a warm start's)."""
    return Parameters(
        *(
            np.asarray(a, dtype=np.float64)
            for a in (fm.weights, fm.means, fm.covariances, fm.precisions_cholesky)
        )
    )


###############################################################################
# Rows in


def check_rows(fm: FittedMixture, X: Any, owner: str = "GaussianMixture") -> Data:
    """``X`` checked against the fitted mixture: its number of features and, when
    both have them, its column names."""
    data = check_input(X)
    if data.n_features != fm.n_features:
        raise ValueError(
            f"X has {data.n_features} features, but {owner} is expecting "
            f"{fm.n_features} features as input"
        )
    names = fm.feature_names
    if (
        names is not None
        and data.feature_names is not None
        and list(data.feature_names) != list(names)
    ):
        raise ValueError(
            "The feature names should match those that were passed during fit: "
            f"got {list(data.feature_names)}, expected {list(names)}"
        )
    return data


def kernel_params(fm: FittedMixture) -> K.KernelParams:
    """Kernel parameters of the reported mixture (in the units of f(x))."""
    return K.prepare(
        fm.weights,
        fm.means,
        fm.precisions_cholesky,
        fm.covariance_type,
        log_weights=fm.log_weights,
    )


def fit_kernel_params(fm: FittedMixture) -> K.KernelParams:
    """Kernel parameters of the space the mixture was fitted in: the scaled rows
    (more precise than the reported parameters on the original rows)."""
    if not fm.is_scaled:
        return kernel_params(fm)
    p = fm.scaled
    return K.prepare(
        p.weights,
        p.means,
        p.precisions_cholesky,
        fm.covariance_type,
        log_weights=fm.log_weights,
    )


def missing_params(fm: FittedMixture) -> M.MissingParams:
    """What the functions of rows with missing values need: the mixture of the
    space it was fitted in (a variational mixture's log-weights replace
    ``log π``: an approximation for rows with missing values)."""
    p = fm.scaled if fm.is_scaled else fm
    log_weights = fm.log_weights
    if log_weights is None:
        with np.errstate(divide="ignore"):
            log_weights = np.log(np.asarray(p.weights, dtype=np.float64))
    return M.missing_params(
        fit_kernel_params(fm), K.estep_block, p.means, p.covariances, log_weights
    )


def per_row(fm: FittedMixture, data: Data, what: str, nan_policy: str = "raise") -> Any:
    """Labels (``'label'``), responsibilities (``'proba'``) or log-densities
    (``'score'``) of every row: NumPy for NumPy input, lazy dask for dask input.

    With ``nan_policy='marginalize'`` a row's missing values (NaN) are
    marginalised out: its log-density is that of its observed values.
    """
    out_dtype = np.result_type(data.dtype, fm.dtype)
    kernel, n_columns, dtype = {
        "label": (K.predict_block, None, np.int64),
        "proba": (K.predict_proba_block, fm.n_components, out_dtype),
        "score": (K.score_samples_block, None, out_dtype),
    }[what]
    kwargs: dict[str, Any] = {"nan_policy": nan_policy}
    if what != "label":
        kwargs["out_dtype"] = out_dtype
    if nan_policy == "marginalize":
        scaling = fm.scaling if fm.is_scaled else None
        kernel, kp = _observed_rows_block, (scaling, missing_params(fm), what)
    elif fm.is_scaled:
        kernel, kp = _scaled_rows_block, (fm.scaling, fit_kernel_params(fm), what)
    else:
        kp = kernel_params(fm)
    if nan_policy == "raise" and not data.is_dask:
        raise_if_non_finite(data.array)
    return _rows_out(data, kernel, kp, what, n_columns, dtype, kwargs)


def _rows_out(
    data: Data,
    kernel: Any,
    params: Any,
    name: str,
    n_columns: int | None,
    dtype: Any,
    kwargs: dict,
) -> Any:
    """``kernel`` on the rows of ``data`` block by block: lazy dask for dask input;
    NumPy for NumPy input (directly when small, else in parallel blocks)."""
    if data.is_dask:
        return map_rows(
            data.array,
            kernel,
            params,
            name=name,
            n_columns=n_columns,
            dtype=dtype,
            **kwargs,
        )
    if data.n_samples <= C.DIRECT_ROWS:
        return kernel(data.array, params, **kwargs)
    lazy = map_rows(
        numpy_to_dask(data.array),
        kernel,
        params,
        name=name,
        n_columns=n_columns,
        dtype=dtype,
        **kwargs,
    )
    with threadpool_limits(limits=1, user_api="blas"):
        return lazy.compute(scheduler="threads")


def impute(fm: FittedMixture, data: Data, draw: bool = False, seed: int = 0) -> Any:
    """The rows of ``data`` with their missing values (NaN) filled in: the
    conditional expectation under the mixture given the row's observed values,
    or (``draw=True``) one draw from the conditional distribution. Observed
    values are kept as they are; a row with every value missing gets the
    mixture's mean (or a draw from the mixture)."""
    dtype = np.result_type(data.dtype, fm.dtype, np.float32)
    scaling = fm.scaling if fm.is_scaled else None
    spec = (scaling, missing_params(fm), seed if draw else None)
    kwargs = {"out_dtype": dtype}
    return _rows_out(data, _impute_block, spec, "impute", fm.n_features, dtype, kwargs)


def loglik(fm: FittedMixture, passes: DataPasses) -> dict:
    """(Weighted) total log-likelihood ``loglik`` of the rows of ``passes``, their
    total weight ``w`` (the number of rows when unweighted) and rows ``n``: one
    pass. With ``nan_policy='marginalize'`` also the missing values per feature
    (``n_missing``) and the rows with one (``n_incomplete``)."""
    if passes.nan_policy == "marginalize":
        scaling = fm.scaling if fm.is_scaled else None
        kernel, params = _observed_loglik_block, (scaling, missing_params(fm))
    elif fm.is_scaled:
        kernel = _scaled_loglik_block
        params: Any = (fm.scaling, fit_kernel_params(fm), passes.twin(K.loglik_block))
    else:
        kernel, params = K.loglik_block, kernel_params(fm)
    result = passes.run(kernel, params, "score", K.combine_loglik)
    out = {
        "loglik": float(result["loglik"]),
        "w": float(result["w"]),
        "n": int(result["n"]),
    }
    if "n_missing" in result:  # nan_policy='marginalize'
        out["n_missing"] = [int(v) for v in result["n_missing"]]
        out["n_incomplete"] = int(result["n_incomplete"])
    return out


def score_totals(
    fm: FittedMixture,
    X: Any,
    *,
    sample_weight: Any = None,
    nan_policy: str = "raise",
    split_every: int = 16,
    kernel: str = "auto",
    owner: str = "GaussianMixture",
) -> dict:
    """:func:`loglik` of the rows of ``X`` (checked against the mixture), read where
    they are, with one BLAS thread per task."""
    plan = plan_score(
        check_rows(fm, X, owner),
        sample_weight=sample_weight,
        nan_policy=nan_policy,
        split_every=split_every,
        kernel=kernel,
    )
    with one_blas_thread_per_task():
        return loglik(fm, plan.passes)


def n_parameters(fm: FittedMixture) -> int:
    """Free parameters of the mixture (BIC's and AIC's penalty)."""
    return K.n_parameters(fm.n_components, fm.n_features, fm.covariance_type)


def information_criteria(totals: dict, n_params: int) -> dict[str, float]:
    """BIC and AIC of a (weighted) total log-likelihood ``totals['loglik']`` over a
    total weight ``totals['w']`` (the sample size), with ``n_params`` parameters."""
    total, w = totals["loglik"], totals["w"]
    return {
        "bic": -2.0 * total + n_params * math.log(w),
        "aic": -2.0 * total + 2.0 * n_params,
    }


def bic(fm: FittedMixture, totals: dict) -> float:
    """BIC from :func:`loglik`'s totals (the total weight as the sample size)."""
    return information_criteria(totals, n_parameters(fm))["bic"]


def aic(fm: FittedMixture, totals: dict) -> float:
    """AIC from :func:`loglik`'s totals."""
    return information_criteria(totals, n_parameters(fm))["aic"]


def draw(
    fm: FittedMixture, n_samples: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and their components drawn from the mixture (scikit-learn's draws);
    a scaled mixture draws in its scaled space and maps the rows back."""
    if not fm.is_scaled:
        return _draw(
            rng, n_samples, fm.weights, fm.means, fm.covariances, fm.covariance_type
        )
    p = fm.scaled
    Z, labels = _draw(
        rng, n_samples, p.weights, p.means, p.covariances, fm.covariance_type
    )
    return P.inverse_transform_block(Z, fm.scaling), labels


###############################################################################
# Block functions


def _scaled_rows_block(
    X: np.ndarray,
    spec: tuple,
    out_dtype: Any = np.float64,
    block_info: dict | None = None,
    nan_policy: str = "raise",
) -> np.ndarray:
    """Labels, responsibilities or log-densities (``spec[2]``) of original rows.

    The rows are scaled (in float64), the kernel runs on them with the fitted
    parameters of the scaled space, and a log-density gets the log-Jacobian
    ``log |det A| − Σ log1p(x_j)`` of the preprocessing.
    """
    scaling, kp, what = spec
    Z = P.transform_block(X, scaling, np.float64, block_info)
    if what == "label":
        return K.predict_block(Z, kp, block_info, nan_policy)
    if what == "proba":
        return K.predict_proba_block(Z, kp, out_dtype, block_info, nan_policy)
    log_density = K.score_samples_block(Z, kp, np.float64, block_info, nan_policy)
    log_density += P.log_abs_det(scaling)
    log_density += P.log_jacobian_block(X, scaling, block_info)
    return log_density.astype(out_dtype, copy=False)


@K.quiet
def _scaled_loglik_block(
    X: np.ndarray,
    spec: tuple,
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """``loglik`` (:func:`K.loglik_block` or its compiled twin) of original rows:
    on the scaled rows, plus the (weighted) sum of the log-Jacobian."""
    scaling, kp, loglik_kernel = spec
    stats = loglik_kernel(P.transform_block(X, scaling), kp, block_index, weights)
    jacobian = P.log_jacobian_block(X, scaling) + P.log_abs_det(scaling)
    # Rows left out (no finite density: NaN or inf) contribute nothing.
    used = np.isfinite(jacobian) & np.isfinite(X).all(axis=1)
    jacobian = np.where(used, jacobian, 0.0)
    if weights is None:
        stats["loglik"] += float(jacobian.sum())
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        w = np.where(np.isfinite(w) & (w >= 0), w, 0.0)  # as loglik_block counts them
        stats["loglik"] += float(jacobian @ w)
    return stats


def _observed_rows_block(
    X: np.ndarray,
    spec: tuple,
    out_dtype: Any = np.float64,
    block_info: dict | None = None,
    nan_policy: str = "marginalize",
) -> np.ndarray:
    """Labels, responsibilities or log-densities (``spec[2]``) of rows whose
    missing values (NaN) are marginalised out; a row with every value missing
    gets label -1 and NaN, one with an infinite value raises."""
    scaling, mp, what = spec
    if scaling is None:
        Z = np.asarray(X, dtype=np.float64)
    else:
        Z = P.transform_block(X, scaling, np.float64, block_info)
    inf = np.isinf(Z).any(axis=1)
    if inf.any():
        raise_unusable_rows(int(inf.sum()), int(np.flatnonzero(inf)[0]), block_info)
    lse, resp = M.missing_loglik(Z, mp)
    if what == "label":
        # A row with every value missing: label -1 (NaN for the others).
        return np.where(np.isnan(lse), -1, resp.argmax(axis=1))
    if what == "proba":
        return resp.astype(out_dtype, copy=False)
    if scaling is not None:
        lse += P.observed_log_jacobian(X, scaling, block_info)
    return lse.astype(out_dtype, copy=False)


def _impute_block(
    X: np.ndarray,
    spec: tuple,
    out_dtype: Any = np.float64,
    block_info: dict | None = None,
) -> np.ndarray:
    """:func:`impute` of one block (a draw's generator is keyed by the seed and
    the block's first row)."""
    scaling, mp, seed = spec
    X = np.asarray(X)
    if np.isinf(X).any():
        rows = np.flatnonzero(np.isinf(X).any(axis=1))
        raise_unusable_rows(rows.size, int(rows[0]), block_info)
    Z = X if scaling is None else P.transform_block(X, scaling, np.float64, block_info)
    if seed is None:
        out = M.impute_rows(Z, mp)
    else:
        offset = K.row_offset(block_info) or 0
        rng = np.random.default_rng(np.random.SeedSequence([seed, offset]))
        out = M.draw_missing(Z, mp, rng)
    if scaling is not None:
        out = P.inverse_transform_block(out, scaling)
    return np.where(np.isnan(X), out, X).astype(out_dtype, copy=False)


def raise_unusable_rows(n_bad: int, first: int, block_info: dict | None) -> None:
    """The one-line error for rows without a density of their observed values."""
    offset = K.row_offset(block_info)
    where = f"row {first}" if offset is None else f"row {offset + first}"
    raise ValueError(
        f"X has {n_bad} row(s) with an infinite value (first at {where}); "
        "nan_policy='marginalize' takes NaN for a missing value: replace "
        "infinities by NaN, or drop those rows"
    )


def _observed_loglik_block(
    X: np.ndarray,
    spec: tuple,
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """:func:`daskgmm._missing.missing_loglik_block` of original rows (scaled,
    plus the log-Jacobian of their observed features)."""
    scaling, mp = spec
    if scaling is None:
        return M.missing_loglik_block(X, mp, block_index, weights)
    Z = P.transform_block(X, scaling)
    stats = M.missing_loglik_block(Z, mp, block_index, weights)
    with np.errstate(invalid="ignore"):
        jacobian = P.observed_log_jacobian(X, scaling)
    # Rows left out (every value missing, or an infinity) contribute nothing.
    used = np.isfinite(jacobian) & ~np.isinf(X).any(axis=1) & ~np.isnan(X).all(axis=1)
    jacobian = np.where(used, jacobian, 0.0)
    if weights is None:
        stats["loglik"] += float(jacobian.sum())
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        w = np.where(np.isfinite(w) & (w >= 0), w, 0.0)
        stats["loglik"] += float(jacobian @ w)
    return stats


_observed_loglik_block.uses_observed = True  # type: ignore[attr-defined]


def _draw(
    rng: np.random.RandomState,
    n_samples: int,
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    covariance_type: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and their components drawn from a mixture (scikit-learn's draws)."""
    n_features = means.shape[1]
    counts = rng.multinomial(n_samples, weights)
    if covariance_type == "full":
        parts = [
            rng.multivariate_normal(mean, cov, int(c))
            for mean, cov, c in zip(means, covariances, counts, strict=True)
        ]
    elif covariance_type == "tied":
        parts = [
            rng.multivariate_normal(mean, covariances, int(c))
            for mean, c in zip(means, counts, strict=True)
        ]
    else:
        parts = [
            mean + rng.standard_normal(size=(c, n_features)) * np.sqrt(cov)
            for mean, cov, c in zip(means, covariances, counts, strict=True)
        ]
    labels = np.concatenate(
        [np.full(c, j, dtype=np.int64) for j, c in enumerate(counts)]
    )
    return np.vstack(parts).astype(np.float64), labels
