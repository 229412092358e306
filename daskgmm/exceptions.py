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


class ComponentReseededWarning(UserWarning):
    """A component lost all its rows during EM and was re-seeded.

    Its mean moves to the row of the initialisation sample that the mixture explains
    worst, with the mixture's average covariance and a small weight; EM goes on
    from there. Seen when the data have fewer clusters than components or a start
    puts a component far from every row.
    """
