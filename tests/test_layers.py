"""The package's layers: every import points down (README, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import the modules of lower layers, and those of its
# own layer listed before it: no import cycle, and no layer reaching up.
LAYERS = {
    "leaves": [
        "_chunks",
        "_version",
        "exceptions",
        "_validation",
        "_kernels",
        "_missing",
    ],
    "engine": [
        "_compiled",
        "_reduce",
        "_preprocess",
        "io._zarr",
        "io._image",
        "io._sinks",
        "io._npy",
        "io._parquet",
        "io",
    ],
    "loop": [
        "_em",
        "_variational",
        "_init",
        "checkpoint",
        "_params",
        "_plan",
        "_runner",
    ],
    "model": [
        "fitted",
        "model_io",
        "mixture",
        "bayesian",
        "selection",
        "compare",
        "datasets",
        "daskgmm",
    ],
    "jobs": ["config", "report", "segment", "jobs"],
    "commands": [
        "pipelines.cluster",
        "pipelines.segment_image",
        "pipelines.select_model",
        "pipelines",
        "cli",
        "demo",
    ],
}
ORDER = [name for layer in LAYERS.values() for name in layer]


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("daskgmm", "pipelines"):
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            found[name.removeprefix("daskgmm.") if name != "daskgmm" else name] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports, at any depth of its code."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if _short(full) in known else base)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {_short(name) for name in out} & known


def _short(name: str) -> str:
    return name if name == "daskgmm" else name.removeprefix("daskgmm.")


def test_every_module_has_a_layer():
    assert sorted(_modules()) == sorted(ORDER)


def test_every_import_points_down():
    modules = _modules()
    rank = {name: i for i, name in enumerate(ORDER)}
    upward = [
        f"{name} imports {target}"
        for name, path in modules.items()
        for target in sorted(_imports(path, set(modules)) - {name})
        if rank[target] > rank[name]
    ]
    assert upward == []
