"""daskgmm: Gaussian mixture models fitted by EM on dask, for data larger than memory."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from daskgmm import exceptions
from daskgmm.mixture import GaussianMixture
from daskgmm.mixture import load_model as load
from daskgmm.selection import ModelSelection, select_model

try:
    __version__ = version("daskgmm")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str) -> object:
    # scikit-learn-based classes, made on first use (see daskgmm.exceptions).
    if name in ("ConvergenceWarning", "NotFittedError"):
        return getattr(exceptions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConvergenceWarning",
    "GaussianMixture",
    "ModelSelection",
    "NotFittedError",
    "__version__",
    "load",
    "select_model",
]
