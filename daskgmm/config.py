"""Job configuration: a pydantic schema per block, YAML read with ``yaml.SafeLoader``.

A job file has five blocks — ``pipeline``, ``data``, ``model``, ``cluster``,
``output`` — (plus ``select`` or ``segment`` for the pipelines that read them, and
an optional ``features`` block: which columns, scaled how), and
unknown keys anywhere are errors. Validation errors come out as one
line per problem with the field path, e.g. ``model.n_components: Input should be
greater than 0``. A key given twice in one mapping is an error too (YAML itself
would keep the last one): ``model.n_components: duplicate key (lines 4 and 7); keep
one``.
"""

from __future__ import annotations

import datetime
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from daskgmm._params import BY_NAME, MODEL_KINDS, PARAMS, Param


@dataclass(frozen=True)
class Pipeline:
    """A pipeline a job file may name (``pipeline:``).

    Attributes
    ----------
    module : str
        The module of the ``pipelines`` package whose ``run(config, *,
        resume=False, progress=None) -> dict`` runs it.
    checkpointed : bool
        Whether it writes a checkpoint with ``output.checkpoint`` and resumes from
        it with ``--resume``.
    """

    module: str
    checkpointed: bool = False


# The one registry of pipelines: a new pipeline is a module with a run() and a line
# here; the job schema's allowed names come from it.
PIPELINES: dict[str, Pipeline] = {
    "cluster": Pipeline("cluster", checkpointed=True),
    "segment_image": Pipeline("segment_image"),
    "select_model": Pipeline("select_model", checkpointed=True),
}
# Option types shared with the estimator's parameter table.
CovarianceType = Literal[BY_NAME["covariance_type"].options]
ScaleMethod = Literal[BY_NAME["scale"].options]


class ConfigError(ValueError):
    """A job configuration that cannot be used; the message names the field path."""


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The operators of a row filter, as pyarrow.parquet.filters_to_expression reads them.
FILTER_OPERATORS = ("=", "==", "!=", "<", ">", "<=", ">=", "in", "not in")
_FILTER_SCALARS = (str, int, float, datetime.date)


def _filter_error(message: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError("filter", message + "; got {got}", {"got": repr(value)})


def _check_filter(value: Any) -> tuple[str, str, Any]:
    """One row filter ``[column, operator, value]`` (``value`` a list for in/not in).

    Whether the column exists can only be known when the file is opened.
    """
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise _filter_error(
            "a filter is [column, operator, value], e.g. [quality, '>', 0]", value
        )
    column, operator, operand = value
    if not isinstance(column, str) or not column:
        raise _filter_error("the column (first item) must be a column name", column)
    if operator not in FILTER_OPERATORS:
        raise _filter_error(
            f"the operator (second item) must be one of {', '.join(FILTER_OPERATORS)}",
            operator,
        )
    if operator in ("in", "not in"):
        if not isinstance(operand, (list, tuple)) or not all(
            isinstance(v, _FILTER_SCALARS) for v in operand
        ):
            raise _filter_error(
                f"the value of '{operator}' must be a list of numbers or strings",
                operand,
            )
        return column, operator, list(operand)
    if not isinstance(operand, _FILTER_SCALARS):
        raise _filter_error(
            f"the value of '{operator}' must be a number, string or date", operand
        )
    return column, operator, operand


RowFilter = Annotated[tuple[str, str, Any], BeforeValidator(_check_filter)]


class SyntheticData(_Block):
    """Rows generated from a known mixture (``daskgmm.datasets.make_gmm``)."""

    n_samples: int = Field(1_000_000, gt=0)
    n_features: int = Field(2, gt=0)
    n_components: int = Field(3, gt=0)
    covariance_type: CovarianceType = "full"
    separation: float = Field(6.0, gt=0)
    random_state: int = 0


class DataConfig(_Block):
    """Where the rows come from.

    ``source: sample_image`` names a photo shipped with scikit-image (``name:
    coffee``), for demos that need no file or network; the ``segment_image``
    pipeline reads it.
    """

    source: Literal["synthetic", "zarr", "parquet", "npy", "image", "sample_image"]
    path: str | None = None
    name: str | None = None
    array: str | None = None
    columns: list[str] | None = None
    id_columns: list[str] = Field(default_factory=list)
    weight_column: str | None = None
    filters: list[RowFilter] | None = None
    rows_per_chunk: int | None = Field(None, gt=0)
    sample_fraction: float | None = Field(None, gt=0, le=1)
    storage_options: dict[str, Any] | None = None
    # Zarr chunks absent from the store: an error, or read as the fill value.
    missing_chunks: Literal["error", "fill"] = "error"
    synthetic: SyntheticData = Field(default_factory=SyntheticData)

    @model_validator(mode="after")
    def _path_when_needed(self) -> DataConfig:
        if self.source == "sample_image":
            if not self.name or self.path:
                raise ValueError(
                    "source 'sample_image' takes a name (e.g. name: coffee), no path"
                )
        elif self.source != "synthetic" and not self.path:
            raise ValueError(f"a path is needed for source '{self.source}'")
        if self.name and self.source != "sample_image":
            raise ValueError("name is for source 'sample_image' only")
        if self.id_columns and self.source != "parquet":
            raise ValueError("id_columns are only read from Parquet sources")
        if self.filters and self.source != "parquet":
            raise ValueError("filters apply to Parquet sources only")
        if self.weight_column and self.source != "parquet":
            raise ValueError("weight_column is read from Parquet sources only")
        return self


# Estimator parameters the job file sets in another block, with the reason: the one
# place where the model block departs from the parameter table (daskgmm._params).
_OUTSIDE_MODEL_BLOCK = {
    "scale": "features.scale (it goes with the feature columns)",
    "log1p": "features.log1p (it names columns of features.columns)",
}


def _job_field(param: Param) -> tuple[Any, Any]:
    """The pydantic type and field of one estimator parameter, as YAML gives it."""
    kwargs: dict[str, Any] = {"description": param.doc}
    if param.kind == "int":
        annotation: Any = int
        kwargs.update(gt=param.gt, ge=param.ge)
    elif param.kind == "real":
        annotation = float
        kwargs.update(gt=param.gt, ge=param.ge, allow_inf_nan=False)
    elif param.kind == "option":
        annotation = Literal[param.options]
    elif param.kind == "bool":
        annotation = bool
    elif param.kind == "seed":
        annotation = int | None  # a RandomState instance cannot be written in YAML
    elif param.kind == "positive_or_none":
        annotation = float | None
        kwargs.update(gt=param.gt, allow_inf_nan=False)
    elif param.kind == "array":
        element = {1: float, 2: list[float]}.get(param.ndim, Any)
        annotation = list[element] | None if param.ndim else Any
    else:
        raise TypeError(f"no job field for the {param.kind} parameter {param.name}")
    return annotation, Field(param.default, **kwargs)


class _ModelBase(_Block):
    kind: Literal[tuple(MODEL_KINDS)] = "gaussian"

    @model_validator(mode="after")
    def _only_the_kinds_parameters(self) -> _ModelBase:
        estimator = MODEL_KINDS[self.kind]
        for param in PARAMS:
            if estimator in param.estimators or param.name in _OUTSIDE_MODEL_BLOCK:
                continue
            if getattr(self, param.name) != param.default:
                raise ValueError(
                    f"{param.name} is a parameter of "
                    f"{' and '.join(param.estimators)}, not of kind {self.kind!r} "
                    f"({estimator}); remove it or set kind"
                )
        return self


ModelConfig = create_model(
    "ModelConfig",
    __base__=_ModelBase,
    __module__=__name__,
    __doc__="""Every estimator parameter (same names and defaults), derived from the
    table :data:`daskgmm._params.PARAMS`, except ``scale`` and ``log1p``, which the
    ``features`` block holds; ``kind`` (``gaussian``: GaussianMixture,
    ``bayesian``: BayesianGaussianMixture) says which estimator, and the other's
    parameters must stay at their defaults.""",
    **{
        param.name: _job_field(param)
        for param in PARAMS
        if param.name not in _OUTSIDE_MODEL_BLOCK
    },
)


class TLSConfig(_Block):
    """Certificates for a ``tls://`` scheduler."""

    ca_file: str
    cert: str
    key: str


class ClusterConfig(_Block):
    """Which dask cluster runs the job: absent/empty = an embedded LocalCluster."""

    address: str | None = None
    scheduler_file: str | None = None
    tls: TLSConfig | None = None
    n_workers: int | None = Field(None, gt=0)
    threads_per_worker: int | None = Field(None, gt=0)
    memory_limit: str | None = None
    timeout: float = Field(10.0, gt=0)

    @field_validator("address")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("tcp://", "tls://")):
            raise ValueError("the address must start with tcp:// or tls://")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> ClusterConfig:
        if self.address and self.scheduler_file:
            raise ValueError("give either address or scheduler_file, not both")
        remote = self.address or self.scheduler_file
        local_only = (self.n_workers, self.threads_per_worker, self.memory_limit)
        if remote and any(v is not None for v in local_only):
            raise ValueError(
                "n_workers, threads_per_worker and memory_limit size the embedded "
                "cluster; they do not apply to a remote scheduler"
            )
        if self.address and self.address.startswith("tls://") and self.tls is None:
            raise ValueError("a tls:// address needs the tls certificates")
        return self

    @property
    def embedded(self) -> bool:
        """Whether the job starts its own LocalCluster."""
        return not (self.address or self.scheduler_file)


class OutputConfig(_Block):
    """What the job writes, and where."""

    directory: str
    model: bool = True
    labels: bool = True
    probabilities: bool = False
    log_densities: bool = False
    # The rows with each missing value (NaN, a Parquet null) filled in by the model:
    # its conditional expectation; and draws from its conditional distribution.
    imputed: bool = False
    imputation_draws: int = Field(default=0, ge=0, le=100)
    report: bool = False
    format: Literal["zarr", "parquet"] = "zarr"
    # Zarr outputs: zarr's default Zstandard, or 'fast' (raw floats, LZ4 labels).
    zarr_compression: Literal["default", "fast"] = "default"
    overwrite: bool = False
    checkpoint: bool = False
    # With report: also run k-means on every row and compare (soft vs hard).
    kmeans_comparison: bool = True


class FeaturesConfig(_Block):
    """Which columns of the data are the features, and how they are preprocessed.

    ``columns`` selects (and orders) Parquet columns; ``data.columns`` is accepted
    as its older spelling, but not both. ``scale`` and ``log1p`` are the
    ``GaussianMixture`` parameters of the same names: the model is fitted on the
    scaled features and reported, saved and applied in the original units.
    ``log1p`` lists columns by name (from ``columns``) or by index among the
    features.
    """

    columns: list[str] | None = None
    scale: ScaleMethod = BY_NAME["scale"].default
    log1p: list[StrictInt | str] = Field(default_factory=list)

    @field_validator("columns")
    @classmethod
    def _column_list(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("a non-empty list of distinct column names")
        return value

    @field_validator("log1p")
    @classmethod
    def _log1p_list(cls, value: list[int | str]) -> list[int | str]:
        if len(set(value)) != len(value):
            raise ValueError("a column is listed twice")
        if any(isinstance(v, int) and v < 0 for v in value):
            raise ValueError("column indices must be >= 0")
        return value


class SelectConfig(_Block):
    """Candidates of a model-selection sweep (``pipeline: select_model``)."""

    n_components: list[int] = Field(default_factory=lambda: list(range(1, 11)))
    covariance_types: list[CovarianceType] = Field(default_factory=lambda: ["full"])
    criterion: Literal["bic", "aic"] = "bic"
    # Also a BayesianGaussianMixture of max(n_components) per covariance type, in
    # the same passes: how many components it keeps, beside the BIC/AIC sweep.
    bayesian: bool = False

    @field_validator("n_components")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(k < 1 for k in value):
            raise ValueError("a non-empty list of numbers of components >= 1")
        return value


class SegmentConfig(_Block):
    """How the pixels of an image are segmented (``pipeline: segment_image``).

    See :class:`daskgmm.segment.PixelFeatures` for the meaning of each feature set.
    """

    features: Literal["rgb", "lab", "rgb+xy", "lab+xy"] = "rgb"
    xy_weight: float = Field(1.0, gt=0)
    channels: list[int] | None = None
    scale: Literal["dtype", "range"] = "dtype"
    nodata: float | None = None
    mask: str | None = None
    fit_fraction: float = Field(1.0, gt=0, le=1)
    preview_size: int = Field(2000, ge=16)

    @field_validator("channels")
    @classmethod
    def _channel_list(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (
            not value or min(value) < 0 or len(set(value)) != len(value)
        ):
            raise ValueError("a non-empty list of distinct channel indices >= 0")
        return value


# Output and data options the segment_image pipeline does not use, with the reason.
_NOT_FOR_SEGMENT = {
    ("output", "format"): "labels are written as a (height, width) Zarr image",
    ("output", "log_densities"): "not written for images",
    ("output", "report"): "the pipeline writes preview.png, uncertainty.png and "
    "summary.json instead",
    ("output", "checkpoint"): "segment_image jobs are not checkpointed",
    ("data", "sample_fraction"): "use segment.fit_fraction",
    ("data", "rows_per_chunk"): "images are read in strips of whole rows",
}


class JobConfig(_Block):
    """A whole job."""

    pipeline: Literal[tuple(PIPELINES)] = "cluster"
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    output: OutputConfig
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    select: SelectConfig | None = None
    segment: SegmentConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _feature_columns(cls, raw: Any) -> Any:
        """``features.columns`` is read by the data source as ``data.columns`` (its
        older spelling, still accepted); giving both is an error."""
        if not isinstance(raw, dict):
            return raw
        data, features = raw.get("data"), raw.get("features")
        if not isinstance(data, dict) or not isinstance(features, dict):
            return raw
        if features.get("columns") is None:
            return raw
        if data.get("columns") is not None:
            raise ValueError(
                "give the feature columns once, in features.columns (data.columns "
                "is its older spelling)"
            )
        return {**raw, "data": {**data, "columns": features["columns"]}}

    @model_validator(mode="after")
    def _features_block(self) -> JobConfig:
        features, columns = self.features, self.data.columns
        if features.columns is not None and self.data.source != "parquet":
            raise ValueError(
                f"features.columns selects Parquet columns; data.source "
                f"{self.data.source} has no named columns"
            )
        names = [c for c in features.log1p if isinstance(c, str)]
        if names and columns is None:
            raise ValueError(
                f"features.log1p names the columns {names}: list the feature columns "
                "in features.columns, or give indices"
            )
        unknown = [c for c in names if c not in columns] if names else []
        if unknown:
            raise ValueError(
                f"features.log1p names {unknown}, which are not in features.columns "
                f"{columns}"
            )
        too_large = [
            c for c in features.log1p if isinstance(c, int) and columns is not None
        ]
        too_large = [c for c in too_large if c >= len(columns)]
        if too_large:
            raise ValueError(
                f"features.log1p column {too_large[0]} is out of range for the "
                f"{len(columns)} feature columns"
            )
        types = [self.model.covariance_type]
        if self.pipeline == "select_model":
            types = (self.select or SelectConfig()).covariance_types
        if features.scale != "none" and "spherical" in types:
            raise ValueError(
                f"features.scale {features.scale} cannot be used with covariance "
                "type spherical: scaling the features by different factors makes "
                "spherical components non-spherical; use diag, or features.scale: none"
            )
        return self

    @model_validator(mode="after")
    def _select_block(self) -> JobConfig:
        if self.select is not None and self.pipeline != "select_model":
            raise ValueError("the select block is for pipeline: select_model")
        return self

    @model_validator(mode="after")
    def _segment_block(self) -> JobConfig:
        if self.pipeline != "segment_image":
            if self.segment is not None:
                raise ValueError("the segment block is for pipeline: segment_image")
            if self.data.source == "sample_image":
                raise ValueError(
                    "data.source sample_image is read by pipeline: segment_image only"
                )
            return self
        if self.data.source not in ("image", "sample_image"):
            raise ValueError(
                "pipeline segment_image reads an image: data.source image (with a "
                "path) or sample_image (with a name)"
            )
        for (block, key), why in _NOT_FOR_SEGMENT.items():
            part = getattr(self, block)
            if getattr(part, key) != type(part).model_fields[key].default:
                raise ValueError(f"{block}.{key} is not used by segment_image: {why}")
        return self

    @model_validator(mode="after")
    def _checkpoint_supported(self) -> JobConfig:
        if self.output.checkpoint and self.model.kind == "bayesian":
            raise ValueError(
                "output.checkpoint is not kept for model.kind: bayesian; remove it"
            )
        if self.model.kind == "bayesian" and self.pipeline == "select_model":
            raise ValueError(
                "model.kind: bayesian is for the cluster and segment_image pipelines; "
                "a sweep adds its Bayesian candidate with select.bayesian: true"
            )
        if self.output.checkpoint and not PIPELINES[self.pipeline].checkpointed:
            raise ValueError(
                f"output.checkpoint is not used by pipeline: {self.pipeline}; "
                "checkpointed pipelines: "
                + ", ".join(n for n, p in PIPELINES.items() if p.checkpointed)
            )
        return self


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = _path(item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (not allowed here)"
            key = item["loc"][-1] if len(item["loc"]) == 2 else None
            if item["loc"][0] == "model" and key in _OUTSIDE_MODEL_BLOCK:
                message += f"; set it in {_OUTSIDE_MODEL_BLOCK[key]}"
        elif item["type"] == "missing":
            message = "required key missing"
        lines.append(f"{path}: {message}")
    return "; ".join(lines)


def _path(parts: tuple | list) -> str:
    """A field path as the messages write it: ``data.filters[0]``, ``model.tol``."""
    text = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one YAML mapping; the message names its field path."""

    def __init__(self, path: str, lines: tuple[int, int]) -> None:
        self.path, self.lines = path, lines
        super().__init__(
            f"{path}: duplicate key (lines {lines[0]} and {lines[1]}); keep one"
        )


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (the same safe tags) that refuses a key given twice in one
    mapping, at any depth, instead of keeping the last one.

    Keys merged in with ``<<: *anchor`` may be overridden, as YAML allows.
    """

    _root: yaml.Node | None = None

    def get_single_node(self) -> yaml.Node | None:
        self._root = super().get_single_node()
        return self._root

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    where = _node_path(self._root, node) or []
                    raise DuplicateKeyError(_path([*where, key]), (first, line))
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _node_path(root: yaml.Node | None, target: yaml.Node) -> list | None:
    """Keys and list indices from ``root`` down to ``target`` (None: not found)."""
    stack: list[tuple[yaml.Node, list]] = [(root, [])] if root is not None else []
    visited: set[int] = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in visited:  # an alias: the node was reached before
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                stack.append((value_node, [*path, key_node.value]))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                stack.append((item, [*path, index]))
    return None


def load_yaml(text: str) -> Any:
    """YAML text read like ``yaml.safe_load``, except that a duplicate key is an error.

    Raises
    ------
    yaml.YAMLError
        Invalid YAML; :class:`DuplicateKeyError` for a key given twice.
    """
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: {problem}"


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides to a raw config mapping (a new copy).

    Values are read as YAML (numbers, booleans, lists, null; ``""`` is the empty
    string).

    Raises
    ------
    ConfigError
        An override without ``=``, with a value that is not valid YAML, or one that
        walks into a non-mapping.
    """
    result = yaml.safe_load(yaml.safe_dump(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        try:
            value = load_yaml(text) if text != "" else ""
        except DuplicateKeyError as exc:
            raise ConfigError(f"--set {item!r}: {key}.{exc}") from None
        except yaml.YAMLError as exc:
            problem = _yaml_problem(exc).partition(": ")[2]
            raise ConfigError(
                f"--set {item!r}: {key}: the value is not valid YAML ({problem}); "
                "quote it to give a string"
            ) from None
        node = result
        for depth, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {item!r}: {where} is {node!r}, not a mapping")
        node[parts[-1]] = value
    return result


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from a file, read with :func:`load_yaml` (safe, no duplicates)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = load_yaml(path.read_text())
    except DuplicateKeyError as exc:
        raise ConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML{_yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a job config must be a YAML mapping")
    return raw


def validate(raw: dict) -> JobConfig:
    """A validated job config from a raw mapping.

    Raises
    ------
    ConfigError
        One line per problem, each with the field path.
    """
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def load_config(
    path: str | os.PathLike, overrides: list[str] | None = None
) -> JobConfig:
    """Read, override and validate a job file; relative paths resolve from its folder."""
    raw = apply_overrides(read_yaml(path), overrides or [])
    config = validate(raw)
    return resolve_paths(config, Path(path).resolve().parent)


def _resolve(value: str | None, base: Path) -> str | None:
    if value is None or "://" in value or os.path.isabs(value):
        return value
    return str((base / value).resolve())


def resolve_paths(config: JobConfig, base: Path) -> JobConfig:
    """The config with relative data/output/cluster paths made absolute from ``base``."""
    data = config.data.model_copy(update={"path": _resolve(config.data.path, base)})
    output = config.output.model_copy(
        update={"directory": _resolve(config.output.directory, base)}
    )
    cluster_updates: dict[str, Any] = {
        "scheduler_file": _resolve(config.cluster.scheduler_file, base)
    }
    if config.cluster.tls is not None:
        tls = config.cluster.tls
        cluster_updates["tls"] = tls.model_copy(
            update={
                "ca_file": _resolve(tls.ca_file, base),
                "cert": _resolve(tls.cert, base),
                "key": _resolve(tls.key, base),
            }
        )
    cluster = config.cluster.model_copy(update=cluster_updates)
    updates: dict[str, Any] = {"data": data, "output": output, "cluster": cluster}
    if config.segment is not None and config.segment.mask is not None:
        updates["segment"] = config.segment.model_copy(
            update={"mask": _resolve(config.segment.mask, base)}
        )
    return config.model_copy(update=updates)


def checkpoint_path(config: JobConfig) -> str:
    """Where a cluster job keeps its checkpoint: ``output.directory`` + ``.checkpoint``."""
    return config.output.directory + ".checkpoint"


def path_kind(path: str) -> str | None:
    """What a local path that is neither a regular file nor a directory is (e.g. 'a
    character device'); None for a file, a directory, a URL or a missing path."""
    if "://" in path:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = {
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISFIFO: "a named pipe",
        stat.S_ISSOCK: "a socket",
    }
    kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
    real = os.path.realpath(path)
    return f"{kind} ({real})" if real != os.path.abspath(path) else kind


def check_output_parent(path: str, field: str) -> None:
    """Refuse an output path below a regular file (``mkdir`` would say 'File exists').

    Raises
    ------
    ConfigError
        Naming ``field`` and the file in the way.
    """
    if "://" in path:
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise ConfigError(
            f"{field} {path}: {parent} is a file, not a directory; choose another "
            "output path"
        )


def preflight(config: JobConfig, *, resume: bool = False) -> None:
    """Checks of a job against the file system, before any work starts.

    A mistake found here is a configuration or argument error (exit 2), not a failed
    run: ``--resume`` without a checkpoint to resume from, an output directory below
    a regular file, a data path that is a device.

    Raises
    ------
    ConfigError
        The message names the field path or the option.
    """
    if resume:
        if not PIPELINES[config.pipeline].checkpointed:
            raise ConfigError(
                f"--resume: {config.pipeline} jobs are not checkpointed; run without "
                "--resume"
            )
        if not config.output.checkpoint:
            raise ConfigError("--resume needs output.checkpoint: true in the job file")
        path = checkpoint_path(config)
        if not os.path.isfile(os.path.join(path, "state.json")):
            raise ConfigError(
                f"--resume: no checkpoint at {path}; run the job without --resume"
            )
    if config.data.path is not None:
        kind = path_kind(config.data.path)
        if kind is not None:
            raise ConfigError(
                f"data.path {config.data.path} is {kind}, not a regular file or "
                "directory"
            )
    check_output_parent(config.output.directory, "output.directory")
