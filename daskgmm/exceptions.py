"""Warnings and errors raised by daskgmm."""

from __future__ import annotations


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the lower bound changed by less than ``tol``.

    scikit-learn is not a runtime dependency, so this is daskgmm's own class; filter it
    as ``warnings.filterwarnings("ignore", category=daskgmm.ConvergenceWarning)``.
    """


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``.

    Subclasses ValueError and AttributeError, as scikit-learn's NotFittedError.
    """
