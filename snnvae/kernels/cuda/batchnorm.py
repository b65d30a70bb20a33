"""CUDA kernels of tdBN (threshold-dependent batch norm) and of tdBN fused with the LIF neuron.

The same names, signatures and results as ``numpy_ref`` and ``cpu`` (the equations are
derived there). tdBN works on x viewed as (M, C, S): M rows (time and batch), C channels,
S positions; each channel has n = M*S values.

    mean_c = sum(x) / n,   var_c = sum((x - mean_c)^2) / n     (two passes; var biased)
    invstd_c = 1 / sqrt(var_c + eps),   xhat = (x - mean_c) invstd_c
    y = scale gamma_c xhat + beta_c                             (scale = alpha Vth)

    backward, batch statistics:
        dL/dx = scale gamma_c invstd_c / n (n gy - sum(gy) - xhat sum(gy xhat))
    backward, running statistics:
        dL/dx = scale gamma_c invstd_c gy
    both:                         dL/dgamma_c = scale sum(gy xhat),   dL/dbeta_c = sum(gy)

The fused form takes x (T, N, C, S) time first, computes o = LIF(tdBN(x)) with statistics over
(T, N, S), and keeps only x and the statistics: its backward recomputes xhat, u and o from x
with the forward's arithmetic, walks the LIF gradient back in time, and then applies tdBN's
backward.

Three shapes of kernel:

* Per-channel reductions (the statistics; sum(gy) and sum(gy xhat)): one block per channel.
  Thread k of the block takes the channel's values k, k + blockDim, k + 2 blockDim, ... of the
  n values, read as (row m, position s), and adds them up in a register; the block then adds its
  threads' partial sums in shared memory (``_block_sum``). With fewer blocks than channels (the
  simulator launches one) block b takes channels b, b + gridDim, ...
* Elementwise kernels (normalise, input gradient): thread per element, grid-stride over the flat
  array; element i belongs to channel (i // S) % C.
* The fused LIF kernels: thread per neuron (n, c, s) walking t, as in ``neuron.py``.

Reductions accumulate in float64, both in registers and in shared memory, for float32 arrays
too. One kernel then serves both dtypes (a shared array needs its dtype at compile time; the
alternative is a factory of per-dtype kernels), the sums match the CPU kernels (which accumulate
in float64), and a channel of a convolution holds millions of values (T N H W), over which a
float32 sum loses digits. The kernels are bound by reading x from memory, one float64 add per
value read, so the wider adds cost little; the shared buffer is 8 bytes per thread.

Everything else is computed in the array's dtype, with the constants cast to it, as on the CPU.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from . import launch
from .neuron import (LIF_ZERO, device_array_of, lif_constants, membrane_gradient,
                     membrane_potential, spike_output)

# Size of the shared buffer of a reduction, fixed when the kernel compiles: every per-channel
# kernel is launched with exactly this many threads per block.
_THREADS = launch.THREADS_PER_BLOCK
assert _THREADS & (_THREADS - 1) == 0, "the tree reduction halves the block: a power of two"


def _flat(a):
    return a.reshape(a.size)


def _channel_launch(C):
    """(blocks, threads) of a per-channel reduction: a block per channel, at most MAX_BLOCKS."""
    return max(1, min(C, launch.MAX_BLOCKS)), _THREADS


# --------------------------------------------------------------------------------------------
# Per-channel reductions
# --------------------------------------------------------------------------------------------


@cuda.jit(device=True)
def _block_sum(partial, value):
    """The sum of ``value`` over the threads of the block, returned to every thread.

    partial: shared float64 (blockDim,). Each thread stores its value in its own slot; then
    the first half of the threads add the second half's slots to theirs, then the first quarter
    the second quarter's, ... until slot 0 holds the total (log2(blockDim) steps, a barrier
    after each so that no thread reads a slot before it is written)."""
    tid = cuda.threadIdx.x
    partial[tid] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if tid < half:
            partial[tid] += partial[tid + half]
        cuda.syncthreads()
        half //= 2
    total = partial[0]
    cuda.syncthreads()     # every thread has read slot 0 before the buffer is used again
    return total


@cuda.jit
def _channel_statistics_kernel(x, eps, mean, var, invstd):
    """x (M, C, S) -> mean, var, invstd (C,), cast to their dtype on the store.

    Block -> channel c (block-stride over C). Thread k of the block reads the channel's values
    i = k, k + blockDim, ... of n = M*S, value i at row m = i // S, position s = i % S:
    consecutive threads read consecutive positions of one row, coalesced in runs of S (for a
    dense layer, S = 1, the reads are C elements apart). Each thread sums in a float64
    register, shared memory holds the block's partial sums (``_block_sum``). Two passes as the
    reference: the mean, then the squared deviations from it (no cancellation)."""
    M, C, S = x.shape
    n = M * S
    partial = cuda.shared.array(_THREADS, float64)
    tid, nthreads = cuda.threadIdx.x, cuda.blockDim.x
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        acc = float64(0.0)
        for i in range(tid, n, nthreads):
            m = i // S
            acc += x[m, c, i - m * S]
        mu = _block_sum(partial, acc) / n
        acc = float64(0.0)
        for i in range(tid, n, nthreads):
            m = i // S
            d = x[m, c, i - m * S] - mu
            acc += d * d
        v = _block_sum(partial, acc) / n
        if tid == 0:
            mean[c] = mu
            var[c] = v
            invstd[c] = 1.0 / math.sqrt(v + eps)


@cuda.jit
def _gradient_sums_kernel(gy, xsrc, mean, invstd, recompute_xhat, scale, sum_gy, sum_gy_xhat,
                          ggamma):
    """gy (M, C, S) -> per channel sum(gy), sum(gy xhat) and dL/dgamma = scale sum(gy xhat).

    xsrc (M, C, S) is xhat itself, or x when ``recompute_xhat`` (the fused backward keeps no
    xhat): then xhat = (x - mean_c) invstd_c, the forward's arithmetic; mean and invstd are
    read only in that case. The mapping of threads is that of ``_channel_statistics_kernel``:
    block -> channel, threads stride over its n values (coalesced in runs of S), float64
    partial sums in registers, then in shared memory."""
    M, C, S = gy.shape
    n = M * S
    partial = cuda.shared.array(_THREADS, float64)
    tid, nthreads = cuda.threadIdx.x, cuda.blockDim.x
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        acc_gy = float64(0.0)
        acc_gy_xhat = float64(0.0)
        for i in range(tid, n, nthreads):
            m = i // S
            s = i - m * S
            g = gy[m, c, s]
            xhat = (xsrc[m, c, s] - mean[c]) * invstd[c] if recompute_xhat else xsrc[m, c, s]
            acc_gy += g
            acc_gy_xhat += g * xhat
        total_gy = _block_sum(partial, acc_gy)
        total_gy_xhat = _block_sum(partial, acc_gy_xhat)
        if tid == 0:
            sum_gy[c] = total_gy
            sum_gy_xhat[c] = total_gy_xhat
            ggamma[c] = scale * total_gy_xhat


# --------------------------------------------------------------------------------------------
# Elementwise kernels and per-channel constants
# --------------------------------------------------------------------------------------------


@cuda.jit
def _running_statistics_kernel(running_mean, running_var, eps, mean, invstd):
    """Eval-mode constants per channel: mean = running_mean, invstd = 1 / sqrt(running_var +
    eps) computed in float64, both rounded to their dtype on the store (as the CPU kernels).
    Thread -> channel c (grid-stride); a handful of values."""
    for c in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        mean[c] = running_mean[c]
        invstd[c] = 1.0 / math.sqrt(float64(running_var[c]) + eps)


@cuda.jit
def _normalise_kernel(x, mean, invstd, gamma, beta, scale, S, y, xhat):
    """x, y, xhat: flat views of (M, C, S); per-channel mean, invstd, gamma, beta (C,).

    Thread -> element i (grid-stride), of channel (i // S) % C: consecutive threads read and
    write consecutive elements (coalesced); the per-channel constants are a few values that
    all threads share, served from cache."""
    C = mean.shape[0]
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        c = (i // S) % C
        h = (x[i] - mean[c]) * invstd[c]
        xhat[i] = h
        y[i] = scale * gamma[c] * h + beta[c]


@cuda.jit
def _input_gradient_kernel(gy, xsrc, mean, invstd, recompute_xhat, gamma, scale, sum_gy,
                           sum_gy_xhat, n, batch_stats, S, gx):
    """dL/dx from gy, all flat views of (M, C, S); gx may be gy itself (updated in place).

    With batch statistics gx = coef / n (n gy - sum(gy) - xhat sum(gy xhat)), evaluated in
    float64 (n is a float64) like the CPU kernel; xhat comes from xsrc as in
    ``_gradient_sums_kernel``. With running statistics gx = coef gy (xsrc, mean unused).
    coef = scale gamma_c invstd_c in the array's dtype. Thread -> element i (grid-stride):
    each thread reads and writes only element i, consecutive threads consecutive elements."""
    C = invstd.shape[0]
    for i in range(cuda.grid(1), gy.shape[0], cuda.gridsize(1)):
        c = (i // S) % C
        coef = scale * gamma[c] * invstd[c]
        if batch_stats:
            xhat = (xsrc[i] - mean[c]) * invstd[c] if recompute_xhat else xsrc[i]
            gx[i] = coef / n * (n * gy[i] - sum_gy[c] - xhat * sum_gy_xhat[c])
        else:
            gx[i] = gy[i] * coef


# --------------------------------------------------------------------------------------------
# Launching them (device arrays in, device arrays out)
# --------------------------------------------------------------------------------------------


def _batch_statistics(x3, eps):
    """x3 (M, C, S) -> mean, var, invstd (C,) in x's dtype."""
    C = x3.shape[1]
    mean, var, invstd = (launch.empty((C,), x3.dtype) for _ in range(3))
    _channel_statistics_kernel[_channel_launch(C)](x3, np.float64(eps), mean, var, invstd)
    return mean, var, invstd


def _running_statistics(running_mean, running_var, eps, dtype):
    """Running statistics (any float dtype, host or device) -> mean, invstd (C,) in dtype."""
    C = running_mean.shape[0]
    mean, invstd = launch.empty((C,), dtype), launch.empty((C,), dtype)
    _running_statistics_kernel[launch.grid_1d(C)](launch.to_device(running_mean),
                                                  launch.to_device(running_var),
                                                  np.float64(eps), mean, invstd)
    return mean, invstd


def _normalise(x3, mean, invstd, gamma, beta, scale):
    dt, S = x3.dtype, x3.shape[2]
    y, xhat = launch.empty(x3.shape, dt), launch.empty(x3.shape, dt)
    _normalise_kernel[launch.grid_1d(x3.size)](_flat(x3), mean, invstd, gamma, beta,
                                               dt.type(scale), S, _flat(y), _flat(xhat))
    return y, xhat


def _gradient_sums(gy3, xsrc3, mean, invstd, recompute_xhat, scale):
    """-> sum(gy), sum(gy xhat), dL/dgamma per channel, in gy's dtype."""
    C = gy3.shape[1]
    sum_gy, sum_gy_xhat, ggamma = (launch.empty((C,), gy3.dtype) for _ in range(3))
    _gradient_sums_kernel[_channel_launch(C)](gy3, xsrc3, mean, invstd, recompute_xhat,
                                              np.float64(scale), sum_gy, sum_gy_xhat, ggamma)
    return sum_gy, sum_gy_xhat, ggamma


def _input_gradient(gy3, xsrc3, mean, invstd, recompute_xhat, gamma, scale, sum_gy,
                    sum_gy_xhat, batch_stats, gx3):
    M, _, S = gy3.shape
    _input_gradient_kernel[launch.grid_1d(gy3.size)](
        _flat(gy3), _flat(xsrc3), mean, invstd, recompute_xhat, gamma, gy3.dtype.type(scale),
        sum_gy, sum_gy_xhat, np.float64(M * S), bool(batch_stats), S, _flat(gx3))
    return gx3


# --------------------------------------------------------------------------------------------
# tdBN
# --------------------------------------------------------------------------------------------


def tdbn_forward_train(x, gamma, beta, scale, eps):
    """x (M, C, S) -> (y, xhat, invstd, mean, var) with batch statistics, all in x's dtype."""
    launch.require_gpu()
    host = launch.on_host(x, gamma, beta)
    x = launch.to_device(x)
    gamma, beta = device_array_of(gamma, x.dtype), device_array_of(beta, x.dtype)
    mean, var, invstd = _batch_statistics(x, eps)
    y, xhat = _normalise(x, mean, invstd, gamma, beta, scale)
    return launch.like_input(host, y, xhat, invstd, mean, var)


def tdbn_forward_eval(x, gamma, beta, scale, running_mean, running_var, eps):
    """The same map with the running statistics as constants: -> (y, xhat, invstd)."""
    launch.require_gpu()
    host = launch.on_host(x, gamma, beta, running_mean, running_var)
    x = launch.to_device(x)
    gamma, beta = device_array_of(gamma, x.dtype), device_array_of(beta, x.dtype)
    mean, invstd = _running_statistics(running_mean, running_var, eps, x.dtype)
    y, xhat = _normalise(x, mean, invstd, gamma, beta, scale)
    return launch.like_input(host, y, xhat, invstd)


def _tdbn_backward(gy, xhat, invstd, gamma, scale, batch_stats):
    launch.require_gpu()
    host = launch.on_host(gy, xhat, invstd, gamma)
    gy = launch.to_device(gy)
    dt = gy.dtype
    xhat, invstd, gamma = (device_array_of(a, dt) for a in (xhat, invstd, gamma))
    # xhat is given: the kernels do not read the mean (invstd stands in for the argument)
    sum_gy, sum_gy_xhat, ggamma = _gradient_sums(gy, xhat, invstd, invstd, False, scale)
    gx = _input_gradient(gy, xhat, invstd, invstd, False, gamma, scale, sum_gy, sum_gy_xhat,
                         batch_stats, launch.empty(gy.shape, dt))
    return launch.like_input(host, gx, ggamma, sum_gy)


def tdbn_backward_train(gy, xhat, invstd, gamma, scale):
    """Backward through batch statistics: gy, xhat (M, C, S) -> (gx, dL/dgamma, dL/dbeta)."""
    return _tdbn_backward(gy, xhat, invstd, gamma, scale, batch_stats=True)


def tdbn_backward_eval(gy, xhat, invstd, gamma, scale):
    """Backward with constant statistics: gx = gy scale gamma invstd; same parameter grads."""
    return _tdbn_backward(gy, xhat, invstd, gamma, scale, batch_stats=False)


# --------------------------------------------------------------------------------------------
# tdBN followed by LIF, fused
# --------------------------------------------------------------------------------------------


@cuda.jit
def _bn_lif_forward_kernel(x, mean, invstd, gamma, beta, scale, S, o, lif, smooth):
    """x, o (T, J): J = N*C*S neurons per step, neuron j of channel (j // S) % C.

    Thread -> neuron j (grid-stride), walking t = 0 .. T-1: y = scale gamma_c xhat + beta_c is
    computed on the fly and integrated into u; only o is written. At each t consecutive threads
    read consecutive x[t, j] and write consecutive o[t, j]: coalesced; the channel constants
    are loaded once per neuron."""
    T, J = x.shape
    C = mean.shape[0]
    for j in range(cuda.grid(1), J, cuda.gridsize(1)):
        c = (j // S) % C
        mu, iv, gain, shift = mean[c], invstd[c], scale * gamma[c], beta[c]
        u_prev = o_prev = lif[LIF_ZERO]
        for t in range(T):
            u_t = membrane_potential(u_prev, o_prev, gain * ((x[t, j] - mu) * iv) + shift, lif)
            o_t = spike_output(u_t, lif, smooth)
            o[t, j] = o_t
            u_prev = u_t
            o_prev = o_t


@cuda.jit
def _bn_lif_backward_kernel(go, x, mean, invstd, gamma, beta, scale, S, gy, lif, smooth,
                            detach_reset):
    """gy = dL/dy through the LIF, for go, x, gy (T, J) laid out as in the forward kernel.

    Thread -> neuron j (grid-stride). It first walks t forwards recomputing u_t with the
    forward kernel's arithmetic (so the same values) and parks u_t in gy[t, j]: the output
    array doubles as the (T, J) scratch, no other buffer is needed. Then it walks t backwards:
    reads u_t back, recomputes o_t from it, and overwrites gy[t, j] with the gradient. Each
    thread only touches its own column j; at each t consecutive threads touch consecutive
    addresses of row t (coalesced)."""
    T, J = x.shape
    C = mean.shape[0]
    for j in range(cuda.grid(1), J, cuda.gridsize(1)):
        c = (j // S) % C
        mu, iv, gain, shift = mean[c], invstd[c], scale * gamma[c], beta[c]
        u_prev = o_prev = lif[LIF_ZERO]
        for t in range(T):
            u_t = membrane_potential(u_prev, o_prev, gain * ((x[t, j] - mu) * iv) + shift, lif)
            gy[t, j] = u_t
            u_prev = u_t
            o_prev = spike_output(u_t, lif, smooth)
        gu_next = lif[LIF_ZERO]
        for t in range(T - 1, -1, -1):
            u_t = gy[t, j]
            o_t = spike_output(u_t, lif, smooth)
            gu = membrane_gradient(go[t, j], u_t, o_t, gu_next, lif, detach_reset)
            gy[t, j] = gu
            gu_next = gu


def _neurons(a):
    """(T, N, C, S) -> (T, J) with J = N*C*S, a view."""
    return a.reshape(a.shape[0], a.size // a.shape[0])


def _bn_lif_spikes(x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth):
    dt, S = x.dtype, x.shape[3]
    o = launch.empty(x.shape, dt)
    x2 = _neurons(x)
    _bn_lif_forward_kernel[launch.grid_1d(x2.shape[1])](
        x2, mean, invstd, gamma, beta, dt.type(scale), S, _neurons(o),
        lif_constants(dt, vth, tau, aa, center), bool(smooth))
    return o


def tdbn_lif_forward_train(x, gamma, beta, scale, eps, vth, tau, aa, center, smooth):
    """x (T, N, C, S) -> (o (T, N, C, S), mean, var, invstd) with batch statistics."""
    launch.require_gpu()
    host = launch.on_host(x, gamma, beta)
    x = launch.to_device(x)
    T, N, C, S = x.shape
    gamma, beta = device_array_of(gamma, x.dtype), device_array_of(beta, x.dtype)
    mean, var, invstd = _batch_statistics(x.reshape(T * N, C, S), eps)
    o = _bn_lif_spikes(x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth)
    return launch.like_input(host, o, mean, var, invstd)


def tdbn_lif_forward_eval(x, gamma, beta, scale, running_mean, running_var, eps, vth, tau, aa,
                          center, smooth):
    """x (T, N, C, S) -> (o, mean, invstd) with the running statistics as constants."""
    launch.require_gpu()
    host = launch.on_host(x, gamma, beta, running_mean, running_var)
    x = launch.to_device(x)
    gamma, beta = device_array_of(gamma, x.dtype), device_array_of(beta, x.dtype)
    mean, invstd = _running_statistics(running_mean, running_var, eps, x.dtype)
    o = _bn_lif_spikes(x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth)
    return launch.like_input(host, o, mean, invstd)


def tdbn_lif_backward(go, x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth,
                      detach_reset, batch_stats):
    """go, x (T, N, C, S) -> (gx (T, N, C, S), dL/dgamma, dL/dbeta): the LIF's BPTT, then
    tdBN's backward with batch statistics or with constant ones."""
    launch.require_gpu()
    host = launch.on_host(go, x, mean, invstd, gamma, beta)
    x = launch.to_device(x)
    dt = x.dtype
    T, N, C, S = x.shape
    go, mean, invstd, gamma, beta = (device_array_of(a, dt)
                                     for a in (go, mean, invstd, gamma, beta))
    gx = launch.empty(x.shape, dt)
    x2 = _neurons(x)
    _bn_lif_backward_kernel[launch.grid_1d(x2.shape[1])](
        _neurons(go), x2, mean, invstd, gamma, beta, dt.type(scale), S, _neurons(gx),
        lif_constants(dt, vth, tau, aa, center), bool(smooth), bool(detach_reset))
    # gx holds dL/dy now; tdBN's backward turns it into dL/dx in place
    x3, gy3 = x.reshape(T * N, C, S), gx.reshape(T * N, C, S)
    sum_gy, sum_gy_xhat, ggamma = _gradient_sums(gy3, x3, mean, invstd, True, scale)
    _input_gradient(gy3, x3, mean, invstd, True, gamma, scale, sum_gy, sum_gy_xhat,
                    batch_stats, gy3)
    return launch.like_input(host, gx, ggamma, sum_gy)
