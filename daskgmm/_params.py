"""The parameters of ``GaussianMixture``: one declarative table.

:data:`PARAMS` lists every constructor parameter in signature order with its
default, its kind and its constraint. The job schema (``daskgmm.config``) derives
the ``model`` block from it, and the estimator's parameter checks can be written
against it (:func:`check_param`), so the two cannot drift; ``tests/test_params.py``
holds the table equal to ``inspect.signature(GaussianMixture.__init__)``.

Kinds:

``int``
    An int (not bool) with a lower bound, ``gt`` or ``ge`` (``verbose`` also takes a
    bool).
``real``
    A finite float ``>= ge``.
``option``
    One of ``options`` (compared with their types: ``persist=1`` is not ``True``).
``bool``
    True or False.
``seed``
    None, an int or a ``numpy.random.RandomState``.
``array``
    An array-like of ``ndim`` dimensions (None: depends on ``covariance_type``),
    checked against the data at fit time.
``columns``
    None or a list of column indices or names, checked against the data at fit time.

This module imports only the modules that define the option tuples; nothing from
``daskgmm.mixture`` or ``daskgmm.config``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskgmm._em import KERNELS
from daskgmm._init import INIT_METHODS
from daskgmm._kernels import COVARIANCE_TYPES
from daskgmm._preprocess import SCALE_METHODS, check_covariance_type, check_method
from daskgmm._reduce import DEFAULT_SPLIT_EVERY
from daskgmm._validation import (
    check_int,
    check_option,
    check_positive,
    check_random_state,
    check_real,
)

PERSIST_OPTIONS = ("auto", True, False)
NAN_POLICIES = ("raise", "omit", "marginalize")

KINDS = (
    "int",
    "real",
    "positive_or_none",
    "option",
    "bool",
    "seed",
    "array",
    "columns",
)
ESTIMATORS = ("GaussianMixture", "BayesianGaussianMixture")
# A job's model.kind, by estimator.
MODEL_KINDS = {"gaussian": "GaussianMixture", "bayesian": "BayesianGaussianMixture"}


@dataclass(frozen=True)
class Param:
    """One ``GaussianMixture`` constructor parameter."""

    name: str
    default: Any
    kind: str
    doc: str
    gt: float | None = None
    ge: float | None = None
    options: tuple = ()
    ndim: int | None = None
    # verbose: a bool is accepted too (as scikit-learn does).
    bool_ok: bool = False
    # A check with its own message, used instead of the kind's (scale).
    check: Callable[[Any], Any] | None = None
    # Whether it changes the fitted numbers (a checkpoint's fingerprint holds these).
    numeric: bool = True
    # In a model sweep (select_model): 'shared' by every candidate, set per
    # 'candidate' by the sweep, or 'refused' (it depends on one candidate).
    sweep: str = "shared"
    # The estimators that have it.
    estimators: tuple[str, ...] = ESTIMATORS

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if self.kind == "option" and self.default not in self.options:
            raise ValueError(f"{self.name}: default not among the options")
        if self.kind in ("int", "real", "positive_or_none") and (self.gt is None) == (
            self.ge is None
        ):
            raise ValueError(f"{self.name}: give exactly one of gt and ge")

    @property
    def low(self) -> int:
        """The smallest int allowed (``kind='int'``): ``ge``, or ``gt + 1``."""
        if self.kind != "int":
            raise AttributeError(f"{self.name} is not an int parameter")
        return int(self.ge) if self.ge is not None else int(self.gt) + 1


PARAMS: tuple[Param, ...] = (
    Param(
        "n_components",
        1,
        "int",
        "Number of mixture components.",
        gt=0,
        sweep="candidate",
    ),
    Param(
        "covariance_type",
        "full",
        "option",
        "Form of the covariance of each component.",
        options=COVARIANCE_TYPES,
        sweep="candidate",
    ),
    Param(
        "tol",
        1e-3,
        "real",
        "Convergence threshold on the change of the mean log-likelihood.",
        ge=0,
    ),
    Param(
        "reg_covar",
        1e-6,
        "real",
        "Added to the diagonal of the covariances so they stay positive definite.",
        ge=0,
    ),
    Param(
        "max_iter",
        100,
        "int",
        "Number of EM iterations (data passes) per initialisation.",
        ge=0,
    ),
    Param(
        "n_init",
        1,
        "int",
        "Number of initialisations; the best lower bound is kept.",
        gt=0,
    ),
    Param(
        "init_params",
        "kmeans",
        "option",
        "How the parameters are initialised (on a uniform row sample).",
        options=INIT_METHODS,
    ),
    Param(
        "weights_init",
        None,
        "array",
        "Initial weights, shape (n_components,).",
        ndim=1,
        sweep="refused",
        estimators=("GaussianMixture",),
    ),
    Param(
        "means_init",
        None,
        "array",
        "Initial means, shape (n_components, n_features).",
        ndim=2,
        sweep="refused",
        estimators=("GaussianMixture",),
    ),
    Param(
        "precisions_init",
        None,
        "array",
        "Initial precisions; the shape depends on covariance_type.",
        sweep="refused",
        estimators=("GaussianMixture",),
    ),
    Param(
        "weight_concentration_prior_type",
        "dirichlet_process",
        "option",
        "The prior on the weights: a Dirichlet process (stick breaking) or a "
        "Dirichlet distribution.",
        options=("dirichlet_process", "dirichlet_distribution"),
        estimators=("BayesianGaussianMixture",),
    ),
    Param(
        "weight_concentration_prior",
        None,
        "positive_or_none",
        "Concentration of the weights' prior (None: 1 / n_components); smaller "
        "values leave more components empty.",
        gt=0,
        estimators=("BayesianGaussianMixture",),
    ),
    Param(
        "mean_precision_prior",
        None,
        "positive_or_none",
        "Precision of the means' prior (None: 1).",
        gt=0,
        estimators=("BayesianGaussianMixture",),
    ),
    Param(
        "mean_prior",
        None,
        "array",
        "Mean of the means' prior, shape (n_features,) (None: the data's mean).",
        ndim=1,
        estimators=("BayesianGaussianMixture",),
    ),
    Param(
        "degrees_of_freedom_prior",
        None,
        "positive_or_none",
        "Degrees of freedom of the precisions' prior, > n_features - 1 (None: "
        "n_features).",
        gt=0,
        estimators=("BayesianGaussianMixture",),
    ),
    Param(
        "covariance_prior",
        None,
        "array",
        "Covariance of the precisions' prior: (n_features, n_features) for full and "
        "tied, (n_features,) for diag, a float for spherical (None: the data's).",
        estimators=("BayesianGaussianMixture",),
    ),
    Param("random_state", None, "seed", "Seed of the initialisation."),
    Param(
        "warm_start",
        False,
        "bool",
        "Start the next fit from the current solution.",
        sweep="refused",
    ),
    Param(
        "verbose",
        0,
        "int",
        "Log progress; 1 or more logs a line every verbose_interval iterations.",
        ge=0,
        bool_ok=True,
        numeric=False,
    ),
    Param(
        "verbose_interval",
        10,
        "int",
        "Iterations between progress lines.",
        gt=0,
        numeric=False,
    ),
    Param(
        "split_every",
        DEFAULT_SPLIT_EVERY,
        "int",
        "Fan-in of the tree reduction of the per-block statistics.",
        ge=2,
    ),
    Param(
        "persist",
        "auto",
        "option",
        "Keep the data in (cluster) memory during the fit ('auto': when it fits).",
        options=PERSIST_OPTIONS,
        numeric=False,
    ),
    Param(
        "init_sample_size",
        50_000,
        "int",
        "Rows in the uniform sample the initialisation works on.",
        gt=0,
    ),
    Param(
        "scale",
        "none",
        "option",
        "Scale every feature before EM; results stay in the original units.",
        options=SCALE_METHODS,
        check=check_method,
    ),
    Param(
        "log1p",
        None,
        "columns",
        "Columns replaced by log1p(x) before the scaling.",
    ),
    Param(
        "nan_policy",
        "raise",
        "option",
        "Rows with NaN or infinity: 'raise' refuses them, 'omit' leaves them out, "
        "'marginalize' uses each row's observed values (NaN is missing).",
        options=NAN_POLICIES,
    ),
    Param(
        "kernel",
        "auto",
        "option",
        "The E-step chunk kernel: numba's ('compiled') or NumPy's.",
        options=KERNELS,
    ),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMS}


def check_param(param: Param, value: Any, owner: str = "GaussianMixture") -> None:
    """Raise the estimator's TypeError/ValueError when ``value`` breaks ``param``.

    ``array`` and ``columns`` parameters are checked against the data at fit time;
    nothing is checked here for them.
    """
    if param.check is not None:
        param.check(value)
    elif param.kind == "int":
        if not (param.bool_ok and isinstance(value, bool)):
            check_int(value, param.name, param.low, owner)
    elif param.kind == "real":
        if param.ge != 0:  # check_real's bound is 0
            raise NotImplementedError(f"{param.name}: a real bound other than >= 0")
        check_real(value, param.name, owner)
    elif param.kind == "positive_or_none":
        if value is not None:
            check_positive(value, param.name, owner)
    elif param.kind == "option":
        check_option(value, param.name, param.options, owner)
    elif param.kind == "bool":
        check_option(value, param.name, (True, False), owner)
    elif param.kind == "seed":
        check_random_state(value)


def check_log1p_param(log1p: Any) -> None:
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


def params_of(estimator: str) -> tuple[Param, ...]:
    """The parameters of ``estimator`` (a name of :data:`ESTIMATORS`), in order."""
    return tuple(p for p in PARAMS if estimator in p.estimators)


def check_params(values: dict[str, Any], owner: str = "GaussianMixture") -> None:
    """Check every parameter of ``owner`` in ``values`` and the rules between them;
    raises the estimator's TypeError/ValueError."""
    for param in params_of(owner):
        check_param(param, values[param.name], owner)
    check_log1p_param(values["log1p"])
    check_covariance_type(values["scale"], values["covariance_type"])


def names_where(**flags: Any) -> tuple[str, ...]:
    """Names of the parameters whose fields equal ``flags`` (e.g. ``numeric=False``)."""
    return tuple(
        p.name
        for p in PARAMS
        if all(getattr(p, key) == value for key, value in flags.items())
    )
