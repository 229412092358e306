"""The EM loop: one tree-reduced pass over the data per iteration, M-step on the client."""

from __future__ import annotations

import functools
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import dask
import dask.array as da
import numpy as np

from daskgmm import _compiled
from daskgmm import _kernels as K
from daskgmm import _missing as M
from daskgmm._reduce import (
    active_client,
    block_sources,
    compute_root_here,
    tree_reduce,
    worker_memory_limits,
    workers_on_this_machine,
)
from daskgmm.exceptions import ComponentReseededWarning

logger = logging.getLogger("daskgmm")


@dataclass
class Parameters:
    """Mixture parameters in float64 on the client."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Weights, means, covariances, precision Cholesky factors (in that order)."""
        return self.weights, self.means, self.covariances, self.precisions_cholesky


@dataclass
class RunResult:
    """Outcome of one EM run (one initialisation)."""

    params: Parameters
    converged: bool
    n_iter: int
    lower_bound: float
    lower_bounds: list[float] = field(default_factory=list)
    # A variational run's (posterior, prior) (daskgmm._variational).
    variational: Any = None


class DataPasses:
    """Tree-reduced passes over the row blocks of a dask array.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        Feature axis in one chunk.
    split_every : int
        Fan-in of the reduction tree.
    name : str
        How to call the data in error messages.
    """

    def __init__(
        self,
        X: da.Array,
        split_every: int,
        name: str = "X",
        weights: da.Array | None = None,
        nan_policy: str = "raise",
        kernel: str = "auto",
    ) -> None:
        self.X = X
        self.kernel = kernel
        self._estep: Callable | None = None
        self.nan_policy = nan_policy
        self.n_omitted = 0
        self.weights = weights
        self.weight_sources = None if weights is None else block_sources(weights)
        self.split_every = split_every
        self.name = name
        self.n_passes = 0
        # Seconds spent compiling or loading the compiled kernel before the passes.
        self.compile_seconds = 0.0
        self.sources = block_sources(X)
        self.row_offsets = (
            np.concatenate([[0], np.cumsum(X.chunks[0])])
            if not any(math.isnan(c) for c in X.chunks[0])
            else None
        )

    def run(
        self,
        kernel: Callable,
        params: object,
        name: str,
        combine: Callable,
        check: bool = True,
    ) -> dict:
        """One pass: ``kernel`` on every block, combined in a tree, computed once.

        A NumPy kernel that has a compiled twin runs as the twin when these passes
        use the compiled E-step (:meth:`twin`).
        """
        graph = tree_reduce(
            self.X,
            self.twin(kernel),
            params,
            combine,
            name=name,
            split_every=self.split_every,
            sources=self.sources,
            weights=self.weights,
            weight_sources=self.weight_sources,
        )
        client = active_client()
        try:
            if client is not None:
                result = compute_root_here(graph, client)
            else:
                (result,) = dask.compute(graph)
        except Exception as exc:
            if type(exc).__name__ != "KilledWorker":
                raise
            raise RuntimeError(killed_worker_message(exc, name)) from exc
        self.n_passes += 1
        if check:
            self.check_result(kernel, result)
        return result

    def run_many(
        self, calls: Sequence[tuple[Callable, object, Callable]], name: str
    ) -> list:
        """One pass evaluating several ``(kernel, params, combine)`` on every block.

        Each block is read once; the results of every call share one reduction tree
        and equal those of separate passes bitwise (same kernels, same tree).
        """
        kernels = tuple((self.twin(kernel), params) for kernel, params, _ in calls)
        combines = tuple(combine for _, _, combine in calls)
        results = self.run(
            multi_block,
            kernels,
            name,
            functools.partial(combine_multi, combines),
            False,
        )
        for (kernel, _, _), result in zip(calls, results, strict=True):
            self.check_result(kernel, result)
        return list(results)

    def check_result(self, kernel: Callable, result: dict) -> None:
        """:meth:`check_finite`; and for a kernel using each row's observed values
        (``nan_policy='marginalize'``): rows with an infinite value raise, rows
        without an observed value are left out (``n_omitted``)."""
        self.check_finite(result)
        if not getattr(kernel, "uses_observed", False):
            return
        if result.get("n_inf"):
            self.raise_unusable(result)
        self.n_omitted = int(result["n_bad"])
        if result["n_bad"] and result["n_bad"] >= result["n"]:
            raise ValueError(
                f"no row of {self.name} has an observed value (every row is all NaN "
                "or has an infinity); nothing is left to fit"
            )

    def raise_unusable(self, result: dict) -> None:
        """The error for rows with an infinite value (``nan_policy='marginalize'``
        takes NaN for a missing value, never infinity)."""
        block, row = result["first_inf"]
        if self.row_offsets is not None:
            where = f"first at row {int(self.row_offsets[block]) + row}"
        else:
            where = f"first in row block {block}, row {row} of the block"
        raise ValueError(
            f"{self.name} has {result['n_inf']} row(s) with an infinite value "
            f"({where}); nan_policy='marginalize' takes NaN for a missing value: "
            "replace infinities by NaN, or drop those rows"
        )

    @property
    def estep(self) -> Callable:
        """The E-step chunk kernel these passes use (chosen on first use).

        The compiled kernel is compiled (or loaded from its cache) here first when
        the workers share this machine: they then load it from the cache instead of
        each compiling it in its first task, and the time is known
        (``compile_seconds``) and logged rather than hidden in the first pass.
        """
        if self._estep is None:
            self._estep = select_estep_kernel(self.kernel)
            if self._estep is _compiled.estep_block:
                client = active_client()
                if client is None or workers_on_this_machine(client):
                    self.compile_seconds = _compiled.warm_up(self.X.dtype)
                    if self.nan_policy == "marginalize":
                        self.compile_seconds += _compiled.warm_up_missing(self.X.dtype)
        return self._estep

    def estep_call(
        self, run: Run, about: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[Callable, object, Callable]:
        """The E-step of ``run`` in a pass: ``(kernel, params, combine)``; with
        ``nan_policy='marginalize'`` the kernel that uses each row's observed
        values (the complete rows still go through :attr:`estep`)."""
        kp = run.kernel_params(about=about)
        if self.nan_policy != "marginalize":
            return self.estep, kp, K.combine_stats
        compiled = None if self.estep is K.estep_block else _compiled
        params = M.missing_params(kp, self.estep, *run.density_params(), compiled)
        return M.estep_missing_block, params, K.combine_stats

    def twin(self, kernel: Callable) -> Callable:
        """``kernel``, or its compiled twin when these passes use the compiled E-step
        (the E-step, hard-assignment and log-likelihood kernels have one)."""
        if kernel not in _TWINS or self.estep is K.estep_block:
            return kernel
        return _TWINS[kernel]

    def stats(self, kernel: Callable, params: object, name: str) -> dict:
        """A pass whose blocks return E-step-like statistics."""
        return self.run(kernel, params, name, K.combine_stats)

    def check_finite(self, result: dict) -> None:
        """Raise the NaN/inf error if the pass met rows without a finite density,
        and the weight errors (negative, NaN or infinite, all zero)."""
        if result.get("n_bad_weights"):
            raise ValueError(
                f"sample_weight has {result['n_bad_weights']} negative, NaN or infinite "
                "value(s); weights must be finite and >= 0"
            )
        n_bad = result.get("n_bad", 0)
        if self.nan_policy == "marginalize":
            # Passes before EM (samples, initialisation, moments) skip the rows
            # with missing values; the E-step checks its own (estep_call).
            n_bad = 0
        if n_bad and self.nan_policy == "omit":
            self.n_omitted = n_bad
            if n_bad >= result["n"]:
                raise ValueError(
                    f"every row of {self.name} ({n_bad}) has NaN or infinity; "
                    "nothing is left to fit with nan_policy='omit'"
                )
        # Without weights a total of 0 means no row was usable: the NaN error below.
        weighted = self.weights is not None
        if weighted and "w" in result and result["n"] > 0 and not result["w"] > 0:
            raise ValueError(
                "sample_weight sums to zero; give at least one row a positive weight"
            )
        if not n_bad or self.nan_policy in ("omit", "marginalize"):
            return
        block, row = result["first_bad"]
        if self.row_offsets is not None:
            where = f" (first at row {int(self.row_offsets[block]) + row})"
        else:
            where = f" (first in row block {block}, row {row} of the block)"
        K.raise_non_finite(result["n_bad"], self.name, where)


def killed_worker_message(exc: BaseException, name: str) -> str:
    """One line explaining distributed's ``KilledWorker`` (a task that kept dying)."""
    task = getattr(exc, "task", None)
    task = task[0] if isinstance(task, tuple) else task
    return (
        f"a task of the {name} pass ({task or 'unknown'}) killed every worker that "
        "ran it (distributed's KilledWorker, after its allowed-failures retries): "
        "most often a worker running out of memory; give the workers more memory "
        "(cluster.memory_limit) or read smaller blocks (data.rows_per_chunk)"
    )


def precision_parameters(
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    covariance_type: str,
    *,
    reg_covar: float | None = None,
    rows: np.ndarray | None = None,
    iteration: int = 0,
) -> Parameters:
    """Parameters with the precision Cholesky factors of ``covariances``.

    ``reg_covar`` (None: unknown, at initialisation), ``rows`` (the rows each
    component holds, None: unknown) and ``iteration`` (0: the initialisation) only
    shape the error.

    Raises
    ------
    ValueError
        When a covariance is not positive definite, or (``reg_covar=0``) has
        collapsed to rounding noise (:func:`collapsed_components`): one line naming
        the components, the iteration and the fix, ending with scikit-learn's
        message.
    """
    bad = (
        collapsed_components(weights, means, covariances, covariance_type)
        if reg_covar == 0
        else np.array([], dtype=int)
    )
    if not bad.size:
        try:
            prec_chol = K.precision_cholesky_from_covariances(
                covariances, covariance_type
            )
        except ValueError:
            bad = singular_components(covariances, covariance_type)
        else:
            return Parameters(weights, means, covariances, prec_chol)
    raise ValueError(
        singular_message(bad, weights, covariance_type, reg_covar, rows, iteration)
    )


# With reg_covar=0 a variance under (COLLAPSED_ULPS units in the last place of the
# component's mean)^2 is rounding noise: the component holds one row, or identical
# rows, in that feature (its true variance is 0, the covariance singular).
COLLAPSED_ULPS = 64.0


def collapsed_components(
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    covariance_type: str,
) -> np.ndarray:
    """Indices of the components with a variance that is rounding noise.

    A variance ``<= (COLLAPSED_ULPS * eps * |mean|)**2`` in some feature cannot be
    told from 0 in float64 (the rows are known to ``eps * |mean|``). For ``tied``
    the pooled variances are compared with the weighted mean square of the means;
    ``[0]`` then means the tied covariance. For ``spherical``, the mean of the
    squared means over the features.
    """
    cov = np.asarray(covariances, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    if covariance_type == "full":
        variances, scale2 = np.diagonal(cov, axis1=1, axis2=2), means**2
    elif covariance_type == "tied":
        variances = np.diag(cov)[None]
        scale2 = (np.asarray(weights, dtype=np.float64) @ means**2)[None]
    elif covariance_type == "diag":
        variances, scale2 = cov, means**2
    else:
        variances, scale2 = cov[:, None], (means**2).mean(axis=1)[:, None]
    floor = (COLLAPSED_ULPS * K.EPS) ** 2 * scale2
    return np.flatnonzero(np.any(variances <= floor, axis=1))


def singular_components(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    """Indices of the components whose covariance is not positive definite
    (``[0]`` for a singular ``tied`` covariance)."""
    cov = np.asarray(covariances, dtype=np.float64)
    if covariance_type in ("diag", "spherical"):
        positive = cov > 0 if cov.ndim == 1 else np.all(cov > 0, axis=1)
        return np.flatnonzero(~positive)
    bad = []
    for k, c in enumerate(cov[None] if covariance_type == "tied" else cov):
        try:
            np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            bad.append(k)
    return np.array(bad, dtype=int)


def singular_message(
    components: np.ndarray,
    weights: np.ndarray,
    covariance_type: str,
    reg_covar: float | None,
    rows: np.ndarray | None,
    iteration: int,
) -> str:
    """The one-line error for singular covariances (see :func:`precision_parameters`)."""
    when = f"at iteration {iteration}" if iteration else "at initialisation"
    with_reg = "" if reg_covar is None else f" with reg_covar={reg_covar:g}"
    if reg_covar:
        fix = f"increase reg_covar (now {reg_covar:g}), or use fewer components"
    else:
        fix = "set reg_covar > 0, e.g. 1e-6, or use fewer components"
    if covariance_type != "tied" and not len(components):
        what = f"a covariance is singular{with_reg} {when}"
    elif covariance_type == "tied":
        what = (
            f"the tied covariance (pooled over the {len(weights)} components) is "
            f"singular{with_reg} {when}: within every component the rows are "
            "(nearly) identical in some direction"
        )
    else:
        components = [int(k) for k in components]
        many = len(components) > 1
        names = ", ".join(map(str, components))
        held = " of"
        if rows is not None:
            counts = ", ".join(f"{rows[k]:.3g}" for k in components)
            held = f" {'hold' if many else 'holds'} {counts} row(s) of"
        shares = ", ".join(f"{weights[k]:.3g}" for k in components)
        what = (
            f"component{'s' if many else ''} {names}{held} "
            f"weight{'s' if many else ''} {shares} {when}: "
            f"{'their covariances are' if many else 'its covariance is'} "
            f"singular{with_reg}"
        )
    return f"{what}; {fix}. {K.ILL_DEFINED_MESSAGE}"


def select_estep_kernel(choice: str = "auto") -> Callable:
    """The E-step chunk kernel: the compiled one (numba) or the NumPy reference.

    ``'auto'`` takes the compiled kernel when numba imports, except on a distributed
    cluster whose smallest worker memory limit is under
    ``COMPILED_MIN_WORKER_MEMORY``: numba and the compiled code add about 150 MB to
    every worker process, which such workers cannot spare. The environment variable
    ``DASKGMM_KERNEL`` (``compiled`` or ``numpy``) overrides ``'auto'``.

    Raises
    ------
    ImportError
        For ``'compiled'`` when numba cannot be imported.
    """
    if choice == "auto" and os.environ.get("DASKGMM_KERNEL") in KERNELS:
        choice = os.environ["DASKGMM_KERNEL"]
    if choice == "numpy":
        return K.estep_block
    if not _compiled.available():
        if choice == "compiled":
            raise ImportError(
                "kernel='compiled' needs numba: pip install numba, or use "
                "kernel='numpy'"
            )
        logger.info("NumPy E-step kernel (numba is not installed)")
        return K.estep_block
    if choice == "auto":
        smallest = smallest_worker_memory()
        if smallest is not None and smallest < COMPILED_MIN_WORKER_MEMORY:
            logger.info(
                "NumPy E-step kernel: the smallest worker has %.0f MiB, under the "
                "%.0f MiB the compiled kernel wants (numba adds about 150 MB per "
                "worker); kernel='compiled' forces it",
                smallest / 2**20,
                COMPILED_MIN_WORKER_MEMORY / 2**20,
            )
            return K.estep_block
    return _compiled.estep_block


def smallest_worker_memory() -> float | None:
    """The smallest memory limit of the active cluster's workers (None: no cluster,
    or no limit)."""
    client = active_client()
    if client is None:
        return None
    limits = [limit for limit in worker_memory_limits(client) if limit > 0]
    return float(min(limits)) if limits else None


def multi_block(
    X: np.ndarray,
    calls: tuple[tuple[Callable, object], ...],
    block_index: int = 0,
    *weights: np.ndarray,
) -> tuple:
    """Several kernels on one block (the block is read once): a batched pass."""
    w = weights[0] if weights else None
    return tuple(kernel(X, params, block_index, w) for kernel, params in calls)


def combine_multi(combines: tuple[Callable, ...], *parts: tuple) -> tuple:
    """Combine the partial results of :func:`multi_block`, call by call."""
    return tuple(
        combine(*[part[i] for part in parts]) for i, combine in enumerate(combines)
    )


@dataclass
class Run:
    """One candidate mixture's EM in progress (a restart, or a model of a sweep).

    Parameters
    ----------
    params : Parameters
        The current parameters (the start, then those after each M-step).
    covariance_type, tol, reg_covar, max_iter : as the estimator
    lower_bound : float
        Lower bound before the next iteration (-inf, or the warm start's).
    label : str
        How log lines name the candidate.
    """

    # What the lower bound is (log lines).
    BOUND: ClassVar[str] = "mean log-likelihood"

    params: Parameters
    covariance_type: str
    tol: float
    reg_covar: float
    max_iter: int
    lower_bound: float = -np.inf
    label: str = ""
    history: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    error: str | None = None
    reseed_rows: np.ndarray | None = None
    n_reseeded: int = 0
    warned_dead: bool = False

    @property
    def active(self) -> bool:
        """Whether the candidate needs another pass."""
        return self.error is None and not self.converged and self.n_iter < self.max_iter

    def kernel_params(
        self, about: tuple[np.ndarray, np.ndarray] | None = None
    ) -> K.KernelParams:
        """The E-step's kernel parameters of the current parameters; with ``about``
        (shifts and their weights) accumulating about those shifts instead of the
        means (:func:`daskgmm._kernels.recentred`)."""
        p = self.params
        if about is None:
            return K.prepare(
                p.weights, p.means, p.precisions_cholesky, self.covariance_type
            )
        return K.recentred(
            p.weights, p.means, p.precisions_cholesky, self.covariance_type, *about
        )

    def density_params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Means, covariances and log-weights of the E-step's densities (what the
        marginalising E-step of rows with missing values needs)."""
        p = self.params
        with np.errstate(divide="ignore"):
            return p.means, p.covariances, np.log(p.weights)

    def result(self) -> RunResult:
        return RunResult(
            self.params,
            self.converged,
            self.n_iter,
            self.lower_bound,
            list(self.history),
        )

    def recentring(self, stats: dict) -> tuple[np.ndarray | None, Parameters | None]:
        """Whether the shifted M-step would lose too many digits, and if not its result.

        ``Σ = S2/N − δδᵀ`` cancels when a mean moves many standard deviations in one
        iteration (a component jumping to a far outlier): then, or when a covariance
        comes out not positive definite, the pass is run again with the new means as
        shifts (the exact two-pass covariances): returns ``(new means, None)``.
        Otherwise ``(None, parameters)``: the M-step's parameters, factorised here
        already, for :meth:`step` (None when a component lost its rows: :meth:`step`
        re-seeds it first).
        """
        live = np.ones(stats["nk"].shape, dtype=bool)
        live[dead_components(stats)] = False
        weights, means, covariances = K.m_step(
            stats, self.params.means, self.reg_covar, self.covariance_type
        )
        loss = K.shift_loss(stats, self.covariance_type, live)
        if loss <= RECENTRE_LOSS:
            try:
                tied = self.covariance_type == "tied"
                prec_chol = K.precision_cholesky_from_covariances(
                    covariances if tied else covariances[live], self.covariance_type
                )
            except ValueError:
                pass
            else:
                if not live.all():
                    return None, None
                # reg_covar=0: a covariance collapsed to rounding noise is judged
                # after the exact pass about the new means (by the M-step).
                collapsed = (
                    self.reg_covar == 0
                    and collapsed_components(
                        weights, means, covariances, self.covariance_type
                    ).size
                )
                if not collapsed:
                    return None, Parameters(weights, means, covariances, prec_chol)
        means[~live] = self.params.means[~live]
        logger.debug(
            "%siteration %d: the shifted moments cancel (factor %.3g); "
            "one more pass about the new means",
            self.label,
            self.n_iter + 1,
            loss,
        )
        return means, None

    def step(
        self,
        stats: dict,
        shifts: np.ndarray | None = None,
        params: Parameters | None = None,
    ) -> float:
        """M-step from the E-step ``stats`` (accumulated about ``shifts``, by default
        the current means), or ``params`` when :meth:`recentring` computed them;
        returns the change of the lower bound."""
        if params is None:
            params = self._m_step(stats, shifts)
        # The weighted mean log-likelihood (w = number of rows when unweighted).
        prev, lower_bound = self.lower_bound, stats["loglik"] / stats["w"]
        self.params = params
        self.lower_bound = lower_bound
        self.history.append(lower_bound)
        self.n_iter += 1
        change = lower_bound - prev
        self.converged = bool(abs(change) < self.tol)
        return change

    def _m_step(self, stats: dict, shifts: np.ndarray | None) -> Parameters:
        """New parameters from ``stats``, components without rows re-seeded."""
        weights, means, covariances = K.m_step(
            stats,
            self.params.means if shifts is None else shifts,
            self.reg_covar,
            self.covariance_type,
        )
        dead = dead_components(stats)
        if dead.size and self.reseed_rows is None and not self.warned_dead:
            self.warned_dead = True
            warnings.warn(
                f"{self.label}component(s) {', '.join(map(str, dead))} lost all their "
                f"rows at iteration {self.n_iter + 1} and are kept with weight ~0 "
                "(no initialisation sample to re-seed them from: every *_init was "
                "given); try fewer components or other initial parameters",
                ComponentReseededWarning,
                stacklevel=3,
            )
        if dead.size and self.reseed_rows is not None:
            weights, means, covariances = reseed(
                (weights, means, covariances),
                dead,
                self.reseed_rows,
                self.params,
                self.covariance_type,
            )
            self.n_reseeded += dead.size
            warnings.warn(
                f"{self.label}component(s) {', '.join(map(str, dead))} lost all their "
                f"rows at iteration {self.n_iter + 1}; re-seeded at the sample rows "
                "the mixture explains worst (fewer clusters in the data than "
                "components?)",
                ComponentReseededWarning,
                stacklevel=3,
            )
        return precision_parameters(
            weights,
            means,
            covariances,
            self.covariance_type,
            reg_covar=self.reg_covar,
            # The rows each component holds, in rows of average weight.
            rows=stats["nk"] * (stats["n"] / stats["w"]) if stats["w"] else None,
            iteration=self.n_iter + 1,
        )


KERNELS = ("auto", "compiled", "numpy")
# The NumPy kernels with a compiled twin (importing _compiled does not import numba).
_TWINS = {
    K.estep_block: _compiled.estep_block,
    K.hard_assign_block: _compiled.hard_assign_block,
    K.loglik_block: _compiled.loglik_block,
}
# Workers with less memory than this keep the NumPy E-step kernel under 'auto'.
COMPILED_MIN_WORKER_MEMORY = 1 << 30

# A component whose responsibilities sum to less than this share of one average row
# has lost all its rows.
DEAD_SHARE = 1e-6
# Cancellation factor of the shifted M-step beyond which the pass is run again about
# the new means: 1e6 costs at most 6 of the 16 digits of a variance.
RECENTRE_LOSS = 1e6


def dead_components(stats: dict) -> np.ndarray:
    """Indices of the components with (next to) no responsibility in ``stats``."""
    if not stats["n"]:
        return np.array([], dtype=int)
    per_row = stats["w"] / stats["n"]
    return np.flatnonzero(stats["nk"] < DEAD_SHARE * per_row)


def _best_log_prob(rows: np.ndarray, kp: K.KernelParams) -> np.ndarray:
    """``max_k log π_k N(x | μ_k, Σ_k)`` per row (-inf where nothing is finite)."""
    out = np.empty(rows.shape[0])
    step = K.subblock_rows(kp.n_components, rows.shape[1])
    for start in range(0, rows.shape[0], step):
        x0 = rows[start : start + step] - kp.center
        best = K.weighted_log_prob(x0, kp).max(axis=1)
        out[start : start + step] = np.where(np.isnan(best), -np.inf, best)
    return out


def reseed(
    params: tuple[np.ndarray, np.ndarray, np.ndarray],
    dead: np.ndarray,
    rows: np.ndarray,
    previous: Parameters,
    covariance_type: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move the ``dead`` components to the sample ``rows`` worst explained.

    The rows are ranked by their log-density under the ``previous`` parameters (the
    ones the E-step used); each dead component takes the next worst row as its mean,
    the weighted average covariance of the live components, and the weight of one
    sample row; the weights are then renormalised. Deterministic.
    """
    weights, means, cov = (np.array(a, dtype=np.float64) for a in params)
    kp = K.prepare(
        previous.weights, previous.means, previous.precisions_cholesky, covariance_type
    )
    order = np.argsort(_best_log_prob(rows, kp), kind="stable")
    live = np.setdiff1d(np.arange(weights.size), dead)
    share = weights[live] / weights[live].sum() if live.size else None
    for i, k in enumerate(dead):
        means[k] = rows[order[i % order.size]]
        if covariance_type != "tied" and share is not None:
            cov[k] = np.tensordot(share, cov[live], axes=1)
        weights[k] = 1.0 / rows.shape[0]
    return weights / weights.sum(), means, cov


def recentre(
    passes: DataPasses,
    runs: Sequence[Run],
    active: list[int],
    calls: list[tuple[Callable, K.KernelParams, Callable]],
    results: list[dict],
) -> list[tuple[np.ndarray | None, Parameters | None]]:
    """Run the pass again about the new means for the runs whose M-step would cancel.

    ``results`` is updated in place; returns, per run, the shifts its statistics now
    use (None: its current means) and the M-step's parameters when
    :meth:`Run.recentring` computed them already (see :meth:`Run.step`).
    """
    checks = [
        runs[i].recentring(stats) for i, stats in zip(active, results, strict=True)
    ]
    shifts = [shift for shift, _ in checks]
    redo = [j for j, shift in enumerate(shifts) if shift is not None]
    if not redo:
        return checks
    recentred = []
    for j in redo:
        about = (shifts[j], results[j]["nk"])
        recentred.append(passes.estep_call(runs[active[j]], about))
    again = passes.run_many(recentred, "estep-recentred")
    for j, stats in zip(redo, again, strict=True):
        results[j] = stats
    return checks


def run_em_batched(
    passes: DataPasses,
    runs: Sequence[Run],
    *,
    verbose_interval: int = 10,
    on_pass: Callable[[int], None] | None = None,
    on_iteration: Callable[[int, RunResult], None] | None = None,
    raise_errors: bool = True,
) -> None:
    """Advance every active run by one EM iteration per pass over the data.

    Each pass evaluates the E-step of all runs still active on every block (one
    read of the data), in one reduction tree; runs that converge, reach their
    ``max_iter`` or fail drop out of later passes. Every run's result equals that of
    running it alone (same kernel, same tree). ``runs`` are updated in place.

    Parameters
    ----------
    passes : DataPasses
    runs : sequence of Run
    verbose_interval : int
        Iterations between INFO log lines (the others are logged at DEBUG).
    on_pass : callable, optional
        Called with the number of rows after each pass (used to check n_components).
    on_iteration : callable, optional
        ``on_iteration(i, state)`` after every iteration of run ``i`` with its state
        so far (a :class:`RunResult`), e.g. to write a checkpoint.
    raise_errors : bool
        Whether an M-step error (an ill-defined covariance) ends everything, or only
        that run (recorded in its ``error``).
    """
    n_pass = 0
    while True:
        active = [i for i, run in enumerate(runs) if run.active]
        if not active:
            return
        n_pass += 1
        tic = time.perf_counter()
        calls = []
        for i in active:
            calls.append(passes.estep_call(runs[i]))
        results = passes.run_many(calls, "estep")
        if on_pass is not None:
            on_pass(results[0]["n"])
        checks = recentre(passes, runs, active, calls, results)
        seconds = time.perf_counter() - tic
        for i, stats, (shift, ready) in zip(active, results, checks, strict=True):
            run = runs[i]
            try:
                change = run.step(stats, shift, ready)
            except ValueError as exc:
                if raise_errors:
                    raise
                run.error = str(exc)
                logger.info(
                    "%sfailed at iteration %d: %s", run.label, run.n_iter + 1, exc
                )
                continue
            level = (
                logging.INFO if run.n_iter % verbose_interval == 0 else logging.DEBUG
            )
            logger.log(
                level,
                "%siteration %d  %s %.10g  change %.3g  %.3f s",
                run.label,
                run.n_iter,
                run.BOUND,
                run.lower_bound,
                change,
                seconds,
            )
            if on_iteration is not None:
                on_iteration(i, run.result())
        if len(runs) > 1:
            logger.debug(
                "pass %d: %d of %d candidates active, %.3f s",
                n_pass,
                len(active),
                len(runs),
                seconds,
            )
