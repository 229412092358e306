"""Checks of inputs and parameters, with one-line errors that say what to do."""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


@dataclass(frozen=True)
class Data:
    """Input rows after checking.

    Attributes
    ----------
    array : numpy.ndarray or dask.array.Array of shape (n_samples, n_features)
        Not copied or cast for NumPy input (the kernels cast block by block); dask
        input has its feature axis in one chunk.
    is_dask : bool
        Whether the caller passed a dask collection (outputs are then lazy).
    n_samples : int or None
        None when the row count is unknown without a pass (dask DataFrames).
    n_features : int
    dtype : numpy.dtype
        float32 for float32 input, float64 otherwise (scikit-learn's rule).
    feature_names : ndarray of str or None
        Column names of a DataFrame whose column names are all strings.
    """

    array: Any
    is_dask: bool
    n_samples: int | None
    n_features: int
    dtype: np.dtype
    feature_names: np.ndarray | None


def fit_dtype(dtype: np.dtype) -> np.dtype:
    """float32 stays float32, float64 stays float64, anything numeric becomes float64."""
    dtype = np.dtype(dtype)
    return dtype if dtype in FLOAT_DTYPES else np.dtype(np.float64)


def _is_dask_dataframe(X: Any) -> bool:
    dd = sys.modules.get("dask.dataframe")
    return dd is not None and isinstance(X, (dd.DataFrame, dd.Series))


def _is_pandas(X: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(X, (pd.DataFrame, pd.Series))


def _check_columns(dtypes: Any, columns: Any, name: str) -> None:
    import pandas as pd

    bad = [
        f"{col!r} ({dtype})"
        for col, dtype in zip(columns, dtypes, strict=True)
        if not (
            pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
        )
        or pd.api.types.is_complex_dtype(dtype)
    ]
    if bad:
        raise TypeError(
            f"{name} has non-numeric columns {', '.join(bad)}; select numeric "
            f"columns first, e.g. {name}.select_dtypes('number')"
        )


def _feature_names(columns: Any) -> np.ndarray | None:
    names = list(columns)
    if names and all(isinstance(c, str) for c in names):
        return np.asarray(names, dtype=object)
    return None


def _check_ndim(ndim: int, name: str) -> None:
    if ndim == 2:
        return
    if ndim == 1:
        raise ValueError(
            f"Expected a 2-D array for {name}, got a 1-D array instead. Reshape your "
            "data with X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) "
            "if it is a single sample"
        )
    raise ValueError(
        f"Expected a 2-D array for {name} (n_samples, n_features), got {ndim}-D"
    )


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.kind == "c":
        # scikit-learn's wording (a ValueError there too).
        raise ValueError(
            f"Complex data not supported: {name} has dtype {dtype}; pass its real "
            f"part ({name}.real) or its magnitude (abs({name}))"
        )
    if dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold numbers (int, float or bool), got dtype {dtype}; "
            "convert or drop non-numeric columns first"
        )


def _check_size(
    n_samples: int | None, n_features: int, name: str, min_samples: int
) -> None:
    if n_features == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape=({n_samples}, 0)) while a minimum "
            f"of 1 is required: {name} has no columns"
        )
    if n_samples is not None and n_samples < min_samples:
        raise ValueError(
            f"Found array with {n_samples} sample(s) (shape=({n_samples}, {n_features})) "
            f"in {name} while a minimum of {min_samples} is required"
        )


def check_input(X: Any, *, name: str = "X", min_samples: int = 1) -> Data:
    """Check and wrap an input table or array.

    Parameters
    ----------
    X : array-like, dask array, pandas or dask DataFrame of shape (n_samples, n_features)
    name : str
        How to call the input in messages.
    min_samples : int
        Smallest acceptable number of rows (checked when the row count is known).

    Returns
    -------
    Data

    Raises
    ------
    TypeError
        Non-numeric data or columns.
    ValueError
        Not 2-D, or too few rows or columns.
    """
    if _is_dask_dataframe(X):
        _check_ndim(1 if X.ndim == 1 else 2, name)
        _check_columns(list(X.dtypes), X.columns, name)
        n_features = len(X.columns)
        _check_size(None, n_features, name, min_samples)
        dtype = fit_dtype(np.result_type(*[np.dtype(t) for t in X.dtypes]))
        array = X.astype(dtype).to_dask_array()
        return Data(array, True, None, n_features, dtype, _feature_names(X.columns))
    if _is_pandas(X):
        _check_ndim(X.ndim, name)
        _check_columns(list(X.dtypes), X.columns, name)
        _check_size(X.shape[0], X.shape[1], name, min_samples)
        dtypes = [
            np.dtype(t) if isinstance(t, np.dtype) else np.dtype(np.float64)
            for t in X.dtypes
        ]
        dtype = fit_dtype(np.result_type(*dtypes))
        array = X.to_numpy(dtype=dtype, na_value=np.nan)
        return Data(
            array, False, X.shape[0], X.shape[1], dtype, _feature_names(X.columns)
        )
    if isinstance(X, da.Array):
        _check_ndim(X.ndim, name)
        _check_dtype(X.dtype, name)
        n_samples = X.shape[0] if not math.isnan(X.shape[0]) else None
        _check_size(n_samples, X.shape[1], name, min_samples)
        if X.numblocks[1] != 1:
            X = X.rechunk({1: -1})
        return Data(X, True, n_samples, X.shape[1], fit_dtype(X.dtype), None)
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise TypeError(
            f"{name} is a sparse matrix, which is not supported; pass a dense array "
            f"({name}.toarray()) or a dask array"
        )
    try:
        array = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} could not be read as a numeric array: {exc}") from None
    _check_ndim(array.ndim, name)
    if array.dtype.kind == "O":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            # NumPy's message names the culprit ("float() argument must be a string
            # or a real number, not 'dict'", "could not convert string to float").
            raise TypeError(
                f"{name} must hold numbers, got objects that are not numbers ({exc}); "
                "convert or drop non-numeric columns first"
            ) from None
    _check_dtype(array.dtype, name)
    _check_size(array.shape[0], array.shape[1], name, min_samples)
    return Data(
        array, False, array.shape[0], array.shape[1], fit_dtype(array.dtype), None
    )


def count_non_finite_rows(array: np.ndarray) -> tuple[int, int | None]:
    """Number of rows of a NumPy array with NaN or inf, and the first such row.

    A NaN or inf anywhere makes the sum of all values non-finite, so a finite sum
    (one read, no temporaries: ~2 ms for 2M x 3) proves every row finite; otherwise
    (or when finite values overflow the sum) the rows are checked one by one.
    """
    if np.isfinite(array.sum(dtype=np.float64)):
        return 0, None
    bad = ~np.isfinite(array.sum(axis=1, dtype=np.float64))
    if not bad.any():
        return 0, None
    bad[bad] = ~np.isfinite(array[bad]).all(axis=1)
    rows = np.flatnonzero(bad)
    return int(rows.size), (int(rows[0]) if rows.size else None)


###############################################################################
# Parameters


def _type_name(value: Any) -> str:
    return type(value).__name__


def check_int(value: Any, name: str, low: int, owner: str = "GaussianMixture") -> None:
    """An int (not bool) ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"The '{name}' parameter of {owner} must be an int in the range "
            f"[{low}, inf). Got {value!r} of type {_type_name(value)} instead."
        )
    if value < low:
        raise ValueError(
            f"The '{name}' parameter of {owner} must be an int in the range "
            f"[{low}, inf). Got {value!r} instead."
        )


def check_real(value: Any, name: str, owner: str = "GaussianMixture") -> None:
    """A finite real ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"The '{name}' parameter of {owner} must be a float in the range "
            f"[0.0, inf). Got {value!r} of type {_type_name(value)} instead."
        )
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"The '{name}' parameter of {owner} must be a float in the range "
            f"[0.0, inf). Got {value!r} instead."
        )


def check_positive(value: Any, name: str, owner: str) -> None:
    """A finite real ``> 0`` (None is checked by the caller)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"The '{name}' parameter of {owner} must be None or a float in the range "
            f"(0.0, inf). Got {value!r} of type {_type_name(value)} instead."
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"The '{name}' parameter of {owner} must be None or a float in the range "
            f"(0.0, inf). Got {value!r} instead."
        )


def check_option(
    value: Any, name: str, options: tuple, owner: str = "GaussianMixture"
) -> None:
    """One of ``options`` (compared by equality, types must match)."""
    if not any(value == opt and type(value) is type(opt) for opt in options):
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(
            f"The '{name}' parameter of {owner} must be one of {{{listed}}}. "
            f"Got {value!r} instead."
        )


def check_random_state(seed: Any) -> np.random.RandomState:
    """A RandomState from None, an int or a RandomState (scikit-learn's rule)."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise TypeError(
        "The 'random_state' parameter of GaussianMixture must be None, an int or a "
        f"numpy.random.RandomState. Got {seed!r} of type {_type_name(seed)} instead."
    )


def check_init_array(
    value: Any, name: str, shape: tuple[int, ...], what: str, sklearn_name: str
) -> np.ndarray:
    """A finite float array of exactly ``shape`` for a ``*_init`` parameter.

    Messages start as scikit-learn's, which calls the parameter ``sklearn_name``
    (``'weights'``, ``'means'``, ``'full precision'``...), so that a
    ``pytest.raises(match=...)`` written for scikit-learn matches them too.
    """
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, {what}") from None
    if arr.shape != shape:
        raise ValueError(
            f"The parameter '{sklearn_name}' should have the shape of {shape}, but got "
            f"{arr.shape}: {name} must have shape {what}"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got NaN or infinity")
    return arr


def check_weights_init(weights: Any, n_components: int) -> np.ndarray:
    """Weights of shape (K,) in [0, 1] summing to 1."""
    w = check_init_array(
        weights, "weights_init", (n_components,), "(n_components,)", "weights"
    )
    if (w < 0).any() or (w > 1).any():
        raise ValueError(
            "The parameter 'weights' should be in the range [0, 1], but got max value "
            f"{w.max():.5f}, min value {w.min():.5f}: every weights_init value must "
            "be in [0, 1]"
        )
    if not abs(1.0 - w.sum()) <= 1e-6:
        raise ValueError(
            "The parameter 'weights' should be normalized, but got sum(weights) = "
            f"{w.sum():.5f}: weights_init must sum to 1 (divide it by its sum)"
        )
    return w


_PRECISION_SHAPES = {
    "full": "(n_components, n_features, n_features)",
    "tied": "(n_features, n_features)",
    "diag": "(n_components, n_features)",
    "spherical": "(n_components,)",
}


def precision_shape(covariance_type: str, n_components: int, n_features: int) -> tuple:
    """Shape of precisions (and covariances) for a covariance type."""
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def check_precisions_init(
    precisions: Any, covariance_type: str, n_components: int, n_features: int
) -> np.ndarray:
    """Precisions of the right shape, positive (definite, symmetric for matrices)."""
    shape = precision_shape(covariance_type, n_components, n_features)
    p = check_init_array(
        precisions,
        "precisions_init",
        shape,
        f"{_PRECISION_SHAPES[covariance_type]} for covariance_type='{covariance_type}'",
        f"{covariance_type} precision",
    )
    if covariance_type in ("diag", "spherical"):
        if (p <= 0).any():
            raise ValueError(
                f"'{covariance_type} precision' should be positive: every "
                "precisions_init value must be > 0"
            )
        return p
    stack = p[None] if covariance_type == "tied" else p
    for mat in stack:
        if not (
            np.allclose(mat, mat.T, rtol=1e-5, atol=1e-8)
            and (np.linalg.eigvalsh(mat) > 0).all()
        ):
            raise ValueError(
                f"'{covariance_type} precision' should be symmetric, positive-definite: "
                "precisions_init must hold symmetric positive-definite matrices "
                "(inverse covariances)"
            )
    return p
