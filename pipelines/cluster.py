"""The ``cluster`` job: a table or array in; model, predictions and metrics out."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from daskgmm._em import RunResult
from daskgmm.config import JobConfig
from daskgmm.jobs import (
    checkpointed,
    fit_metrics,
    job,
    model_estimator,
    model_params,
)

logger = logging.getLogger("daskgmm")


def run(
    config: JobConfig,
    *,
    resume: bool = False,
    progress: Callable[[int, RunResult], None] | None = None,
) -> dict:
    """Fit the model of ``config.model`` on ``config.data``; write the model, the
    predictions, ``metrics.json`` and the report (:func:`daskgmm.jobs.job`).

    With ``output.checkpoint`` every restart's EM state is written after each
    iteration and ``resume`` continues from it, ending with the model of an
    uninterrupted fit (:func:`daskgmm.jobs.checkpointed`).

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` plus the paths of the outputs.
    """
    with checkpointed(config, resume) as checkpoint, job(config) as ctx:
        X, weights = ctx.fit_rows()
        with ctx.timed("fit"):
            model = model_estimator(config, **model_params(config)).fit(
                X,
                sample_weight=weights,
                iteration_callback=progress,
                checkpoint=checkpoint,
                resume=resume,
            )
        if ctx.data.feature_names is not None:
            model.feature_names_in_ = np.asarray(ctx.data.feature_names, dtype=object)
        metrics = fit_metrics(model, ctx.data.X, ctx.timings["fit"], ctx.data.weights)
        ctx.write_fit_outputs(model, metrics)
    logger.info(
        "done: %d iterations, lower bound %.6g, BIC %.6g; output in %s",
        metrics["n_iter"],
        metrics["lower_bound"],
        metrics["bic"],
        config.output.directory,
    )
    return ctx.result(metrics)
