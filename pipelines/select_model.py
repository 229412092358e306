"""The ``select_model`` job: a sweep of candidate mixtures, chosen by BIC or AIC.

Every candidate (each number of components and covariance type of the ``select``
block, times ``model.n_init`` restarts) is advanced by the same pass over the data
(:func:`daskgmm.select_model`), so the sweep costs about one fit. The best model is
written like the ``cluster`` job's, with the table of candidates beside it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np

from daskgmm._em import RunResult
from daskgmm.config import JobConfig, SelectConfig
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
from daskgmm.selection import select_model

logger = logging.getLogger("daskgmm")

REPORT_ROWS = 20_000
# Model settings the sweep decides itself, or that do not apply to a sweep.
_SET_BY_SWEEP = ("n_components", "covariance_type", "warm_start")
_NOT_IN_SWEEP = ("weights_init", "means_init", "precisions_init")


def sweep_params(config: JobConfig) -> dict:
    """``select_model`` keyword arguments from the model block.

    Raises
    ------
    JobError
        ``*_init`` given: they depend on the number of components.
    """
    params = model_params(config)
    for name in _NOT_IN_SWEEP:
        if params.pop(name) is not None:
            raise JobError(
                f"model.{name} is not used by select_model (each candidate has its "
                "own number of components); remove it"
            )
    for name in _SET_BY_SWEEP:
        params.pop(name)
    return params


def run(
    config: JobConfig,
    *,
    resume: bool = False,
    progress: Callable[[int, RunResult], None] | None = None,
) -> dict:
    """Run the sweep of ``config.select`` on ``config.data``; write the best model,
    its predictions, ``selection.csv`` and ``metrics.json`` (and the report).

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` plus the paths of the outputs.
    """
    if resume:
        raise JobError("--resume is for checkpointed cluster jobs; run the sweep again")
    select = config.select or SelectConfig()
    out = config.output
    params = sweep_params(config)
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
        with Timer() as timer:
            selection = select_model(
                X_fit,
                select.n_components,
                select.covariance_types,
                criterion=select.criterion,
                sample_weight=w_fit,
                **params,
            )
        model = selection.best_
        if data.feature_names is not None:
            model.feature_names_in_ = np.asarray(data.feature_names, dtype=object)
        table = selection.table
        metrics = fit_metrics(model, data.X, timer.seconds, data.weights)
        metrics["selection"] = {
            "criterion": select.criterion,
            "candidates": len(table),
            "failed": int((table["status"] != "ok").sum()),
            "passes": selection.n_passes,
            "sweep_seconds": timer.seconds,
        }
        # The timings of one model mean nothing for a sweep: its time is the sweep's.
        for key in ("seconds_per_iteration", "setup_seconds", "em_seconds"):
            metrics.pop(key, None)
        metrics["fit_seconds"] = timer.seconds
        table.to_csv(os.path.join(tmp, "selection.csv"), index=False)
        paths = {"selection": os.path.join(tmp, "selection.csv")}
        paths.update(write_predictions(model, data, out, tmp))
        if out.model:
            model.save(os.path.join(tmp, "model"))
            paths["model"] = os.path.join(tmp, "model")
        comparison = kmeans_comparison(model, data.X, out, seed)
        if comparison is not None:
            metrics["kmeans"] = comparison
        write_json(
            os.path.join(tmp, "metrics.json"),
            {**metrics, "candidates": table.to_dict("records")},
        )
        if out.report:
            from daskgmm.report import write_report

            sample = sample_rows(data.X, REPORT_ROWS, seed)
            write_report(
                model,
                sample,
                os.path.join(tmp, "report"),
                metrics={
                    k: v for k, v in metrics.items() if k not in ("selection", "kmeans")
                },
                feature_names=data.feature_names,
                selection=table,
                criterion=select.criterion,
                comparison=comparison,
            )
            paths["report"] = os.path.join(tmp, "report", "report.md")
    best = table[table["best"]].iloc[0]
    logger.info(
        "done: best K=%d %s by %s (%d candidates, %d passes); output in %s",
        int(best["n_components"]),
        best["covariance_type"],
        select.criterion,
        len(table),
        selection.n_passes,
        out.directory,
    )
    final = {k: v.replace(tmp, out.directory) for k, v in paths.items()}
    return {**metrics, "outputs": final}
