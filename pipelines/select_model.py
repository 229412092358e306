"""The ``select_model`` job: a sweep of candidate mixtures, chosen by BIC or AIC.

Every candidate (each number of components and covariance type of the ``select``
block, times ``model.n_init`` restarts) is advanced by the same pass over the data
(:func:`daskgmm.select_model`), so the sweep costs about one fit. The best model is
written like the ``cluster`` job's, with the table of candidates beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from daskgmm._em import RunResult
from daskgmm._params import DEFAULTS, names_where
from daskgmm.config import JobConfig, SelectConfig
from daskgmm.jobs import JobError, checkpointed, fit_metrics, job, model_params
from daskgmm.selection import select_model

logger = logging.getLogger("daskgmm")


def sweep_params(config: JobConfig) -> dict:
    """``select_model`` keyword arguments from the model block: the parameters the
    sweep sets per candidate left out, those that depend on one candidate refused
    (both from the parameter table).

    Raises
    ------
    JobError
        ``*_init`` or ``warm_start`` given.
    """
    params = model_params(config)
    for name in names_where(sweep="refused"):
        if not _is_default(params.pop(name), DEFAULTS[name]):
            raise JobError(
                f"model.{name} is not used by select_model (each candidate has its "
                "own number of components); remove it"
            )
    for name in names_where(sweep="candidate"):
        params.pop(name)
    return params


def _is_default(value: object, default: object) -> bool:
    return value is default or (default is not None and value == default)


def run(
    config: JobConfig,
    *,
    resume: bool = False,
    progress: Callable[[int, RunResult], None] | None = None,
) -> dict:
    """Run the sweep of ``config.select`` on ``config.data``; write the best model,
    its predictions, ``selection.csv`` and ``metrics.json`` (and the report).

    With ``output.checkpoint`` the state of every run of every candidate is written
    after each pass, and ``resume`` continues the sweep from it.

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` plus the paths of the outputs.
    """
    select = config.select or SelectConfig()
    params = sweep_params(config)
    with checkpointed(config, resume) as checkpoint, job(config) as ctx:
        X, weights = ctx.fit_rows()
        with ctx.timed("sweep"):
            selection = select_model(
                X,
                select.n_components,
                select.covariance_types,
                criterion=select.criterion,
                bayesian=select.bayesian,
                sample_weight=weights,
                checkpoint=checkpoint,
                resume=resume,
                **params,
            )
        data = ctx.data
        model = selection.best_
        if data.feature_names is not None:
            model.feature_names_in_ = np.asarray(data.feature_names, dtype=object)
        table = selection.table
        seconds = ctx.timings["sweep"]
        metrics = fit_metrics(model, data.X, seconds, data.weights)
        metrics["selection"] = {
            "criterion": select.criterion,
            "candidates": len(table),
            "failed": int((table["status"] != "ok").sum()),
            "passes": selection.n_passes,
            "sweep_seconds": seconds,
        }
        # The timings of one model mean nothing for a sweep: its time is the sweep's.
        for key in ("seconds_per_iteration", "setup_seconds", "em_seconds"):
            metrics.pop(key, None)
        metrics["fit_seconds"] = seconds
        table.to_csv(ctx.path("selection.csv"), index=False)
        ctx.outputs["selection"] = ctx.path("selection.csv")
        ctx.write_fit_outputs(
            model,
            metrics,
            json_extra={"candidates": table.to_dict("records")},
            report={
                "selection": table,
                "criterion": select.criterion,
                "hide_metrics": ("selection",),
            },
        )
    best = table[table["best"]].iloc[0]
    logger.info(
        "done: best K=%d %s by %s (%d candidates, %d passes); output in %s",
        int(best["n_components"]),
        best["covariance_type"],
        select.criterion,
        len(table),
        selection.n_passes,
        config.output.directory,
    )
    return ctx.result(metrics)
