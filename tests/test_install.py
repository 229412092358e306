"""The command works from a non-editable install, from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_non_editable_install_runs_the_command_elsewhere(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    assert (target / "pipelines" / "cluster.py").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import daskgmm, pipelines, sys; "
        "from daskgmm.cli import main; "
        f"assert daskgmm.__file__.startswith({str(target)!r}), daskgmm.__file__; "
        f"assert pipelines.__file__.startswith({str(target)!r}), pipelines.__file__; "
        f"sys.exit(main(['validate', {str(REPO / 'configs' / 'demo.yaml')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "valid cluster job" in result.stdout
    script = target / "bin" / "daskgmm"
    assert script.is_file()


def _fit_in_subprocess(
    target: Path, cache: Path, cwd: Path
) -> subprocess.CompletedProcess:
    """A small fit with the compiled kernel, from the install in ``target``."""
    code = (
        "import logging, time, numpy as np, daskgmm; "
        "logging.basicConfig(level=logging.INFO, format='%(message)s'); "
        f"assert daskgmm.__file__.startswith({str(target)!r}), daskgmm.__file__; "
        "X = np.random.default_rng(0).normal(size=(2000, 2)); "
        "tic = time.perf_counter(); "
        "gm = daskgmm.GaussianMixture(2, kernel='compiled', random_state=0).fit(X); "
        "print(gm.fit_timings_['compile_seconds'], time.perf_counter() - tic)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(target), "DASKGMM_CACHE_DIR": str(cache)},
        timeout=300,
    )


def test_compiled_kernels_are_cached_per_user_not_in_the_package(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"),
            *("--target", str(target), str(REPO)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    cache = tmp_path / "cache"
    first = _fit_in_subprocess(target, cache, tmp_path)
    assert first.returncode == 0, first.stderr
    # The first fit says that it compiles, and reports the time apart.
    assert "compiling the EM kernels for this machine (first run only" in first.stderr
    compile_seconds, _ = map(float, first.stdout.split())
    assert compile_seconds > 0.5
    assert list((cache / "numba").glob("*/_compiled._estep-*.nbi"))
    # Nothing in the installed package: pip uninstall would leave it behind.
    assert not [p for p in target.rglob("*") if p.suffix in (".nbi", ".nbc")]
    second = _fit_in_subprocess(target, cache, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "compiling the EM kernels" not in second.stderr
    cached_seconds, _ = map(float, second.stdout.split())
    assert cached_seconds < compile_seconds / 3


def test_an_unwritable_cache_compiles_in_memory_with_one_log_line(
    tmp_path, monkeypatch, caplog
):
    from daskgmm import _compiled

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DASKGMM_CACHE_DIR", str(blocker / "cache"))
    with caplog.at_level("WARNING", logger="daskgmm"):
        assert _compiled._writable_cache() is None
    (record,) = caplog.records
    assert record.getMessage().startswith(
        f"cannot write the kernel cache {blocker / 'cache' / 'numba'} ("
    )
    assert record.getMessage().endswith(
        "compiling the EM kernels in memory, which every new process repeats; set "
        "DASKGMM_CACHE_DIR to a writable folder"
    )


def test_the_cache_folder_follows_the_platform_and_the_override(monkeypatch, tmp_path):
    from daskgmm import _compiled

    monkeypatch.delenv("DASKGMM_CACHE_DIR", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _compiled.cache_dir() == tmp_path / "xdg" / "daskgmm" / "numba"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _compiled.cache_dir() == Path.home() / ".cache" / "daskgmm" / "numba"
    monkeypatch.setenv("DASKGMM_CACHE_DIR", str(tmp_path / "mine"))
    assert _compiled.cache_dir() == tmp_path / "mine" / "numba"
