"""The ``cluster`` job: a table or array in; model, predictions and metrics out."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np

from daskgmm import GaussianMixture
from daskgmm._em import RunResult
from daskgmm.checkpoint import Checkpoint, fingerprint
from daskgmm.config import JobConfig
from daskgmm.io import atomic_path
from daskgmm.jobs import (
    JobError,
    Timer,
    check_output,
    connect,
    fit_metrics,
    fit_rows,
    kmeans_comparison,
    model_params,
    open_data,
    sample_rows,
    write_json,
    write_predictions,
)

logger = logging.getLogger("daskgmm")

# Rows of the data sample drawn for the report's pictures.
REPORT_ROWS = 20_000


def run(
    config: JobConfig,
    *,
    resume: bool = False,
    progress: Callable[[int, RunResult], None] | None = None,
) -> dict:
    """Fit the model of ``config.model`` on ``config.data`` and write ``config.output``.

    Everything is written into a temporary directory renamed to
    ``output.directory`` at the end, so a failed job leaves no output behind.

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` plus the paths of the outputs.
    """
    if resume and not config.output.checkpoint:
        raise JobError("--resume needs output.checkpoint: true in the job file")
    out = config.output
    check_output(out)
    data = open_data(config.data)
    logger.info("data: %s, %s features", data.description, data.X.shape[1])
    with (
        connect(config.cluster),
        atomic_path(out.directory, overwrite=out.overwrite) as tmp,
    ):
        os.makedirs(tmp)
        seed = config.model.random_state
        X_fit = fit_rows(data.X, config.data.sample_fraction, seed)
        w_fit = fit_rows(data.weights, config.data.sample_fraction, seed)
        checkpoint = _checkpoint(config) if out.checkpoint else None
        with Timer() as timer:
            model = _fit(config, X_fit, w_fit, checkpoint, resume, progress)
        if data.feature_names is not None:
            model.feature_names_in_ = np.asarray(data.feature_names, dtype=object)
        metrics = fit_metrics(model, data.X, timer.seconds, data.weights)
        paths = write_predictions(model, data, out, tmp)
        if out.model:
            model.save(os.path.join(tmp, "model"))
            paths["model"] = os.path.join(out.directory, "model")
        comparison = kmeans_comparison(model, data.X, out, config.model.random_state)
        if comparison is not None:
            metrics["kmeans"] = comparison
        write_json(os.path.join(tmp, "metrics.json"), metrics)
        if out.report:
            from daskgmm.report import write_report

            sample = sample_rows(data.X, REPORT_ROWS, config.model.random_state)
            write_report(
                model,
                sample,
                os.path.join(tmp, "report"),
                metrics={k: v for k, v in metrics.items() if k != "kmeans"},
                feature_names=data.feature_names,
                comparison=comparison,
            )
            paths["report"] = os.path.join(tmp, "report", "report.md")
    if checkpoint is not None:
        checkpoint.remove()
    logger.info(
        "done: %d iterations, lower bound %.6g, BIC %.6g; output in %s",
        metrics["n_iter"],
        metrics["lower_bound"],
        metrics["bic"],
        out.directory,
    )
    final = {k: v.replace(tmp, out.directory) for k, v in paths.items()}
    return {**metrics, "outputs": final}


def _checkpoint(config: JobConfig) -> Checkpoint:
    # Settings that do not change the numbers (logging, persist) stay out of it.
    numeric = config.model.model_dump(
        exclude={"verbose", "verbose_interval", "persist"}
    )
    job = fingerprint(
        config.pipeline,
        config.data.model_dump(),
        numeric,
        config.features.model_dump(),
    )
    return Checkpoint(config.output.directory + ".checkpoint", job)


def _fit(
    config: JobConfig,
    X,
    weights,
    checkpoint: Checkpoint | None,
    resume: bool,
    progress: Callable[[int, RunResult], None] | None = None,
) -> GaussianMixture:
    """Fit, writing a checkpoint after every iteration; resume from it if asked.

    The checkpoint holds every restart's EM state (parameters in the space the fit
    runs in, iteration count, lower bounds); a resumed fit redoes the first pass
    (moments, initialisation sample) and continues every run exactly where it was,
    so it ends with the same model as an uninterrupted fit.
    """
    if checkpoint is not None and not resume:
        checkpoint.remove()
    return GaussianMixture(**model_params(config)).fit(
        X,
        sample_weight=weights,
        iteration_callback=progress,
        checkpoint=checkpoint,
        resume=resume,
    )
