"""The EM loop: one tree-reduced pass over the data per iteration, M-step on the client."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np

from daskgmm import _kernels as K
from daskgmm._reduce import block_sources, tree_reduce

logger = logging.getLogger("daskgmm")


@dataclass
class Parameters:
    """Mixture parameters in float64 on the client."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray


@dataclass
class RunResult:
    """Outcome of one EM run (one initialisation)."""

    params: Parameters
    converged: bool
    n_iter: int
    lower_bound: float
    lower_bounds: list[float] = field(default_factory=list)


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
    ) -> None:
        self.X = X
        self.weights = weights
        self.weight_sources = None if weights is None else block_sources(weights)
        self.split_every = split_every
        self.name = name
        self.n_passes = 0
        self.sources = block_sources(X)
        self._row_offsets = (
            np.concatenate([[0], np.cumsum(X.chunks[0])])
            if not any(math.isnan(c) for c in X.chunks[0])
            else None
        )

    def run(
        self, kernel: Callable, params: object, name: str, combine: Callable
    ) -> dict:
        """One pass: ``kernel`` on every block, combined in a tree, computed once."""
        graph = tree_reduce(
            self.X,
            kernel,
            params,
            combine,
            name=name,
            split_every=self.split_every,
            sources=self.sources,
            weights=self.weights,
            weight_sources=self.weight_sources,
        )
        (result,) = dask.compute(graph)
        self.n_passes += 1
        self.check_finite(result)
        return result

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
        if "w" in result and result["n"] > 0 and not result["w"] > 0:
            raise ValueError(
                "sample_weight sums to 0; give at least one row a positive weight"
            )
        if not result.get("n_bad"):
            return
        block, row = result["first_bad"]
        if self._row_offsets is not None:
            where = f" (first at row {int(self._row_offsets[block]) + row})"
        else:
            where = f" (first in row block {block}, row {row} of the block)"
        K.raise_non_finite(result["n_bad"], self.name, where)


def precision_parameters(
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    covariance_type: str,
) -> Parameters:
    """Parameters with the precision Cholesky factors of ``covariances``."""
    prec_chol = K.precision_cholesky_from_covariances(covariances, covariance_type)
    return Parameters(weights, means, covariances, prec_chol)


def run_em(
    passes: DataPasses,
    start: Parameters,
    *,
    covariance_type: str,
    tol: float,
    reg_covar: float,
    max_iter: int,
    lower_bound: float = -np.inf,
    verbose_interval: int = 10,
    on_pass: Callable[[int], None] | None = None,
    on_iteration: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """EM from ``start`` until ``|Δ lower bound| < tol`` or ``max_iter`` passes.

    As scikit-learn, the lower bound of iteration ``t`` is the mean log-likelihood
    of the parameters before the ``t``-th M-step, and the returned parameters are
    those after the last M-step.

    Parameters
    ----------
    passes : DataPasses
    start : Parameters
    covariance_type, tol, reg_covar, max_iter : as the estimator
    lower_bound : float
        Lower bound before the first iteration (warm start), -inf otherwise.
    verbose_interval : int
        Iterations between INFO log lines (the others are logged at DEBUG).
    on_pass : callable, optional
        Called with the number of rows after each pass (used to check n_components).
    on_iteration : callable, optional
        Called after every iteration with the state so far (a :class:`RunResult`),
        e.g. to write a checkpoint.
    """
    params = start
    history: list[float] = []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        tic = time.perf_counter()
        kp = K.prepare(
            params.weights, params.means, params.precisions_cholesky, covariance_type
        )
        stats = passes.stats(K.estep_block, kp, "estep")
        if on_pass is not None:
            on_pass(stats["n"])
        weights, means, covariances = K.m_step(
            stats, params.means, reg_covar, covariance_type
        )
        params = precision_parameters(weights, means, covariances, covariance_type)
        # The weighted mean log-likelihood (w = number of rows when unweighted).
        prev, lower_bound = lower_bound, stats["loglik"] / stats["w"]
        history.append(lower_bound)
        change = lower_bound - prev
        level = logging.INFO if n_iter % verbose_interval == 0 else logging.DEBUG
        logger.log(
            level,
            "iteration %d  mean log-likelihood %.10g  change %.3g  %.3f s",
            n_iter,
            lower_bound,
            change,
            time.perf_counter() - tic,
        )
        converged = bool(abs(change) < tol)
        if on_iteration is not None:
            on_iteration(
                RunResult(params, converged, n_iter, lower_bound, list(history))
            )
        if converged:
            break
    return RunResult(params, converged, n_iter, lower_bound, history)
