"""One runner for every candidate mixture: sample → initial parameters → runs →
batched EM → best run.

A *candidate* is one mixture to fit (a number of components and a covariance type,
with its EM settings and its ``n_init`` restarts). :func:`run_candidates` fits any
number of them over one :class:`daskgmm._plan.FitPlan`, sharing every pass: one
pass draws every initialisation sample (and the scaling's moments), one pass
finishes the initialisations that need one, then each EM pass advances every run
still active (:func:`daskgmm._em.run_em_batched`). ``GaussianMixture.fit`` is one
candidate, :func:`daskgmm.select_model` a grid of them; with a ``checkpoint`` the
state of every run is written after each iteration and a later call with
``resume=True`` continues each run exactly where it stopped, for a fit and for a
sweep alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import dask
import numpy as np

from daskgmm import _kernels as K
from daskgmm import _missing as M
from daskgmm import _preprocess as P
from daskgmm import _variational as V
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
    fill_from_centers,
    plan_initial,
    plan_statistics,
    sample_from_result,
    sample_rate,
)
from daskgmm._plan import FitPlan
from daskgmm._reduce import map_rows
from daskgmm._validation import check_random_state

logger = logging.getLogger("daskgmm")

_NO_INITS: dict = {"weights": None, "means": None, "precisions": None}


@dataclass
class WarmStart:
    """The solution a warm start continues from (``GaussianMixture(warm_start=True)``).

    Attributes
    ----------
    params : Parameters
        In the units of f(x) (the reported parameters).
    lower_bound : float
        Its lower bound, in the original units.
    scaling : Scaling
        The scaling it was fitted with.
    scaled : tuple of (Parameters, float) or None
        Its exact parameters and lower bound in that scaling's space.
    """

    params: Parameters
    lower_bound: float
    scaling: P.Scaling
    scaled: tuple[Parameters, float] | None = None
    # A variational fit's scale-free posterior arrays: weight_concentration,
    # mean_precision, degrees_of_freedom.
    variational: dict | None = None


@dataclass
class Candidate:
    """One mixture to fit: the estimator's EM settings, its start, its restarts.

    ``inits`` holds ``weights``, ``means``, ``precisions`` given by the user (in the
    units of f(x), checked), or None each; ``warm`` a warm start (no initialisation
    then). ``label`` prefixes its log lines.
    """

    n_components: int
    covariance_type: str
    tol: float = 1e-3
    reg_covar: float = 1e-6
    max_iter: int = 100
    n_init: int = 1
    init_params: str = "kmeans"
    init_sample_size: int = 50_000
    random_state: Any = None
    inits: dict = field(default_factory=lambda: dict(_NO_INITS))
    warm: WarmStart | None = None
    label: str = ""
    # A variational (Bayesian) mixture's prior settings, in the units of f(x):
    # prior_type and the weight_concentration / mean_precision / mean /
    # degrees_of_freedom / covariance priors (None: from the data).
    variational: dict | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any], **given: Any) -> Candidate:
        """The candidate of an estimator's parameters (``get_params()``), with
        ``given`` fields (``inits``, ``warm``, ``label``)."""
        names = [f.name for f in fields(cls) if f.name not in given]
        return cls(**{name: params[name] for name in names if name in params}, **given)

    @property
    def needs_sample(self) -> bool:
        """Whether an initialisation sample is drawn (it also re-seeds components
        that lose all their rows)."""
        return self.warm is None and any(v is None for v in self.inits.values())

    def run_label(self, index: int) -> str:
        if self.n_init > 1:
            return f"[{self.label}init {index}] "
        return f"[{self.label.strip()}] " if self.label else ""


@dataclass
class Outcome:
    """One candidate's result: its best run (in the fitted space) or why it failed."""

    candidate: Candidate
    best: RunResult | None = None
    error: str | None = None
    runs: list[Run] = field(default_factory=list)


@dataclass
class FitSpace:
    """Where EM runs: passes over the rows as given, or over the scaled rows.

    Attributes
    ----------
    passes : DataPasses
    scaling : Scaling
        The identity when the rows are used as given.
    shift : float
        Mean log-Jacobian of the fitted rows: a (weighted) mean log-likelihood in
        the original units is the one in the scaled space plus ``shift``.
    n_rows : int or None
        Rows the first pass counted (None when no pass was needed).
    """

    passes: DataPasses
    scaling: P.Scaling
    shift: float = 0.0
    n_rows: int | None = None

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
        if self.scaling.is_identity:
            return state
        p = state.params
        params = P.to_original_units(*p.arrays(), covariance_type, self.scaling)
        return RunResult(
            Parameters(*params),
            state.converged,
            state.n_iter,
            state.lower_bound + self.shift,
            [v + self.shift for v in state.lower_bounds],
        )

    def warm_parameters(self, warm: WarmStart, covariance_type: str) -> tuple:
        """A warm start's parameters and lower bound in this space.

        The same scaling as the last fit (the same data) continues from the exact
        scaled parameters; another one maps the reported parameters onto it.
        """
        if warm.scaling.log1p != self.scaling.log1p:
            raise ValueError(
                f"warm_start: the model was fitted with log1p columns "
                f"{list(warm.scaling.log1p)}, this fit has {list(self.scaling.log1p)}; "
                "fit with warm_start=False to change them"
            )
        if self.scaling.is_identity and warm.scaling.is_identity:
            return warm.params, warm.lower_bound
        if self.scaling == warm.scaling and warm.scaled is not None:
            return warm.scaled
        p = warm.params
        mapped = P.to_scaled_units(*p.arrays(), covariance_type, self.scaling)
        return Parameters(*mapped), warm.lower_bound - self.shift


@dataclass
class Sweep:
    """What :func:`run_candidates` returns.

    Attributes
    ----------
    space : FitSpace
        Where EM ran (its scaling maps the results to the original units).
    outcomes : list of Outcome
        One per candidate, in order.
    em_seconds : float
        Wall-clock seconds of the EM passes.
    em_passes : int
        EM passes made (the iterations of the longest run).
    """

    space: FitSpace
    outcomes: list[Outcome]
    em_seconds: float = 0.0
    em_passes: int = 0


def run_candidates(
    plan: FitPlan,
    candidates: Sequence[Candidate],
    *,
    verbose_interval: int = 10,
    on_iteration: Callable[[int, RunResult], None] | None = None,
    checkpoint: Any = None,
    resume: bool = False,
    raise_errors: bool = True,
) -> Sweep:
    """Fit every candidate over ``plan``'s data, sharing each pass.

    Parameters
    ----------
    plan : FitPlan
    candidates : sequence of Candidate
    verbose_interval : int
        Iterations between INFO log lines.
    on_iteration : callable, optional
        ``on_iteration(i, state)`` after every iteration of run ``i`` (runs numbered
        candidate by candidate, restart by restart), with its state in the original
        units.
    checkpoint : Checkpoint, optional
        Written with every run's state (in the fitted space) after each iteration,
        once every run has one.
    resume : bool
        Continue the runs of ``checkpoint`` instead of initialising new ones; the
        passes before EM are made again (moments, samples: the re-seeding needs
        them), so the result is the uninterrupted one.
    raise_errors : bool
        Whether a failing candidate (more components than rows, an initialisation
        or M-step error) raises, or is recorded in its :class:`Outcome`.

    Returns
    -------
    Sweep
    """
    if checkpoint is not None and any(c.variational for c in candidates):
        raise ValueError(
            "checkpoints are not kept for BayesianGaussianMixture fits; fit without "
            "a checkpoint"
        )
    outcomes = [Outcome(c) for c in candidates]
    rngs = [check_random_state(c.random_state) for c in candidates]
    specs = [_sample_spec(c, rng) for c, rng in zip(candidates, rngs, strict=True)]
    space, samples = _first_pass(plan, specs)
    for out in outcomes:
        if space.n_rows is not None and out.candidate.n_components > space.n_rows:
            _fail(
                out,
                _too_few_rows(out.candidate.n_components, space.n_rows),
                raise_errors,
            )
    states = _resumed_states(checkpoint, candidates) if resume else None
    if states is None:
        _initialise(space, outcomes, rngs, samples, raise_errors)
    else:
        _resume(outcomes, states, samples)
    runs = [run for out in outcomes if out.error is None for run in out.runs]
    for run in runs:
        if run.max_iter == 0:
            run.lower_bound = -np.inf
    tic = time.perf_counter()
    before = max((run.n_iter for run in runs), default=0)
    if runs:
        run_em_batched(
            space.passes,
            runs,
            verbose_interval=verbose_interval,
            on_pass=_row_check(outcomes, raise_errors),
            on_iteration=_iteration_hooks(outcomes, space, on_iteration, checkpoint),
            raise_errors=raise_errors,
        )
    em_passes = max((run.n_iter for run in runs), default=0) - before
    for out in outcomes:
        _pick_best(out)
    return Sweep(space, outcomes, time.perf_counter() - tic, em_passes)


###############################################################################
# Before EM


def _sample_spec(candidate: Candidate, rng: np.random.RandomState) -> tuple | None:
    """The (seed, size) of a candidate's initialisation sample, drawn from its random
    state first (as a fit alone draws it), or None."""
    if not candidate.needs_sample:
        return None
    size = max(candidate.init_sample_size, candidate.n_components)
    return int(rng.randint(np.iinfo(np.int32).max)), size


def _first_pass(
    plan: FitPlan, specs: list[tuple | None]
) -> tuple[FitSpace, list[Sample | None]]:
    """One pass drawing every distinct sample (candidates with the same seed and size
    share it) and, for a scaled fit, the per-feature moments; the space EM runs in."""
    passes = plan.passes
    unique = list(dict.fromkeys(spec for spec in specs if spec is not None))
    n = plan.data.n_samples
    marginal = plan.nan_policy == "marginalize"
    calls = [
        (
            K.sample_block,
            (seed, size, sample_rate(size, n), *((True,) if marginal else ())),
            K.combine_samples,
        )
        for seed, size in unique
    ]
    if plan.scaled:
        moments = P.observed_moments_block if marginal else P.moments_block
        calls.insert(0, (moments, plan.log1p, P.combine_moments))
    if not calls:
        space = FitSpace(passes, P.Scaling.identity(plan.data.n_features))
        return space, [None] * len(specs)
    results = passes.run_many(calls, "sample" if unique else "moments")
    if marginal and results and results[-1]["n_bad"] >= results[-1]["n"] > 0:
        raise ValueError(
            f"no row of {passes.name} has an observed value (every row is all NaN or "
            "has an infinity); nothing is left to fit"
        )
    space = FitSpace(passes, P.Scaling.identity(plan.data.n_features))
    if plan.scaled:
        space = _scaled_space(plan, passes, results.pop(0))
    space.n_rows = int(results[0]["n"]) if results else space.n_rows
    weighted = passes.weights is not None
    drawn = {
        spec: _filled(_scaled_sample(sample_from_result(result, weighted), space, plan))
        for spec, result in zip(unique, results, strict=True)
    }
    return space, [None if spec is None else drawn[spec] for spec in specs]


def _scaled_space(plan: FitPlan, passes: DataPasses, stats: dict) -> FitSpace:
    """Passes over the rows scaled by the moments of ``stats``."""
    scaling = P.fit_scaling(
        stats, plan.scale, plan.log1p, row_offsets=passes.row_offsets
    )
    logger.info(
        "scaling the features (%s%s)",
        plan.scale,
        f", log1p of columns {list(plan.log1p)}" if plan.log1p else "",
    )
    scaled = DataPasses(
        _scaled_array(passes.X, scaling, plan.data.dtype),
        passes.split_every,
        passes.name,
        weights=passes.weights,
        nan_policy=passes.nan_policy,
        kernel=passes.kernel,
    )
    scaled.n_passes = passes.n_passes
    # Mean log-Jacobian of the fitted rows: log p_x = log p_z + this, on average.
    shift = P.mean_log_jacobian(stats, scaling)
    return FitSpace(scaled, scaling, shift, int(stats["n"]))


def _scaled_array(array: Any, scaling: P.Scaling, dtype: Any) -> Any:
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


def _filled(sample: Sample) -> Sample:
    """A sample whose missing values (NaN) are replaced by their column's
    (weighted) mean of the observed ones: a start for the initialisation, which
    works on complete rows."""
    rows = sample.rows
    missing = np.isnan(rows)
    if not missing.any():
        return sample
    weights = np.ones(len(rows)) if sample.weights is None else sample.weights
    means = np.where(missing, 0.0, rows).T @ weights
    means = means / np.maximum((weights[:, None] * ~missing).sum(axis=0), 1e-300)
    return replace(sample, rows=np.where(missing, means, rows), missing=missing)


def _scaled_sample(sample: Sample, space: FitSpace, plan: FitPlan) -> Sample:
    """A sample of original rows in the space EM runs in."""
    if space.scaling.is_identity:
        return sample
    rows = P.transform_block(sample.rows, space.scaling, plan.data.dtype)
    return replace(sample, rows=rows.astype(np.float64))


def _too_few_rows(n_components: int, n_rows: int) -> str:
    return (
        "Expected n_samples >= n_components but got n_components = "
        f"{n_components}, n_samples = {n_rows}"
    )


def _fail(out: Outcome, error: str, raise_errors: bool) -> None:
    if raise_errors:
        raise ValueError(error)
    if out.error is None:
        out.error = error


def _initialise(
    space: FitSpace,
    outcomes: list[Outcome],
    rngs: list[np.random.RandomState],
    samples: list[Sample | None],
    raise_errors: bool,
) -> None:
    """New runs: warm starts, and the initialisations of the others (those needing a
    pass share one, with the data's moments a variational candidate's priors need)."""
    plans: list[tuple[Outcome, InitPlan]] = []
    for out, rng, sample in zip(outcomes, rngs, samples, strict=True):
        cand = out.candidate
        if out.error is not None or cand.warm is not None:
            continue
        try:
            for _ in range(cand.n_init):
                plans.append((out, _init_plan(cand, sample, rng)))
        except ValueError as exc:
            if raise_errors:
                raise
            out.error = str(exc)
    plans = [(out, p) for out, p in plans if out.error is None]
    bayesian = [o for o in outcomes if o.error is None and o.candidate.variational]
    center = _prior_center(space, outcomes, samples) if bayesian else None
    extra = [] if center is None else [_moments_call(center, space)]
    stats, moments = plan_statistics(space.passes, [p for _, p in plans], extra)
    priors = {id(o): _prior(o.candidate, moments[0], center, space) for o in bayesian}
    for out in outcomes:
        cand = out.candidate
        if out.error is None and cand.warm is not None:
            params, bound = space.warm_parameters(cand.warm, cand.covariance_type)
            out.runs.append(_new_run(cand, params, bound, 0, None, priors.get(id(out))))
    for (out, plan), st in zip(plans, stats, strict=True):
        cand = out.candidate
        if out.error is not None:
            continue
        sample = samples[outcomes.index(out)]
        rows = None if sample is None else sample.rows
        if cand.variational:
            start = V.posterior(*plan.counts(st), priors[id(out)], cand.covariance_type)
            out.runs.append(
                _new_run(cand, start, -np.inf, len(out.runs), rows, priors[id(out)])
            )
            continue
        try:
            params = _with_inits(
                plan.finish(st),
                space.scaled_inits(cand.inits, cand.covariance_type),
                cand,
            )
        except ValueError as exc:
            if raise_errors:
                raise
            out.error = f"initialisation failed: {exc}"
            continue
        out.runs.append(_new_run(cand, params, -np.inf, len(out.runs), rows))


# Complete rows of a sample (per component) enough to start k-means from them.
COMPLETE_ROWS_PER_COMPONENT = 50


def _missing_init_plan(
    cand: Candidate, sample: Sample, rng: np.random.RandomState
) -> InitPlan:
    """The initialisation of a sample with missing values, finished on the sample.

    k-means runs on the observed values (k-POD: the filled-in values follow the
    centres); with complete rows enough, k-means on them alone is a second start,
    and the start whose mixture gives the sample's observed values the higher
    likelihood is kept (complete rows are the better start when values are
    missing at random, all rows when whole groups of rows lose their values).
    """

    def plan(rows: Sample) -> InitPlan:
        return _finish_on_sample(
            plan_initial(
                cand.init_params,
                rows,
                n_components=cand.n_components,
                covariance_type=cand.covariance_type,
                reg_covar=cand.reg_covar,
                rng=rng,
            ),
            sample,
        )

    plans = [plan(sample)]
    complete = ~sample.missing.any(axis=1)
    enough = complete.sum() >= COMPLETE_ROWS_PER_COMPONENT * cand.n_components
    if cand.init_params == "kmeans" and enough:
        weights = None if sample.weights is None else sample.weights[complete]
        rows = replace(
            sample, rows=sample.rows[complete], weights=weights, missing=None
        )
        plans.append(plan(rows))
    if len(plans) == 1:
        return plans[0]
    scores = [_sample_loglik(p.params, cand.covariance_type, sample) for p in plans]
    return plans[int(np.argmax(scores))]


def _finish_on_sample(plan: InitPlan, sample: Sample) -> InitPlan:
    """``plan`` finished from the sample's rows (missing values filled from the
    nearest k-means centre) instead of a pass over the data."""
    if plan.kernel is None:
        return plan
    rows = sample.rows
    if plan.kernel is K.hard_assign_block:
        rows = fill_from_centers(rows, sample.missing, plan.kernel_params[0])
    stats = plan.kernel(rows, plan.kernel_params, 0, sample.weights)
    return replace(plan, params=plan.finish(stats), kernel=None, kernel_params=None)


def _sample_loglik(params: tuple, covariance_type: str, sample: Sample) -> float:
    """Mean log-likelihood of the sample's observed values under ``params``
    (weights, means, covariances); -inf when they are not a valid mixture."""
    weights, means, covariances = params
    rows = np.where(sample.missing, np.nan, sample.rows)
    try:
        chol = K.precision_cholesky_from_covariances(covariances, covariance_type)
        kp = K.prepare(weights, means, chol, covariance_type)
        with np.errstate(divide="ignore"):
            log_weights = np.log(weights)
        mp = M.missing_params(kp, K.estep_block, means, covariances, log_weights)
        lse, _ = M.missing_loglik(rows, mp)
    except (np.linalg.LinAlgError, ValueError):
        return -np.inf
    ok = np.isfinite(lse)
    if not ok.any():
        return -np.inf
    w = None if sample.weights is None else sample.weights[ok]
    return float(np.average(lse[ok], weights=w))


def _prior_center(
    space: FitSpace, outcomes: list[Outcome], samples: list[Sample | None]
) -> np.ndarray:
    """Where the data's moments for the priors are accumulated about (the sample's
    mean, or a warm start's weighted mean): close to the data, so the second
    moments keep their digits far from the origin."""
    for sample in samples:
        if sample is not None and len(sample.rows):
            return sample.rows.mean(axis=0)
    for out in outcomes:
        warm = out.candidate.warm
        if warm is not None:
            params, _ = space.warm_parameters(warm, out.candidate.covariance_type)
            return K.weighted_center(params.weights, params.means)
    return np.zeros(space.scaling.n_features)


def _moments_call(center: np.ndarray, space: FitSpace) -> tuple:
    """A one-component E-step about ``center``: every row's weight, its sum and
    second moments (the data's mean and covariance)."""
    d = center.shape[0]
    kp = K.prepare(np.ones(1), center[None], np.eye(d)[None], "full", center=center)
    return (K.estep_block, kp, K.combine_stats)


def _prior(cand: Candidate, moments: dict, center: np.ndarray, space: FitSpace):
    """A variational candidate's priors in the space EM runs in."""
    spec, ctype = cand.variational, cand.covariance_type
    mean, covariance = spec["mean_prior"], spec["covariance_prior"]
    if not space.scaling.is_identity and (mean is not None or covariance is not None):
        mean, covariance = _scaled_prior(mean, covariance, ctype, space.scaling)
    if covariance is not None and ctype == "spherical":
        covariance = float(covariance)
    stats = moments
    if ctype in ("diag", "spherical"):
        stats = {**moments, "s2": np.diagonal(moments["s2"], axis1=1, axis2=2)}
    return V.data_prior(
        stats,
        center,
        ctype,
        prior_type=spec["prior_type"],
        weight_concentration=spec["weight_concentration_prior"],
        mean_precision=spec["mean_precision_prior"],
        mean=mean,
        degrees_of_freedom=spec["degrees_of_freedom_prior"],
        covariance=covariance,
        n_components=cand.n_components,
    )


def _scaled_prior(mean: Any, covariance: Any, ctype: str, scaling: P.Scaling) -> tuple:
    """User priors (units of f(x)) on the scaled features."""
    cov = None
    if covariance is not None:
        cov = np.asarray(covariance, dtype=np.float64)
        cov = cov if ctype == "tied" else cov[None]
    _, means, covs, _ = P.to_scaled_units(
        None,
        None if mean is None else np.asarray(mean, dtype=np.float64)[None],
        cov,
        None,
        ctype,
        scaling,
    )
    if covs is not None and ctype != "tied":
        covs = covs[0]
    return (None if means is None else means[0]), covs


def _init_plan(
    cand: Candidate, sample: Sample | None, rng: np.random.RandomState
) -> InitPlan:
    """The initialisation of one restart (all ``*_init`` given: no sample)."""
    if sample is None:
        return InitPlan(cand.covariance_type, cand.reg_covar, params=(None,) * 3)
    if sample.missing is not None:
        return _missing_init_plan(cand, sample, rng)
    return plan_initial(
        cand.init_params,
        sample,
        n_components=cand.n_components,
        covariance_type=cand.covariance_type,
        reg_covar=cand.reg_covar,
        rng=rng,
    )


def _with_inits(params: tuple, inits: dict, cand: Candidate) -> Parameters:
    """Initial parameters with the user's ``*_init`` in place of the drawn ones."""
    ctype = cand.covariance_type
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


def _new_run(
    cand: Candidate,
    start: Any,
    lower_bound: float,
    index: int,
    reseed_rows: np.ndarray | None,
    prior: V.Prior | None = None,
) -> Run:
    """An EM run; ``reseed_rows`` (the initialisation sample, in the fitted space)
    re-seed components that lose all their rows. A variational candidate's run
    starts from a posterior (``start``, or warm-start parameters completed with the
    candidate's scale-free posterior arrays) under ``prior``."""
    settings = (cand.covariance_type, cand.tol, cand.reg_covar, cand.max_iter)
    label = cand.run_label(index)
    if not cand.variational:
        return Run(start, *settings, lower_bound, label, reseed_rows=reseed_rows)
    if isinstance(start, Parameters):  # a warm start
        extra = cand.warm.variational
        start = V.Posterior(
            extra["weight_concentration"],
            extra["mean_precision"],
            start.means,
            extra["degrees_of_freedom"],
            start.covariances,
            start.precisions_cholesky,
        )
    run = V.VariationalRun(start, *settings, lower_bound, label, prior=prior)
    run.set_posterior(start)
    return run


###############################################################################
# Checkpoints


def _resumed_states(checkpoint: Any, candidates: Sequence[Candidate]) -> list:
    """The states of a checkpoint, one per run of every candidate."""
    if checkpoint is None:
        raise ValueError("resume=True needs a checkpoint")
    states = checkpoint.read()
    if states is None:
        raise FileNotFoundError(
            f"no checkpoint at {checkpoint.path}; run the job without --resume"
        )
    expected = sum(c.n_init for c in candidates)
    if len(states) != expected:
        raise ValueError(
            f"checkpoint {checkpoint.path} holds {len(states)} runs where this fit "
            f"has {expected} (model.n_init and the candidates must match); remove "
            "it and run without --resume"
        )
    logger.info(
        "resuming after iteration %d from %s",
        max(s.n_iter for s in states),
        checkpoint.path,
    )
    return states


def _resume(outcomes: list[Outcome], states: list, samples: list) -> None:
    """Runs continuing from checkpointed states (in the fitted space)."""
    it = iter(states)
    for out, sample in zip(outcomes, samples, strict=True):
        cand = out.candidate
        for index in range(cand.n_init):
            state = next(it)
            if out.error is not None:
                continue
            rows = None if sample is None else sample.rows
            run = _new_run(cand, state.params, state.lower_bounds[-1], index, rows)
            run.history = list(state.lower_bounds)
            run.n_iter = state.n_iter
            run.converged = state.converged
            out.runs.append(run)


def _checkpoint_writer(
    checkpoint: Any, n_runs: int
) -> Callable[[int, RunResult], None]:
    """Record each run's state; write them all once every run has one."""
    from daskgmm.checkpoint import State

    states: dict[int, State] = {}

    def record(index: int, state: RunResult) -> None:
        states[index] = State(
            state.params, state.n_iter, list(state.lower_bounds), state.converged
        )
        # After the first pass every run has a state.
        if len(states) == n_runs:
            checkpoint.write([states[i] for i in range(n_runs)])

    return record


###############################################################################
# During and after EM


def _row_check(outcomes: list[Outcome], raise_errors: bool) -> Callable[[int], None]:
    """After each pass: candidates with more components than the rows counted
    (input whose row count was unknown before a pass)."""

    def check(n_rows: int) -> None:
        for out in outcomes:
            if out.error is None and out.candidate.n_components > n_rows:
                _fail(
                    out, _too_few_rows(out.candidate.n_components, n_rows), raise_errors
                )
                for run in out.runs:
                    run.error = out.error

    return check


def _iteration_hooks(
    outcomes: list[Outcome],
    space: FitSpace,
    on_iteration: Callable | None,
    checkpoint: Any,
) -> Callable[[int, RunResult], None] | None:
    """The per-iteration callback of :func:`run_em_batched`: the caller's (states
    in the original units) and the checkpoint's (in the fitted space)."""
    active = [out for out in outcomes if out.error is None]
    ctypes = [out.candidate.covariance_type for out in active for _ in out.runs]
    n_runs = len(ctypes)
    writer = None if checkpoint is None else _checkpoint_writer(checkpoint, n_runs)
    if on_iteration is None and writer is None:
        return None

    def hook(index: int, state: RunResult) -> None:
        if on_iteration is not None:
            on_iteration(index, space.to_original(state, ctypes[index]))
        if writer is not None:
            writer(index, state)

    return hook


def _pick_best(out: Outcome) -> None:
    """The best restart of a candidate (the first best, as sequential restarts)."""
    if out.error is not None:
        return
    for i, run in enumerate(out.runs):
        if run.error is None:
            logger.info(
                "%sinitialization %d %s; lower bound %.10g",
                out.candidate.label,
                i,
                "converged" if run.converged else "did not converge",
                run.lower_bound,
            )
    ok = [run for run in out.runs if run.error is None]
    if not ok:
        out.error = out.runs[0].error if out.runs else "no run"
        return
    best = None
    for run in ok:
        result = run.result()
        if best is None or result.lower_bound > best.lower_bound:
            best = result
    out.best = best
