"""CUDA kernel of the Adam / AdamW parameter update (PyTorch's equations), in place.

The same name, signature and result as ``numpy_ref.adam_update`` and ``cpu.adam_update``. With
g the gradient at 1-based step t:

    decoupled (AdamW):  p <- p (1 - lr wd)            L2 (Adam):  g <- g + wd p
    m <- b1 m + (1 - b1) g;    v <- b2 v + (1 - b2) g^2
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

The update is elementwise: one thread per parameter element i, grid-stride over the flat
arrays; thread i reads g[i], p[i], m[i], v[i] and writes p[i], m[i], v[i], so consecutive
threads touch consecutive addresses (coalesced) and no two threads touch the same element.
The scalars that do not depend on i (the bias corrections, the decay factor) are computed once
on the host, in float64, and cast to the parameter's dtype, as the CPU kernel does.

In place means in the caller's arrays: device arrays are updated on the device; host arrays
are copied over, updated there, and the results copied back into them.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from . import launch


@cuda.jit
def _adam_kernel(p, g, exp_avg, exp_avg_sq, decay, l2, beta1, beta2, step_size, bias2_sqrt,
                 eps, one):
    """p, g, exp_avg, exp_avg_sq: flat (P,). Thread -> element i (grid-stride); every array is
    read and written at i only (coalesced, no conflicts). decay = 1 - lr wd (AdamW) or 1,
    l2 = wd (Adam) or 0, step_size = lr / (1 - b1^t), bias2_sqrt = sqrt(1 - b2^t)."""
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        g_i = g[i] + l2 * p[i]
        m_i = beta1 * exp_avg[i] + (one - beta1) * g_i
        v_i = beta2 * exp_avg_sq[i] + (one - beta2) * g_i * g_i
        exp_avg[i] = m_i
        exp_avg_sq[i] = v_i
        p[i] = p[i] * decay - step_size * m_i / (math.sqrt(v_i) / bias2_sqrt + eps)


def adam_update(p, g, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One Adam(W) step at 1-based ``step``, in place on p, exp_avg and exp_avg_sq (host or
    device arrays of one shape and dtype, C-contiguous); g may have another dtype if on the
    host (it is cast to p's)."""
    launch.require_gpu()
    state = (p, exp_avg, exp_avg_sq)
    for a in state:
        if a.shape != p.shape or a.dtype != p.dtype:
            raise ValueError("adam_update: p, exp_avg and exp_avg_sq need one shape and dtype, "
                             f"got {[(x.shape, str(x.dtype)) for x in state]}")
        if not launch.is_device_array(a) and not a.flags.c_contiguous:
            raise ValueError("adam_update updates in place and needs C-contiguous arrays")
    dt = np.dtype(p.dtype)
    on_device = [launch.to_device(a) for a in state]
    grad = launch.device_array_of(g, dt)
    decay = 1 - lr * weight_decay if decoupled else 1.0
    l2 = 0.0 if decoupled else weight_decay
    constants = launch.typed(dt, decay, l2, beta1, beta2, lr / (1 - beta1 ** step),
                             np.sqrt(1 - beta2 ** step), eps, 1.0)
    param, avg, avg_sq = (launch.flat(a) for a in on_device)
    _adam_kernel[launch.grid_1d(p.size)](param, launch.flat(grad), avg, avg_sq, *constants)
    for caller, device in zip(state, on_device):
        if launch.on_host(caller):            # a host array: bring the result back into it
            device.copy_to_host(caller)
