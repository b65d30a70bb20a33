"""Fixtures of the CUDA kernel tests: compare a CUDA kernel with the Numba CPU kernel.

These tests run in a subprocess started by ``tests/test_cuda.py`` with ``SNNVAE_CUDA_TESTS=1``
and, without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` (every CUDA thread becomes a Python thread: keep
the shapes tiny). Run them by hand with

    SNNVAE_CUDA_TESTS=1 NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda -q
"""
from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from numba import config, cuda

from snnvae.kernels.cuda import launch

if not (config.ENABLE_CUDASIM or cuda.is_available()):
    pytest.skip("no CUDA GPU and NUMBA_ENABLE_CUDASIM is not set", allow_module_level=True)

TOLERANCES = {np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
              np.dtype(np.float32): dict(rtol=2e-5, atol=2e-6)}


@pytest.fixture(scope="session", autouse=True)
def fast_thread_switching():
    """The simulator runs each CUDA thread as a Python thread; at every syncthreads() they wait
    for each other, and with Python's default 5 ms switch interval that dominates. 0.1 ms makes
    the tiled kernels several times faster to simulate."""
    before = sys.getswitchinterval()
    if launch.SIMULATOR:
        sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(before)


@pytest.fixture(scope="session", autouse=True)
def one_shared_array_per_block():
    """Make the simulator's ``cuda.shared.array`` safe for its threads.

    The simulator (numba 0.68's ``FakeCUDAShared.array``) gives all threads of a block one
    array by looking up an allocation keyed by the calling line and creating it when absent:
    a check-then-set that is not atomic. When Python switches threads between the check and the
    set, two threads of a block create an array each and reduce into different buffers. A
    tree reduction then adds an uninitialised slot: a tdBN variance came out negative and a
    weight gradient 25 % off, once in a few runs of the training tests (more often with the
    short switch interval above). A real GPU has no such race; here the look-up is put under a
    lock."""
    if not launch.SIMULATOR:
        yield
        return
    from numba.cuda.simulator import kernelapi
    from numba.core import types
    from numba.np.numpy_support import as_dtype
    shared_type = kernelapi.FakeCUDAShared
    original = shared_type.array
    lock = threading.Lock()

    def array(self, shape, dtype):
        if shape == 0:                       # dynamic shared memory: one buffer, no look-up
            return original(self, shape, dtype)
        caller = sys._getframe(1)            # keyed by the calling line, as the simulator does
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            allocation = self._allocations.get(key)
            if allocation is None:
                allocation = np.empty(shape, as_dtype(dtype) if isinstance(dtype, types.Type)
                                      else dtype)
                self._allocations[key] = allocation
        return allocation

    shared_type.array = array
    yield
    shared_type.array = original


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(params=[np.float64, np.float32], ids=["f64", "f32"])
def dtype(request):
    return np.dtype(request.param)


def assert_matches(got, want, what="result"):
    """``got`` (host or device array) equals ``want`` within the dtype's float tolerance."""
    if launch.is_device_array(got):
        got = got.copy_to_host()
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    tol = TOLERANCES[want.dtype]
    np.testing.assert_allclose(got, want, err_msg=what, **tol)
