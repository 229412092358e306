"""Seconds per EM iteration: daskgmm against scikit-learn, same data and start.

Run:  python benchmarks/bench_em.py [--iters 10] [--repeats 3] [--cases a b c]

Both estimators get the same data, the same ``weights_init``/``means_init``/
``precisions_init`` (from a short k-means-initialised scikit-learn fit on a subsample)
and ``tol=0``, so they run the same number of iterations from the same point and their
final lower bounds must agree. daskgmm runs on dask's threaded scheduler with its
default chunking of NumPy input; scikit-learn with its default BLAS threads.
Prints a table with the median over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import numpy as np

CASES = {
    "a": (2_000_000, 3),
    "b": (1_000_000, 16),
    "c": (200_000, 64),
}
N_COMPONENTS = 8


def make_data(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows of a random mixture of ``N_COMPONENTS`` Gaussians (pixel-like for d=3)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(N_COMPONENTS, d))
    scales = rng.uniform(0.5, 2.0, size=(N_COMPONENTS, d))
    labels = rng.integers(N_COMPONENTS, size=n)
    return centers[labels] + rng.normal(size=(n, d)) * scales[labels]


def start_point(X: np.ndarray) -> dict:
    """Initial parameters shared by both estimators."""
    from sklearn.mixture import GaussianMixture as SkGMM

    ref = SkGMM(N_COMPONENTS, max_iter=2, random_state=0).fit(X[:50_000])
    return {
        "weights_init": ref.weights_,
        "means_init": ref.means_,
        "precisions_init": ref.precisions_,
    }


def time_fit(cls, params: dict, X: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median seconds of ``cls(**params).fit(X)`` and the lower bound of the last fit."""
    times = []
    model = None
    for _ in range(repeats):
        model = cls(**params)
        tic = time.perf_counter()
        model.fit(X)
        times.append(time.perf_counter() - tic)
    return statistics.median(times), float(model.lower_bound_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()

    from sklearn.mixture import GaussianMixture as SkGMM

    from daskgmm import GaussianMixture

    warnings.simplefilter("ignore")
    print(
        f"# {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}, "
        f"K={N_COMPONENTS} full covariance, {args.iters} iterations, median of "
        f"{args.repeats}"
    )
    header = (
        f"{'case':<5}{'N x d':>16}{'daskgmm s/it':>14}{'sklearn s/it':>14}"
        f"{'ratio':>8}{'lower bound daskgmm':>22}{'lower bound sklearn':>22}{'rel diff':>10}"
    )
    print(header)
    print("-" * len(header))
    for case in args.cases:
        n, d = CASES[case]
        X = make_data(n, d)
        init = start_point(X)
        common = dict(n_components=N_COMPONENTS, max_iter=args.iters, tol=0.0, **init)
        ours, lb_ours = time_fit(GaussianMixture, common, X, args.repeats)
        theirs, lb_sk = time_fit(SkGMM, common, X, args.repeats)
        rel = abs(lb_ours - lb_sk) / abs(lb_sk)
        print(
            f"{case:<5}{f'{n:,} x {d}':>16}{ours / args.iters:>14.3f}"
            f"{theirs / args.iters:>14.3f}{theirs / ours:>8.1f}"
            f"{lb_ours:>22.12f}{lb_sk:>22.12f}{rel:>10.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
