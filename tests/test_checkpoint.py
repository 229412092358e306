"""Checkpoints, and a job killed mid-fit then resumed ending with the same model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import daskgmm
from daskgmm._em import Parameters
from daskgmm.checkpoint import Checkpoint, State, fingerprint
from tests.conftest import DEMO, daskgmm_cmd


def _state(n_iter: int, seed: int = 0) -> State:
    rng = np.random.default_rng(seed)
    return State(
        Parameters(
            rng.random(3),
            rng.random((3, 2)),
            rng.random((3, 2, 2)),
            rng.random((3, 2, 2)),
        ),
        n_iter,
        list(rng.random(n_iter)),
        False,
    )


def test_checkpoint_round_trip_keeps_only_the_last_state(tmp_path):
    ckpt = Checkpoint(str(tmp_path / "ck"), "job-a")
    assert ckpt.read() is None
    for n in (1, 2, 3):
        ckpt.write(_state(n, seed=n))
    (got,) = ckpt.read()
    want = _state(3, seed=3)
    assert got.n_iter == 3
    assert got.lower_bounds == want.lower_bounds
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        np.testing.assert_array_equal(
            getattr(got.params, name), getattr(want.params, name)
        )
    assert sorted(os.listdir(tmp_path / "ck")) == ["state-3.npz", "state.json"]


def test_checkpoint_holds_every_restart(tmp_path):
    ckpt = Checkpoint(str(tmp_path / "ck"), "job-a")
    ckpt.write([_state(4, seed=1), _state(2, seed=2), _state(3, seed=3)])
    got = ckpt.read()
    assert [s.n_iter for s in got] == [4, 2, 3]
    for state, seed in zip(got, (1, 2, 3), strict=True):
        want = _state(state.n_iter, seed=seed)
        assert state.lower_bounds == want.lower_bounds
        np.testing.assert_array_equal(state.params.means, want.params.means)
    assert json.loads((tmp_path / "ck" / "state.json").read_text())["n_iter"] == 4


def test_checkpoint_of_another_job_or_damaged_is_refused(tmp_path):
    Checkpoint(str(tmp_path / "ck"), "job-a").write(_state(2))
    with pytest.raises(ValueError, match="belongs to a different job"):
        Checkpoint(str(tmp_path / "ck"), "job-b").read()
    (tmp_path / "ck" / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="is damaged"):
        Checkpoint(str(tmp_path / "ck"), "job-a").read()


def test_fingerprint_changes_with_the_settings():
    assert fingerprint({"a": 1}, {"b": [1, 2]}) == fingerprint({"a": 1}, {"b": [1, 2]})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


JOB = [
    "--set",
    "data.synthetic.n_samples=400000",
    "--set",
    "data.synthetic.n_features=4",
    "--set",
    "data.rows_per_chunk=50000",
    "--set",
    "model.tol=0",
    "--set",
    "model.max_iter=25",
    "--set",
    "model.init_params=random",
    "--set",
    "output.checkpoint=true",
    "--set",
    "output.report=false",
    "--set",
    "cluster.n_workers=1",
]


def _run_args(out: Path, n_init: int = 1) -> list[str]:
    return [
        "run",
        str(DEMO),
        *JOB,
        "--set",
        f"output.directory={out}",
        "--set",
        f"model.n_init={n_init}",
    ]


@pytest.mark.filterwarnings("ignore::daskgmm.ConvergenceWarning")
@pytest.mark.parametrize("n_init", [1, 2])
def test_killed_job_resumes_to_the_same_model(tmp_path, n_init):
    reference = tmp_path / "reference"
    result = daskgmm_cmd(*_run_args(reference, n_init), "--quiet")
    assert result.returncode == 0, result.stderr
    assert not Path(f"{reference}.checkpoint").exists()  # removed after success

    out = tmp_path / "killed"
    state_file = Path(f"{out}.checkpoint") / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskgmm.cli", *_run_args(out, n_init), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if state_file.exists():
                n_done = json.loads(state_file.read_text())["n_iter"]
                if n_done >= 3:
                    break
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not out.exists()  # nothing half-written
    killed_at = json.loads(state_file.read_text())["n_iter"]
    assert 3 <= killed_at < 25

    result = daskgmm_cmd(*_run_args(out, n_init), "--resume")
    assert result.returncode == 0, result.stderr
    assert f"resuming after iteration {killed_at}" in result.stderr
    resumed, uninterrupted = (daskgmm.load(str(p / "model")) for p in (out, reference))
    assert resumed.n_iter_ == uninterrupted.n_iter_ == 25
    assert resumed.lower_bounds_ == uninterrupted.lower_bounds_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(
            getattr(resumed, name), getattr(uninterrupted, name)
        )
    assert not Path(f"{out}.checkpoint").exists()


def test_resume_without_checkpoint_fails_clearly(tmp_path):
    out = tmp_path / "out"
    result = daskgmm_cmd(*_run_args(out), "--resume")
    assert result.returncode == 2
    assert (
        f"no checkpoint at {out}.checkpoint; run the job without --resume"
        in result.stderr
    )
    assert not out.exists()
