"""The ``segment_image`` job: an image in; labels, pictures, model and summary out.

The image (a file, a Zarr store or a photo shipped with scikit-image) is read lazily
in strips; the mixture is fitted on the features of every valid pixel (or a uniform
sample, ``segment.fit_fraction``) and then predicts every pixel in one more pass.
See :mod:`daskgmm.segment` for the features and the outputs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import numpy as np

from daskgmm._chunks import SEGMENT_STRIP_BYTES
from daskgmm._em import RunResult
from daskgmm.config import DataConfig, JobConfig, SegmentConfig
from daskgmm.fitted import as_fitted
from daskgmm.io import read_image
from daskgmm.jobs import (
    JobError,
    job,
    model_estimator,
    model_params,
    variational_metrics,
)
from daskgmm.segment import (
    PixelFeatures,
    channel_scale,
    fit_pixels,
    prepare_mask,
    sample_image_path,
    segment_image,
    storage_tile,
)

logger = logging.getLogger("daskgmm")


def open_image(cfg: DataConfig) -> tuple[object, str, tuple[int, int] | None]:
    """The job's image as a lazy (height, width, channels) array, its description
    and the (rows, columns) of its storage tiles (None for PNG/JPEG)."""
    if cfg.source == "sample_image":
        path = sample_image_path(cfg.name)
        description = f"scikit-image sample '{cfg.name}'"
    else:
        path = cfg.path
        if not os.path.exists(path):
            raise JobError(f"data.path: not found: {path}")
        description = path
    image = read_image(
        path,
        array=cfg.array,
        strip_bytes=SEGMENT_STRIP_BYTES,
        missing_chunks=cfg.missing_chunks,
    )
    return image, description, storage_tile(path, cfg.array)


def _features(seg: SegmentConfig) -> PixelFeatures:
    return PixelFeatures(
        kind=seg.features,
        xy_weight=seg.xy_weight,
        channels=None if seg.channels is None else tuple(seg.channels),
        scale=seg.scale,
        nodata=seg.nodata,
    )


def _open(config: JobConfig) -> tuple:
    """The image, its description and storage tiles, the pixel features and the
    mask of a segment_image job, checked before any work."""
    seg = config.segment or SegmentConfig()
    image, description, tile = open_image(config.data)
    n_channels = image.shape[2]
    features = _features(seg)
    features.check(n_channels)
    mask = None
    if seg.mask is not None:
        if not os.path.exists(seg.mask):
            raise JobError(f"segment.mask: not found: {seg.mask}")
        # A label image written by zarr may leave out chunks of its fill value.
        mask = prepare_mask(
            read_image(
                seg.mask, strip_bytes=SEGMENT_STRIP_BYTES, missing_chunks="fill"
            ),
            image,
        )
    logger.info(
        "image: %s, %d x %d pixels, %d channel(s) of %s; features %s",
        description,
        image.shape[0],
        image.shape[1],
        n_channels,
        image.dtype,
        ", ".join(features.names(n_channels)),
    )
    return image, description, tile, features, mask


def run(
    config: JobConfig,
    *,
    resume: bool = False,
    progress: Callable[[int, RunResult], None] | None = None,
) -> dict:
    """Segment the image of ``config.data`` and write ``config.output`` (labels,
    pictures, model and summary, atomically: :func:`daskgmm.jobs.job`).

    Returns
    -------
    dict
        The summary written to ``summary.json``: per-segment pixel counts, weights
        and mean colours, the fit, the timings and the paths of the outputs.
    """
    if resume:
        raise JobError("segment_image jobs are not checkpointed; run without --resume")
    out = config.output
    seg = config.segment or SegmentConfig()
    started = time.perf_counter()
    with job(config, _open) as ctx:
        image, description, tile, features, mask = ctx.data
        height, width, n_channels = image.shape
        scale = channel_scale(image, features, mask)
        X = fit_pixels(
            image,
            features,
            scale,
            mask=mask,
            fraction=seg.fit_fraction,
            seed=config.model.random_state,
        )
        ticks: list[float] = []

        def record(init: int, state: RunResult) -> None:
            ticks.append(time.perf_counter())
            if progress is not None:
                progress(init, state)

        with ctx.timed("fit"):
            model = model_estimator(config, **model_params(config)).fit(
                X, iteration_callback=record
            )
        model.feature_names_in_ = np.asarray(features.names(n_channels), dtype=object)
        result = segment_image(
            image,
            model,
            ctx.directory,
            features=features,
            scale=scale,
            mask=mask,
            labels=out.labels,
            probabilities=out.probabilities,
            chunks=tile,
            preview_size=seg.preview_size,
        )
        feature_info = {
            "kind": features.kind,
            "names": features.names(n_channels),
            "xy_weight": features.xy_weight if features.xy else None,
            "channels": None if features.channels is None else list(features.channels),
            "scale": features.scale,
            "scale_low": scale.low.tolist(),
            "scale_span": scale.span.tolist(),
            "nodata": features.nodata,
            "mask": seg.mask,
        }
        ctx.outputs.update(result["outputs"])
        ctx.save_model(
            model, extra={"segment": {"image": description, "features": feature_info}}
        )
        ctx.outputs["summary"] = ctx.path("summary.json")
        summary = {
            "image": {
                "source": description,
                "height": height,
                "width": width,
                "channels": n_channels,
                "dtype": str(image.dtype),
            },
            "features": feature_info,
            "fit_fraction": seg.fit_fraction,
            "model": {
                "n_components": model.n_components,
                "covariance_type": model.covariance_type,
                "n_iter": model.n_iter_,
                "converged": model.converged_,
                "lower_bound": model.lower_bound_,
                **{
                    k: v
                    for k, v in variational_metrics(as_fitted(model)).items()
                    if k in ("kind", "effective_components")
                },
            },
            "pixels": result["pixels"],
            "label_dtype": result["label_dtype"],
            "nodata_label": result["nodata_label"],
            "preview": result["preview"],
            "segments": result["segments"],
            "timings": _timings(
                height * width, ctx.timings["fit"], ticks, result["timings"], started
            ),
        }
        summary = ctx.result(summary)
        ctx.write_json("summary.json", summary)
    logger.info(
        "done: %d segments of %d x %d pixels in %.1f s; output in %s",
        model.n_components,
        height,
        width,
        time.perf_counter() - started,
        out.directory,
    )
    return summary


def _timings(
    n_pixels: int,
    fit_seconds: float,
    ticks: list[float],
    passes: dict,
    started: float,
) -> dict:
    """Seconds of each phase and megapixels per second of an EM pass and of the
    prediction pass (every pixel is read and featurised in both)."""
    steps = np.diff(ticks)
    per_iteration = (
        float(np.median(steps)) if len(steps) else fit_seconds / max(len(ticks), 1)
    )
    megapixels = n_pixels / 1e6
    predict = passes["predict_write_seconds"]
    return {
        "fit_seconds": fit_seconds,
        "em_iterations": len(ticks),
        "seconds_per_iteration": per_iteration,
        "megapixels_per_second_per_iteration": megapixels / per_iteration
        if per_iteration > 0
        else None,
        "predict_write_seconds": predict,
        "megapixels_per_second_predict_write": megapixels / predict
        if predict > 0
        else None,
        "preview_seconds": passes["preview_seconds"],
        "total_seconds": time.perf_counter() - started,
    }
