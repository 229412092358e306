"""daskgmm: Gaussian mixture models fitted by EM on dask, for data larger than memory."""

from __future__ import annotations

from daskgmm import exceptions
from daskgmm._version import __version__
from daskgmm.bayesian import BayesianGaussianMixture
from daskgmm.mixture import GaussianMixture
from daskgmm.mixture import load_model as load
from daskgmm.selection import ModelSelection, select_model


def __getattr__(name: str) -> object:
    # scikit-learn-based classes, made on first use (see daskgmm.exceptions).
    if name in ("ConvergenceWarning", "NotFittedError"):
        return getattr(exceptions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BayesianGaussianMixture",
    "ConvergenceWarning",
    "GaussianMixture",
    "ModelSelection",
    "NotFittedError",
    "__version__",
    "load",
    "select_model",
]
