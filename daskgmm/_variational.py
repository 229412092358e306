"""Variational Bayesian Gaussian mixtures on the same passes as EM.

scikit-learn's ``BayesianGaussianMixture`` (Bishop, *Pattern Recognition and
Machine Learning*, §10.2; Blei and Jordan 2006 for the Dirichlet process) updates a
posterior over the weights (Dirichlet, or the stick-breaking Beta factors of a
Dirichlet process), the means (Gaussian, precision ``β_k``) and the precisions
(Wishart, ``ν_k`` degrees of freedom) from exactly the statistics an EM pass
computes: ``N_k``, the component means ``x̄_k`` and covariances ``S_k`` of the
responsibilities. Its E-step is an EM E-step with other log-weights:

    log ρ_nk = E[log π_k] + log N(x_n | m_k, (ν_k W_k)⁻¹) − ½ d log ν_k
               + ½ (E[log |Λ_k|] − d/β_k)

so the chunk kernels run unchanged (:func:`kernel_log_weights` replaces
``log π_k``) and one pass per iteration suffices. The lower bound needs the
entropy of the responsibilities, ``Σ_n Σ_k γ log γ``, which follows from the same
statistics (:func:`responsibility_entropy`). The formulas here are
scikit-learn's (``_bayesian_mixture.py``), written as pure functions; the tests
compare every posterior parameter and the lower bound with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.special import betaln, digamma, gammaln

from daskgmm import _kernels as K
from daskgmm._em import RECENTRE_LOSS, Parameters, Run, RunResult

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


@dataclass(frozen=True)
class Prior:
    """The priors in use (scikit-learn's ``*_prior_`` attributes).

    Attributes
    ----------
    weight_concentration_prior_type : str
    weight_concentration : float
    mean_precision : float
    mean : ndarray of shape (d,)
    degrees_of_freedom : float
    covariance : ndarray or float
        (d, d) for full and tied, (d,) for diag, a float for spherical.
    """

    weight_concentration_prior_type: str
    weight_concentration: float
    mean_precision: float
    mean: np.ndarray
    degrees_of_freedom: float
    covariance: Any


@dataclass
class Posterior:
    """The variational posterior (scikit-learn's fitted attributes of the same
    names), in the space EM runs in.

    ``weight_concentration`` is a pair of (K,) arrays (the Beta factors) for a
    Dirichlet process, one (K,) array for a Dirichlet distribution;
    ``degrees_of_freedom`` is (K,), a float for ``tied``; ``covariances`` are the
    Wishart scale matrices divided by the degrees of freedom (scikit-learn's
    normalisation), ``precisions_cholesky`` their precision factors.
    """

    weight_concentration: Any
    mean_precision: np.ndarray
    means: np.ndarray
    degrees_of_freedom: Any
    covariances: np.ndarray
    precisions_cholesky: np.ndarray


###############################################################################
# Priors from the data


def data_prior(
    stats: dict,
    center: np.ndarray,
    covariance_type: str,
    *,
    prior_type: str,
    weight_concentration: float | None,
    mean_precision: float | None,
    mean: np.ndarray | None,
    degrees_of_freedom: float | None,
    covariance: Any,
    n_components: int,
) -> Prior:
    """The priors, the unset ones from the data as scikit-learn sets them.

    ``stats`` are one-component E-step statistics of every row about ``center``
    (``covariance_type`` full for full/tied, diag for diag/spherical): the data's
    mean and covariance (ddof 1, the total weight as the row count).
    """
    total = float(stats["nk"][0])
    delta = stats["s1"][0] / total
    data_mean = center + delta
    if covariance is None:
        s2 = stats["s2"][0]
        if covariance_type in ("full", "tied"):
            cov = (s2 - total * np.outer(delta, delta)) / (total - 1.0)
            covariance = np.atleast_2d(0.5 * (cov + cov.T))
        else:
            var = (s2 - total * delta**2) / (total - 1.0)
            covariance = var if covariance_type == "diag" else float(var.mean())
    d = center.shape[0]
    return Prior(
        prior_type,
        1.0 / n_components if weight_concentration is None else weight_concentration,
        1.0 if mean_precision is None else mean_precision,
        data_mean if mean is None else np.asarray(mean, dtype=np.float64),
        float(d) if degrees_of_freedom is None else degrees_of_freedom,
        covariance,
    )


###############################################################################
# The M-step: the posterior from the statistics


def _weights_posterior(nk: np.ndarray, prior: Prior) -> Any:
    if prior.weight_concentration_prior_type == "dirichlet_process":
        return (
            1.0 + nk,
            prior.weight_concentration + np.hstack((np.cumsum(nk[::-1])[-2::-1], 0)),
        )
    return prior.weight_concentration + nk


def _wishart_full(nk, xk, sk, prior, beta):
    dof = prior.degrees_of_freedom + nk
    diff = xk - prior.mean
    cov = (
        prior.covariance
        + nk[:, None, None] * sk
        + (nk * prior.mean_precision / beta)[:, None, None]
        * (diff[:, :, None] * diff[:, None, :])
    )
    return dof, cov / dof[:, None, None]


def _wishart_tied(nk, xk, sk, prior, beta):
    k = nk.shape[0]
    dof = prior.degrees_of_freedom + nk.sum() / k
    diff = xk - prior.mean
    cov = (
        prior.covariance
        + sk * nk.sum() / k
        + prior.mean_precision / k * np.dot((nk / beta) * diff.T, diff)
    )
    return dof, cov / dof


def _wishart_diag(nk, xk, sk, prior, beta):
    dof = prior.degrees_of_freedom + nk
    diff = xk - prior.mean
    cov = prior.covariance + nk[:, None] * (
        sk + (prior.mean_precision / beta)[:, None] * np.square(diff)
    )
    return dof, cov / dof[:, None]


def _wishart_spherical(nk, xk, sk, prior, beta):
    dof = prior.degrees_of_freedom + nk
    diff = xk - prior.mean
    cov = prior.covariance + nk * (
        sk + prior.mean_precision / beta * np.mean(np.square(diff), 1)
    )
    return dof, cov / dof


_WISHART = {
    "full": _wishart_full,
    "tied": _wishart_tied,
    "diag": _wishart_diag,
    "spherical": _wishart_spherical,
}


def posterior(
    nk: np.ndarray, xk: np.ndarray, sk: np.ndarray, prior: Prior, covariance_type: str
) -> Posterior:
    """The posterior after observing statistics ``nk`` (with scikit-learn's
    ``10 eps``), means ``xk`` and covariances ``sk`` (with ``reg_covar``)."""
    beta = prior.mean_precision + nk
    means = (prior.mean_precision * prior.mean + nk[:, None] * xk) / beta[:, None]
    dof, cov = _WISHART[covariance_type](nk, xk, sk, prior, beta)
    chol = K.precision_cholesky_from_covariances(cov, covariance_type)
    return Posterior(_weights_posterior(nk, prior), beta, means, dof, cov, chol)


###############################################################################
# The E-step's log-weights, the expected weights, the lower bound


def expected_log_weights(post: Posterior, prior_type: str) -> np.ndarray:
    """``E[log π_k]`` under the posterior."""
    if prior_type == "dirichlet_process":
        a, b = post.weight_concentration
        digamma_sum = digamma(a + b)
        digamma_a, digamma_b = digamma(a), digamma(b)
        return (
            digamma_a
            - digamma_sum
            + np.hstack((0, np.cumsum(digamma_b - digamma_sum)[:-1]))
        )
    wc = post.weight_concentration
    return digamma(wc) - digamma(np.sum(wc))


def _log_lambda(dof: Any, n_features: int) -> np.ndarray:
    """``E[log |Λ_k|]`` without the log det of the scale (in the densities)."""
    return n_features * math.log(2.0) + np.sum(
        digamma(0.5 * (np.asarray(dof) - np.arange(n_features)[:, None])), 0
    )


def kernel_log_weights(post: Posterior, prior_type: str) -> np.ndarray:
    """What replaces ``log π_k`` in the chunk kernels' log-densities:
    ``E[log π_k] − ½ d log ν_k + ½ (E[log |Λ_k|] − d/β_k)`` (scikit-learn's
    ``_estimate_log_prob`` plus ``_estimate_log_weights``)."""
    d = post.means.shape[1]
    dof = post.degrees_of_freedom
    return (
        expected_log_weights(post, prior_type)
        - 0.5 * d * np.log(dof)
        + 0.5 * (_log_lambda(dof, d) - d / post.mean_precision)
    )


def expected_weights(post: Posterior, prior_type: str) -> np.ndarray:
    """The posterior mean of the weights (scikit-learn's ``weights_``)."""
    if prior_type == "dirichlet_process":
        a, b = post.weight_concentration
        total = a + b
        weights = a / total * np.hstack((1, np.cumprod(b / total)[:-1]))
        return weights / np.sum(weights)
    wc = post.weight_concentration
    return wc / np.sum(wc)


def _log_wishart_norm(dof: Any, log_det_chol: Any, n_features: int) -> Any:
    return -(
        dof * log_det_chol
        + dof * n_features * 0.5 * math.log(2.0)
        + np.sum(gammaln(0.5 * (dof - np.arange(n_features)[:, None])), 0)
    )


def lower_bound(
    post: Posterior, prior: Prior, covariance_type: str, entropy: float
) -> float:
    """scikit-learn's lower bound (up to its constant) of ``post``, given the
    responsibilities' ``Σ γ log γ`` (``entropy``) of the E-step before it."""
    k, d = post.means.shape
    log_det = K.log_det_cholesky(
        post.precisions_cholesky, covariance_type, d
    ) - 0.5 * d * np.log(post.degrees_of_freedom)
    log_wishart = _log_wishart_norm(post.degrees_of_freedom, log_det, d)
    log_wishart = (
        k * float(np.ravel(log_wishart)[0])
        if covariance_type == "tied"
        else np.sum(log_wishart)
    )
    if prior.weight_concentration_prior_type == "dirichlet_process":
        log_norm_weight = -np.sum(betaln(*post.weight_concentration))
    else:
        wc = post.weight_concentration
        log_norm_weight = gammaln(np.sum(wc)) - np.sum(gammaln(wc))
    return float(
        -entropy
        - log_wishart
        - log_norm_weight
        - 0.5 * d * np.sum(np.log(post.mean_precision))
    )


def responsibility_entropy(
    stats: dict,
    shifts: np.ndarray,
    means: np.ndarray,
    kp: K.KernelParams,
    prec_chol: np.ndarray,
    covariance_type: str,
) -> float:
    """``Σ_n w_n Σ_k γ_nk log γ_nk`` of an E-step with kernel parameters ``kp`` (of
    ``means`` and ``prec_chol``), from its statistics accumulated about ``shifts``.

    ``log γ_nk = lp_nk − lse_n`` with ``lp_nk = log_norm_k − ½ q_nk`` and
    ``q_nk = |U_kᵀ(x_n − μ_k)|²``, so the sum is ``Σ_k log_norm_k N_k − ½ Σ_k
    tr(P_k M_k) − Σ_n lse_n``: ``M_k`` (the second moment about ``μ_k``) follows
    from the statistics about the shifts, ``Σ lse`` is the pass's log-likelihood.
    """
    nk, s1, s2 = stats["nk"], stats["s1"], stats["s2"]
    delta = means - shifts
    if covariance_type in ("full", "tied"):
        outer = s1[:, :, None] * delta[:, None, :]
        m2 = (
            (
                s2
                - outer
                - np.swapaxes(outer, 1, 2)
                + nk[:, None, None] * delta[:, :, None] * delta[:, None, :]
            )
            if covariance_type == "full"
            else (
                s2
                - (outer + np.swapaxes(outer, 1, 2)).sum(0)
                + np.einsum("k,ki,kj->ij", nk, delta, delta)
            )
        )
        prec = K.precisions_from_cholesky(prec_chol, covariance_type)
        quad = float(np.sum(prec * m2))
    else:
        m2 = s2 - 2.0 * s1 * delta + nk[:, None] * delta**2
        prec = prec_chol**2
        quad = float(np.sum(prec[:, None] * m2 if prec.ndim == 1 else prec * m2))
    return float(kp.log_norm @ nk - 0.5 * quad - stats["loglik"])


###############################################################################
# One variational run


@dataclass
class VariationalRun(Run):
    """An EM run whose M-step is the variational update and whose lower bound is
    scikit-learn's; ``params`` hold the expected weights, the posterior means and
    the normalised Wishart covariances (what the estimator reports)."""

    BOUND: ClassVar[str] = "lower bound"

    prior: Prior | None = None
    posterior: Posterior | None = None

    def kernel_params(
        self, about: tuple[np.ndarray, np.ndarray] | None = None
    ) -> K.KernelParams:
        post, ctype = self.posterior, self.covariance_type
        log_weights = kernel_log_weights(
            post, self.prior.weight_concentration_prior_type
        )
        weights = self.params.weights
        if about is None:
            return K.prepare(
                weights,
                post.means,
                post.precisions_cholesky,
                ctype,
                log_weights=log_weights,
            )
        return K.recentred(
            weights,
            post.means,
            post.precisions_cholesky,
            ctype,
            *about,
            log_weights=log_weights,
        )

    def density_params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The variational E-step's densities as Gaussians: the posterior means,
        the normalised Wishart covariances (whose precisions the E-step uses) and
        the log-weights that replace ``log π`` (for rows with missing values,
        where the same per-component terms are kept: an approximation)."""
        post = self.posterior
        prior_type = self.prior.weight_concentration_prior_type
        return post.means, post.covariances, kernel_log_weights(post, prior_type)

    def recentring(self, stats: dict) -> tuple[np.ndarray | None, Parameters | None]:
        """About the new means when the shifted moments would cancel (see
        :meth:`Run.recentring`); the update itself is :meth:`step`'s."""
        live = np.ones(stats["nk"].shape, dtype=bool)
        if K.shift_loss(stats, self.covariance_type, live) <= RECENTRE_LOSS:
            return None, None
        _, means, _ = K.m_step(
            stats, self.posterior.means, self.reg_covar, self.covariance_type
        )
        return means, None

    def step(
        self,
        stats: dict,
        shifts: np.ndarray | None = None,
        params: Parameters | None = None,
    ) -> float:
        post, ctype = self.posterior, self.covariance_type
        shifts = post.means if shifts is None else shifts
        entropy = responsibility_entropy(
            stats,
            shifts,
            post.means,
            self.kernel_params(),
            post.precisions_cholesky,
            ctype,
        )
        _, xk, sk = K.m_step(stats, shifts, self.reg_covar, ctype)
        nk = stats["nk"] + 10 * K.EPS
        new = posterior(nk, xk, sk, self.prior, ctype)
        bound = lower_bound(new, self.prior, ctype, entropy)
        self.set_posterior(new)
        prev = self.lower_bound
        self.lower_bound = bound
        self.history.append(bound)
        self.n_iter += 1
        change = bound - prev
        self.converged = bool(abs(change) < self.tol)
        return change

    def set_posterior(self, post: Posterior) -> None:
        self.posterior = post
        weights = expected_weights(post, self.prior.weight_concentration_prior_type)
        self.params = Parameters(
            weights, post.means, post.covariances, post.precisions_cholesky
        )

    def result(self) -> RunResult:
        result = super().result()
        result.variational = (self.posterior, self.prior)
        return result
