"""Spark MLlib's Gaussian mixture on the bench_em data, from the same start point.

Optional benchmark dependency: ``pip install pyspark`` (needs a Java runtime, 17 or
later). Nothing in the ``daskgmm`` package imports this module.

Run:  python benchmarks/_spark.py [--iters 5] [--repeats 2] [--cases a b c]

How it is measured
------------------
* The fit is the RDD-based ``pyspark.mllib.clustering.GaussianMixture`` (K = 8, full
  covariance) started from exactly the bench_em start point (``initialModel``), with
  ``convergenceTol=0`` (Spark rejects negative values) and ``maxIterations=iters``.
* ``GaussianMixture.train`` is a thin wrapper that maps the Python RDD through
  ``_convert_to_vector`` and pickles it into the JVM *on every call*, so a cached
  Python RDD is re-sent to the JVM at every fit (seconds for millions of rows). To time
  the EM iterations alone, the rows are converted to a JVM ``RDD[Vector]`` once, cached
  and materialised with ``count()``, and each timed fit calls the JVM entry point that
  ``train`` itself calls (``PythonMLLibAPI.trainGaussianMixtureModel``) with the same
  arguments. ``spark_fit(..., check_train_api=True)`` also runs ``train`` once on the
  cached Python RDD, checks that it returns the same model and reports its wall time.
* Spark stops as soon as two successive log-likelihoods are exactly equal, even with
  ``convergenceTol=0``; that is what happens after a collapse. The number of EM
  iterations actually run is counted from Spark's jobs and used for
  ``seconds_per_iter``.
* ``lower_bound`` is the mean log-likelihood of the *final* model, computed in NumPy
  (Cholesky + logsumexp) on X. scikit-learn's ``lower_bound_`` after n iterations is
  that of the parameters *before* its last M-step, so it corresponds to Spark with
  n - 1 iterations (checked: Spark 3 iterations vs scikit-learn 4 agree to 3e-10).
  Spark adds no ``reg_covar`` (scikit-learn adds 1e-6 to the diagonal) and adds
  2.2e-16 to each weighted density, so the bounds agree closely, not to the last digit.
* This is the old RDD implementation: its E-step goes through breeze's generic
  matrix-vector dispatch and a rank-1 ``dsyr`` per point and component. The DataFrame
  ``pyspark.ml.clustering.GaussianMixture`` (blocked input) was 5-7x faster per
  iteration here (2M x 3: ~0.7 s, 1M x 16: ~1.3 s on local[2]) but cannot be given a
  start point, so it is not used.
* Native BLAS is used only if ``libblas.so.3`` is present; otherwise Spark falls back
  to its Java BLAS (and prints two ``netlib ... dlopen failed`` lines).
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

_SESSION = None
_SESSION_INFO: dict = {}


def spark_available() -> str | None:
    """None if pyspark and a Java runtime are usable, else a one-line reason."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark not installed (pip install pyspark)"
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        return "no java executable found (set JAVA_HOME or put java on PATH)"
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"java -version failed: {exc}"
    if out.returncode != 0:
        return f"java -version exited with {out.returncode}"
    text = out.stderr + out.stdout
    try:
        version = text.split('"')[1]
        major = int(version.split(".")[0])
        if major == 1:  # "1.8.0_…"
            major = int(version.split(".")[1])
    except (IndexError, ValueError):
        return None  # unusual banner; let Spark decide
    if major < 17:
        return f"java {version} found, pyspark 4 needs 17 or later"
    return None


def spark_session(cores: int = 2, driver_memory: str = "6g"):
    """A ``local[cores]`` SparkSession bound to 127.0.0.1, reused across calls.

    The first call starts the JVM; its wall time is kept in ``session_info()``.
    ``driver_memory`` must be set before the JVM starts: with local mode the executors
    live in the driver, so it holds the pickled input blocks, the cached
    ``RDD[Vector]`` (measured 2.5x the raw float64 size at d=3, 1.3x at d=16) and
    MLlib's own cached breeze view of it. The default 1 GiB heap leaves ~430 MiB for
    storage, too little for 2M x 16 (244 MiB raw); 6 GiB leaves ample room.
    """
    global _SESSION
    if _SESSION is not None:
        if _SESSION_INFO.get("cores") != cores:
            raise RuntimeError(
                f"a Spark session with local[{_SESSION_INFO.get('cores')}] is "
                "already running; stop it with spark_stop() first"
            )
        return _SESSION
    reason = spark_available()
    if reason:
        raise RuntimeError(reason)

    # Python workers must be this interpreter (the venv with NumPy).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    from pyspark.sql import SparkSession

    # Spark logs at WARN until setLogLevel runs; a log4j2 file makes start-up quiet.
    log_conf = os.path.join(tempfile.gettempdir(), "daskgmm-bench-log4j2.properties")
    with open(log_conf, "w") as fh:
        fh.write(
            "rootLogger.level = error\n"
            "rootLogger.appenderRef.stderr.ref = console\n"
            "appender.console.type = Console\n"
            "appender.console.name = console\n"
            "appender.console.target = SYSTEM_ERR\n"
            "appender.console.layout.type = PatternLayout\n"
            "appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n\n"
        )

    tic = time.perf_counter()
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("daskgmm-bench-spark")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.log.level", "ERROR")
        .config(
            "spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log_conf}"
        )
        .config("spark.default.parallelism", str(cores))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.sparkContext.parallelize([0], 1).count()  # first job: warms up the scheduler
    _SESSION_INFO.update(
        cores=cores,
        start_seconds=time.perf_counter() - tic,
        spark_version=spark.version,
        max_heap_gib=spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory()
        / 2**30,
    )
    _SESSION = spark
    return spark


def session_info() -> dict:
    """Start time (s), cores, Spark version and JVM heap of the running session."""
    return dict(_SESSION_INFO)


def spark_stop() -> None:
    """Stop the shared session (the JVM stays up until this Python process exits)."""
    global _SESSION
    if _SESSION is not None:
        _SESSION.stop()
        _SESSION = None
        _SESSION_INFO.clear()


# --------------------------------------------------------------------------- data


def _python_rdd(sc, X: np.ndarray, partitions: int, rows_per_block: int = 20_000):
    """A Python RDD of ``DenseVector`` rows, shipped as a few large NumPy blocks.

    ``sc.parallelize(X)`` would pickle 2M separate row arrays on the driver; sending
    ~20k-row blocks and splitting them into vectors in the Python workers is much
    cheaper. A ``DenseVector`` pickles as its raw float64 bytes, which the JVM side
    (``SerDe``) reads directly.
    """
    from pyspark.mllib.linalg import DenseVector

    X = np.ascontiguousarray(X, dtype=np.float64)
    n_blocks = max(partitions, math.ceil(len(X) / rows_per_block))
    blocks = np.array_split(X, n_blocks)
    # A local function: cloudpickle ships it by value. A module-level one would be
    # pickled by reference and the Python workers cannot import this script.
    return sc.parallelize(blocks, partitions).flatMap(
        lambda block: [DenseVector(row) for row in block]
    )


def _jvm_vectors(sc, py_rdd):
    """Convert a Python RDD of vectors into a cached, materialised JVM RDD[Vector]."""
    from pyspark.mllib.common import _py2java
    from pyspark.mllib.linalg import _convert_to_vector

    jrdd = _py2java(sc, py_rdd.map(_convert_to_vector))  # what train() does per call
    jrdd = jrdd.cache()
    n = jrdd.count()
    return jrdd, n


# --------------------------------------------------------------------------- model


def _model_args(weights, means, covariances):
    from pyspark.mllib.linalg import DenseMatrix, DenseVector

    weights = [float(w) for w in np.asarray(weights, dtype=np.float64)]
    mus = [DenseVector(np.asarray(m, dtype=np.float64)) for m in means]
    sigmas = []
    for c in np.asarray(covariances, dtype=np.float64):
        c = 0.5 * (c + c.T)  # MLlib eigen-decomposes sigma: keep it exactly symmetric
        sigmas.append(DenseMatrix(c.shape[0], c.shape[1], c.ravel(order="F")))
    return weights, mus, sigmas


class _InitialModel:
    """Duck-typed stand-in for ``GaussianMixtureModel`` accepted by ``train``.

    ``GaussianMixture.train`` only reads ``k``, ``weights`` and ``gaussians[i].mu /
    .sigma`` of ``initialModel``; pyspark cannot build a ``GaussianMixtureModel`` from
    arrays without a JVM model behind it.
    """

    def __init__(self, weights, mus, sigmas):
        from pyspark.mllib.stat.distribution import MultivariateGaussian

        self.weights = np.asarray(weights)
        self.gaussians = [
            MultivariateGaussian(m, s) for m, s in zip(mus, sigmas, strict=True)
        ]
        self.k = len(weights)


def _model_arrays(model):
    w = np.asarray(model.weights, dtype=np.float64)
    gs = model.gaussians
    mu = np.array([g.mu.toArray() for g in gs])
    cov = np.array([g.sigma.toArray() for g in gs])
    return w, mu, cov


def _loglik_stats(X, weights, means, covariances, chunk: int = 100_000):
    """Mean log-likelihood of a full-covariance mixture on X and the largest
    deviation of any responsibility from 1/K (NumPy/SciPy, independent of Spark)."""
    from scipy.linalg import cholesky, solve_triangular
    from scipy.special import logsumexp

    K, d = means.shape
    if not (
        np.all(np.isfinite(weights))
        and np.all(np.isfinite(means))
        and np.all(np.isfinite(covariances))
    ):
        return float("nan"), float("nan")
    prec_chol, log_det = [], []
    for c in covariances:
        try:
            L = cholesky(0.5 * (c + c.T), lower=True)
        except np.linalg.LinAlgError:
            return float("nan"), float("nan")
        prec_chol.append(solve_triangular(L, np.eye(d), lower=True).T)
        log_det.append(2.0 * np.log(np.diag(L)).sum())
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)
    const = log_w - 0.5 * (d * np.log(2.0 * np.pi) + np.asarray(log_det))
    total, spread = 0.0, 0.0
    logp = np.empty((min(chunk, len(X)), K))
    for start in range(0, len(X), chunk):
        x = X[start : start + chunk]
        lp = logp[: len(x)]
        for k in range(K):
            y = (x - means[k]) @ prec_chol[k]
            lp[:, k] = const[k] - 0.5 * np.einsum("ij,ij->i", y, y)
        norm = logsumexp(lp, axis=1)
        total += norm.sum()
        resp = np.exp(lp - norm[:, None])
        spread = max(spread, float(np.abs(resp - 1.0 / K).max()))
    return total / len(X), spread


def _jvm_cpu_gc_seconds(sc) -> tuple[float, float]:
    """CPU time (user + system, from /proc; NaN elsewhere) and GC time of the JVM.

    With other jobs sharing the cores, CPU seconds per iteration divided by the
    number of cores is a steadier estimate of the uncontended wall time than the
    wall time itself.
    """
    mf = sc._jvm.java.lang.management.ManagementFactory
    gc = sum(b.getCollectionTime() for b in mf.getGarbageCollectorMXBeans()) / 1e3
    try:
        pid = mf.getRuntimeMXBean().getPid()
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        cpu = float("nan")
    return cpu, gc


def _count_em_iterations(sc, group: str) -> int | None:
    """EM iterations run in a fit, from the Spark jobs of its job group.

    Each iteration runs one ``treeAggregate`` over the data (plus, for d > ~29, a small
    job for the distributed M-step); the fit also runs one ``first()``.
    """
    tracker = sc.statusTracker()
    count = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        if job is None:
            return None
        names = [
            (tracker.getStageInfo(s).name if tracker.getStageInfo(s) else "")
            for s in job.stageIds
        ]
        if any(name.startswith("treeAggregate") for name in names):
            count += 1
    return count


# --------------------------------------------------------------------------- fit


def spark_fit(
    X: np.ndarray,
    weights,
    means,
    covariances,
    iters: int,
    repeats: int = 3,
    *,
    cores: int = 2,
    partitions: int | None = None,
    warmup: bool = True,
    check_train_api: bool = False,
) -> dict:
    """Fit Spark MLlib's full-covariance Gaussian mixture from exactly this start.

    Returns ``seconds_per_iter`` (median over ``repeats`` of fit time / EM iterations
    run; data loading, caching and JVM start excluded), ``lower_bound`` (mean
    log-likelihood of the final model, NumPy), ``collapsed`` and ``note``; plus
    ``iterations_run``, ``cpu_seconds_per_iter`` and ``gc_seconds_per_iter`` (JVM
    CPU and GC time, median per iteration), ``load_seconds``, ``jvm_start_seconds``,
    ``partitions`` (default: one per core), ``fit_seconds`` (all repeats),
    ``warmup_seconds`` (an untimed 1-iteration fit run first when ``warmup``, to keep
    JIT compilation out of the timings), ``responsibility_spread`` (largest
    |responsibility - 1/K| of the final model on X) and, with ``check_train_api``,
    ``train_api_seconds`` and ``train_api_same_model``.
    """
    from pyspark.mllib.clustering import GaussianMixture, GaussianMixtureModel
    from pyspark.mllib.common import callMLlibFunc

    X = np.ascontiguousarray(X, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    covariances = np.asarray(covariances, dtype=np.float64)
    if repeats < 1 or iters < 1:
        raise ValueError("iters and repeats must be at least 1")
    K = len(weights)
    d = X.shape[1]
    if means.shape != (K, d) or covariances.shape != (K, d, d):
        raise ValueError("means must be (K, d) and covariances (K, d, d)")

    spark = spark_session(cores)
    sc = spark.sparkContext
    partitions = partitions or cores
    w0, mu0, sigma0 = _model_args(weights, means, covariances)

    tic = time.perf_counter()
    py_rdd = _python_rdd(sc, X, partitions)
    jrdd, n = _jvm_vectors(sc, py_rdd)
    load_seconds = time.perf_counter() - tic
    if n != len(X):
        raise RuntimeError(f"Spark holds {n} rows, expected {len(X)}")

    def _train(max_iterations):
        return callMLlibFunc(
            "trainGaussianMixtureModel",
            jrdd,
            K,
            0.0,  # convergenceTol: Spark requires >= 0
            int(max_iterations),
            0,  # seed: unused with an initial model
            w0,
            mu0,
            sigma0,
        )

    times, cpu_times, gc_times, model, iterations = [], [], [], None, []
    try:
        warmup_seconds = None
        if warmup:
            # The first fit in a JVM runs 2-3x slower (JIT compilation of the E-step).
            tic = time.perf_counter()
            GaussianMixtureModel(_train(1)).weights  # noqa: B018
            warmup_seconds = time.perf_counter() - tic
        for r in range(repeats):
            group = f"daskgmm-bench-{id(X)}-{r}-{time.monotonic_ns()}"
            sc.setJobGroup(group, "spark_fit")
            cpu0, gc0 = _jvm_cpu_gc_seconds(sc)
            tic = time.perf_counter()
            model = GaussianMixtureModel(_train(iters))
            w, mu, cov = _model_arrays(model)  # the fit itself is eager
            times.append(time.perf_counter() - tic)
            cpu1, gc1 = _jvm_cpu_gc_seconds(sc)
            cpu_times.append(cpu1 - cpu0)
            gc_times.append(gc1 - gc0)
            iterations.append(_count_em_iterations(sc, group))
            sc._jsc.clearJobGroup()

        train_api_seconds = None
        train_same = None
        if check_train_api:
            py_rdd.cache().count()
            tic = time.perf_counter()
            m2 = GaussianMixture.train(
                py_rdd,
                K,
                convergenceTol=0.0,
                maxIterations=int(iters),
                seed=0,
                initialModel=_InitialModel(w0, mu0, sigma0),
            )
            train_api_seconds = time.perf_counter() - tic
            w2, mu2, cov2 = _model_arrays(m2)
            train_same = bool(
                np.allclose(w2, w, rtol=1e-9, atol=0, equal_nan=True)
                and np.allclose(mu2, mu, rtol=1e-9, atol=1e-12, equal_nan=True)
                and np.allclose(cov2, cov, rtol=1e-9, atol=1e-12, equal_nan=True)
            )
            py_rdd.unpersist()
    finally:
        jrdd.unpersist()

    its = iterations[-1]
    its_run = [it if it else iters for it in iterations]
    per_iter = [t / it for t, it in zip(times, its_run, strict=True)]
    cpu_per_iter = [t / it for t, it in zip(cpu_times, its_run, strict=True)]
    gc_per_iter = [t / it for t, it in zip(gc_times, its_run, strict=True)]
    lower_bound, spread = _loglik_stats(X, w, mu, cov)
    nan = not (np.isfinite(lower_bound) and np.all(np.isfinite(w)))
    equal_weights = bool(np.all(np.abs(w - 1.0 / K) < 1e-9))
    equal_resp = bool(np.isfinite(spread) and spread < 1e-6)
    collapsed = nan or equal_resp or equal_weights

    notes = [f"{partitions} partitions, local[{cores}]"]
    if its is not None and its != iters:
        notes.append(f"Spark stopped after {its} of {iters} iterations (llh unchanged)")
    if nan:
        notes.append("NaN in the final model")
    elif equal_resp:
        notes.append("all responsibilities = 1/K (identical components)")
    elif equal_weights:
        notes.append("all weights = 1/K")
    if check_train_api:
        notes.append(
            f"train() on the Python RDD: {train_api_seconds:.1f} s, "
            f"{'same' if train_same else 'DIFFERENT'} model"
        )
    result = {
        "seconds_per_iter": statistics.median(per_iter),
        "lower_bound": float(lower_bound),
        "collapsed": bool(collapsed),
        "note": "; ".join(notes),
        "iterations_run": its,
        "cpu_seconds_per_iter": statistics.median(cpu_per_iter),
        "gc_seconds_per_iter": statistics.median(gc_per_iter),
        "fit_seconds": times,
        "load_seconds": load_seconds,
        "warmup_seconds": warmup_seconds,
        "jvm_start_seconds": _SESSION_INFO.get("start_seconds"),
        "partitions": partitions,
        "responsibility_spread": spread,
    }
    if check_train_api:
        result["train_api_seconds"] = train_api_seconds
        result["train_api_same_model"] = train_same
    return result


# --------------------------------------------------------------------------- driver


def main() -> None:
    import argparse
    import platform
    import warnings

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_em import CASES, make_data, start_point

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument(
        "--check-train-api",
        action="store_true",
        help="also run GaussianMixture.train once on the Python RDD and compare",
    )
    args = parser.parse_args()

    reason = spark_available()
    if reason:
        print(f"Spark unavailable: {reason}")
        return
    warnings.simplefilter("ignore")
    spark_session(args.cores)
    info = session_info()
    print(
        f"# {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}, "
        f"Spark {info['spark_version']} MLlib local[{args.cores}], "
        f"K=8 full covariance, {args.iters} iterations, median of {args.repeats}; "
        f"JVM/session start {info['start_seconds']:.1f} s, "
        f"heap {info['max_heap_gib']:.1f} GiB"
    )
    header = (
        f"{'case':<5}{'N x d':>16}{'Spark s/it':>12}{'CPU s/it':>10}{'GC s/it':>9}"
        f"{'iters':>6}{'load s':>8}"
        f"{'lower bound (NumPy)':>22}{'collapsed':>10}  note"
    )
    print(header)
    print("-" * len(header))
    for case in args.cases:
        n, d = CASES[case]
        X = make_data(n, d)
        init = start_point(X)
        precisions = init["precisions_init"]
        covariances = np.linalg.inv(precisions)
        covariances = 0.5 * (covariances + np.swapaxes(covariances, 1, 2))
        res = spark_fit(
            X,
            init["weights_init"],
            init["means_init"],
            covariances,
            args.iters,
            args.repeats,
            cores=args.cores,
            partitions=args.partitions,
            check_train_api=args.check_train_api,
        )
        print(
            f"{case:<5}{f'{n:,} x {d}':>16}{res['seconds_per_iter']:>12.3f}"
            f"{res['cpu_seconds_per_iter']:>10.2f}{res['gc_seconds_per_iter']:>9.2f}"
            f"{res['iterations_run']!s:>6}{res['load_seconds']:>8.1f}"
            f"{res['lower_bound']:>22.12f}{'yes' if res['collapsed'] else 'no':>10}"
            f"  {res['note']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
