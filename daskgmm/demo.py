"""A demo that needs nothing but the install: fit a known mixture on a local cluster.

Run ``python -m daskgmm.demo --help``. It starts an embedded dask ``LocalCluster`` on
127.0.0.1, generates rows of a known Gaussian mixture lazily, fits a
``GaussianMixture`` and prints the recovered parameters next to the true ones.
"""

from __future__ import annotations

import argparse
import logging
import time

import dask.array as da
import numpy as np
from scipy.optimize import linear_sum_assignment

from daskgmm import GaussianMixture
from daskgmm.datasets import make_gmm


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m daskgmm.demo", description=__doc__)
    parser.add_argument("--n-samples", type=int, default=2_000_000)
    parser.add_argument("--n-features", type=int, default=3)
    parser.add_argument("--n-components", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=250_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    args = _parse(argv)
    from distributed import Client, LocalCluster

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("daskgmm").setLevel(logging.INFO)
    X, y, truth = make_gmm(
        args.n_samples,
        args.n_features,
        args.n_components,
        chunks=args.chunks,
        random_state=args.seed,
    )
    print(
        f"data: {args.n_samples:,} x {args.n_features} rows of a known mixture of "
        f"{args.n_components}, {X.numblocks[0]} blocks of {args.chunks:,} rows"
    )
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster),
    ):
        print(
            f"embedded cluster: {cluster.scheduler_address}, {args.workers} workers, "
            f"dashboard {cluster.dashboard_link}"
        )
        tic = time.perf_counter()
        model = GaussianMixture(
            args.n_components, random_state=args.seed, verbose=1, verbose_interval=1
        ).fit(X)
        seconds = time.perf_counter() - tic
        labels = model.predict(X)
        confusion = da.bincount(
            y * args.n_components + labels, minlength=args.n_components**2
        ).compute()
    confusion = confusion.reshape(args.n_components, args.n_components)
    true_idx, fit_idx = linear_sum_assignment(-confusion)
    agreement = confusion[true_idx, fit_idx].sum() / args.n_samples
    print(
        f"fitted in {seconds:.1f} s: {model.n_iter_} iterations, converged="
        f"{model.converged_}, mean log-likelihood {model.lower_bound_:.6f}"
    )
    print(
        f"labels agreeing with the truth (after matching components): {agreement:.4f}"
    )
    print(f"{'component':>9} {'true weight':>12} {'fit weight':>11}  max |mean error|")
    for t, f in zip(true_idx, fit_idx, strict=True):
        err = np.abs(truth.means[t] - model.means_[f]).max()
        print(f"{t:>9} {truth.weights[t]:>12.4f} {model.weights_[f]:>11.4f}  {err:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
