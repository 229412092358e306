"""Seconds per iteration of the variational BayesianGaussianMixture against EM.

For the bench_em cases (K=8 full covariances), on dask's threaded scheduler:
daskgmm's GaussianMixture and BayesianGaussianMixture (the EM time per iteration
their fits report, ``fit_timings_['seconds_per_iteration']``: the setup passes
apart), and scikit-learn's BayesianGaussianMixture (the time of a fit of
``1 + iters`` iterations minus that of 1 iteration, divided by ``iters``: its
k-means initialisation apart). All start from their default 'kmeans'
initialisation. (From 'k-means++' the variational fit's first two iterations cost
about twice as much: its start is the prior's broad covariance, so every row has a
share of every component until the posterior sharpens.)

    python benchmarks/bench_bayesian.py --iters 5 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import _common
from bench_em import make_data


def _per_iteration(cls, X, iters: int, repeats: int, **params) -> float:
    """Median EM seconds per iteration of daskgmm fits (after a warm-up fit)."""
    kwargs = dict(
        n_components=_common.N_COMPONENTS,
        max_iter=iters,
        tol=0.0,
        random_state=0,
        **params,
    )
    cls(**{**kwargs, "max_iter": 1}).fit(X)
    times = []
    for _ in range(repeats):
        model = cls(**kwargs).fit(X)
        times.append(model.fit_timings_["seconds_per_iteration"])
    return statistics.median(times)


def _sklearn_per_iteration(X, iters: int, repeats: int) -> float:
    from sklearn.mixture import BayesianGaussianMixture

    def fit(n: int) -> float:
        model = BayesianGaussianMixture(
            n_components=_common.N_COMPONENTS,
            max_iter=n,
            tol=0.0,
            random_state=0,
        )
        return _common.timed(lambda: model.fit(X))[0]

    return statistics.median((fit(1 + iters) - fit(1)) / iters for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(_common.CASES))
    parser.add_argument("--no-sklearn", action="store_true")
    args = parser.parse_args()
    from daskgmm import BayesianGaussianMixture, GaussianMixture

    print(
        f"# K={_common.N_COMPONENTS} full, {args.iters} iterations, median of "
        f"{args.repeats}; threaded scheduler; s/iter"
    )
    header = (
        f"{'case':<5}{'N x d':>16}{'EM':>10}{'Bayesian':>10}{'ratio':>8}"
        f"{'sklearn Bayes':>15}{'sklearn/ours':>14}"
    )
    print(header)
    print("-" * len(header))
    warnings.simplefilter("ignore")
    for case in args.cases:
        n, d = _common.CASES[case]
        X = make_data(n, d)
        with _common.threads():
            em = _per_iteration(GaussianMixture, X, args.iters, args.repeats)
            bayes = _per_iteration(BayesianGaussianMixture, X, args.iters, args.repeats)
        sk = (
            float("nan")
            if args.no_sklearn
            else _sklearn_per_iteration(X, args.iters, args.repeats)
        )
        print(
            f"{case:<5}{n:>10,} x {d:<3}{em:>10.4f}{bayes:>10.4f}{bayes / em:>8.2f}"
            f"{sk:>15.3f}{sk / bayes:>14.1f}"
        )


if __name__ == "__main__":
    main()
