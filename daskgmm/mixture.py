"""GaussianMixture: scikit-learn's estimator, fitted by out-of-core EM on dask."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import numbers
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask._task_spec import DataNode, GraphNode
from threadpoolctl import threadpool_limits

from daskgmm import _kernels as K
from daskgmm import _preprocess as P
from daskgmm import exceptions
from daskgmm._em import (
    DataPasses,
    Parameters,
    Run,
    RunResult,
    precision_parameters,
    run_em_batched,
)
from daskgmm._init import (
    InitPlan,
    Sample,
    draw_sample,
    plan_initial,
    run_plans,
    sample_from_result,
    sample_rate,
)
from daskgmm._params import PARAMS, check_param
from daskgmm._reduce import (
    DEFAULT_SPLIT_EVERY,
    block_keys,
    map_rows,
    scheduler_threads,
    worker_memory_limits,
)
from daskgmm._reduce import active_client as _active_client
from daskgmm._validation import (
    Data,
    check_init_array,
    check_input,
    check_precisions_init,
    check_random_state,
    check_weights_init,
    count_non_finite_rows,
)

logger = logging.getLogger("daskgmm")

# Rows with NumPy input below which predictions run in the calling thread.
_DIRECT_ROWS = 100_000
# Target bytes of one row block when NumPy input is split for the fit.
_TARGET_CHUNK_BYTES = 64 * 2**20
# Share of the memory available that persist='auto' may fill with the data.
_PERSIST_SHARE = 0.5


class GaussianMixture:
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

    # ------------------------------------------------------------------ params

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p for p in signature.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of the estimator, as scikit-learn's ``get_params``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> GaussianMixture:
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
        for param in PARAMS:  # daskgmm._params: the table the job schema uses too
            check_param(param, getattr(self, param.name))
        _check_log1p_param(self.log1p)
        P.check_covariance_type(self.scale, self.covariance_type)

    def _check_inits(self, n_features: int) -> dict[str, np.ndarray | None]:
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

    # --------------------------------------------------------------------- fit

    def fit(
        self,
        X: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        iteration_callback: Callable[[int, RunResult], None] | None = None,
    ) -> GaussianMixture:
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
            fitted attributes: the hook checkpoints use.

        Returns
        -------
        self : GaussianMixture
        """
        self._fit(X, iteration_callback, sample_weight)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then return the most probable component of every row of ``X``.

        Returns
        -------
        labels : ndarray of shape (n_samples,), or a lazy dask array for dask input
        """
        self._fit(X, None, sample_weight)
        return self.predict(X)

    def _fit(
        self,
        X: Any,
        callback: Callable | None = None,
        sample_weight: Any = None,
        *,
        resume: list[RunResult] | None = None,
        on_state: Callable[[int, RunResult], None] | None = None,
    ) -> None:
        """Fit; ``resume`` continues the runs of a checkpoint (in the fitted space,
        as ``on_state`` receives them after every iteration) instead of starting
        new ones, ending with the same model as an uninterrupted fit."""
        started = time.perf_counter()
        self._check_params()
        data = check_input(X, min_samples=2)
        self._check_n_samples(data.n_samples)
        log1p = _log1p_columns(self.log1p, data)
        inits = self._check_inits(data.n_features)
        if not data.is_dask and self.nan_policy == "raise":
            _raise_if_non_finite(data.array)
        with _verbose_logging(self.verbose), _one_blas_thread_per_task():
            array = _fit_array(data, self.persist)
            weights = None
            if sample_weight is not None:
                weights = _aligned_weights(sample_weight, array, data)
            passes = DataPasses(
                array,
                self.split_every,
                weights=weights,
                nan_policy=self.nan_policy,
                kernel=self.kernel,
            )
            best, space, em = self._fit_runs(
                passes, data, inits, callback, log1p, resume=resume, on_state=on_state
            )
        self._set_fitted(best, data, space.scaling, space.shift)
        compile_seconds = passes.compile_seconds
        if space.passes is not passes:
            compile_seconds += space.passes.compile_seconds
        self.fit_timings_ = _fit_timings(
            time.perf_counter() - started, compile_seconds, *em
        )
        self.n_omitted_ = space.passes.n_omitted
        if self.n_omitted_:
            logger.warning(
                "nan_policy='omit': %d row(s) with NaN or infinity left out of the fit",
                self.n_omitted_,
            )

    def _check_n_samples(self, n_samples: int | None) -> None:
        if n_samples is not None and n_samples < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {n_samples}"
            )

    def _fit_runs(
        self,
        passes: DataPasses,
        data: Data,
        inits: dict,
        callback: Callable | None = None,
        log1p: tuple[int, ...] = (),
        *,
        resume: list[RunResult] | None = None,
        on_state: Callable[[int, RunResult], None] | None = None,
    ) -> tuple[RunResult, _FitSpace, tuple[float, int]]:
        """The ``n_init`` restarts, batched: every pass advances all of them.

        The restarts draw their initialisations from the random state in the same
        order as one after another would, and each run is the same as alone, so the
        result equals scikit-learn's sequential restarts with the same seeds.
        Returns the best run (in the fitted space), that space, and the seconds and
        number of the EM passes.
        """
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        rng = check_random_state(self.random_state) if do_init else None
        need_sample = do_init and any(v is None for v in inits.values())
        space = self._fit_space(passes, data, log1p, rng if need_sample else None)
        reseed_rows = None if space.sample is None else space.sample.rows
        if resume is not None:
            runs = [
                self._resumed_run(state, i, reseed_rows)
                for i, state in enumerate(resume)
            ]
        elif do_init:
            inits = space.scaled_inits(inits, self.covariance_type)
            plans = [self._plan(space.sample, rng) for _ in range(self.n_init)]
            starts = [
                self._with_inits(params, inits)
                for params in run_plans(space.passes, plans)
            ]
            runs = [
                self._new_run(start, -np.inf, i, reseed_rows)
                for i, start in enumerate(starts)
            ]
        else:
            runs = [self._new_run(*self._warm_start(space), 0)]
        if self.max_iter == 0:
            for run in runs:
                run.lower_bound = -np.inf
        tic = time.perf_counter()
        n_before = max(run.n_iter for run in runs)
        run_em_batched(
            space.passes,
            runs,
            verbose_interval=self.verbose_interval,
            on_pass=self._check_n_samples,
            on_iteration=_both(
                space.reporting(callback, self.covariance_type), on_state
            ),
        )
        em = (time.perf_counter() - tic, max(run.n_iter for run in runs) - n_before)
        best: RunResult | None = None
        for i, run in enumerate(runs):
            result = run.result()
            logger.info(
                "initialization %d %s; lower bound %.10g",
                i,
                "converged" if result.converged else "did not converge",
                result.lower_bound,
            )
            if best is None or result.lower_bound > best.lower_bound:
                best = result
        assert best is not None
        if not best.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                exceptions.ConvergenceWarning,
                stacklevel=4,
            )
        return best, space, em

    def _fit_space(
        self,
        passes: DataPasses,
        data: Data,
        log1p: tuple[int, ...] | None = None,
        rng: np.random.RandomState | None = None,
    ) -> _FitSpace:
        """The passes EM runs on: over the data as given, or over its scaled rows.

        With ``scale`` or ``log1p`` one pass computes the per-feature moments (and,
        given ``rng``, draws the initialisation sample, then scaled on the client);
        EM then reads the rows through ``transform_block``, block by block.
        """
        if log1p is None:
            log1p = _log1p_columns(self.log1p, data)
        if self.scale == "none" and not log1p:
            sample = None if rng is None else self._draw_sample(passes, data, rng)
            return _FitSpace(passes, P.Scaling.identity(data.n_features), 0.0, sample)
        calls = [(P.moments_block, log1p, P.combine_moments)]
        if rng is not None:
            size = max(self.init_sample_size, self.n_components)
            seed = int(rng.randint(np.iinfo(np.int32).max))
            spec = (seed, size, sample_rate(size, data.n_samples))
            calls.append((K.sample_block, spec, K.combine_samples))
        results = passes.run_many(calls, "sample" if rng is not None else "moments")
        stats = results[0]
        self._check_n_samples(stats["n"])
        scaling = P.fit_scaling(
            stats, self.scale, log1p, row_offsets=passes._row_offsets
        )
        logger.info(
            "scaling the features (%s%s)",
            self.scale,
            f", log1p of columns {list(log1p)}" if log1p else "",
        )
        scaled = DataPasses(
            _scaled_array(passes.X, scaling, data.dtype),
            passes.split_every,
            passes.name,
            weights=passes.weights,
            nan_policy=passes.nan_policy,
            kernel=passes.kernel,
        )
        scaled.n_passes = passes.n_passes
        # Mean log-Jacobian of the fitted rows: log p_x = log p_z + this, on average.
        shift = P.log_abs_det(scaling) - float(stats["mean"][list(log1p)].sum())
        sample = None
        if rng is not None:
            sample = sample_from_result(results[1], passes.weights is not None)
            rows = P.transform_block(sample.rows, scaling, data.dtype)
            sample = replace(sample, rows=rows.astype(np.float64))
        return _FitSpace(scaled, scaling, shift, sample)

    def _warm_start(self, space: _FitSpace) -> tuple[Parameters, float]:
        """The current solution and its lower bound in the space of this fit.

        The same scaling as the last fit (the same data) continues from the exact
        scaled parameters; another one maps the reported parameters onto it.
        """
        scaling = space.scaling
        fitted = getattr(self, "scaling_", None) or P.Scaling.identity(
            self.n_features_in_
        )
        if fitted.log1p != scaling.log1p:
            raise ValueError(
                f"warm_start: the model was fitted with log1p columns "
                f"{list(fitted.log1p)}, this fit has {list(scaling.log1p)}; fit with "
                "warm_start=False to change them"
            )
        if scaling.is_identity and fitted.is_identity:
            return self._current_parameters(), self.lower_bound_
        if scaling == fitted and hasattr(self, "_scaled_params_"):
            return self._scaled_params_, self._scaled_lower_bound_
        current = self._current_parameters()
        mapped = P.to_scaled_units(
            current.weights,
            current.means,
            current.covariances,
            current.precisions_cholesky,
            self.covariance_type,
            scaling,
        )
        return Parameters(*mapped), self.lower_bound_ - space.shift

    def _new_run(
        self,
        start: Parameters,
        lower_bound: float,
        index: int,
        reseed_rows: np.ndarray | None = None,
    ) -> Run:
        """An EM run; ``reseed_rows`` (the scaled initialisation sample) re-seed
        components that lose all their rows."""
        label = f"[init {index}] " if self.n_init > 1 else ""
        return Run(
            start,
            self.covariance_type,
            self.tol,
            self.reg_covar,
            self.max_iter,
            lower_bound,
            label,
            reseed_rows=reseed_rows,
        )

    def _resumed_run(
        self, state: RunResult, index: int, reseed_rows: np.ndarray | None
    ) -> Run:
        """A run continuing from a checkpointed state (in the fitted space)."""
        run = self._new_run(state.params, state.lower_bound, index, reseed_rows)
        run.history = list(state.lower_bounds)
        run.n_iter = state.n_iter
        run.converged = state.converged
        return run

    def _draw_sample(
        self, passes: DataPasses, data: Data, rng: np.random.RandomState
    ) -> Sample:
        size = max(self.init_sample_size, self.n_components)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        result = draw_sample(passes, seed, size, data.n_samples)
        self._check_n_samples(result["n"])
        return sample_from_result(result, passes.weights is not None)

    def _plan(self, sample: Sample | None, rng: np.random.RandomState) -> InitPlan:
        """The initialisation of one restart (all ``*_init`` given: no sample)."""
        if sample is None:
            return InitPlan(self.covariance_type, self.reg_covar, params=(None,) * 3)
        return plan_initial(
            self.init_params,
            sample,
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            reg_covar=self.reg_covar,
            rng=rng,
        )

    def _with_inits(self, params: tuple, inits: dict) -> Parameters:
        """Initial parameters with the user's ``*_init`` in place of the drawn ones."""
        ctype = self.covariance_type
        weights, means, covariances = params
        if inits["weights"] is not None:
            weights = inits["weights"]
        if inits["means"] is not None:
            means = inits["means"]
        if inits["precisions"] is not None:
            prec_chol = K.precision_cholesky_from_precisions(inits["precisions"], ctype)
            covariances = K.covariances_from_cholesky(prec_chol, ctype)
            return Parameters(weights, means, covariances, prec_chol)
        return precision_parameters(weights, means, covariances, ctype)

    def _restore(
        self,
        state: RunResult,
        n_features: int,
        dtype: Any,
        feature_names: Any = None,
    ) -> GaussianMixture:
        """Set the fitted attributes from an EM state (resuming from a checkpoint)."""
        names = (
            None if feature_names is None else np.asarray(feature_names, dtype=object)
        )
        data = Data(None, False, None, n_features, np.dtype(dtype), names)
        # ``state`` is in the original units (what iteration_callback reports): the
        # only preprocessing left to apply to rows is log1p.
        scaling = P.Scaling.identity(n_features, _log1p_columns(self.log1p, data))
        self._set_fitted(state, data, scaling)
        return self

    def _current_parameters(self) -> Parameters:
        return Parameters(
            np.asarray(self.weights_, dtype=np.float64),
            np.asarray(self.means_, dtype=np.float64),
            np.asarray(self.covariances_, dtype=np.float64),
            np.asarray(self.precisions_cholesky_, dtype=np.float64),
        )

    def _set_fitted(
        self,
        best: RunResult,
        data: Data,
        scaling: P.Scaling | None = None,
        shift: float = 0.0,
    ) -> None:
        """The fitted attributes from the best run, fitted on rows scaled by
        ``scaling`` (None: the rows as given) with mean log-Jacobian ``shift``."""
        p = best.params
        dtype = data.dtype
        if scaling is None:
            scaling = P.Scaling.identity(data.n_features)
        lower_bound = float(best.lower_bound)
        lower_bounds = [float(v) for v in best.lower_bounds]
        if scaling.is_identity:
            for name in _SCALED_ATTRIBUTES:
                self.__dict__.pop(name, None)
        else:
            self._scaled_params_ = Parameters(
                *(
                    np.array(a, dtype=np.float64)
                    for a in (p.weights, p.means, p.covariances, p.precisions_cholesky)
                )
            )
            self._scaled_lower_bound_ = lower_bound
            p = Parameters(
                *P.to_original_units(
                    p.weights,
                    p.means,
                    p.covariances,
                    p.precisions_cholesky,
                    self.covariance_type,
                    scaling,
                )
            )
            lower_bound += shift
            lower_bounds = [v + shift for v in lower_bounds]
        self.weights_ = p.weights.astype(dtype)
        self.means_ = p.means.astype(dtype)
        self.covariances_ = np.asarray(p.covariances).astype(dtype)
        self.precisions_cholesky_ = p.precisions_cholesky.astype(dtype)
        self.precisions_ = K.precisions_from_cholesky(
            p.precisions_cholesky, self.covariance_type
        ).astype(dtype)
        self.converged_ = bool(best.converged)
        self.n_iter_ = best.n_iter
        self.lower_bound_ = lower_bound
        self.lower_bounds_ = lower_bounds
        self.scaling_ = scaling
        self.n_features_in_ = data.n_features
        self.n_omitted_ = 0
        if data.feature_names is not None:
            self.feature_names_in_ = data.feature_names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    # ----------------------------------------------------------------- predict

    def _check_fitted(self) -> None:
        if not hasattr(self, "converged_"):
            raise exceptions.NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' "
                "with appropriate arguments before using this estimator."
            )

    def _check_predict_input(self, X: Any) -> Data:
        self._check_fitted()
        data = check_input(X)
        if data.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {data.n_features} features, but {type(self).__name__} is "
                f"expecting {self.n_features_in_} features as input"
            )
        fitted_names = getattr(self, "feature_names_in_", None)
        if (
            fitted_names is not None
            and data.feature_names is not None
            and list(data.feature_names) != list(fitted_names)
        ):
            raise ValueError(
                "The feature names should match those that were passed during fit: "
                f"got {list(data.feature_names)}, expected {list(fitted_names)}"
            )
        return data

    def _kernel_params(self) -> K.KernelParams:
        """Kernel parameters of the reported mixture (in the units of f(x))."""
        return K.prepare(
            self.weights_, self.means_, self.precisions_cholesky_, self.covariance_type
        )

    def _scaling(self) -> P.Scaling | None:
        """The fitted scaling rows go through before the kernels, or None."""
        scaling = getattr(self, "scaling_", None)
        return None if scaling is None or scaling.is_identity else scaling

    def _fit_kernel_params(self) -> K.KernelParams:
        """Kernel parameters of the space the model was fitted in: the scaled rows
        (more precise than the reported parameters on the original rows)."""
        if self._scaling() is None:
            return self._kernel_params()
        p = self._scaled_params_
        return K.prepare(
            p.weights, p.means, p.precisions_cholesky, self.covariance_type
        )

    def _per_row(self, X: Any, what: str) -> Any:
        data = self._check_predict_input(X)
        out_dtype = np.result_type(data.dtype, self.means_.dtype)
        kernel, n_columns, dtype = {
            "label": (K.predict_block, None, np.int64),
            "proba": (K.predict_proba_block, self.n_components, out_dtype),
            "score": (K.score_samples_block, None, out_dtype),
        }[what]
        kwargs: dict[str, Any] = {"nan_policy": self.nan_policy}
        if what != "label":
            kwargs["out_dtype"] = out_dtype
        scaling = self._scaling()
        if scaling is None:
            kp = self._kernel_params()
        else:
            kernel, kp = _scaled_rows_block, (scaling, self._fit_kernel_params(), what)
        if data.is_dask:
            return map_rows(
                data.array,
                kernel,
                kp,
                name=what,
                n_columns=n_columns,
                dtype=dtype,
                **kwargs,
            )
        if self.nan_policy == "raise":
            _raise_if_non_finite(data.array)
        if data.n_samples <= _DIRECT_ROWS:
            return kernel(data.array, kp, **kwargs)
        array = _numpy_to_dask(data.array)
        lazy = map_rows(
            array, kernel, kp, name=what, n_columns=n_columns, dtype=dtype, **kwargs
        )
        with threadpool_limits(limits=1, user_api="blas"):
            return lazy.compute(scheduler="threads")

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

    def _loglik(self, X: Any, sample_weight: Any = None) -> dict:
        """(Weighted) total log-likelihood ``loglik`` of ``X``, its total weight ``w``
        (the number of rows when unweighted) and its rows ``n``, in one pass."""
        data = self._check_predict_input(X)
        if not data.is_dask and self.nan_policy == "raise":
            _raise_if_non_finite(data.array)
        array = data.array if data.is_dask else _numpy_to_dask(data.array)
        weights = None
        if sample_weight is not None:
            weights = _aligned_weights(sample_weight, array, data)
        passes = DataPasses(
            array,
            self.split_every,
            weights=weights,
            nan_policy=self.nan_policy,
            kernel=self.kernel,
        )
        scaling = self._scaling()
        if scaling is None:
            kernel, params = K.loglik_block, self._kernel_params()
        else:
            loglik = passes.twin(K.loglik_block)
            kernel = _scaled_loglik_block
            params = (scaling, self._fit_kernel_params(), loglik)
        with _one_blas_thread_per_task():
            result = passes.run(kernel, params, "score", K.combine_loglik)
        return {
            "loglik": float(result["loglik"]),
            "w": float(result["w"]),
            "n": int(result["n"]),
        }

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """(Weighted) mean log-likelihood of the rows of ``X`` (computed now)."""
        totals = self._loglik(X, sample_weight)
        return totals["loglik"] / totals["w"]

    def bic(self, X: Any, sample_weight: Any = None) -> float:
        """Bayesian information criterion on ``X`` (lower is better).

        With ``sample_weight`` the total weight is the sample size.
        """
        totals = self._loglik(X, sample_weight)
        return -2.0 * totals["loglik"] + self._n_parameters() * math.log(totals["w"])

    def aic(self, X: Any, sample_weight: Any = None) -> float:
        """Akaike information criterion on ``X`` (lower is better)."""
        totals = self._loglik(X, sample_weight)
        return -2.0 * totals["loglik"] + 2.0 * self._n_parameters()

    def _n_parameters(self) -> int:
        return K.n_parameters(
            self.n_components, self.means_.shape[1], self.covariance_type
        )

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
        self._check_fitted()
        if (
            isinstance(n_samples, bool)
            or not isinstance(n_samples, (int, np.integer))
            or n_samples < 1
        ):
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires "
                "at least one sample."
            )
        rng = check_random_state(self.random_state)
        scaling = self._scaling()
        if scaling is None:
            return _draw(
                rng,
                n_samples,
                self.weights_,
                self.means_,
                self.covariances_,
                self.covariance_type,
            )
        p = self._scaled_params_
        Z, labels = _draw(
            rng, n_samples, p.weights, p.means, p.covariances, self.covariance_type
        )
        return P.inverse_transform_block(Z, scaling), labels

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
        from daskgmm.model_io import save_model

        return save_model(self, path, overwrite=overwrite, extra=extra)


###############################################################################
# Helpers

# Fitted attributes of a scaled model beyond scikit-learn's: its parameters and lower
# bound in the scaled space (predictions use them; a warm start continues from them).
_SCALED_ATTRIBUTES = ("_scaled_params_", "_scaled_lower_bound_")


@dataclass
class _FitSpace:
    """Where EM runs: passes over the rows as given, or over the scaled rows.

    Attributes
    ----------
    passes : DataPasses
    scaling : Scaling
        The identity when the rows are used as given.
    shift : float
        Mean log-Jacobian of the fitted rows: a (weighted) mean log-likelihood in
        the original units is the one in the scaled space plus ``shift``.
    sample : Sample or None
        The initialisation sample, scaled.
    """

    passes: DataPasses
    scaling: P.Scaling
    shift: float = 0.0
    sample: Sample | None = None

    def scaled_inits(self, inits: dict, covariance_type: str) -> dict:
        """The user's ``*_init`` (in the units of f(x)) on the scaled features."""
        if self.scaling.is_identity:
            return inits
        _, means, _, _ = P.to_scaled_units(
            None, inits["means"], None, None, covariance_type, self.scaling
        )
        precisions = inits["precisions"]
        if precisions is not None:
            precisions = P.precisions_to_scaled_units(
                precisions, covariance_type, self.scaling
            )
        return {"weights": inits["weights"], "means": means, "precisions": precisions}

    def to_original(self, state: RunResult, covariance_type: str) -> RunResult:
        """An EM state in the original units (parameters and lower bounds)."""
        p = state.params
        params = P.to_original_units(
            p.weights,
            p.means,
            p.covariances,
            p.precisions_cholesky,
            covariance_type,
            self.scaling,
        )
        return RunResult(
            Parameters(*params),
            state.converged,
            state.n_iter,
            state.lower_bound + self.shift,
            [v + self.shift for v in state.lower_bounds],
        )

    def reporting(self, callback: Callable | None, covariance_type: str) -> Any:
        """``callback`` receiving its states in the original units."""
        if callback is None or self.scaling.is_identity:
            return callback

        def report(index: int, state: RunResult) -> None:
            callback(index, self.to_original(state, covariance_type))

        return report


def _both(
    first: Callable | None, second: Callable | None
) -> Callable[[int, RunResult], None] | None:
    """One per-iteration callback calling ``first`` then ``second`` (either may be
    None)."""
    if first is None or second is None:
        return first or second

    def both(index: int, state: RunResult) -> None:
        first(index, state)
        second(index, state)

    return both


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


def _check_log1p_param(log1p: Any) -> None:
    """``log1p`` is None or a list of column indices or names (checked against the
    data at fit time)."""
    if log1p is None:
        return
    if isinstance(log1p, (str, bytes)) or not isinstance(log1p, Iterable):
        raise ValueError(
            f"log1p must be None or a list of column indices or names, got {log1p!r}"
        )
    for item in log1p:
        if isinstance(item, (bool, np.bool_)) or not isinstance(
            item, (numbers.Integral, str)
        ):
            raise ValueError(
                "log1p must list column indices (ints) or names (strings), got "
                f"{item!r} of type {type(item).__name__}"
            )


def _log1p_columns(log1p: Any, data: Data) -> tuple[int, ...]:
    """The ``log1p`` parameter as sorted column indices of ``data``."""
    if log1p is None:
        return ()
    names = None if data.feature_names is None else list(data.feature_names)
    columns = []
    for item in log1p:
        if not isinstance(item, str):
            columns.append(item)
        elif names is None:
            raise ValueError(
                f"log1p names the column {item!r} but X has no column names; give "
                "column indices (e.g. log1p=[0, 3])"
            )
        elif item not in names:
            raise ValueError(
                f"log1p names the column {item!r}, which X does not have; its "
                f"columns are {names}"
            )
        else:
            columns.append(names.index(item))
    return P.check_log1p(columns, data.n_features)


def _scaled_array(array: da.Array, scaling: P.Scaling, dtype: Any) -> da.Array:
    """The rows of ``array`` scaled block by block (lazy; same row chunks), in the
    fit dtype, optimised once so each block's read and scaling are one task."""
    scaled = map_rows(
        array,
        P.transform_block,
        scaling,
        name="scale",
        n_columns=array.shape[1],
        dtype=dtype,
        out_dtype=dtype,
    )
    (scaled,) = dask.optimize(scaled)
    return scaled


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


@K._quiet
def _scaled_loglik_block(
    X: np.ndarray,
    spec: tuple,
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """``loglik`` (:func:`K.loglik_block` or its compiled twin) of original rows:
    on the scaled rows, plus the (weighted) sum of the log-Jacobian."""
    scaling, kp, loglik = spec
    stats = loglik(P.transform_block(X, scaling), kp, block_index, weights)
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


def _raise_if_non_finite(array: np.ndarray) -> None:
    n_bad, first = count_non_finite_rows(array)
    if n_bad:
        K.raise_non_finite(n_bad, "X", f" (first at row {first})")


def _target_blocks(client: Any) -> tuple[int, int]:
    """How many row blocks a pass over data held in memory should have, at least and
    at most, on the scheduler that runs it.

    A task costs about 0.2 ms on the threaded scheduler and 1.5-3 ms on distributed
    (scheduling, messages, the result's transfer to the combine task): on threads
    about 4 blocks per core balance the load at no cost; on distributed one block
    per worker thread keeps the overhead to one task per thread and pass, and fewer
    blocks than threads would leave threads idle.
    """
    threads = scheduler_threads(client)
    return (threads, 4 * threads) if client is None else (threads, threads)


def _rows_per_block(n: int, n_features: int, itemsize: int, blocks: int) -> int:
    """Rows of ``blocks`` equal blocks (at least 4096 rows, at most 64 MiB each)."""
    rows = max(4096, math.ceil(n / blocks))
    return min(rows, max(1, _TARGET_CHUNK_BYTES // (n_features * itemsize)))


def _numpy_to_dask(array: np.ndarray) -> da.Array:
    """Wrap a NumPy array as a dask array of a few row blocks, without copying.

    ``da.from_array`` copies its input (dask >= 2025), doubling the memory of a large
    in-memory table; here every block is a view of ``array``. The number of blocks
    suits the scheduler (:func:`_target_blocks`).
    """
    n, d = array.shape
    blocks = _target_blocks(_active_client())[1]
    rows = _rows_per_block(n, d, array.itemsize, blocks)
    starts = range(0, n, rows)
    name = f"numpy-rows-{uuid.uuid4().hex}"
    graph = {
        (name, i, 0): DataNode((name, i, 0), array[s : s + rows])
        for i, s in enumerate(starts)
    }
    chunks = (tuple(min(n, s + rows) - s for s in starts), (d,))
    return da.Array(graph, name, chunks=chunks, dtype=array.dtype)


def _blocks_in_memory(array: da.Array) -> bool:
    """Whether every row block of ``array`` is data already (persisted, NumPy), not
    the result of a task."""
    graph = array.__dask_graph__()
    for key in block_keys(array):
        node = graph.get(key)
        if isinstance(node, GraphNode) and not isinstance(node, DataNode):
            return False
    return True


def _rechunked_for_memory(array: da.Array, client: Any) -> da.Array:
    """``array`` with row blocks suited to a pass over it in memory, when it is about
    to be computed into memory anyway (its blocks come from tasks: a read, a
    conversion); blocks already in memory (persisted, NumPy) are left where they
    are, since moving them costs a transfer.

    Too few blocks would leave threads idle; on distributed, many more blocks than
    worker threads cost a task each per pass (:func:`_target_blocks`).
    """
    rows_known = not any(math.isnan(c) for c in array.chunks[0])
    if not rows_known or _blocks_in_memory(array):
        return array
    least, most = _target_blocks(client)
    n_blocks = array.numblocks[0]
    if least <= n_blocks <= 2 * most:
        return array
    n, d = array.shape
    rows = _rows_per_block(n, d, array.dtype.itemsize, most)
    if math.ceil(n / rows) == n_blocks:
        return array
    logger.info(
        "re-chunking %d row blocks into blocks of %d rows for the passes in memory",
        n_blocks,
        rows,
    )
    return array.rechunk({0: rows})


def _aligned_weights(sample_weight: Any, array: da.Array, data: Data) -> da.Array:
    """Row weights as a 1-D dask array with the fit array's row blocks.

    Values are checked in the fit's passes (negative, NaN, inf, all zero).
    """
    weights = sample_weight
    if not isinstance(weights, da.Array):
        weights = np.asarray(weights)
        if weights.dtype.kind not in "biuf":
            raise TypeError(
                f"sample_weight must hold numbers, got dtype {weights.dtype}"
            )
    if weights.ndim != 1:
        raise ValueError(
            "sample_weight must be 1-D of shape (n_samples,), got shape "
            f"{weights.shape}"
        )
    if data.n_samples is not None and weights.shape[0] != data.n_samples:
        raise ValueError(
            f"sample_weight has {weights.shape[0]} values but X has "
            f"{data.n_samples} rows"
        )
    rows_known = not any(math.isnan(c) for c in array.chunks[0])
    if not isinstance(weights, da.Array):
        weights = da.from_array(
            weights.astype(np.float64, copy=False),
            chunks=(array.chunks[0],) if rows_known else -1,
            name=False,
        )
    if weights.chunks[0] != array.chunks[0]:
        if rows_known:
            weights = weights.rechunk({0: array.chunks[0]})
        elif weights.numblocks[0] != array.numblocks[0]:
            raise ValueError(
                "sample_weight must be chunked like X's rows when X's row counts "
                "are unknown"
            )
    (weights,) = dask.optimize(weights)
    return weights


def _available_memory(client: Any) -> float:
    """Bytes the data may occupy: worker memory limits, or free RAM here."""
    if client is not None:
        return float(sum(worker_memory_limits(client)))
    import psutil

    return float(psutil.virtual_memory().available)


def _fit_array(data: Data, persist: str | bool) -> da.Array:
    """The dask array a fit iterates over: optimised once, in memory if asked or if it fits."""
    if data.is_dask:
        array = data.array
        if array.dtype != data.dtype:
            array = array.astype(data.dtype)
    else:
        array = _numpy_to_dask(data.array)
    client = _active_client()
    nbytes = array.nbytes if not math.isnan(array.shape[0]) else math.nan
    if persist == "auto":
        if not data.is_dask and client is None:
            keep = False  # already in this process's memory
            reason = "NumPy input, threaded scheduler"
        else:
            budget = _PERSIST_SHARE * _available_memory(client)
            keep = nbytes <= budget  # False for unknown sizes (nan)
            reason = (
                f"{nbytes / 2**20:.1f} MiB of data, {budget / 2**20:.0f} MiB budget"
            )
    else:
        keep, reason = bool(persist), f"persist={persist}"
    (array,) = dask.optimize(array)
    if keep:
        logger.info("keeping the data in memory during the fit (%s)", reason)
        array = _rechunked_for_memory(array, client).persist()
    else:
        logger.info("reading the data from its source at every pass (%s)", reason)
    return array


@contextlib.contextmanager
def _one_blas_thread_per_task() -> Iterator[None]:
    """Single-threaded BLAS in this process while a fit or score runs.

    On dask's threaded scheduler each thread already works on its own block; BLAS
    threads on top of that fight for the same cores (measured: 2x slower per
    iteration on 2 cores). With a distributed client the M-step's tiny (K, d, d)
    factorisations run here while the workers keep the cores busy: multi-threaded
    BLAS then waits for its threads to get a core, ~5 ms per 3x3 triangular solve
    (measured on a LocalCluster of 2 x 1 on 2 cores, 2M x 3, K=8: 75 ms of client
    and scheduler CPU per iteration, 12 ms single-threaded). Worker processes are
    started with ``OPENBLAS_NUM_THREADS=1`` by distributed
    (``nanny.pre-spawn-environ``).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@contextlib.contextmanager
def _verbose_logging(verbose: int) -> Iterator[None]:
    """Show the package's INFO lines during a fit when ``verbose`` asks.

    The level of the ``daskgmm`` logger is lowered to INFO for the fit; a stderr
    handler is added only when logging is not configured at all.
    """
    if not verbose:
        yield
        return
    handler = None
    if not logger.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(previous)
        if handler is not None:
            logger.removeHandler(handler)
