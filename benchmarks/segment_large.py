"""Segment a 400-megapixel RGB image with bounded memory (the segment_image pipeline).

Run:  python benchmarks/segment_large.py [--size 20000] [--k 8] [--max-iter 10]
          [--features rgb] [--fit-fraction 1] [--format zarr|tiff] [--persist]

The image, ``--size`` x ``--size`` RGB uint8 (20,000 x 20,000 = 400 megapixels: 1.2 GB
as uint8, 9.6 GB as float64 features), is built once into ``benchmarks/_data`` from
scikit-image's astronaut photo: upsampled 4x (Lanczos) to 2048 x 2048, tiled with
mirrored copies, with mild noise; stored as a Zarr array or a tiled BigTIFF in
256 x 256 tiles. A LocalCluster of 2 workers x 1 thread then runs the whole job —
fit K components on every pixel (streamed from the store at every EM pass: no
persist unless ``--persist``), predict every pixel, write labels.zarr, preview.png,
uncertainty.png, the model and summary.json — while the resident memory of the
client and every worker process is sampled every 0.2 s. It prints a table of
seconds and megapixels per second for one EM iteration and for prediction + writing,
and the peak memory.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import _common
import numpy as np

DATA = _common.DATA_DIR
TILE = 256
BASE = 2048  # the photo upsampled to BASE x BASE, then mirrored into 2·BASE tiles


class MemorySampler(_common.Sampler):
    """Peak of the summed RSS of this process and all its descendants (workers)."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(interval)
        self.peak = 0

    def _total(self) -> int:
        import psutil

        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def sample(self) -> None:
        self.peak = max(self.peak, self._total())


def _mirrored_photo() -> np.ndarray:
    """The astronaut photo at BASE x BASE and its mirror images: (2·BASE, 2·BASE, 3)."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((BASE, BASE), Image.LANCZOS)
    base = np.asarray(photo)
    top = np.concatenate([base, base[:, ::-1]], axis=1)
    return np.concatenate([top, top[::-1]], axis=0)


def _strip(tiles: np.ndarray, start: int, stop: int, size: int) -> np.ndarray:
    """Rows ``start:stop`` of the size x size image, with noise keyed by the rows."""
    period = tiles.shape[0]
    rows = tiles[np.arange(start, stop) % period]
    block = rows[:, np.arange(size) % period]
    rng = np.random.default_rng([7, start])
    noisy = block + rng.normal(scale=3.0, size=block.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def ensure_image(size: int, fmt: str) -> str:
    """Build the benchmark image once; return its path."""
    os.makedirs(DATA, exist_ok=True)
    path = os.path.join(
        DATA, f"segment-astronaut-{size}.{'zarr' if fmt == 'zarr' else 'tif'}"
    )
    if os.path.exists(path):
        return path
    from daskgmm.io import atomic_path

    start = time.perf_counter()
    tiles = _mirrored_photo()
    with atomic_path(path) as tmp:
        if fmt == "zarr":
            import zarr

            z = zarr.create_array(
                tmp, shape=(size, size, 3), chunks=(TILE, TILE, 3), dtype=np.uint8
            )
            for r in range(0, size, TILE):
                z[r : r + TILE] = _strip(tiles, r, min(size, r + TILE), size)
        else:
            import tifffile

            def tile_iter():
                for r in range(0, size, TILE):
                    strip = _strip(tiles, r, min(size, r + TILE), size)
                    for c in range(0, size, TILE):
                        tile = np.zeros((TILE, TILE, 3), np.uint8)
                        part = strip[:, c : c + TILE]
                        tile[: part.shape[0], : part.shape[1]] = part
                        yield tile

            tifffile.imwrite(
                tmp,
                tile_iter(),
                shape=(size, size, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                bigtiff=True,
            )
    print(f"built {path} in {time.perf_counter() - start:.0f} s")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000, help="image side, pixels")
    parser.add_argument("--k", type=int, default=8, help="number of segments")
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--features", default="rgb")
    parser.add_argument("--fit-fraction", type=float, default=1.0)
    parser.add_argument("--format", choices=("zarr", "tiff"), default="zarr")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--persist", action="store_true", help="let the fit keep the features in memory"
    )
    args = parser.parse_args()

    from daskgmm.config import validate
    from pipelines.segment_image import run

    path = ensure_image(args.size, args.format)
    out = os.path.join(DATA, f"segment-out-{args.size}")
    config = validate(
        {
            "pipeline": "segment_image",
            "data": {"source": "image", "path": path},
            "model": {
                "n_components": args.k,
                "max_iter": args.max_iter,
                "random_state": 0,
                "persist": "auto" if args.persist else False,
            },
            "segment": {"features": args.features, "fit_fraction": args.fit_fraction},
            "cluster": {"n_workers": args.workers, "threads_per_worker": 1},
            "output": {"directory": out, "overwrite": True},
        }
    )
    megapixels = args.size**2 / 1e6
    with warnings.catch_warnings(), MemorySampler() as memory:
        warnings.simplefilter("ignore")  # "did not converge" at a small max_iter
        total, summary = _common.timed(lambda: run(config))
    t = summary["timings"]
    float64_gb = args.size**2 * 3 * 8 / 1e9
    rows = [
        ("image", f"{args.size:,} x {args.size:,} RGB uint8 ({args.format})", ""),
        ("pixels", f"{megapixels:,.0f} megapixels", ""),
        (
            "features",
            f"{args.features}, K={args.k} full, fit on {args.fit_fraction:.0%}",
            "",
        ),
        (
            "workers",
            f"{args.workers} x 1 thread, persist={'auto' if args.persist else 'no'}",
            "",
        ),
        (
            "one EM iteration (median)",
            f"{t['seconds_per_iteration']:.1f} s",
            f"{t['megapixels_per_second_per_iteration']:.1f} MP/s",
        ),
        (
            f"fit ({t['em_iterations']} iterations + init)",
            f"{t['fit_seconds']:.0f} s",
            "",
        ),
        (
            "prediction + writing labels",
            f"{t['predict_write_seconds']:.1f} s",
            f"{t['megapixels_per_second_predict_write']:.1f} MP/s",
        ),
        ("preview + uncertainty PNGs", f"{t['preview_seconds']:.1f} s", ""),
        ("whole job", f"{total:.0f} s", f"{megapixels / total:.2f} MP/s"),
        (
            "peak memory, client + workers",
            f"{memory.peak / 2**30:.2f} GiB",
            f"float64 image: {float64_gb:.1f} GB",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    middle = max(len(r[1]) for r in rows)
    print()
    for name, value, extra in rows:
        print(f"{name:<{width}}  {value:<{middle}}  {extra}".rstrip())
    print(
        f"\noutputs in {out} (preview {summary['preview']['width']} x "
        f"{summary['preview']['height']} px)"
    )
    assert math.isfinite(summary["model"]["lower_bound"])


if __name__ == "__main__":
    main()
