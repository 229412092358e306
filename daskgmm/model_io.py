"""Model files: a fitted GaussianMixture as a directory of JSON metadata and .npz arrays.

A model file is a directory holding two files:

- ``model.json``: the format and library versions, every parameter of the
  estimator (non-finite floats as ``{"float": "-inf"}``, NumPy scalars as
  ``{"numpy": "int64", "value": 3}``, array parameters as ``{"array": name}``), the
  scalar fitted attributes, the feature names, the dtype and the caller's extras;
- ``arrays.npz``: the fitted arrays and the array-valued ``*_init`` parameters,
  written by ``np.savez`` and read with ``allow_pickle=False``. Nothing is pickled.

A model fitted with ``scale`` or ``log1p`` also stores its ``scaling`` (method,
``log1p`` columns, offsets and scales as JSON numbers, which read back bit for bit)
and its parameters in the scaled space (``scaled_*`` arrays and
``fitted.scaled_lower_bound_``), so the loaded model predicts exactly as the saved
one. The ``scale`` and ``log1p`` parameters are written only when set: a model
without preprocessing is stored as before, and files without them load as
unscaled models.

The directory is written beside its destination under a hidden name and renamed
into place when complete (:func:`daskgmm.io.atomic_path`), so a failed save leaves
nothing behind. Loading checks everything it reads and raises a one-line
``ValueError`` naming the file and the problem.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from daskgmm import _kernels as K
from daskgmm import exceptions
from daskgmm._em import Parameters
from daskgmm._kernels import COVARIANCE_TYPES
from daskgmm._params import DEFAULTS, ESTIMATORS, params_of
from daskgmm._preprocess import Scaling
from daskgmm._validation import precision_shape
from daskgmm._version import __version__
from daskgmm.fitted import VARIATIONAL_ATTRIBUTES, FittedMixture, from_attributes

logger = logging.getLogger("daskgmm")

FORMAT = "daskgmm-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
ARRAYS_NPZ = "arrays.npz"
# The fitted arrays, by FittedMixture field, under the estimator's attribute names.
_ARRAY_FIELDS = {
    "weights": "weights_",
    "means": "means_",
    "covariances": "covariances_",
    "precisions": "precisions_",
    "precisions_cholesky": "precisions_cholesky_",
}
FITTED_ARRAYS = tuple(_ARRAY_FIELDS.values())
INIT_ARRAYS = ("weights_init", "means_init", "precisions_init")
# The parameters of a scaled model in its scaled space (float64).
SCALED_ARRAYS = {
    "scaled_weights": "weights",
    "scaled_means": "means",
    "scaled_covariances": "covariances",
    "scaled_precisions_cholesky": "precisions_cholesky",
}
# Parameters left out of model.json at their default, so that files of models
# without preprocessing stay as they were (and readable by older versions).
_OMITTED_DEFAULTS = {
    name: DEFAULTS[name] for name in ("scale", "log1p", "nan_policy", "kernel")
}
FIT_DTYPES = ("float32", "float64")
_NON_FINITE = ("inf", "-inf", "nan")
_CORRUPT = "the model file is corrupt"
# What np.load and zipfile raise on a damaged archive (NotImplementedError and
# RuntimeError: a damaged compression method or encryption flag).
_NPZ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    NotImplementedError,
    RuntimeError,
)


###############################################################################
# JSON values: floats, NumPy scalars and parameters


def _encode_float(value: float) -> float | dict[str, str]:
    """A float as JSON: a number, or ``{"float": "inf"|"-inf"|"nan"}``."""
    value = float(value)
    return value if math.isfinite(value) else {"float": repr(value)}


def _decode_float(value: Any) -> float:
    """Inverse of :func:`_encode_float`; raises ValueError for anything else."""
    if isinstance(value, dict) and set(value) == {"float"}:
        if value["float"] in _NON_FINITE:
            return float(value["float"])
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"expected a float, got {value!r}")


def _encode_param(value: Any) -> Any:
    """A parameter value as JSON, or raise TypeError when it has no JSON form.

    NumPy scalars keep their type (``{"numpy": "int64", "value": 3}``); they are
    checked first since ``np.float64`` is a subclass of ``float``.
    """
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return {"numpy": value.dtype.name, "value": _encode_param(value.item())}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _encode_float(value)
    raise TypeError(f"{type(value).__name__} has no JSON form")


def _decode_numpy(type_name: Any, value: Any) -> np.generic:
    """A NumPy scalar of type ``type_name`` (bool, int or float kinds only)."""
    try:
        dtype = np.dtype(type_name)
        if dtype.kind not in "biuf":
            raise TypeError
        inner = _decode_param(value)
        if not isinstance(inner, (bool, int, float)):
            raise TypeError
        return dtype.type(inner)
    except (TypeError, OverflowError):
        raise ValueError(f"not a NumPy {type_name!r} scalar: {value!r}") from None


def _decode_param(value: Any) -> Any:
    """Inverse of :func:`_encode_param`; raises ValueError for anything else."""
    if isinstance(value, dict):
        if set(value) == {"float"}:
            return _decode_float(value)
        if set(value) == {"numpy", "value"}:
            return _decode_numpy(value["numpy"], value["value"])
        raise ValueError(f"unrecognised value {value!r}")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"unrecognised value {value!r}")


###############################################################################
# Saving: the document and the arrays, built before anything is written


def _init_array(name: str, value: Any) -> tuple[np.ndarray, dict[str, str]]:
    """An array-valued ``*_init`` parameter as a numeric array and its placeholder.

    A list (or other array-like) is marked ``"as": "list"`` and comes back as a
    list; an ndarray comes back with its dtype.
    """
    placeholder = {"array": name}
    if not isinstance(value, np.ndarray):
        placeholder["as"] = "list"
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"cannot save the model: {name} is not an array of numbers"
            ) from None
        logger.warning("%s of dtype %s saved as float64", name, np.asarray(value).dtype)
    return array, placeholder


def _encode_columns(value: Any) -> Any:
    """``log1p`` as JSON: a list of column indices or names; a tuple or an ndarray
    is marked so that it reads back with its type. TypeError when not columns."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iuU":
            raise TypeError("not a 1-D array of column indices or names")
        return {"ndarray": value.tolist(), "dtype": value.dtype.str}
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{type(value).__name__} is not a list of columns")
    items = []
    for item in value:
        if isinstance(item, np.integer):
            raise TypeError("NumPy integers in a list of columns")
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise TypeError(f"{item!r} is not a column index or name")
        items.append(item)
    return items if isinstance(value, list) else {"tuple": items}


def _decode_columns(value: Any) -> Any:
    """Inverse of :func:`_encode_columns` (and None); ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, dict) and set(value) == {"tuple"}:
        return tuple(_decode_columns(value["tuple"]))
    if isinstance(value, dict) and set(value) == {"ndarray", "dtype"}:
        try:
            dtype = np.dtype(value["dtype"])
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in "iuU":
            raise ValueError(f"unrecognised value {value!r}")
        return np.asarray(_decode_columns(value["ndarray"]), dtype=dtype)
    if isinstance(value, list) and all(
        isinstance(v, (int, str)) and not isinstance(v, bool) for v in value
    ):
        return value
    raise ValueError(f"expected a list of column indices or names, got {value!r}")


def _unstorable_message(name: str, value: Any) -> str:
    if isinstance(value, np.random.RandomState):
        return (
            "random_state is a RandomState instance, which a model file cannot hold; "
            "it is saved as random_state=None (sample() and a refit of the loaded "
            "model will draw different numbers)"
        )
    return (
        f"parameter {name}={value!r} ({type(value).__name__}) cannot be stored in a "
        f"model file; it is saved as {name}=None"
    )


def _params_section(
    params: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON form of every parameter, and the array parameters for the npz."""
    section: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, value in params.items():
        if name in _OMITTED_DEFAULTS and _is_default(name, value):
            continue
        if name in INIT_ARRAYS and value is not None:
            arrays[name], section[name] = _init_array(name, value)
            continue
        try:
            encode = _encode_columns if name == "log1p" else _encode_param
            section[name] = encode(value)
        except TypeError:
            logger.warning("%s", _unstorable_message(name, value))
            section[name] = None
    return section, arrays


def _is_default(name: str, value: Any) -> bool:
    default = _OMITTED_DEFAULTS[name]
    return value is None if default is None else type(value) is str and value == default


def _fitted_section(fm: FittedMixture) -> dict[str, Any]:
    section = {
        "converged_": bool(fm.converged),
        "n_iter_": int(fm.n_iter),
        "lower_bound_": _encode_float(fm.lower_bound),
        "lower_bounds_": [_encode_float(v) for v in fm.lower_bounds],
        "n_features_in_": int(fm.n_features),
    }
    if fm.is_scaled:
        section["scaled_lower_bound_"] = _encode_float(fm.scaled_lower_bound)
    if fm.n_omitted:
        section["n_omitted_"] = int(fm.n_omitted)
    timings = fm.timings
    if timings is not None:
        section["fit_timings_"] = {
            k: v if v is None or isinstance(v, int) else _encode_float(v)
            for k, v in timings.items()
        }
    return section


def _scaled_arrays(fm: FittedMixture) -> dict[str, np.ndarray]:
    """The scaled-space parameters of a scaled model (none otherwise)."""
    if not fm.is_scaled:
        return {}
    params = fm.scaled
    return {
        name: np.asarray(getattr(params, field), dtype=np.float64)
        for name, field in SCALED_ARRAYS.items()
    }


def _data_section(fm: FittedMixture) -> dict[str, Any]:
    names = fm.feature_names
    return {
        "feature_names": None if names is None else [str(n) for n in names],
        "dtype": np.dtype(fm.dtype).name,
        "n_features": int(fm.n_features),
    }


def _check_extra(extra: dict | None) -> dict:
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"extra must be JSON-serialisable: {exc}") from None
    return extra


def _model_document(
    params: Mapping[str, Any],
    fm: FittedMixture,
    extra: dict | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``model.json`` document and the ``arrays.npz`` arrays of a fitted model.

    Raises
    ------
    ValueError
        The fitted arrays do not match the parameters (for instance after
        ``set_params(n_components=...)``), so the file would not load.
    """
    section, arrays = _params_section(params)
    fitted = {
        attribute: np.asarray(getattr(fm, name))
        for name, attribute in _ARRAY_FIELDS.items()
    }
    scaled = {**_scaled_arrays(fm), **_variational_arrays(fm)}
    data = _data_section(fm)
    k, ctype = params["n_components"], params["covariance_type"]
    problem = (
        _params_problem(k, ctype)
        or _data_problem(data, fm.n_features)
        or _arrays_problem(fitted, int(k), data["n_features"], ctype, data["dtype"])
        or _scaled_problem(
            fm.scaling if fm.is_scaled else None, scaled, int(k), data, ctype
        )
    )
    if problem is not None:
        raise ValueError(f"cannot save the model: {problem}")
    arrays = {**fitted, **scaled, **arrays}
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "class": fm.estimator,
        "params": section,
        "fitted": _fitted_section(fm),
        "data": data,
    }
    if fm.is_scaled:
        document["scaling"] = fm.scaling.to_dict()
    document["arrays"] = list(arrays)
    document["extra"] = _check_extra(extra)
    return document, arrays


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The arrays as an uncompressed .npz archive, refusing object arrays."""
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise ValueError(f"cannot save {name}: object arrays would need pickle")
    buffer = io.BytesIO()
    # Object arrays are refused above, so nothing is pickled (np.savez's
    # allow_pickle keyword is missing from NumPy < 2.1).
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _write_file(path: str, payload: bytes) -> None:
    """Write ``payload`` to a new file and flush it to disk."""
    with open(path, "xb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def _is_model_dir(path: str) -> bool:
    """A directory holding nothing but model files (what ``overwrite`` may replace)."""
    return os.path.isdir(path) and set(os.listdir(path)) <= {MODEL_JSON, ARRAYS_NPZ}


def save_model(
    model: Any,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    extra: dict | None = None,
) -> str:
    """Save a fitted GaussianMixture as a model directory, atomically.

    Parameters
    ----------
    model : GaussianMixture
        A fitted model.
    path : str or path
        Destination directory; it receives ``model.json`` and ``arrays.npz``.
    overwrite : bool, default=False
        Replace an existing model directory at ``path``.
    extra : dict, optional
        Small JSON-serialisable metadata, read back by :func:`load_model_metadata`.

    Returns
    -------
    str
        The absolute path written.

    Raises
    ------
    NotFittedError
        The model is not fitted.
    FileExistsError
        ``path`` exists and ``overwrite`` is False, or ``path`` exists and is not a
        model directory (never replaced).
    """
    if type(model).__name__ not in ESTIMATORS or not hasattr(model, "get_params"):
        raise TypeError(
            f"save_model saves a daskgmm GaussianMixture, got {type(model).__name__}"
        )
    if not hasattr(model, "converged_"):
        raise exceptions.NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet: call 'fit' "
            "before saving it."
        )
    return write_model(
        path,
        model.get_params(),
        from_attributes(model),
        overwrite=overwrite,
        extra=extra,
    )


def write_model(
    path: str | os.PathLike,
    params: Mapping[str, Any],
    fitted: FittedMixture,
    *,
    overwrite: bool = False,
    extra: dict | None = None,
) -> str:
    """Write a model directory from estimator parameters and a fitted mixture
    (what :func:`save_model` does for a fitted estimator); the absolute path."""
    from daskgmm.io import atomic_path

    document, arrays = _model_document(params, fitted, extra)
    json_bytes = json.dumps(
        document, indent=2, allow_nan=False, ensure_ascii=False
    ).encode("utf-8")
    npz_bytes = _npz_bytes(arrays)
    final = os.path.abspath(os.fspath(path))
    if overwrite and os.path.lexists(final) and not _is_model_dir(final):
        raise FileExistsError(
            f"{final} exists and is not a daskgmm model directory; refusing to "
            "overwrite it"
        )
    with atomic_path(
        final, overwrite=overwrite, owned=_is_model_dir, marker=False
    ) as tmp:
        os.makedirs(tmp)
        _write_file(os.path.join(tmp, MODEL_JSON), json_bytes)
        _write_file(os.path.join(tmp, ARRAYS_NPZ), npz_bytes)
    logger.info("saved the model to %s", final)
    return final


###############################################################################
# Loading: every value checked, one-line errors naming the file


def _model_dir(path: str | os.PathLike) -> str:
    """The absolute model directory, checked to exist and to hold model.json."""
    final = os.path.abspath(os.fspath(path))
    if not os.path.exists(final):
        raise FileNotFoundError(f"no daskgmm model at {final}: the path does not exist")
    if not os.path.isdir(final):
        raise ValueError(
            f"{final} is not a daskgmm model: a model is a directory holding "
            f"{MODEL_JSON} and {ARRAYS_NPZ}"
        )
    if not os.path.isfile(os.path.join(final, MODEL_JSON)):
        raise ValueError(f"{final} is not a daskgmm model: it has no {MODEL_JSON}")
    return final


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}; {_CORRUPT}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a daskgmm model file: not a JSON object")
    return document


def _check_header(document: Mapping[str, Any], path: str) -> None:
    """The format, its version and the class, or a ValueError that says what to do."""
    if document.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a daskgmm model file: its format is "
            f"{document.get('format')!r}, expected {FORMAT!r}"
        )
    version = document.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"{path} has an invalid format_version {version!r}; {_CORRUPT}"
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by daskgmm {document.get('library_version', '?')} "
            f"with model format {version}; this daskgmm reads format "
            f"{FORMAT_VERSION} — upgrade daskgmm"
        )
    if document.get("class") not in ESTIMATORS:
        raise ValueError(
            f"{path} holds a {document.get('class')!r} model; daskgmm reads "
            f"{' and '.join(repr(e) for e in ESTIMATORS)} models"
        )


def _section(document: Mapping[str, Any], key: str, kind: type, path: str) -> Any:
    value = document.get(key)
    if not isinstance(value, kind):
        raise ValueError(
            f"{path} has no valid {key!r} section (expected a JSON "
            f"{'object' if kind is dict else 'array'}); {_CORRUPT}"
        )
    return value


def _read_document(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """The path of model.json and its document, its header checked."""
    json_path = os.path.join(_model_dir(path), MODEL_JSON)
    document = _read_json(json_path)
    _check_header(document, json_path)
    return json_path, document


def load_model_metadata(
    path: str | os.PathLike, *, validate: bool = False
) -> dict[str, Any]:
    """The ``model.json`` document of a model directory, its header checked.

    Parameters
    ----------
    path : str or path
        A model directory written by :func:`save_model`.
    validate : bool, default=False
        Also read and check the whole model as :func:`read_model` does (arrays,
        weights, covariances), so that a damaged model is refused.

    Returns
    -------
    dict
        The JSON document as stored (``"format"``, ``"format_version"``,
        ``"library_version"``, ``"class"``, ``"params"``, ``"fitted"``,
        ``"data"``, ``"arrays"``), with the caller's extras under ``"extra"``
        (``{}`` when none were given). The arrays are not read.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is not a daskgmm model, its model.json is corrupt or it was
        written with a newer model format.
    """
    _, document = _read_document(path)
    if validate:
        read_model(path)
    document.setdefault("extra", {})
    return document


def _npz_error(path: str, exc: Exception, name: str | None = None) -> ValueError:
    if "allow_pickle" in str(exc):
        return ValueError(
            f"{path} holds an object array {name!r}, which daskgmm does not load "
            f"(it would need pickle); {_CORRUPT}"
        )
    return ValueError(f"{path} is not a readable .npz archive: {exc}; {_CORRUPT}")


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, read with ``allow_pickle=False``."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} is missing; {_CORRUPT}")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"{path} is not an .npz archive; {_CORRUPT}")
    try:
        npz = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as exc:
        raise _npz_error(path, exc) from None
    arrays = {}
    with npz:
        for name in npz.files:
            try:
                array = npz[name]
            except _NPZ_ERRORS as exc:
                raise _npz_error(path, exc, name) from None
            if not isinstance(array, np.ndarray):
                raise ValueError(f"{path}: {name!r} is not a NumPy array; {_CORRUPT}")
            arrays[name] = array
    return arrays


def _decode_params(
    section: Mapping[str, Any], arrays: Mapping[str, np.ndarray], estimator: str
) -> dict[str, Any]:
    """Estimator parameters from their JSON form; raises ValueError naming one."""
    valid = [param.name for param in params_of(estimator)]
    unknown = sorted(set(section) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}")
    params = {}
    for name, value in section.items():
        if name == "log1p":
            try:
                params[name] = _decode_columns(value)
            except ValueError as exc:
                raise ValueError(f"parameter {name}: {exc}") from None
            continue
        if name in INIT_ARRAYS and isinstance(value, dict) and "array" in value:
            if value != {"array": name} and value != {"array": name, "as": "list"}:
                raise ValueError(f"parameter {name}: bad placeholder {value!r}")
            if name not in arrays:
                raise ValueError(f"parameter {name}: array {name!r} is not stored")
            array = arrays[name]
            params[name] = array.tolist() if "as" in value else array
            continue
        try:
            params[name] = _decode_param(value)
        except ValueError as exc:
            raise ValueError(f"parameter {name}: {exc}") from None
    return params


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _decode_fitted(section: Mapping[str, Any]) -> dict[str, Any]:
    """Scalar fitted attributes with their Python types; raises ValueError."""
    missing = sorted(
        {"converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_"}
        - set(section)
    )
    if missing:
        raise ValueError(f"fitted attribute(s) {missing} missing")
    if not isinstance(section["converged_"], bool):
        raise ValueError(
            f"converged_ must be true or false, got {section['converged_']!r}"
        )
    if not _is_int(section["n_iter_"], 0):
        raise ValueError(f"n_iter_ must be an int >= 0, got {section['n_iter_']!r}")
    if not _is_int(section["n_features_in_"], 1):
        raise ValueError(
            f"n_features_in_ must be an int >= 1, got {section['n_features_in_']!r}"
        )
    if not isinstance(section["lower_bounds_"], list):
        raise ValueError("lower_bounds_ must be a list")
    fitted = {
        "converged_": section["converged_"],
        "n_iter_": section["n_iter_"],
        "lower_bound_": _decode_float(section["lower_bound_"]),
        "lower_bounds_": [_decode_float(v) for v in section["lower_bounds_"]],
        "n_features_in_": section["n_features_in_"],
    }
    if "scaled_lower_bound_" in section:
        fitted["scaled_lower_bound_"] = _decode_float(section["scaled_lower_bound_"])
    omitted = section.get("n_omitted_", 0)
    if not _is_int(omitted, 0):
        raise ValueError(f"n_omitted_ must be an int >= 0, got {omitted!r}")
    fitted["n_omitted_"] = omitted
    timings = section.get("fit_timings_")
    if timings is not None:
        if not isinstance(timings, dict):
            raise ValueError("fit_timings_ must be a mapping of names to seconds")
        fitted["fit_timings_"] = {
            str(k): v if v is None or isinstance(v, int) else _decode_float(v)
            for k, v in timings.items()
        }
    return fitted


def _decode_scaling(document: Mapping[str, Any], fitted: Mapping[str, Any]) -> Any:
    """The stored Scaling, or None for a model without preprocessing."""
    if "scaling" not in document:
        if "scaled_lower_bound_" in fitted:
            raise ValueError("fitted scaled_lower_bound_ without a scaling section")
        return None
    scaling = Scaling.from_dict(document["scaling"])
    if scaling.is_identity:
        raise ValueError("the scaling section holds the identity")
    if scaling.n_features != fitted["n_features_in_"]:
        raise ValueError(
            f"scaling has {scaling.n_features} features, n_features_in_ is "
            f"{fitted['n_features_in_']}"
        )
    if "scaled_lower_bound_" not in fitted:
        raise ValueError("fitted attribute(s) ['scaled_lower_bound_'] missing")
    return scaling


def _scaled_problem(
    scaling: Any,
    arrays: Mapping[str, np.ndarray],
    n_components: int,
    data: Mapping[str, Any],
    covariance_type: str,
) -> str | None:
    """What is wrong with the scaled-space arrays of a scaled model, or None."""
    if scaling is None:
        return None
    cov_shape = precision_shape(covariance_type, n_components, data["n_features"])
    expected = {
        "scaled_weights": (n_components,),
        "scaled_means": (n_components, data["n_features"]),
        "scaled_covariances": cov_shape,
        "scaled_precisions_cholesky": cov_shape,
    }
    for name, shape in expected.items():
        if name not in arrays:
            return f"array {name!r} of the scaled model is not stored"
        array = arrays[name]
        if array.shape != shape or array.dtype != np.float64:
            return (
                f"{name} has shape {array.shape} and dtype {array.dtype}, expected "
                f"{shape} and float64"
            )
    return None


def _data_problem(data: Mapping[str, Any], n_features_in: int) -> str | None:
    """What is wrong with the ``data`` section, or None."""
    if data.get("dtype") not in FIT_DTYPES:
        return f"data dtype {data.get('dtype')!r} is not one of {list(FIT_DTYPES)}"
    if data.get("n_features") != n_features_in:
        return (
            f"data n_features {data.get('n_features')!r} differs from "
            f"n_features_in_ {n_features_in}"
        )
    names = data.get("feature_names")
    if names is not None and not (
        isinstance(names, list)
        and len(names) == n_features_in
        and all(isinstance(n, str) for n in names)
    ):
        return f"feature_names must be null or {n_features_in} strings, got {names!r}"
    return None


def _arrays_problem(
    arrays: Mapping[str, np.ndarray],
    n_components: int,
    n_features: int,
    covariance_type: str,
    dtype: str,
) -> str | None:
    """What is wrong with the fitted arrays for these dimensions, or None."""
    cov_shape = precision_shape(covariance_type, n_components, n_features)
    expected = {
        "weights_": (n_components,),
        "means_": (n_components, n_features),
        "covariances_": cov_shape,
        "precisions_": cov_shape,
        "precisions_cholesky_": cov_shape,
    }
    context = (
        f"n_components={n_components}, n_features={n_features}, "
        f"covariance_type={covariance_type!r}"
    )
    for name, shape in expected.items():
        array = arrays[name]
        if array.shape != shape:
            return f"{name} has shape {array.shape}, expected {shape} for {context}"
        if array.dtype != np.dtype(dtype):
            return f"{name} has dtype {array.dtype}, expected {dtype}"
    return None


# The fields of a mixture, and the names of its arrays in a model file.
_SCALED_FIELDS = {field: name for name, field in SCALED_ARRAYS.items()}


def _mixture_problem(
    arrays: Mapping[str, np.ndarray],
    names: Mapping[str, str],
    covariance_type: str,
    dtype: str,
) -> str | None:
    """What makes the stored mixture invalid (arrays named by ``names``, by field:
    weights, means, covariances, precisions_cholesky and maybe precisions), or None:
    non-finite values, weights that are negative or do not sum to 1, covariances
    that are not positive definite or do not match their precision factors."""
    # Arrays are stored in the fit's dtype: float32 keeps ~7 digits.
    rtol = 1e-4 if dtype == "float32" else 1e-8
    for name in names.values():
        if not np.isfinite(arrays[name]).all():
            return f"{name} holds NaN or infinity"
    weights = np.asarray(arrays[names["weights"]], dtype=np.float64)
    if (weights < 0).any():
        return f"{names['weights']} has negative values (min {weights.min():.3g})"
    if abs(weights.sum() - 1.0) > max(rtol, 1e-6) * len(weights):
        return f"{names['weights']} sums to {weights.sum():.6g}, not 1"
    chol = np.asarray(arrays[names["precisions_cholesky"]], dtype=np.float64)
    cov = np.asarray(arrays[names["covariances"]], dtype=np.float64)
    name = names["covariances"]
    try:
        from_cov = K.precision_cholesky_from_covariances(cov, covariance_type)
    except ValueError:
        return f"{name} is not positive definite"
    if not np.allclose(from_cov, chol, rtol=100 * rtol, atol=0):
        return (
            f"{names['precisions_cholesky']} does not match {name} (the precision "
            "factors of other covariances)"
        )
    if "precisions" in names:
        precisions = np.asarray(arrays[names["precisions"]], dtype=np.float64)
        expected = K.precisions_from_cholesky(chol, covariance_type)
        if not np.allclose(precisions, expected, rtol=100 * rtol, atol=0):
            return (
                f"{names['precisions']} does not match {names['precisions_cholesky']}"
            )
    return None


def _params_problem(n_components: Any, covariance_type: Any) -> str | None:
    """What makes the parameters that set the array shapes invalid, or None."""
    if isinstance(n_components, bool) or not isinstance(
        n_components, (int, np.integer)
    ):
        return f"n_components must be an int, got {n_components!r}"
    if n_components < 1:
        return f"n_components must be >= 1, got {n_components!r}"
    if not isinstance(covariance_type, str) or covariance_type not in COVARIANCE_TYPES:
        return (
            f"covariance_type must be one of {list(COVARIANCE_TYPES)}, "
            f"got {covariance_type!r}"
        )
    return None


def _check_manifest(listed: list, stored: Mapping[str, np.ndarray]) -> str | None:
    """What differs between the arrays model.json lists and the npz holds, or None."""
    if not all(isinstance(name, str) for name in listed):
        return f"is listed in model.json as {listed!r}, which are not all names"
    missing = [n for n in (*FITTED_ARRAYS, *listed) if n not in stored]
    if missing:
        return f"lacks array(s) {sorted(set(missing))}"
    unlisted = sorted(set(stored) - set(listed))
    if unlisted:
        return f"holds array(s) {unlisted} that model.json does not list"
    return None


def read_model(path: str | os.PathLike) -> tuple[dict[str, Any], FittedMixture]:
    """The estimator parameters and the fitted mixture of a model directory written
    by :func:`save_model` (``daskgmm.load`` makes the estimator of them).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is not a daskgmm model, was written with a newer model format,
        or a file in it is corrupt, incomplete or inconsistent (the message names
        the file and the problem).
    """
    json_path, document = _read_document(path)
    npz_path = os.path.join(os.path.dirname(json_path), ARRAYS_NPZ)
    params_json = _section(document, "params", dict, json_path)
    fitted_json = _section(document, "fitted", dict, json_path)
    data = _section(document, "data", dict, json_path)
    listed = _section(document, "arrays", list, json_path)
    arrays = _read_arrays(npz_path)
    problem = _check_manifest(listed, arrays)
    if problem is not None:
        raise ValueError(f"{npz_path} {problem}; {_CORRUPT}")
    try:
        estimator = document["class"]
        defaults = {param.name: param.default for param in params_of(estimator)}
        params = {**defaults, **_decode_params(params_json, arrays, estimator)}
        fitted = _decode_fitted(fitted_json)
        k, ctype = params["n_components"], params["covariance_type"]
        problem = _params_problem(k, ctype) or _data_problem(
            data, fitted["n_features_in_"]
        )
        if problem is not None:
            raise ValueError(problem)
        scaling = _decode_scaling(document, fitted)
    except ValueError as exc:
        raise ValueError(f"{json_path}: {exc}; {_CORRUPT}") from None
    problem = (
        _arrays_problem(arrays, int(k), data["n_features"], ctype, data["dtype"])
        or _scaled_problem(scaling, arrays, int(k), data, ctype)
        or _mixture_problem(arrays, _ARRAY_FIELDS, ctype, data["dtype"])
        or (
            None
            if scaling is None
            else _mixture_problem(arrays, _SCALED_FIELDS, ctype, "float64")
        )
    )
    if problem is not None:
        raise ValueError(f"{npz_path}: {problem}; {_CORRUPT}")
    fm = _fitted_mixture(ctype, arrays, fitted, data, scaling)
    if estimator != "GaussianMixture":
        fm = replace(
            fm,
            estimator=estimator,
            prior_type=params["weight_concentration_prior_type"],
            variational=_decode_variational(arrays, params),
        )
    return params, fm


def _fitted_mixture(
    covariance_type: str,
    arrays: Mapping[str, np.ndarray],
    fitted: Mapping[str, Any],
    data: Mapping[str, Any],
    scaling: Scaling | None,
) -> FittedMixture:
    names = data["feature_names"]
    scaled = None
    if scaling is not None:
        scaled = Parameters(
            **{field: arrays[name] for name, field in SCALED_ARRAYS.items()}
        )
    return FittedMixture(
        covariance_type=covariance_type,
        **{name: arrays[attribute] for name, attribute in _ARRAY_FIELDS.items()},
        scaling=scaling or Scaling.identity(fitted["n_features_in_"]),
        converged=fitted["converged_"],
        n_iter=fitted["n_iter_"],
        lower_bound=fitted["lower_bound_"],
        lower_bounds=fitted["lower_bounds_"],
        n_features=fitted["n_features_in_"],
        feature_names=None if names is None else np.asarray(names, dtype=object),
        scaled=scaled,
        scaled_lower_bound=fitted.get("scaled_lower_bound_"),
        n_omitted=fitted["n_omitted_"],
        timings=fitted.get("fit_timings_"),
    )


def _variational_arrays(fm: FittedMixture) -> dict[str, np.ndarray]:
    """A variational model's extra fitted attributes as arrays (none otherwise)."""
    out = {}
    for name, value in (fm.variational or {}).items():
        if isinstance(value, tuple):  # the Dirichlet process's two Beta factors
            value = np.stack(value)
        out[name] = np.asarray(value, dtype=np.float64)
    return out


def _decode_variational(arrays: Mapping[str, np.ndarray], params: dict) -> dict:
    """The extra fitted attributes of a variational model, with their types."""
    out: dict[str, Any] = {}
    for name in VARIATIONAL_ATTRIBUTES:
        if name not in arrays:
            raise ValueError(f"array {name!r} of the variational model is not stored")
        value = arrays[name]
        if value.ndim == 0:
            value = float(value)
        elif (
            name == "weight_concentration_"
            and params["weight_concentration_prior_type"] == "dirichlet_process"
        ):
            value = (value[0], value[1])
        out[name] = value
    return out
