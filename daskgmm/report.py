"""Fit reports: PNG plots, a metrics JSON file and a Markdown page for a fitted mixture.

:func:`write_report` writes, atomically into one directory,

- ``loglik.png``: mean log-likelihood per EM iteration and its change against ``tol``;
- ``projections.png``: a sample of rows coloured by predicted component, with the
  1σ and 2σ ellipses of every fitted covariance projected into the same plane;
- ``responsibility_hist.png``: the largest responsibility of every sample row;
- ``metrics.json``: the caller's metrics and the ones computed here;
- ``report.md``: a short page with a metrics table and the pictures.

Plots are drawn with matplotlib's Agg canvas on ``Figure`` objects (never pyplot, so
no global backend is changed); matplotlib is imported inside the functions, so
``import daskgmm`` does not need it (install the ``plot`` extra).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from daskgmm import exceptions
from daskgmm.io import atomic_path

__all__ = [
    "covariance_matrices",
    "ellipse_points",
    "json_safe",
    "label_agreement",
    "mixture_density_1d",
    "principal_axes",
    "project_gaussians",
    "projection_planes",
    "share_uncertain",
    "write_report",
]

logger = logging.getLogger("daskgmm")

UNCERTAIN_BELOW = 0.9
# Rows drawn in the scatter plots at most (a seeded subsample above that).
MAX_POINTS = 50_000
DPI = 110
FILES = {
    "loglik": "loglik.png",
    "projections": "projections.png",
    "responsibility_hist": "responsibility_hist.png",
    "metrics": "metrics.json",
    "report": "report.md",
}


###############################################################################
# Covariances as full (K, d, d) matrices, one builder per covariance type


def _full_from_full(cov: np.ndarray, k: int, d: int) -> np.ndarray:
    return cov.reshape(k, d, d).copy()


def _full_from_tied(cov: np.ndarray, k: int, d: int) -> np.ndarray:
    return np.broadcast_to(cov.reshape(d, d), (k, d, d)).copy()


def _full_from_diag(cov: np.ndarray, k: int, d: int) -> np.ndarray:
    # diag(v) = v[:, None] * I, one component per leading index
    return cov.reshape(k, d)[:, :, None] * np.eye(d)


def _full_from_spherical(cov: np.ndarray, k: int, d: int) -> np.ndarray:
    return cov.reshape(k)[:, None, None] * np.eye(d)


FULL_COVARIANCES = {
    "full": _full_from_full,
    "tied": _full_from_tied,
    "diag": _full_from_diag,
    "spherical": _full_from_spherical,
}


def covariance_matrices(model: Any) -> np.ndarray:
    """Covariance matrix of every component of a fitted mixture, whatever its type.

    Parameters
    ----------
    model : fitted GaussianMixture
        daskgmm's or scikit-learn's (anything with ``means_``, ``covariances_`` and
        ``covariance_type``).

    Returns
    -------
    covariances : ndarray of shape (n_components, n_features, n_features)
    """
    _check_fitted(model)
    k, d = np.shape(model.means_)
    build = FULL_COVARIANCES.get(model.covariance_type)
    if build is None:
        raise ValueError(
            f"unknown covariance_type {model.covariance_type!r}; expected one of "
            f"{sorted(FULL_COVARIANCES)}"
        )
    return build(np.asarray(model.covariances_, dtype=np.float64), k, d)


###############################################################################
# Geometry of the projections


def ellipse_points(mean2: Any, cov2: Any, n_std: float, n: int = 100) -> np.ndarray:
    """Points of the ellipse at Mahalanobis distance ``n_std`` of a 2-D Gaussian.

    Parameters
    ----------
    mean2 : array-like of shape (2,)
    cov2 : array-like of shape (2, 2)
        Symmetric positive semi-definite covariance.
    n_std : float
        Mahalanobis radius (1 for the 1σ ellipse, 2 for the 2σ ellipse).
    n : int, default=100
        Number of points; the first and last coincide, so the curve is closed.

    Returns
    -------
    points : ndarray of shape (n, 2)
    """
    mean2 = np.asarray(mean2, dtype=np.float64).reshape(2)
    cov2 = np.asarray(cov2, dtype=np.float64)
    if cov2.shape != (2, 2):
        raise ValueError(f"cov2 must have shape (2, 2), got {cov2.shape}")
    # Σ = V diag(w) Vᵀ: x = μ + n_std V diag(√w) u maps the unit circle u onto
    # (x − μ)ᵀ Σ⁻¹ (x − μ) = n_std² Σ_i u_i² = n_std².
    w, v = np.linalg.eigh((cov2 + cov2.T) / 2.0)
    radii = n_std * np.sqrt(np.clip(w, 0.0, None))
    t = np.linspace(0.0, 2.0 * np.pi, n)
    circle = np.column_stack([np.cos(t), np.sin(t)])
    return mean2 + (circle * radii) @ v.T


def principal_axes(
    sample: np.ndarray, n_axes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Leading principal axes of a sample, as an orthonormal linear map.

    Parameters
    ----------
    sample : ndarray of shape (n_samples, n_features)
    n_axes : int, default=2

    Returns
    -------
    axes : ndarray of shape (n_axes, n_features)
        Orthonormal rows; the largest loading of each row is positive.
    explained : ndarray of shape (n_axes,)
        Share of the sample's total variance along each axis.
    """
    centred = np.asarray(sample, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:n_axes]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    total = float(np.sum(s**2))
    explained = s[:n_axes] ** 2 / total if total > 0 else np.zeros(len(axes))
    return axes * signs[:, None], explained


def project_gaussians(
    means: np.ndarray, covariances: np.ndarray, axes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Means and covariances of Gaussians under the linear map ``x ↦ A x``.

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray of shape (n_components, n_features, n_features)
    axes : ndarray of shape (m, n_features)
        The map ``A``.

    Returns
    -------
    means : ndarray of shape (n_components, m)
        ``A μ_k``.
    covariances : ndarray of shape (n_components, m, m)
        ``A Σ_k Aᵀ``.
    """
    return means @ axes.T, np.einsum("ij,kjl,ml->kim", axes, covariances, axes)


class Plane(NamedTuple):
    """A 2-D view of the data: the linear map and the labels of its two axes."""

    axes: np.ndarray
    xlabel: str
    ylabel: str


def _loading_label(title: str, row: np.ndarray, names: Sequence[str]) -> str:
    top = np.argsort(-np.abs(row))[:3]
    terms = ", ".join(f"{row[j]:+.2f} {names[j]}" for j in top)
    return f"{title}\n({terms})"


def projection_planes(sample: np.ndarray, names: Sequence[str]) -> list[Plane]:
    """The planes ``projections.png`` shows for data with ``len(names)`` >= 2 features.

    Parameters
    ----------
    sample : ndarray of shape (n_samples, n_features)
    names : sequence of str of length n_features

    Returns
    -------
    planes : list of Plane
        The plane itself for 2 features, every pair of features for 3 or 4, the
        first two principal axes of ``sample`` beyond that.
    """
    d = len(names)
    if d <= 4:
        eye = np.eye(d)
        return [
            Plane(eye[[i, j]], names[i], names[j])
            for i, j in itertools.combinations(range(d), 2)
        ]
    axes, explained = principal_axes(sample)
    labels = [
        _loading_label(f"PC {i + 1}: {explained[i]:.0%} of the variance", row, names)
        for i, row in enumerate(axes)
    ]
    return [Plane(axes, labels[0], labels[1])]


###############################################################################
# Numbers computed from the sample


def share_uncertain(resp: np.ndarray, threshold: float = UNCERTAIN_BELOW) -> float:
    """Share of rows whose largest responsibility is below ``threshold``.

    Parameters
    ----------
    resp : ndarray of shape (n_samples, n_components)
        Responsibilities (``predict_proba``).
    threshold : float, default=0.9

    Returns
    -------
    share : float
    """
    return float(np.mean(np.max(resp, axis=1) < threshold))


def label_agreement(labels: np.ndarray, other: np.ndarray) -> float:
    """Share of rows with the same label once the labels are matched one to one.

    The matching maximises the agreement (Hungarian algorithm on the contingency
    table), so label names do not matter.

    Parameters
    ----------
    labels, other : array-like of shape (n_samples,)

    Returns
    -------
    agreement : float
        In [0, 1].
    """
    from scipy.optimize import linear_sum_assignment

    _, a = np.unique(labels, return_inverse=True)
    _, b = np.unique(other, return_inverse=True)
    n_b = b.max() + 1
    table = np.bincount(a * n_b + b, minlength=(a.max() + 1) * n_b).reshape(-1, n_b)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(labels))


def mixture_density_1d(model: Any, grid: np.ndarray) -> np.ndarray:
    """Weighted density of every component of a 1-feature mixture on ``grid``.

    Parameters
    ----------
    model : fitted GaussianMixture with one feature
    grid : ndarray of shape (n_points,)

    Returns
    -------
    density : ndarray of shape (n_components, len(grid))
        Sum over axis 0 for the mixture density.
    """
    variances = covariance_matrices(model)[:, 0, 0]
    means = np.asarray(model.means_, dtype=np.float64)[:, 0]
    z = (grid[None, :] - means[:, None]) ** 2 / variances[:, None]
    norm = np.asarray(model.weights_)[:, None] / np.sqrt(2 * np.pi * variances[:, None])
    return norm * np.exp(-0.5 * z)


###############################################################################
# JSON


def json_safe(value: Any, where: str = "metrics") -> Any:
    """``value`` as plain JSON types: NumPy scalars and arrays converted, inf/nan → None.

    Parameters
    ----------
    value : any
        Numbers, strings, booleans, None, NumPy scalars and arrays, and lists,
        tuples and mappings of those.
    where : str, default='metrics'
        Name of ``value`` in error messages.

    Returns
    -------
    value : dict, list, str, int, float, bool or None

    Raises
    ------
    TypeError
        For a value JSON cannot hold; ``where`` names it (``metrics['key']``).
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), where)
    if isinstance(value, (list, tuple)):
        return [json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return json_safe(value.item(), where)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise TypeError(
        f"{where} of type {type(value).__name__} cannot be written to JSON; pass "
        "numbers, strings, booleans, lists or dicts"
    )


###############################################################################
# Figures


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "fit reports need matplotlib: pip install 'daskgmm[plot]'"
        ) from exc
    return matplotlib


def _new_figure(width: float, height: float) -> Any:
    """A figure on its own Agg canvas (pyplot's global state is left alone)."""
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str) -> None:
    fig.savefig(path, dpi=DPI, facecolor="white")


def _component_colors(n_components: int) -> list[tuple[float, ...]]:
    import matplotlib

    name = "tab10" if n_components <= 10 else "tab20"
    cmap = matplotlib.colormaps[name]
    return [cmap(k % cmap.N) for k in range(n_components)]


def _halo() -> list[Any]:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=3.0, foreground="white")]


def _darker(color: Sequence[float], by: float = 0.35) -> tuple[float, ...]:
    """``color`` mixed with black, so an outline stands out on points of its colour."""
    return (*(c * (1.0 - by) for c in color[:3]), 1.0)


# ----------------------------------------------------------- log-likelihood


def _convergence_text(model: Any, n_iter: int) -> str:
    tol = getattr(model, "tol", None)
    state = "converged" if model.converged_ else "did not converge"
    tol_text = f" (tol = {tol:g} on |change|)" if tol is not None else ""
    plural = "s" if n_iter != 1 else ""
    return f"{state} after {n_iter} iteration{plural}{tol_text}"


def _plot_lower_bounds(ax: Any, bounds: np.ndarray, model: Any) -> None:
    iters = np.arange(1, len(bounds) + 1)
    ax.plot(iters, bounds, marker="o", ms=4 if len(bounds) < 40 else 2, color="C0")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_ylabel("mean log-likelihood")
    ax.set_title("Mean log-likelihood per EM iteration")
    text = f"{_convergence_text(model, len(bounds))}\nlast: {bounds[-1]:.6g}"
    ax.text(
        0.98,
        0.05,
        text,
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
    )


def _plot_changes(ax: Any, bounds: np.ndarray, tol: float | None) -> None:
    ax.set_ylabel("|change|")
    ax.set_xlabel("EM iteration")
    if len(bounds) < 2:
        ax.text(
            0.5,
            0.5,
            "a single iteration: no change between iterations to show",
            transform=ax.transAxes,
            ha="center",
            va="center",
        )
        ax.set_yticks([])
        return
    iters = np.arange(2, len(bounds) + 1)
    change = np.diff(bounds)
    size = np.abs(change)
    size[size == 0] = np.nan  # cannot be drawn on a log scale
    levels = size[np.isfinite(size)]
    if tol is not None and tol > 0:
        levels = np.append(levels, tol)
    # Limits first: autoscaling a single point on a log axis warns.
    ax.set_yscale("log")
    if len(levels):
        ax.set_ylim(levels.min() / 4, levels.max() * 4)
    ax.plot(iters, size, marker="o", ms=3, color="C0", label="|change|")
    # Decreases at the level of rounding (converged runs show some) are not flagged.
    noise = 64 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(bounds[1:]))
    down = change < -noise
    if down.any():
        ax.plot(iters[down], size[down], "v", color="C3", label="decrease")
    if tol is not None and tol > 0:
        ax.axhline(tol, color="C1", ls="--", label=f"tol = {tol:g}")
    ax.legend(loc="best", fontsize="small")


def _plot_loglik(model: Any, path: str) -> None:
    """Write ``loglik.png``: the lower bound per iteration and its change vs ``tol``."""
    from matplotlib.ticker import MaxNLocator

    bounds = np.asarray(model.lower_bounds_, dtype=np.float64)
    fig = _new_figure(7.5, 6.0)
    if len(bounds) == 0:
        fig.suptitle("Mean log-likelihood per EM iteration")
        fig.text(0.5, 0.5, "no EM iteration was run (max_iter=0)", ha="center")
        _save(fig, path)
        return
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    _plot_lower_bounds(top, bounds, model)
    _plot_changes(bottom, bounds, getattr(model, "tol", None))
    top.set_xlim(0.5, len(bounds) + 0.5)
    if len(bounds) <= 10:
        bottom.set_xticks(np.arange(1, len(bounds) + 1))
    else:
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, path)


# --------------------------------------------------------------- projections


def _draw_ellipses(
    ax: Any, means2: np.ndarray, covs2: np.ndarray, colors: Sequence[Any]
) -> None:
    halo = _halo()
    for mean, cov, color in zip(means2, covs2, colors, strict=True):
        edge = _darker(color)
        for n_std, style in ((1.0, "-"), (2.0, "--")):
            pts = ellipse_points(mean, cov, n_std)
            ax.plot(*pts.T, style, color=edge, lw=1.5, zorder=3, path_effects=halo)
        ax.plot(*mean, "X", color=color, mec="black", mew=0.8, ms=9, zorder=4)


def _draw_plane(
    ax: Any,
    plane: Plane,
    points: np.ndarray,
    labels: np.ndarray,
    gaussians: tuple[np.ndarray, np.ndarray],
    colors: Sequence[Any],
) -> None:
    xy = points @ plane.axes.T
    size = 6.0 if len(points) <= 5_000 else 2.0
    ax.scatter(
        xy[:, 0],
        xy[:, 1],
        c=np.asarray(colors)[labels],
        s=size,
        alpha=0.45,
        linewidths=0,
        rasterized=True,
        zorder=1,
    )
    means2, covs2 = project_gaussians(*gaussians, plane.axes)
    _draw_ellipses(ax, means2, covs2, colors)
    ax.set_xlabel(plane.xlabel)
    ax.set_ylabel(plane.ylabel)
    ax.grid(alpha=0.25)


def _draw_histogram_1d(
    ax: Any,
    model: Any,
    points: np.ndarray,
    labels: np.ndarray,
    colors: Sequence[Any],
    name: str,
) -> None:
    x = points[:, 0]
    k = len(colors)
    parts = [x[labels == j] for j in range(k)]
    bins = np.histogram_bin_edges(x, bins=min(150, max(10, int(np.sqrt(len(x))))))
    ax.hist(parts, bins=bins, stacked=True, density=True, color=colors, alpha=0.55)
    pad = 0.05 * (bins[-1] - bins[0] or 1.0)
    grid = np.linspace(bins[0] - pad, bins[-1] + pad, 1000)
    density = mixture_density_1d(model, grid)
    ax.plot(grid, density.sum(axis=0), color="black", lw=2.2)
    for j in range(k):
        ax.plot(grid, density[j], "--", color=_darker(colors[j]), lw=1.3)
    ax.set_xlabel(name)
    ax.set_ylabel("density")
    ax.grid(alpha=0.25)


def _legend_handles(model: Any, colors: Sequence[Any]) -> list[Any]:
    from matplotlib.lines import Line2D

    weights = np.asarray(model.weights_)
    return [
        Line2D(
            [],
            [],
            ls="none",
            marker="o",
            color=color,
            ms=7,
            label=f"component {k} (weight {weights[k]:.2f})",
        )
        for k, color in enumerate(colors)
    ]


def _legend_columns(n_entries: int, width: float) -> int:
    """Columns of a legend below a figure ``width`` inches wide, rows evenly filled."""
    fits = max(1, int(width / 2.6))  # an entry takes about 2.6 inches
    rows = math.ceil(n_entries / fits)
    return math.ceil(n_entries / rows)


def _grid_shape(n_panels: int) -> tuple[int, int]:
    return (1, n_panels) if n_panels <= 3 else (math.ceil(n_panels / 3), 3)


def _projection_title(d: int, n_shown: int, n_rows: int) -> str:
    rows = f"all {n_rows:,}" if n_shown == n_rows else f"{n_shown:,} of {n_rows:,}"
    if d == 1:
        return (
            "Sample by predicted component, with the fitted density\n"
            f"({rows} sample rows; black: mixture, dashed: weighted components)"
        )
    what = (
        "Sample on its first two principal axes, by predicted component"
        if d > 4
        else "Sample by predicted component, with the fitted covariances"
    )
    return f"{what}\n({rows} sample rows; ellipses at 1σ solid, 2σ dashed; ✖ mean)"


def _plot_projections(
    model: Any,
    points: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    path: str,
    n_rows: int,
) -> None:
    """Write ``projections.png`` (see the module docstring)."""
    d = points.shape[1]
    colors = _component_colors(len(model.weights_))
    if d == 1:
        fig = _new_figure(8.0, 6.0)
        _draw_histogram_1d(fig.subplots(), model, points, labels, colors, names[0])
    else:
        planes = projection_planes(points, names)
        rows, cols = _grid_shape(len(planes))
        fig = _new_figure(max(8.0, 4.9 * cols), 5.0 * rows + 1.6)
        axs = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        gaussians = (np.asarray(model.means_, np.float64), covariance_matrices(model))
        for ax, plane in zip(axs, planes, strict=True):
            _draw_plane(ax, plane, points, labels, gaussians, colors)
    fig.suptitle(_projection_title(d, len(points), n_rows))
    fig.legend(
        handles=_legend_handles(model, colors),
        loc="outside lower center",
        ncol=_legend_columns(len(colors), fig.get_figwidth()),
        fontsize="small",
        frameon=False,
    )
    _save(fig, path)


# ------------------------------------------------------------- responsibility


def _plot_responsibility(max_resp: np.ndarray, n_components: int, path: str) -> None:
    """Write ``responsibility_hist.png``: histogram of the largest responsibility per row."""
    lo = 1.0 / n_components if n_components > 1 else 0.0
    fig = _new_figure(7.5, 4.6)
    ax = fig.subplots()
    ax.hist(max_resp, bins=np.linspace(lo, 1.0, 41), color="C0", alpha=0.8)
    ax.set_yscale("log")
    ax.axvline(UNCERTAIN_BELOW, color="C3", ls="--", lw=1.2)
    below = int(np.sum(max_resp < UNCERTAIN_BELOW))
    note = (
        f"{below:,} of {len(max_resp):,} rows ({below / len(max_resp):.1%}) "
        f"below {UNCERTAIN_BELOW:g}"
    )
    if n_components == 1:
        note += "\n(a single component: every responsibility is 1)"
    ax.text(
        0.03,
        0.95,
        note,
        transform=ax.transAxes,
        va="top",
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
    )
    ax.set_xlim(lo, 1.0)
    ax.set_xlabel("largest responsibility of a row (max over components)")
    ax.set_ylabel("rows (log scale)")
    ax.set_title("How soft is the clustering? Largest responsibility per sample row")
    ax.grid(alpha=0.25)
    _save(fig, path)


###############################################################################
# Markdown


def _cell(value: Any) -> str:
    if value is None:
        text = "n/a"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _posterior_weights_section(weights: list | None) -> list[str]:
    """A Bayesian mixture's posterior weights, largest first, and which it kept."""
    if not weights:
        return []
    kept = sum(w["kept"] for w in weights)
    return [
        "## Posterior weights",
        "",
        f"{kept} of {len(weights)} components kept (weight above 0.01):",
        "",
        "| component | weight | kept |",
        "|---|---|---|",
        *(
            f"| {w['component']} | {w['weight']:.6g} | {'yes' if w['kept'] else 'no'} |"
            for w in weights
        ),
        "",
    ]


def _report_markdown(metrics: Mapping[str, Any]) -> str:
    """The text of ``report.md`` for JSON-safe ``metrics``."""
    lines = [
        "# Gaussian mixture fit report",
        "",
        f"{metrics['n_components']} components, `{metrics['covariance_type']}` "
        f"covariances, {'converged' if metrics['converged'] else 'not converged'} "
        f"after {metrics['n_iter']} EM iteration{'' if metrics['n_iter'] == 1 else 's'}.",
        "",
        *_posterior_weights_section(metrics.get("posterior_weights")),
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *(
            f"| {_cell(k)} | {_cell(v)} |"
            for k, v in metrics.items()
            if k != "posterior_weights"
        ),
        "",
        "## Plots",
        "",
        f"Mean log-likelihood per iteration ([{FILES['loglik']}]({FILES['loglik']})):",
        "",
        f"![mean log-likelihood per iteration]({FILES['loglik']})",
        "",
        "Sample coloured by predicted component, with the fitted covariances "
        f"([{FILES['projections']}]({FILES['projections']})):",
        "",
        f"![projections]({FILES['projections']})",
        "",
        "Largest responsibility per sample row "
        f"([{FILES['responsibility_hist']}]({FILES['responsibility_hist']})):",
        "",
        f"![largest responsibility per row]({FILES['responsibility_hist']})",
        "",
    ]
    return "\n".join(lines)


###############################################################################
# The report


def _check_fitted(model: Any) -> None:
    if not hasattr(model, "converged_"):
        raise exceptions.NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet. Call 'fit' "
            "with appropriate arguments before writing a report."
        )


def _check_sample(model: Any, sample: Any) -> np.ndarray:
    points = np.asarray(sample, dtype=np.float64)
    d = np.shape(model.means_)[1]
    if points.ndim != 2 or points.shape[1] != d or len(points) == 0:
        raise ValueError(
            f"sample must have shape (n_rows, {d}) with n_rows >= 1, got {points.shape}"
        )
    if not np.isfinite(points).all():
        raise ValueError("sample holds NaN or infinite values; drop those rows first")
    return points


def _feature_names(model: Any, d: int, feature_names: Any) -> list[str]:
    if feature_names is None:
        feature_names = getattr(model, "feature_names_in_", None)
    if feature_names is None:
        return [f"x{j}" for j in range(d)]
    names = [str(name) for name in feature_names]
    if len(names) != d:
        raise ValueError(f"feature_names has {len(names)} names for {d} features")
    return names


def _subsample(n_rows: int) -> np.ndarray:
    limit = MAX_POINTS
    if n_rows <= limit:
        return np.arange(n_rows)
    logger.info("report: plotting %d of the %d sample rows", limit, n_rows)
    return np.sort(np.random.default_rng(0).choice(n_rows, limit, replace=False))


def _computed_metrics(
    model: Any, resp: np.ndarray, kmeans_labels: Any = None
) -> dict[str, Any]:
    """Metrics :func:`write_report` computes from the model and the sample."""
    metrics = {
        "n_components": len(model.weights_),
        "covariance_type": str(model.covariance_type),
        "converged": bool(model.converged_),
        "n_iter": int(model.n_iter_),
        "share_uncertain": share_uncertain(resp),
        "uncertain_below": UNCERTAIN_BELOW,
        "sample_rows": len(resp),
    }
    if kmeans_labels is not None:
        kmeans_labels = np.asarray(kmeans_labels).reshape(-1)
        if len(kmeans_labels) != len(resp):
            raise ValueError(
                f"kmeans_labels has {len(kmeans_labels)} labels for "
                f"{len(resp)} sample rows"
            )
        metrics["kmeans_agreement"] = label_agreement(
            resp.argmax(axis=1), kmeans_labels
        )
    return metrics


def _merge_metrics(given: Mapping[str, Any], computed: Mapping[str, Any]) -> dict:
    merged = json_safe(dict(given))
    for key, value in json_safe(dict(computed)).items():
        if key in merged and merged[key] != value:
            logger.warning(
                "report: metrics[%r] = %r replaced by the computed value %r",
                key,
                merged[key],
                value,
            )
        merged[key] = value
    return merged


def write_report(
    model: Any,
    sample: Any,
    out_dir: str | os.PathLike,
    *,
    metrics: Mapping[str, Any],
    feature_names: Sequence[str] | None = None,
    kmeans_labels: Any = None,
    overwrite: bool = False,
    selection: Any = None,
    criterion: str = "bic",
    comparison: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write the plots, metrics and Markdown page of a fit into ``out_dir``, atomically.

    Parameters
    ----------
    model : fitted GaussianMixture
    sample : array-like of shape (n_rows, n_features)
        Rows of the data to plot (a few tens of thousands at most; above
        ``MAX_POINTS`` a seeded subsample is drawn, the metrics use every row).
    out_dir : str or path
        Directory created with every file, or nothing when anything fails.
    metrics : mapping
        Metrics of the fit (lower bound, BIC, timings, data size …), written to
        ``metrics.json`` with the computed ones; NumPy values are converted and
        inf/nan become null.
    feature_names : sequence of str, optional
        Axis labels; default the model's ``feature_names_in_``, else ``x0, x1 …``.
    kmeans_labels : array-like of shape (n_rows,), optional
        Labels of the sample rows by k-means; adds ``kmeans_agreement``, the share
        of rows where it agrees with the mixture once labels are matched.
    overwrite : bool, default=False
        Replace an existing ``out_dir``; otherwise raise ``FileExistsError``.
    selection : pandas.DataFrame, optional
        The table of a model sweep (:func:`daskgmm.select_model`): adds
        ``selection.png`` (BIC and AIC against the number of components, a line
        per covariance type) and the table to the page.
    criterion : {'bic', 'aic'}, default='bic'
        The criterion the sweep chose by (marked in the plot).
    comparison : mapping, optional
        The result of :func:`daskgmm.compare.compare_with_kmeans` on all rows:
        adds a section on soft versus hard clustering.

    Returns
    -------
    paths : dict of str to str
        Absolute path of every file written, keyed ``loglik``, ``projections``,
        ``responsibility_hist``, ``metrics`` and ``report``.
    """
    _check_fitted(model)
    _matplotlib()  # fail before anything is computed or written
    points = _check_sample(model, sample)
    names = _feature_names(model, points.shape[1], feature_names)
    resp = np.asarray(model.predict_proba(points), dtype=np.float64)
    merged = _merge_metrics(metrics, _computed_metrics(model, resp, kmeans_labels))
    shown = _subsample(len(points))
    final = os.path.abspath(os.fspath(out_dir))
    with atomic_path(final, overwrite=overwrite) as tmp:
        os.makedirs(tmp)
        _plot_loglik(model, os.path.join(tmp, FILES["loglik"]))
        _plot_projections(
            model,
            points[shown],
            resp[shown].argmax(axis=1),
            names,
            os.path.join(tmp, FILES["projections"]),
            len(points),
        )
        _plot_responsibility(
            resp.max(axis=1),
            len(model.weights_),
            os.path.join(tmp, FILES["responsibility_hist"]),
        )
        with open(os.path.join(tmp, FILES["metrics"]), "w", encoding="utf-8") as f:
            json.dump(merged, f, indent=2, allow_nan=False)
            f.write("\n")
        text = _report_markdown(merged)
        written = dict(FILES)
        if selection is not None:
            plot_selection(selection, criterion, os.path.join(tmp, SELECTION_FILE))
            text += _selection_markdown(selection, criterion)
            written["selection"] = SELECTION_FILE
        if comparison is not None:
            text += _comparison_markdown(comparison)
        with open(os.path.join(tmp, FILES["report"]), "w", encoding="utf-8") as f:
            f.write(text)
    logger.info("fit report written to %s", final)
    return {key: os.path.join(final, name) for key, name in written.items()}


###############################################################################
# Model selection and the k-means comparison

SELECTION_FILE = "selection.png"
_SELECTION_SHOWN = (
    "n_components",
    "covariance_type",
    "bic",
    "aic",
    "lower_bound",
    "n_iter",
    "converged",
    "status",
)


def plot_selection(table: Any, criterion: str, path: str) -> None:
    """BIC and AIC against the number of components, one line per covariance type.

    Failed candidates are left out (gaps in their lines); the chosen model is
    circled on the panel of ``criterion``.
    """
    fig = _new_figure(10.0, 4.2)
    axes = fig.subplots(1, 2)
    ok = table[table["status"] == "ok"]
    types = list(dict.fromkeys(table["covariance_type"]))
    colors = _component_colors(len(types))
    for ax, name in zip(axes, ("bic", "aic"), strict=True):
        for ctype, color in zip(types, colors, strict=True):
            part = ok[ok["covariance_type"] == ctype].sort_values("n_components")
            ax.plot(
                part["n_components"],
                part[name],
                marker="o",
                ms=4,
                color=color,
                label=ctype,
            )
        best = table[table["best"]]
        if name == criterion and len(best):
            ax.plot(
                best["n_components"],
                best[name],
                marker="o",
                ms=14,
                mfc="none",
                mec="black",
                mew=1.5,
                ls="none",
                label="chosen",
            )
        ax.set_xlabel("number of components")
        ax.set_ylabel(f"{name.upper()} (lower is better)")
        ax.set_title(name.upper() + (" (criterion)" if name == criterion else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ks = sorted({int(k) for k in table["n_components"]})
        if len(ks) <= 20:
            ax.set_xticks(ks)
    _save(fig, path)


def _selection_markdown(table: Any, criterion: str) -> str:
    shown = [c for c in _SELECTION_SHOWN if c in table.columns]
    best = table[table["best"]].iloc[0]
    lines = [
        "## Model selection",
        "",
        f"Chosen by {criterion.upper()}: {int(best['n_components'])} components, "
        f"`{best['covariance_type']}` covariances "
        f"([{SELECTION_FILE}]({SELECTION_FILE})).",
        "",
        f"![BIC and AIC against the number of components]({SELECTION_FILE})",
        "",
        "| " + " | ".join(shown) + " | error |",
        "|" + "---|" * (len(shown) + 1),
    ]
    for row in table.to_dict("records"):
        cells = [_cell(json_safe(row[c], "selection")) for c in shown]
        cells.append(_cell(row.get("error") or ""))
        if row["best"]:
            cells[0] = f"**{cells[0]} (chosen)**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""]) + "\n"


def _comparison_markdown(comparison: Mapping[str, Any]) -> str:
    c = json_safe(dict(comparison), "comparison")
    lines = [
        "## Soft versus hard clustering (k-means on every row)",
        "",
        "| measure | value |",
        "|---|---|",
        "| adjusted Rand index, mixture labels vs k-means labels | "
        f"{_cell(c.get('kmeans_adjusted_rand_index'))} |",
        "| rows with the same label once labels are matched | "
        f"{_cell(c.get('kmeans_agreement'))} |",
        "| rows whose mixture assignment is uncertain (max responsibility < "
        f"{_cell(c.get('uncertain_below'))}) | {_cell(c.get('uncertain_share'))} |",
        f"| k-means iterations (converged) | {_cell(c.get('kmeans_iterations'))} "
        f"({_cell(c.get('kmeans_converged'))}) |",
        f"| k-means inertia | {_cell(c.get('kmeans_inertia'))} |",
        "",
        "Rows: mixture components; columns: k-means clusters (row counts).",
        "",
    ]
    table = c.get("contingency") or []
    if table:
        k_km = len(table[0])
        lines.append("| component | " + " | ".join(f"k{j}" for j in range(k_km)) + " |")
        lines.append("|" + "---|" * (k_km + 1))
        for i, row in enumerate(table):
            lines.append(f"| {i} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join([*lines, ""]) + "\n"
