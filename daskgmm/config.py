"""Job configuration: a pydantic schema per block, YAML read with ``yaml.safe_load``.

A job file has five blocks — ``pipeline``, ``data``, ``model``, ``cluster``,
``output`` — (plus ``select`` or ``segment`` for the pipelines that read them, and
an optional ``features`` block: which columns, scaled how), and
unknown keys anywhere are errors. Validation errors come out as one
line per problem with the field path, e.g. ``model.n_components: Input should be
greater than 0``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from daskgmm._params import BY_NAME, PARAMS, Param

PIPELINES = ("cluster", "segment_image", "select_model")
# Option types shared with the estimator's parameter table.
CovarianceType = Literal[BY_NAME["covariance_type"].options]
ScaleMethod = Literal[BY_NAME["scale"].options]


class ConfigError(ValueError):
    """A job configuration that cannot be used; the message names the field path."""


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    filters: list[tuple[str, str, Any]] | None = None
    rows_per_chunk: int | None = Field(None, gt=0)
    sample_fraction: float | None = Field(None, gt=0, le=1)
    storage_options: dict[str, Any] | None = None
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
    elif param.kind == "array":
        element = {1: float, 2: list[float]}.get(param.ndim, Any)
        annotation = list[element] | None
    else:
        raise TypeError(f"no job field for the {param.kind} parameter {param.name}")
    return annotation, Field(param.default, **kwargs)


ModelConfig = create_model(
    "ModelConfig",
    __base__=_Block,
    __module__=__name__,
    __doc__="""Every ``GaussianMixture`` parameter (same names and defaults), derived
    from the table :data:`daskgmm._params.PARAMS`, except ``scale`` and ``log1p``,
    which the ``features`` block holds.""",
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

    pipeline: Literal["cluster", "segment_image", "select_model"] = "cluster"
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
        if self.output.checkpoint and self.pipeline == "select_model":
            raise ValueError(
                "output.checkpoint is for pipeline: cluster (a sweep is not "
                "checkpointed; it costs about one fit)"
            )
        return self


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
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


def _coerce(text: str) -> Any:
    """A ``--set`` value as YAML would read it (numbers, booleans, lists, null)."""
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides to a raw config mapping (a new copy).

    Raises
    ------
    ConfigError
        An override without ``=`` or one that walks into a non-mapping.
    """
    result = yaml.safe_load(yaml.safe_dump(raw))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a mapping")
        node[parts[-1]] = _coerce(value)
    return result


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from a file, read with ``yaml.safe_load``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
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
