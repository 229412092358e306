"""GaussianMixture (and the base of the mixture estimators): scikit-learn's
estimator, fitted by out-of-core EM on dask."""

from __future__ import annotations

import inspect
import logging
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from daskgmm import exceptions
from daskgmm import fitted as F
from daskgmm._em import RunResult
from daskgmm._params import check_params
from daskgmm._plan import (
    one_blas_thread_per_task,
    plan_fit,
    plan_settings,
    verbose_logging,
)
from daskgmm._reduce import DEFAULT_SPLIT_EVERY
from daskgmm._runner import Candidate, WarmStart, run_candidates
from daskgmm._validation import (
    check_init_array,
    check_precisions_init,
    check_random_state,
    check_weights_init,
)
from daskgmm.checkpoint import Checkpoint
from daskgmm.model_io import read_model, save_model

logger = logging.getLogger("daskgmm")


# The estimator classes by name (model files name theirs).
ESTIMATORS: dict[str, type] = {}


class BaseMixture:
    """What the mixture estimators share: scikit-learn's parameter protocol, a fit
    as one candidate of the runner (:func:`daskgmm._runner.run_candidates`),
    predictions and scores of the fitted mixture (:mod:`daskgmm.fitted`), model
    files. Subclasses give ``__init__`` (the parameters of their row of the
    parameter table) and may override ``_inits`` and ``_variational``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ESTIMATORS[cls.__name__] = cls

    # ------------------------------------------------------------------ params

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p for p in signature.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of the estimator, as scikit-learn's ``get_params``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> BaseMixture:
        """Set parameters by name, as scikit-learn's ``set_params``."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}(). "
                    f"Valid parameters are: {sorted(valid)!r}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            name: p.default
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if name != "self"
        }
        changed = []
        for name, default in defaults.items():
            value = getattr(self, name)
            if isinstance(value, np.ndarray) or isinstance(default, np.ndarray):
                same = value is default
            else:
                same = type(value) is type(default) and value == default
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(
            estimator_type="density_estimator",
            target_tags=TargetTags(required=False),
            input_tags=InputTags(two_d_array=True, allow_nan=False),
            non_deterministic=False,
        )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "converged_")

    def _check_params(self) -> None:
        # daskgmm._params: the table the job schema and model files use too.
        check_params(self.get_params(), type(self).__name__)

    # --------------------------------------------------------------------- fit

    def fit(
        self,
        X: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        iteration_callback: Callable[[int, RunResult], None] | None = None,
        checkpoint: Checkpoint | None = None,
        resume: bool = False,
    ) -> BaseMixture:
        """Estimate the parameters by EM, one pass over ``X`` per iteration.

        Parameters
        ----------
        X : array-like, dask array, pandas or dask DataFrame of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Row weights (NumPy, or a dask array with X's row chunks), finite and
            >= 0, not all 0. Responsibilities are multiplied by them in the
            statistics and the lower bound is the weighted mean log-likelihood, so
            integer weights give the model of the rows repeated that many times.
        iteration_callback : callable, optional
            Called after every EM iteration as ``callback(init, state)`` with the
            index of the initialisation and a ``RunResult`` (float64 parameters,
            iteration count, lower bounds so far), in the original units like the
            fitted attributes.
        checkpoint : daskgmm.checkpoint.Checkpoint, optional
            Written with the state of every restart after each EM iteration.
        resume : bool, default=False
            Continue the restarts saved in ``checkpoint`` where they stopped (the
            same data and parameters give the model of an uninterrupted fit).

        Returns
        -------
        self : GaussianMixture
        """
        started = time.perf_counter()
        self._check_params()
        plan = plan_fit(
            X, sample_weight=sample_weight, **plan_settings(self.get_params())
        )
        self._check_n_samples(plan.data.n_samples)
        candidate = self._candidate(self._inits(plan.data.n_features))
        with verbose_logging(self.verbose), one_blas_thread_per_task():
            sweep = run_candidates(
                plan,
                [candidate],
                verbose_interval=self.verbose_interval,
                on_iteration=iteration_callback,
                checkpoint=checkpoint,
                resume=resume,
            )
        best = sweep.outcomes[0].best
        if not best.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                exceptions.ConvergenceWarning,
                stacklevel=2,
            )
        compile_seconds = plan.passes.compile_seconds
        if sweep.space.passes is not plan.passes:
            compile_seconds += sweep.space.passes.compile_seconds
        timings = _fit_timings(
            time.perf_counter() - started,
            compile_seconds,
            sweep.em_seconds,
            sweep.em_passes,
        )
        fitted = F.from_run(
            best,
            sweep.space,
            self.covariance_type,
            plan.data,
            n_omitted=sweep.space.passes.n_omitted,
            timings=timings,
            estimator=type(self).__name__,
        )
        set_fitted(self, fitted)
        if self.n_omitted_:
            logger.warning(
                "nan_policy=%r: %d row(s) with %s left out of the fit",
                self.nan_policy,
                self.n_omitted_,
                "every value missing"
                if self.nan_policy == "marginalize"
                else "NaN or infinity",
            )
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then return the most probable component of every row of ``X``.

        Returns
        -------
        labels : ndarray of shape (n_samples,), or a lazy dask array for dask input
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def _check_n_samples(self, n_samples: int | None) -> None:
        if n_samples is not None and n_samples < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {n_samples}"
            )

    def _candidate(self, inits: dict) -> Candidate:
        """This estimator's fit as one candidate of the runner."""
        warm = None
        if self.warm_start and hasattr(self, "converged_"):
            fm = F.from_attributes(self)
            scaled = None
            if fm.scaled is not None:
                scaled = (fm.scaled, fm.scaled_lower_bound)
            warm = WarmStart(
                F.float64_parameters(fm),
                fm.lower_bound,
                fm.scaling,
                scaled,
                self._warm_variational(),
            )
        return Candidate.from_params(
            self.get_params(),
            inits=inits,
            warm=warm,
            variational=self._variational(),
        )

    def _inits(self, n_features: int) -> dict:
        """The user's initial parameters, checked (none here)."""
        return {"weights": None, "means": None, "precisions": None}

    def _variational(self) -> dict | None:
        """A variational estimator's prior settings for the runner (None here)."""
        return None

    def _warm_variational(self) -> dict | None:
        """A variational estimator's scale-free posterior arrays (None here)."""
        return None

    def _fitted(self) -> F.FittedMixture:
        return F.as_fitted(self)

    def _per_row(self, X: Any, what: str) -> Any:
        fm = self._fitted()
        data = F.check_rows(fm, X, type(self).__name__)
        return F.per_row(fm, data, what, self.nan_policy)

    def predict(self, X: Any) -> Any:
        """Most probable component of every row.

        Returns
        -------
        labels : ndarray of int64 of shape (n_samples,), lazy dask array for dask input
        """
        return self._per_row(X, "label")

    def predict_proba(self, X: Any) -> Any:
        """Posterior probability of each component for every row.

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components), lazy for dask input
        """
        return self._per_row(X, "proba")

    def score_samples(self, X: Any) -> Any:
        """Log-density of every row under the mixture.

        With ``scale`` or ``log1p``, the density of the original rows: that of the
        scaled rows plus the log-Jacobian of the preprocessing.

        Returns
        -------
        log_prob : ndarray of shape (n_samples,), lazy for dask input
        """
        return self._per_row(X, "score")

    def impute(self, X: Any, *, draw: bool = False, random_state: Any = None) -> Any:
        """``X`` with its missing values (NaN) filled in by the fitted mixture.

        Each missing value gets its conditional expectation given the row's
        observed values, ``Σ_k P(k | x_o) E[x_m | x_o, k]`` (the mixture's mean for
        a row with every value missing); observed values are kept as they are.
        With ``draw=True`` it is one draw from the conditional distribution
        instead: calling again with other ``random_state`` values gives multiple
        imputations (the draws depend on the row chunks too).

        Parameters
        ----------
        X : array-like, dask array or DataFrame of shape (n_samples, n_features)
        draw : bool, default False
        random_state : int, RandomState or None
            Seeds the draws (``draw=True``).

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features), lazy for dask input
        """
        fm = self._fitted()
        data = F.check_rows(fm, X, type(self).__name__)
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        return F.impute(fm, data, draw=bool(draw), seed=seed)

    def _totals(
        self, X: Any, sample_weight: Any = None
    ) -> tuple[F.FittedMixture, dict]:
        """The fitted mixture and the (weighted) log-likelihood totals of ``X``."""
        fm = self._fitted()
        totals = F.score_totals(
            fm,
            X,
            sample_weight=sample_weight,
            nan_policy=self.nan_policy,
            split_every=self.split_every,
            kernel=self.kernel,
            owner=type(self).__name__,
        )
        return fm, totals

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """(Weighted) mean log-likelihood of the rows of ``X`` (computed now)."""
        _, totals = self._totals(X, sample_weight)
        return totals["loglik"] / totals["w"]

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw rows from the fitted mixture (scikit-learn's sampling, same draws).

        With ``scale`` or ``log1p`` the rows are drawn from the mixture of the
        scaled features and mapped back to the original units (``expm1`` on the
        ``log1p`` columns): the same distribution as the reported parameters'
        (through ``expm1``), not the same draws.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of int64 of shape (n_samples,)
            Component of each row.
        """
        fm = self._fitted()
        if (
            isinstance(n_samples, bool)
            or not isinstance(n_samples, (int, np.integer))
            or n_samples < 1
        ):
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires "
                "at least one sample."
            )
        return F.draw(fm, n_samples, check_random_state(self.random_state))

    def save(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        extra: dict | None = None,
    ) -> str:
        """Save the fitted model as a directory of ``model.json`` and ``arrays.npz``.

        Written atomically, never pickled; read back with :func:`daskgmm.load`.
        See :func:`daskgmm.model_io.save_model`.

        Parameters
        ----------
        path : str or path
            Destination directory.
        overwrite : bool, default=False
            Replace an existing model directory at ``path``.
        extra : dict, optional
            Small JSON-serialisable metadata stored with the model.

        Returns
        -------
        str
            The absolute path written.
        """
        return save_model(self, path, overwrite=overwrite, extra=extra)


class GaussianMixture(BaseMixture):
    """Gaussian mixture fitted by EM over dask arrays, for data larger than memory.

    The parameters, attributes and methods are those of scikit-learn's
    ``sklearn.mixture.GaussianMixture``; the fit makes one tree-reduced pass over
    the data per EM iteration, so memory is bounded by the chunk size.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        Form of the covariance of each component.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean log-likelihood.
    reg_covar : float, default=1e-6
        Added to the diagonal of the covariances so they stay positive definite.
    max_iter : int, default=100
        Number of EM iterations (data passes) per initialisation.
    n_init : int, default=1
        Number of initialisations; the best lower bound is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
        How the parameters are initialised (on a uniform row sample, see Notes).
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        Shape (n_components, n_features, n_features) for 'full', (n_features,
        n_features) for 'tied', (n_components, n_features) for 'diag',
        (n_components,) for 'spherical'.
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
        Start the next ``fit`` from the current solution.
    verbose : int, default=0
        Log progress to stderr (when logging is not configured): 1 or more shows a
        line every ``verbose_interval`` iterations.
    verbose_interval : int, default=10
    split_every : int, default=16
        Fan-in of the tree reduction of the per-block statistics.
    persist : {'auto', True, False}, default='auto'
        Keep the data in (cluster) memory during the fit. 'auto' does when it takes
        less than half of the memory available; otherwise every iteration reads the
        data from its source.
    init_sample_size : int, default=50000
        Rows in the uniform sample the initialisation works on.
    scale : {'none', 'standard', 'minmax'}, default='none'
        Scale every feature before EM, with per-feature moments from one pass over
        the data (weighted by ``sample_weight``): 'standard' subtracts the mean and
        divides by the standard deviation, 'minmax' maps the range onto [0, 1]. The
        fitted parameters, densities and samples stay in the original units (see
        Notes). Not with ``covariance_type='spherical'``.
    log1p : list of int or str, default=None
        Columns (indices, or names when fitted on a DataFrame) replaced by
        ``log1p(x)`` before the scaling; their values must be > -1.
    nan_policy : {'raise', 'omit'}, default='raise'
        Rows with NaN or infinity: 'raise' refuses them (naming how many and the
        first); 'omit' leaves them out of the fit and of score/bic/aic (the number
        left out of the fit is ``n_omitted_``), and gives them label -1 and NaN
        responsibilities and log-densities in predict, predict_proba and
        score_samples.
    kernel : {'auto', 'compiled', 'numpy'}, default='auto'
        The E-step chunk kernel: 'compiled' is numba's (4-22x faster), 'numpy' the
        reference it is tested against (the two agree to about 1e-13). 'auto'
        takes the compiled one, except on workers with less than 1 GiB of memory
        (numba adds about 150 MB per process); the environment variable
        ``DASKGMM_KERNEL`` overrides 'auto'.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood of the best run at its last iteration.
    lower_bounds_ : list of float
        Lower bound at each iteration of the best run.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.
    n_omitted_ : int
        Rows left out of the fit for NaN or infinity (``nan_policy='omit'``).
    scaling_ : daskgmm._preprocess.Scaling
        The fitted preprocessing ``z = (f(x) - offset) / scale``: method, ``log1p``
        columns (as indices), ``offset`` and ``scale``. The identity when
        ``scale='none'`` and ``log1p=None``.

    Notes
    -----
    Initialisation works on a uniform sample of ``init_sample_size`` rows drawn in
    one pass: 'k-means++' and 'random_from_data' pick the means among them,
    'kmeans' runs Lloyd iterations on them and then one full pass of hard
    assignments; 'random' makes one full pass with random responsibilities.

    With ``scale`` or ``log1p`` the mixture is fitted on the scaled rows ``z``, and
    reported in the units of ``f(x)`` (``x`` with ``log1p`` applied to the
    ``log1p`` columns): a Gaussian mixture under the affine map ``f(x) = D z + b``
    is one with means ``D μ + b`` and covariances ``D Σ D``. ``means_``,
    ``covariances_``, ``precisions_`` and ``precisions_cholesky_`` are therefore in
    the original units, except that ``log1p`` columns stay on the log1p scale (a
    Gaussian in ``log1p(x)`` is not one in ``x``). ``score_samples``, ``score``,
    ``bic``, ``aic`` and ``lower_bound_`` are log-densities of the original rows
    (the log-Jacobian ``-Σ log scale - Σ log1p(x_j)`` included), ``sample`` returns
    rows in the original units, and ``weights_init``, ``means_init``,
    ``precisions_init`` and a warm start are read in the units of ``f(x)``.
    ``reg_covar`` is added on the scaled features. The scaling is computed in the
    same pass as the initialisation sample; predictions scale the rows block by
    block.
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        split_every: int = DEFAULT_SPLIT_EVERY,
        persist: str | bool = "auto",
        init_sample_size: int = 50_000,
        scale: str = "none",
        log1p: Any = None,
        nan_policy: str = "raise",
        kernel: str = "auto",
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.split_every = split_every
        self.persist = persist
        self.init_sample_size = init_sample_size
        self.scale = scale
        self.log1p = log1p
        self.nan_policy = nan_policy
        self.kernel = kernel

    def _inits(self, n_features: int) -> dict[str, np.ndarray | None]:
        k, ctype = self.n_components, self.covariance_type
        return {
            "weights": None
            if self.weights_init is None
            else check_weights_init(self.weights_init, k),
            "means": None
            if self.means_init is None
            else check_init_array(
                self.means_init,
                "means_init",
                (k, n_features),
                "(n_components, n_features)",
                "means",
            ),
            "precisions": None
            if self.precisions_init is None
            else check_precisions_init(self.precisions_init, ctype, k, n_features),
        }

    def bic(self, X: Any, sample_weight: Any = None) -> float:
        """Bayesian information criterion on ``X`` (lower is better).

        With ``sample_weight`` the total weight is the sample size.
        """
        return F.bic(*self._totals(X, sample_weight))

    def aic(self, X: Any, sample_weight: Any = None) -> float:
        """Akaike information criterion on ``X`` (lower is better)."""
        return F.aic(*self._totals(X, sample_weight))


###############################################################################
# Helpers


def _fit_timings(
    seconds: float, compile_seconds: float, em_seconds: float, em_passes: int
) -> dict[str, float | int]:
    """Where a fit's time went: EM passes apart from the setup before them (reading or
    persisting the data, initialisation, compiling the kernel)."""
    return {
        "fit_seconds": seconds,
        "setup_seconds": seconds - em_seconds,
        "compile_seconds": compile_seconds,
        "em_seconds": em_seconds,
        "em_passes": em_passes,
        "seconds_per_iteration": em_seconds / em_passes if em_passes else None,
    }


def set_fitted(model: BaseMixture, fitted: F.FittedMixture) -> BaseMixture:
    """Give ``model`` the fitted attributes of ``fitted`` (the one door by which fitted
    state enters an estimator: fit, model files, sweeps); returns it."""
    for name, attribute in F.ATTRIBUTES.items():
        value = getattr(fitted, name)
        if value is None:
            model.__dict__.pop(attribute, None)
        else:
            setattr(model, attribute, value)
    for name, attribute in F.SCALED_ATTRIBUTES.items():
        if fitted.scaled is None:
            model.__dict__.pop(attribute, None)
        else:
            setattr(model, attribute, getattr(fitted, name))
    if fitted.feature_names is not None:
        model.feature_names_in_ = fitted.feature_names
    else:
        model.__dict__.pop("feature_names_in_", None)
    for name, value in (fitted.variational or {}).items():
        setattr(model, name, value)
    return model


def load_model(path: str | os.PathLike) -> BaseMixture:
    """Load a GaussianMixture saved by :meth:`GaussianMixture.save` (``daskgmm.load``):
    parameters, fitted attributes (dtypes and Python types included) and predictions
    equal to those of the saved model. Errors: see
    :func:`daskgmm.model_io.read_model`."""
    params, fitted = read_model(path)
    return set_fitted(ESTIMATORS[fitted.estimator](**params), fitted)
