"""Image segmentation (daskgmm.segment, pipeline segment_image, ``daskgmm segment``).

Synthetic images of noisy colour patches with known regions: the segmentation is
scored against the truth with the adjusted Rand index, features against their
oracles (scikit-image's rgb2lab, brute-force cell averages), and the results must not
depend on how the image is cut into strips. Library tests run on dask's threaded
scheduler; a few command-line runs start a one-worker local cluster.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import yaml
import zarr
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image
from skimage.color import rgb2lab
from sklearn.metrics import adjusted_rand_score

from daskgmm import GaussianMixture
from daskgmm.config import ConfigError, load_config, validate
from daskgmm.io import read_image
from daskgmm.segment import (
    PixelFeatures,
    _paint_strip,
    channel_scale,
    coarse_sums,
    fit_pixels,
    sample_image_path,
    segment_image,
    storage_tile,
    strip_features,
)
from tests.conftest import run_args

REPO = Path(__file__).resolve().parents[1]


###############################################################################
# Data and helpers


def patches(
    height: int = 90,
    width: int = 120,
    channels: int = 3,
    dtype: type = np.uint8,
    noise: float = 0.03,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy image of 5 regions (4 quadrants and a disc across them).

    Returns
    -------
    image : (height, width, channels) of ``dtype``
    truth : (height, width) region index
    colours : (5, channels) region colours in [0, 1]
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    truth = 2 * (rows >= height // 2) + (cols >= width // 2)
    disc = (rows - height * 0.45) ** 2 + (cols - width * 0.55) ** 2
    truth[disc < (min(height, width) / 4) ** 2] = 4
    colours = rng.uniform(0.1, 0.9, size=(5, channels))
    while (
        min(
            np.linalg.norm(colours[i] - colours[j])
            for i in range(5)
            for j in range(i + 1, 5)
        )
        < 0.3
    ):
        colours = rng.uniform(0.1, 0.9, size=(5, channels))
    values = colours[truth] + rng.normal(scale=noise, size=(height, width, channels))
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    image = np.clip(values, 0, 1) * top
    if np.issubdtype(dtype, np.integer):
        image = np.round(image)
    return image.astype(dtype), truth, colours


def strips(image: np.ndarray, rows: int) -> da.Array:
    return da.from_array(image, chunks=(rows, -1, -1))


def fit(
    image: da.Array,
    k: int,
    features: PixelFeatures,
    mask: da.Array | None = None,
    fraction: float | None = None,
    **params,
) -> tuple[GaussianMixture, object]:
    scale = channel_scale(image, features, mask)
    X = fit_pixels(image, features, scale, mask=mask, fraction=fraction, seed=0)
    model = GaussianMixture(k, random_state=0, **params).fit(X)
    return model, scale


def run(
    image: da.Array,
    k: int,
    out: Path,
    features: PixelFeatures | None = None,
    mask: da.Array | None = None,
    **kwargs,
) -> tuple[np.ndarray, dict, GaussianMixture]:
    """Fit and segment; returns the labels read back from labels.zarr."""
    features = features or PixelFeatures()
    model, scale = fit(image, k, features, mask)
    summary = segment_image(
        image, model, out, features=features, scale=scale, mask=mask, **kwargs
    )
    labels = zarr.open_array(str(out / "labels.zarr"), mode="r")[:]
    return labels, summary, model


def all_features(image: np.ndarray, features: PixelFeatures) -> np.ndarray:
    """Features of every pixel, computed on the whole image at once."""
    scale = channel_scale(da.from_array(image), features)
    X, _, _ = strip_features(
        image, None, features=features, scale=scale, row0=0, shape=image.shape[:2]
    )
    return X


def daskgmm_cmd(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daskgmm.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


###############################################################################
# Segmentation quality


@pytest.mark.parametrize(
    ("channels", "dtype", "kind"),
    [
        (3, np.uint8, "rgb"),
        (3, np.uint8, "lab"),
        (5, np.uint16, "rgb"),
        (8, np.uint16, "rgb"),
        (4, np.float32, "rgb"),
    ],
)
def test_noisy_patches_are_recovered(tmp_path, channels, dtype, kind):
    image, truth, colours = patches(channels=channels, dtype=dtype)
    labels, summary, _ = run(
        strips(image, 16), 5, tmp_path, PixelFeatures(kind=kind), preview_size=64
    )
    assert labels.dtype == np.uint8
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) >= 0.95
    # The summary counts the written labels and gives each segment the mean
    # colour of its pixels, which is the colour of the region it found.
    counts = np.bincount(labels.ravel(), minlength=5)
    assert [s["pixel_count"] for s in summary["segments"]] == counts.tolist()
    assert summary["pixels"] == {
        "total": truth.size,
        "valid": truth.size,
        "invalid": 0,
    }
    for segment in summary["segments"]:
        region = np.bincount(truth[labels == segment["label"]]).argmax()
        assert_allclose(segment["mean_colour"], colours[region], atol=0.02)
    assert sum(s["weight"] for s in summary["segments"]) == pytest.approx(1.0)


def test_sixteen_bit_range_scaling_of_twelve_bit_data(tmp_path):
    # 12-bit data in a 16-bit image: 'range' stretches each channel to [0, 1].
    image, truth, _ = patches(channels=3, dtype=np.uint16)
    image = (image >> 4).astype(np.uint16)
    features = PixelFeatures(scale="range")
    scale = channel_scale(strips(image, 16), features)
    assert_array_equal(scale.low, image.reshape(-1, 3).min(axis=0))
    assert_array_equal(scale.span, np.ptp(image.reshape(-1, 3), axis=0))
    labels, summary, _ = run(strips(image, 16), 5, tmp_path, features)
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) >= 0.95
    for segment in summary["segments"]:
        assert 0 <= min(segment["mean_colour"]) <= max(segment["mean_colour"]) <= 1
        assert max(segment["mean_value"]) <= 4095


###############################################################################
# Features


def test_lab_and_xy_features_match_their_definitions():
    image, _, _ = patches(height=20, width=30)
    features = PixelFeatures(kind="lab+xy", xy_weight=2.0)
    X = all_features(image, features)
    lab = rgb2lab(image.astype(np.float64) / 255.0).reshape(-1, 3) / 100.0
    assert_allclose(X[:, :3], lab, atol=1e-4)
    rows, cols = np.mgrid[:20, :30]
    assert_allclose(X[:, 3], 2.0 * (cols.ravel() + 0.5) / 30, rtol=1e-6)
    assert_allclose(X[:, 4], 2.0 * (rows.ravel() + 0.5) / 30, rtol=1e-6)
    assert features.names(3) == ["L", "a", "b", "x", "y"]


def test_rgb_features_are_channels_over_the_type_range():
    image, _, _ = patches(height=10, width=12, channels=5, dtype=np.uint16)
    features = PixelFeatures(channels=(4, 0))
    X = all_features(image, features)
    assert_allclose(X, image[..., [4, 0]].reshape(-1, 2) / 65535.0, rtol=1e-6)
    assert features.names(5) == ["channel_4", "channel_0"]


@pytest.mark.parametrize(
    ("features", "channels", "message"),
    [
        (PixelFeatures(kind="lab"), 5, "features 'lab' convert red, green and blue"),
        (PixelFeatures(channels=(0, 3)), 3, r"channels \[0, 3\] asked for"),
    ],
)
def test_features_that_do_not_fit_the_image_are_refused(features, channels, message):
    with pytest.raises(ValueError, match=message):
        features.check(channels)


def test_unknown_feature_kind_is_refused():
    with pytest.raises(ValueError, match="features must be one of rgb, lab"):
        PixelFeatures(kind="hsv")


###############################################################################
# Independence from the strips


def test_labels_do_not_depend_on_the_strips(tmp_path):
    image, _, _ = patches(height=75, width=64)
    features = PixelFeatures(kind="lab+xy", xy_weight=0.5)
    model, scale = fit(strips(image, 75), 5, features)
    results = []
    for rows in (75, 32, 7):
        out = tmp_path / f"rows-{rows}"
        summary = segment_image(
            strips(image, rows),
            model,
            out,
            features=features,
            scale=scale,
            probabilities=True,
            preview_size=16,
        )
        labels = zarr.open_array(str(out / "labels.zarr"), mode="r")[:]
        proba = zarr.open_array(str(out / "probabilities.zarr"), mode="r")[:]
        preview = np.asarray(Image.open(out / "preview.png"))
        results.append((labels, proba, preview, summary["segments"]))
    for labels, proba, preview, segments in results[1:]:
        assert_array_equal(labels, results[0][0])
        assert_array_equal(proba, results[0][1])
        assert_array_equal(preview, results[0][2])
        assert segments == results[0][3]
    # And they are the model's predictions for every pixel.
    X = all_features(image, features)
    assert_array_equal(results[0][0].ravel(), model.predict(X.astype(np.float64)))


def test_fits_on_different_strips_find_the_same_segments(tmp_path):
    image, _, _ = patches(height=80, width=96, seed=3)
    a, _, _ = run(strips(image, 80), 5, tmp_path / "a")
    b, _, _ = run(strips(image, 9), 5, tmp_path / "b")
    assert adjusted_rand_score(a.ravel(), b.ravel()) == 1.0


def test_fit_sample_is_the_same_pixels_whatever_the_strips():
    image, _, _ = patches(height=60, width=50)
    features = PixelFeatures(kind="rgb+xy")
    scale = channel_scale(strips(image, 60), features)
    samples = [
        fit_pixels(strips(image, rows), features, scale, fraction=0.3, seed=5).compute()
        for rows in (60, 13, 1)
    ]
    assert 800 < len(samples[0]) < 1000  # 30% of 3000 pixels
    for sample in samples[1:]:
        assert_array_equal(sample, samples[0])
    other_seed = fit_pixels(strips(image, 60), features, scale, fraction=0.3, seed=6)
    assert not np.array_equal(other_seed.compute()[:100], samples[0][:100])


def test_coarse_sums_equal_brute_force_over_any_strips():
    rng = np.random.default_rng(0)
    values = rng.random((23, 17, 2))
    factor = 4
    expected = np.zeros((6, 5, 2))
    for i in range(23):
        for j in range(17):
            expected[i // factor, j // factor] += values[i, j]
    for cuts in ([0, 23], [0, 5, 6, 13, 23], [0, 8, 16, 23]):
        grid = np.zeros_like(expected)
        for start, stop in itertools.pairwise(cuts):
            first, sums = coarse_sums(values[start:stop], start, factor)
            grid[first : first + len(sums)] += sums
        assert_allclose(grid, expected, rtol=1e-12)


def test_preview_cells_painted_by_histogram_or_by_pixel_agree():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, size=(21, 19)).astype(np.uint8)
    labels[3:7, 2:9] = 255  # nodata
    palette = np.vstack([rng.random((5, 4)), np.zeros(4)]).astype(np.float32)
    painted = palette[np.minimum(labels, 5)]
    for factor in (1, 2, 3, 8):
        first, sums = _paint_strip(labels[4:], palette, 4, factor)
        _, expected = coarse_sums(painted[4:], 4, factor)
        assert first == 4 // factor
        assert_allclose(sums, expected, rtol=1e-6)


###############################################################################
# Masks and nodata


def test_masked_pixels_get_nodata_and_do_not_influence_the_fit(tmp_path):
    image, truth, _ = patches(height=80, width=96, seed=1)
    mask = np.zeros(truth.shape, dtype=bool)
    mask[10:40, 5:60] = True
    garbage = image.copy()
    garbage[mask] = np.random.default_rng(9).integers(0, 256, size=(mask.sum(), 3))
    results = []
    for i, picture in enumerate((image, garbage)):
        labels, summary, model = run(
            strips(picture, 16), 5, tmp_path / str(i), mask=da.from_array(mask)
        )
        results.append((labels, model))
        assert summary["nodata_label"] == 255
        assert summary["pixels"]["invalid"] == mask.sum()
        assert (labels[mask] == 255).all()
        assert (labels[~mask] < 5).all()
        assert adjusted_rand_score(truth[~mask], labels[~mask]) >= 0.95
        attrs = zarr.open_array(str(tmp_path / str(i) / "labels.zarr")).attrs
        assert attrs["nodata"] == 255
    # What the masked pixels hold changes nothing.
    assert_array_equal(results[0][1].means_, results[1][1].means_)
    assert_array_equal(results[0][0], results[1][0])
    # Masked cells of the pictures are transparent.
    preview = np.asarray(Image.open(tmp_path / "0" / "preview.png"))
    assert preview.shape == (80, 96, 4)
    assert (preview[mask, 3] == 0).all() and (preview[~mask, 3] == 255).all()
    assert np.asarray(Image.open(tmp_path / "0" / "uncertainty.png")).shape == (
        80,
        96,
        2,
    )


def test_nodata_value_and_non_finite_pixels_are_left_out(tmp_path):
    image, truth, _ = patches(height=60, width=80, channels=4, dtype=np.float32)
    image[:5] = -1.0  # a nodata border
    image[30, 30, 2] = np.nan
    image[31, 31] = np.inf
    labels, summary, _ = run(
        strips(image, 16),
        5,
        tmp_path,
        PixelFeatures(nodata=-1.0),
        probabilities=True,
    )
    invalid = np.zeros(truth.shape, dtype=bool)
    invalid[:5] = invalid[30, 30] = invalid[31, 31] = True
    assert_array_equal(labels == 255, invalid)
    assert summary["pixels"]["invalid"] == invalid.sum()
    assert adjusted_rand_score(truth[~invalid], labels[~invalid]) >= 0.95
    proba = zarr.open_array(str(tmp_path / "probabilities.zarr"), mode="r")[:]
    assert np.isnan(proba[invalid]).all()
    assert_allclose(proba[~invalid].sum(axis=1), 1.0, rtol=1e-5)
    assert_array_equal(proba[~invalid].argmax(axis=1), labels[~invalid])


###############################################################################
# Pictures


def test_preview_and_uncertainty_are_cell_averages(tmp_path):
    image, _, _ = patches(height=130, width=45, noise=0.15, seed=2)
    features = PixelFeatures()
    labels, summary, model = run(strips(image, 11), 5, tmp_path, preview_size=30)
    factor = summary["preview"]["factor"]
    assert factor == 5  # ceil(130 / 30)
    preview = np.asarray(Image.open(tmp_path / "preview.png"), dtype=np.float64)
    assert preview.shape == (26, 9, 3)
    colours = np.array([s["mean_colour"] for s in summary["segments"]])
    painted = colours[labels]
    expected = painted.reshape(26, 5, 9, 5, 3).mean(axis=(1, 3)) * 255
    assert np.abs(preview - expected).max() <= 0.5 + 1e-9
    X = all_features(image, features).astype(np.float64)
    top = model.predict_proba(X).max(axis=1).reshape(130, 45)
    expected = (1 - top).reshape(26, 5, 9, 5).mean(axis=(1, 3)) / (1 - 1 / 5) * 255
    uncertainty = np.asarray(Image.open(tmp_path / "uncertainty.png"), np.float64)
    assert np.abs(uncertainty - expected).max() <= 0.5 + 1e-6
    assert uncertainty.max() > 20  # the noise makes some pixels uncertain


def test_existing_outputs_are_refused_before_any_work(tmp_path):
    image, _, _ = patches(height=20, width=20)
    (tmp_path / "preview.png").write_text("mine")
    features = PixelFeatures()
    model, scale = fit(strips(image, 20), 2, features)
    with pytest.raises(FileExistsError, match=r"preview\.png already exists"):
        segment_image(
            strips(image, 20), model, tmp_path, features=features, scale=scale
        )
    assert sorted(os.listdir(tmp_path)) == ["preview.png"]


###############################################################################
# Inputs: multi-channel TIFF and Zarr


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_tiled_multichannel_tiff_and_zarr_inputs(tmp_path, planar):
    image, truth, _ = patches(height=96, width=80, channels=6, dtype=np.uint16)
    tiff = tmp_path / "image.tif"
    tifffile.imwrite(
        tiff,
        image if planar == "contig" else np.moveaxis(image, 2, 0),
        tile=(32, 32),
        photometric="minisblack",
        planarconfig=planar,
        bigtiff=True,
    )
    store = tmp_path / "image.zarr"
    zarr.create_array(str(store), data=image, chunks=(24, 40, 6))
    for path, tile in ((tiff, (32, 32)), (store, (24, 40))):
        source = read_image(path, strip_bytes=4000)
        assert source.numblocks[0] > 1
        assert storage_tile(path) == tile
        out = tmp_path / f"out-{path.suffix}"
        labels, _, _ = run(source, 5, out, chunks=tile)
        assert adjusted_rand_score(truth.ravel(), labels.ravel()) >= 0.95
        stored = zarr.open_array(str(out / "labels.zarr"), mode="r")
        assert stored.shape == (96, 80)
        assert stored.chunks == tile  # chunked like the input


###############################################################################
# Command line and config


def test_segment_command_on_a_tiff(tmp_path):
    image, truth, _ = patches(height=64, width=72, channels=5, dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "bands.tif",
        image,
        tile=(16, 16),
        photometric="minisblack",
        planarconfig="contig",
    )
    out = tmp_path / "out"
    result = daskgmm_cmd(
        "segment",
        str(tmp_path / "bands.tif"),
        "--n-components",
        "5",
        "--out",
        str(out),
        "--fit-fraction",
        "0.5",
        "--covariance-type",
        "diag",
        "--workers",
        "1",
        "--quiet",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert printed == summary
    assert summary["model"]["covariance_type"] == "diag"
    assert summary["fit_fraction"] == 0.5
    assert set(summary["timings"]) >= {"fit_seconds", "predict_write_seconds"}
    labels = zarr.open_array(str(out / "labels.zarr"), mode="r")[:]
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) >= 0.95
    assert {p.name for p in out.iterdir()} == {
        ".daskgmm",  # the marker that lets overwrite replace this directory
        "labels.zarr",
        "model",
        "preview.png",
        "summary.json",
        "uncertainty.png",
    }
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["extra"]["segment"]["features"]["kind"] == "rgb"


def test_segment_photo_config_runs_on_the_bundled_photo(tmp_path):
    out = tmp_path / "photo"
    settings = ("data.name=coffee", "model.n_components=4", "model.max_iter=20")
    settings += ("segment.preview_size=300", "output.probabilities=true")
    result = daskgmm_cmd(*run_args("segment-photo", out, *settings))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image"]["height"] == 400 and summary["image"]["width"] == 600
    assert summary["features"]["names"] == ["L", "a", "b"]
    assert sum(s["pixel_count"] for s in summary["segments"]) == 400 * 600
    preview = Image.open(out / "preview.png")
    assert preview.size == (300, 200) and preview.mode == "RGB"
    proba = zarr.open_array(str(out / "probabilities.zarr"), mode="r")
    assert proba.shape == (400, 600, 4)


def test_config_with_a_zarr_image_mask_and_nodata(tmp_path):
    image, truth, _ = patches(height=50, width=60, channels=3)
    image[:, :3] = 0  # nodata columns
    zarr.create_array(str(tmp_path / "image.zarr"), data=image, chunks=(10, 60, 3))
    mask = np.zeros((50, 60), dtype=np.uint8)
    mask[40:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    (tmp_path / "job.yaml").write_text(
        "pipeline: segment_image\n"
        "data: {source: image, path: image.zarr}\n"
        "model: {n_components: 5, random_state: 0}\n"
        "segment: {features: rgb+xy, xy_weight: 0.1, nodata: 0, mask: mask.png}\n"
        "cluster: {n_workers: 1}\n"
        "output: {directory: out, labels: true}\n"
    )
    result = daskgmm_cmd("run", str(tmp_path / "job.yaml"), "--quiet")
    assert result.returncode == 0, result.stderr
    labels = zarr.open_array(str(tmp_path / "out" / "labels.zarr"), mode="r")[:]
    invalid = np.zeros((50, 60), dtype=bool)
    invalid[:, :3] = invalid[40:] = True
    assert_array_equal(labels == 255, invalid)
    assert adjusted_rand_score(truth[~invalid], labels[~invalid]) >= 0.95


def _bad_inputs(tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "bands.tif",
        np.zeros((8, 8, 5), np.uint16),
        photometric="minisblack",
        planarconfig="contig",
    )
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "mask.png")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.png", "-k", "3"], 1, "JobError: data.path: not found:"),
        (
            ["bands.tif", "-k", "3", "--features", "lab"],
            1,
            "ValueError: features 'lab' convert red, green and blue to CIELAB, but "
            "5 channel(s) are selected",
        ),
        (
            ["small.png", "-k", "3", "--mask", "mask.png"],
            1,
            "ValueError: the mask has shape (9, 8) but the image is 8 x 8 pixels",
        ),
        (["small.png", "-k", "0"], 2, "model.n_components: Input should be greater"),
    ],
)
def test_bad_input_exits_with_one_line_and_no_output(tmp_path, args, code, message):
    _bad_inputs(tmp_path)
    args = [str(tmp_path / a) if a.endswith((".png", ".tif")) else a for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "daskgmm.cli", "segment", *args, "--out", "out"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == code
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not [p for p in os.listdir(tmp_path) if p.startswith((".out", "out"))]


def test_unknown_sample_image_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown sample image 'lena'; choose one of"):
        sample_image_path("lena")
    assert os.path.isfile(sample_image_path("coffee"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "pipeline: cluster\ndata: {source: sample_image, name: coffee}\n",
            "data.source sample_image is read by pipeline: segment_image only",
        ),
        (
            "pipeline: segment_image\ndata: {source: synthetic}\n",
            "pipeline segment_image reads an image",
        ),
        (
            "pipeline: segment_image\ndata: {source: sample_image, path: a.png}\n",
            "data: Value error, source 'sample_image' takes a name",
        ),
        (
            "pipeline: segment_image\ndata: {source: sample_image, name: coffee}\n"
            "segment: {features: hsv}\n",
            "segment.features: Input should be 'rgb', 'lab', 'rgb+xy' or 'lab+xy'",
        ),
        (
            "pipeline: segment_image\ndata: {source: sample_image, name: coffee}\n"
            "segment: {channels: [0, 0]}\n",
            "segment.channels: Value error, a non-empty list of distinct channel",
        ),
        (
            "pipeline: segment_image\ndata: {source: sample_image, name: coffee}\n"
            "output: {directory: out, report: true}\n",
            "output.report is not used by segment_image",
        ),
        (
            "pipeline: segment_image\ndata: {source: image, path: a.png, "
            "sample_fraction: 0.5}\n",
            "data.sample_fraction is not used by segment_image: use "
            "segment.fit_fraction",
        ),
        (
            "data: {source: synthetic}\nsegment: {features: lab}\n",
            "the segment block is for pipeline: segment_image",
        ),
    ],
)
def test_bad_segment_configs_name_the_problem(text, message):
    if "output:" not in text:
        text += "output: {directory: out}\n"
    with pytest.raises(ConfigError) as info:
        validate(yaml.safe_load(text))
    assert message in str(info.value)


def test_config_paths_of_the_mask_resolve_from_the_config_folder(tmp_path):
    (tmp_path / "job.yaml").write_text(
        "pipeline: segment_image\ndata: {source: image, path: a.png}\n"
        "segment: {mask: masks/m.png}\noutput: {directory: out}\n"
    )
    config = load_config(tmp_path / "job.yaml")
    assert config.segment.mask == str(tmp_path / "masks" / "m.png")
