"""The simulator's shared memory, as the fixture in ``conftest.py`` fixes it: every thread of a
block sees one ``cuda.shared.array``, even when Python switches threads while it is created."""
from __future__ import annotations

import time

import numpy as np
import pytest
from numba import cuda, float64

from snnvae.kernels.cuda import launch

THREADS = 32


@cuda.jit
def _sum_through_shared_memory(out):
    """Each thread writes its index into one shared slot; thread 0 adds the slots up."""
    slots = cuda.shared.array(THREADS, float64)
    tid = cuda.threadIdx.x
    slots[tid] = tid
    cuda.syncthreads()
    if tid == 0:
        total = 0.0
        for i in range(THREADS):
            total += slots[i]
        out[0] = total


@pytest.mark.skipif(not launch.SIMULATOR, reason="checks the CUDA simulator's shared memory")
def test_a_block_shares_one_array_when_threads_switch_during_its_creation(monkeypatch):
    numpy_empty = np.empty

    def slow_empty(*args, **kwargs):         # a thread switch while the array is created
        time.sleep(0.002)
        return numpy_empty(*args, **kwargs)

    out = cuda.to_device(np.zeros(1))
    monkeypatch.setattr(np, "empty", slow_empty)
    _sum_through_shared_memory[1, THREADS](out)
    monkeypatch.undo()
    assert out.copy_to_host()[0] == sum(range(THREADS))
