"""The ``cluster`` job: a table or array in; model, predictions and metrics out."""

from __future__ import annotations

import logging
import os

import numpy as np

from daskgmm import GaussianMixture
from daskgmm.config import JobConfig
from daskgmm.io import atomic_path
from daskgmm.jobs import (
    Timer,
    check_output,
    connect,
    fit_metrics,
    fit_rows,
    model_params,
    open_data,
    sample_rows,
    write_json,
    write_predictions,
)

logger = logging.getLogger("daskgmm")

# Rows of the data sample drawn for the report's pictures.
REPORT_ROWS = 20_000


def run(config: JobConfig, *, resume: bool = False) -> dict:
    """Fit the model of ``config.model`` on ``config.data`` and write ``config.output``.

    Everything is written into a temporary directory renamed to
    ``output.directory`` at the end, so a failed job leaves no output behind.

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` plus the paths of the outputs.
    """
    if resume:
        raise NotImplementedError(
            "--resume needs output.checkpoint (not available yet)"
        )
    out = config.output
    check_output(out)
    data = open_data(config.data)
    logger.info("data: %s, %s features", data.description, data.X.shape[1])
    with (
        connect(config.cluster),
        atomic_path(out.directory, overwrite=out.overwrite) as tmp,
    ):
        os.makedirs(tmp)
        model = GaussianMixture(**model_params(config))
        X_fit = fit_rows(data.X, config.data.sample_fraction, config.model.random_state)
        with Timer() as timer:
            model.fit(X_fit)
        if data.feature_names is not None:
            model.feature_names_in_ = np.asarray(data.feature_names, dtype=object)
        metrics = fit_metrics(model, data.X, timer.seconds)
        paths = write_predictions(model, data, out, tmp)
        if out.model:
            model.save(os.path.join(tmp, "model"))
            paths["model"] = os.path.join(out.directory, "model")
        write_json(os.path.join(tmp, "metrics.json"), metrics)
        if out.report:
            from daskgmm.report import write_report

            sample = sample_rows(data.X, REPORT_ROWS, config.model.random_state)
            write_report(
                model,
                sample,
                os.path.join(tmp, "report"),
                metrics=metrics,
                feature_names=data.feature_names,
            )
            paths["report"] = os.path.join(tmp, "report", "report.md")
    logger.info(
        "done: %d iterations, lower bound %.6g, BIC %.6g; output in %s",
        metrics["n_iter"],
        metrics["lower_bound"],
        metrics["bic"],
        out.directory,
    )
    final = {k: v.replace(tmp, out.directory) for k, v in paths.items()}
    return {**metrics, "outputs": final}
