"""CUDA kernel that keeps spikes for backward as bytes (``numpy_ref.pack_spikes``).

x -> uint8 x != 0 where every value of x is 0 or 1, else None. One thread per element,
grid-stride over the flat arrays: thread i reads x[i] and writes out[i] (coalesced). A thread
that meets a value other than 0 and 1 stores 1 into a one-element flag; every such thread
stores the same value, so the unordered stores need no atomics.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from . import launch


@cuda.jit
def _pack_kernel(x, out, other):
    """x, out: flat (n,); other: (1,) int32, set to 1 if some x[i] is neither 0 nor 1."""
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        out[i] = 1 if v != 0 else 0
        if v != 0 and v != 1:
            other[0] = 1


def pack_spikes(x):
    """x (host or device array) -> uint8 of its shape, on the same side, or None."""
    host, xd = launch.receive(x)
    out = launch.empty(xd.shape, np.uint8)
    other = cuda.to_device(np.zeros(1, dtype=np.int32))
    _pack_kernel[launch.grid_1d(xd.size)](launch.flat(xd), launch.flat(out), other)
    if other.copy_to_host()[0]:
        return None
    return launch.like_input(host, out)
