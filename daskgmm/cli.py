"""The ``daskgmm`` command: run, validate, predict, info, segment.

Exit codes: 0 done; 2 bad configuration or arguments (the message names the field
path); 1 a run-time failure (one line naming the problem; the traceback only with
``--debug``). Only this module prints and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep one line
        self.exit(EXIT_USAGE, f"daskgmm: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    from daskgmm import __version__

    parser = _Parser(
        prog="daskgmm",
        description="Gaussian mixture models fitted by EM on dask, from job files.",
    )
    parser.add_argument("--version", action="version", version=f"daskgmm {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and debug logs"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a job file")
    run.add_argument("config", help="YAML job file")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.n_components=12",
    )
    run.add_argument("--resume", action="store_true", help="continue from a checkpoint")
    run.add_argument("--quiet", action="store_true", help="only warnings and errors")
    run.add_argument(
        "--json",
        action="store_true",
        help="print every metric and output path as JSON (for scripts) instead of "
        "a short summary",
    )

    validate = sub.add_parser("validate", help="check a job file without running it")
    validate.add_argument("config")
    validate.add_argument("--set", dest="overrides", action="append", default=[])

    predict = sub.add_parser(
        "predict", help="label the rows of DATA with a saved model"
    )
    predict.add_argument("model", help="model directory written by a job or .save()")
    predict.add_argument("data", help="Zarr store, Parquet file/dataset, .npy or image")
    predict.add_argument("--out", required=True, help="output path (.zarr or .parquet)")
    predict.add_argument("--array", help="array inside a Zarr group")
    predict.add_argument("--columns", help="comma-separated Parquet feature columns")
    predict.add_argument(
        "--probabilities", action="store_true", help="also write probabilities"
    )
    predict.add_argument("--overwrite", action="store_true")

    info = sub.add_parser("info", help="describe a saved model")
    info.add_argument("model")
    _segment_parser(sub)
    return parser


def _segment_parser(sub: argparse._SubParsersAction) -> None:
    """``daskgmm segment IMAGE -k K --out DIR``: a segment_image job without a file."""
    seg = sub.add_parser(
        "segment",
        help="segment the pixels of an image into K regions",
        description="Segment the pixels of an image with a Gaussian mixture (the "
        "segment_image pipeline): labels.zarr, preview.png, uncertainty.png, the "
        "model and summary.json in DIR.",
    )
    seg.add_argument(
        "image",
        help="TIFF, PNG, JPEG or Zarr image, or skimage:NAME for a photo shipped "
        "with scikit-image (e.g. skimage:coffee)",
    )
    seg.add_argument(
        "--n-components",
        "-k",
        type=int,
        help="number of segments (or --auto-k)",
    )
    seg.add_argument(
        "--auto-k",
        action="store_true",
        help="let a Bayesian mixture (Dirichlet process) pick the number of segments, "
        "up to --max-components",
    )
    seg.add_argument(
        "--max-components",
        type=int,
        default=20,
        help="the most segments --auto-k may keep (default 20)",
    )
    seg.add_argument("--out", required=True, metavar="DIR", help="output directory")
    seg.add_argument(
        "--features", choices=("rgb", "lab", "rgb+xy", "lab+xy"), default="rgb"
    )
    seg.add_argument(
        "--fit-fraction",
        type=float,
        default=1.0,
        help="fit on a uniform sample of this share of the pixels (default: all)",
    )
    seg.add_argument(
        "--covariance-type",
        choices=("full", "tied", "diag", "spherical"),
        default="full",
    )
    seg.add_argument("--xy-weight", type=float, default=1.0)
    seg.add_argument("--channels", help="channels to use, e.g. 0,1,2 (default: all)")
    seg.add_argument("--scale", choices=("dtype", "range"), default="dtype")
    seg.add_argument(
        "--nodata", type=float, help="ignore pixels with this value in every channel"
    )
    seg.add_argument(
        "--mask", help="image of the same size whose nonzero pixels are ignored"
    )
    seg.add_argument("--array", help="array inside a Zarr group")
    seg.add_argument("--probabilities", action="store_true", help="also write them")
    seg.add_argument("--preview-size", type=int, default=2000)
    seg.add_argument("--max-iter", type=int, default=100)
    seg.add_argument("--random-state", type=int, default=0)
    seg.add_argument("--workers", type=int, help="workers of the local dask cluster")
    seg.add_argument("--overwrite", action="store_true")
    seg.add_argument("--quiet", action="store_true", help="only warnings and errors")
    seg.add_argument(
        "--json", action="store_true", help="print summary.json instead of a summary"
    )


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("daskgmm")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False

    def one_line_warning(message, category, *args, **kwargs) -> None:
        root.warning("%s: %s", category.__name__, message)

    warnings.showwarning = one_line_warning


def _cmd_validate(args: argparse.Namespace) -> int:
    from daskgmm.config import load_config

    config = load_config(args.config, args.overrides)
    print(f"{args.config}: valid {config.pipeline} job")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from daskgmm.config import load_config, preflight
    from pipelines import runner

    config = load_config(args.config, args.overrides)
    preflight(config, resume=args.resume)
    if not args.quiet:
        # A log line per iteration, unless the job file says otherwise.
        update: dict = {"verbose": 1}
        if "verbose_interval" not in config.model.model_fields_set:
            update["verbose_interval"] = 1
        config = config.model_copy(
            update={"model": config.model.model_copy(update=update)}
        )
    with _progress_bar(config, enabled=not args.quiet) as progress:
        result = runner(config.pipeline)(config, resume=args.resume, progress=progress)
    _print_result(result, args.json, config.output.directory)
    return EXIT_OK


def _print_result(result: dict, as_json: bool, directory: str) -> None:
    """Every metric as JSON (``--json``), or a few lines for a person."""
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print("\n".join(summary_lines(result, directory)))


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g} s" if value < 10 else f"{value:.0f} s"


def summary_lines(result: dict, directory: str) -> list[str]:
    """A short human summary of a job's result (its metrics and outputs)."""
    if "segments" in result:  # segment_image
        model, timings = result["model"], result["timings"]
        lines = [
            f"segmented {result['image']['height']} x {result['image']['width']} "
            f"pixels into {model['n_components']} segments "
            f"({model['n_iter']} EM iterations, "
            f"{'converged' if model['converged'] else 'NOT converged'})",
            f"time: fit {_seconds(timings['fit_seconds'])} "
            f"({_seconds(timings['seconds_per_iteration'])} per EM iteration), "
            f"labels {_seconds(timings['predict_write_seconds'])}, "
            f"total {_seconds(timings['total_seconds'])}",
        ]
        details = "summary.json"
    else:  # cluster, select_model
        lines = [
            f"fitted {result['n_components']} components "
            f"({result['covariance_type']}) to {result['n_samples']:,} rows x "
            f"{result['n_features']} features: {result['n_iter']} EM iterations, "
            f"{'converged' if result['converged'] else 'NOT converged'}",
            f"lower bound {result['lower_bound']:.6g}, BIC {result['bic']:.6g}, "
            f"AIC {result['aic']:.6g}",
        ]
        if "effective_components" in result:
            lines.append(
                f"Bayesian: the data need {result['effective_components']} of the "
                f"{result['n_components']} components (weight above 0.01)"
            )
        if "selection" in result:
            sel = result["selection"]
            lines.append(
                f"chosen by {sel['criterion']} among {sel['candidates']} candidates "
                f"({sel['failed']} failed) in {sel['passes']} passes, "
                f"{_seconds(sel['sweep_seconds'])}"
            )
        else:
            compile_note = (
                f" (compiling the kernels {_seconds(result['compile_seconds'])})"
                if result.get("compile_seconds", 0) >= 0.5
                else ""
            )
            lines.append(
                f"time: {_seconds(result['fit_seconds'])}: setup "
                f"{_seconds(result['setup_seconds'])}{compile_note}, EM "
                f"{_seconds(result['em_seconds'])} "
                f"({_seconds(result['seconds_per_iteration'])} per iteration)"
            )
        if "kmeans" in result:
            lines.append(
                "k-means on the same rows: adjusted Rand index "
                f"{result['kmeans']['kmeans_adjusted_rand_index']:.4f}"
            )
        details = "metrics.json"
    lines.append(f"output: {directory}")
    width = max(len(name) for name in result["outputs"])
    for name, path in result["outputs"].items():
        lines.append(f"  {name:<{width}}  {path}")
    lines.append(f"every figure: {directory}/{details} (or --json)")
    return lines


@contextlib.contextmanager
def _progress_bar(config: object, *, enabled: bool) -> Iterator[Callable | None]:
    """A tqdm bar of EM iterations on a terminal (any scheduler: it follows the fit).

    dask's own ProgressBar prints nothing on a distributed cluster; this one is
    driven by the estimator's per-iteration callback, so it works everywhere.
    """
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    columns = shutil.get_terminal_size(fallback=(100, 24)).columns
    bar = tqdm(
        total=config.model.max_iter,
        desc="EM",
        unit="it",
        file=sys.stderr,
        ncols=columns if columns >= 40 else 100,
    )

    def update(init: int, state: object) -> None:
        bar.set_description(f"EM (init {init})" if config.model.n_init > 1 else "EM")
        bar.n = state.n_iter
        history = state.lower_bounds
        change = history[-1] - history[-2] if len(history) > 1 else float("inf")
        bar.set_postfix(loglik=f"{state.lower_bound:.6g}", change=f"{change:.2g}")
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def _segment_model(args: argparse.Namespace) -> dict:
    """The number of segments: -k, or a Bayesian mixture of --max-components."""
    from daskgmm.config import ConfigError

    if args.auto_k == (args.n_components is not None):
        raise ConfigError(
            "give the number of segments with -k N, or --auto-k (with "
            "--max-components) to let the data pick it"
        )
    if args.auto_k:
        return {"kind": "bayesian", "n_components": args.max_components}
    return {"n_components": args.n_components}


def segment_config(args: argparse.Namespace) -> dict:
    """The raw segment_image job of a ``daskgmm segment`` command line."""
    import os

    from daskgmm.config import ConfigError

    if args.image.startswith("skimage:"):
        data = {"source": "sample_image", "name": args.image.partition(":")[2]}
    else:
        data = {"source": "image", "path": os.path.abspath(args.image)}
        if args.array:
            data["array"] = args.array
    segment = {
        "features": args.features,
        "xy_weight": args.xy_weight,
        "scale": args.scale,
        "fit_fraction": args.fit_fraction,
        "preview_size": args.preview_size,
        "nodata": args.nodata,
        "mask": None if args.mask is None else os.path.abspath(args.mask),
    }
    if args.channels:
        try:
            segment["channels"] = [int(c) for c in args.channels.split(",")]
        except ValueError:
            raise ConfigError(
                f"--channels {args.channels!r}: expected indices such as 0,1,2"
            ) from None
    return {
        "pipeline": "segment_image",
        "data": data,
        "model": {
            **_segment_model(args),
            "covariance_type": args.covariance_type,
            "max_iter": args.max_iter,
            "random_state": args.random_state,
            "verbose": 0 if args.quiet else 1,
        },
        "segment": segment,
        "cluster": {} if args.workers is None else {"n_workers": args.workers},
        "output": {
            "directory": os.path.abspath(args.out),
            "probabilities": args.probabilities,
            "overwrite": args.overwrite,
        },
    }


def _cmd_segment(args: argparse.Namespace) -> int:
    from daskgmm.config import preflight, validate
    from pipelines import runner

    config = validate(segment_config(args))
    preflight(config)
    with _progress_bar(config, enabled=not args.quiet) as progress:
        result = runner("segment_image")(config, progress=progress)
    _print_result(result, args.json, config.output.directory)
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    from daskgmm.model_io import load_model_metadata

    meta = load_model_metadata(args.model, validate=True)
    print(json.dumps(meta, indent=2, default=str))
    return EXIT_OK


# The outputs of ``daskgmm predict``; the suffix of --out chooses the format.
PREDICT_SUFFIXES = (".zarr", ".parquet", ".pq")


def _cmd_predict(args: argparse.Namespace) -> int:
    import os

    from daskgmm import io, load
    from daskgmm.config import ConfigError, check_output_parent, path_kind
    from daskgmm.jobs import JobError

    out_lower = args.out.lower().rstrip("/")
    if not out_lower.endswith(PREDICT_SUFFIXES):
        raise ConfigError(
            f"--out {args.out}: the output format comes from the suffix: .zarr or "
            ".parquet"
        )
    check_output_parent(args.out, "--out")
    io.check_output_apart(args.out, {"MODEL": args.model, "DATA": args.data})
    path = args.data
    kind = path_kind(path)
    if kind is not None:
        raise ConfigError(
            f"{path} is {kind}, not a regular file or directory; give a .npy, "
            "Parquet, Zarr or image path"
        )
    model = load(args.model)
    lower = path.lower().rstrip("/")
    if not os.path.exists(path) and "://" not in path:
        raise JobError(f"data not found: {path}")
    if lower.endswith((".parquet", ".pq")) or (
        os.path.isdir(path) and not lower.endswith(".zarr")
    ):
        columns = args.columns.split(",") if args.columns else None
        if columns is None and getattr(model, "feature_names_in_", None) is not None:
            columns = list(model.feature_names_in_)
        X = io.ParquetSource(path, columns).features()
    elif lower.endswith(".npy"):
        X = io.read_npy(path)
    elif lower.endswith((".tif", ".tiff", ".png", ".jpg", ".jpeg")):
        X = io.image_to_pixels(io.read_image(path))
    else:
        X = io.read_zarr(path, args.array)
    outputs = {"label": model.predict(X)}
    if args.probabilities:
        outputs["proba"] = model.predict_proba(X)
    if out_lower.endswith((".parquet", ".pq")):
        io.write_parquet(outputs, args.out, overwrite=args.overwrite)
    else:
        io.write_zarr(outputs, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}")
    return EXIT_OK


COMMANDS = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "predict": _cmd_predict,
    "info": _cmd_info,
    "segment": _cmd_segment,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``daskgmm`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    _configure_logging(args.debug, getattr(args, "quiet", False))
    from daskgmm.config import ConfigError
    from daskgmm.io import UnsafeOutputError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, FileExistsError, UnsafeOutputError) as exc:
        if args.debug:
            raise
        print(f"daskgmm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("daskgmm: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # one line per failure, the traceback with --debug
        if args.debug:
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"daskgmm: error: {type(exc).__name__}: {text}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
