"""Seconds per EM iteration: daskgmm (threads, LocalCluster, Zarr) against scikit-learn
and Spark MLlib, same data and start.

Run:  python benchmarks/bench_em.py [--iters 10] [--repeats 3] [--cases a b c]
          [--modes threads cluster zarr] [--no-sklearn] [--no-spark]

Every estimator gets the same data, the same ``weights_init``/``means_init``/
``precisions_init`` (from a short k-means-initialised scikit-learn fit on a subsample)
and ``tol=0``, so they run the same number of iterations from the same point and their
final lower bounds must agree. Each time is the median over ``--repeats`` fits of the
fit's wall time divided by ``--iters``; every daskgmm mode first runs an untimed
one-iteration fit (numba's compiled kernel loaded from its cache, worker imports).

daskgmm modes:

- ``threads``: NumPy input on dask's threaded scheduler (all cores), its default
  chunking;
- ``cluster``: a ``LocalCluster`` of 2 worker processes x 1 thread with the embedded
  cluster's allocator setting (``daskgmm.jobs.worker_allocator_settings``), the data
  persisted in the workers' memory beforehand in one row block per worker thread, as
  a fit that keeps NumPy input in memory on a cluster has it (``--cluster-workers``
  to change);
- ``zarr``: the data written to a Zarr store by ``daskgmm.io.write_zarr`` (default
  codec, and ``compressors="fast"``) and streamed from disk at every pass
  (``persist=False``), threaded scheduler. ``bare read`` is a pass that only reads the
  store (``X.sum()``): the floor of a streamed iteration.

scikit-learn runs with its default BLAS threads. Spark MLlib (``pip install pyspark``
and a Java runtime; see ``_spark.py``) runs on ``local[2]`` from the same start; its
lower bound is the mean log-likelihood of its final model (NumPy), comparable to
daskgmm's with one iteration more. The table ends with the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings

import _common
import numpy as np
from _common import CASES, N_COMPONENTS

MODES = ("threads", "cluster", "zarr")


def make_data(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows of a random mixture of ``N_COMPONENTS`` Gaussians (pixel-like for d=3)."""
    return _common.mixture_rows(np.random.default_rng(seed), n, d, N_COMPONENTS)[0]


def start_point(X: np.ndarray) -> dict:
    """Initial parameters shared by every estimator."""
    from sklearn.mixture import GaussianMixture as SkGMM

    ref = SkGMM(N_COMPONENTS, max_iter=2, random_state=0).fit(X[:50_000])
    return {
        "weights_init": ref.weights_,
        "means_init": ref.means_,
        "precisions_init": ref.precisions_,
    }


def time_fit(
    cls, params: dict, X, repeats: int, warmup: bool = False
) -> tuple[float, float]:
    """Median seconds of ``cls(**params).fit(X)`` and the lower bound of the last fit."""
    if warmup:
        cls(**{**params, "max_iter": 1}).fit(X)
    times = []
    model = None
    for _ in range(repeats):
        model = cls(**params)
        times.append(_common.timed(lambda model=model: model.fit(X))[0])
    return statistics.median(times), float(model.lower_bound_)


def run_threads(X: np.ndarray, common: dict, repeats: int) -> dict:
    from daskgmm import GaussianMixture

    with _common.threads():
        seconds, bound = time_fit(GaussianMixture, common, X, repeats, warmup=True)
    return {"threads": seconds, "threads_bound": bound}


def run_cluster(X: np.ndarray, common: dict, repeats: int, n_workers: int) -> dict:
    import dask
    import dask.array as da
    from distributed import wait

    from daskgmm import GaussianMixture
    from daskgmm.jobs import worker_allocator_settings

    # One block per worker thread: what a fit keeps in memory on a cluster gets.
    rows = -(-X.shape[0] // n_workers)
    with (
        # The embedded cluster's worker setting (daskgmm run does the same).
        dask.config.set(worker_allocator_settings(None, n_workers)),
        _common.local_client(n_workers) as client,
    ):
        Xd = client.persist(da.from_array(X, chunks=(rows, X.shape[1])))
        wait(Xd)
        seconds, bound = time_fit(GaussianMixture, common, Xd, repeats, warmup=True)
    return {"cluster": seconds, "cluster_bound": bound}


def run_zarr(X: np.ndarray, common: dict, repeats: int, directory: str) -> dict:
    import dask.array as da

    from daskgmm import GaussianMixture
    from daskgmm.io import read_zarr, write_zarr

    out: dict = {}
    for label, compressors in (("zarr", "auto"), ("zarr_fast", "fast")):
        path = os.path.join(directory, f"{label}.zarr")
        # write_zarr's own layout: Zarr chunks of at most 16 MiB.
        write_zarr(
            da.from_array(X, chunks=(-1, X.shape[1])),
            path,
            compressors=compressors,
            overwrite=True,
        )
        Z = read_zarr(path)
        with _common.threads():
            out[f"{label}_bare"] = _common.median_seconds(
                lambda Z=Z: Z.sum().compute(), max(repeats, 5)
            )
            seconds, bound = time_fit(
                GaussianMixture, {**common, "persist": False}, Z, repeats, warmup=True
            )
        out[label] = seconds
        out[f"{label}_bound"] = bound
        shutil.rmtree(path, ignore_errors=True)
    return out


def run_spark(X: np.ndarray, init: dict, iters: int, repeats: int) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _spark

    reason = _spark.spark_available()
    if reason:
        return {"spark_note": f"Spark skipped: {reason}"}
    _spark.spark_session(2)
    covariances = np.linalg.inv(init["precisions_init"])
    covariances = 0.5 * (covariances + np.swapaxes(covariances, 1, 2))
    res = _spark.spark_fit(
        X, init["weights_init"], init["means_init"], covariances, iters, repeats
    )
    note = "collapsed: every responsibility 1/K" if res["collapsed"] else res["note"]
    return {
        "spark_per_iter": res["seconds_per_iter"],
        "spark_bound": res["lower_bound"],
        "spark_note": note,
    }


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--cluster-workers", type=int, default=2)
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--no-spark", action="store_true")
    args = parser.parse_args()

    from daskgmm import _compiled

    warnings.simplefilter("ignore")
    kernel = "compiled (numba)" if _compiled.available() else "NumPy"
    print(
        f"# {time.strftime('%Y-%m-%d')}  {platform.machine()}, {os.cpu_count()} cores; "
        f"K={N_COMPONENTS} full covariance, {args.iters} iterations, median of "
        f"{args.repeats}; daskgmm kernel: {kernel}; s/iter"
    )
    rows = []
    notes = []
    directory = tempfile.mkdtemp(prefix="bench_em-")
    try:
        for case in args.cases:
            n, d = CASES[case]
            X = make_data(n, d)
            init = start_point(X)
            common = dict(
                n_components=N_COMPONENTS, max_iter=args.iters, tol=0.0, **init
            )
            row: dict = {"case": case, "shape": f"{n:,} x {d}"}
            if "threads" in args.modes:
                row.update(run_threads(X, common, args.repeats))
            if "cluster" in args.modes:
                row.update(run_cluster(X, common, args.repeats, args.cluster_workers))
            if "zarr" in args.modes:
                row.update(run_zarr(X, common, args.repeats, directory))
            if not args.no_sklearn:
                from sklearn.mixture import GaussianMixture as SkGMM

                row["sklearn"], row["sklearn_bound"] = time_fit(
                    SkGMM, common, X, args.repeats
                )
            if not args.no_spark:
                row.update(run_spark(X, init, args.iters, max(2, args.repeats - 1)))
                notes.append(f"{case}: {row.get('spark_note', '')}")
            rows.append(row)
            _print_table(rows, args.iters)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for note in notes:
        print(f"# Spark {note}")


def _print_table(rows: list[dict], iters: int) -> None:
    def per_iter(row: dict, key: str) -> float | None:
        return None if key not in row else row[key] / iters

    columns = [
        ("threads", "threads"),
        ("cluster", "LocalCluster"),
        ("zarr", "zarr"),
        ("zarr_bare", "bare read"),
        ("zarr_fast", "zarr fast"),
        ("zarr_fast_bare", "bare fast"),
        ("sklearn", "sklearn"),
    ]
    header = f"{'case':<5}{'N x d':>15}" + "".join(f"{t:>13}" for _, t in columns)
    header += f"{'Spark':>9}"
    print("\n" + header)
    print("-" * len(header))
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            if value is not None and not key.endswith("_bare"):
                value = value / iters
            cells.append(f"{_fmt(value):>13}")
        spark = row.get("spark_per_iter")
        print(f"{row['case']:<5}{row['shape']:>15}{''.join(cells)}{_fmt(spark):>9}")
    print("\nratios and lower bounds")
    header = (
        f"{'case':<5}{'sklearn/threads':>16}{'Spark/threads':>14}"
        f"{'cluster/threads':>16}{'zarr/bare':>10}{'fast/bare':>10}"
        f"{'bound daskgmm':>19}{'bound sklearn':>19}{'rel diff':>9}{'bound Spark':>19}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ours = per_iter(row, "threads")

        def ratio(num, den):
            return None if num is None or den is None else num / den

        sk = per_iter(row, "sklearn")
        bound, sk_bound = row.get("threads_bound"), row.get("sklearn_bound")
        rel = (
            None
            if bound is None or sk_bound is None
            else abs(bound - sk_bound) / abs(sk_bound)
        )
        zarr = per_iter(row, "zarr")
        fast = per_iter(row, "zarr_fast")
        print(
            f"{row['case']:<5}{_fmt(ratio(sk, ours), '.1f'):>16}"
            f"{_fmt(ratio(row.get('spark_per_iter'), ours), '.1f'):>14}"
            f"{_fmt(ratio(per_iter(row, 'cluster'), ours), '.2f'):>16}"
            f"{_fmt(ratio(zarr, row.get('zarr_bare')), '.2f'):>10}"
            f"{_fmt(ratio(fast, row.get('zarr_fast_bare')), '.2f'):>10}"
            f"{_fmt(bound, '.12f'):>19}{_fmt(sk_bound, '.12f'):>19}"
            f"{_fmt(rel, '.1e'):>9}{_fmt(row.get('spark_bound'), '.12f'):>19}",
            flush=True,
        )


if __name__ == "__main__":
    main()
