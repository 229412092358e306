"""Fit data many times larger than the cluster's memory, streamed from Zarr and Parquet.

Run:  python benchmarks/out_of_core.py [--gib 4] [--memory-limit 256MiB] [--iters 5]

A LocalCluster of 2 workers x 1 thread with ``--memory-limit`` each fits K=8 full
covariance on N x 8 float64 rows (``--gib`` of data, generated once into
``--dir``) stored as Zarr and as Parquet. It prints the data size, the cluster memory,
the peak worker memory (RSS sampled every 0.2 s), whether any worker was restarted,
seconds per EM iteration, and the time of a bare pass over the same store
(``read_zarr(...).sum()``), with their ratio. It then checks that the same model comes
out as from the same rows in memory (on a 1,000,000-row slice) and that the Zarr and
Parquet fits agree.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import _common
import numpy as np

N_FEATURES = 8
N_COMPONENTS = 8
STORE_CHUNK_ROWS = 262_144  # 16 MiB of float64 per store chunk


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class MemorySampler(_common.Sampler):
    """Samples every worker's RSS in a background thread; keeps the peak per worker."""

    def __init__(self, client, interval: float = 0.2) -> None:
        super().__init__(interval)
        self.client = client
        self.peak: dict[str, int] = {}

    def sample(self) -> None:
        try:
            for addr, rss in self.client.run(_rss).items():
                self.peak[addr] = max(self.peak.get(addr, 0), rss)
        except Exception:  # a worker being restarted: counted elsewhere
            pass


def ensure_data(directory: str, gib: float) -> tuple[str, str, int]:
    """Write the Zarr and Parquet copies of the data once; return paths and rows."""
    from daskgmm.datasets import write_gmm

    n = int(gib * 2**30 / (8 * N_FEATURES))
    n -= n % STORE_CHUNK_ROWS
    zarr_path = os.path.join(directory, f"gmm-{n}.zarr")
    pq_path = os.path.join(directory, f"gmm-{n}.parquet")
    common = dict(
        n_samples=n,
        n_features=N_FEATURES,
        n_components=N_COMPONENTS,
        chunks=STORE_CHUNK_ROWS,
        random_state=0,
    )
    for path, fmt in ((zarr_path, "zarr"), (pq_path, "parquet")):
        if not os.path.exists(path):
            tic = time.perf_counter()
            write_gmm(path, format=fmt, **common)
            print(f"wrote {path} in {time.perf_counter() - tic:.0f} s", flush=True)
    return zarr_path, pq_path, n


def start_point(zarr_path: str) -> dict:
    """Initial parameters from a short fit on the first 200,000 rows."""
    from daskgmm import GaussianMixture
    from daskgmm.io import read_zarr

    X = np.asarray(read_zarr(zarr_path, "X")[:200_000])
    g = GaussianMixture(N_COMPONENTS, max_iter=3, random_state=0).fit(X)
    return {
        "weights_init": g.weights_,
        "means_init": g.means_,
        "precisions_init": g.precisions_,
    }


def timed_fit(X, init: dict, iters: int):
    from daskgmm import GaussianMixture

    model = GaussianMixture(
        N_COMPONENTS, max_iter=iters, tol=0.0, persist=False, **init
    )
    return model, _common.timed(lambda: model.fit(X))[0] / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=4.0)
    parser.add_argument("--memory-limit", default="256MiB")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--dir", default=_common.DATA_DIR)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    from dask.utils import parse_bytes

    from daskgmm import GaussianMixture
    from daskgmm.io import read_parquet, read_zarr

    os.makedirs(args.dir, exist_ok=True)
    zarr_path, pq_path, n = ensure_data(args.dir, args.gib)
    init = start_point(zarr_path)
    limit = parse_bytes(args.memory_limit)
    columns = [f"x_{i}" for i in range(N_FEATURES)]
    data_bytes = n * N_FEATURES * 8

    with _common.local_client(2, memory_limit=limit) as client:
        pids = client.run(os.getpid)
        rows = []
        with MemorySampler(client) as sampler:
            for name, open_store in (
                ("zarr", lambda: read_zarr(zarr_path, "X")),
                ("parquet", lambda: read_parquet(pq_path, columns)),
            ):
                X = open_store()
                bare, _ = _common.timed(lambda X=X: X.sum().compute())
                model, per_iter = timed_fit(X, init, args.iters)
                rows.append((name, per_iter, bare, model))
        restarted = client.run(os.getpid) != pids
        peaks = sampler.peak

    print(
        f"\ndata: {n:,} x {N_FEATURES} float64 = {data_bytes / 2**30:.2f} GiB; cluster: "
        f"2 workers x 1 thread x {args.memory_limit} = {2 * limit / 2**20:.0f} MiB "
        f"(the data are {data_bytes / (2 * limit):.1f}x the cluster memory)"
    )
    print(
        "peak worker RSS: "
        + ", ".join(f"{v / 2**20:.0f} MiB" for v in peaks.values())
        + f" (limit {limit / 2**20:.0f} MiB); workers restarted: {restarted}"
    )
    print(
        f"{'source':<9}{'s/iter':>9}{'bare pass s':>13}{'ratio':>8}{'lower bound':>20}"
    )
    for name, per_iter, bare_s, model in rows:
        print(
            f"{name:<9}{per_iter:>9.2f}{bare_s:>13.2f}{per_iter / bare_s:>8.2f}"
            f"{model.lower_bound_:>20.12f}"
        )
    lb_z, lb_p = rows[0][3].lower_bound_, rows[1][3].lower_bound_
    print(
        f"zarr vs parquet lower bound: relative difference {abs(lb_z - lb_p) / abs(lb_z):.1e}"
    )

    with _common.threads():
        head = read_zarr(zarr_path, "X")[:1_000_000]
        in_memory = np.asarray(head)
        a = GaussianMixture(N_COMPONENTS, max_iter=3, tol=0.0, **init).fit(in_memory)
        b = GaussianMixture(
            N_COMPONENTS, max_iter=3, tol=0.0, persist=False, **init
        ).fit(head)
    print(
        "same model from the store as in memory (1,000,000 rows, 3 iterations): "
        f"lower bound rel. diff {abs(a.lower_bound_ - b.lower_bound_) / abs(a.lower_bound_):.1e}, "
        f"max |means diff| {np.abs(a.means_ - b.means_).max():.1e}"
    )


if __name__ == "__main__":
    main()
