"""Building blocks of config-driven jobs: the cluster, the data, the outputs.

Pipelines (``pipelines/``) compose these; the command line (``daskgmm.cli``) maps
their exceptions to exit codes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np

from daskgmm import _chunks as C
from daskgmm._params import MODEL_KINDS, params_of
from daskgmm.config import (
    ClusterConfig,
    ConfigError,
    DataConfig,
    JobConfig,
    OutputConfig,
    checkpoint_path,
)
from daskgmm.fitted import (
    EFFECTIVE_WEIGHT,
    FittedMixture,
    as_fitted,
    information_criteria,
    n_parameters,
    score_totals,
)

logger = logging.getLogger("daskgmm")


class JobError(RuntimeError):
    """A job that failed at run time (exit code 1); the message is one line."""


###############################################################################
# The cluster


def _security(cfg: ClusterConfig) -> Any:
    if cfg.tls is None:
        return None
    from distributed.security import Security

    for name in ("ca_file", "cert", "key"):
        path = getattr(cfg.tls, name)
        if not os.path.isfile(path):
            raise JobError(f"cluster.tls.{name}: file not found: {path}")
    return Security(
        tls_ca_file=cfg.tls.ca_file,
        tls_client_cert=cfg.tls.cert,
        tls_client_key=cfg.tls.key,
        require_encryption=True,
    )


# glibc's trim threshold for the embedded cluster's workers (see
# worker_allocator_settings), and the smallest worker memory it is used with.
WORKER_TRIM_THRESHOLD = 256 * 2**20
_TRIM_MIN_WORKER_MEMORY = 2 * 2**30


def worker_allocator_settings(memory_limit: str | None, n_workers: int) -> dict:
    """Dask config that lets the embedded cluster's workers keep freed memory.

    distributed starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536``
    (``distributed.nanny.pre-spawn-environ``) so that glibc returns freed memory to
    the system at once; every pass then touches fresh pages again, and freshly
    touched memory is slow (page faults): measured on 2 workers x 1 thread, 2M x 3
    rows in memory, K=8, 0.19 s per EM iteration against 0.09 s with a 1 GiB
    threshold. Workers with at least 2 GiB each keep up to
    ``WORKER_TRIM_THRESHOLD`` of freed memory; smaller ones keep distributed's
    setting, whose memory accounting they need more than the speed.
    """
    from dask.utils import parse_bytes

    if memory_limit in (None, "auto"):
        import psutil

        per_worker = psutil.virtual_memory().total / max(n_workers, 1)
    else:
        per_worker = parse_bytes(memory_limit)
    if per_worker < _TRIM_MIN_WORKER_MEMORY:
        return {}
    return {
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": str(
            WORKER_TRIM_THRESHOLD
        )
    }


_PRE_SPAWN = "distributed.nanny.pre-spawn-environ"


@contextlib.contextmanager
def _spawn_environ(settings: dict) -> Iterator[None]:
    """This process's environment holds the pre-spawn ``settings`` while workers
    are spawned, where it holds distributed's default for them or nothing.

    distributed lets the environment override ``pre-spawn-environ`` and its nanny
    writes the values it spawned with into this process's environment for good: after
    any cluster of worker processes, ``MALLOC_TRIM_THRESHOLD_=65536`` would win over
    the embedded cluster's setting. A value the user exported (another than
    distributed's default) is kept.
    """
    defaults = dask.config.get(_PRE_SPAWN, default={}) or {}
    saved: dict[str, str | None] = {}
    for key, value in settings.items():
        if not key.startswith(_PRE_SPAWN + "."):
            continue
        var = key[len(_PRE_SPAWN) + 1 :]
        current = os.environ.get(var)
        default = defaults.get(var)
        if current is None or (default is not None and current == str(default)):
            saved[var] = current
            os.environ[var] = str(value)
    try:
        yield
    finally:
        for var, current in saved.items():
            if current is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = current


@contextlib.contextmanager
def connect(cfg: ClusterConfig) -> Iterator[Any]:
    """A ``distributed.Client`` for the job: embedded LocalCluster, address or file.

    The embedded cluster binds to 127.0.0.1, one single-threaded worker per core by
    default, and is closed when the block ends. A remote scheduler that cannot be
    reached within ``cfg.timeout`` seconds raises :class:`JobError`.
    """
    from distributed import Client, LocalCluster

    if cfg.embedded:
        n_workers = cfg.n_workers or os.cpu_count() or 1
        settings = worker_allocator_settings(cfg.memory_limit, n_workers)
        with _spawn_environ(settings), dask.config.set(settings):
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=cfg.threads_per_worker or 1,
                memory_limit=cfg.memory_limit or "auto",
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                # A failing task's worker traceback ("Compute Failed" and 6 lines)
                # would come before the job's one-line error; with --debug it shows.
                silence_logs=logging.WARNING
                if logger.isEnabledFor(logging.DEBUG)
                else logging.CRITICAL,
            )
        with cluster, Client(cluster) as client:
            logger.info(
                "embedded dask cluster: %d workers; dashboard %s",
                n_workers,
                cluster.dashboard_link,
            )
            yield client
        return
    target = cfg.address or cfg.scheduler_file
    try:
        if cfg.address:
            client = Client(cfg.address, timeout=cfg.timeout, security=_security(cfg))
        else:
            if not os.path.isfile(cfg.scheduler_file):
                raise JobError(
                    f"cluster.scheduler_file: file not found: {cfg.scheduler_file}"
                )
            client = Client(scheduler_file=cfg.scheduler_file, timeout=cfg.timeout)
    except (OSError, TimeoutError) as exc:
        raise JobError(
            f"cannot reach the dask scheduler at {target} within {cfg.timeout:g} s "
            f"({type(exc).__name__}); check cluster.address and that it is running"
        ) from None
    with client:
        logger.info("connected to %s; dashboard %s", target, client.dashboard_link)
        yield client


###############################################################################
# The data


@dataclass
class JobData:
    """What a pipeline fits and predicts on.

    Attributes
    ----------
    X : dask array (n_samples, n_features)
    passthrough : dict of name to 1-D dask array aligned with X's rows
    feature_names : list of str or None
    description : str
        For logs and reports.
    """

    X: da.Array
    passthrough: dict[str, da.Array] = field(default_factory=dict)
    weights: da.Array | None = None
    feature_names: list[str] | None = None
    description: str = ""


def open_data(cfg: DataConfig) -> JobData:
    """Open the job's data source lazily."""
    from daskgmm import io

    if cfg.source == "synthetic":
        from daskgmm.datasets import make_gmm

        syn = cfg.synthetic
        X, _, _ = make_gmm(
            syn.n_samples,
            syn.n_features,
            syn.n_components,
            chunks=cfg.rows_per_chunk or C.SYNTHETIC_BLOCK_ROWS,
            covariance_type=syn.covariance_type,
            separation=syn.separation,
            random_state=syn.random_state,
        )
        return JobData(X, description=f"synthetic mixture, {syn.n_samples:,} rows")
    if not os.path.exists(cfg.path) and "://" not in cfg.path:
        raise JobError(f"data.path: not found: {cfg.path}")
    if cfg.source == "zarr":
        X = io.read_zarr(
            cfg.path,
            cfg.array,
            rows_per_chunk=cfg.rows_per_chunk,
            storage_options=cfg.storage_options,
            missing_chunks=cfg.missing_chunks,
        )
        return JobData(X, description=f"Zarr {cfg.path}")
    if cfg.source == "npy":
        return JobData(
            io.read_npy(cfg.path, rows_per_chunk=cfg.rows_per_chunk),
            description=f".npy {cfg.path}",
        )
    if cfg.source == "parquet":
        source = io.ParquetSource(
            cfg.path,
            cfg.columns,
            filters=[tuple(f) for f in cfg.filters] if cfg.filters else None,
            rows_per_chunk=cfg.rows_per_chunk,
        )
        _check_filter_columns(cfg, list(source.schema.names))
        ids = {name: source.column(name) for name in cfg.id_columns}
        weights = None
        if cfg.weight_column:
            weights = source.column(cfg.weight_column).astype(np.float64)
        return JobData(
            source.features(),
            ids,
            weights,
            list(source.columns),
            description=f"Parquet {cfg.path}",
        )
    image = io.read_image(cfg.path, array=cfg.array, missing_chunks=cfg.missing_chunks)
    return JobData(io.image_to_pixels(image), description=f"image {cfg.path}")


def _check_filter_columns(cfg: DataConfig, names: list[str]) -> None:
    """Every ``data.filters`` item names a column of the file (else pyarrow fails on
    the workers, after the cluster started)."""
    for i, item in enumerate(cfg.filters or []):
        if item[0] not in names:
            raise ConfigError(
                f"data.filters[{i}]: {cfg.path} has no column {item[0]!r} to filter "
                f"on; its columns are {names}"
            )


def _keep_fraction(
    block: np.ndarray, fraction: float, seed: int, block_info: dict | None = None
) -> np.ndarray:
    index = block_info[0]["chunk-location"][0]
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    return block[rng.random(block.shape[0]) < fraction]


def fit_rows(X: da.Array, fraction: float | None, seed: int | None) -> da.Array:
    """The rows to fit on: all, or a uniform Bernoulli sample of ``fraction``.

    The same ``seed`` keeps the same rows of any array with the same row blocks
    (features and their weights).
    """
    if X is None or fraction is None or fraction >= 1:
        return X
    return X.map_blocks(
        _keep_fraction,
        fraction,
        0 if seed is None else seed,
        chunks=((math.nan,) * X.numblocks[0], *X.chunks[1:]),
        dtype=X.dtype,
    )


###############################################################################
# Outputs


def check_output(cfg: OutputConfig) -> None:
    """Refuse an existing output directory unless ``overwrite`` is set, and a report
    without matplotlib, before any work is done."""
    if os.path.exists(cfg.directory) and not cfg.overwrite:
        raise FileExistsError(
            f"output.directory {cfg.directory} already exists; remove it or set "
            "output.overwrite: true"
        )
    if cfg.report:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise JobError(
                "output.report needs matplotlib: pip install 'daskgmm[plot]' "
                "(or set output.report: false)"
            )


def write_predictions(model: Any, data: JobData, cfg: OutputConfig, where: str) -> dict:
    """Labels / probabilities / log-densities of every row, in one pass over the data."""
    from daskgmm import io

    columns: dict[str, da.Array] = {}
    if cfg.labels:
        columns["label"] = model.predict(data.X)
    if cfg.probabilities:
        columns["proba"] = model.predict_proba(data.X)
    if cfg.log_densities:
        columns["log_density"] = model.score_samples(data.X)
    columns.update(imputed_columns(model, data, cfg))
    if not columns:
        return {}
    if cfg.format == "parquet":
        columns = parquet_columns(columns, data)
        clash = sorted(set(data.passthrough) & set(columns))
        if clash:
            raise JobError(
                f"data.id_columns {clash} have the names of prediction columns; "
                "rename them in the data or drop them from id_columns"
            )
        path = os.path.join(where, "predictions.parquet")
        io.write_parquet({**data.passthrough, **columns}, path)
    else:
        path = os.path.join(where, "predictions.zarr")
        compressors = "fast" if cfg.zarr_compression == "fast" else "auto"
        io.write_zarr(columns, path, compressors=compressors)
    return {"predictions": path}


def imputed_columns(model: Any, data: JobData, cfg: OutputConfig) -> dict:
    """``imputed`` (the conditional expectation of every missing value) and
    ``imputed_draw_<i>`` (draws, seeded by ``model.random_state`` and ``i``):
    (n_samples, n_features) arrays, when the job asks for them."""
    columns = {}
    if cfg.imputed:
        columns["imputed"] = model.impute(data.X)
    seed = 0 if model.random_state is None else int(model.random_state)
    for i in range(cfg.imputation_draws):
        draw = model.impute(data.X, draw=True, random_state=seed + i)
        columns[f"imputed_draw_{i}"] = draw
    return columns


def parquet_columns(columns: dict, data: JobData) -> dict:
    """The prediction columns of a Parquet output: imputed rows as one column per
    feature, ``<name>_<feature>`` (the feature's name, or its index)."""
    out = {}
    for name, array in columns.items():
        if not name.startswith("imputed"):
            out[name] = array
            continue
        features = data.feature_names or [str(j) for j in range(array.shape[1])]
        for j, feature in enumerate(features):
            out[f"{name}_{feature}"] = array[:, j]
    return out


def sample_rows(X: da.Array, size: int, seed: int | None) -> np.ndarray:
    """A uniform sample of about ``size`` rows (one pass), for reports."""
    from daskgmm._em import DataPasses
    from daskgmm._init import draw_sample

    n = None if math.isnan(X.shape[0]) else X.shape[0]
    result = draw_sample(DataPasses(X, 16), 0 if seed is None else seed, size, n)
    return np.asarray(result["rows"], dtype=np.float64)


def write_json(path: str, payload: dict) -> None:
    """JSON with NaN/inf written as null."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (np.floating, float)):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.bool_):
            return bool(value)
        return value

    with open(path, "w") as f:
        json.dump(clean(payload), f, indent=2)


def fit_metrics(
    model: Any, X: da.Array, seconds: float, weights: da.Array | None = None
) -> dict:
    """Lower bound, BIC, AIC (one pass), iterations and timings of a fitted model.

    With row weights the log-likelihood is weighted and the total weight is the
    sample size of BIC.
    """
    fm = as_fitted(model)
    totals = score_totals(
        fm,
        X,
        sample_weight=weights,
        nan_policy=model.nan_policy,
        split_every=model.split_every,
        kernel=model.kernel,
    )
    return {
        "n_samples": totals["n"],
        # Rows left out of the fit: NaN or inf (model.nan_policy: omit), every
        # value missing (marginalize).
        "n_omitted": int(fm.n_omitted),
        "total_weight": totals["w"],
        "n_features": int(fm.n_features),
        "n_components": int(fm.n_components),
        "covariance_type": fm.covariance_type,
        "lower_bound": fm.lower_bound,
        "mean_log_likelihood": totals["loglik"] / totals["w"],
        **information_criteria(totals, n_parameters(fm)),
        "n_parameters": n_parameters(fm),
        "n_iter": int(fm.n_iter),
        "converged": bool(fm.converged),
        **fit_timings(fm, seconds),
        **variational_metrics(fm),
        **missing_metrics(totals),
    }


def missing_metrics(totals: dict) -> dict:
    """With ``model.nan_policy: marginalize``: the share of missing values of every
    feature and of the rows with one (none otherwise)."""
    if "n_missing" not in totals or not totals["n"]:
        return {}
    n = totals["n"]
    return {
        "missing_values": {
            "share_per_feature": [m / n for m in totals["n_missing"]],
            "rows_with_missing": totals["n_incomplete"],
            "share_of_rows": totals["n_incomplete"] / n,
        }
    }


def variational_metrics(fm: FittedMixture) -> dict:
    """A Bayesian mixture's components by posterior weight, largest first, and how
    many the data need (weight above ``EFFECTIVE_WEIGHT``); none for EM."""
    if fm.variational is None:
        return {}
    order = np.argsort(fm.weights)[::-1]
    return {
        "kind": "bayesian",
        "weight_concentration_prior_type": fm.prior_type,
        "effective_components": int((fm.weights > EFFECTIVE_WEIGHT).sum()),
        "posterior_weights": [
            {
                "component": int(k),
                "weight": float(fm.weights[k]),
                "kept": bool(fm.weights[k] > EFFECTIVE_WEIGHT),
            }
            for k in order
        ],
    }


def fit_timings(fm: FittedMixture, seconds: float) -> dict:
    """The fit's ``seconds`` split into setup (reading or persisting the data,
    initialisation, compiling the kernel: ``compile_seconds`` of it) and EM passes,
    with the EM time per iteration (``seconds_per_iteration``)."""
    timings = fm.timings or {}
    em = timings.get("em_seconds", seconds)
    return {
        "fit_seconds": seconds,
        "setup_seconds": max(seconds - em, 0.0),
        "compile_seconds": timings.get("compile_seconds", 0.0),
        "em_seconds": em,
        "seconds_per_iteration": timings.get(
            "seconds_per_iteration", seconds / max(int(fm.n_iter), 1)
        ),
    }


def kmeans_comparison(
    model: Any, X: da.Array, cfg: OutputConfig, seed: int | None
) -> dict | None:
    """k-means on every row compared with the model (soft vs hard clustering), when
    the job writes a report with ``output.kmeans_comparison``; else None."""
    if not (cfg.report and cfg.kmeans_comparison):
        return None
    from daskgmm.compare import compare_with_kmeans

    comparison = compare_with_kmeans(model, X, random_state=seed)
    logger.info(
        "k-means comparison: adjusted Rand index %.4f, %.1f%% of rows uncertain",
        comparison["kmeans_adjusted_rand_index"],
        100 * comparison["uncertain_share"],
    )
    return comparison


def model_estimator(config: JobConfig, **params: Any) -> Any:
    """The unfitted estimator of ``model.kind`` with ``params``."""
    if config.model.kind == "bayesian":
        from daskgmm.bayesian import BayesianGaussianMixture

        return BayesianGaussianMixture(**params)
    from daskgmm.mixture import GaussianMixture

    return GaussianMixture(**params)


def model_params(config: JobConfig) -> dict:
    """The estimator's keyword arguments from the model and features blocks (those
    of ``model.kind``'s estimator: :func:`model_estimator`).

    ``features.log1p`` column names become indices among the feature columns (the
    data reaches the model as an unnamed array).
    """
    dumped = config.model.model_dump()
    estimator = MODEL_KINDS[dumped.pop("kind")]
    params = {p.name: dumped[p.name] for p in params_of(estimator) if p.name in dumped}
    for param in params_of(estimator):
        if param.kind == "array" and params.get(param.name) is not None:
            params[param.name] = np.asarray(params[param.name], dtype=np.float64)
    features = config.features
    columns = config.data.columns
    params["scale"] = features.scale
    params["log1p"] = [
        columns.index(c) if isinstance(c, str) else c for c in features.log1p
    ] or None
    return params


###############################################################################
# The job context: what every pipeline does around its own work


# Rows of the data sample drawn for a report's pictures.
REPORT_ROWS = 20_000


@dataclass
class JobContext:
    """One running job: its configuration, its data, the temporary directory its
    outputs go to (renamed to ``output.directory`` when the job ends well) and the
    writers every pipeline shares.

    Made by :func:`job`; pipelines write with :meth:`path`, :meth:`write_json`,
    :meth:`save_model` and :meth:`write_fit_outputs`, and return :meth:`result`.
    """

    config: JobConfig
    directory: str
    data: Any = None
    outputs: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        return self.config.model.random_state

    def fit_rows(self) -> tuple[Any, Any]:
        """The rows to fit on and their weights: all, or the uniform sample of
        ``data.sample_fraction`` (the same rows of both)."""
        fraction = self.config.data.sample_fraction
        return (
            fit_rows(self.data.X, fraction, self.seed),
            fit_rows(self.data.weights, fraction, self.seed),
        )

    def path(self, name: str) -> str:
        """Where an output called ``name`` is written (in the temporary directory)."""
        return os.path.join(self.directory, name)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record the wall-clock seconds of a block as ``timings[name]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - start

    def write_json(self, name: str, payload: dict) -> str:
        path = self.path(name)
        write_json(path, payload)
        return path

    def save_model(self, model: Any, extra: dict | None = None) -> None:
        """The model directory, when ``output.model`` asks for it."""
        if self.config.output.model:
            self.outputs["model"] = model.save(self.path("model"), extra=extra)

    def write_fit_outputs(
        self,
        model: Any,
        metrics: dict,
        *,
        json_extra: dict | None = None,
        report: dict | None = None,
    ) -> dict:
        """What a fitted model's job writes: predictions of every row, the model,
        the k-means comparison, ``metrics.json`` (with ``json_extra``) and the
        report (with ``report``'s extra keyword arguments); the metrics."""
        data, out = self.data, self.config.output
        self.outputs.update(write_predictions(model, data, out, self.directory))
        self.save_model(model)
        comparison = kmeans_comparison(model, data.X, out, self.seed)
        if comparison is not None:
            metrics["kmeans"] = comparison
        self.write_json("metrics.json", {**metrics, **(json_extra or {})})
        if out.report:
            from daskgmm.report import write_report

            hidden = ("kmeans", *(report or {}).pop("hide_metrics", ()))
            write_report(
                model,
                sample_rows(data.X, REPORT_ROWS, self.seed),
                self.path("report"),
                metrics={k: v for k, v in metrics.items() if k not in hidden},
                feature_names=data.feature_names,
                comparison=comparison,
                **(report or {}),
            )
            self.outputs["report"] = self.path(os.path.join("report", "report.md"))
        return metrics

    def result(self, summary: dict) -> dict:
        """``summary`` with the final paths of the outputs (as they will be after
        the temporary directory is renamed)."""
        final = self.config.output.directory
        outputs = {
            name: path.replace(self.directory, final)
            for name, path in self.outputs.items()
        }
        return {**summary, "outputs": outputs}


def job_inputs(config: JobConfig) -> dict[str, str | None]:
    """The paths a job reads, by field path (none of its outputs may touch them)."""
    segment = config.segment
    return {
        "data.path": config.data.path,
        "segment.mask": None if segment is None else segment.mask,
    }


@contextlib.contextmanager
def job(
    config: JobConfig, opener: Callable[[JobConfig], Any] | None = None
) -> Iterator[JobContext]:
    """The context of a job: outputs checked before any work, its data opened
    (``opener``, by default :func:`open_data` of ``config.data``), the cluster
    connected, a temporary output directory renamed to ``output.directory`` when
    the block ends well and removed otherwise."""
    out = config.output
    check_output(out)
    from daskgmm.io import atomic_path, check_output_apart

    check_output_apart(out.directory, job_inputs(config))
    data = opener(config) if opener is not None else open_data(config.data)
    if isinstance(data, JobData):
        logger.info("data: %s, %s features", data.description, data.X.shape[1])

    with (
        connect(config.cluster),
        atomic_path(out.directory, overwrite=out.overwrite) as tmp,
    ):
        os.makedirs(tmp)
        yield JobContext(config, tmp, data)


@contextlib.contextmanager
def checkpointed(config: JobConfig, resume: bool) -> Iterator[Any]:
    """The checkpoint of a checkpointed job (``output.checkpoint``), else None;
    cleared first unless the job resumes, removed when the block ends well.

    Its fingerprint holds every setting that changes the fitted numbers (the
    parameter table's ``numeric`` ones), so a checkpoint of another job is refused.
    """
    checkpoint = None
    if config.output.checkpoint:
        from daskgmm._params import names_where
        from daskgmm.checkpoint import Checkpoint, fingerprint

        blocks = [
            config.pipeline,
            config.data.model_dump(),
            config.model.model_dump(exclude=set(names_where(numeric=False))),
            config.features.model_dump(),
        ]
        if config.select is not None:
            blocks.append(config.select.model_dump())
        checkpoint = Checkpoint(checkpoint_path(config), fingerprint(*blocks))
    if resume and checkpoint is None:
        raise JobError("--resume needs output.checkpoint: true in the job file")
    if checkpoint is not None and not resume:
        checkpoint.remove()
    yield checkpoint
    if checkpoint is not None:
        checkpoint.remove()
