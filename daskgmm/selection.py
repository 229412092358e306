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
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from daskgmm import _kernels as K
from daskgmm import exceptions
from daskgmm._params import check_params, names_where
from daskgmm._plan import (
    FitPlan,
    one_blas_thread_per_task,
    plan_fit,
    plan_settings,
    verbose_logging,
)
from daskgmm._runner import Candidate, Outcome, Sweep, run_candidates
from daskgmm._validation import check_random_state
from daskgmm.bayesian import BayesianGaussianMixture, variational_settings
from daskgmm.fitted import (
    EFFECTIVE_WEIGHT,
    fit_kernel_params,
    from_run,
    information_criteria,
)
from daskgmm.mixture import GaussianMixture, set_fitted

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
    "kind",
    "effective_components",
)
# Parameters that name one candidate (the sweep sets them itself) and those that
# depend on one candidate (refused).
_CANDIDATE_PARAMS = names_where(sweep="candidate")
_REFUSED_PARAMS = names_where(sweep="refused")


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
        Every fitted candidate, keyed ``(n_components, covariance_type)``; a
        Bayesian one (``bayesian=True``) keyed ``("bayesian", covariance_type)``.
    n_passes : int
        Passes over the data the whole sweep took.
    """

    table: pd.DataFrame  # pandas is imported when a table is made
    best_: GaussianMixture
    criterion: str
    models_: dict[tuple[int, str], GaussianMixture] = field(default_factory=dict)
    n_passes: int = 0


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
    checkpoint: Any = None,
    resume: bool = False,
    bayesian: bool = False,
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
    checkpoint : daskgmm.checkpoint.Checkpoint, optional
        Written with the state of every run of every candidate after each pass.
    resume : bool, default=False
        Continue the runs saved in ``checkpoint`` (the same data and grid).
    bayesian : bool, default=False
        Also fit a :class:`daskgmm.BayesianGaussianMixture` of ``max(n_components)``
        components per covariance type in the same passes: its row of the table
        gives the number of components it keeps (``effective_components``,
        weights above 0.01) beside the BIC/AIC sweep; it is not a candidate for
        ``best_`` (its criteria are left empty).
    **params
        Any other ``GaussianMixture`` parameter (``tol``, ``reg_covar``,
        ``max_iter``, ``init_params``, ``split_every``, ``persist``, ``scale``,
        ``log1p`` ...). With ``scale`` or ``log1p`` every candidate is fitted on
        the same scaled rows and reported in the original units.

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
    models = [
        GaussianMixture(
            n_components=k,
            covariance_type=ctype,
            n_init=n_init,
            random_state=seed,
            **params,
        )
        for (k, ctype), seed in zip(grid, seeds, strict=True)
    ]
    if bayesian:
        models += [
            BayesianGaussianMixture(
                n_components=max(ks),
                covariance_type=ctype,
                n_init=n_init,
                random_state=seeds[0],
                **params,
            )
            for ctype in types
        ]
    for model in models:
        check_params(model.get_params(), type(model).__name__)
    first = models[0]
    plan = plan_fit(X, sample_weight=sample_weight, **plan_settings(first.get_params()))
    candidates = [_candidate(m, plan.data.n_features) for m in models]
    logger.info("model selection: %d candidates", len(candidates))
    with verbose_logging(first.verbose), one_blas_thread_per_task():
        sweep = run_candidates(
            plan,
            candidates,
            verbose_interval=first.verbose_interval,
            checkpoint=checkpoint,
            resume=resume,
            raise_errors=False,
        )
        fitted = _score(sweep, models, plan)
    return _selection(sweep, models, fitted, criterion, sweep.space.passes.n_passes)


def _candidate(model: GaussianMixture, n_features: int) -> Candidate:
    if isinstance(model, BayesianGaussianMixture):
        return Candidate.from_params(
            model.get_params(),
            label=f"Bayesian K<={model.n_components} {model.covariance_type} ",
            variational=variational_settings(model, n_features),
        )
    label = f"K={model.n_components} {model.covariance_type} "
    return Candidate.from_params(model.get_params(), label=label)


def _score(sweep: Sweep, models: list[GaussianMixture], plan: FitPlan) -> list:
    """The fitted candidates (None where one failed) and, in one more pass, the
    log-likelihood of their final parameters (for BIC and AIC), of the original
    rows when the sweep ran on scaled ones."""
    space = sweep.space
    fitted = [
        None
        if out.best is None
        else from_run(
            out.best,
            space,
            out.candidate.covariance_type,
            plan.data,
            estimator=type(model).__name__,
        )
        for out, model in zip(sweep.outcomes, models, strict=True)
    ]
    done = [(model, fm) for model, fm in zip(models, fitted, strict=True) if fm]
    for model, fm in done:
        set_fitted(model, fm)
    if not done:
        return fitted
    calls = [
        (K.loglik_block, fit_kernel_params(fm), K.combine_loglik) for _, fm in done
    ]
    results = space.passes.run_many(calls, "score")
    it = iter(results)
    scored = []
    for fm in fitted:
        if fm is None:
            scored.append(None)
            continue
        result = next(it)
        if space.shift:
            result["loglik"] += result["w"] * space.shift
        scored.append(result)
    return scored


def _row(out: Outcome, scored: dict | None, n_features: int | None) -> dict:
    cand = out.candidate
    k, ctype = cand.n_components, cand.covariance_type
    row: dict[str, Any] = {
        "n_components": k,
        "covariance_type": ctype,
        "n_parameters": K.n_parameters(k, n_features, ctype) if n_features else np.nan,
        "lower_bound": np.nan,
        "log_likelihood": np.nan,
        "bic": np.nan,
        "aic": np.nan,
        "converged": False,
        "n_iter": 0,
        "status": "failed" if scored is None else "ok",
        "error": "" if scored is not None else (out.error or "failed"),
        "best": False,
        "kind": "bayesian" if cand.variational else "gaussian",
        "effective_components": np.nan,
    }
    if scored is None:
        return row
    row.update(
        lower_bound=out.best.lower_bound,
        log_likelihood=scored["loglik"] / scored["w"],
        converged=bool(out.best.converged),
        n_iter=int(out.best.n_iter),
    )
    if cand.variational:
        weights = out.best.params.weights
        row["effective_components"] = int((weights > EFFECTIVE_WEIGHT).sum())
    else:
        row.update(information_criteria(scored, row["n_parameters"]))
    return row


def _selection(
    sweep: Sweep,
    models: list[GaussianMixture],
    scored: list[dict | None],
    criterion: str,
    n_passes: int,
) -> ModelSelection:
    ok_models = [m for m, sc in zip(models, scored, strict=True) if sc is not None]
    n_features = ok_models[0].n_features_in_ if ok_models else None
    import pandas as pd  # here only: workers unpickling daskgmm skip its 90 MB

    table = pd.DataFrame(
        [
            _row(out, sc, n_features)
            for out, sc in zip(sweep.outcomes, scored, strict=True)
        ],
        columns=list(TABLE_COLUMNS),
    )
    ok = (table["status"] == "ok") & (table["kind"] == "gaussian")
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
    for row in table[table["status"] != "ok"].itertuples():
        logger.warning(
            "candidate K=%d %s failed: %s",
            row.n_components,
            row.covariance_type,
            row.error,
        )
    fitted = {
        (
            "bayesian" if isinstance(m, BayesianGaussianMixture) else m.n_components,
            m.covariance_type,
        ): m
        for m, sc in zip(models, scored, strict=True)
        if sc is not None
    }
    best = models[best_index]
    logger.info(
        "best by %s: K=%d %s (%s %.6g) after %d passes",
        criterion,
        best.n_components,
        best.covariance_type,
        criterion,
        table.loc[best_index, criterion],
        n_passes,
    )
    return ModelSelection(table, best, criterion, fitted, n_passes)
