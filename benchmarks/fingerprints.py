"""Fingerprints of fitted models on fixed cases, to check a refactor changes no bit.

Run:  python benchmarks/fingerprints.py [--json PATH] [--compare PATH] [--cases ...]

Fits a fixed list of cases (seeded data from ``daskgmm.datasets.make_gmm``, fixed
``random_state``, ``max_iter`` and a small ``tol``) and prints one row per case:
``n_iter_``, ``repr(lower_bound_)`` and the first 16 hex digits of a SHA-256 over
``weights_``, ``means_``, ``covariances_``, ``precisions_cholesky_``,
``lower_bounds_`` (as a float64 array) and, where relevant, the ``predict`` labels
and the ``score`` of the data (each array hashed with its dtype and shape). The
digest of every part is kept too, so a comparison names what differs.

``--json PATH`` writes ``{case: {...}}`` (plus an ``_environment`` entry, not
compared); ``--compare PATH`` reads such a file, prints SAME or DIFFERENT per case
and exits with 1 if any case differs or is missing. Only public API is used
(``GaussianMixture``, ``select_model``, ``datasets``, ``io``), so the script runs
unchanged across refactors of the internals. The fits on NumPy input depend on the
number of cores (the row blocks do), and the compiled kernel on the CPU: compare
files made on the same machine.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import _common
import numpy as np
from _common import threads

MAX_ITER = 50
TOL = 1e-8
SEED = 0
# Overlapping components (make_gmm's default is 6), so that EM takes several
# iterations from the k-means start.
SEPARATION = 3.0
PARTS = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_cholesky_",
    "lower_bounds_",
    "predict",
    "score",
)


# ------------------------------------------------------------------ fingerprints


def _digest(value: Any) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order)."""
    array = np.ascontiguousarray(value)
    h = hashlib.sha256()
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


def fingerprint(model: Any, X: Any = None, **score_kwargs: Any) -> dict:
    """The record of one fitted model; with ``X``, its labels and score on ``X`` too."""
    parts = {
        "weights_": model.weights_,
        "means_": model.means_,
        "covariances_": model.covariances_,
        "precisions_cholesky_": model.precisions_cholesky_,
        "lower_bounds_": np.asarray(model.lower_bounds_, dtype=np.float64),
    }
    if X is not None:
        labels = model.predict(X)
        parts["predict"] = np.asarray(getattr(labels, "compute", lambda: labels)())
        parts["score"] = np.float64(model.score(X, **score_kwargs))
    digests = {name: _digest(value) for name, value in parts.items()}
    total = hashlib.sha256()
    for name in PARTS:
        if name in digests:
            total.update(f"{name}:{digests[name]};".encode())
    return {
        "n_iter": int(model.n_iter_),
        "lower_bound": repr(float(model.lower_bound_)),
        "converged": bool(model.converged_),
        "sha256": total.hexdigest()[:16],
        "parts": {name: digest[:16] for name, digest in digests.items()},
    }


def _array_record(name: str, value: Any) -> dict:
    """The record of a plain array (a column of a selection table)."""
    digest = _digest(np.asarray(value, dtype=np.float64))
    return {
        "n_iter": None,
        "lower_bound": None,
        "converged": None,
        "sha256": hashlib.sha256(f"{name}:{digest};".encode()).hexdigest()[:16],
        "parts": {name: digest[:16]},
    }


# ------------------------------------------------------------------ data


def gmm_data(
    n: int,
    d: int,
    k: int,
    *,
    seed: int = SEED,
    chunks: int = 65_536,
    separation: float = SEPARATION,
):
    """``make_gmm`` rows as a lazy dask array (row ``i`` does not depend on chunks)."""
    from daskgmm.datasets import make_gmm

    X, _, _ = make_gmm(n, d, k, chunks=chunks, separation=separation, random_state=seed)
    return X


def gmm_numpy(n: int, d: int, k: int, **kwargs: Any) -> np.ndarray:
    with threads():
        return np.asarray(gmm_data(n, d, k, **kwargs).compute())


def gmm(k: int, **params: Any):
    from daskgmm import GaussianMixture

    base = {"random_state": SEED, "max_iter": MAX_ITER, "tol": TOL}
    return GaussianMixture(k, **{**base, **params})


# ------------------------------------------------------------------ cases
# Each case function returns {row name: record}.

BENCH_SHAPES = {"a": (200_000, 3), "b": (100_000, 16), "c": (20_000, 64)}
# Random means in 64 dimensions lie far apart: closer ones for case c.
BENCH_SEPARATION = {"a": SEPARATION, "b": SEPARATION, "c": 0.5}


def case_bench(shape: str) -> Callable[[], dict]:
    def run() -> dict:
        X = gmm_numpy(*BENCH_SHAPES[shape], 8, separation=BENCH_SEPARATION[shape])
        with threads():
            model = gmm(8, covariance_type="full").fit(X)
            return {f"em_{shape}": fingerprint(model, X)}

    return run


def case_a_dask() -> dict:
    n, d = BENCH_SHAPES["a"]
    X = gmm_data(n, d, 8, chunks=50_000)
    with threads():
        model = gmm(8, covariance_type="full").fit(X)
        return {"em_a_dask": fingerprint(model, X)}


def case_a_numpy_kernel() -> dict:
    X = gmm_numpy(*BENCH_SHAPES["a"], 8)
    with threads():
        model = gmm(8, covariance_type="full", kernel="numpy").fit(X)
        return {"em_a_kernel_numpy": fingerprint(model, X)}


def case_each(
    seed: int, prefix: str, param: str, values: tuple[str, ...]
) -> Callable[[], dict]:
    """K=4 fits of the same data (``seed``), one per value of the parameter ``param``;
    the rows are named ``{prefix}_{value}``."""

    def run() -> dict:
        X = gmm_numpy(50_000, 5, 4, seed=seed)
        out = {}
        with threads():
            for value in values:
                model = gmm(4, **{param: value}).fit(X)
                out[f"{prefix}_{value}"] = fingerprint(model, X)
        return out

    return run


def case_n_init() -> dict:
    X = gmm_numpy(50_000, 5, 4, seed=2)
    with threads():
        model = gmm(4, n_init=3, init_params="k-means++").fit(X)
        return {"n_init_3": fingerprint(model, X)}


def case_sample_weight() -> dict:
    X = gmm_numpy(50_000, 5, 4, seed=4)
    w = np.random.default_rng(4).integers(0, 4, size=X.shape[0])
    with threads():
        model = gmm(4).fit(X, sample_weight=w)
        return {"sample_weight": fingerprint(model, X, sample_weight=w)}


def case_nan_omit() -> dict:
    X = gmm_numpy(50_000, 5, 4, seed=5)
    rng = np.random.default_rng(5)
    rows = rng.choice(X.shape[0], size=500, replace=False)
    X[rows, rng.integers(0, X.shape[1], size=rows.size)] = np.nan
    with threads():
        model = gmm(4, nan_policy="omit").fit(X)
        record = fingerprint(model, X)
    record["n_omitted"] = int(model.n_omitted_)
    return {"nan_omit": record}


def case_scale_log1p() -> dict:
    X = gmm_numpy(50_000, 5, 4, seed=6)
    X = X - X.min(axis=0) + 0.5  # positive
    with threads():
        model = gmm(4, scale="standard", log1p=[0]).fit(X)
        return {"scale_standard_log1p": fingerprint(model, X)}


def case_warm_start() -> dict:
    X = gmm_numpy(50_000, 5, 4, seed=7)
    with threads():
        model = gmm(4, warm_start=True, max_iter=5, tol=0.0)
        first = fingerprint(model.fit(X))
        second = fingerprint(model.fit(X), X)
    return {"warm_start_1": first, "warm_start_2": second}


def case_select_model() -> dict:
    from daskgmm import select_model

    X = gmm_numpy(30_000, 3, 3, seed=8)
    with threads():
        sel = select_model(
            X,
            n_components=range(1, 5),
            covariance_types=("full", "diag"),
            random_state=SEED,
            max_iter=MAX_ITER,
            tol=TOL,
        )
        out = {
            f"select_{k}_{ctype}": fingerprint(model, X)
            for (k, ctype), model in sel.models_.items()
        }
    out["select_table_bic"] = _array_record("bic", sel.table["bic"].to_numpy())
    return out


def case_cluster() -> dict:
    X = gmm_data(100_000, 3, 5, seed=9, chunks=50_000)
    with _common.local_client(2, processes=True):
        model = gmm(5).fit(X)
        return {"cluster_2x1": fingerprint(model, X)}


def case_zarr() -> dict:
    from daskgmm.datasets import write_gmm
    from daskgmm.io import read_zarr

    with tempfile.TemporaryDirectory(prefix="fingerprints-") as directory:
        path = os.path.join(directory, "data.zarr")
        write_gmm(path, 100_000, 4, 4, separation=SEPARATION, random_state=10)
        X = read_zarr(path, array="X")
        with threads():
            model = gmm(4, persist=False).fit(X)
            return {"zarr_streamed": fingerprint(model, X)}


def case_parquet() -> dict:
    from daskgmm.datasets import write_gmm
    from daskgmm.io import ParquetSource

    with tempfile.TemporaryDirectory(prefix="fingerprints-") as directory:
        path = os.path.join(directory, "data.parquet")
        write_gmm(
            path,
            100_000,
            4,
            4,
            format="parquet",
            separation=SEPARATION,
            random_state=11,
        )
        X = ParquetSource(path, columns=[f"x_{j}" for j in range(4)]).features()
        with threads():
            model = gmm(4).fit(X)
            return {"parquet": fingerprint(model, X)}


CASES: dict[str, Callable[[], dict]] = {
    "em_a": case_bench("a"),
    "em_b": case_bench("b"),
    "em_c": case_bench("c"),
    "em_a_dask": case_a_dask,
    "em_a_kernel_numpy": case_a_numpy_kernel,
    "covariance_types": case_each(
        1, "cov", "covariance_type", ("full", "tied", "diag", "spherical")
    ),
    "n_init": case_n_init,
    "init_params": case_each(
        3, "init", "init_params", ("kmeans", "k-means++", "random", "random_from_data")
    ),
    "sample_weight": case_sample_weight,
    "nan_omit": case_nan_omit,
    "scale_log1p": case_scale_log1p,
    "warm_start": case_warm_start,
    "select_model": case_select_model,
    "cluster": case_cluster,
    "zarr": case_zarr,
    "parquet": case_parquet,
}


# ------------------------------------------------------------------ main


def environment() -> dict:
    packages = {}
    for name in ("daskgmm", "numpy", "dask", "distributed", "numba", "zarr"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "packages": packages,
    }


COMPARED = ("n_iter", "lower_bound", "converged", "sha256", "parts", "n_omitted")


def compare(results: dict, path: str, every_case: bool) -> bool:
    """Print SAME/DIFFERENT per case of ``results`` against the file ``path``; with
    ``every_case`` (all cases ran), a case of the file not in ``results`` differs."""
    with open(path) as f:
        before = json.load(f)
    env_before = before.get("_environment", {})
    env_now = results.get("_environment", {})
    for key in ("machine", "cpu_count", "packages"):
        if env_before.get(key) != env_now.get(key):
            print(
                f"# note: {key} differs: {env_before.get(key)} then, "
                f"{env_now.get(key)} now"
            )
    print(f"\ncompared with {path}")
    all_same = True
    for case, record in results.items():
        if case.startswith("_"):
            continue
        old = before.get(case)
        if old is None:
            print(f"{case:<28} MISSING in {path}")
            all_same = False
            continue
        diffs = [k for k in COMPARED if old.get(k) != record.get(k)]
        if not diffs:
            print(f"{case:<28} SAME")
            continue
        all_same = False
        detail = []
        for key in diffs:
            if key == "parts":
                names = sorted(
                    n
                    for n in set(old["parts"]) | set(record["parts"])
                    if old["parts"].get(n) != record["parts"].get(n)
                )
                detail.append("parts " + ",".join(names))
            else:
                detail.append(f"{key} {old.get(key)} -> {record.get(key)}")
        print(f"{case:<28} DIFFERENT ({'; '.join(detail)})")
    if every_case:
        for case in before:
            if not case.startswith("_") and case not in results:
                print(f"{case:<28} NOT RUN (in {path}, no longer a case)")
                all_same = False
    return all_same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write the records here")
    parser.add_argument(
        "--compare", metavar="PATH", help="compare with a file written by --json"
    )
    parser.add_argument(
        "--cases",
        nargs="*",
        default=list(CASES),
        metavar="GLOB",
        help=f"case groups to run (glob patterns; default all: {', '.join(CASES)})",
    )
    args = parser.parse_args()
    groups = [g for g in CASES if any(fnmatch.fnmatch(g, p) for p in args.cases)]
    if not groups:
        parser.error(f"no case matches {args.cases}; cases: {', '.join(CASES)}")

    warnings.simplefilter("ignore")
    env = environment()
    print(
        f"# {env['date']}  {env['machine']}, {env['cpu_count']} cores, daskgmm "
        f"{env['packages']['daskgmm']}; max_iter={MAX_ITER}, tol={TOL}, "
        f"random_state={SEED}"
    )
    header = (
        f"{'case':<28}{'n_iter':>7}  {'lower_bound':<24}{'sha256[:16]':<18}{'s':>7}"
    )
    print(header)
    print("-" * len(header))
    results: dict = {"_environment": env}
    tic_all = time.perf_counter()
    for group in groups:
        tic = time.perf_counter()
        records = CASES[group]()
        seconds = time.perf_counter() - tic
        for i, (case, record) in enumerate(records.items()):
            results[case] = record
            n_iter = "-" if record["n_iter"] is None else str(record["n_iter"])
            bound = record["lower_bound"] or "-"
            secs = f"{seconds:.1f}" if i == 0 else ""
            print(
                f"{case:<28}{n_iter:>7}  {bound:<24}{record['sha256']:<18}{secs:>7}",
                flush=True,
            )
    total = time.perf_counter() - tic_all
    print(f"# total {total:.1f} s (seconds per group of cases, on its first row)")
    env["seconds"] = round(total, 1)

    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, sort_keys=False)
            f.write("\n")
        print(f"# written {args.json}")
    if args.compare:
        every_case = groups == list(CASES)
        return 0 if compare(results, args.compare, every_case) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
