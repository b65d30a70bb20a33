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


@njit(inline="always", **_JIT)
def _membrane(x, mean, invstd, gain, beta, u, o, tau, one):
    """tau u (1 - o) + gain (x - mean) invstd + beta, in this order of operations."""
    return tau * u * (one - o) + (gain * ((x - mean) * invstd) + beta)


@njit(inline="always", **_JIT)
def _spike(um, vth, width, center, half, one, zero, smooth):
    """[um > vth], or, smooth, clip((um - center) / width + 1/2, 0, 1)."""
    if smooth:
        return min(max((um - center) / width + half, zero), one)
    return one if um > vth else zero


@njit(**_JIT)
def bn_lif_step(x, mean, invstd, gain, beta, u, o, u_next, o_next, vth, tau, width, center,
                half, one, zero, smooth):
    """One step on 1-D slices of per-neuron values (the inner loop vectorises over them):

        y      = gain (x - mean) invstd + beta                  (tdBN, gain = scale gamma)
        u_next = tau u (1 - o) + y                               (LIF membrane, hard reset)
        o_next = [u_next > vth]    or, smooth, clip((u_next - center) / width + 1/2, 0, 1)

    u_next and o_next must not be u and o: passed as two arguments, one array would make the
    vectoriser's overlap check fail and the loop run scalar (``bn_lif_step_in_place``)."""
    if smooth:
        for i in range(x.shape[0]):
            um = _membrane(x[i], mean[i], invstd[i], gain[i], beta[i], u[i], o[i], tau, one)
            u_next[i] = um
            o_next[i] = _spike(um, vth, width, center, half, one, zero, True)
    else:
        for i in range(x.shape[0]):
            um = _membrane(x[i], mean[i], invstd[i], gain[i], beta[i], u[i], o[i], tau, one)
            u_next[i] = um
            o_next[i] = _spike(um, vth, width, center, half, one, zero, False)


@njit(**_JIT)
def bn_lif_step_in_place(x, mean, invstd, gain, beta, u, o, init, vth, tau, width, center,
                         half, one, zero, smooth):
    """``bn_lif_step`` with u and o overwritten by the new state (one array each, so the loop
    still vectorises), and x reset to init afterwards, for an accumulator that the next
    step adds into: the same values, with half the state in cache."""
    if smooth:
        for i in range(x.shape[0]):
            um = _membrane(x[i], mean[i], invstd[i], gain[i], beta[i], u[i], o[i], tau, one)
            u[i] = um
            o[i] = _spike(um, vth, width, center, half, one, zero, True)
            x[i] = init[i]
    else:
        for i in range(x.shape[0]):
            um = _membrane(x[i], mean[i], invstd[i], gain[i], beta[i], u[i], o[i], tau, one)
            u[i] = um
            o[i] = _spike(um, vth, width, center, half, one, zero, False)
            x[i] = init[i]
