"""Model selection at the cost of about one fit: every candidate advanced by each pass.

:func:`select_model` fits a mixture for every pair of ``n_components`` and
``covariance_type`` (and every restart of each), but reads the data once per EM
iteration for all of them: each block task evaluates the E-step of every candidate
still running (see :func:`daskgmm._em.run_em_batched`). Candidates that converge
drop out of later passes; a candidate that fails (a collapsed component, more
components than rows) is reported in the table instead of ending the sweep.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from daskgmm import _kernels as K
from daskgmm import exceptions
from daskgmm._em import DataPasses, Parameters, Run, RunResult, run_em_batched
from daskgmm._init import InitPlan, run_plans, sample_from_result, sample_rate
from daskgmm._validation import check_input, check_random_state
from daskgmm.mixture import (
    GaussianMixture,
    _aligned_weights,
    _fit_array,
    _one_blas_thread_per_task,
    _raise_if_non_finite,
    _verbose_logging,
)

logger = logging.getLogger("daskgmm")

CRITERIA = ("bic", "aic")
TABLE_COLUMNS = (
    "n_components",
    "covariance_type",
    "n_parameters",
    "lower_bound",
    "log_likelihood",
    "bic",
    "aic",
    "converged",
    "n_iter",
    "status",
    "error",
    "best",
)
# Parameters that name one candidate; the sweep sets them itself.
_CANDIDATE_PARAMS = ("n_components", "covariance_type")
_REFUSED_PARAMS = ("weights_init", "means_init", "precisions_init", "warm_start")


@dataclass
class ModelSelection:
    """The outcome of :func:`select_model`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per candidate, in sweep order: ``n_components``,
        ``covariance_type``, ``n_parameters``, ``lower_bound`` (of the best
        restart), ``log_likelihood`` (mean, of the final parameters), ``bic``,
        ``aic``, ``converged``, ``n_iter``, ``status`` (``ok`` or ``failed``),
        ``error`` (why it failed, else empty) and ``best``.
    best_ : GaussianMixture
        The fitted candidate with the lowest criterion.
    criterion : str
        ``bic`` or ``aic``.
    models_ : dict
        Every fitted candidate, keyed ``(n_components, covariance_type)``.
    n_passes : int
        Passes over the data the whole sweep took.
    """

    table: pd.DataFrame  # pandas is imported when a table is made
    best_: GaussianMixture
    criterion: str
    models_: dict[tuple[int, str], GaussianMixture] = field(default_factory=dict)
    n_passes: int = 0


@dataclass
class _Candidate:
    """One (n_components, covariance_type) of the sweep and its restarts."""

    model: GaussianMixture
    rng: np.random.RandomState
    runs: list[Run] = field(default_factory=list)
    error: str | None = None
    best: RunResult | None = None
    loglik: dict | None = None
    sample: Any = None

    @property
    def key(self) -> tuple[int, str]:
        return self.model.n_components, self.model.covariance_type


def _check_grid(
    n_components: int | Iterable[int], covariance_types: str | Iterable[str]
) -> tuple[list[int], list[str]]:
    ks = [n_components] if isinstance(n_components, int) else list(n_components)
    types = (
        [covariance_types]
        if isinstance(covariance_types, str)
        else list(covariance_types)
    )
    if not ks:
        raise ValueError(
            "n_components is empty; give at least one number of components"
        )
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(
                f"n_components must hold integers >= 1, got {k!r}; e.g. range(1, 11)"
            )
    if len(set(ks)) != len(ks):
        raise ValueError(f"n_components has repeated values: {ks}")
    if not types:
        raise ValueError(
            f"covariance_types is empty; give some of {', '.join(K.COVARIANCE_TYPES)}"
        )
    for ctype in types:
        if ctype not in K.COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_types has {ctype!r}; expected some of "
                f"{', '.join(K.COVARIANCE_TYPES)}"
            )
    if len(set(types)) != len(types):
        raise ValueError(f"covariance_types has repeated values: {types}")
    return [int(k) for k in ks], types


def _candidate_seeds(random_state: Any, n: int) -> list[Any]:
    """The ``random_state`` of every candidate.

    An integer seed is given to every candidate as is, so each candidate equals
    ``GaussianMixture(n_components=k, covariance_type=t, random_state=seed)`` fitted
    alone; otherwise each candidate gets its own seed drawn from ``random_state``.
    """
    if isinstance(random_state, (int, np.integer)) and not isinstance(
        random_state, bool
    ):
        return [int(random_state)] * n
    rng = check_random_state(random_state)
    return [int(s) for s in rng.randint(np.iinfo(np.int32).max, size=n)]


def select_model(
    X: Any,
    n_components: int | Iterable[int] = range(1, 11),
    covariance_types: str | Sequence[str] = ("full", "tied", "diag", "spherical"),
    *,
    criterion: str = "bic",
    n_init: int = 1,
    random_state: Any = None,
    sample_weight: Any = None,
    **params: Any,
) -> ModelSelection:
    """Fit every candidate mixture in one sweep and pick the best by BIC or AIC.

    All candidates (every ``n_components`` x ``covariance_types`` pair, times
    ``n_init`` restarts) share each pass over the data: a sweep costs the passes of
    its slowest candidate, not the sum of all fits.

    Parameters
    ----------
    X : array-like, dask array, pandas or dask DataFrame of shape (n_samples, n_features)
    n_components : int or iterable of int, default=range(1, 11)
    covariance_types : str or sequence of str, default all four
    criterion : {'bic', 'aic'}, default='bic'
        Lower is better.
    n_init : int, default=1
        Restarts per candidate (the best lower bound is kept), batched as well.
    random_state : int, RandomState or None
        An integer gives every candidate that seed, so each equals the same
        ``GaussianMixture`` fitted alone.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights, as ``GaussianMixture.fit``; the criteria use the total weight
        as the sample size.
    **params
        Any other ``GaussianMixture`` parameter (``tol``, ``reg_covar``,
        ``max_iter``, ``init_params``, ``split_every``, ``persist``, ``scale``,
        ``log1p`` ...). With ``scale`` or ``log1p`` every candidate is fitted on
        the same scaled rows (one more pass) and reported in the original units.

    Returns
    -------
    ModelSelection
        ``.table`` (a pandas DataFrame) and ``.best_`` (the fitted best model).

    Raises
    ------
    ValueError
        Bad arguments or data, or every candidate failed.
    """
    ks, types = _check_grid(n_components, covariance_types)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be 'bic' or 'aic', got {criterion!r}")
    for name in _CANDIDATE_PARAMS + _REFUSED_PARAMS:
        if name in params:
            raise ValueError(
                f"select_model sets {name} itself; use n_components= and "
                "covariance_types= (no *_init or warm_start in a sweep)"
            )
    grid = [(k, ctype) for ctype in types for k in ks]
    seeds = _candidate_seeds(random_state, len(grid))
    candidates = []
    for (k, ctype), seed in zip(grid, seeds, strict=True):
        model = GaussianMixture(
            n_components=k,
            covariance_type=ctype,
            n_init=n_init,
            random_state=seed,
            **params,
        )
        model._check_params()
        candidates.append(_Candidate(model, check_random_state(seed)))
    first = candidates[0].model
    data = check_input(X, min_samples=2)
    if not data.is_dask and first.nan_policy == "raise":
        _raise_if_non_finite(data.array)
    with _verbose_logging(first.verbose), _one_blas_thread_per_task():
        array = _fit_array(data, first.persist)
        weights = None
        if sample_weight is not None:
            weights = _aligned_weights(sample_weight, array, data)
        passes = DataPasses(
            array,
            first.split_every,
            weights=weights,
            nan_policy=first.nan_policy,
            kernel=first.kernel,
        )
        space = first._fit_space(passes, data)
        _sweep(space.passes, candidates, data.n_samples)
        _score(space, candidates, data)
    return _selection(candidates, criterion, space.passes.n_passes)


def _sweep(passes: DataPasses, candidates: list[_Candidate], n_samples: Any) -> None:
    """Initialise and run every candidate's restarts, all batched."""
    n_rows = _draw_samples(passes, candidates, n_samples)
    plans: list[tuple[_Candidate, InitPlan]] = []
    for cand in candidates:
        if cand.error is not None:
            continue
        if cand.model.n_components > n_rows:
            cand.error = (
                f"n_components = {cand.model.n_components} is larger than the "
                f"{n_rows} rows"
            )
            continue
        try:
            for _ in range(cand.model.n_init):
                plans.append((cand, cand.model._plan(cand.sample, cand.rng)))
        except ValueError as exc:
            cand.error = str(exc)
    plans = [(c, p) for c, p in plans if c.error is None]
    starts = run_plans(passes, [p for _, p in plans])
    for (cand, _), start in zip(plans, starts, strict=True):
        if cand.error is not None:
            continue
        try:
            params = cand.model._with_inits(start, _NO_INITS)
        except ValueError as exc:
            cand.error = f"initialisation failed: {exc}"
            continue
        cand.runs.append(_new_run(cand, params, len(cand.runs)))
    runs = [run for cand in candidates if cand.error is None for run in cand.runs]
    logger.info(
        "model selection: %d candidates, %d runs",
        sum(c.error is None for c in candidates),
        len(runs),
    )
    if runs:
        verbose_interval = candidates[0].model.verbose_interval
        run_em_batched(
            passes, runs, verbose_interval=verbose_interval, raise_errors=False
        )
    for cand in candidates:
        _pick_best(cand)


_NO_INITS: dict = {"weights": None, "means": None, "precisions": None}


def _new_run(cand: _Candidate, params: Parameters, index: int) -> Run:
    m = cand.model
    label = f"[K={m.n_components} {m.covariance_type}"
    label += f" init {index}] " if m.n_init > 1 else "] "
    return Run(
        params,
        m.covariance_type,
        m.tol,
        m.reg_covar,
        m.max_iter,
        label=label,
        reseed_rows=cand.sample.rows,
    )


def _draw_samples(
    passes: DataPasses, candidates: list[_Candidate], n_samples: Any
) -> int:
    """One pass drawing the initialisation sample of every candidate.

    Candidates with the same seed and size share a sample (with an integer
    ``random_state``, usually all of them). Returns the number of rows.
    """
    specs: dict[tuple[int, int], list[_Candidate]] = {}
    for cand in candidates:
        m = cand.model
        size = max(m.init_sample_size, m.n_components)
        seed = int(cand.rng.randint(np.iinfo(np.int32).max))
        specs.setdefault((seed, size), []).append(cand)
    calls = [
        (K.sample_block, (seed, size, sample_rate(size, n_samples)), K.combine_samples)
        for seed, size in specs
    ]
    results = passes.run_many(calls, "sample")
    for result, group in zip(results, specs.values(), strict=True):
        sample = sample_from_result(result, passes.weights is not None)
        for cand in group:
            cand.sample = sample
    return int(results[0]["n"])


def _pick_best(cand: _Candidate) -> None:
    """The best restart of a candidate (first best, as sequential restarts)."""
    if cand.error is not None:
        return
    ok = [run for run in cand.runs if run.error is None]
    if not ok:
        cand.error = cand.runs[0].error if cand.runs else "no run"
        return
    best = None
    for run in ok:
        result = run.result()
        if best is None or result.lower_bound > best.lower_bound:
            best = result
    cand.best = best


def _score(space: Any, candidates: list[_Candidate], data: Any) -> None:
    """Fitted attributes of every successful candidate and, in one more pass, the
    log-likelihood of its final parameters (for BIC and AIC), of the original rows
    when the sweep ran on scaled ones (``space``, see ``GaussianMixture._fit_space``)."""
    fitted = [c for c in candidates if c.best is not None]
    for cand in fitted:
        cand.model._set_fitted(cand.best, data, space.scaling, space.shift)
    if not fitted:
        return
    calls = [
        (K.loglik_block, cand.model._fit_kernel_params(), K.combine_loglik)
        for cand in fitted
    ]
    results = space.passes.run_many(calls, "score")
    for cand, result in zip(fitted, results, strict=True):
        if space.shift:
            result["loglik"] += result["w"] * space.shift
        cand.loglik = result


def _row(cand: _Candidate, n_features: int | None) -> dict:
    m = cand.model
    row: dict[str, Any] = {
        "n_components": m.n_components,
        "covariance_type": m.covariance_type,
        "n_parameters": (
            K.n_parameters(m.n_components, n_features, m.covariance_type)
            if n_features
            else np.nan
        ),
        "lower_bound": np.nan,
        "log_likelihood": np.nan,
        "bic": np.nan,
        "aic": np.nan,
        "converged": False,
        "n_iter": 0,
        "status": "failed" if cand.loglik is None else "ok",
        "error": "" if cand.loglik is not None else (cand.error or "failed"),
        "best": False,
    }
    if cand.loglik is None:
        return row
    total, w = cand.loglik["loglik"], cand.loglik["w"]
    p = row["n_parameters"]
    row.update(
        lower_bound=cand.best.lower_bound,
        log_likelihood=total / w,
        bic=-2.0 * total + p * math.log(w),
        aic=-2.0 * total + 2.0 * p,
        converged=bool(cand.best.converged),
        n_iter=int(cand.best.n_iter),
    )
    return row


def _selection(
    candidates: list[_Candidate], criterion: str, n_passes: int
) -> ModelSelection:
    n_features = next(
        (c.model.n_features_in_ for c in candidates if c.loglik is not None), None
    )
    import pandas as pd  # here only: workers unpickling daskgmm skip its 90 MB

    table = pd.DataFrame(
        [_row(c, n_features) for c in candidates], columns=list(TABLE_COLUMNS)
    )
    ok = table["status"] == "ok"
    if not ok.any():
        raise ValueError(
            "every candidate of the sweep failed (first: "
            f"{table['error'].iloc[0]}); try a larger reg_covar or fewer components"
        )
    best_index = int(table.loc[ok, criterion].idxmin())
    table.loc[best_index, "best"] = True
    not_converged = table[ok & ~table["converged"]]
    if len(not_converged):
        names = ", ".join(
            f"K={r.n_components} {r.covariance_type}"
            for r in not_converged.itertuples()
        )
        warnings.warn(
            f"{len(not_converged)} candidate(s) did not converge ({names}); increase "
            "max_iter or tol, or check for degenerate data",
            exceptions.ConvergenceWarning,
            stacklevel=3,
        )
    for row in table[~ok].itertuples():
        logger.warning(
            "candidate K=%d %s failed: %s",
            row.n_components,
            row.covariance_type,
            row.error,
        )
    models = {c.key: c.model for c in candidates if c.loglik is not None}
    best = candidates[best_index].model
    logger.info(
        "best by %s: K=%d %s (%s %.6g) after %d passes",
        criterion,
        best.n_components,
        best.covariance_type,
        criterion,
        table.loc[best_index, criterion],
        n_passes,
    )
    return ModelSelection(table, best, criterion, models, n_passes)
