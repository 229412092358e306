"""One parameter table (``daskgmm._params``) for the estimator and the job schema."""

from __future__ import annotations

import inspect
import math
import typing

import numpy as np
import pytest
import yaml

from daskgmm import BayesianGaussianMixture, GaussianMixture
from daskgmm._params import BY_NAME, PARAMS, check_param, params_of
from daskgmm.config import (
    _OUTSIDE_MODEL_BLOCK,
    ConfigError,
    FeaturesConfig,
    JobConfig,
    ModelConfig,
    validate,
)

JOB = "data: {source: synthetic}\noutput: {directory: out}\n"


def _signature(cls: type = GaussianMixture) -> list[tuple[str, object]]:
    parameters = inspect.signature(cls.__init__).parameters
    return [(name, p.default) for name, p in parameters.items() if name != "self"]


def _typed(pairs):
    """(name, default, type of default): 1 and 1.0 and True are all different."""
    return [(name, default, type(default)) for name, default in pairs]


@pytest.mark.parametrize("cls", [GaussianMixture, BayesianGaussianMixture])
def test_the_table_is_each_estimators_signature(cls):
    table = [(p.name, p.default) for p in params_of(cls.__name__)]
    assert _typed(table) == _typed(_signature(cls))
    assert cls()._param_names() == [p.name for p in params_of(cls.__name__)]


def test_the_bayesian_parameters_are_scikit_learns():
    from sklearn.mixture import BayesianGaussianMixture as Sklearn

    theirs = inspect.signature(Sklearn.__init__).parameters
    ours = dict(_signature(BayesianGaussianMixture))
    for name, p in theirs.items():
        if name != "self":
            assert ours[name] == p.default, name


def test_the_model_block_is_the_table():
    expected = [p for p in PARAMS if p.name not in _OUTSIDE_MODEL_BLOCK]
    fields = dict(ModelConfig.model_fields)
    assert fields.pop("kind").default == "gaussian"
    assert list(fields) == [p.name for p in expected]
    assert _typed((name, f.default) for name, f in fields.items()) == _typed(
        (p.name, p.default) for p in expected
    )
    # Defaults of a job without a model block are the estimator's.
    model = JobConfig.model_validate(yaml.safe_load(JOB)).model
    assert model.random_state is None
    assert model.verbose_interval == 10
    assert model.model_dump() == {
        "kind": "gaussian",
        **{p.name: p.default for p in expected},
    }


def test_the_only_parameters_outside_the_model_block_are_in_features():
    assert set(_OUTSIDE_MODEL_BLOCK) == {"scale", "log1p"}
    scale = BY_NAME["scale"]
    field = FeaturesConfig.model_fields["scale"]
    assert field.default == scale.default
    assert typing.get_args(field.annotation) == scale.options


@pytest.mark.parametrize("param", PARAMS, ids=lambda p: p.name)
def test_model_block_constraints_come_from_the_table(param):
    if param.name in _OUTSIDE_MODEL_BLOCK:
        return
    field = ModelConfig.model_fields[param.name]
    bounds = {
        type(m).__name__.lower(): getattr(m, type(m).__name__.lower())
        for m in field.metadata
        if type(m).__name__ in ("Gt", "Ge")
    }
    expected = {k: v for k, v in (("gt", param.gt), ("ge", param.ge)) if v is not None}
    assert bounds == expected
    if param.kind == "option":
        assert typing.get_args(field.annotation) == param.options


def _job_error(model: str) -> str:
    with pytest.raises(ConfigError) as info:
        validate(yaml.safe_load(JOB + f"model: {model}\n"))
    return str(info.value)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{n_components: 0}", "model.n_components: Input should be greater than 0"),
        (
            "{covariance_type: bogus}",
            "model.covariance_type: Input should be 'full', 'tied', 'diag' or "
            "'spherical'",
        ),
        (
            "{max_iter: -1}",
            "model.max_iter: Input should be greater than or equal to 0",
        ),
        (
            "{split_every: 1}",
            "model.split_every: Input should be greater than or equal",
        ),
        ("{tol: -0.1}", "model.tol: Input should be greater than or equal to 0"),
        ("{reg_covar: .inf}", "model.reg_covar: Input should be a finite number"),
        (
            "{persist: sometimes}",
            "model.persist: Input should be 'auto', True or False",
        ),
        (
            "{kernel: fast}",
            "model.kernel: Input should be 'auto', 'compiled' or 'numpy'",
        ),
        (
            "{scale: standard}",
            "model.scale: unknown key (not allowed here); set it in features.scale",
        ),
    ],
)
def test_a_bad_model_block_names_the_field(model, message):
    assert message in _job_error(model)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"n_components": 0},
            "The 'n_components' parameter of GaussianMixture must be an int in the "
            "range [1, inf). Got 0 instead.",
        ),
        (
            {"covariance_type": "bogus"},
            "The 'covariance_type' parameter of GaussianMixture must be one of "
            "{'full', 'tied', 'diag', 'spherical'}. Got 'bogus' instead.",
        ),
    ],
)
def test_the_same_values_fail_in_the_estimator(params, message):
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError) as info:
        GaussianMixture(**params).fit(X)
    assert str(info.value) == message


# Values that break one parameter each (arrays and log1p are checked at fit time).
BAD = {
    "n_components": [0, -1, 1.0, True, "3"],
    "covariance_type": ["bogus", "Full", None],
    "tol": [-1e-3, math.inf, math.nan, "0.1", True],
    "reg_covar": [-1.0, math.inf],
    "max_iter": [-1, 2.5],
    "n_init": [0, False],
    "init_params": ["kmeans+", None],
    "random_state": ["0", 1.5],
    "warm_start": [1, "yes", None],
    "verbose": [-1, 0.5],
    "verbose_interval": [0],
    "split_every": [1, 0],
    "persist": ["sometimes", 1, 0],
    "init_sample_size": [0],
    "scale": ["zscore", None],
    "nan_policy": ["drop"],
    "kernel": ["fast", None],
}


CASES = [
    pytest.param(name, value, id=f"{name}={value!r}")
    for name, values in BAD.items()
    for value in values
]


def _error(call):
    try:
        call()
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize(("name", "value"), CASES)
def test_check_param_raises_what_the_estimator_raises(name, value):
    """``check_param`` over the table can replace the estimator's own checks."""
    by_table = _error(lambda: check_param(BY_NAME[name], value))
    by_estimator = _error(lambda: GaussianMixture(**{name: value})._check_params())
    assert by_table is not None
    assert by_table == by_estimator


def test_check_param_accepts_every_default_and_option():
    for param in PARAMS:
        check_param(param, param.default)
        for option in param.options:
            check_param(param, option)
    check_param(BY_NAME["verbose"], True)
    check_param(BY_NAME["random_state"], np.random.RandomState(0))
