"""Configuration and argument mistakes: exit 2 and one line naming the field path.

Each CLI case runs ``python -m daskgmm.cli`` in a subprocess and compares the whole
of stderr; the duplicate-key YAML loader is also tested on its own.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from daskgmm.config import (
    ConfigError,
    DuplicateKeyError,
    apply_overrides,
    load_yaml,
    read_yaml,
    validate,
)
from tests.conftest import REPO, daskgmm_cmd


def assert_usage_error(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit 2 and exactly one line on stderr: ``daskgmm: error: <message>``."""
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"daskgmm: error: {message}\n"
    assert result.stdout == ""


GOOD = """\
pipeline: cluster
data:
  source: synthetic
  synthetic: {n_samples: 2000, n_features: 2, n_components: 2}
model:
  n_components: 2
  max_iter: 3
output:
  directory: out
  checkpoint: true
"""

PARQUET = """\
data:
  source: parquet
  path: two.parquet
model: {n_components: 2}
output: {directory: out}
"""


def _write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the duplicate-key loader -------------------------------------------------


def _duplicate(text: str) -> DuplicateKeyError:
    with pytest.raises(DuplicateKeyError) as info:
        load_yaml(text)
    return info.value


def test_a_duplicate_top_level_key_is_refused():
    error = _duplicate("model: {n_components: 3}\noutput: {directory: o}\nmodel: {}\n")
    assert str(error) == "model: duplicate key (lines 1 and 3); keep one"
    assert error.path == "model"
    assert error.lines == (1, 3)


def test_a_duplicate_nested_key_is_refused():
    text = "data:\n  source: synthetic\nmodel:\n  n_components: 3\n  n_components: 5\n"
    assert str(_duplicate(text)) == (
        "model.n_components: duplicate key (lines 4 and 5); keep one"
    )


def test_a_duplicate_key_in_a_list_item_is_refused():
    text = "runs:\n  - name: a\n  - name: b\n    k: 1\n    name: c\n"
    assert str(_duplicate(text)) == (
        "runs[1].name: duplicate key (lines 3 and 5); keep one"
    )


def test_a_duplicate_key_deep_in_a_flow_mapping_is_refused():
    text = "a:\n  b: [{c: {d: 1, d: 2}}]\n"
    assert (
        str(_duplicate(text)) == "a.b[0].c.d: duplicate key (lines 2 and 2); keep one"
    )


def test_the_same_key_in_different_mappings_and_merge_overrides_are_fine():
    text = (
        "base: &base {n_components: 3, tol: 0.001}\n"
        "model: {<<: *base, n_components: 5}\n"
        "other: {n_components: 4}\n"
    )
    assert load_yaml(text) == yaml.safe_load(text)
    assert load_yaml(text)["model"] == {"n_components": 5, "tol": 0.001}


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")))
def test_the_shipped_configs_load_as_with_safe_load(path):
    text = path.read_text()
    assert load_yaml(text) == yaml.safe_load(text)


def test_the_loader_stays_safe():
    with pytest.raises(yaml.YAMLError, match="could not determine a constructor"):
        load_yaml("a: !!python/object/apply:os.system ['true']\n")


def test_read_yaml_names_the_duplicate(tmp_path):
    path = _write(tmp_path, "model:\n  tol: 1\n  tol: 2\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert str(info.value) == "model.tol: duplicate key (lines 2 and 3); keep one"


def test_overrides_do_not_change_the_original_and_may_fill_an_empty_block():
    raw = {"model": None, "data": {"source": "synthetic"}}
    result = apply_overrides(raw, ["model.n_components=4", "data.path="])
    assert result["model"] == {"n_components": 4}
    assert result["data"]["path"] == ""
    assert raw == {"model": None, "data": {"source": "synthetic"}}


def test_a_good_filter_list_is_kept():
    raw = yaml.safe_load(PARQUET)
    raw["data"]["filters"] = [["a", ">", 1], ["b", "in", [1, 2]]]
    config = validate(raw)
    assert config.data.filters == [("a", ">", 1), ("b", "in", [1, 2])]


# --- the command ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD + "model:\n  n_components: 5\n",
            "model: duplicate key (lines 5 and 11); keep one",
        ),
        (
            GOOD.replace("  max_iter: 3\n", "  max_iter: 3\n  n_components: 4\n"),
            "model.n_components: duplicate key (lines 6 and 8); keep one",
        ),
    ],
    ids=["top-level", "nested"],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_duplicate_key_exits_2(tmp_path, text, message, command):
    path = _write(tmp_path, text)
    assert_usage_error(daskgmm_cmd(command, str(path)), message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.n_components=[1,",
            "--set 'model.n_components=[1,': model.n_components: the value is not "
            "valid YAML (expected the node content, but found '<stream end>'); "
            "quote it to give a string",
        ),
        ("model.n_components", "--set 'model.n_components': expected key.path=value"),
        ("=3", "--set '=3': expected key.path=value"),
        ("model..tol=3", "--set 'model..tol=3': expected key.path=value"),
        (
            "model.n_components.x=1",
            "--set 'model.n_components.x=1': model.n_components is 2, not a mapping",
        ),
        (
            "model={tol: 1, tol: 2}",
            "--set 'model={tol: 1, tol: 2}': model.tol: duplicate key (lines 1 and 1); "
            "keep one",
        ),
    ],
)
def test_a_bad_set_option_exits_2(tmp_path, override, message):
    path = _write(tmp_path, GOOD)
    assert_usage_error(daskgmm_cmd("validate", str(path), "--set", override), message)


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        pytest.param(
            '[[a, "~", 1]]',
            "data.filters[0]: the operator (second item) must be one of =, ==, !=, <, "
            ">, <=, >=, in, not in; got '~'",
            id="operator",
        ),
        pytest.param(
            "[[a, '>', 0], [a, 1]]",
            "data.filters[1]: a filter is [column, operator, value], e.g. "
            "[quality, '>', 0]; got ['a', 1]",
            id="short-filter",
        ),
        pytest.param(
            "[a]",
            "data.filters[0]: a filter is [column, operator, value], e.g. "
            "[quality, '>', 0]; got 'a'",
            id="not-a-list",
        ),
        pytest.param(
            "[[3, '>', 1]]",
            "data.filters[0]: the column (first item) must be a column name; got 3",
            id="column",
        ),
        pytest.param(
            "[[a, in, 1]]",
            "data.filters[0]: the value of 'in' must be a list of numbers or strings; "
            "got 1",
            id="in-value",
        ),
        pytest.param(
            "[[a, '<', [1]]]",
            "data.filters[0]: the value of '<' must be a number, string or date; "
            "got [1]",
            id="comparison-value",
        ),
    ],
)
def test_a_bad_filter_exits_2(tmp_path, filters, message):
    path = _write(tmp_path, PARQUET)
    result = daskgmm_cmd("validate", str(path), "--set", f"data.filters={filters}")
    assert_usage_error(result, message)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            [],
            "--resume: no checkpoint at {out}.checkpoint; run the job without --resume",
        ),
        (
            ["output.checkpoint=false"],
            "--resume needs output.checkpoint: true in the job file",
        ),
        (
            ["pipeline=select_model", "output.checkpoint=false"],
            "--resume needs output.checkpoint: true in the job file",
        ),
    ],
    ids=["no-checkpoint", "checkpoint-off", "select_model"],
)
def test_resume_without_a_checkpoint_exits_2_before_any_work(
    tmp_path, overrides, message
):
    path = _write(tmp_path, GOOD)
    sets = [arg for item in overrides for arg in ("--set", item)]
    result = daskgmm_cmd("run", str(path), "--resume", "--quiet", *sets)
    assert_usage_error(result, message.format(out=tmp_path / "out"))
    assert sorted(os.listdir(tmp_path)) == ["job.yaml"]


def test_an_output_directory_below_a_file_exits_2(tmp_path):
    path = _write(tmp_path, GOOD)
    (tmp_path / "afile").write_text("not a directory")
    out = tmp_path / "afile" / "out"
    result = daskgmm_cmd(
        "run", str(path), "--quiet", "--set", f"output.directory={out}"
    )
    assert_usage_error(
        result,
        f"output.directory {out}: {tmp_path / 'afile'} is a file, not a directory; "
        "choose another output path",
    )


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_as_data_path_exits_2(tmp_path):
    path = _write(tmp_path, GOOD)
    result = daskgmm_cmd(
        "run",
        str(path),
        "--quiet",
        "--set",
        "data.source=npy",
        "--set",
        "data.path=/dev/zero",
    )
    assert_usage_error(
        result,
        "data.path /dev/zero is a character device, not a regular file or directory",
    )


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from daskgmm import GaussianMixture

    folder = tmp_path_factory.mktemp("predict")
    X = np.random.default_rng(0).normal(size=(200, 2))
    np.save(folder / "x.npy", X)
    GaussianMixture(2, random_state=0).fit(X).save(folder / "model")
    return folder / "model", folder / "x.npy"


@pytest.mark.parametrize("out", ["labels.txt", "labels", "labels.zarr.bak"])
def test_predict_refuses_an_output_suffix_it_cannot_write(
    tmp_path, model_and_data, out
):
    model, data = model_and_data
    target = tmp_path / out
    result = daskgmm_cmd("predict", str(model), str(data), "--out", str(target))
    assert_usage_error(
        result,
        f"--out {target}: the output format comes from the suffix: .zarr or .parquet",
    )
    assert not target.exists()


def test_predict_writes_parquet_for_pq(tmp_path, model_and_data):
    import pyarrow.parquet as pq

    model, data = model_and_data
    target = tmp_path / "labels.pq"
    result = daskgmm_cmd("predict", str(model), str(data), "--out", str(target))
    assert result.returncode == 0, result.stderr
    assert pq.read_table(target).num_rows == 200


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_predict_says_what_a_device_is(tmp_path, model_and_data):
    model, _ = model_and_data
    link = tmp_path / "zero.npy"
    link.symlink_to("/dev/zero")
    for data, kind in [
        ("/dev/zero", "a character device"),
        (str(link), "a character device (/dev/zero)"),
    ]:
        result = daskgmm_cmd(
            "predict", str(model), data, "--out", str(tmp_path / "p.zarr")
        )
        assert_usage_error(
            result,
            f"{data} is {kind}, not a regular file or directory; give a .npy, "
            "Parquet, Zarr or image path",
        )


def test_predict_output_below_a_file_exits_2(tmp_path, model_and_data):
    model, data = model_and_data
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "p.zarr"
    result = daskgmm_cmd("predict", str(model), str(data), "--out", str(target))
    assert_usage_error(
        result,
        f"--out {target}: {tmp_path / 'afile'} is a file, not a directory; choose "
        "another output path",
    )
