"""BayesianGaussianMixture: scikit-learn's variational estimator, on the EM passes.

The number of components that the data need comes out of one fit: with a Dirichlet
process (or Dirichlet distribution) prior on the weights, the weights of the
components the data do not need shrink towards 0. Each iteration is one pass over
the data, as for :class:`daskgmm.GaussianMixture`: the variational E-step is the
EM E-step with other log-weights, and the update needs the same sufficient
statistics (:mod:`daskgmm._variational`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daskgmm._reduce import DEFAULT_SPLIT_EVERY
from daskgmm._validation import check_init_array
from daskgmm.mixture import BaseMixture


class BayesianGaussianMixture(BaseMixture):
    """Variational Bayesian Gaussian mixture over dask arrays, for data larger than
    memory.

    The parameters, attributes and methods are those of scikit-learn's
    ``sklearn.mixture.BayesianGaussianMixture`` (same defaults, same updates, the
    same lower bound), plus daskgmm's ``split_every``, ``persist``,
    ``init_sample_size``, ``scale``, ``log1p``, ``nan_policy`` and ``kernel`` (see
    :class:`daskgmm.GaussianMixture`). ``fit`` also takes ``sample_weight``
    (integer weights give the model of the repeated rows).

    Parameters
    ----------
    n_components : int, default=1
        The largest number of components; the fit leaves the unneeded ones with
        weights near 0.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
    tol : float, default=1e-3
        Convergence threshold on the change of the lower bound.
    reg_covar : float, default=1e-6
    max_iter : int, default=100
    n_init : int, default=1
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
        The initial responsibilities, on a uniform row sample as in
        :class:`daskgmm.GaussianMixture`.
    weight_concentration_prior_type : {'dirichlet_process', 'dirichlet_distribution'}
        default='dirichlet_process'
    weight_concentration_prior : float or None, default=None
        ``1 / n_components`` when None; smaller values leave more components empty.
    mean_precision_prior : float or None, default=None
        1 when None.
    mean_prior : array-like of shape (n_features,) or None, default=None
        The data's mean when None.
    degrees_of_freedom_prior : float or None, default=None
        ``n_features`` when None; must be greater than ``n_features - 1``.
    covariance_prior : float or array-like, default=None
        The data's covariance (variances for diag, their mean for spherical) when
        None.
    random_state, warm_start, verbose, verbose_interval : as GaussianMixture
    split_every, persist, init_sample_size, scale, log1p, nan_policy, kernel :
        as :class:`daskgmm.GaussianMixture`.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
        The expected weights, the posterior means, and the Wishart scale matrices
        divided by their degrees of freedom (scikit-learn's normalisation).
    converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_ :
        As scikit-learn's; the lower bound is the variational one (not divided
        by the number of rows).
    weight_concentration_prior_, weight_concentration_ :
        The prior and the posterior of the weights (a pair of arrays for the
        Dirichlet process).
    mean_precision_prior_, mean_precision_, mean_prior_ :
    degrees_of_freedom_prior_, degrees_of_freedom_, covariance_prior_ :
    scaling_, n_omitted_, fit_timings_ : as GaussianMixture.

    Notes
    -----
    ``predict``, ``predict_proba``, ``score_samples`` and ``score`` use the
    variational log-densities, as scikit-learn's: the expected log weights and
    precision terms in place of ``log weights_``. Checkpoints are not kept for
    this estimator.
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
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None,
        mean_prior: Any = None,
        degrees_of_freedom_prior: float | None = None,
        covariance_prior: Any = None,
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
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
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

    def _inits(self, n_features: int) -> dict:
        """No initial parameters; the priors given checked against the data."""
        self._settings = variational_settings(self, n_features)
        return super()._inits(n_features)

    def _variational(self) -> dict:
        return self._settings

    def _warm_variational(self) -> dict:
        return {
            "weight_concentration": self.weight_concentration_,
            "mean_precision": self.mean_precision_,
            "degrees_of_freedom": self.degrees_of_freedom_,
        }


def _check_priors(model: BayesianGaussianMixture, n_features: int) -> dict:
    """The prior settings, their shapes and values checked as scikit-learn's."""
    dof = model.degrees_of_freedom_prior
    if dof is not None and not dof > n_features - 1.0:
        raise ValueError(
            "The parameter 'degrees_of_freedom_prior' should be greater than "
            f"{n_features - 1}, but got {dof:.3f}."
        )
    mean = model.mean_prior
    if mean is not None:
        mean = check_init_array(
            mean, "mean_prior", (n_features,), "(n_features,)", "means"
        )
    cov = model.covariance_prior
    ctype = model.covariance_type
    if cov is not None and ctype == "spherical":
        cov = float(cov)
        if not cov > 0:
            raise ValueError(f"'spherical precision' should be positive, got {cov}")
    elif cov is not None:
        shape = (n_features,) if ctype == "diag" else (n_features, n_features)
        cov = check_init_array(
            cov, "covariance_prior", shape, str(shape), f"{ctype} covariance_prior"
        )
        if ctype == "diag" and not (cov > 0).all():
            raise ValueError("'diag precision' should be positive")
        if ctype != "diag" and not (
            np.allclose(cov, cov.T) and (np.linalg.eigvalsh(cov) > 0).all()
        ):
            raise ValueError(
                f"'{ctype} precision' should be symmetric, positive-definite"
            )
    return {
        "weight_concentration_prior": model.weight_concentration_prior,
        "mean_precision_prior": model.mean_precision_prior,
        "mean_prior": mean,
        "degrees_of_freedom_prior": dof,
        "covariance_prior": cov,
    }


def variational_settings(model: BayesianGaussianMixture, n_features: int) -> dict:
    """The runner's prior settings of ``model`` on data of ``n_features`` (checked
    as scikit-learn's): what its fit passes as the candidate's ``variational``."""
    return {
        "prior_type": model.weight_concentration_prior_type,
        **_check_priors(model, n_features),
    }
