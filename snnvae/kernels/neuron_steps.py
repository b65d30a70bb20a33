"""One time step of tdBN -> LIF, compiled: the arithmetic every fused CPU kernel shares.

Kept in one place so that the fused training kernels (``cpu``) and the fused eval-mode decoder
block (``scatter_block``) compute bit-identical membranes and spikes: the same operations in
the same order, in the array's dtype.

When you edit this file, delete the compiled caches (``snnvae/kernels/__pycache__/*.nbi`` and
``*.nbc``): Numba's on-disk cache of a kernel is keyed on the kernel's own file, so the kernels
of ``cpu`` and ``scatter_block`` that call this function would otherwise keep the old code.
"""
from __future__ import annotations

from numba import njit

_JIT = dict(cache=True, nogil=True)


@njit(**_JIT)
def bn_lif_step(x, mean, invstd, gain, beta, u, o, u_next, o_next, vth, tau, width, center,
                half, one, zero, smooth):
    """One step on 1-D slices of per-neuron values (the inner loop vectorises over them):

        y      = gain (x - mean) invstd + beta                  (tdBN, gain = scale gamma)
        u_next = tau u (1 - o) + y                               (LIF membrane, hard reset)
        o_next = [u_next > vth]    or, smooth, clip((u_next - center) / width + 1/2, 0, 1)
    """
    if smooth:
        for i in range(x.shape[0]):
            um = tau * u[i] * (one - o[i]) + (gain[i] * ((x[i] - mean[i]) * invstd[i]) + beta[i])
            u_next[i] = um
            o_next[i] = min(max((um - center) / width + half, zero), one)
    else:
        for i in range(x.shape[0]):
            um = tau * u[i] * (one - o[i]) + (gain[i] * ((x[i] - mean[i]) * invstd[i]) + beta[i])
            u_next[i] = um
            o_next[i] = one if um > vth else zero
