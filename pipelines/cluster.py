"""The ``cluster`` job: a table or array in; model, predictions and metrics out."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from daskgmm import GaussianMixture
from daskgmm._em import RunResult
from daskgmm.config import JobConfig
from daskgmm.jobs import (
    JobError,
    fit_metrics,
    fit_rows,
    job,
    job_checkpoint,
    model_params,
)

logger = logging.getLogger("daskgmm")


def run(
    config: JobConfig,
    *,
    resume: bool = False,
    progress: Callable[[int, RunResult], None] | None = None,
) -> dict:
    """Fit the model of ``config.model`` on ``config.data`` and write ``config.output``.

    Everything is written into a temporary directory renamed to
    ``output.directory`` at the end, so a failed job leaves no output behind. With
    ``output.checkpoint`` every restart's EM state is written after each iteration
    (in ``<output.directory>.checkpoint``) and ``resume`` continues from it: the
    first pass (moments, initialisation sample) is made again and every run goes on
    where it was, ending with the model of an uninterrupted fit.

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` plus the paths of the outputs.
    """
    checkpoint = job_checkpoint(config)
    if resume and checkpoint is None:
        raise JobError("--resume needs output.checkpoint: true in the job file")
    with job(config) as ctx:
        data = ctx.data
        fraction = config.data.sample_fraction
        if checkpoint is not None and not resume:
            checkpoint.remove()
        with ctx.timed("fit"):
            model = GaussianMixture(**model_params(config)).fit(
                fit_rows(data.X, fraction, ctx.seed),
                sample_weight=fit_rows(data.weights, fraction, ctx.seed),
                iteration_callback=progress,
                checkpoint=checkpoint,
                resume=resume,
            )
        if data.feature_names is not None:
            model.feature_names_in_ = np.asarray(data.feature_names, dtype=object)
        metrics = fit_metrics(model, data.X, ctx.timings["fit"], data.weights)
        ctx.write_fit_outputs(model, metrics)
    if checkpoint is not None:
        checkpoint.remove()
    logger.info(
        "done: %d iterations, lower bound %.6g, BIC %.6g; output in %s",
        metrics["n_iter"],
        metrics["lower_bound"],
        metrics["bic"],
        config.output.directory,
    )
    return ctx.result(metrics)
