"""Which E-step kernel a fit uses: kernel='auto' | 'compiled' | 'numpy'."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from daskgmm import GaussianMixture, _compiled, _em
from daskgmm import _kernels as K
from tests.conftest import local_client

distributed = pytest.importorskip("distributed")
needs_numba = pytest.mark.skipif(not _compiled.available(), reason="numba missing")


@needs_numba
def test_auto_is_the_compiled_kernel_on_threads(monkeypatch):
    monkeypatch.delenv("DASKGMM_KERNEL", raising=False)
    assert _em.select_estep_kernel("auto") is _compiled.estep_block
    assert _em.select_estep_kernel("compiled") is _compiled.estep_block
    assert _em.select_estep_kernel("numpy") is K.estep_block


@needs_numba
@pytest.mark.parametrize("env", ["numpy", "compiled"])
def test_the_environment_variable_overrides_auto_only(monkeypatch, env):
    monkeypatch.setenv("DASKGMM_KERNEL", env)
    expected = K.estep_block if env == "numpy" else _compiled.estep_block
    assert _em.select_estep_kernel("auto") is expected
    other = "compiled" if env == "numpy" else "numpy"
    assert _em.select_estep_kernel(other) is not expected


@needs_numba
@pytest.mark.parametrize(("limit", "compiled"), [("256MiB", False), ("2GiB", True)])
def test_auto_keeps_numpy_on_small_workers(monkeypatch, caplog, limit, compiled):
    monkeypatch.delenv("DASKGMM_KERNEL", raising=False)
    caplog.set_level(logging.INFO, logger="daskgmm")
    # threads_per_worker=None: LocalCluster's default number of threads.
    with local_client(1, memory_limit=limit, threads_per_worker=None):
        chosen = _em.select_estep_kernel("auto")
        forced = _em.select_estep_kernel("compiled")
    assert (chosen is _compiled.estep_block) is compiled
    assert forced is _compiled.estep_block
    assert ("the smallest worker has 256 MiB" in caplog.text) is not compiled


def test_compiled_without_numba_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_compiled, "available", lambda: False)
    with pytest.raises(ImportError, match=r"kernel='compiled' needs numba"):
        _em.select_estep_kernel("compiled")
    assert _em.select_estep_kernel("auto") is K.estep_block


def test_an_unknown_kernel_is_refused():
    X = np.random.RandomState(0).randn(50, 2)
    with pytest.raises(ValueError, match="kernel"):
        GaussianMixture(2, kernel="fortran").fit(X)


@needs_numba
def test_both_kernels_give_the_same_fit():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(3000, 3), rng.randn(3000, 3) * 0.5 + 4])
    fits = {
        kernel: GaussianMixture(2, kernel=kernel, random_state=0, tol=1e-8).fit(X)
        for kernel in ("numpy", "compiled")
    }
    a, b = fits["numpy"], fits["compiled"]
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-10)
