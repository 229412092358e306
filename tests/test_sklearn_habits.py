"""Code written for scikit-learn's GaussianMixture works on daskgmm's: its estimator
checks, its exception and warning classes, its error messages."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import sklearn.exceptions
import sklearn.mixture
from sklearn.utils.estimator_checks import check_estimator

import daskgmm
from daskgmm import GaussianMixture


def test_check_estimator_passes_every_check():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(GaussianMixture(), on_fail=None)
    failed = [
        (r["check_name"], str(r["exception"]))
        for r in results
        if r["status"] == "failed"
    ]
    assert failed == []
    assert sum(r["status"] == "passed" for r in results) >= 47


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "bic"])
def test_unfitted_model_raises_scikit_learns_not_fitted_error(method):
    X = np.zeros((3, 2))
    with pytest.raises(sklearn.exceptions.NotFittedError, match="is not fitted yet"):
        getattr(GaussianMixture(2), method)(X)
    # The bases scikit-learn's class has, and one class whichever name is used.
    assert issubclass(daskgmm.NotFittedError, (ValueError))
    assert issubclass(daskgmm.NotFittedError, AttributeError)
    assert daskgmm.NotFittedError is daskgmm.exceptions.NotFittedError


def test_scikit_learns_warning_filter_silences_the_convergence_warning():
    X = np.random.default_rng(0).normal(size=(300, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings(
            "ignore", category=sklearn.exceptions.ConvergenceWarning
        )
        GaussianMixture(3, max_iter=1, tol=0, random_state=0).fit(X)
    assert [w for w in caught if "did not converge" in str(w.message)] == []
    with pytest.warns(sklearn.exceptions.ConvergenceWarning, match="did not converge"):
        GaussianMixture(3, max_iter=1, tol=0, random_state=0).fit(X)
    assert issubclass(daskgmm.ConvergenceWarning, UserWarning)


def test_importing_daskgmm_does_not_import_scikit_learn():
    # Workers import daskgmm too: scikit-learn costs ~1 s and tens of MB there.
    code = (
        "import sys, daskgmm, daskgmm.cli; "
        "assert 'sklearn' not in sys.modules, 'sklearn imported'; "
        "daskgmm.NotFittedError; "
        "assert 'sklearn' in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def _message(estimator: object, X: np.ndarray) -> str:
    with pytest.raises(ValueError) as info:
        estimator.fit(X)
    return str(info.value)


_BAD_INITS = [
    ({"means_init": np.zeros((3, 2))}, "full"),
    ({"weights_init": [1.0]}, "full"),
    ({"weights_init": [0.5, 0.6]}, "full"),
    ({"weights_init": [-0.5, 1.5]}, "full"),
    ({"precisions_init": np.ones((2, 2))}, "full"),
    ({"precisions_init": np.eye(3)}, "tied"),
    ({"precisions_init": np.ones(2)}, "diag"),
    ({"precisions_init": np.ones((2, 2))}, "spherical"),
    ({"precisions_init": np.array([np.eye(2), -np.eye(2)])}, "full"),
    ({"precisions_init": [[1.0, 2.0], [2.0, 1.0]]}, "tied"),
    ({"precisions_init": [[1.0, 1.0], [1.0, 0.0]]}, "diag"),
    ({"precisions_init": [1.0, -1.0]}, "spherical"),
]


@pytest.mark.parametrize(("params", "ctype"), _BAD_INITS)
def test_init_errors_match_what_a_scikit_learn_test_expects(params, ctype):
    X = np.random.default_rng(0).normal(size=(50, 2))
    theirs = _message(
        sklearn.mixture.GaussianMixture(2, covariance_type=ctype, **params), X
    )
    ours = _message(GaussianMixture(2, covariance_type=ctype, **params), X)
    # scikit-learn prints the range's minimum as "max value" and its maximum as
    # "min value"; a test written for it matches the text before the numbers.
    expected = theirs.split(", but got max value")[0]
    assert re.search(re.escape(expected), ours), (theirs, ours)
    # The daskgmm name of the parameter is there too.
    assert next(iter(params)) in ours
