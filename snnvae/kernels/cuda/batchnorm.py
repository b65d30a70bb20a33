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

* Per-channel reductions (the statistics; sum(gy) and sum(gy xhat)): one block per channel,
  summed in float64 (``reduce.py``).
* Elementwise kernels (normalise, input gradient): thread per element, grid-stride over the flat
  array; element i belongs to channel (i // S) % C.
* The fused LIF kernels: thread per neuron (n, c, s) walking t, as in ``neuron.py``.

Everything but the sums is computed in the array's dtype, with the constants cast to it, as on
the CPU.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from . import launch
from .neuron import (LIF_ZERO, lif_constants, lif_update, membrane_backward,
                     membrane_forward, membrane_gradient, spike_output)
from .reduce import batch_statistics, gradient_sums

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
    ``reduce.gradient_sums``. With running statistics gx = coef gy (xsrc, mean unused).
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
    _normalise_kernel[launch.grid_1d(x3.size)](launch.flat(x3), mean, invstd, gamma, beta,
                                               dt.type(scale), S, launch.flat(y), launch.flat(xhat))
    return y, xhat


def _input_gradient(gy3, xsrc3, mean, invstd, recompute_xhat, gamma, scale, sum_gy,
                    sum_gy_xhat, batch_stats, gx3):
    M, _, S = gy3.shape
    _input_gradient_kernel[launch.grid_1d(gy3.size)](
        launch.flat(gy3), launch.flat(xsrc3), mean, invstd, recompute_xhat, gamma, gy3.dtype.type(scale),
        sum_gy, sum_gy_xhat, np.float64(M * S), bool(batch_stats), S, launch.flat(gx3))
    return gx3


# --------------------------------------------------------------------------------------------
# tdBN
# --------------------------------------------------------------------------------------------


def tdbn_forward_train(x, gamma, beta, scale, eps):
    """x (M, C, S) -> (y, xhat, invstd, mean, var) with batch statistics, all in x's dtype."""
    host, x, gamma, beta = launch.receive(x, gamma, beta)
    mean, var, invstd = batch_statistics(x, eps)
    y, xhat = _normalise(x, mean, invstd, gamma, beta, scale)
    return launch.like_input(host, y, xhat, invstd, mean, var)


def tdbn_forward_eval(x, gamma, beta, scale, running_mean, running_var, eps):
    """The same map with the running statistics as constants: -> (y, xhat, invstd)."""
    host, x, gamma, beta = launch.receive(x, gamma, beta)
    host = host and launch.on_host(running_mean, running_var)
    mean, invstd = _running_statistics(running_mean, running_var, eps, x.dtype)
    y, xhat = _normalise(x, mean, invstd, gamma, beta, scale)
    return launch.like_input(host, y, xhat, invstd)


def _tdbn_backward(gy, xhat, invstd, gamma, scale, batch_stats):
    host, gy, xhat, invstd, gamma = launch.receive(gy, xhat, invstd, gamma)
    # xhat is given: the kernels do not read the mean (invstd stands in for the argument)
    sum_gy, sum_gy_xhat, ggamma = gradient_sums(gy, xhat, invstd, invstd, False, scale)
    gx = _input_gradient(gy, xhat, invstd, invstd, False, gamma, scale, sum_gy, sum_gy_xhat,
                         batch_stats, launch.empty(gy.shape, gy.dtype))
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


@cuda.jit(device=True)
def _channel_affine(j, S, mean, invstd, gamma, beta, scale):
    """(mean_c, invstd_c, scale gamma_c, beta_c) of neuron j's channel c = (j // S) % C: the
    tdBN map y = gain ((x - mean) invstd) + shift of that neuron."""
    c = (j // S) % mean.shape[0]
    return mean[c], invstd[c], scale * gamma[c], beta[c]


@cuda.jit(device=True)
def _walk_forward(x, j, S, mean, invstd, gamma, beta, scale, lif, smooth, out, keep_membrane):
    """Neuron j's forward recurrence, t = 0 .. T-1: y = scale gamma_c xhat + beta_c computed on
    the fly and integrated into u; writes out[t, j] = u_t (keep_membrane) or the spike o_t.
    The one walk of both fused kernels, so backward recomputes exactly the forward's u."""
    mu, iv, gain, shift = _channel_affine(j, S, mean, invstd, gamma, beta, scale)
    u_t = o_t = lif[LIF_ZERO]
    for t in range(x.shape[0]):
        u_t, o_t = lif_update(u_t, o_t, gain * ((x[t, j] - mu) * iv) + shift, lif, smooth)
        out[t, j] = u_t if keep_membrane else o_t


@cuda.jit
def _bn_lif_forward_kernel(x, mean, invstd, gamma, beta, scale, S, o, lif, smooth):
    """x, o (T, J): J = N*C*S neurons per step, neuron j of channel (j // S) % C.

    Thread -> neuron j (grid-stride), walking t = 0 .. T-1 (``_walk_forward``); only o is
    written. At each t consecutive threads
    read consecutive x[t, j] and write consecutive o[t, j]: coalesced; the channel constants
    are loaded once per neuron."""
    for j in range(cuda.grid(1), x.shape[1], cuda.gridsize(1)):
        _walk_forward(x, j, S, mean, invstd, gamma, beta, scale, lif, smooth, o, False)


@cuda.jit
def _bn_lif_backward_kernel(go, x, mean, invstd, gamma, beta, scale, S, gy, lif, smooth,
                            detach_reset):
    """gy = dL/dy through the LIF, for go, x, gy (T, J) laid out as in the forward kernel.

    Thread -> neuron j (grid-stride). It first walks t forwards recomputing u_t with the
    forward kernel's walk (``_walk_forward``, so the same values) and parks u_t in gy[t, j]:
    the output array doubles as the (T, J) scratch, no other buffer is needed. Then it walks t
    backwards: reads u_t back, recomputes o_t from it, and overwrites gy[t, j] with the
    gradient. Each thread only touches its own column j; at each t consecutive threads touch
    consecutive addresses of row t (coalesced)."""
    T, J = x.shape
    for j in range(cuda.grid(1), J, cuda.gridsize(1)):
        _walk_forward(x, j, S, mean, invstd, gamma, beta, scale, lif, smooth, gy, True)
        gu_next = lif[LIF_ZERO]
        for t in range(T - 1, -1, -1):
            u_t = gy[t, j]
            o_t = spike_output(u_t, lif, smooth)
            gu_next = membrane_gradient(go[t, j], u_t, o_t, gu_next, lif, detach_reset)
            gy[t, j] = gu_next


def _bn_lif_spikes(x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth):
    dt, S = x.dtype, x.shape[3]
    o = launch.empty(x.shape, dt)
    x2 = launch.time_major(x)
    _bn_lif_forward_kernel[launch.grid_1d(x2.shape[1])](
        x2, mean, invstd, gamma, beta, dt.type(scale), S, launch.time_major(o),
        lif_constants(dt, vth, tau, aa, center), bool(smooth))
    return o


def tdbn_lif_forward_train(x, gamma, beta, scale, eps, vth, tau, aa, center, smooth):
    """x (T, N, C, S) -> (o (T, N, C, S), mean, var, invstd) with batch statistics."""
    host, x, gamma, beta = launch.receive(x, gamma, beta)
    T, N, C, S = x.shape
    mean, var, invstd = batch_statistics(x.reshape(T * N, C, S), eps)
    o = _bn_lif_spikes(x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth)
    return launch.like_input(host, o, mean, var, invstd)


def tdbn_lif_forward_eval(x, gamma, beta, scale, running_mean, running_var, eps, vth, tau, aa,
                          center, smooth):
    """x (T, N, C, S) -> (o, mean, invstd) with the running statistics as constants."""
    host, x, gamma, beta = launch.receive(x, gamma, beta)
    host = host and launch.on_host(running_mean, running_var)
    mean, invstd = _running_statistics(running_mean, running_var, eps, x.dtype)
    o = _bn_lif_spikes(x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth)
    return launch.like_input(host, o, mean, invstd)


def tdbn_lif_backward(go, x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth,
                      detach_reset, batch_stats):
    """go, x (T, N, C, S) -> (gx (T, N, C, S), dL/dgamma, dL/dbeta): the LIF's BPTT, then
    tdBN's backward with batch statistics or with constant ones."""
    host, x, go, mean, invstd, gamma, beta = launch.receive(x, go, mean, invstd, gamma, beta)
    dt = x.dtype
    T, N, C, S = x.shape
    gx = launch.empty(x.shape, dt)
    x2 = launch.time_major(x)
    _bn_lif_backward_kernel[launch.grid_1d(x2.shape[1])](
        launch.time_major(go), x2, mean, invstd, gamma, beta, dt.type(scale), S,
        launch.time_major(gx), lif_constants(dt, vth, tau, aa, center), bool(smooth),
        bool(detach_reset))
    # gx holds dL/dy now; tdBN's backward turns it into dL/dx in place
    x3, gy3 = x.reshape(T * N, C, S), gx.reshape(T * N, C, S)
    sum_gy, sum_gy_xhat, ggamma = gradient_sums(gy3, x3, mean, invstd, True, scale)
    _input_gradient(gy3, x3, mean, invstd, True, gamma, scale, sum_gy, sum_gy_xhat,
                    batch_stats, gy3)
    return launch.like_input(host, gx, ggamma, sum_gy)


def tdbn_lif_membrane_forward_train(x, gamma, beta, scale, eps, vth, tau, aa, center, smooth,
                                    decay):
    """x (T, N, C, S) -> (sum_t decay^(T-1-t) o_t (N, C, S), mean, var, invstd): the spikes,
    then their weighted sum over time (two kernels; the spikes exist in between)."""
    o, mean, var, invstd = tdbn_lif_forward_train(x, gamma, beta, scale, eps, vth, tau, aa,
                                                  center, smooth)
    summed = membrane_forward(o.reshape(o.shape[0], -1), decay)
    return summed.reshape(o.shape[1:]), mean, var, invstd


def tdbn_lif_membrane_backward(g, x, mean, invstd, gamma, beta, scale, vth, tau, aa, center,
                               smooth, detach_reset, decay):
    """g (N, C, S), x (T, N, C, S) -> (gx, dL/dgamma, dL/dbeta): the spikes' gradient
    decay^(T-1-t) g as an array, then ``tdbn_lif_backward`` with batch statistics."""
    go = membrane_backward(g.reshape(-1), x.shape[0], decay).reshape(x.shape)
    return tdbn_lif_backward(go, x, mean, invstd, gamma, beta, scale, vth, tau, aa, center,
                             smooth, detach_reset, True)
