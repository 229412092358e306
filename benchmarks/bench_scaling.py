"""How the EM iteration scales: with N (streamed from Zarr), with d, with K; fixed overhead.

Run:  python benchmarks/bench_scaling.py [--parts n d k overhead] [--max-rows 100000000]
      [--iters 5] [--repeats 3] [--dir benchmarks/_data]

Every fit starts from given parameters (``weights_init``/``means_init``/
``precisions_init``: no initialisation pass) with ``tol=0``, so it runs exactly
``--iters`` EM passes; the figure is fit time / iters, median of ``--repeats`` fits on
dask's threaded scheduler (all cores), full covariance.

- ``n``: N = 1e5 ... ``--max-rows`` rows x 3 features, K = 8, written once to Zarr
  (in ``--dir``) and streamed from disk at every pass (``persist=False``); prints
  s/iter, ns per row, and ns per row relative to the 1e6 row (linear = 1.00).
- ``d``: d = 2 ... 128 at N = 200,000, K = 8, in memory.
- ``k``: K = 2 ... 64 at N = 200,000, d = 8, in memory.
- ``overhead``: N = 1,000 x 3, K = 2: the fixed cost of one iteration (graph build,
  scheduling, M-step), in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import _common
import numpy as np


def make_rows(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _common.mixture_rows(rng, n, d, k, scaled=False)[0]


def start(d: int, k: int, seed: int = 1) -> dict:
    """A valid start point (no data pass needed)."""
    rng = np.random.default_rng(seed)
    return {
        "weights_init": np.full(k, 1.0 / k),
        "means_init": rng.normal(scale=4.0, size=(k, d)),
        "precisions_init": np.stack([np.eye(d)] * k),
    }


def seconds_per_iter(X, k: int, iters: int, repeats: int, **kw) -> float:
    from daskgmm import ConvergenceWarning, GaussianMixture

    d = X.shape[1]
    times = []
    for _ in range(repeats):
        model = GaussianMixture(k, tol=0, max_iter=iters, **start(d, k), **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            times.append(_common.timed(lambda model=model: model.fit(X))[0] / iters)
    return statistics.median(times)


def zarr_rows(folder: str, n: int, d: int = 3) -> str:
    """A Zarr store of n x d rows of a K=8 mixture, written once (chunk by chunk)."""
    path = os.path.join(folder, f"scaling-{n}x{d}.zarr")
    return _common.write_gmm_once(path, n, d, 8, chunks=1 << 20)


def part_n(args: argparse.Namespace) -> None:
    from daskgmm.io import read_zarr

    sizes = [n for n in (10**5, 10**6, 10**7, 10**8) if n <= args.max_rows]
    print("## s/iter against N (3 features, K=8, streamed from Zarr)")
    print()
    print("| N | GiB | s/iter | ns/row | relative to 1e6 |")
    print("|---|---|---|---|---|")
    per_row_1e6 = None
    for n in sizes:
        X = read_zarr(zarr_rows(args.dir, n), "X")
        repeats = args.repeats if n <= 10**7 else max(1, args.repeats - 1)
        s = seconds_per_iter(X, 8, args.iters, repeats, persist=False)
        per_row = s / n * 1e9
        if n == 10**6:
            per_row_1e6 = per_row
        rel = f"{per_row / per_row_1e6:.2f}" if per_row_1e6 else "-"
        print(
            f"| {n:.0e} | {n * 3 * 8 / 2**30:.2f} | {s:.4f} | {per_row:.1f} | {rel} |"
        )
    print()


def part_d(args: argparse.Namespace) -> None:
    print("## s/iter against d (N=200,000, K=8, in memory)")
    print()
    print("| d | s/iter | ns/row |")
    print("|---|---|---|")
    for d in (2, 4, 8, 16, 32, 64, 128):
        X = make_rows(200_000, d, 8)
        s = seconds_per_iter(X, 8, args.iters, args.repeats)
        print(f"| {d} | {s:.4f} | {s / 200_000 * 1e9:.0f} |")
    print()


def part_k(args: argparse.Namespace) -> None:
    print("## s/iter against K (N=200,000, d=8, in memory)")
    print()
    print("| K | s/iter | ns/row |")
    print("|---|---|---|")
    X = make_rows(200_000, 8, 16)
    for k in (2, 4, 8, 16, 32, 64):
        s = seconds_per_iter(X, k, args.iters, args.repeats)
        print(f"| {k} | {s:.4f} | {s / 200_000 * 1e9:.0f} |")
    print()


def part_overhead(args: argparse.Namespace) -> None:
    X = make_rows(1_000, 3, 2)
    # Untimed first: loading the compiled kernel and the thread pool (about 2 ms per
    # iteration of a 20-iteration fit) are no cost of an iteration.
    seconds_per_iter(X, 2, 1, 1)
    s = seconds_per_iter(X, 2, max(args.iters, 20), args.repeats)
    print("## Fixed overhead per iteration (N=1,000 x 3, K=2, threads)")
    print()
    print(f"{s * 1e3:.2f} ms per iteration")
    print()


PARTS = {"n": part_n, "d": part_d, "k": part_k, "overhead": part_overhead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--max-rows", type=int, default=10**8)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=_common.DATA_DIR)
    args = parser.parse_args()

    import dask

    dask.config.set(scheduler="threads")
    os.makedirs(args.dir, exist_ok=True)
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")
    print()
    for name in args.parts:
        PARTS[name](args)


if __name__ == "__main__":
    main()
