"""Model selection at the cost of about one fit: a K = 1..10 sweep against one K = 10 fit.

Run:  python benchmarks/bench_selection.py [--rows 4000000] [--features 3] [--repeats 3]

The data (a 6-component mixture, ``--rows`` x ``--features`` float64) are written
once to a Zarr store in ``--dir`` and streamed from disk at every pass (``persist``
off: nothing is kept in memory between passes). Three timings, each the median of
``--repeats`` runs on dask's threaded scheduler (all cores):

- ``single``: ``GaussianMixture(n_components=10, covariance_type='full').fit``;
- ``sweep``: ``select_model(n_components=range(1, 11), covariance_types=('full',))``,
  every candidate advanced by the same passes;
- ``sequential``: the ten fits K = 1..10 one after another (run once: it is the
  slow path this replaces).

It prints the wall times, the number of passes over the data, and the ratios to the
single fit (the target: sweep <= 3x single, where sequential is about 10x). Every
candidate's lower bound in the sweep is compared with its sequential fit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import warnings

import _common

KS = range(1, 11)
FIT = dict(covariance_type="full", random_state=0, persist=False, max_iter=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--features", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=_common.DATA_DIR)
    args = parser.parse_args()

    import dask

    from daskgmm import ConvergenceWarning, GaussianMixture, select_model
    from daskgmm.io import read_zarr

    warnings.simplefilter("ignore", ConvergenceWarning)
    dask.config.set(scheduler="threads")
    path = _common.write_gmm_once(
        os.path.join(args.dir, f"selection-{args.rows}x{args.features}.zarr"),
        args.rows,
        args.features,
        6,
        chunks=262_144,
    )
    X = read_zarr(path, "X")
    bare = _common.median_seconds(lambda: X.sum().compute(), 3)

    # Untimed: loads (or compiles, on a first run) the compiled E-step kernel.
    GaussianMixture(2, **{**FIT, "max_iter": 1}).fit(X[:10_000])

    single_times, sweep_times = [], []
    single = sweep = None
    for _ in range(args.repeats):
        seconds, single = _common.timed(lambda: GaussianMixture(10, **FIT).fit(X))
        single_times.append(seconds)
        seconds, sweep = _common.timed(
            lambda: select_model(X, KS, ("full",), **_sweep_kw())
        )
        sweep_times.append(seconds)
    seq_seconds = 0.0
    seq_passes = 0
    worst = 0.0
    for k in KS:
        seconds, model = _common.timed(lambda k=k: GaussianMixture(k, **FIT).fit(X))
        seq_seconds += seconds
        seq_passes += model.n_iter_ + 2
        row = sweep.table[sweep.table["n_components"] == k].iloc[0]
        worst = max(
            worst, abs(row.lower_bound - model.lower_bound_) / abs(row.lower_bound)
        )
    t_single = statistics.median(single_times)
    t_sweep = statistics.median(sweep_times)
    print(
        f"data: {args.rows:,} x {args.features} float64 "
        f"({args.rows * args.features * 8 / 2**20:.0f} MiB) streamed from {path}"
    )
    print(f"bare read of the store (X.sum()): {bare:.3f} s")
    print()
    print("| run | wall s | passes | s/pass | ratio to single |")
    print("|---|---|---|---|---|")
    single_passes = single.n_iter_ + 2
    for name, seconds, passes in (
        ("single K=10 fit", t_single, single_passes),
        ("sweep K=1..10 (batched)", t_sweep, sweep.n_passes),
        ("K=1..10 one after another", seq_seconds, seq_passes),
    ):
        print(
            f"| {name} | {seconds:.2f} | {passes} | {seconds / passes:.3f} | "
            f"{seconds / t_single:.2f} |"
        )
    print()
    print(f"sweep: best K={sweep.best_.n_components} by BIC; iterations per candidate:")
    print(
        "  "
        + ", ".join(f"K={r.n_components}: {r.n_iter}" for r in sweep.table.itertuples())
    )
    print(f"single K=10 fit: {single.n_iter_} iterations")
    print(f"largest relative lower-bound difference sweep vs sequential: {worst:.1e}")


def _sweep_kw() -> dict:
    kw = dict(FIT)
    kw.pop("covariance_type")
    return kw


if __name__ == "__main__":
    main()
