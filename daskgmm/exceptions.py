"""Warnings and errors raised by daskgmm.

``NotFittedError`` and ``ConvergenceWarning`` are subclasses of scikit-learn's classes
of the same names when scikit-learn can be imported, so that code written for
scikit-learn (``except sklearn.exceptions.NotFittedError``, a warning filter on
``sklearn.exceptions.ConvergenceWarning``) works on daskgmm unchanged; without
scikit-learn they have the same bases as scikit-learn's (``ValueError`` and
``AttributeError``; ``UserWarning``). scikit-learn is not a dependency, and
importing it takes about a second and tens of MB in every process (dask workers
import daskgmm too), so both classes are made on first use (module ``__getattr__``):
the modules that raise them look them up when they raise.
"""

from __future__ import annotations

import threading
from typing import Any

_DOCS = {
    "NotFittedError": """A method that needs a fitted model was called before ``fit``.

    Subclasses scikit-learn's ``NotFittedError`` when scikit-learn is installed, else
    ValueError and AttributeError (scikit-learn's bases).
    """,
    "ConvergenceWarning": """EM stopped at ``max_iter`` before the lower bound changed
    by less than ``tol``.

    Subclasses scikit-learn's ``ConvergenceWarning`` when scikit-learn is installed
    (so ``warnings.filterwarnings("ignore", category=...)`` with either class works),
    else UserWarning.
    """,
}
_FALLBACK_BASES: dict[str, tuple[type, ...]] = {
    "NotFittedError": (ValueError, AttributeError),
    "ConvergenceWarning": (UserWarning,),
}
_made: dict[str, type] = {}
_lock = threading.Lock()


def _bases(name: str) -> tuple[type, ...]:
    try:
        from sklearn import exceptions as sklearn_exceptions
    except ImportError:
        return _FALLBACK_BASES[name]
    return (getattr(sklearn_exceptions, name),)


def __getattr__(name: str) -> Any:
    if name not in _DOCS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lock:
        if name not in _made:
            _made[name] = type(
                name,
                _bases(name),
                {"__doc__": _DOCS[name], "__module__": __name__, "__qualname__": name},
            )
    return _made[name]


class ComponentReseededWarning(UserWarning):
    """A component lost all its rows during EM and was re-seeded.

    Its mean moves to the row of the initialisation sample that the mixture explains
    worst, with the mixture's average covariance and a small weight; EM goes on
    from there. Seen when the data have fewer clusters than components or a start
    puts a component far from every row.
    """
