"""Seconds per E-step chunk kernel call: NumPy (``_kernels``) against numba (``_compiled``).

Run:  python benchmarks/bench_kernel.py [--repeats 5] [--cases a b c] [--types full]

Each case is one array of rows from a mixture of ``N_COMPONENTS`` Gaussians and a
fixed, slightly wrong set of parameters (as in the middle of EM). Both kernels get
the same array: once whole on one thread, and once as two halves on a
ThreadPoolExecutor of 2 threads (as dask runs blocks), combined with
``combine_stats``. BLAS is limited to one thread (the NumPy kernel's matrix
products), as on a dask worker. Prints the median of ``--repeats`` calls, the
speed-up, the first-call (compile or cache-load) time of the compiled kernel and
the largest relative difference between the two kernels' statistics.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import _common
import numpy as np
from _common import CASES, N_COMPONENTS
from threadpoolctl import threadpool_limits

from daskgmm import _compiled, _kernels


def make_problem(
    n: int, d: int, covariance_type: str, seed: int = 0
) -> tuple[np.ndarray, _kernels.KernelParams]:
    """Rows of a random mixture and perturbed parameters of that mixture."""
    rng = np.random.default_rng(seed)
    X, centers, scales = _common.mixture_rows(rng, n, d, N_COMPONENTS)
    means = centers + rng.normal(scale=0.3, size=centers.shape)
    a = rng.normal(size=(N_COMPONENTS, d, d)) / np.sqrt(d)
    full = a @ a.transpose(0, 2, 1) * 0.2 + np.stack([np.diag(s**2) for s in scales])
    covariances = {
        "full": full,
        "tied": full.mean(axis=0),
        "diag": scales**2,
        "spherical": (scales**2).mean(axis=1),
    }[covariance_type]
    prec_chol = _kernels.precision_cholesky_from_covariances(
        covariances, covariance_type
    )
    weights = np.full(N_COMPONENTS, 1.0 / N_COMPONENTS)
    return X, _kernels.prepare(weights, means, prec_chol, covariance_type)


def run(kernel: Callable, X: np.ndarray, kp, threads: int) -> dict:
    """Statistics of ``X``, whole on this thread or in ``threads`` parts on a pool."""
    if threads == 1:
        return kernel(X, kp)
    parts = np.array_split(X, threads)
    with ThreadPoolExecutor(threads) as pool:
        stats = list(pool.map(kernel, parts, [kp] * threads, range(threads)))
    return _kernels.combine_stats(*stats)


def median_seconds(kernel: Callable, X: np.ndarray, kp, threads: int, repeats: int):
    return _common.median_seconds(lambda: run(kernel, X, kp, threads), repeats)


def max_rel_diff(a: dict, b: dict) -> float:
    """Largest difference of nk/s1/s2/loglik relative to each statistic's max."""
    diffs = [
        np.max(np.abs(a[key] - b[key])) / max(np.max(np.abs(b[key])), 1e-300)
        for key in ("nk", "s1", "s2")
    ]
    diffs.append(abs(a["loglik"] - b["loglik"]) / abs(b["loglik"]))
    return float(max(diffs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--types", nargs="*", default=["full"])
    args = parser.parse_args()
    if not _compiled.available():
        raise SystemExit("numba is not installed")

    print(
        f"# {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"K={N_COMPONENTS}, seconds per call, median of {args.repeats}"
    )
    header = (
        f"{'case':<5}{'type':<10}{'N x d':>16}{'threads':>8}{'numpy':>9}"
        f"{'numba':>9}{'speed-up':>9}{'1st call':>9}{'rel diff':>10}"
    )
    print(header)
    print("-" * len(header))
    with threadpool_limits(limits=1, user_api="blas"):
        for case in args.cases:
            n, d = CASES[case]
            for ctype in args.types:
                X, kp = make_problem(n, d, ctype)
                tic = time.perf_counter()
                _compiled.estep_block(X[:1000], kp)
                first = time.perf_counter() - tic
                rel = max_rel_diff(
                    _compiled.estep_block(X, kp), _kernels.estep_block(X, kp)
                )
                for threads in (1, 2):
                    ref = median_seconds(
                        _kernels.estep_block, X, kp, threads, args.repeats
                    )
                    got = median_seconds(
                        _compiled.estep_block, X, kp, threads, args.repeats
                    )
                    print(
                        f"{case:<5}{ctype:<10}{f'{n:,} x {d}':>16}{threads:>8}"
                        f"{ref:>9.3f}{got:>9.3f}{ref / got:>9.1f}"
                        f"{first:>9.2f}{rel:>10.1e}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
