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
