"""Model files of daskgmm.model_io: a fitted GaussianMixture saved as a directory of
``model.json`` and ``arrays.npz`` and loaded back exactly.

An exact round trip means: every parameter and fitted attribute of the loaded model
has the same Python type, dtype and bits as the original's, and its predictions are
bitwise identical. The files are read back with the standard library's ``json`` and
with ``np.load(..., allow_pickle=False)``, independently of the loader under test.
Every error is checked with its message written as a literal.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_array_equal

import daskgmm
import daskgmm.model_io
from daskgmm import ConvergenceWarning, GaussianMixture, NotFittedError
from daskgmm.mixture import load_model
from daskgmm.model_io import load_model_metadata, save_model
from tests.conftest import SKLEARN_DEFAULTS

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
PARAM_NAMES = GaussianMixture._param_names()
FITTED_ATTRIBUTES = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "converged_",
    "n_iter_",
    "lower_bound_",
    "lower_bounds_",
    "n_features_in_",
    "feature_names_in_",
)
FITTED_ARRAYS = [
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
]
CENTERS = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 2.0], [0.0, 6.0, -2.0]])
COLUMNS = ["x", "length", "width"]
CORRUPT = "; the model file is corrupt"


###############################################################################
# Data and helpers


def make_blobs(dtype: Any = np.float64, n_per: int = 150) -> np.ndarray:
    """Three well-separated blobs in 3-D, offset from the origin."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(c, 1.0, size=(n_per, 3)) for c in CENTERS]) + 100.0
    return X.astype(dtype)


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return make_blobs()


@pytest.fixture(scope="module")
def fitted(X: np.ndarray) -> GaussianMixture:
    return GaussianMixture(3, random_state=0).fit(X)


def assert_same_value(a: Any, b: Any) -> None:
    """Same Python type, and for arrays the same dtype, shape and bytes."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        if a.dtype.hasobject:
            assert a.tolist() == b.tolist()
        else:
            assert a.tobytes() == b.tobytes()
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_value(x, y)
    elif isinstance(a, (float, np.floating)) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def assert_same_model(original: GaussianMixture, loaded: GaussianMixture) -> None:
    """Every parameter and fitted attribute equal, types and bits included."""
    assert set(vars(loaded)) == set(vars(original))
    for name in PARAM_NAMES:
        assert_same_value(getattr(original, name), getattr(loaded, name))
    for name in FITTED_ATTRIBUTES:
        assert hasattr(loaded, name) == hasattr(original, name), name
        if hasattr(original, name):
            assert_same_value(getattr(original, name), getattr(loaded, name))


def assert_same_predictions(
    original: GaussianMixture, loaded: GaussianMixture, X: Any
) -> None:
    for method in ("predict", "predict_proba", "score_samples"):
        expected = getattr(original, method)(X)
        got = getattr(loaded, method)(X)
        assert_same_value(expected, got)
    assert loaded.score(X) == original.score(X)


def read_json(path: Any) -> dict:
    with open(os.path.join(path, "model.json"), encoding="utf-8") as f:
        return json.load(f)


def edit_json(path: Any, edit: Callable[[dict], Any]) -> None:
    document = read_json(path)
    edit(document)
    with open(os.path.join(path, "model.json"), "w", encoding="utf-8") as f:
        json.dump(document, f)


def read_npz(path: Any) -> dict[str, np.ndarray]:
    with np.load(os.path.join(path, "arrays.npz"), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def rewrite_npz(path: Any, edit: Callable[[dict], Any]) -> None:
    arrays = read_npz(path)
    edit(arrays)
    np.savez(os.path.join(path, "arrays.npz"), **arrays)


def precisions_init(covariance_type: str, dtype: Any) -> np.ndarray:
    eye = np.eye(3)
    return {
        "full": np.stack([eye, 2 * eye, 0.5 * eye]),
        "tied": eye,
        "diag": np.ones((3, 3)),
        "spherical": np.array([1.0, 2.0, 0.5]),
    }[covariance_type].astype(dtype)


###############################################################################
# Exact round trips


@pytest.mark.parametrize("frame", [False, True], ids=["numpy", "pandas"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_is_exact(tmp_path, covariance_type, dtype, frame):
    X = make_blobs(dtype)
    data = pd.DataFrame(X, columns=COLUMNS) if frame else X
    model = GaussianMixture(3, covariance_type=covariance_type, random_state=0)
    model.fit(data)
    path = model.save(tmp_path / "model")

    loaded = daskgmm.load(path)

    assert path == str(tmp_path / "model")
    assert_same_model(model, loaded)
    assert_same_predictions(model, loaded, data)
    assert loaded.means_.dtype == dtype
    assert type(loaded.converged_) is bool and loaded.converged_
    assert type(loaded.n_iter_) is int and loaded.n_iter_ >= 1
    assert type(loaded.lower_bound_) is float
    assert loaded.lower_bound_ == loaded.lower_bounds_[-1]
    # The blobs are recovered, so the round trip is checked on a real model.
    assert sorted(np.bincount(loaded.predict(data))) == [150, 150, 150]
    if frame:
        assert_array_equal(loaded.feature_names_in_, np.array(COLUMNS, dtype=object))
    else:
        assert not hasattr(loaded, "feature_names_in_")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_with_init_arrays(tmp_path, X, covariance_type):
    means_init = [[100.0, 100.0, 100.0], [106.0, 100.0, 102.0], [100.0, 106.0, 98.0]]
    model = GaussianMixture(
        3,
        covariance_type=covariance_type,
        weights_init=np.array([0.2, 0.3, 0.5]),
        means_init=means_init,
        precisions_init=precisions_init(covariance_type, np.float32),
    ).fit(X)
    model.save(tmp_path / "model")

    loaded = load_model(tmp_path / "model")

    assert_same_model(model, loaded)
    assert_same_predictions(model, loaded, X)
    assert loaded.random_state is None
    assert loaded.means_init == means_init  # a list stays a list
    assert loaded.precisions_init.dtype == np.float32
    params = read_json(tmp_path / "model")["params"]
    assert params["weights_init"] == {"array": "weights_init"}
    assert params["means_init"] == {"array": "means_init", "as": "list"}
    assert params["precisions_init"] == {"array": "precisions_init"}
    assert_array_equal(read_npz(tmp_path / "model")["means_init"], means_init)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_warm_start_after_load_continues_like_the_original(tmp_path, dtype):
    X = make_blobs(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        original = GaussianMixture(3, tol=0.0, max_iter=2, random_state=0).fit(X)
    before = original.means_.copy()
    original.save(tmp_path / "model")
    loaded = daskgmm.load(tmp_path / "model")

    for model in (original, loaded):
        model.set_params(warm_start=True, max_iter=3)
        with pytest.warns(ConvergenceWarning):
            model.fit(X)

    assert_same_model(original, loaded)
    assert loaded.n_iter_ == 3 and len(loaded.lower_bounds_) == 3
    assert not np.array_equal(loaded.means_, before)  # the fit did continue


def test_max_iter_zero_stores_minus_inf_as_strict_json(tmp_path, X):
    model = GaussianMixture(2, max_iter=0, random_state=0).fit(X)
    assert (model.lower_bound_, model.lower_bounds_) == (-np.inf, [])
    model.save(tmp_path / "model")

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    text = (tmp_path / "model" / "model.json").read_text(encoding="utf-8")
    fitted = json.loads(text, parse_constant=reject)["fitted"]
    loaded = load_model(tmp_path / "model")

    assert fitted["lower_bound_"] == {"float": "-inf"}
    assert fitted["lower_bounds_"] == []
    assert_same_model(model, loaded)
    assert loaded.lower_bound_ == -np.inf and type(loaded.lower_bound_) is float


def test_non_finite_lower_bounds_round_trip(tmp_path, fitted):
    fitted_copy = load_model(save_model(fitted, tmp_path / "a"))
    fitted_copy.lower_bound_ = math.nan
    fitted_copy.lower_bounds_ = [-math.inf, 1.5, math.inf, math.nan]
    fitted_copy.save(tmp_path / "b")

    loaded = load_model(tmp_path / "b")

    assert read_json(tmp_path / "b")["fitted"]["lower_bounds_"] == [
        {"float": "-inf"},
        1.5,
        {"float": "inf"},
        {"float": "nan"},
    ]
    assert math.isnan(loaded.lower_bound_)
    assert_same_model(fitted_copy, loaded)


def test_numpy_scalar_params_keep_their_type(tmp_path, X):
    model = GaussianMixture(
        np.int64(3), tol=np.float32(0.001), reg_covar=1e-5, random_state=np.int32(7)
    ).fit(X)
    model.save(tmp_path / "model")

    loaded = load_model(tmp_path / "model")
    params = read_json(tmp_path / "model")["params"]

    assert params["n_components"] == {"numpy": "int64", "value": 3}
    assert params["tol"] == {"numpy": "float32", "value": float(np.float32(0.001))}
    assert params["reg_covar"] == 1e-5
    assert params["random_state"] == {"numpy": "int32", "value": 7}
    assert type(loaded.n_components) is np.int64
    assert type(loaded.tol) is np.float32 and loaded.tol == np.float32(0.001)
    assert_same_model(model, loaded)
    assert_same_predictions(model, loaded, X)


def test_random_state_instance_is_saved_as_none_with_a_warning(
    tmp_path, X, caplog, capsys
):
    model = GaussianMixture(2, random_state=np.random.RandomState(0)).fit(X)
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="daskgmm"):
        model.save(tmp_path / "model")

    loaded = load_model(tmp_path / "model")

    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "daskgmm",
            "WARNING",
            "random_state is a RandomState instance, which a model file cannot hold; "
            "it is saved as random_state=None (sample() and a refit of the loaded "
            "model will draw different numbers)",
        )
    ]
    assert capsys.readouterr() == ("", "")
    assert read_json(tmp_path / "model")["params"]["random_state"] is None
    assert loaded.random_state is None
    assert_same_predictions(model, loaded, X)


###############################################################################
# The files themselves


def test_model_json_is_human_readable_and_complete(tmp_path, X):
    data = pd.DataFrame(X, columns=COLUMNS)
    model = GaussianMixture(3, covariance_type="diag", random_state=0).fit(data)
    model.save(tmp_path / "model", extra={"job": "nightly", "rows": 450})

    text = (tmp_path / "model" / "model.json").read_text(encoding="utf-8")
    document = json.loads(text)

    assert '\n  "params": {\n    "n_components": 3,' in text  # indented
    assert list(document) == [
        "format",
        "format_version",
        "library_version",
        "class",
        "params",
        "fitted",
        "data",
        "arrays",
        "extra",
    ]
    assert document["format"] == "daskgmm-model"
    assert document["format_version"] == 1
    assert document["library_version"] == daskgmm.__version__
    assert document["class"] == "GaussianMixture"
    assert document["params"] == {
        **SKLEARN_DEFAULTS,
        "n_components": 3,
        "covariance_type": "diag",
        "random_state": 0,
        "verbose": 0,
        "verbose_interval": 10,
        "split_every": 16,
        "persist": "auto",
        "init_sample_size": 50000,
    }
    assert document["fitted"] == {
        "converged_": True,
        "n_iter_": model.n_iter_,
        "lower_bound_": model.lower_bound_,
        "lower_bounds_": model.lower_bounds_,
        "n_features_in_": 3,
        "fit_timings_": model.fit_timings_,
    }
    assert document["data"] == {
        "feature_names": COLUMNS,
        "dtype": "float64",
        "n_features": 3,
    }
    assert document["arrays"] == FITTED_ARRAYS
    assert document["extra"] == {"job": "nightly", "rows": 450}
    assert load_model_metadata(tmp_path / "model") == document


def test_npz_holds_only_numeric_arrays(tmp_path, X):
    model = GaussianMixture(
        3,
        covariance_type="tied",
        means_init=CENTERS + 100.0,
        precisions_init=precisions_init("tied", np.float64),
    ).fit(X)
    model.save(tmp_path / "model")

    arrays = read_npz(tmp_path / "model")

    assert list(arrays) == read_json(tmp_path / "model")["arrays"]
    assert list(arrays) == [*FITTED_ARRAYS, "means_init", "precisions_init"]
    assert [a.dtype for a in arrays.values()] == [np.dtype(np.float64)] * 7
    for name in FITTED_ARRAYS:
        assert_same_value(arrays[name], getattr(model, name))
    assert_array_equal(arrays["means_init"], CENTERS + 100.0)


def test_metadata_without_extra_is_empty_and_skips_the_arrays(tmp_path, fitted):
    fitted.save(tmp_path / "model")
    os.remove(tmp_path / "model" / "arrays.npz")

    metadata = load_model_metadata(tmp_path / "model")

    assert metadata["extra"] == {}
    assert metadata["params"]["n_components"] == 3
    assert metadata["fitted"]["n_iter_"] == fitted.n_iter_


def test_save_and_load_are_exported(tmp_path, fitted):
    assert "load" in daskgmm.__all__
    assert daskgmm.load is load_model
    assert save_model(fitted, tmp_path / "m") == str(tmp_path / "m")
    assert_same_model(fitted, daskgmm.load(str(tmp_path / "m")))


###############################################################################
# Saving: errors, atomicity and overwrite


def test_saving_an_unfitted_model_raises(tmp_path):
    with pytest.raises(
        NotFittedError,
        match=re.escape(
            "This GaussianMixture instance is not fitted yet: call 'fit' before "
            "saving it."
        ),
    ):
        GaussianMixture(2).save(tmp_path / "model")
    assert os.listdir(tmp_path) == []


def test_saving_something_else_raises(tmp_path):
    with pytest.raises(
        TypeError, match="save_model saves a daskgmm GaussianMixture, got dict"
    ):
        save_model({}, tmp_path / "model")


def test_saving_a_model_whose_params_no_longer_match_raises(tmp_path, X):
    model = GaussianMixture(3, random_state=0).fit(X).set_params(n_components=4)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "cannot save the model: weights_ has shape (3,), expected (4,) for "
            "n_components=4, n_features=3, covariance_type='full'"
        ),
    ):
        model.save(tmp_path / "model")
    assert os.listdir(tmp_path) == []


def test_extra_must_be_json(tmp_path, fitted):
    with pytest.raises(
        TypeError,
        match=re.escape(
            "extra must be JSON-serialisable: Object of type set is not JSON "
            "serializable"
        ),
    ):
        fitted.save(tmp_path / "model", extra={"tags": {"a"}})
    with pytest.raises(TypeError, match="extra must be a dict, got list"):
        fitted.save(tmp_path / "model", extra=["a"])
    assert os.listdir(tmp_path) == []


def test_a_failing_save_leaves_nothing(tmp_path, fitted, monkeypatch):
    real_write = daskgmm.model_io._write_file

    def write_then_fail(path: str, payload: bytes) -> None:
        if path.endswith("arrays.npz"):
            raise OSError("No space left on device")
        real_write(path, payload)

    monkeypatch.setattr(daskgmm.model_io, "_write_file", write_then_fail)
    with pytest.raises(OSError, match="No space left on device"):
        fitted.save(tmp_path / "model")

    assert os.listdir(tmp_path) == []


def test_a_failing_overwrite_keeps_the_old_model(tmp_path, X, fitted, monkeypatch):
    fitted.save(tmp_path / "model")
    other = GaussianMixture(2, random_state=0).fit(X)

    def fail(path: str, payload: bytes) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(daskgmm.model_io, "_write_file", fail)
    with pytest.raises(OSError, match="No space left on device"):
        other.save(tmp_path / "model", overwrite=True)

    assert os.listdir(tmp_path) == ["model"]
    assert_same_model(fitted, load_model(tmp_path / "model"))


def test_overwrite_semantics(tmp_path, X, fitted):
    path = tmp_path / "model"
    fitted.save(path)
    other = GaussianMixture(2, covariance_type="spherical", random_state=0).fit(X)

    with pytest.raises(
        FileExistsError,
        match=re.escape(f"{path} already exists; remove it or allow overwriting"),
    ):
        other.save(path)
    assert_same_model(fitted, load_model(path))

    other.save(path, overwrite=True)
    assert_same_model(other, load_model(path))
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert sorted(os.listdir(path)) == ["arrays.npz", "model.json"]


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_overwrite_never_replaces_something_that_is_not_a_model(tmp_path, fitted, kind):
    path = tmp_path / "results"
    if kind == "directory":
        path.mkdir()
        (path / "notes.txt").write_text("keep me")
    else:
        path.write_text("keep me")

    with pytest.raises(
        FileExistsError,
        match=re.escape(
            f"{path} exists and is not a daskgmm model directory; refusing to "
            "overwrite it"
        ),
    ):
        fitted.save(path, overwrite=True)

    kept = path / "notes.txt" if kind == "directory" else path
    assert kept.read_text() == "keep me"


###############################################################################
# Loading: errors


def test_loading_a_missing_path_raises(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(
            f"no daskgmm model at {tmp_path / 'nope'}: the path does not exist"
        ),
    ):
        load_model(tmp_path / "nope")


def test_loading_a_file_raises(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    path = tmp_path / "model.json"
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{path} is not a daskgmm model: a model is a directory holding "
            "model.json and arrays.npz"
        ),
    ):
        load_model(path)


def test_loading_a_directory_without_model_json_raises(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(
        ValueError,
        match=re.escape(f"{tmp_path} is not a daskgmm model: it has no model.json"),
    ):
        load_model(tmp_path)


def truncate_json(path: Any) -> None:
    (path / "model.json").write_text('{"format": "daskgmm-model", "format_')


def set_json(key: str, value: Any) -> Callable[[Any], None]:
    return lambda path: edit_json(path, lambda d: d.__setitem__(key, value))


def set_section(section: str, key: str, value: Any) -> Callable[[Any], None]:
    return lambda path: edit_json(path, lambda d: d[section].__setitem__(key, value))


def set_array(name: str, value: Any) -> Callable[[Any], None]:
    return lambda path: rewrite_npz(path, lambda a: a.__setitem__(name, value))


def write_npz_bytes(payload: bytes) -> Callable[[Any], None]:
    return lambda path: (path / "arrays.npz").write_bytes(payload)


def truncate_npz(path: Any) -> None:
    file = path / "arrays.npz"
    file.write_bytes(file.read_bytes()[:-300])


def object_array_npz(path: Any) -> None:
    arrays = read_npz(path)
    arrays["means_"] = np.array([{"a": 1}, None], dtype=object)
    # Written only to prove the loader refuses it (np.savez pickles object arrays).
    np.savez(path / "arrays.npz", **arrays)


JSON = "{json}"
NPZ = "{npz}"
LOAD_ERRORS = {
    "truncated-json": (
        truncate_json,
        f"{JSON} is not valid JSON: Unterminated string starting at: line 1 column "
        f"29 (char 28){CORRUPT}",
    ),
    "json-not-an-object": (
        lambda p: (p / "model.json").write_text("[1, 2]"),
        f"{JSON} is not a daskgmm model file: not a JSON object",
    ),
    "other-format": (
        set_json("format", "sklearn-model"),
        f"{JSON} is not a daskgmm model file: its format is 'sklearn-model', "
        "expected 'daskgmm-model'",
    ),
    "newer-format": (
        lambda p: edit_json(
            p, lambda d: d.update(format_version=2, library_version="9.1.0")
        ),
        f"{JSON} was written by daskgmm 9.1.0 with model format 2; this daskgmm "
        "reads format 1 — upgrade daskgmm",
    ),
    "bad-format-version": (
        set_json("format_version", "1"),
        f"{JSON} has an invalid format_version '1'{CORRUPT}",
    ),
    "other-class": (
        set_json("class", "KMeans"),
        f"{JSON} holds a 'KMeans' model; daskgmm reads 'GaussianMixture' and "
        "'BayesianGaussianMixture' models",
    ),
    "no-fitted-section": (
        lambda p: edit_json(p, lambda d: d.pop("fitted")),
        f"{JSON} has no valid 'fitted' section (expected a JSON object){CORRUPT}",
    ),
    "unknown-param": (
        set_section("params", "n_clusters", 3),
        f"{JSON}: unknown parameter(s) ['n_clusters']{CORRUPT}",
    ),
    "bad-covariance-type": (
        set_section("params", "covariance_type", "banana"),
        f"{JSON}: covariance_type must be one of ['full', 'tied', 'diag', "
        f"'spherical'], got 'banana'{CORRUPT}",
    ),
    "string-n-iter": (
        set_section("fitted", "n_iter_", "2"),
        f"{JSON}: n_iter_ must be an int >= 0, got '2'{CORRUPT}",
    ),
    "bare-inf-string": (
        set_section("fitted", "lower_bound_", "-inf"),
        f"{JSON}: expected a float, got '-inf'{CORRUPT}",
    ),
    "feature-names-length": (
        set_section("data", "feature_names", ["a", "b"]),
        f"{JSON}: feature_names must be null or 3 strings, got ['a', 'b']{CORRUPT}",
    ),
    "bad-dtype": (
        set_section("data", "dtype", "float16"),
        f"{JSON}: data dtype 'float16' is not one of ['float32', 'float64']{CORRUPT}",
    ),
    "missing-npz": (
        lambda p: os.remove(p / "arrays.npz"),
        f"{NPZ} is missing{CORRUPT}",
    ),
    "npz-not-a-zip": (
        write_npz_bytes(b"\x93NUMPY this is not an archive"),
        f"{NPZ} is not an .npz archive{CORRUPT}",
    ),
    "truncated-npz": (
        truncate_npz,
        f"{NPZ} is not a readable .npz archive: File is not a zip file{CORRUPT}",
    ),
    "missing-array": (
        lambda p: rewrite_npz(p, lambda a: a.pop("means_")),
        f"{NPZ} lacks array(s) ['means_']{CORRUPT}",
    ),
    "unlisted-array": (
        set_array("junk", np.zeros(2)),
        f"{NPZ} holds array(s) ['junk'] that model.json does not list{CORRUPT}",
    ),
    "wrong-shape": (
        set_array("means_", np.zeros((3, 4))),
        f"{NPZ}: means_ has shape (3, 4), expected (3, 3) for n_components=3, "
        f"n_features=3, covariance_type='full'{CORRUPT}",
    ),
    "other-covariance-type": (
        set_section("params", "covariance_type", "diag"),
        f"{NPZ}: covariances_ has shape (3, 3, 3), expected (3, 3) for "
        f"n_components=3, n_features=3, covariance_type='diag'{CORRUPT}",
    ),
    "other-n-components": (
        set_section("params", "n_components", 4),
        f"{NPZ}: weights_ has shape (3,), expected (4,) for n_components=4, "
        f"n_features=3, covariance_type='full'{CORRUPT}",
    ),
    "wrong-dtype": (
        lambda p: rewrite_npz(
            p, lambda a: a.__setitem__("means_", a["means_"].astype(np.float32))
        ),
        f"{NPZ}: means_ has dtype float32, expected float64{CORRUPT}",
    ),
    "object-array": (
        object_array_npz,
        f"{NPZ} holds an object array 'means_', which daskgmm does not load (it "
        f"would need pickle){CORRUPT}",
    ),
}


@pytest.mark.parametrize("case", list(LOAD_ERRORS))
def test_loading_a_damaged_model_raises(tmp_path, fitted, case):
    damage, message = LOAD_ERRORS[case]
    path = tmp_path / "model"
    fitted.save(path)
    damage(path)
    message = message.format(json=path / "model.json", npz=path / "arrays.npz")

    with pytest.raises(ValueError, match=re.escape(message)):
        load_model(path)


@pytest.mark.parametrize("file", ["model.json", "arrays.npz"])
def test_any_truncation_is_a_one_line_value_error(tmp_path, fitted, file):
    path = tmp_path / "model"
    fitted.save(path)
    payload = (path / file).read_bytes()
    for size in range(0, len(payload), max(1, len(payload) // 40)):
        (path / file).write_bytes(payload[:size])
        with pytest.raises(ValueError) as info:
            load_model(path)
        message = str(info.value)
        assert message.startswith(f"{path / file} is not ")
        assert message.endswith(CORRUPT) and "\n" not in message
    (path / file).write_bytes(payload)
    assert_same_model(fitted, load_model(path))
