"""Feature preprocessing stored with the model: optional ``log1p`` columns, then scaling.

A row ``x`` is mapped to the space the mixture is fitted in by

    y = f(x)                   log1p on the ``log1p`` columns, identity elsewhere
    z = (y − offset) / scale   per feature; ``scale > 0``

with ``offset``/``scale`` fitted from one pass of per-feature moments:

- ``"none"``: offset 0, scale 1 (only ``f`` is applied);
- ``"standard"``: offset the (weighted) mean, scale the standard deviation (ddof 0);
- ``"minmax"``: offset the minimum, scale the range, so ``z`` spans [0, 1].

A column whose values (over rows of positive weight) are all equal gets scale 1:
it is only shifted, never divided by 0.

A Gaussian mixture under the affine map ``y = D z + offset`` (``D = diag(scale)``)
is a Gaussian mixture: ``μ' = D μ + offset``, ``Σ' = D Σ D`` and, for the upper
triangular precision factor ``U`` (``Σ⁻¹ = U Uᵀ``), ``U' = D⁻¹ U``, still upper
triangular. Parameters are therefore reported in the units of ``f(x)``: the original
units, except that ``log1p`` columns stay on the log1p scale (a mixture of Gaussians
in ``log1p(x)`` is not one in ``x``). Log-densities of the original rows follow from
the change of variables

    log p_x(x) = log p_z(z) + log_abs_det(scaling) + log_jacobian(x)

with ``log_abs_det = −Σ_j log scale_j`` and ``log_jacobian = −Σ_{j ∈ log1p} log1p(x_j)``.

Everything here is a pure NumPy function; the block kernels plug into
:func:`daskgmm._reduce.tree_reduce` (moments) and ``map_blocks`` (transforms).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskgmm import _kernels as K

SCALE_METHODS = ("none", "standard", "minmax")
# Rows per sub-block of the moments kernel: a few MiB of float64 temporaries.
_MOMENT_ELEMENTS = K.SUBBLOCK_ELEMENTS


###############################################################################
# Options


def check_method(method: Any) -> str:
    """``method`` when it is one of :data:`SCALE_METHODS`, else a ValueError."""
    if not isinstance(method, str) or method not in SCALE_METHODS:
        listed = ", ".join(repr(m) for m in SCALE_METHODS)
        raise ValueError(
            f"The 'scale' parameter must be one of {{{listed}}}. Got {method!r} instead."
        )
    return method


def check_log1p(log1p: Iterable[Any], n_features: int) -> tuple[int, ...]:
    """Column indices for ``log1p`` as a sorted tuple of non-negative ints.

    Negative indices count from the end, as in NumPy. Raises ValueError for
    indices out of range, repeated columns or non-integers.
    """
    if isinstance(log1p, (str, bytes)) or not isinstance(log1p, Iterable):
        raise ValueError(
            f"log1p must be a list of column indices, got {log1p!r}; "
            "name the columns by index (e.g. log1p=[0, 3])"
        )
    cols = []
    for j in log1p:
        if isinstance(j, bool) or not isinstance(j, numbers.Integral):
            raise ValueError(
                f"log1p must hold column indices (ints), got {j!r} of type "
                f"{type(j).__name__}"
            )
        if not -n_features <= j < n_features:
            raise ValueError(
                f"log1p column {int(j)} is out of range for {n_features} feature(s)"
            )
        cols.append(int(j) % n_features)
    if len(set(cols)) != len(cols):
        raise ValueError(f"log1p lists a column twice: {list(log1p)!r}")
    return tuple(sorted(cols))


def check_covariance_type(method: str, covariance_type: str) -> None:
    """Refuse a spherical mixture with a per-feature scaling (call before fitting).

    Scaling features by different factors turns a spherical component into a
    diagonal one in the original units, so the fitted model could not be reported
    as spherical.
    """
    if covariance_type == "spherical" and method != "none":
        raise ValueError(
            f"covariance_type='spherical' cannot be used with scale={method!r}: a "
            "per-feature scaling makes spherical components non-spherical in the "
            "original units. Use covariance_type='diag' (one variance per feature), "
            "or scale='none'."
        )


###############################################################################
# The fitted preprocessing


def _vector(value: Any, name: str) -> np.ndarray:
    """A read-only float64 copy of a 1-D array of finite values."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"Scaling.{name} must be a 1-D array of floats") from None
    if array.ndim != 1:
        raise ValueError(
            f"Scaling.{name} must be 1-D of shape (n_features,), got shape "
            f"{array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"Scaling.{name} must be finite, got {array.tolist()!r}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Scaling:
    """A fitted preprocessing: ``z = (f(x) − offset) / scale``.

    Attributes
    ----------
    method : {'none', 'standard', 'minmax'}
        How ``offset`` and ``scale`` were fitted.
    log1p : tuple of int
        Sorted columns ``f`` applies ``log1p`` to (before the scaling).
    offset : ndarray of shape (n_features,)
        Subtracted from ``f(x)``, in the units of ``f(x)``.
    scale : ndarray of shape (n_features,)
        Positive divisor per feature.
    """

    method: str
    log1p: tuple[int, ...]
    offset: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        check_method(self.method)
        offset = _vector(self.offset, "offset")
        scale = _vector(self.scale, "scale")
        if scale.shape != offset.shape:
            raise ValueError(
                f"Scaling.offset and Scaling.scale differ in length: "
                f"{offset.size} and {scale.size}"
            )
        if not (scale > 0).all():
            raise ValueError(f"Scaling.scale must be > 0, got {scale.tolist()!r}")
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "log1p", check_log1p(self.log1p, offset.size))

    @classmethod
    def identity(cls, n_features: int, log1p: Iterable[int] = ()) -> Scaling:
        """``method='none'``: only ``log1p`` (if any), no moments needed."""
        return cls("none", tuple(log1p), np.zeros(n_features), np.ones(n_features))

    @property
    def n_features(self) -> int:
        return self.offset.size

    @property
    def is_identity(self) -> bool:
        """True when ``z = x``: nothing to apply to the data or to the parameters."""
        return (
            not self.log1p and not self.offset.any() and bool((self.scale == 1.0).all())
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scaling):
            return NotImplemented
        return (
            self.method == other.method
            and self.log1p == other.log1p
            and np.array_equal(self.offset, other.offset)
            and np.array_equal(self.scale, other.scale)
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays, as ndarray

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (lists of floats and ints) for the model file."""
        return {
            "method": self.method,
            "log1p": [int(j) for j in self.log1p],
            "offset": [float(v) for v in self.offset],
            "scale": [float(v) for v in self.scale],
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Scaling:
        """Inverse of :meth:`to_dict`; a ValueError names what is wrong."""
        keys = {"method", "log1p", "offset", "scale"}
        if not isinstance(document, Mapping) or set(document) != keys:
            found = sorted(document) if isinstance(document, Mapping) else document
            raise ValueError(
                f"scaling must be a mapping with keys {sorted(keys)}, got {found!r}"
            )
        for name in ("offset", "scale"):
            values = document[name]
            if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
            ):
                raise ValueError(f"scaling.{name} must be a list of numbers")
        if not isinstance(document["log1p"], list):
            raise ValueError("scaling.log1p must be a list of column indices")
        return cls(
            document["method"],
            tuple(document["log1p"]),
            np.asarray(document["offset"], dtype=np.float64),
            np.asarray(document["scale"], dtype=np.float64),
        )


###############################################################################
# Moments pass: per-block kernel and parallel merge (Chan, Golub & LeVeque 1979)
#
# A partial result keeps its moments about a ``shift`` taken from its own data:
# ``dmean`` is the mean of ``y − shift``, so the difference of two partial means
# ``(shift_b − shift_a) + (dmean_b − dmean_a)`` keeps all its digits even when the
# data sit at 1e9 with unit spread (a mean stored as one float64 would not).


def empty_moments(n_features: int, log1p: tuple[int, ...] = ()) -> dict:
    """Moments of no rows: the unit of :func:`combine_moments`."""
    d = n_features
    return {
        "count": 0,
        "weight": 0.0,
        "shift": np.zeros(d),
        "dmean": np.zeros(d),
        "mean": np.zeros(d),
        "m2": np.zeros(d),
        "min": np.full(d, np.inf),
        "max": np.full(d, -np.inf),
        "log1p": tuple(log1p),
        "n_bad_log1p": np.zeros(len(log1p), dtype=np.int64),
        "first_bad_log1p": None,
        "n": 0,
        "w": 0.0,
        "n_bad": 0,
        "n_bad_weights": 0,
        "first_bad": None,
    }


def _subblock_moments(y: np.ndarray, w: np.ndarray | None) -> dict:
    """Moments of the rows ``y`` (all valid, weights > 0) about the first row."""
    shift = y[0].copy()
    dev = y - shift
    if w is None:
        weight = float(y.shape[0])
        dmean = dev.sum(axis=0) / weight
        dev -= dmean
        # Corrected two-pass: the second term removes the rounding left in dmean.
        m2 = (dev * dev).sum(axis=0) - dev.sum(axis=0) ** 2 / weight
    else:
        weight = float(w.sum())
        dmean = (w @ dev) / weight
        dev -= dmean
        m2 = w @ (dev * dev) - (w @ dev) ** 2 / weight
    return {
        "count": y.shape[0],
        "weight": weight,
        "shift": shift,
        "dmean": dmean,
        "m2": np.maximum(m2, 0.0),
        "min": y.min(axis=0),
        "max": y.max(axis=0),
    }


def _merge_moments(a: dict, b: dict) -> dict:
    """Moments of the union of two disjoint sets of rows (a new dict)."""
    out = dict(a)
    wa, wb = a["weight"], b["weight"]
    if wb == 0:
        out["shift"], out["dmean"], out["m2"] = a["shift"], a["dmean"], a["m2"]
    elif wa == 0:
        out["shift"], out["dmean"], out["m2"] = b["shift"], b["dmean"], b["m2"]
    else:
        total = wa + wb
        delta = (b["shift"] - a["shift"]) + (b["dmean"] - a["dmean"])
        out["shift"] = a["shift"]
        out["dmean"] = a["dmean"] + delta * (wb / total)
        out["m2"] = a["m2"] + b["m2"] + delta**2 * (wa * (wb / total))
    out["weight"] = wa + wb
    out["count"] = a["count"] + b["count"]
    out["min"] = np.minimum(a["min"], b["min"])
    out["max"] = np.maximum(a["max"], b["max"])
    out["mean"] = out["shift"] + out["dmean"]
    return out


def _log1p_domain_error(n_bad: int, column: int, where: str) -> ValueError:
    return ValueError(
        f"log1p column {column} has {n_bad} value(s) <= -1{where}; log1p needs "
        "values > -1: remove the column from log1p, or shift it first"
    )


@K.quiet
def moments_block(
    X: np.ndarray,
    log1p_cols: tuple[int, ...],
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """Per-feature moments of ``f(X)`` on one block of rows, in float64.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Rows of any real dtype.
    log1p_cols : tuple of int
        Columns ``f`` applies ``log1p`` to (see :func:`check_log1p`).
    block_index : int
        Position of the block, to locate the first bad row.
    weights : ndarray of shape (n,), optional
        Row weights; negative, NaN or infinite ones are counted and taken as 0.

    Returns
    -------
    dict
        ``count`` (rows used), ``weight`` (their total weight), ``mean``, ``m2``
        (weighted sum of squared deviations from the mean), ``min``, ``max`` (over
        rows of positive weight), ``shift``/``dmean`` (the mean as a shift plus a
        small mean, for the merge), ``n_bad_log1p`` (per log1p column, values
        <= -1) and ``first_bad_log1p``, and the fields every pass reports: ``n``,
        ``w``, ``n_bad`` (rows with NaN or inf), ``n_bad_weights``, ``first_bad``.
        Rows with NaN, inf or a log1p value <= -1 are left out of the moments.
    """
    X = np.asarray(X)
    n, d = X.shape
    cols = tuple(log1p_cols)
    stats = empty_moments(d, cols)
    idx = list(cols)
    stats["n"] = n
    w = K.row_weights(weights, n, stats)
    rows = max(_MOMENT_ELEMENTS // max(d, 1), K.MIN_SUBBLOCK_ROWS)
    acc = stats
    for start in range(0, n, rows):
        y = np.array(X[start : start + rows], dtype=np.float64)
        ok = np.isfinite(y).all(axis=1)
        K.note_bad_rows(stats, ok, start, block_index)
        if cols:
            bad_domain = ~(y[:, idx] > -1.0) & ok[:, None]
            if bad_domain.any():
                stats["n_bad_log1p"] += bad_domain.sum(axis=0)
                if stats["first_bad_log1p"] is None:
                    row, j = np.argwhere(bad_domain)[0]
                    stats["first_bad_log1p"] = (block_index, start + int(row), cols[j])
                ok &= ~bad_domain.any(axis=1)
            with np.errstate(divide="ignore"):  # rows <= -1 are left out above
                y[:, idx] = np.log1p(y[:, idx])
        wb = None if w is None else w[start : start + rows]
        keep = ok if wb is None else ok & (wb > 0)
        if not keep.any():
            continue
        if not keep.all():
            y = y[keep]
            wb = None if wb is None else wb[keep]
        acc = _merge_moments(acc, _subblock_moments(y, wb))
    for key in ("count", "weight", "shift", "dmean", "mean", "m2", "min", "max"):
        stats[key] = acc[key]
    return stats


def _observed_subblock(y: np.ndarray, w: np.ndarray, observed: np.ndarray) -> dict:
    """:func:`_subblock_moments` per column over its observed values only
    (``observed`` bool (n, d)): every field a vector, ``weight`` and ``count``
    included."""
    d = y.shape[1]
    ww = np.where(observed, w[:, None], 0.0)
    weight = ww.sum(axis=0)
    has = weight > 0
    first = np.argmax(observed, axis=0)
    shift = np.where(has, y[first, np.arange(d)], 0.0)
    dev = np.where(observed, y - shift, 0.0)
    safe = np.where(has, weight, 1.0)
    dmean = np.where(has, (ww * dev).sum(axis=0) / safe, 0.0)
    dev = np.where(observed, dev - dmean, 0.0)
    m2 = (ww * dev * dev).sum(axis=0) - (ww * dev).sum(axis=0) ** 2 / safe
    return {
        "count": observed.sum(axis=0),
        "weight": weight,
        "shift": shift,
        "dmean": dmean,
        "m2": np.maximum(m2, 0.0),
        "min": np.where(observed, y, np.inf).min(axis=0),
        "max": np.where(observed, y, -np.inf).max(axis=0),
    }


def _merge_observed(a: dict, b: dict) -> dict:
    """:func:`_merge_moments` of per-column moments (vector weights)."""
    out = dict(a)
    wa, wb = a["weight"], b["weight"]
    total = wa + wb
    both = (wa > 0) & (wb > 0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        delta = (b["shift"] - a["shift"]) + (b["dmean"] - a["dmean"])
        frac = np.where(both, wb / np.where(total > 0, total, 1.0), 0.0)
        merged_m2 = a["m2"] + b["m2"] + np.where(both, delta**2 * (wa * frac), 0.0)
        out["dmean"] = np.where(
            wa > 0, a["dmean"] + np.where(both, delta * frac, 0.0), b["dmean"]
        )
    out["shift"] = np.where(wa > 0, a["shift"], b["shift"])
    out["m2"] = merged_m2
    out["weight"] = total
    out["count"] = a["count"] + b["count"]
    out["min"] = np.minimum(a["min"], b["min"])
    out["max"] = np.maximum(a["max"], b["max"])
    out["mean"] = out["shift"] + out["dmean"]
    return out


@K.quiet
def observed_moments_block(
    X: np.ndarray,
    log1p_cols: tuple[int, ...],
    block_index: int = 0,
    weights: np.ndarray | None = None,
) -> dict:
    """:func:`moments_block` of rows with missing values (NaN): every column's
    moments over its observed values.

    ``count``, ``weight``, ``mean``... are vectors (per column); ``rows`` and
    ``rows_weight`` count the rows used. A row with an infinite value or every
    value missing is left out and counted in ``n_bad``; a log1p value <= -1 is
    reported as by :func:`moments_block`.
    """
    X = np.asarray(X)
    n, d = X.shape
    cols = tuple(log1p_cols)
    stats = empty_moments(d, cols)
    stats.update(
        count=np.zeros(d, dtype=np.int64), weight=np.zeros(d), rows=0, rows_weight=0.0
    )
    idx = list(cols)
    stats["n"] = n
    w = K.row_weights(weights, n, stats)
    step = max(_MOMENT_ELEMENTS // max(d, 1), K.MIN_SUBBLOCK_ROWS)
    acc = stats
    for start in range(0, n, step):
        y = np.array(X[start : start + step], dtype=np.float64)
        nan = np.isnan(y)
        usable = ~(np.isinf(y).any(axis=1) | nan.all(axis=1))
        K.note_bad_rows(stats, usable, start, block_index)
        if cols:
            bad_domain = ~(y[:, idx] > -1.0) & ~nan[:, idx] & usable[:, None]
            if bad_domain.any():
                stats["n_bad_log1p"] += bad_domain.sum(axis=0)
                if stats["first_bad_log1p"] is None:
                    row, j = np.argwhere(bad_domain)[0]
                    stats["first_bad_log1p"] = (block_index, start + int(row), cols[j])
                usable &= ~bad_domain.any(axis=1)
            with np.errstate(divide="ignore"):
                y[:, idx] = np.log1p(y[:, idx])
        wb = np.ones(y.shape[0]) if w is None else w[start : start + step]
        keep = usable & (wb > 0)
        stats["rows"] += int(keep.sum())
        stats["rows_weight"] += float(wb[keep].sum())
        acc = _merge_observed(acc, _observed_subblock(y, wb, ~nan & keep[:, None]))
    for key in ("count", "weight", "shift", "dmean", "mean", "m2", "min", "max"):
        stats[key] = acc[key]
    return stats


def combine_moments(*parts: dict) -> dict:
    """Merge :func:`moments_block` (or :func:`observed_moments_block`) results left
    to right (bitwise reproducible)."""
    out = dict(parts[0])
    out["n_bad_log1p"] = out["n_bad_log1p"].copy()
    observed = np.ndim(out["weight"]) > 0
    merge = _merge_observed if observed else _merge_moments
    for part in parts[1:]:
        merged = merge(out, part)
        keys = ("n", "w", "n_bad", "n_bad_weights")
        for key in keys + (("rows", "rows_weight") if observed else ()):
            merged[key] = out[key] + part[key]
        merged["n_bad_log1p"] = out["n_bad_log1p"] + part["n_bad_log1p"]
        for key in ("first_bad", "first_bad_log1p"):
            if merged[key] is None:
                merged[key] = part[key]
        out = merged
    return out


def fit_scaling(
    stats: Mapping[str, Any],
    method: str,
    log1p: Iterable[int] = (),
    *,
    row_offsets: np.ndarray | None = None,
) -> Scaling:
    """The :class:`Scaling` of ``method`` from reduced :func:`moments_block` results.

    Parameters
    ----------
    stats : dict
        Output of :func:`combine_moments` over all blocks.
    method : {'none', 'standard', 'minmax'}
    log1p : iterable of int
        Must be the columns the moments were computed with.
    row_offsets : ndarray, optional
        First row of every block, to report absolute row numbers in errors.

    Returns
    -------
    Scaling
        A column whose values are all equal (over rows of positive weight) gets
        scale 1, so nothing is divided by 0.

    Raises
    ------
    ValueError
        When a log1p column holds values <= -1, no row has a positive weight, or a
        column is too spread out for float64.
    """
    check_method(method)
    d = stats["mean"].size
    cols = check_log1p(log1p, d)
    if cols != tuple(stats["log1p"]):
        raise ValueError(
            f"internal: moments computed with log1p={list(stats['log1p'])}, "
            f"scaling asked with log1p={list(cols)}"
        )
    if stats["first_bad_log1p"] is not None:
        block, row, column = stats["first_bad_log1p"]
        if row_offsets is not None:
            where = f" (first at row {int(row_offsets[block]) + row})"
        else:
            where = f" (first in row block {block}, row {row} of the block)"
        n_bad = int(stats["n_bad_log1p"][cols.index(column)])
        raise _log1p_domain_error(n_bad, column, where)
    if not np.all(stats["weight"] > 0):
        if np.ndim(stats["weight"]):
            j = int(np.flatnonzero(~(stats["weight"] > 0))[0])
            raise ValueError(
                f"column {j} has no observed value (in a row of positive weight) "
                "to fit the scaling on; drop the column"
            )
        raise ValueError(
            "no row with finite values and a positive weight to fit the scaling on"
        )
    if method == "none":
        return Scaling.identity(d, cols)
    if method == "standard":
        offset = stats["mean"]
        with np.errstate(over="ignore", invalid="ignore"):
            scale = np.sqrt(stats["m2"] / stats["weight"])
    else:
        offset = stats["min"]
        with np.errstate(over="ignore", invalid="ignore"):
            scale = stats["max"] - stats["min"]
    constant = (stats["max"] == stats["min"]) | (scale == 0.0)
    scale = np.where(constant, 1.0, scale)
    overflow = ~(np.isfinite(scale) & np.isfinite(offset))
    if overflow.any():
        j = int(np.flatnonzero(overflow)[0])
        raise ValueError(
            f"column {j} is too spread out to scale in float64 (its "
            f"{'variance' if method == 'standard' else 'range'} overflows); "
            "rescale it, or list it in log1p"
        )
    return Scaling(method, cols, offset, scale)


###############################################################################
# Applying the scaling to rows (pure block functions for map_blocks)


def _log1p_in_place(
    y: np.ndarray,
    idx: list[int],
    cols: tuple[int, ...],
    block_info: dict | None,
) -> None:
    """``y[:, idx] = log1p(y[:, idx])``; a ValueError for values <= -1 naming the
    data's column ``cols[j]`` (NaN passes)."""
    if not idx:
        return
    values = y[:, idx]
    bad = values <= -1.0
    if bad.any():
        row, j = np.argwhere(bad)[0]
        offset = K.row_offset(block_info)
        where = (
            f" (first at row {offset + int(row)})"
            if offset is not None
            else f" in a block of {y.shape[0]} rows (first at row {int(row)})"
        )
        raise _log1p_domain_error(int(bad[:, j].sum()), cols[j], where)
    y[:, idx] = np.log1p(values)


def transform_block(
    X: np.ndarray,
    scaling: Scaling,
    out_dtype: Any = np.float64,
    block_info: dict | None = None,
) -> np.ndarray:
    """``z = (f(X) − offset) / scale`` computed in float64, returned as ``out_dtype``.

    NaN and inf pass through (the kernels downstream report them); a log1p value
    <= -1 raises a ValueError naming the row (from dask's ``block_info``).
    """
    z = np.array(X, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        _log1p_in_place(z, list(scaling.log1p), scaling.log1p, block_info)
        z -= scaling.offset
        z /= scaling.scale
    return z.astype(out_dtype, copy=False)


def inverse_transform_block(Z: np.ndarray, scaling: Scaling) -> np.ndarray:
    """``x = f⁻¹(Z · scale + offset)``: rows of the fitted space back to the data's."""
    x = np.array(Z, dtype=np.float64)
    x *= scaling.scale
    x += scaling.offset
    return invert_log1p(x, scaling, copy=False)


def invert_log1p(Y: np.ndarray, scaling: Scaling, *, copy: bool = True) -> np.ndarray:
    """``x = f⁻¹(Y)``: ``expm1`` on the log1p columns of rows in the units of f(x).

    For instance rows drawn from the parameters reported in original units.
    """
    x = np.array(Y, dtype=np.float64) if copy else np.asarray(Y, dtype=np.float64)
    if scaling.log1p:
        cols = list(scaling.log1p)
        x[:, cols] = np.expm1(x[:, cols])
    return x


def log_jacobian_block(
    X: np.ndarray, scaling: Scaling, block_info: dict | None = None
) -> np.ndarray:
    """``Σ_{j ∈ log1p} −log1p(x_j)`` per row, shape (n,): the non-affine part of
    ``log |dz/dx|`` (0 without log1p columns)."""
    X = np.asarray(X)
    if not scaling.log1p:
        return np.zeros(X.shape[0])
    y = np.array(X[:, list(scaling.log1p)], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        _log1p_in_place(y, list(range(y.shape[1])), scaling.log1p, block_info)
    return -y.sum(axis=1)


def observed_log_jacobian(
    X: np.ndarray, scaling: Scaling, block_info: dict | None = None
) -> np.ndarray:
    """``log |dz_o/dx_o|`` per row over its observed features (NaN is missing):
    ``−Σ_{j observed} log scale_j − Σ_{j ∈ log1p observed} log1p(x_j)``, the
    change of variables of the density of a row's observed values."""
    X = np.asarray(X)
    observed = ~np.isnan(X)
    out = -(observed @ np.log(scaling.scale))
    if scaling.log1p:
        y = np.array(X[:, list(scaling.log1p)], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            _log1p_in_place(y, list(range(y.shape[1])), scaling.log1p, block_info)
        out -= np.nansum(y, axis=1)
    return out


def mean_log_jacobian(stats: Mapping[str, Any], scaling: Scaling) -> float:
    """The (weighted) mean log-Jacobian of the rows the moments ``stats`` were
    computed on: what turns a mean log-density of the scaled rows into one of the
    original rows. For :func:`observed_moments_block`'s moments, each column counts
    in the rows where it is observed."""
    cols = list(scaling.log1p)
    if np.ndim(stats["weight"]) == 0:
        return log_abs_det(scaling) - float(stats["mean"][cols].sum())
    share = stats["weight"] / stats["rows_weight"]
    return float(-(share @ np.log(scaling.scale)) - share[cols] @ stats["mean"][cols])


def log_abs_det(scaling: Scaling) -> float:
    """``log |det dz/dy| = −Σ_j log scale_j``: the affine part of the log-Jacobian."""
    return -float(np.log(scaling.scale).sum())


###############################################################################
# Mixture parameters between the fitted space (z) and the units of f(x)
#
# With y = D z + offset, D = diag(s): Σ_y = D Σ_z D, and Σ_y⁻¹ = D⁻¹ U Uᵀ D⁻¹ so the
# upper-triangular factor becomes D⁻¹ U (row j divided by s_j). Going back uses 1/s.


def _common_factor(s: np.ndarray) -> float:
    """The one scale of a spherical mixture; a ValueError when the scales differ."""
    if not (s == s[0]).all():
        raise ValueError(
            "covariance_type='spherical' cannot be mapped to the original units: the "
            "feature scales differ, so spherical components become diagonal. Use "
            "covariance_type='diag', or scale='none'."
        )
    return float(s[0])


def _cov_full(cov: np.ndarray, s: np.ndarray) -> np.ndarray:
    # (D Σ D)_ij = s_i Σ_ij s_j, for (K, d, d) and tied (d, d) alike.
    return cov * s[:, None] * s[None, :]


def _cov_diag(cov: np.ndarray, s: np.ndarray) -> np.ndarray:
    return cov * s**2


def _cov_spherical(cov: np.ndarray, s: np.ndarray) -> np.ndarray:
    return cov * _common_factor(s) ** 2


def _chol_full(prec_chol: np.ndarray, s: np.ndarray) -> np.ndarray:
    # D⁻¹ U: row j of every factor divided by s_j.
    return prec_chol / s[:, None]


def _chol_diag(prec_chol: np.ndarray, s: np.ndarray) -> np.ndarray:
    return prec_chol / s


def _chol_spherical(prec_chol: np.ndarray, s: np.ndarray) -> np.ndarray:
    return prec_chol / _common_factor(s)


_SCALE_COVARIANCES = {
    "full": _cov_full,
    "tied": _cov_full,
    "diag": _cov_diag,
    "spherical": _cov_spherical,
}
_SCALE_PRECISION_CHOLESKY = {
    "full": _chol_full,
    "tied": _chol_full,
    "diag": _chol_diag,
    "spherical": _chol_spherical,
}


def _map_parameters(
    weights: np.ndarray | None,
    means: np.ndarray | None,
    covariances: np.ndarray | None,
    precisions_cholesky: np.ndarray | None,
    covariance_type: str,
    s: np.ndarray,
    mean_map: Any,
) -> tuple:
    def f64(a: Any) -> np.ndarray | None:
        return None if a is None else np.array(a, dtype=np.float64)

    cov_map = _SCALE_COVARIANCES[covariance_type]
    chol_map = _SCALE_PRECISION_CHOLESKY[covariance_type]
    weights, means = f64(weights), f64(means)
    covariances, precisions_cholesky = f64(covariances), f64(precisions_cholesky)
    return (
        weights,
        None if means is None else mean_map(means),
        None if covariances is None else cov_map(covariances, s),
        None if precisions_cholesky is None else chol_map(precisions_cholesky, s),
    )


def to_original_units(
    weights: np.ndarray | None,
    means: np.ndarray | None,
    covariances: np.ndarray | None,
    precisions_cholesky: np.ndarray | None,
    covariance_type: str,
    scaling: Scaling,
) -> tuple:
    """Mixture parameters fitted on ``z`` expressed in the units of ``f(x)``.

    ``means' = means · scale + offset``, ``Σ' = D Σ D``, ``U' = D⁻¹ U`` with
    ``D = diag(scale)`` (``var · scale²`` and ``U / scale`` for diag). Weights are
    unchanged. Any argument may be None and is returned as None.

    Parameters
    ----------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
    covariances, precisions_cholesky : ndarray
        ``full``: (K, d, d); ``tied``: (d, d); ``diag``: (K, d); ``spherical``: (K,).
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    scaling : Scaling

    Returns
    -------
    weights, means, covariances, precisions_cholesky : ndarray (float64 copies)

    Raises
    ------
    ValueError
        For ``spherical`` when the feature scales differ (the result would not be
        spherical); see :func:`check_covariance_type`.
    """
    s, b = scaling.scale, scaling.offset
    return _map_parameters(
        weights,
        means,
        covariances,
        precisions_cholesky,
        covariance_type,
        s,
        lambda m: m * s + b,
    )


def to_scaled_units(
    weights: np.ndarray | None,
    means: np.ndarray | None,
    covariances: np.ndarray | None,
    precisions_cholesky: np.ndarray | None,
    covariance_type: str,
    scaling: Scaling,
) -> tuple:
    """Inverse of :func:`to_original_units`: parameters in the units of ``f(x)``
    (a warm start, user ``*_init``) expressed on ``z``.

    ``means = (means' − offset) / scale``, ``Σ = D⁻¹ Σ' D⁻¹``, ``U = D U'``.
    For precisions rather than their factors, ``P = D P' D``: map them with
    ``precision_cholesky_from_precisions`` first.
    """
    s, b = scaling.scale, scaling.offset
    return _map_parameters(
        weights,
        means,
        covariances,
        precisions_cholesky,
        covariance_type,
        1.0 / s,
        lambda m: (m - b) / s,
    )


def precisions_to_scaled_units(
    precisions: np.ndarray, covariance_type: str, scaling: Scaling
) -> np.ndarray:
    """Precision matrices given in the units of ``f(x)`` (a user's
    ``precisions_init``) expressed on ``z``: ``P = D P' D`` (``P' · scale²`` for
    diag), the map :func:`to_original_units` applies to covariances."""
    precisions = np.array(precisions, dtype=np.float64)
    return _SCALE_COVARIANCES[covariance_type](precisions, scaling.scale)
