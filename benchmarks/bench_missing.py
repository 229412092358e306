"""Fits of data with missing values: ``nan_policy='marginalize'`` against the alternatives.

Data: a mixture of K=5 well-separated Gaussians with random full covariances
(numpy ``default_rng``, fixed seed), ``--n`` rows, d = 4 and d = 16. Missing values
(NaN) are hidden by

- MCAR: each value with probability 10%, 30%, 50% (a row left with no observed value
  gets one back, so every row keeps at least one);
- MNAR: in the first 2 columns, every value above that column's 70th percentile (the
  largest values are the missing ones).

Each case is fitted three ways (K=5 full, ``max_iter=200``, ``tol=1e-3``,
``--n-init`` initialisations, default 1, ``random_state=0``):
``nan_policy='marginalize'`` (EM on each row's observed values),
``nan_policy='omit'`` (the complete rows only), and mean imputation (every NaN
replaced by its column's mean of the observed values, then ``nan_policy='raise'``);
a reference row per d fits the data with no value hidden. Quality: the rows used;
the error of the fitted means (fitted and true components matched by
``linear_sum_assignment`` on their distances; mean Euclidean error divided by the
typical within-component standard deviation ``sqrt(mean_k trace(Σ_k) / d)``); the
adjusted Rand index of the labels the fit predicts for the complete original rows
(before any value was hidden) against the true labels ("ARI"), and of the labels
each method gives the rows as it sees them ("ARI as seen": marginalize from the
observed values, mean imputation from the imputed rows, omit -1 for a row with a
missing value). Under MNAR the first can be low for a right fit: when every row of
a component lost its values in a column, that column's mean is not in the data, and
the complete original rows hold values the fit never saw. With one initialisation a
fit can end in a local optimum (two components merged, one split: ARI near 0.78)
whatever the method; ``--n-init 10`` makes that rare (the README's table).

Cost: EM seconds per iteration (``fit_timings_['seconds_per_iteration']``, median of
``--repeats`` fits of 5 iterations with ``tol=0``, after a warm-up fit) of
``marginalize`` on the MCAR data against the complete-data fit of the same rows
without missing values. Imputation: RMSE on the hidden values (MCAR 30%) of
``impute`` (conditional expectation under the marginalize fit) against the column
means. All on dask's threaded scheduler.

    python benchmarks/bench_missing.py --n 100000 --repeats 3 --n-init 10
    python benchmarks/bench_missing.py --quick        # n=20,000, repeats=1
    python benchmarks/bench_missing.py --cost-only    # the cost table alone
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass

import _common
import numpy as np

K = 5
DIMS = (4, 16)
MCAR_RATES = (0.1, 0.3, 0.5)
MNAR_COLUMNS = (0, 1)
MNAR_QUANTILE = 0.7
MIN_SEPARATION = 8.0  # least distance between two centres, in within-component stds
METHODS = ("marginalize", "omit", "mean imputation")


@dataclass(frozen=True)
class Mixture:
    """Rows drawn from a known mixture: ``X`` (n, d), their components ``labels``,
    the true ``means`` (K, d) and ``covariances`` (K, d, d)."""

    X: np.ndarray
    labels: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    @property
    def std(self) -> float:
        """The typical within-component standard deviation,
        ``sqrt(mean_k trace(Σ_k) / d)``."""
        d = self.X.shape[1]
        return float(np.sqrt(np.trace(self.covariances, axis1=1, axis2=2).mean() / d))


# ------------------------------------------------------------------ data


def random_covariance(rng: np.random.Generator, d: int) -> np.ndarray:
    """A random full covariance: a random rotation of standard deviations drawn
    uniformly in [0.5, 1.5]."""
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    q *= np.sign(np.diag(r))
    stds = rng.uniform(0.5, 1.5, size=d)
    return (q * stds**2) @ q.T


def make_mixture(n: int, d: int, k: int = K, seed: int = 0) -> Mixture:
    """``n`` rows of a mixture of ``k`` equally likely Gaussians with random full
    covariances; centres at scale 4, drawn again until every two are at least
    ``MIN_SEPARATION`` within-component standard deviations apart."""
    rng = np.random.default_rng(seed)
    covariances = np.stack([random_covariance(rng, d) for _ in range(k)])
    std = np.sqrt(np.trace(covariances, axis1=1, axis2=2).mean() / d)
    while True:
        means = rng.normal(scale=4.0, size=(k, d))
        gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)
        if gaps[np.triu_indices(k, 1)].min() >= MIN_SEPARATION * std:
            break
    labels = rng.integers(k, size=n)
    factors = np.linalg.cholesky(covariances)
    noise = rng.normal(size=(n, d))
    X = means[labels] + np.einsum("nij,nj->ni", factors[labels], noise)
    return Mixture(X, labels, means, covariances)


def hide_mcar(X: np.ndarray, rate: float, seed: int = 1) -> np.ndarray:
    """``X`` with each value hidden (NaN) with probability ``rate``; a row left
    with no observed value gets one (a random column) back."""
    rng = np.random.default_rng(seed)
    hidden = rng.random(X.shape) < rate
    empty = np.flatnonzero(hidden.all(axis=1))
    hidden[empty, rng.integers(X.shape[1], size=empty.size)] = False
    return np.where(hidden, np.nan, X)


def hide_mnar(
    X: np.ndarray,
    columns: tuple[int, ...] = MNAR_COLUMNS,
    quantile: float = MNAR_QUANTILE,
) -> np.ndarray:
    """``X`` with the values of ``columns`` above that column's ``quantile``
    hidden (NaN): the largest values are the missing ones."""
    out = X.copy()
    for j in columns:
        col = out[:, j]
        col[col > np.quantile(X[:, j], quantile)] = np.nan
    return out


def mean_imputed(X: np.ndarray) -> np.ndarray:
    """``X`` with every NaN replaced by its column's mean of the observed values."""
    return np.where(np.isnan(X), np.nanmean(X, axis=0), X)


def cases(mix: Mixture) -> list[tuple[str, np.ndarray]]:
    """The missingness cases of ``mix``: (name, rows with NaN)."""
    out = [(f"MCAR {rate:.0%}", hide_mcar(mix.X, rate)) for rate in MCAR_RATES]
    cols = ", ".join(str(j) for j in MNAR_COLUMNS)
    out.append((f"MNAR top 30% of cols {cols}", hide_mnar(mix.X)))
    return out


# ------------------------------------------------------------------ quality


def mean_error(fitted: np.ndarray, true: np.ndarray, std: float) -> float:
    """Mean Euclidean distance between fitted and true means, matched one to one
    by ``linear_sum_assignment`` on their distances, divided by ``std``."""
    from scipy.optimize import linear_sum_assignment

    cost = np.linalg.norm(fitted[:, None] - true[None], axis=-1)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean() / std)


def fit(X: np.ndarray, nan_policy: str, n_init: int = 1, **params):
    """A K=5 full-covariance daskgmm fit of ``X`` (seed 0)."""
    from daskgmm import GaussianMixture

    kwargs = dict(
        n_components=K, covariance_type="full", random_state=0, n_init=n_init, **params
    )
    return GaussianMixture(nan_policy=nan_policy, **kwargs).fit(X)


def fit_method(X: np.ndarray, method: str, **params):
    """The fit of ``X`` (with NaN) by ``method`` (one of ``METHODS``, or
    ``"complete data"`` for ``X`` without NaN) and the number of rows it used;
    ``params`` go to :func:`fit`."""
    if method == "complete data":
        return fit(X, "raise", **params), len(X)
    if method == "mean imputation":
        return fit(mean_imputed(X), "raise", **params), len(X)
    model = fit(X, method, **params)
    return model, len(X) - int(model.n_omitted_)


def seen_labels(model, X: np.ndarray, method: str) -> np.ndarray:
    """The labels ``method`` gives the rows as it sees them: marginalize from
    each row's observed values, mean imputation from the imputed rows, omit none
    (-1) to the rows with a missing value."""
    if method == "mean imputation":
        return model.predict(mean_imputed(X))
    if method == "omit":
        labels = np.full(len(X), -1)
        complete = ~np.isnan(X).any(axis=1)
        labels[complete] = model.predict(X[complete])
        return labels
    return model.predict(X)


def quality_cells(
    model, rows_used: int, mix: Mixture, seconds: float, seen: np.ndarray
) -> dict[str, str]:
    """The quality table's cells of a fit of ``mix`` (with its values hidden);
    ``seen``: the labels the method gives the rows as it sees them."""
    from sklearn.metrics import adjusted_rand_score

    converged = getattr(model, "converged_", True)
    return {
        "rows used": f"{rows_used:,}",
        "iters": f"{model.n_iter_}" + ("" if converged else " (not converged)"),
        "mean error / σ": f"{mean_error(model.means_, mix.means, mix.std):.3f}",
        "ARI": f"{adjusted_rand_score(mix.labels, model.predict(mix.X)):.4f}",
        "ARI as seen": f"{adjusted_rand_score(mix.labels, seen):.4f}",
        "fit s": f"{seconds:.1f}",
    }


def failed_cells(X: np.ndarray, error: ValueError) -> dict[str, str]:
    """The quality table's cells of a fit that raised ``error``."""
    complete = int((~np.isnan(X).any(axis=1)).sum())
    note = "no complete row" if complete == 0 else f"failed: {error}"
    return {"rows used": f"{complete:,}", "iters": note}


def impute_rmse(
    model, X_missing: np.ndarray, X_true: np.ndarray
) -> tuple[float, float]:
    """RMSE on the hidden values of ``model.impute`` and of the column means."""
    hidden = np.isnan(X_missing)
    imputed = np.asarray(model.impute(X_missing))
    by_mean = mean_imputed(X_missing)
    rmse = np.sqrt(np.mean((imputed[hidden] - X_true[hidden]) ** 2))
    rmse_mean = np.sqrt(np.mean((by_mean[hidden] - X_true[hidden]) ** 2))
    return float(rmse), float(rmse_mean)


# ------------------------------------------------------------------ cost


def per_iteration(X: np.ndarray, nan_policy: str, repeats: int) -> float:
    """Median EM seconds per iteration of 5-iteration fits (``tol=0``), after a
    warm-up fit."""
    from daskgmm import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit(X, nan_policy, max_iter=5, tol=0.0)
        times = [
            fit(X, nan_policy, max_iter=5, tol=0.0).fit_timings_[
                "seconds_per_iteration"
            ]
            for _ in range(repeats)
        ]
    return statistics.median(times)


# ------------------------------------------------------------------ output


def print_table(columns: list[str], rows: list[dict[str, str]]) -> None:
    """A markdown table of ``rows`` (missing cells empty)."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row.get(c, "") for c in columns) + " |")
    print()


def print_quality(
    args: argparse.Namespace,
    quality: list[dict[str, str]],
    imputation: list[dict[str, str]],
) -> None:
    """The quality and imputation tables."""
    print(
        f"## Quality (max_iter={args.max_iter}, tol={args.tol:g}, "
        f"n_init={args.n_init}; mean error in "
        "within-component σ; ARI of the complete original rows, and of the rows "
        "as each method sees them)"
    )
    print()
    print_table(
        [
            "d",
            "missing",
            "values missing",
            "rows with a NaN",
            "method",
            "rows used",
            "iters",
            "mean error / σ",
            "ARI",
            "ARI as seen",
            "fit s",
        ],
        quality,
    )
    print(
        "## Imputation of the hidden values, MCAR 30% (impute of the marginalize "
        "fit against column means)"
    )
    print()
    print_table(
        ["d", "σ", "impute RMSE", "column-mean RMSE", "impute / column mean"],
        imputation,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--n-init", type=int, default=1)
    parser.add_argument(
        "--quick", action="store_true", help="n=20,000 and repeats=1 (a fast check)"
    )
    parser.add_argument(
        "--cost-only", action="store_true", help="only the cost table (no quality fits)"
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats = 20_000, 1

    print(
        f"# {time.strftime('%Y-%m-%d')}  {platform.machine()}, {os.cpu_count()} cores; "
        f"K={K} full, n={args.n:,}; threaded scheduler"
    )
    print()
    quality: list[dict[str, str]] = []
    imputation: list[dict[str, str]] = []
    cost: list[dict[str, str]] = []
    for d in DIMS:
        mix = make_mixture(args.n, d)
        params = dict(max_iter=args.max_iter, tol=args.tol, n_init=args.n_init)
        for name, X in [] if args.cost_only else [("none", mix.X), *cases(mix)]:
            share = f"{np.isnan(X).mean():.1%}"
            incomplete = f"{np.isnan(X).any(axis=1).mean():.1%}"
            for method in ["complete data"] if name == "none" else METHODS:
                row = {
                    "d": str(d),
                    "missing": name,
                    "values missing": share,
                    "rows with a NaN": incomplete,
                    "method": method,
                }
                try:
                    with _common.threads():
                        seconds, (model, used) = _common.timed(
                            lambda X=X, method=method, params=params: fit_method(
                                X, method, **params
                            )
                        )
                except ValueError as error:
                    row.update(failed_cells(X, error))
                else:
                    seen = seen_labels(model, X, method)
                    row.update(quality_cells(model, used, mix, seconds, seen))
                    if method == "marginalize" and name == "MCAR 30%":
                        rmse, rmse_mean = impute_rmse(model, X, mix.X)
                        imputation.append(
                            {
                                "d": str(d),
                                "σ": f"{mix.std:.3f}",
                                "impute RMSE": f"{rmse:.4f}",
                                "column-mean RMSE": f"{rmse_mean:.4f}",
                                "impute / column mean": f"{rmse / rmse_mean:.3f}",
                            }
                        )
                quality.append(row)
        for rate in MCAR_RATES:
            X = hide_mcar(mix.X, rate)
            with _common.threads():
                complete = per_iteration(mix.X, "raise", args.repeats)
                marginal = per_iteration(X, "marginalize", args.repeats)
            cost.append(
                {
                    "d": str(d),
                    "MCAR": f"{rate:.0%}",
                    "rows with a NaN": f"{np.isnan(X).any(axis=1).mean():.1%}",
                    "complete data s/iter": f"{complete:.4f}",
                    "marginalize s/iter": f"{marginal:.4f}",
                    "ratio": f"{marginal / complete:.2f}",
                }
            )

    if not args.cost_only:
        print_quality(args, quality, imputation)
    print(
        f"## Cost: EM s/iter, 5 iterations, tol=0, median of {args.repeats} "
        "(after a warm-up fit); complete data = the same rows, no value hidden"
    )
    print()
    print_table(
        [
            "d",
            "MCAR",
            "rows with a NaN",
            "complete data s/iter",
            "marginalize s/iter",
            "ratio",
        ],
        cost,
    )


if __name__ == "__main__":
    main()
