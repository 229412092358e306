"""Compiled (numba) E-step chunk kernel, a drop-in for :func:`daskgmm._kernels.estep_block`.

The NumPy kernel moves (rows, K, d) temporaries through memory several times per
sub-block. This kernel makes one pass over each sub-block of ``SUB_ROWS`` rows with
every temporary in the L1/L2 cache; it is single-threaded and releases the GIL (dask
runs one call per block and thread). Accumulation is in float64 whatever the input.

Layout
------
Each sub-block is copied, centred by ``kp.center`` and cast to float64, into a
*transposed* (feature, row) buffer so that rows sit in SIMD lanes: the inner loops
run along the rows and LLVM vectorises them without reordering any sum. The kernel
is compiled with FMA contraction as its only fast-math flag (no reassociation, no
NaN/inf assumptions), so results are bitwise reproducible and non-finite rows are
detected. Features are padded with zeros to a multiple of ``TILE`` = 4 (a last tile
of 3 features, as for RGB pixels, has its own compiled loops). The copy reads the
columns of ``X`` as strided vectors (3 features: whole rows, transposed in
registers), or, when the moments also need the rows, copies rows and transposes
them from the cache (:func:`_gather`).

Per sub-block and component ``k``:

1. log-density: ``y = U_kᵀ (x − c) − U_kᵀ shift_k`` in 4x4 tiles (16 coefficients in
   registers; ``U_k`` is upper triangular, so output tile ``j`` only reads input tiles
   ``i ≤ j`` and the diagonal tile only its upper triangle), then
   ``lp = log_norm_k − |y|²/2`` and the row maximum over the components in the same
   loop (with at most 4 features, all in the tile loop);
2. log-sum-exp over the components with an in-line, vectorisable ``exp``/``log``
   (``exp``: a minimax polynomial, see :func:`_exp_nonpositive`);
   rows without a finite log-density are counted and get responsibility 0, and
   responsibilities below ``exp(-500)`` of a row's largest are set to 0 (they
   cannot change a sum, and as subnormal products they would slow the FPU ~100x);
3. statistics with ``γ`` and ``D = x − c − shift_k``: ``Σ γ``, ``Σ γ D`` and the
   upper triangle of ``Σ γ D Dᵀ`` (its diagonal only for diag/spherical).

A sum over rows is a reduction across SIMD lanes, which LLVM vectorises only with
``reassoc``. The row sums are therefore kept per lane: with few features in per-lane
accumulators (lane ``b`` sums rows ``b, b + 32, ..., b + 224`` in registers and
adds that to its accumulator; the lanes are summed once at the end of the call);
with many features, or when
those accumulators would exceed ``LANES_MAX_BYTES``, the second moments are rank-8
updates of the (d, d) accumulator on row-major copies, vectorised along the
features instead; only the rows with ``γ ≠ 0`` go into them (compacted, see
:func:`_rows_compact`), and a component whose responsibilities are all 0 in a
sub-block is skipped: both add exact zeros only, and with well-separated
clusters most responsibilities are 0.

Hot loops index flat buffers as ``lane + constant`` on views that start at a
run-time offset, so that numba's negative-index check folds away and LLVM sees
unit-stride accesses a known distance apart (no run-time alias checks); rows of the
transposed buffers are ``STRIDE`` apart, not a multiple of 4 KiB (cache aliasing).

numba is imported on first use (:func:`available`), so importing this module never
fails without it; callers fall back to :mod:`daskgmm._kernels` when it returns
False. Compiled code is cached on disk in a per-user folder, never inside the
installed package (:func:`cache_dir`: ``$DASKGMM_CACHE_DIR/numba``, by default the
platform's user cache, e.g. ``~/.cache/daskgmm/numba``); where that folder cannot be
written the kernels are compiled in memory, with one log line. A first compilation
takes 10-20 s per input dtype; :func:`warm_up` does it before a fit and says so.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from daskgmm._kernels import KernelParams, empty_stats, row_weights

# Rows per sub-block, the SIMD lanes of every loop; a compile-time constant.
SUB_ROWS = 256
# Row stride of the transposed (feature, row) buffers: not a multiple of 4 KiB, so
# that loads and stores to different features do not alias in the L1 cache.
STRIDE = SUB_ROWS + 8
TILE = 4
# Per-lane accumulators add FOLD rows of a sub-block per load and store; the
# accumulators are then SUB_ROWS/FOLD lanes long.
FOLD = 8
ACC_LANES = SUB_ROWS // FOLD
ACC_STRIDE = ACC_LANES + 8
# Moments go to per-lane accumulators up to this padded number of features and
# accumulator size (bytes); beyond, to row-major rank-8 updates vectorised along
# the features. Measured with K=8, full: per-lane is faster up to 32 features
# (1.6 MiB of accumulators, 0.10 against 0.13 s for 200k rows), slower from 40
# (2.4 MiB); the accumulators of one component, the working set, are 1/K of that.
LANES_MAX_FEATURES = 40
LANES_MAX_BYTES = 2 << 20
# Covariance types as the kernels see them.
_CODES = {"full": 0, "tied": 1, "diag": 2, "spherical": 2}
_FULL, _TIED, _DIAG = 0, 1, 2
# What _estep computes: EM statistics, hard-assignment statistics, log-likelihood.
_SOFT, _HARD, _LOGLIK = 0, 1, 2
# Flags of the compiled code: FMA contraction only (no reassociation, no NaN/inf
# assumptions), so results are deterministic and NaN/inf rows are detected.
_FASTMATH = frozenset({"contract"})

# Responsibilities below exp(-500) ≈ 7e-218 of the largest one are set to 0: they
# cannot change any sum, and their products (γ D Dᵀ) would be subnormal numbers,
# which cost the FPU ~100 cycles each (well-separated clusters in many dimensions
# have many of them).
_EXP_FLUSH = -500.0
_INV_LN2 = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 with 32 trailing zero bits
_LN2_LO = 1.90821492927058770002e-10
_SQRT2 = 1.4142135623730951
# Rounds x ln2 to an integer n in its low mantissa bits (|n| < 2^51): 1.5 · 2^52;
# adding _EXP_BIAS to those bits gives n + 1023, the exponent bits of 2^n.
_EXP_SHIFTER = 6755399441055744.0
_EXP_BIAS = 1023 - 0x4338000000000000
# Minimax polynomial of exp on [-ln2/2, ln2/2] for the relative error (Remez), the
# coefficient of r^i at i: error 3e-18, 2.3e-17 with the coefficients as doubles
# (the Taylor polynomial needs degree 13 for 5e-18).
_EXP_POLY = (
    1.0,
    1.0,
    0.5000000000000018,
    0.1666666666666617,
    0.04166666666649277,
    0.00833333333355927,
    0.0013888888951223987,
    0.00019841269432679237,
    2.4801486521427463e-05,
    2.7557622530872255e-06,
    2.7632293279459877e-07,
    2.4994304884817207e-08,
)
_MANTISSA = 0x000FFFFFFFFFFFFF
_ONE_BITS = 0x3FF0000000000000


###############################################################################
# Lazy compilation


logger = logging.getLogger("daskgmm")

_JITTED: list[str] = []
_lock = threading.Lock()
_numba_ok: bool | None = None


def _jit(func: Callable) -> Callable:
    """Mark a module-level function for compilation by :func:`available`.

    The function stays plain Python until then, so the module imports without numba.
    :func:`available` replaces every marked global by its numba dispatcher; compiled
    functions then find each other through the module's globals.
    """
    _JITTED.append(func.__name__)
    return func


CACHE_ENV = "DASKGMM_CACHE_DIR"


def cache_dir() -> Path:
    """Where compiled kernels are cached: ``numba`` in daskgmm's per-user cache folder.

    The folder is ``$DASKGMM_CACHE_DIR`` when set, else the platform's user cache
    (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS,
    ``%LOCALAPPDATA%`` on Windows) followed by ``daskgmm``. Never a folder of the
    installed package: that is read-only on many installs, lost on upgrade, and
    files numba leaves there outlive ``pip uninstall``.
    """
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "numba"
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    return base / "daskgmm" / "numba"


def _writable_cache() -> Path | None:
    """:func:`cache_dir`, created, if a file can be written in it; else None (logged
    once: the kernels are then compiled in memory by every process)."""
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        logger.warning(
            "cannot write the kernel cache %s (%s): compiling the EM kernels in "
            "memory, which every new process repeats; set %s to a writable folder",
            path,
            exc.strerror or exc,
            CACHE_ENV,
        )
        return None
    return path


def _wrap_with_numba() -> bool:
    try:
        import numba
    except ImportError:
        return False
    cache = _writable_cache()
    jit = numba.njit(
        cache=cache is not None,
        nogil=True,
        fastmath=set(_FASTMATH),
        error_model="numpy",
        boundscheck=False,
    )
    namespace = globals()
    # numba's cache locators read config.CACHE_DIR (NUMBA_CACHE_DIR) when a
    # dispatcher is made; it is set to our folder for our dispatchers only, so that
    # neither the package folder nor the user's own numba setting is used.
    saved = numba.config.CACHE_DIR
    try:
        numba.config.CACHE_DIR = str(cache) if cache is not None else saved
        for name in _JITTED:
            namespace[name] = jit(namespace[name])
    finally:
        numba.config.CACHE_DIR = saved
    return True


def available() -> bool:
    """Whether the compiled kernel can be used, i.e. numba imports.

    The first call imports numba and wraps the kernels; each kernel is compiled on its
    first use (a few seconds per input dtype) and cached on disk.
    """
    global _numba_ok
    with _lock:
        if _numba_ok is None:
            _numba_ok = _wrap_with_numba()
    return _numba_ok


_warm: set[str] = set()


def _in_cache(kernel: str = "_estep") -> bool:
    """Whether the on-disk cache holds ``kernel`` of this source (a file newer than
    ``_compiled.py``: numba recompiles when the source changes)."""
    folder = getattr(globals()[kernel], "stats", None)
    folder = getattr(folder, "cache_path", None)
    if not folder:
        return False
    source = Path(__file__).stat().st_mtime
    return any(
        index.stat().st_mtime >= source
        for index in Path(folder).glob(f"_compiled.{kernel}-*.nbi")
    )


def _warm_once(key: str, kernel: str, what: str, about: str, run: Callable) -> float:
    """``run()`` once per process under ``key`` (compiling, or loading from the
    cache, the kernels it calls), with one log line when ``kernel`` is not in the
    cache; the seconds it took, 0 when already done or without numba."""
    if not available() or key in _warm:
        return 0.0
    tic = time.perf_counter()
    if not _in_cache(kernel):
        logger.info(
            "compiling the %s for this machine (first run only, %s)", what, about
        )
    run()
    _warm.add(key)
    seconds = time.perf_counter() - tic
    logger.debug("%s (%s) ready in %.2f s", what, key, seconds)
    return seconds


def _row_dtype(dtype: np.dtype | type) -> np.dtype:
    """The dtype the kernels are compiled for, for rows of ``dtype``."""
    return np.dtype(np.float32 if np.dtype(dtype) == np.float32 else np.float64)


def warm_up(dtype: np.dtype | type = np.float64) -> float:
    """Compile, or load from the cache, the kernel for rows of ``dtype`` in this
    process, before a fit's first pass; the seconds it took.

    The first time on a machine this compiles for 10-20 s, and says so in one log
    line; later the code loads from :func:`cache_dir` in well under a second, which
    processes started afterwards on this machine (the workers of a local cluster)
    then do too instead of compiling one each. 0 without numba.
    """
    dtype = _row_dtype(dtype)
    one = KernelParams(
        covariance_type="diag",
        center=np.zeros(1),
        shifts=np.zeros((1, 1)),
        proj=np.ones((1, 1)),
        proj_shifts=np.zeros((1, 1)),
        log_norm=np.zeros(1),
    )
    return _warm_once(
        dtype.name,
        "_estep",
        "EM kernels",
        "~15 s",
        lambda: _run(np.zeros((1, 1), dtype=dtype), one, 0, None, _SOFT),
    )


def warm_up_missing(dtype: np.dtype | type = np.float64) -> float:
    """:func:`warm_up` for the kernels of ``nan_policy='marginalize'`` (the rows
    with missing values), on a block of two rows. The first time on a machine this
    takes about 25 s more, and says so in one log line."""
    d = 2
    eye = np.eye(d)[None]
    zeros = np.zeros((1, d))
    mp = SimpleNamespace(
        kp=KernelParams(
            covariance_type="full",
            center=np.zeros(d),
            shifts=zeros,
            proj=eye,
            proj_shifts=zeros,
            log_norm=np.zeros(1),
        ),
        means=zeros,
        covariances=eye,
        log_weights=np.zeros(1),
        shifts=zeros,
        precisions=eye,
        whiteners=eye,
        log_det_precisions=np.zeros(1),
    )
    X = np.array([[np.nan, 1.0], [0.5, np.nan]], dtype=_row_dtype(dtype))

    def run() -> None:
        missing_block_statistics(X, row_codes(X), mp, 0, None, 1)
        args = (zeros, eye, eye, np.zeros(1), np.zeros(1), zeros)
        missing_rows_statistics(X, None, *args, "full")

    return _warm_once(
        "missing " + X.dtype.name,
        "_missing_block",
        "kernels for missing values",
        "~25 s",
        run,
    )


###############################################################################
# Vectorisable elementary functions


@_jit
def _exp_nonpositive(x: float) -> float:
    """``exp(x)`` for ``x ≤ 0``, 0 below ``_EXP_FLUSH``; branch-free so loops vectorise.

    ``x = n ln2 + r`` with ``|r| ≤ ln2/2``; ``e^r`` by a minimax polynomial of
    degree 11 (``_EXP_POLY``), ``2^n`` built from its bits. ``n`` is rounded by
    adding ``_EXP_SHIFTER``: its low bits are then those of ``n``, so that neither a
    rounding nor a conversion instruction is needed (the loop is throughput-bound).
    """
    xc = x if x > _EXP_FLUSH else _EXP_FLUSH
    t = xc * _INV_LN2 + _EXP_SHIFTER
    nf = t - _EXP_SHIFTER
    r = (xc - nf * _LN2_HI) - nf * _LN2_LO
    c = _EXP_POLY
    p = c[11]
    for i in range(10, -1, -1):
        p = p * r + c[i]
    scale = np.int64((np.float64(t).view(np.int64) + _EXP_BIAS) << 52).view(np.float64)
    return p * scale if x > _EXP_FLUSH else 0.0


@_jit
def _log_atleast1(s: float) -> float:
    """``log(s)`` for finite ``s ≥ 1`` (a sum of exponentials whose largest is 1;
    also right for any normal ``s > 0``).

    ``s = 2^e m`` with ``m`` in [√½, √2); ``log m = 2 atanh(t)``, ``t = (m−1)/(m+1)``,
    by its odd series to ``t²¹`` (|t| < 0.172: truncation < 1e-18 relative).
    """
    bits = np.float64(s).view(np.int64)
    e = (bits >> 52) - 1023
    m = np.int64((bits & _MANTISSA) | _ONE_BITS).view(np.float64)
    big = m > _SQRT2
    m = 0.5 * m if big else m
    e = e + 1 if big else e
    f = m - 1.0
    t = f / (2.0 + f)
    t2 = t * t
    p = 1.0 / 21.0
    p = p * t2 + 1.0 / 19.0
    p = p * t2 + 1.0 / 17.0
    p = p * t2 + 1.0 / 15.0
    p = p * t2 + 1.0 / 13.0
    p = p * t2 + 1.0 / 11.0
    p = p * t2 + 1.0 / 9.0
    p = p * t2 + 1.0 / 7.0
    p = p * t2 + 1.0 / 5.0
    p = p * t2 + 1.0 / 3.0
    ef = np.float64(e)
    return ef * _LN2_HI + (2.0 * t + (2.0 * t) * (t2 * p) + ef * _LN2_LO)


###############################################################################
# Sub-block input
#
# In the hot loops every index is ``lane + constant`` on a view that starts at a
# run-time offset: numba's negative-index check then folds away and LLVM sees
# unit-stride accesses a known distance apart, so it vectorises without run-time
# alias checks.


@_jit
def _gather(X, start, nb, center, xt, xr) -> None:
    """Copy rows ``start:start+nb`` of ``X``, centred, to ``xt`` and, in row-major
    mode (``xr`` not empty), to ``xr``.

    ``xt[i*STRIDE + b]`` holds feature ``i`` of row ``b``, ``xr[b*dp + i]`` too
    (``dp`` = ``xr.size // SUB_ROWS``). Lanes ``b ≥ nb`` are zero.
    """
    d = X.shape[1]
    if d == 3:
        _gather_narrow(X, start, nb, center, xt, 3)
    elif xr.size == 0:
        _gather_columns(X, start, nb, center, xt)
    else:
        _gather_rows(X, start, nb, center, xt, xr)


@_jit
def _gather_columns(X, start, nb, center, xt) -> None:
    """:func:`_gather` to ``xt`` only, one feature (a strided column of ``X``) at a
    time; unsigned indices, so that no negative-index check stops LLVM from
    vectorising the strided loads."""
    d = X.shape[1]
    u = np.uint64
    ud = u(d)
    xf = X.reshape(X.size)[start * d :]
    for i in range(d):
        xv = xt[i * STRIDE :]
        c = center[i]
        ui = u(i)
        for b in range(nb):
            xv[b] = np.float64(xf[u(b) * ud + ui]) - c
        for b in range(nb, SUB_ROWS):
            xv[b] = 0.0


@_jit
def _gather_rows(X, start, nb, center, xt, xr) -> None:
    """:func:`_gather` to ``xr`` and ``xt``: row by row (contiguous reads), then
    transposed 8 rows at a time from the cache."""
    d = X.shape[1]
    dp = xr.size // SUB_ROWS
    for b in range(nb):
        xv = xr[b * dp :]
        xs = X[start + b]
        for i in range(d):
            xv[i] = np.float64(xs[i]) - center[i]
    for j in range(nb * dp, SUB_ROWS * dp):
        xr[j] = 0.0
    for b0 in range(0, SUB_ROWS, 8):
        xs = xr[b0 * dp :]
        for i in range(d):
            xv = xt[i * STRIDE + b0 :]
            for r in range(8):
                xv[r] = xs[r * dp + i]


@_jit
def _gather_narrow(X, start, nb, center, xt, width) -> None:
    """:func:`_gather` of ``width`` features, a compile-time constant: LLVM then
    loads whole vectors of rows and transposes them in registers."""
    xs = X.reshape(X.size)[start * width :]
    c = (center[0], center[1], center[2], center[3 % width])
    for b in range(nb):
        for i in range(width):
            xt[i * STRIDE + b] = np.float64(xs[width * b + i]) - c[i]
    for i in range(width):
        xv = xt[i * STRIDE :]
        for b in range(nb, SUB_ROWS):
            xv[b] = 0.0


###############################################################################
# Log-densities of a sub-block: lp[k*STRIDE + b]


@_jit
def _tile_coefficients(u, it, jt):
    """The 16 coefficients ``u[it:it+4, jt:jt+4]``, row by row."""
    r0, r1, r2, r3 = u[it], u[it + 1], u[it + 2], u[it + 3]
    return (
        (r0[jt], r0[jt + 1], r0[jt + 2], r0[jt + 3]),
        (r1[jt], r1[jt + 1], r1[jt + 2], r1[jt + 3]),
        (r2[jt], r2[jt + 1], r2[jt + 2], r2[jt + 3]),
        (r3[jt], r3[jt + 1], r3[jt + 2], r3[jt + 3]),
    )


# Four variants of one 4x4 tile of ``y = uᵀ x − p`` along the rows: inputs
# ``it:it+4`` (rows of ``xt``), outputs ``jt:jt+4``. ``u`` is (dp, dp) with
# ``y_j = Σ_i u[i, j] x_i``, upper triangular: output tile ``jt`` needs input tiles
# ``it ≤ jt`` only, and the diagonal tile only its upper triangle (10 of 16
# products). ``y`` holds 4 output rows. Separate functions, not a flag, so that
# each loop body is branch-free.


@_jit
def _tile_set(xt, u, it, jt, p, y, nb) -> None:
    """``y = tile − p`` (first input tile of an output tile)."""
    (a0, a1, a2, a3), (b0, b1, b2, b3), (c0, c1, c2, c3), (e0, e1, e2, e3) = (
        _tile_coefficients(u, it, jt)
    )
    p0, p1, p2, p3 = p[jt], p[jt + 1], p[jt + 2], p[jt + 3]
    xv = xt[it * STRIDE :]
    for b in range(nb):
        x0 = xv[b]
        x1 = xv[STRIDE + b]
        x2 = xv[2 * STRIDE + b]
        x3 = xv[3 * STRIDE + b]
        y[b] = (((a0 * x0 - p0) + b0 * x1) + c0 * x2) + e0 * x3
        y[STRIDE + b] = (((a1 * x0 - p1) + b1 * x1) + c1 * x2) + e1 * x3
        y[2 * STRIDE + b] = (((a2 * x0 - p2) + b2 * x1) + c2 * x2) + e2 * x3
        y[3 * STRIDE + b] = (((a3 * x0 - p3) + b3 * x1) + c3 * x2) + e3 * x3


@_jit
def _tile_add(xt, u, it, jt, y, nb) -> None:
    """``y += tile`` (middle input tiles)."""
    (a0, a1, a2, a3), (b0, b1, b2, b3), (c0, c1, c2, c3), (e0, e1, e2, e3) = (
        _tile_coefficients(u, it, jt)
    )
    xv = xt[it * STRIDE :]
    for b in range(nb):
        x0 = xv[b]
        x1 = xv[STRIDE + b]
        x2 = xv[2 * STRIDE + b]
        x3 = xv[3 * STRIDE + b]
        y[b] = (((y[b] + a0 * x0) + b0 * x1) + c0 * x2) + e0 * x3
        y[STRIDE + b] = (((y[STRIDE + b] + a1 * x0) + b1 * x1) + c1 * x2) + e1 * x3
        y2 = y[2 * STRIDE + b]
        y[2 * STRIDE + b] = (((y2 + a2 * x0) + b2 * x1) + c2 * x2) + e2 * x3
        y3 = y[3 * STRIDE + b]
        y[3 * STRIDE + b] = (((y3 + a3 * x0) + b3 * x1) + c3 * x2) + e3 * x3


@_jit
def _tile_add_norm(xt, u, it, y, q, nb) -> None:
    """``q += |y + tile|²`` for the diagonal tile (it, it), the last input tile of
    its output tile (``y`` is not stored); only its upper triangle is used."""
    (a0, a1, a2, a3), (_, b1, b2, b3), (_, _, c2, c3), (_, _, _, e3) = (
        _tile_coefficients(u, it, it)
    )
    xv = xt[it * STRIDE :]
    for b in range(nb):
        x0 = xv[b]
        x1 = xv[STRIDE + b]
        x2 = xv[2 * STRIDE + b]
        x3 = xv[3 * STRIDE + b]
        t0 = y[b] + a0 * x0
        t1 = (y[STRIDE + b] + a1 * x0) + b1 * x1
        t2 = ((y[2 * STRIDE + b] + a2 * x0) + b2 * x1) + c2 * x2
        t3 = (((y[3 * STRIDE + b] + a3 * x0) + b3 * x1) + c3 * x2) + e3 * x3
        q[b] = (((q[b] + t0 * t0) + t1 * t1) + t2 * t2) + t3 * t3


@_jit
def _tile_norm_row(coefficients, pt, xv, b, width) -> float:
    """``|tile − p|²`` of row ``b`` for a diagonal tile (its upper triangle and first
    ``width`` features only)."""
    x = (xv[b], xv[STRIDE + b], xv[2 * STRIDE + b], xv[3 * STRIDE + b])
    total = 0.0
    for c in range(width):
        t = coefficients[0][c] * x[0] - pt[c]
        for r in range(1, c + 1):
            t += coefficients[r][c] * x[r]
        total += t * t
    return total


@_jit
def _tile_norm(xt, u, it, p, q, nb, width) -> None:
    """``q = |tile − p|²`` for the diagonal tile (it, it) when it is the first input
    tile of its output tile; only its upper triangle is used, and only its first
    ``width`` features (a compile-time constant; the others are padding)."""
    coefficients = _tile_coefficients(u, it, it)
    pt = (p[it], p[it + 1], p[it + 2], p[it + 3])
    xv = xt[it * STRIDE :]
    for b in range(nb):
        q[b] = _tile_norm_row(coefficients, pt, xv, b, width)


@_jit
def _tile_log_density(xt, u, p, ln, lk, m, first, nb, width) -> None:
    """:func:`_tile_norm` and :func:`_log_density` in one loop, for at most 4
    features (one tile)."""
    coefficients = _tile_coefficients(u, 0, 0)
    pt = (p[0], p[1], p[2], p[3])
    for b in range(nb):
        _put_log_density(
            lk, m, b, ln - 0.5 * _tile_norm_row(coefficients, pt, xt, b, width), first
        )


@_jit
def _put_log_density(lk, m, b, v, first) -> None:
    """``lk[b] = v`` and ``m[b]`` its running maximum over the components (NaN if
    any is NaN; ``first``: the first component)."""
    lk[b] = v
    mb = m[b]
    m[b] = v if (first or v > mb or v != v) else mb


@_jit
def _log_density(q, ln, lk, m, first, nb) -> None:
    """``lk = ln − q/2`` and the running maximum ``m`` (:func:`_put_log_density`)."""
    for b in range(nb):
        _put_log_density(lk, m, b, ln - 0.5 * q[b], first)


@_jit
def _scaled_sqdist_tile(z, jt, scale, p, q, nb, first, width) -> None:
    """``q (=|+=) Σ_{j in jt:jt+width} (scale_j z_j − p_j)²`` along the rows
    (``width`` ≤ 4 a compile-time constant)."""
    st = (scale[jt], scale[jt + 1], scale[jt + 2], scale[jt + 3])
    pt = (p[jt], p[jt + 1], p[jt + 2], p[jt + 3])
    zv = z[jt * STRIDE :]
    for b in range(nb):
        total = 0.0
        for c in range(width):
            t = st[c] * zv[c * STRIDE + b] - pt[c]
            total += t * t
        q[b] = total if first else q[b] + total


@_jit
def _log_prob(xt, coef, ps, log_norm, code, lp, y, unit, q, m, nb, narrow) -> None:
    """``lp[k*STRIDE + b] = log π_k + log N(x_b | μ_k, Σ_k)`` for the sub-block, and
    ``m[b] = max_k lp[k*STRIDE + b]`` (NaN if any is NaN).

    ``unit`` is (2, dp): zeros and ones; ``y`` is scratch of ``dp·STRIDE``;
    ``narrow``: the last tile has 3 features (and one of padding).
    """
    n_components, dp = ps.shape
    if code == _TIED:
        # One projection y = Uᵀx for all components, then |y − Uᵀ shift_k|².
        u = coef[0]
        for jt in range(0, dp, TILE):
            yj = y[jt * STRIDE :]
            _tile_set(xt, u, 0, jt, unit[0], yj, nb)
            for it in range(TILE, jt + TILE, TILE):
                _tile_add(xt, u, it, jt, yj, nb)
    last = dp - TILE
    for k in range(n_components):
        ln = log_norm[k]
        lk = lp[k * STRIDE :]
        if code == _FULL and dp == TILE:
            # One tile: the log-densities straight from the loop over the rows.
            if narrow:
                _tile_log_density(xt, coef[k], ps[k], ln, lk, m, k == 0, nb, 3)
            else:
                _tile_log_density(xt, coef[k], ps[k], ln, lk, m, k == 0, nb, 4)
            continue
        for jt in range(0, dp, TILE):
            z = y if code == _TIED else xt
            scale = unit[1] if code == _TIED else coef[k, 0]
            if code == _FULL and jt == 0:
                _tile_norm(xt, coef[k], jt, ps[k], q, nb, 4)
            elif code == _FULL:
                u = coef[k]
                _tile_set(xt, u, 0, jt, ps[k], y, nb)
                for it in range(TILE, jt, TILE):
                    _tile_add(xt, u, it, jt, y, nb)
                _tile_add_norm(xt, u, jt, y, q, nb)
            elif narrow and jt == last:
                _scaled_sqdist_tile(z, jt, scale, ps[k], q, nb, jt == 0, 3)
            else:
                _scaled_sqdist_tile(z, jt, scale, ps[k], q, nb, jt == 0, 4)
        _log_density(q, ln, lk, m, k == 0, nb)


###############################################################################
# Responsibilities


@_jit
def _count_bad(m, nb) -> int:
    """The number of rows whose largest log-density ``m`` is not finite."""
    n_bad = 0
    for b in range(nb):
        n_bad += 0 if abs(m[b]) < np.inf else 1
    return n_bad


@_jit
def _drop_bad_rows(lp, m, wv, xt, xr, d, nb):
    """Give the rows without a finite log-density weight 0 and zero inputs.

    Returns the first such row of the sub-block and the weight the rows had.
    """
    first = -1
    weight = 0.0
    dp = xr.size // SUB_ROWS
    for b in range(nb):
        if abs(m[b]) < np.inf:
            continue
        if first < 0:
            first = b
        weight += wv[b]
        m[b] = 0.0
        wv[b] = 0.0
        for k in range(lp.size // STRIDE):
            lp[k * STRIDE + b] = 0.0
        for i in range(d):
            xt[i * STRIDE + b] = 0.0
            if dp:
                xr[b * dp + i] = 0.0
    return first, weight


@_jit
def _responsibilities(lp, n_components, m, wv, s, ll, nb) -> None:
    """Turn ``lp`` into weighted responsibilities; ``ll[b] += wv[b] · logsumexp``.

    Lanes ``nb ≤ b < SUB_ROWS`` get responsibility 0.
    """
    for b in range(nb):
        s[b] = 0.0
    for k in range(n_components):
        lk = lp[k * STRIDE :]
        for b in range(nb):
            e = _exp_nonpositive(lk[b] - m[b])
            lk[b] = e
            s[b] += e
    for b in range(nb):
        sb = s[b]
        ll[b] += wv[b] * (_log_atleast1(sb) + m[b])
        s[b] = wv[b] / sb
    for k in range(n_components):
        lk = lp[k * STRIDE :]
        for b in range(nb):
            lk[b] *= s[b]
        for b in range(nb, SUB_ROWS):
            lk[b] = 0.0


@_jit
def _hard_responsibilities(lp, n_components, m, wv, nb) -> None:
    """Row ``b`` wholly (weight ``wv[b]``) to its first most probable component."""
    for b in range(nb):
        best = 0
        for k in range(n_components):
            if lp[k * STRIDE + b] == m[b]:
                best = k
                break
        for k in range(n_components):
            lp[k * STRIDE + b] = 0.0
        lp[best * STRIDE + b] = wv[b]
    for k in range(n_components):
        for b in range(nb, SUB_ROWS):
            lp[k * STRIDE + b] = 0.0


###############################################################################
# Statistics, few features: per-lane accumulators acc[slot*ACC_STRIDE + lane]
#
# Lane ``b`` of a slot accumulates rows b, b + ACC_LANES, ..., b + (FOLD-1) ACC_LANES
# of every sub-block: their sum, in that order from 0 (chains of FMAs), in
# registers (tuples) for all the slots of a tile, then added once to the
# accumulator in memory: stores between the loads of the rows would
# make LLVM reload them, as it cannot tell the accumulators from the inputs, and a
# chain from 0 keeps the accumulators' rounding errors to one per sub-block and
# lane, as a pairwise sum would (a chain from the accumulator rounds at its
# magnitude at every row: 25 times the error over 2M rows).
_ZERO4 = (0.0, 0.0, 0.0, 0.0)
_ZERO16 = (_ZERO4, _ZERO4, _ZERO4, _ZERO4)


@_jit
def _lane_row(g, xv, b, c):
    """``γ``, ``D = x − c`` and ``γ D`` (4-tuples) of the row in lane ``b`` of the
    transposed tile ``xv``."""
    gb = g[b]
    d0 = xv[b] - c[0]
    d1 = xv[STRIDE + b] - c[1]
    d2 = xv[2 * STRIDE + b] - c[2]
    d3 = xv[3 * STRIDE + b] - c[3]
    return gb, (d0, d1, d2, d3), (gb * d0, gb * d1, gb * d2, gb * d3)


@_jit
def _add_slots4(v, o, a, lo, hi) -> None:
    """``a[t]`` added to slot ``o + t ACC_STRIDE`` of ``v`` for ``lo ≤ t < hi``."""
    for t in range(lo, hi):
        v[o + t * ACC_STRIDE] += a[t]


@_jit
def _add4(a, w):
    """``a + w`` (4-tuples)."""
    return (a[0] + w[0], a[1] + w[1], a[2] + w[2], a[3] + w[3])


@_jit
def _fma4(a, w, e):
    """``a + w e`` elementwise (4-tuples)."""
    return (
        a[0] + w[0] * e[0],
        a[1] + w[1] * e[1],
        a[2] + w[2] * e[2],
        a[3] + w[3] * e[3],
    )


@_jit
def _axpy4(a, s, e):
    """``a + s e`` (4-tuples, scalar ``s``)."""
    return (a[0] + s * e[0], a[1] + s * e[1], a[2] + s * e[2], a[3] + s * e[3])


@_jit
def _outer4(a, w, e):
    """``a + w eᵀ`` (4 rows of 4)."""
    return (
        _axpy4(a[0], w[0], e),
        _axpy4(a[1], w[1], e),
        _axpy4(a[2], w[2], e),
        _axpy4(a[3], w[3], e),
    )


# One row of a lane into a tile's accumulators (the FOLD = 8 rows of a lane are
# written out: LLVM does not unroll such loops, and without unrolling it does not
# vectorise the loop over the lanes).


@_jit
def _diagonal_step(a1, a2, g, xv, o, c):
    """Row ``o`` of a diagonal tile into ``a1`` (``Σ γ D``) and ``a2`` (``Σ γ D Dᵀ``)."""
    _, d, w = _lane_row(g, xv, o, c)
    return _add4(a1, w), _outer4(a2, w, d)


@_jit
def _offdiagonal_step(a, g, xi, xj, o, ci, cj):
    """Row ``o`` of an off-diagonal tile into ``a`` (``Σ γ D_i D_jᵀ``)."""
    _, _, w = _lane_row(g, xi, o, ci)
    _, d, _ = _lane_row(g, xj, o, cj)
    return _outer4(a, w, d)


@_jit
def _diag_step(a1, a2, g, xv, o, c):
    """Row ``o`` of 4 features into ``a1`` (``Σ γ D``) and ``a2`` (``Σ γ D²``)."""
    _, d, w = _lane_row(g, xv, o, c)
    return _add4(a1, w), _fma4(a2, w, d)


@_jit
def _lanes_nk(g, nkv) -> None:
    """``Σ γ`` per lane."""
    for b in range(ACC_LANES):
        a = 0.0
        a += g[b]
        a += g[b + ACC_LANES]
        a += g[b + 2 * ACC_LANES]
        a += g[b + 3 * ACC_LANES]
        a += g[b + 4 * ACC_LANES]
        a += g[b + 5 * ACC_LANES]
        a += g[b + 6 * ACC_LANES]
        a += g[b + 7 * ACC_LANES]
        nkv[b] += a


@_jit
def _lanes_diagonal_tile(xt, g, c, it, s1v, s2v, width) -> None:
    """Features ``it:it+width``: ``Σ γ D`` (slots of ``s1v``) and the upper triangle
    of the diagonal tile of ``Σ γ D Dᵀ`` (slots ``4r + c``, ``r ≤ c``, of ``s2v``);
    ``width`` ≤ 4 is a compile-time constant (the other slots are neither stored
    nor, as dead code, computed)."""
    xv = xt[it * STRIDE :]
    for b in range(ACC_LANES):
        a1 = _ZERO4
        a2 = _ZERO16
        a1, a2 = _diagonal_step(a1, a2, g, xv, b, c)
        a1, a2 = _diagonal_step(a1, a2, g, xv, b + ACC_LANES, c)
        a1, a2 = _diagonal_step(a1, a2, g, xv, b + 2 * ACC_LANES, c)
        a1, a2 = _diagonal_step(a1, a2, g, xv, b + 3 * ACC_LANES, c)
        a1, a2 = _diagonal_step(a1, a2, g, xv, b + 4 * ACC_LANES, c)
        a1, a2 = _diagonal_step(a1, a2, g, xv, b + 5 * ACC_LANES, c)
        a1, a2 = _diagonal_step(a1, a2, g, xv, b + 6 * ACC_LANES, c)
        a1, a2 = _diagonal_step(a1, a2, g, xv, b + 7 * ACC_LANES, c)
        _add_slots4(s1v, b, a1, 0, width)
        for r in range(width):
            _add_slots4(s2v, TILE * r * ACC_STRIDE + b, a2[r], r, width)


@_jit
def _lanes_offdiagonal_tile(xt, g, ci, cj, it, jt, s2v) -> None:
    """Tile (it, jt), ``it < jt``, of ``Σ γ D Dᵀ``: the 16 slots ``4r + c``."""
    xi = xt[it * STRIDE :]
    xj = xt[jt * STRIDE :]
    for b in range(ACC_LANES):
        a = _ZERO16
        a = _offdiagonal_step(a, g, xi, xj, b, ci, cj)
        a = _offdiagonal_step(a, g, xi, xj, b + ACC_LANES, ci, cj)
        a = _offdiagonal_step(a, g, xi, xj, b + 2 * ACC_LANES, ci, cj)
        a = _offdiagonal_step(a, g, xi, xj, b + 3 * ACC_LANES, ci, cj)
        a = _offdiagonal_step(a, g, xi, xj, b + 4 * ACC_LANES, ci, cj)
        a = _offdiagonal_step(a, g, xi, xj, b + 5 * ACC_LANES, ci, cj)
        a = _offdiagonal_step(a, g, xi, xj, b + 6 * ACC_LANES, ci, cj)
        a = _offdiagonal_step(a, g, xi, xj, b + 7 * ACC_LANES, ci, cj)
        for r in range(TILE):
            _add_slots4(s2v, TILE * r * ACC_STRIDE + b, a[r], 0, TILE)


@_jit
def _lanes_diag_tile(xt, g, c, jt, s1v, s2v, width) -> None:
    """Features ``jt:jt+width`` of ``Σ γ D`` (``s1v``) and ``Σ γ D²`` (``s2v``);
    ``width`` ≤ 4 is a compile-time constant."""
    xv = xt[jt * STRIDE :]
    for b in range(ACC_LANES):
        a1 = _ZERO4
        a2 = _ZERO4
        a1, a2 = _diag_step(a1, a2, g, xv, b, c)
        a1, a2 = _diag_step(a1, a2, g, xv, b + ACC_LANES, c)
        a1, a2 = _diag_step(a1, a2, g, xv, b + 2 * ACC_LANES, c)
        a1, a2 = _diag_step(a1, a2, g, xv, b + 3 * ACC_LANES, c)
        a1, a2 = _diag_step(a1, a2, g, xv, b + 4 * ACC_LANES, c)
        a1, a2 = _diag_step(a1, a2, g, xv, b + 5 * ACC_LANES, c)
        a1, a2 = _diag_step(a1, a2, g, xv, b + 6 * ACC_LANES, c)
        a1, a2 = _diag_step(a1, a2, g, xv, b + 7 * ACC_LANES, c)
        _add_slots4(s1v, b, a1, 0, width)
        _add_slots4(s2v, b, a2, 0, width)


###############################################################################
# Statistics, many features: row-major updates vectorised along the features
#
# Indices are uint64 here (no negative-index check) because the row offsets vary
# inside the loops.


@_jit
def _rows_compact(xr, g, sh, dr, gc, nb8) -> int:
    """The rows of the sub-block with ``γ ≠ 0``, in order: ``D = x − c − shift`` to
    consecutive rows of ``dr`` and ``γ`` to ``gc``, padded with zero rows to a
    multiple of 8. Returns that padded number of rows.

    Rows with ``γ = 0`` add exact zeros to the moments (their ``D`` is finite), so
    leaving them out only regroups the sums; with well-separated clusters most of a
    component's rows have ``γ = 0``.
    """
    dp = sh.size
    u = np.uint64
    udp = u(dp)
    count = 0
    for b in range(nb8):
        gb = g[b]
        if gb == 0.0:
            continue
        r = u(b) * udp
        o = u(count) * udp
        for j0 in range(dp):
            j = u(j0)
            dr[o + j] = xr[r + j] - sh[j]
        gc[count] = gb
        count += 1
    n8 = (count + 7) // 8 * 8
    for c in range(count, n8):
        gc[c] = 0.0
        o = u(c) * udp
        for j0 in range(dp):
            dr[o + u(j0)] = 0.0
    return n8


@_jit
def _rows_outer_update(dr, g, s1v, s2v, dp, nb8) -> None:
    """``s1 += Σ γ D`` and the upper triangle of ``s2 += Σ γ D Dᵀ`` on the row-major
    rows ``D`` of ``dr`` (from :func:`_rows_compact`), 8 rows by 2 output rows at a
    time.

    The row length ``dp`` is a multiple of 8, so that the loops along a row run in
    whole vectors from a multiple of 8; blocks of 8 columns below the diagonal are
    skipped and the rest of the lower triangle is overwritten by :func:`_finish`.
    """
    u = np.uint64
    udp = u(dp)
    for b0 in range(0, nb8, 8):
        g0, g1, g2, g3 = g[b0], g[b0 + 1], g[b0 + 2], g[b0 + 3]
        g4, g5, g6, g7 = g[b0 + 4], g[b0 + 5], g[b0 + 6], g[b0 + 7]
        r0 = u(b0) * udp
        r1 = r0 + udp
        r2 = r1 + udp
        r3 = r2 + udp
        r4 = r3 + udp
        r5 = r4 + udp
        r6 = r5 + udp
        r7 = r6 + udp
        for j0 in range(dp):
            j = u(j0)
            s1v[j] += (
                ((g0 * dr[r0 + j] + g1 * dr[r1 + j]) + g2 * dr[r2 + j])
                + g3 * dr[r3 + j]
            ) + (
                ((g4 * dr[r4 + j] + g5 * dr[r5 + j]) + g6 * dr[r6 + j])
                + g7 * dr[r7 + j]
            )
        for i0 in range(0, dp, 2):
            i = u(i0)
            i1 = i + u(1)
            v0, w0 = g0 * dr[r0 + i], g0 * dr[r0 + i1]
            v1, w1 = g1 * dr[r1 + i], g1 * dr[r1 + i1]
            v2, w2 = g2 * dr[r2 + i], g2 * dr[r2 + i1]
            v3, w3 = g3 * dr[r3 + i], g3 * dr[r3 + i1]
            v4, w4 = g4 * dr[r4 + i], g4 * dr[r4 + i1]
            v5, w5 = g5 * dr[r5 + i], g5 * dr[r5 + i1]
            v6, w6 = g6 * dr[r6 + i], g6 * dr[r6 + i1]
            v7, w7 = g7 * dr[r7 + i], g7 * dr[r7 + i1]
            a0 = i * udp
            a1 = a0 + udp
            for j0 in range(i0 // 8 * 8, dp):
                j = u(j0)
                e0, e1, e2, e3 = dr[r0 + j], dr[r1 + j], dr[r2 + j], dr[r3 + j]
                e4, e5, e6, e7 = dr[r4 + j], dr[r5 + j], dr[r6 + j], dr[r7 + j]
                s2v[a0 + j] += (((v0 * e0 + v1 * e1) + v2 * e2) + v3 * e3) + (
                    ((v4 * e4 + v5 * e5) + v6 * e6) + v7 * e7
                )
                s2v[a1 + j] += (((w0 * e0 + w1 * e1) + w2 * e2) + w3 * e3) + (
                    ((w4 * e4 + w5 * e5) + w6 * e6) + w7 * e7
                )


@_jit
def _rows_diag_update(dr, g, s1v, s2v, dp, nb8) -> None:
    """``s1 += Σ γ D`` and ``s2 += Σ γ D²`` on the row-major rows ``D`` of ``dr``,
    4 rows at a time."""
    u = np.uint64
    udp = u(dp)
    for b0 in range(0, nb8, 4):
        g0, g1, g2, g3 = g[b0], g[b0 + 1], g[b0 + 2], g[b0 + 3]
        r0 = u(b0) * udp
        r1 = r0 + udp
        r2 = r1 + udp
        r3 = r2 + udp
        for j0 in range(dp):
            j = u(j0)
            d0 = dr[r0 + j]
            d1 = dr[r1 + j]
            d2 = dr[r2 + j]
            d3 = dr[r3 + j]
            w0 = g0 * d0
            w1 = g1 * d1
            w2 = g2 * d2
            w3 = g3 * d3
            s1v[j] += ((w0 + w1) + w2) + w3
            s2v[j] += ((w0 * d0 + w1 * d1) + w2 * d2) + w3 * d3


@_jit
def _accumulate(xt, xr, dr, gc, lp, shifts, code, acc, nb8, narrow) -> None:
    """Add the sub-block's responsibilities ``lp`` to the accumulators ``acc``.

    ``acc`` is ``(nkl, s1, s2)``: per-lane ``Σ γ`` and either per-lane moments or,
    when ``xr`` is not empty (row-major mode), the moments themselves; ``shifts`` is
    then padded to the row length of ``xr``, and ``dr``, ``gc`` are scratch for the
    rows with ``γ ≠ 0``. ``narrow``: the last tile has 3 features.

    A component whose responsibilities in the sub-block are all 0 would add exact
    zeros: it is skipped.
    """
    nkl, s1, s2 = acc
    n_components, dp = shifts.shape
    rows = xr.size > 0
    for k in range(n_components):
        g = lp[k * STRIDE :]
        if not _any_nonzero(g, nb8):
            continue
        sh = shifts[k]
        _lanes_nk(g, nkl[k * ACC_STRIDE :])
        if rows:
            n8 = _rows_compact(xr, g, sh, dr, gc, nb8)
            if code == _DIAG:
                _rows_diag_update(dr, gc, s1[k * dp :], s2[k * dp :], dp, n8)
            else:
                s2v = s2[0 if code == _TIED else k * dp * dp :]
                _rows_outer_update(dr, gc, s1[k * dp :], s2v, dp, n8)
        else:
            for it in range(0, dp, TILE):
                ci = (sh[it], sh[it + 1], sh[it + 2], sh[it + 3])
                s1v = s1[(k * dp + it) * ACC_STRIDE :]
                three = narrow and it == dp - TILE
                if code == _DIAG:
                    s2v = s2[(k * dp + it) * ACC_STRIDE :]
                    if three:
                        _lanes_diag_tile(xt, g, ci, it, s1v, s2v, 3)
                    else:
                        _lanes_diag_tile(xt, g, ci, it, s1v, s2v, 4)
                    continue
                slot = _tile_pair_slot(it, it, dp, 0 if code == _TIED else k)
                s2v = s2[slot * ACC_STRIDE :]
                if three:
                    _lanes_diagonal_tile(xt, g, ci, it, s1v, s2v, 3)
                else:
                    _lanes_diagonal_tile(xt, g, ci, it, s1v, s2v, 4)
                for jt in range(it + TILE, dp, TILE):
                    cj = (sh[jt], sh[jt + 1], sh[jt + 2], sh[jt + 3])
                    slot = _tile_pair_slot(it, jt, dp, 0 if code == _TIED else k)
                    s2v = s2[slot * ACC_STRIDE :]
                    _lanes_offdiagonal_tile(xt, g, ci, cj, it, jt, s2v)


@_jit
def _any_nonzero(g, nb) -> bool:
    """Whether any of ``g[:nb]`` is not 0 (NaN counts as not 0)."""
    for b in range(nb):
        if g[b] != 0.0:
            return True
    return False


@_jit
def _tile_pair_slot(it: int, jt: int, dp: int, k: int) -> int:
    """First of the 16 per-lane slots of feature tile pair (it, jt) of component k."""
    n_tiles = dp // TILE
    ti = it // TILE
    pair = ti * n_tiles - ti * (ti - 1) // 2 + (jt - it) // TILE
    return 16 * (k * (n_tiles * (n_tiles + 1) // 2) + pair)


###############################################################################
# Whole block


@_jit
def _lane_sum(acc, slot) -> float:
    """``Σ_lanes acc[slot*ACC_STRIDE + lane]`` in lane order."""
    total = 0.0
    o = slot * ACC_STRIDE
    for b in range(ACC_LANES):
        total += acc[o + b]
    return total


@_jit
def _finish(code, row_length, acc, nk, s1, s2) -> None:
    """Write the accumulators into ``nk``, ``s1`` and ``s2`` (unpadded, mirrored).

    ``row_length`` is that of the row-major moments, 0 for per-lane moments.
    """
    nkl, s1a, s2a = acc
    n_components, d = s1.shape
    rows = row_length > 0
    dp = row_length if rows else (d + TILE - 1) // TILE * TILE
    for k in range(n_components):
        nk[k] = _lane_sum(nkl, k)
        for i in range(d):
            j = k * dp + i
            s1[k, i] = s1a[j] if rows else _lane_sum(s1a, j)
            if code == _DIAG:
                s2[k, 0, i] = s2a[j] if rows else _lane_sum(s2a, j)
    if code == _DIAG:
        return
    for k2 in range(s2.shape[0]):
        for i in range(d):
            for j in range(i, d):
                if rows:
                    v = s2a[(k2 * dp + i) * dp + j]
                else:
                    it = i // TILE * TILE
                    jt = j // TILE * TILE
                    slot = _tile_pair_slot(it, jt, dp, k2)
                    v = _lane_sum(s2a, slot + TILE * (i - it) + j - jt)
                s2[k2, i, j] = v
                s2[k2, j, i] = v


@_jit
def _estep(
    X, w, center, shifts, coef, ps, log_norm, code, dcode, mode, lanes, nk, s1, s2
):
    """Statistics of the block ``X`` into ``nk``, ``s1``, ``s2`` (zeroed float64).

    ``code`` is the covariance type of the statistics, ``dcode`` that of the
    densities (``coef``, ``ps``); ``mode`` 0 gives soft responsibilities (EM), 1
    gives every row wholly to its most probable component (k-means' assignment), 2
    computes the log-likelihood only (no statistics). ``lanes``: accumulate the
    moments per lane (few features) rather than on row-major copies. ``w`` is empty when unweighted. Returns ``(loglik, n_bad,
    first_bad, bad_weight)``: ``first_bad`` is -1 when no row is bad, ``bad_weight``
    the weight of the bad rows (their number when unweighted).
    """
    n, d = X.shape
    n_components, dp = shifts.shape
    k2 = 1 if code == _TIED else n_components
    # Scratch of fixed size whatever n, and the accumulators, all float64.
    xt = np.zeros(dp * STRIDE)
    y = np.zeros(dp * STRIDE)
    lp = np.zeros(n_components * STRIDE)
    work = np.zeros(4 * STRIDE)
    q = work[:STRIDE]
    m = work[STRIDE : 2 * STRIDE]
    s = work[2 * STRIDE : 3 * STRIDE]
    wv = work[3 * STRIDE :]
    ll = np.zeros(SUB_ROWS)
    unit = np.zeros((2, dp))
    for j in range(dp):
        unit[1, j] = 1.0
    # Row-major mode: rows padded to a multiple of 8 features (whole vectors).
    row_length = 0 if lanes else (dp + 7) // 8 * 8
    xr = np.zeros(SUB_ROWS * row_length)
    dr = np.zeros(SUB_ROWS * row_length)
    gc = np.zeros(SUB_ROWS)
    acc_shifts = shifts
    if not lanes:
        acc_shifts = np.zeros((n_components, row_length))
        for k in range(n_components):
            for j in range(dp):
                acc_shifts[k, j] = shifts[k, j]
        rl = row_length
        acc = (
            np.zeros(n_components * ACC_STRIDE),
            np.zeros(n_components * rl),
            np.zeros(n_components * rl if code == _DIAG else k2 * rl * rl),
        )
    else:
        n_slots = n_components * dp
        if code != _DIAG:
            n_slots = _tile_pair_slot(0, 0, dp, k2)
        acc = (
            np.zeros(n_components * ACC_STRIDE),
            np.zeros(n_components * dp * ACC_STRIDE),
            np.zeros(n_slots * ACC_STRIDE),
        )
    weighted = w.size > 0
    # A last tile of 3 features (e.g. RGB) skips the padding in the hottest loops.
    narrow = d % TILE == 3
    for b in range(SUB_ROWS):
        wv[b] = 1.0
    n_bad = 0
    first_bad = -1
    bad_weight = 0.0
    for start in range(0, n, SUB_ROWS):
        nb = n - start if n - start < SUB_ROWS else SUB_ROWS
        _gather(X, start, nb, center, xt, xr)
        _log_prob(xt, coef, ps, log_norm, dcode, lp, y, unit, q, m, nb, narrow)
        if weighted:
            for b in range(nb):
                wv[b] = w[start + b]
        bad = _count_bad(m, nb)
        if bad:
            first, weight = _drop_bad_rows(lp, m, wv, xt, xr, d, nb)
            if first_bad < 0:
                first_bad = start + first
            n_bad += bad
            bad_weight += weight
        if mode == _HARD:
            _hard_responsibilities(lp, n_components, m, wv, nb)
        else:
            _responsibilities(lp, n_components, m, wv, s, ll, nb)
        if bad and not weighted:
            for b in range(nb):
                wv[b] = 1.0
        if mode == _LOGLIK:
            continue
        nb8 = (nb + 7) // 8 * 8
        _accumulate(xt, xr, dr, gc, lp, acc_shifts, code, acc, nb8, narrow)
    _finish(code, row_length, acc, nk, s1, s2)
    loglik = 0.0
    for b in range(SUB_ROWS):
        loglik += ll[b]
    return loglik, n_bad, first_bad, bad_weight


###############################################################################
# Public kernel


def _padded(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` as float64 in the leading corner of a zero array of ``shape``."""
    out = np.zeros(shape)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


def _kernel_arrays(kp: KernelParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shifts, coefficients and projected shifts padded to a multiple of 4 features.

    Coefficients: (K, dp, dp) factors for full, (1, dp, dp) for tied, (K, 1, dp)
    scales for diag and spherical.
    """
    k, d = kp.n_components, kp.n_features
    dp = -(-d // TILE) * TILE
    ctype = kp.covariance_type
    if ctype == "full":
        factors = kp.proj.reshape(d, k, d).transpose(1, 0, 2)
        coef = _padded(factors, (k, dp, dp))
    elif ctype == "tied":
        coef = _padded(kp.proj[None], (1, dp, dp))
    else:
        coef = _padded(kp.proj[:, None, :], (k, 1, dp))
    shifts = _padded(kp.shifts, (k, dp))
    proj_shifts = _padded(kp.proj_shifts.reshape(k, d), (k, dp))
    return shifts, coef, proj_shifts


def _per_lane_moments(ctype: str, n_components: int, dp: int) -> bool:
    """Whether the moments go to per-lane accumulators (few features, small K)."""
    if ctype in ("diag", "spherical"):
        n_slots = 2 * n_components * dp
    else:
        tiles = dp // TILE
        pairs = tiles * (tiles + 1) // 2 * (1 if ctype == "tied" else n_components)
        n_slots = n_components * dp + 16 * pairs
    return dp <= LANES_MAX_FEATURES and n_slots * ACC_STRIDE * 8 <= LANES_MAX_BYTES


def estep_block(
    X: np.ndarray,
    kp: KernelParams,
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """:func:`daskgmm._kernels.estep_block` compiled: the same arguments (``X`` in
    float32 or float64, other dtypes cast to float64, non-contiguous blocks copied),
    the same statistics.

    Raises
    ------
    RuntimeError
        When numba is not installed (check :func:`available` first).
    ValueError
        When ``X`` or ``weights`` do not match the mixture or each other (the
        compiled code does not check bounds).
    """
    return _run(X, kp, block_index, weights, _SOFT)


def _run(
    X: np.ndarray,
    kp: KernelParams,
    block_index: int,
    weights: np.ndarray | None,
    mode: int,
    covariance_type: str | None = None,
) -> dict:
    """:func:`_estep` on one block, in ``mode``; the statistics are of
    ``covariance_type`` (default: that of ``kp``, which the densities use)."""
    if not available():
        raise RuntimeError(
            "the compiled E-step needs numba; install it (pip install numba) or use "
            "daskgmm._kernels.estep_block"
        )
    X = np.asarray(X)
    # Two compiled specialisations only: C-contiguous float32 and float64.
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    X = np.ascontiguousarray(X, dtype=dtype)
    n, d = X.shape
    if d != kp.n_features:
        raise ValueError(f"X has {d} features but the mixture has {kp.n_features}")
    ctype = covariance_type or kp.covariance_type
    stats = empty_stats(kp.n_components, d, ctype)
    w = row_weights(weights, n, stats)
    if w is not None and w.size != n:
        raise ValueError(f"weights has {w.size} values for a block of {n} rows")
    stats["n"] = n
    if n == 0:
        return stats
    shifts, coef, proj_shifts = _kernel_arrays(kp)
    s2 = stats["s2"]
    s2_3d = s2[None] if ctype == "tied" else s2[:, None, :] if s2.ndim == 2 else s2
    loglik, n_bad, first_bad, bad_weight = _estep(
        X,
        np.empty(0) if w is None else w,
        np.asarray(kp.center, dtype=np.float64),
        shifts,
        coef,
        proj_shifts,
        np.asarray(kp.log_norm, dtype=np.float64),
        _CODES[ctype],
        _CODES[kp.covariance_type],
        mode,
        _per_lane_moments(ctype, kp.n_components, shifts.shape[1]),
        stats["nk"],
        stats["s1"],
        s2_3d,
    )
    stats["loglik"] = float(loglik)
    stats["n_bad"] = int(n_bad)
    # As in the NumPy kernel, the total describes the rows used.
    stats["w"] -= bad_weight
    stats["first_bad"] = None if first_bad < 0 else (block_index, int(first_bad))
    return stats


def hard_assign_block(
    X: np.ndarray,
    centers_and_type: tuple[np.ndarray, str],
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """Compiled :func:`daskgmm._kernels.hard_assign_block`: the statistics of a block
    with every row given wholly to its nearest centre (Euclidean).

    The densities are those of unit spherical components of equal weight, whose
    most probable component is the nearest centre; ``s1``/``s2`` are shifted by the
    centres and of ``covariance_type``.
    """
    centers, ctype = centers_and_type
    centers = np.asarray(centers, dtype=np.float64)
    k, d = centers.shape
    center = centers.mean(axis=0)
    shifts = np.ascontiguousarray(centers - center)
    kp = KernelParams(
        covariance_type="diag",
        center=center,
        shifts=shifts,
        proj=np.ones((k, d)),
        proj_shifts=shifts,
        log_norm=np.zeros(k),
    )
    return _run(X, kp, block_index, weights, _HARD, ctype)


_LOGLIK_KEYS = ("loglik", "n", "w", "n_bad", "n_bad_weights", "first_bad")


def loglik_block(
    X: np.ndarray,
    kp: KernelParams,
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """Compiled :func:`daskgmm._kernels.loglik_block`: the (weighted) sum of
    log-densities, rows and total weight of a block (no statistics)."""
    stats = _run(X, kp, block_index, weights, _LOGLIK)
    return {key: stats[key] for key in _LOGLIK_KEYS}


###############################################################################
# Rows with missing values (nan_policy='marginalize')


# Rows per tile of :func:`_missing_rows`: at most MISSING_TILE_ROWS (measured, 16
# features, K=5: 128 rows 0.43 µs a row for the first stages, 64 rows 0.50, 256
# rows 0.46), and fewer when the solves ``t`` of every component (kept until the
# responsibilities are known) would exceed MISSING_TILE_VALUES values.
MISSING_TILE_ROWS = 128
MISSING_TILE_VALUES = 1 << 16


@_jit
def _by_missing_count(X):
    """The rows of ``X`` in order of their number of missing values (NaN), stable:
    the per-row branches of :func:`_missing_rows` then follow each other."""
    n, d = X.shape
    counts = np.zeros(d + 2, dtype=np.int64)
    m_of = np.empty(n, dtype=np.int64)
    for i in range(n):
        m = 0
        for j in range(d):
            v = X[i, j]
            m += v != v
        m_of[i] = m
        counts[m + 1] += 1
    for m in range(1, d + 2):
        counts[m] += counts[m - 1]
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        m = m_of[i]
        order[counts[m]] = i
        counts[m] += 1
    return order


@_jit
def _missing_tile(x, w, rows, nb, xt, ob, xr, wt, mcount, midx, run) -> None:
    """Rows ``rows[:nb]`` of ``x`` into the tile: transposed (``xt``, NaN as 0) with
    the mask of observed values ``ob``, row-major (``xr``, NaN as 0), their weights
    ``wt``, per row the number and indices of the missing features, and ``run``: the
    first row of the run of consecutive rows that miss the same features as it."""
    d = x.shape[1]
    for r in range(nb):
        i = rows[r]
        wt[r] = w[i]
        m = 0
        for j in range(d):
            v = x[i, j]
            if v != v:
                xt[j, r] = 0.0
                ob[j, r] = 0.0
                xr[r, j] = 0.0
                midx[r, m] = j
                m += 1
            else:
                xt[j, r] = v
                ob[j, r] = 1.0
                xr[r, j] = v
        mcount[r] = m
        run[r] = r
        if r > 0 and mcount[r - 1] == m:
            same = True
            for a in range(m):
                same = same and midx[r - 1, a] == midx[r, a]
            if same:
                run[r] = run[r - 1]


@_jit
def _missing_quad(dt, whiteners_k, diag, nb, zt, rt, quad) -> None:
    """Per row of the tile (``D``: ``dt``, transposed), along the rows: ``quad =
    |A D|²`` and ``r = P D = Aᵀ (A D)`` into ``rt`` (transposed; ``zt`` holds ``A
    D``)."""
    d = dt.shape[0]
    for r in range(nb):
        quad[r] = 0.0
    if diag:
        for j in range(d):
            c = whiteners_k[j, j]
            for r in range(nb):
                v = c * dt[j, r]
                quad[r] += v * v
                rt[j, r] = c * v
        return
    for a in range(d):
        for r in range(nb):
            zt[a, r] = 0.0
        for b in range(a + 1):
            c = whiteners_k[a, b]
            for r in range(nb):
                zt[a, r] += c * dt[b, r]
        for r in range(nb):
            quad[r] += zt[a, r] * zt[a, r]
    for j in range(d):
        for r in range(nb):
            rt[j, r] = 0.0
        for a in range(j, d):
            c = whiteners_k[a, j]
            for r in range(nb):
                rt[j, r] += c * zt[a, r]


@_jit
def _missing_ldl(precs, k, idx, m, lmat, dd, dinv):
    """``P_mm = L Δ Lᵀ`` of component ``k`` (``m`` features ``idx``; ``L`` unit
    lower triangular in ``lmat``, ``Δ`` in ``dd``, ``1/Δ`` in ``dinv``). Returns
    ``det Δ`` as a factor and a log, ``det Δ = factor · exp(log)``: the log is 0
    unless the product would leave the floating-point range."""
    factor = 1.0
    log_part = 0.0
    for a in range(m):
        ia = idx[a]
        for b in range(a):
            v = precs[k, ia, idx[b]]
            for c in range(b):
                v -= lmat[a, c] * lmat[b, c] * dd[c]
            lmat[a, b] = v * dinv[b]
        v = precs[k, ia, ia]
        for c in range(a):
            v -= lmat[a, c] * lmat[a, c] * dd[c]
        dd[a] = v
        dinv[a] = 1.0 / v
        factor *= v
        if not 1e-150 < factor < 1e150:
            log_part += np.log(factor)
            factor = 1.0
    return factor, log_part


@_jit
def _missing_solves(precs, k, midx, mcount, run, nb, rt, tv, det, log_part, quad, work):
    """Per row of the tile, for component ``k``: the factors of ``P_mm`` (by
    :func:`_missing_ldl`, or the previous row's in the same ``run`` of a pattern;
    ``det Δ`` into ``det`` and ``log_part``), ``t = P_mm⁻¹ r_m`` into ``tv[k, r]``
    (``r_m``: the missing features of ``rt``) and ``quad −= r_mᵀ t = Σ y²/Δ`` with
    ``y = L⁻¹ r_m``; rows with 1 and 2 missing values by the same steps written
    out. ``work``: (d + 3, d) scratch."""
    d = rt.shape[0]
    lmat = work[:d]
    dinv = work[d]
    y = work[d + 1]
    dd = work[d + 2]
    for r in range(nb):
        m = mcount[r]
        if m == 1:
            j = midx[r, 0]
            p = precs[k, j, j]
            v = rt[j, r]
            det[r] = p
            log_part[r] = 0.0
            tv[k, r, 0] = v / p
            quad[r] -= v * v / p
            continue
        if m == 2:  # the same steps, written out
            i, j = midx[r, 0], midx[r, 1]
            d0 = precs[k, i, i]
            l10 = precs[k, j, i] / d0
            d1 = precs[k, j, j] - l10 * precs[k, j, i]
            y0 = rt[i, r]
            y1 = rt[j, r] - l10 * y0
            det[r] = d0 * d1
            log_part[r] = 0.0
            t1 = y1 / d1
            tv[k, r, 1] = t1
            tv[k, r, 0] = y0 / d0 - l10 * t1
            quad[r] -= y0 * y0 / d0 + y1 * t1
            continue
        idx = midx[r]
        if r > 0 and run[r] == run[r - 1]:  # the previous row's factors
            det[r] = det[r - 1]
            log_part[r] = log_part[r - 1]
        else:
            det[r], log_part[r] = _missing_ldl(precs, k, idx, m, lmat, dd, dinv)
        correction = 0.0
        for a in range(m):
            s = rt[idx[a], r]
            for c in range(a):
                s -= lmat[a, c] * y[c]
            y[a] = s
            correction += s * s * dinv[a]
        for a in range(m - 1, -1, -1):
            s = y[a] * dinv[a]
            for c in range(a + 1, m):
                s -= lmat[c, a] * tv[k, r, c]
            tv[k, r, a] = s
        quad[r] -= correction


@_jit
def _add_conditional(precs, k, idx, m, g, diag, s2, work) -> None:
    """``s2[k] += γ P_mm⁻¹ = γ L⁻ᵀ Δ⁻¹ L⁻¹`` (by :func:`_missing_ldl`) on the ``m``
    missing features ``idx``: lower triangle, or the diagonal ``s2[k, 0]`` when
    ``diag``; 1 and 2 missing values by the inverse written out. ``work``: (2d + 2,
    d) scratch."""
    if m == 1:
        j = idx[0]
        s2[k, 0 if diag else j, j] += g / precs[k, j, j]
        return
    if m == 2:
        i, j = idx[0], idx[1]
        a, b, c = precs[k, i, i], precs[k, j, i], precs[k, j, j]
        gdet = g / (a * c - b * b)
        if diag:
            s2[k, 0, i] += gdet * c
            s2[k, 0, j] += gdet * a
        else:
            s2[k, i, i] += gdet * c
            s2[k, j, i] -= gdet * b
            s2[k, j, j] += gdet * a
        return
    d = idx.size
    lmat = work[:d]
    inv = work[d : 2 * d]
    dinv = work[2 * d]
    dd = work[2 * d + 1]
    _missing_ldl(precs, k, idx, m, lmat, dd, dinv)
    for a in range(m):
        inv[a, a] = 1.0
        for b in range(a):
            s = 0.0
            for c in range(b, a):
                s += lmat[a, c] * inv[c, b]
            inv[a, b] = -s
    for a in range(m):
        for b in range(a + 1):
            if diag and a != b:
                continue
            s = 0.0
            for c in range(a, m):
                s += inv[c, a] * dinv[c] * inv[c, b]
            if diag:
                s2[k, 0, idx[a]] += g * s
            else:
                s2[k, idx[a], idx[b]] += g * s


@_jit
def _missing_conditionals(precs, k, midx, mcount, run, nb, gk, diag, s2, work):
    """``s2[k] += Σ γ P_mm⁻¹`` over the rows of the tile with ``γ = gk[k, r] ≠ 0``:
    their ``γ`` summed over each run of rows that miss the same features, and
    :func:`_add_conditional` once per run."""
    first = -1
    g_run = 0.0
    for r in range(nb):
        g = gk[k, r]
        if g == 0.0:
            continue
        if first < 0 or run[r] != run[first]:
            if first >= 0:
                _add_conditional(
                    precs, k, midx[first], mcount[first], g_run, diag, s2, work
                )
            first = r
            g_run = 0.0
        g_run += g
    if first >= 0:
        _add_conditional(precs, k, midx[first], mcount[first], g_run, diag, s2, work)


@_jit
def _missing_responsibilities(lp, wt, nb, top, ssum, ws, g) -> float:
    """The tile's weighted responsibilities ``g`` from the log-densities ``lp``,
    along the rows (those below ``1e-18`` of the row's weight as 0: a relative
    change below rounding); returns the weighted log-likelihood."""
    k_count = lp.shape[0]
    first = lp[0]
    for r in range(nb):
        top[r] = first[r]
        ssum[r] = 0.0
    for k in range(1, k_count):
        lk = lp[k]
        for r in range(nb):
            top[r] = max(top[r], lk[r])
    for k in range(k_count):
        lk = lp[k]
        gk = g[k]
        for r in range(nb):
            e = _exp_nonpositive(lk[r] - top[r])
            gk[r] = e
            ssum[r] += e
    loglik = 0.0
    for r in range(nb):
        loglik += wt[r] * (_log_atleast1(ssum[r]) + top[r])
    for r in range(nb):
        ws[r] = wt[r] / ssum[r]
        ssum[r] *= 1e-18
    for k in range(k_count):
        gk = g[k]
        for r in range(nb):
            e = gk[r]
            gk[r] = e * ws[r] if e >= ssum[r] else 0.0
    return loglik


@_jit
def _missing_rows(
    X, w, means, precs, whiteners, log_det, log_weights, shifts, diag, nk, s1, s2
):
    """:func:`daskgmm._missing.estep_missing_block`'s statistics of rows that
    each miss some values (NaN), a tile of rows at a time; returns the weighted
    log-likelihood.

    Per row and component, with ``D = x − μ`` (missing entries as 0), along the
    rows: ``|A D|²`` and ``r = P D = Aᵀ A D`` (``P = AᵀA``, ``A`` lower
    triangular); per row: ``P_mm = L Δ Lᵀ`` of the missing block, ``t = P_mm⁻¹
    r_m`` and ``r_mᵀ t``; along the rows the log-density ``log π + ½ log det P − ½
    log det Δ − d_o/2 log 2π − ½ (|A D|² − r_mᵀ t)`` and the responsibilities.
    Then, per component, the moments of ``x̂`` (``x̂_m = μ_m − t``) by the row-major
    updates of the complete-data kernel into ``s1`` and the lower triangle of
    ``s2`` (its diagonal only, in ``s2[k, 0]``, when ``diag``), with the
    conditional covariance ``P_mm⁻¹``.
    """
    n, d = X.shape
    k_count = means.shape[0]
    log_2pi = 1.8378770664093453
    dp = (d + 7) // 8 * 8
    tile = MISSING_TILE_VALUES // max(1, k_count * d) // 8 * 8
    tile = min(MISSING_TILE_ROWS, max(8, tile))
    xt = np.zeros((d, tile))
    ob = np.zeros((d, tile))
    xr = np.zeros((tile, dp))  # rows padded to whole vectors, as ``dr``
    shifts_p = np.zeros((k_count, dp))
    shifts_p[:, :d] = shifts
    wt = np.zeros(tile)
    order = _by_missing_count(X)
    dt = np.zeros((d, tile))
    zt = np.zeros((d, tile))
    rt = np.zeros((d, tile))
    mcount = np.zeros(tile, dtype=np.int64)
    midx = np.zeros((tile, d), dtype=np.int64)
    run = np.zeros(tile, dtype=np.int64)
    quad = np.zeros(tile)
    det = np.zeros(tile)
    log_part = np.zeros(tile)
    top = np.zeros(tile)
    ssum = np.zeros(tile)
    ws = np.zeros(tile)
    lp = np.zeros((k_count, tile))
    gk = np.zeros((k_count, tile))
    tv = np.zeros((k_count, tile, d))
    work = np.zeros((2 * d + 2, d))
    dr = np.zeros(tile * dp)
    gc = np.zeros(tile)
    s1v = np.zeros(dp)
    s2v = np.zeros(dp * dp)
    loglik = 0.0
    for start in range(0, n, tile):
        nb = min(tile, n - start)
        _missing_tile(
            X, w, order[start : start + nb], nb, xt, ob, xr, wt, mcount, midx, run
        )
        for k in range(k_count):
            for j in range(d):
                mu = means[k, j]
                for r in range(nb):
                    dt[j, r] = (xt[j, r] - mu) * ob[j, r]
            _missing_quad(dt, whiteners[k], diag, nb, zt, rt, quad)
            _missing_solves(
                precs, k, midx, mcount, run, nb, rt, tv, det, log_part, quad, work
            )
            base = log_weights[k] + 0.5 * log_det[k] - 0.5 * d * log_2pi
            for r in range(nb):
                lp[k, r] = (
                    base
                    + 0.5 * mcount[r] * log_2pi
                    - 0.5 * (_log_atleast1(det[r]) + log_part[r])
                    - 0.5 * quad[r]
                )
        loglik += _missing_responsibilities(lp, wt, nb, top, ssum, ws, gk)
        for k in range(k_count):
            # x − shift of the rows with γ ≠ 0 to consecutive rows of ``dr``, the
            # missing values then completed: x̂_m − shift_m = μ_m − t − shift_m.
            n8 = _rows_compact(xr.ravel(), gk[k], shifts_p[k], dr, gc, nb)
            count = 0
            for r in range(nb):
                g = gk[k, r]
                if g == 0.0:
                    continue
                nk[k] += g
                for a in range(mcount[r]):
                    j = midx[r, a]
                    dr[count * dp + j] = means[k, j] - tv[k, r, a] - shifts[k, j]
                count += 1
            _missing_conditionals(precs, k, midx, mcount, run, nb, gk, diag, s2, work)
            if count == 0:
                continue
            if diag:
                _rows_diag_update(dr, gc, s1v, s2v, dp, n8)
                for j in range(d):
                    s2[k, 0, j] += s2v[j]
                    s2v[j] = 0.0
            else:
                _rows_outer_update(dr, gc, s1v, s2v, dp, n8)
                for b in range(d):
                    for a in range(b, d):
                        s2[k, a, b] += s2v[b * dp + a]
                for c in range(dp * dp):
                    s2v[c] = 0.0
            for j in range(d):
                s1[k, j] += s1v[j]
                s1v[j] = 0.0
    return loglik


def missing_rows_statistics(
    X: np.ndarray,
    weights: np.ndarray | None,
    means: np.ndarray,
    precisions: np.ndarray,
    whiteners: np.ndarray,
    log_det_precisions: np.ndarray,
    log_weights: np.ndarray,
    shifts: np.ndarray,
    covariance_type: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``nk``, ``s1``, ``s2`` (of ``covariance_type``) and the weighted
    log-likelihood of rows that each miss some values (none all-NaN or infinite):
    the compiled twin of the statistics of :mod:`daskgmm._missing`."""
    if not available():
        raise RuntimeError("the compiled kernels need numba (pip install numba)")
    X = np.ascontiguousarray(X, dtype=np.float64)
    n, d = X.shape
    k = means.shape[0]
    w = np.ones(n) if weights is None else np.ascontiguousarray(weights, np.float64)
    diag = covariance_type in ("diag", "spherical")
    nk = np.zeros(k)
    s1 = np.zeros((k, d))
    s2 = np.zeros((k, 1 if diag else d, d))
    loglik = _missing_rows(
        X,
        w,
        np.ascontiguousarray(means, dtype=np.float64),
        np.ascontiguousarray(precisions, dtype=np.float64),
        np.ascontiguousarray(whiteners, dtype=np.float64),
        np.ascontiguousarray(log_det_precisions, dtype=np.float64),
        np.ascontiguousarray(log_weights, dtype=np.float64),
        np.ascontiguousarray(shifts, dtype=np.float64),
        diag,
        nk,
        s1,
        s2,
    )
    if diag:
        s2 = s2[:, 0]
    else:
        lower = np.tril(s2)
        s2 = lower + np.swapaxes(np.tril(s2, -1), 1, 2)
        if covariance_type == "tied":
            s2 = s2.sum(axis=0)
    return nk, s1, s2, float(loglik)


@_jit
def _row_codes(X, codes) -> None:
    """Per row, the bits of its missing (NaN) features (at most 62 features), or
    -1 when it holds an infinite value."""
    n, d = X.shape
    for i in range(n):
        code = 0
        infinite = False
        for j in range(d):  # without branches: vectorised
            v = X[i, j]
            code |= np.int64(v != v) << j
            infinite |= abs(v) == np.inf
        codes[i] = -1 if infinite else code


def row_codes(X: np.ndarray) -> np.ndarray:
    """The missing-value pattern of each row of ``X`` (at most 62 features): bit
    ``j`` set when feature ``j`` is NaN; 0 for a complete row, -1 for a row with
    an infinite value."""
    X = np.asarray(X)
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    X = np.ascontiguousarray(X, dtype=dtype)
    codes = np.empty(X.shape[0], dtype=np.int64)
    _row_codes(X, codes)
    return codes


@_jit
def _marginal_factor(cov, o, n_obs, shifts_k, diag, coef_k, ps_k) -> float:
    """The precision Cholesky factor ``U`` of ``cov[o, o]`` (``U Uᵀ = Σ_oo⁻¹``,
    upper triangular), placed at the observed features ``o`` of ``coef_k`` (zeros
    elsewhere; a diagonal in ``coef_k[0]`` when ``diag``), ``ps_k = Uᵀ shift_o``;
    returns ``log det U``."""
    log_det = 0.0
    if diag:
        for a in range(n_obs):
            u = 1.0 / np.sqrt(cov[o[a], o[a]])
            coef_k[0, o[a]] = u
            ps_k[o[a]] = shifts_k[o[a]] * u
            log_det += np.log(u)
        return log_det
    low = np.zeros((n_obs, n_obs))  # Σ_oo = L Lᵀ
    for a in range(n_obs):
        for b in range(a + 1):
            s = cov[o[a], o[b]]
            for c in range(b):
                s -= low[a, c] * low[b, c]
            low[a, b] = np.sqrt(s) if a == b else s / low[b, b]
    inv = np.zeros((n_obs, n_obs))  # L⁻¹, lower; U = L⁻ᵀ
    for a in range(n_obs):
        inv[a, a] = 1.0 / low[a, a]
        log_det += np.log(inv[a, a])
        for b in range(a):
            s = 0.0
            for c in range(b, a):
                s += low[a, c] * inv[c, b]
            inv[a, b] = -s / low[a, a]
    for a in range(n_obs):
        for b in range(a, n_obs):
            coef_k[o[a], o[b]] = inv[b, a]
    for b in range(n_obs):
        s = 0.0
        for a in range(b + 1):
            s += shifts_k[o[a]] * inv[b, a]
        ps_k[o[b]] = s
    return log_det


@_jit
def _map_pattern(cov, mean, about, o, n_obs, mi, n_mis, diag, n, t1, t2, s1, s2):
    """Add the statistics ``n``, ``t1``, ``t2`` of one component over rows
    sharing a pattern (about ``about`` on the observed features ``o``) mapped to
    every feature, with the missing ones completed: ``x̂_m = μ_m + B (x_o − μ_o)``,
    ``B = Σ_mo Σ_oo⁻¹``, and the conditional covariance ``Σ_mm − B Σ_om``; into
    ``s1`` (d,) and ``s2`` (d, d), or its diagonal ``s2[0]`` when ``diag``; the
    statistics are about ``about``."""
    d = s1.shape[0]
    delta = np.zeros(d)  # x̂ of the row ``about``'s observed values, minus ``about``
    first = np.zeros(d)
    for a in range(n_obs):
        first[o[a]] = t1[o[a]]
    if diag:
        for a in range(n_mis):
            j = mi[a]
            delta[j] = mean[j] - about[j]
        for j in range(d):
            s1[j] += first[j] + n * delta[j]
        for a in range(n_obs):
            j = o[a]
            s2[0, j] += t2[0, j] + 2.0 * first[j] * delta[j] + n * delta[j] ** 2
        for a in range(n_mis):
            j = mi[a]
            s2[0, j] += n * (delta[j] ** 2 + cov[j, j])
        return
    # B by the Cholesky factor of Σ_oo.
    low = np.zeros((n_obs, n_obs))
    for a in range(n_obs):
        for b in range(a + 1):
            s = cov[o[a], o[b]]
            for c in range(b):
                s -= low[a, c] * low[b, c]
            low[a, b] = np.sqrt(s) if a == b else s / low[b, b]
    reg = np.zeros((n_mis, n_obs))
    for r in range(n_mis):
        y = np.zeros(n_obs)
        for a in range(n_obs):
            s = cov[mi[r], o[a]]
            for c in range(a):
                s -= low[a, c] * y[c]
            y[a] = s / low[a, a]
        for a in range(n_obs - 1, -1, -1):
            s = y[a]
            for c in range(a + 1, n_obs):
                s -= low[c, a] * reg[r, c]
            reg[r, a] = s / low[a, a]
    for r in range(n_mis):
        j = mi[r]
        s = mean[j] - about[j]
        f = 0.0
        for a in range(n_obs):
            s += reg[r, a] * (about[o[a]] - mean[o[a]])
            f += reg[r, a] * t1[o[a]]
        delta[j] = s
        first[j] = f
    for j in range(d):
        s1[j] += first[j] + n * delta[j]
    # J t2 Jᵀ: t2 on (o, o), B t2 on (m, o), B t2 Bᵀ on (m, m).
    bt = np.zeros((n_mis, n_obs))
    for r in range(n_mis):
        for b in range(n_obs):
            s = 0.0
            for a in range(n_obs):
                s += reg[r, a] * t2[o[a], o[b]]
            bt[r, b] = s
    for a in range(n_obs):
        for b in range(n_obs):
            s2[o[a], o[b]] += t2[o[a], o[b]]
    for r in range(n_mis):
        for b in range(n_obs):
            s2[mi[r], o[b]] += bt[r, b]
            s2[o[b], mi[r]] += bt[r, b]
        for q in range(n_mis):
            s = 0.0
            c = cov[mi[r], mi[q]]
            for a in range(n_obs):
                s += bt[r, a] * reg[q, a]
                c -= reg[r, a] * cov[o[a], mi[q]]
            s2[mi[r], mi[q]] += s + n * c
    for i in range(d):
        for j in range(d):
            s2[i, j] += (
                first[i] * delta[j] + delta[i] * first[j] + n * delta[i] * delta[j]
            )


# Rows of a pattern from which its moments go to per-lane accumulators (when the
# mixture's would): those are zeroed and summed per call, ~100 KiB with 16 features
# (measured, 16 features: 120 patterns of 290 rows 14 ms with them, 16 ms without).
# Up to 4 features always (small; 3 features have per-lane code only).
GROUP_LANES_ROWS = 256


@_jit
def _pattern_groups(
    X,
    w,
    starts,
    codes,
    center,
    shifts,
    means,
    covs,
    log_weights,
    about,
    diag,
    lanes,
    nk,
    s1,
    s2,
):
    """Statistics of the rows of ``X`` grouped by pattern (rows ``starts[p]`` to
    ``starts[p+1]`` miss the features of ``codes[p]``; ``X`` is overwritten there):
    each group through :func:`_estep` with the marginal mixture of its observed
    features, then mapped to every feature (:func:`_map_pattern`). Returns
    ``(loglik, n_bad, bad_weight)``."""
    n_components, d = means.shape
    dp = shifts.shape[1]
    log_2pi = 1.8378770664093453
    weighted = w.size > 0
    o = np.empty(d, dtype=np.int64)
    mi = np.empty(d, dtype=np.int64)
    mean_shift = np.zeros(dp)
    loglik = 0.0
    n_bad = 0
    bad_weight = 0.0
    code = _DIAG if diag else _FULL
    for p in range(codes.size):
        n_obs = 0
        n_mis = 0
        for j in range(d):
            if (codes[p] >> j) & 1:
                mi[n_mis] = j
                n_mis += 1
            else:
                o[n_obs] = j
                n_obs += 1
        lo, hi = starts[p], starts[p + 1]
        for i in range(lo, hi):
            for a in range(n_mis):
                X[i, mi[a]] = center[mi[a]]  # centred to 0; no weight in U
        coef = np.zeros((n_components, 1 if diag else dp, dp))
        ps = np.zeros((n_components, dp))
        log_norm = np.empty(n_components)
        for k in range(n_components):
            for j in range(d):  # the densities' shifts (``shifts``: the statistics')
                mean_shift[j] = means[k, j] - center[j]
            log_det = _marginal_factor(
                covs[k], o, n_obs, mean_shift, diag, coef[k], ps[k]
            )
            log_norm[k] = log_weights[k] + log_det - 0.5 * n_obs * log_2pi
        pn = np.zeros(n_components)
        p1 = np.zeros((n_components, d))
        p2 = np.zeros((n_components, 1 if diag else d, d))
        ll, bad, _, bw = _estep(
            X[lo:hi],
            w[lo:hi] if weighted else w,
            center,
            shifts,
            coef,
            ps,
            log_norm,
            code,
            code,
            _SOFT,
            lanes and (hi - lo >= GROUP_LANES_ROWS or dp == TILE),
            pn,
            p1,
            p2,
        )
        loglik += ll
        n_bad += bad
        bad_weight += bw
        for k in range(n_components):
            kk = 0 if s2.shape[0] == 1 and n_components > 1 else k
            _map_pattern(
                covs[k],
                means[k],
                about[k],
                o,
                n_obs,
                mi,
                n_mis,
                diag,
                pn[k],
                p1[k],
                p2[k],
                s1[k],
                s2[kk],
            )
            nk[k] += pn[k]
    return loglik, n_bad, bad_weight


@_jit
def _block_plan(codes, d, min_rows):
    """The rows of a block by kind, from their :func:`row_codes`: complete rows;
    rows with some values missing, grouped by pattern (``grouped`` rows in pattern
    order, ``starts`` and the ``patterns`` of ``min_rows`` rows or more) or
    ``rare`` (the others); and the number and first of the rows with every value
    missing (``empty``) and with an infinite value (``inf``)."""
    n = codes.size
    full = (np.int64(1) << d) - 1
    n_complete = 0
    n_partial = 0
    n_empty = 0
    first_empty = -1
    n_inf = 0
    first_inf = -1
    for i in range(n):
        c = codes[i]
        if c == 0:
            n_complete += 1
        elif c < 0:
            n_inf += 1
            if first_inf < 0:
                first_inf = i
        elif c == full:
            n_empty += 1
            if first_empty < 0:
                first_empty = i
        else:
            n_partial += 1
    complete = np.empty(n_complete, dtype=np.int64)
    partial = np.empty(n_partial, dtype=np.int64)
    a = 0
    b = 0
    for i in range(n):
        c = codes[i]
        if c == 0:
            complete[a] = i
            a += 1
        elif c > 0 and c != full:
            partial[b] = i
            b += 1
    keys = codes[partial]
    if d <= 16:  # a counting sort (stable), several times faster than merging
        offsets = np.zeros((1 << d) + 1, dtype=np.int64)
        for c in keys:
            offsets[c + 1] += 1
        for c in range(1 << d):
            offsets[c + 1] += offsets[c]
        ordered = np.empty(n_partial, dtype=np.int64)
        for i in range(n_partial):
            c = keys[i]
            ordered[offsets[c]] = partial[i]
            offsets[c] += 1
        partial = ordered
        keys = codes[partial]
    else:
        order = np.argsort(keys, kind="mergesort")  # stable
        partial = partial[order]
        keys = keys[order]
    n_groups = 0
    n_grouped = 0
    start = 0
    for i in range(1, n_partial + 1):
        if i == n_partial or keys[i] != keys[start]:
            if i - start >= min_rows:
                n_groups += 1
                n_grouped += i - start
            start = i
    grouped = np.empty(n_grouped, dtype=np.int64)
    rare = np.empty(n_partial - n_grouped, dtype=np.int64)
    starts = np.empty(n_groups + 1, dtype=np.int64)
    patterns = np.empty(n_groups, dtype=np.int64)
    starts[0] = 0
    g = 0
    r = 0
    p = 0
    start = 0
    for i in range(1, n_partial + 1):
        if i == n_partial or keys[i] != keys[start]:
            if i - start >= min_rows:
                patterns[p] = keys[start]
                for j in range(start, i):
                    grouped[g] = partial[j]
                    g += 1
                p += 1
                starts[p] = g
            else:
                for j in range(start, i):
                    rare[r] = partial[j]
                    r += 1
            start = i
    return (
        complete,
        grouped,
        starts,
        patterns,
        rare,
        n_empty,
        first_empty,
        n_inf,
        first_inf,
    )


@_jit
def _take_rows(X, rows):
    """``X[rows]`` (a new C-contiguous array)."""
    d = X.shape[1]
    out = np.empty((rows.size, d), dtype=X.dtype)
    for i in range(rows.size):
        for j in range(d):
            out[i, j] = X[rows[i], j]
    return out


@_jit
def _take_weights(w, rows):
    """``w[rows]``, or ``w`` itself (empty: unweighted)."""
    if w.size == 0:
        return w
    return w[rows]


@_jit
def _missing_block(
    X,
    w,
    codes,
    min_rows,
    center,
    shifts,
    coef,
    ps,
    log_norm,
    code,
    dcode,
    lanes,
    nk,
    s1,
    s2,
    means,
    covs,
    log_weights,
    about,
    diag,
    pattern_lanes,
    gn,
    g1,
    g2,
    precs,
    whiteners,
    log_det,
    rn,
    r1,
    r2,
):
    """The statistics of a block whose rows may miss values (``codes``: their
    :func:`row_codes`, not all 0): complete rows by :func:`_estep` into ``nk, s1,
    s2``; rows grouped by pattern by :func:`_pattern_groups` into ``gn, g1, g2``;
    the other rows by :func:`_missing_rows` into ``rn, r1, r2`` (lower
    triangles). Returns the log-likelihoods of the three, the bad rows (number,
    first, weight), and the rows with every value missing and with an infinite
    value (number and first)."""
    plan = _block_plan(codes, X.shape[1], min_rows)
    complete, grouped, starts, patterns, rare = plan[:5]
    ll_c, n_bad, first_bad, bad_weight = _estep(
        _take_rows(X, complete),
        _take_weights(w, complete),
        center,
        shifts,
        coef,
        ps,
        log_norm,
        code,
        dcode,
        _SOFT,
        lanes,
        nk,
        s1,
        s2,
    )
    if first_bad >= 0:
        first_bad = complete[first_bad]
    ll_g = 0.0
    if grouped.size:
        ll_g, bad_g, bw_g = _pattern_groups(
            _take_rows(X, grouped),
            _take_weights(w, grouped),
            starts,
            patterns,
            center,
            shifts,
            means,
            covs,
            log_weights,
            about,
            diag,
            pattern_lanes,
            gn,
            g1,
            g2,
        )
        n_bad += bad_g
        bad_weight += bw_g
    ll_r = 0.0
    if rare.size:
        wr = _take_weights(w, rare)
        if wr.size == 0:
            wr = np.ones(rare.size)
        ll_r = _missing_rows(
            _take_rows(X, rare),
            wr,
            means,
            precs,
            whiteners,
            log_det,
            log_weights,
            about,
            diag,
            rn,
            r1,
            r2,
        )
    return (
        ll_c,
        ll_g,
        ll_r,
        n_bad,
        first_bad,
        bad_weight,
        plan[5],
        plan[6],
        plan[7],
        plan[8],
    )


def missing_block_statistics(
    X: np.ndarray,
    codes: np.ndarray,
    mp,
    block_index: int,
    weights: np.ndarray | None,
    min_rows: int,
) -> dict:
    """:func:`daskgmm._missing.estep_missing_block` compiled, in one call: the
    statistics of the block ``X`` whose rows' :func:`row_codes` are ``codes`` (not
    all 0), with ``mp`` its ``MissingParams``; patterns of ``min_rows`` rows or
    more through the complete-data kernel with their marginal mixture."""
    if not available():
        raise RuntimeError("the compiled kernels need numba (pip install numba)")
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    X = np.ascontiguousarray(X, dtype=dtype)
    n, d = X.shape
    kp = mp.kp
    ctype = kp.covariance_type
    k = kp.n_components
    diag = ctype in ("diag", "spherical")
    stats = empty_stats(k, d, ctype)
    w = row_weights(weights, n, stats)
    stats["n"] = n
    shifts, coef, proj_shifts = _kernel_arrays(kp)
    s2 = stats["s2"]
    s2_3d = s2[None] if ctype == "tied" else s2[:, None, :] if diag else s2
    g = (np.zeros(k), np.zeros((k, d)), np.zeros(s2_3d.shape))
    r = (np.zeros(k), np.zeros((k, d)), np.zeros((k, 1 if diag else d, d)))
    f64 = np.float64
    out = _missing_block(
        X,
        np.empty(0) if w is None else w,
        np.ascontiguousarray(codes, dtype=np.int64),
        min_rows,
        np.asarray(kp.center, dtype=f64),
        shifts,
        coef,
        proj_shifts,
        np.asarray(kp.log_norm, dtype=f64),
        _CODES[ctype],
        _CODES[ctype],
        _per_lane_moments(ctype, k, shifts.shape[1]),
        stats["nk"],
        stats["s1"],
        s2_3d,
        np.ascontiguousarray(mp.means, dtype=f64),
        np.ascontiguousarray(mp.covariances, dtype=f64),
        np.ascontiguousarray(mp.log_weights, dtype=f64),
        np.ascontiguousarray(mp.shifts, dtype=f64),
        diag,
        _per_lane_moments("diag" if diag else "full", k, shifts.shape[1]),
        *g,
        np.ascontiguousarray(mp.precisions, dtype=f64),
        np.ascontiguousarray(mp.whiteners, dtype=f64),
        np.ascontiguousarray(mp.log_det_precisions, dtype=f64),
        *r,
    )
    ll_c, ll_g, ll_r, n_bad, first_bad, bad_weight = out[:6]
    n_empty, first_empty, n_inf, first_inf = out[6:]
    stats["nk"] += g[0] + r[0]
    stats["s1"] += g[1] + r[1]
    lower = r[2][:, 0] if diag else np.tril(r[2])
    if not diag:
        lower = lower + np.swapaxes(np.tril(r[2], -1), 1, 2)
    if ctype == "tied":
        stats["s2"] += g[2][0] + lower.sum(axis=0)
    else:
        stats["s2"] += (g[2][:, 0] if diag else g[2]) + lower
    stats["loglik"] = float(ll_c + ll_g + ll_r)
    if w is not None and (n_empty or n_inf):
        stats["w"] -= float(w[(codes == (1 << d) - 1) | (codes < 0)].sum())
    elif w is None:
        stats["w"] -= n_empty + n_inf
    stats["w"] -= bad_weight
    stats["n_bad"] = int(n_bad + n_empty)
    first = first_bad if first_bad >= 0 else first_empty
    if n_empty and first_bad >= 0:
        first = min(first_bad, first_empty)
    stats["first_bad"] = None if first < 0 else (block_index, int(first))
    if n_inf:
        stats["n_inf"] = int(n_inf)
        stats["first_inf"] = (block_index, int(first_inf))
    return stats
