"""Checkpoints: the EM state after every iteration, so a killed job can resume.

A checkpoint is a directory holding ``state.json`` (a fingerprint of the job and, for
every EM run — one per restart of ``n_init`` — its iteration count, lower bounds and
whether it converged) and the parameters of every run in ``state-<n>.npz`` (float64,
read with ``allow_pickle=False``). Each iteration writes a new ``.npz`` and then
replaces ``state.json`` with ``os.replace``: the JSON is the commit point, so a kill
at any moment leaves the previous complete state. The runs are independent, so a
state where some restarts are one iteration ahead of others resumes exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskgmm._em import Parameters

FORMAT = "daskgmm-checkpoint"
FORMAT_VERSION = 2
ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")


def fingerprint(*blocks: dict) -> str:
    """A stable hash of the configuration blocks that define the fit."""
    text = json.dumps(blocks, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class State:
    """What a checkpoint holds."""

    params: Parameters
    n_iter: int
    lower_bounds: list[float]
    converged: bool


class Checkpoint:
    """The checkpoint directory of one job.

    Parameters
    ----------
    path : str
        Directory (created on the first write).
    job : str
        :func:`fingerprint` of the job; a checkpoint of another job is refused.
    """

    def __init__(self, path: str, job: str) -> None:
        self.path = path
        self.job = job

    def write(self, states: State | Sequence[State]) -> None:
        """Record the state of every run (atomically replaces the previous one)."""
        states = [states] if isinstance(states, State) else list(states)
        os.makedirs(self.path, exist_ok=True)
        arrays_name = f"state-{sum(s.n_iter for s in states)}.npz"
        arrays_path = os.path.join(self.path, arrays_name)
        arrays = {
            f"run{i}_{name}": getattr(state.params, name)
            for i, state in enumerate(states)
            for name in ARRAYS
        }
        with open(arrays_path + ".tmp", "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(arrays_path + ".tmp", arrays_path)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "job": self.job,
            "n_iter": max(state.n_iter for state in states),
            "runs": [
                {
                    "n_iter": state.n_iter,
                    "converged": state.converged,
                    "lower_bounds": state.lower_bounds,
                }
                for state in states
            ],
            "arrays": arrays_name,
        }
        json_path = os.path.join(self.path, "state.json")
        with open(json_path + ".tmp", "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(json_path + ".tmp", json_path)
        for name in os.listdir(self.path):
            if name.startswith("state-") and name != arrays_name:
                os.remove(os.path.join(self.path, name))

    def read(self) -> list[State] | None:
        """The last complete state of every run, or None when there is no checkpoint.

        Raises
        ------
        ValueError
            A checkpoint of another job, or a damaged one.
        """
        json_path = os.path.join(self.path, "state.json")
        if not os.path.isfile(json_path):
            return None
        try:
            with open(json_path) as f:
                meta = json.load(f)
            if meta.get("format") != FORMAT or meta.get("format_version") not in (1, 2):
                raise ValueError("unknown checkpoint format")
            with np.load(
                os.path.join(self.path, meta["arrays"]), allow_pickle=False
            ) as npz:
                states = _states(meta, npz)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"checkpoint {self.path} is damaged ({exc}); remove it and run again "
                "without --resume"
            ) from None
        if meta["job"] != self.job:
            raise ValueError(
                f"checkpoint {self.path} belongs to a different job (its data or model "
                "settings changed); remove it or restore the original config"
            )
        return states

    def remove(self) -> None:
        """Delete the checkpoint (after the job's outputs are in place)."""
        shutil.rmtree(self.path, ignore_errors=True)


def _states(meta: dict, npz: Any) -> list[State]:
    """The runs of a checkpoint (format 1 held a single run, unprefixed)."""
    if meta["format_version"] == 1:
        runs = [meta]
        keys = [{name: name for name in ARRAYS}]
    else:
        runs = meta["runs"]
        keys = [{name: f"run{i}_{name}" for name in ARRAYS} for i in range(len(runs))]
    return [
        State(
            Parameters(**{name: npz[key[name]] for name in ARRAYS}),
            int(run["n_iter"]),
            [float(v) for v in run["lower_bounds"]],
            bool(run["converged"]),
        )
        for run, key in zip(runs, keys, strict=True)
    ]
