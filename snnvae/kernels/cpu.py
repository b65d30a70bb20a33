"""Numba CPU kernels: the same names and signatures as ``numpy_ref``, compiled and parallel.

Loops that NumPy cannot vectorise well (the LIF and PSP recurrences over time, the
im2col/col2im gathers of convolutions, per-channel reductions of tdBN) are ``@njit`` with
``cache=True`` so that the compiled code is reused across processes. Dense contractions are
left to BLAS through ``numpy.matmul`` (convolutions: im2col/col2im and one product per chunk
of images, one worker thread per core: ``gemm_conv``), except where one side has so few
channels that the product is a matrix-vector one and the patch matrix around it costs more
than the arithmetic (``shifted``), or where the input is mostly zeros (``scatter``; in eval
mode a whole decoder block, transposed conv -> tdBN -> LIF, in one pass: ``scatter_block``).

Parallelism: ``prange`` splits neurons (LIF, PSP), images (the scatter and shifted
convolutions), samples (the decoder block, which walks time) or channels (tdBN) over the
cores; each iteration writes only its own slice, so no two threads touch the same output
element. The dense convolutions hand whole chunks of images to worker threads instead.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from . import gemm_conv, linear_step, scatter, scatter_block, shifted
from .event_driven import linear_delta_into  # noqa: F401
from .neuron_steps import bn_lif_step
# Linear layers: the reference already is one BLAS call each way, so both backends share it.
from .numpy_ref import (compose_block_eval, conv_out_size,  # noqa: F401
                        conv_transpose_out_size, linear_backward, linear_forward,
                        membrane_coefficients)

_JIT = dict(cache=True, nogil=True)

# Stride-1 layers with at most this many channels on one side (the decoder's last layer, 32 ->
# 1) skip the GEMM: as a 1-row matrix product it is all patch-matrix traffic (``shifted``,
# measured 2-15x faster up to 8 channels at 32 x 32, forward and backward).
_SHIFTED_MAX_CHANNELS = 8


def _takes_shifted_path(w, stride, padding):
    kh, kw = w.shape[2:]
    return (min(w.shape[0], w.shape[1]) <= _SHIFTED_MAX_CHANNELS
            and shifted.applies(kh, kw, stride, padding))


def conv2d_forward(x, w, b, stride, padding):
    if _takes_shifted_path(w, stride, padding):
        return shifted.conv2d_forward(x, w, b, padding)
    if _scatter_wins(x, w.shape[0]):
        return scatter.conv2d_forward(x, w, b, stride, padding)
    return gemm_conv.conv2d_forward(x, w, b, stride, padding)


def conv2d_backward(gy, x, w, stride, padding, has_bias):
    if _takes_shifted_path(w, stride, padding):
        return shifted.conv2d_backward(gy, x, w, padding, has_bias)
    return gemm_conv.conv2d_backward(gy, x, w, stride, padding, has_bias)


# --------------------------------------------------------------------------------------------
# Event-driven convolutions. Most inputs of a spiking layer are 0 (neurons that did not fire),
# so the forward convolutions of spikes, transposed (decoder) or not (encoder), walk the nonzero
# inputs only (``scatter``: one contiguous run of kernel columns x C_out weights added per
# input value and kernel row) instead of running the dense GEMM over every input. Measured
# against im2col + BLAS at FSVAE's firing rates (about 0.14): a whole sampling call 1.2x faster
# (decoder), the encoder's three spiking convolutions at 1024 images 1.2-1.7x each (55 against
# 76 ms together). With one output channel (the last layer) the scatter always loses (one
# scalar add per event).
# Tried and not kept: the scatter for the weight gradients; it ran at 0.6-1.4x the dense path
# layer by layer and left a whole training step no faster.
# --------------------------------------------------------------------------------------------

_SPARSE_RATE = 0.2        # below this fraction of nonzero inputs the scatter wins ...
_SPARSE_MIN_OUT = 8       # ... when each event adds a vector of at least this many channels
_RATE_SAMPLE_VALUES = 1 << 20   # the fraction is estimated from about this many inputs


def _scatter_wins(x, c_out):
    """Whether the event-driven (transposed) convolution with c_out output channels beats the
    dense one on x."""
    return (c_out >= _SPARSE_MIN_OUT
            and scatter.nonzero_fraction(x, _RATE_SAMPLE_VALUES) < _SPARSE_RATE)


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding):
    if _scatter_wins(x, w.shape[1]):
        return scatter.conv_transpose2d_forward(x, w, b, stride, padding, output_padding)
    return _conv_transpose2d_dense(x, w, b, stride, padding, output_padding)


def _conv_transpose2d_dense(x, w, b, stride, padding, output_padding):
    if output_padding == 0 and _takes_shifted_path(w, stride, padding):
        return shifted.conv_transpose2d_forward(x, w, b, padding)
    return gemm_conv.conv_transpose2d_forward(x, w, b, stride, padding, output_padding)


def conv_transpose2d_backward(gy, x, w, stride, padding, has_bias):
    if _takes_shifted_path(w, stride, padding):
        return shifted.conv_transpose2d_backward(gy, x, w, padding, has_bias)
    return gemm_conv.conv_transpose2d_backward(gy, x, w, stride, padding, has_bias)


# --------------------------------------------------------------------------------------------
# tdBN on (M, C, S): per-channel statistics as partial sums over fixed chunks of rows (parallel,
# reading memory in order), two passes for a stable variance.
# --------------------------------------------------------------------------------------------


_ROW_CHUNKS = 16   # fixed number of partial sums: parallel, contiguous and deterministic


@njit(**_JIT)
def _accumulate_powers(x, shift, acc, power):
    """acc += (x - shift)^power elementwise on 1-D slices (power 1 or 2)."""
    if power == 1:
        for j in range(x.shape[0]):
            acc[j] += x[j] - shift[j]
    else:
        for j in range(x.shape[0]):
            d = x[j] - shift[j]
            acc[j] += d * d


@njit(parallel=True, **_JIT)
def _channel_partial_sums(x, shift, power):
    """Per chunk of rows and channel: sum over rows and positions of (x - shift[c])^power.

    x (M, C, S) is read as (M, J), J = C*S neurons: a chunk sums each neuron over its rows in
    a local float64 vector (contiguous, vectorised for any S, including S = 1 of linear
    layers), then folds the S neurons of each channel together."""
    M, C, S = x.shape
    x2 = x.reshape(M, C * S)
    J = C * S
    shift_j = np.empty(J)
    for j in range(J):
        shift_j[j] = shift[j // S]
    partial = np.zeros((_ROW_CHUNKS, C), dtype=np.float64)
    step = (M + _ROW_CHUNKS - 1) // _ROW_CHUNKS
    for chunk in prange(_ROW_CHUNKS):
        acc = np.zeros(J)
        for m in range(chunk * step, min((chunk + 1) * step, M)):
            _accumulate_powers(x2[m], shift_j, acc, power)
        for j in range(J):
            partial[chunk, j // S] += acc[j]
    return partial


def _channel_mean_var(x):
    """Two-pass mean and biased variance per channel of x (M, C, S), accumulated in float64."""
    n = x.shape[0] * x.shape[2]
    zero = np.zeros(x.shape[1])
    mean = _channel_partial_sums(x, zero, 1).sum(axis=0) / n
    var = _channel_partial_sums(x, mean, 2).sum(axis=0) / n
    return mean, var


def _inverse_std(var, eps, dtype):
    """1 / sqrt(var + eps) computed in float64, cast to the array's dtype."""
    return (1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)).astype(dtype)


def _batch_statistics(x, eps):
    """x (M, C, S) -> mean, biased var, invstd per channel, in x's dtype."""
    mean64, var64 = _channel_mean_var(x)
    return mean64.astype(x.dtype), var64.astype(x.dtype), _inverse_std(var64, eps, x.dtype)


@njit(parallel=True, **_JIT)
def _normalise_into(x, mean, invstd, gain, beta, y, xhat):
    """xhat = (x - mean) invstd;  y = gain xhat + beta, per channel."""
    M, C, S = x.shape
    for m in prange(M):
        for c in range(C):
            for k in range(S):
                h = (x[m, c, k] - mean[c]) * invstd[c]
                xhat[m, c, k] = h
                y[m, c, k] = gain[c] * h + beta[c]


def _normalise(x, mean, invstd, gain, beta):
    y, xhat = np.empty_like(x), np.empty_like(x)
    _normalise_into(x, mean, invstd, gain, beta, y, xhat)
    return y, xhat


@njit(parallel=True, **_JIT)
def _channel_partial_grad_sums(gy, xhat):
    M, C, S = gy.shape
    p1 = np.zeros((_ROW_CHUNKS, C), dtype=np.float64)
    p2 = np.zeros((_ROW_CHUNKS, C), dtype=np.float64)
    step = (M + _ROW_CHUNKS - 1) // _ROW_CHUNKS
    for chunk in prange(_ROW_CHUNKS):
        for m in range(chunk * step, min((chunk + 1) * step, M)):
            for c in range(C):
                a = 0.0
                b = 0.0
                for k in range(S):
                    g = gy[m, c, k]
                    a += g
                    b += g * xhat[m, c, k]
                p1[chunk, c] += a
                p2[chunk, c] += b
    return p1, p2


def _channel_sums(gy, xhat):
    """Per channel: sum(gy) and sum(gy * xhat), accumulated in float64."""
    p1, p2 = _channel_partial_grad_sums(gy, xhat)
    return p1.sum(axis=0), p2.sum(axis=0)


@njit(parallel=True, **_JIT)
def _bn_input_grad_into(gy, xhat, coef, sum_gy, sum_gy_xhat, n, gx):
    """gx = coef / n * (n gy - sum(gy) - xhat sum(gy xhat)), per channel."""
    M, C, S = gy.shape
    for m in prange(M):
        for c in range(C):
            a = sum_gy[c]
            b = sum_gy_xhat[c]
            k_ = coef[c] / n
            for k in range(S):
                gx[m, c, k] = k_ * (n * gy[m, c, k] - a - xhat[m, c, k] * b)


def _bn_input_grad(gy, xhat, coef, sum_gy, sum_gy_xhat, n):
    gx = np.empty_like(gy)
    _bn_input_grad_into(gy, xhat, coef, sum_gy, sum_gy_xhat, n, gx)
    return gx


def tdbn_forward_train(x, gamma, beta, scale, eps):
    dt = x.dtype
    mean, var, invstd = _batch_statistics(x, eps)
    y, xhat = _normalise(x, mean, invstd, (scale * gamma).astype(dt), beta.astype(dt))
    return y, xhat, invstd, mean, var


def tdbn_forward_eval(x, gamma, beta, scale, running_mean, running_var, eps):
    dt = x.dtype
    invstd = _inverse_std(running_var, eps, dt)
    y, xhat = _normalise(x, running_mean.astype(dt), invstd, (scale * gamma).astype(dt),
                         beta.astype(dt))
    return y, xhat, invstd


def tdbn_backward_train(gy, xhat, invstd, gamma, scale):
    n = gy.shape[0] * gy.shape[2]
    s1, s2 = _channel_sums(gy, xhat)
    dt = gy.dtype
    gx = _bn_input_grad(gy, xhat, (scale * gamma * invstd).astype(dt), s1.astype(dt),
                        s2.astype(dt), n)
    return gx, (scale * s2).astype(dt), s1.astype(dt)


def tdbn_backward_eval(gy, xhat, invstd, gamma, scale):
    s1, s2 = _channel_sums(gy, xhat)
    dt = gy.dtype
    gx = gy * (scale * gamma * invstd).astype(dt)[None, :, None]
    return gx, (scale * s2).astype(dt), s1.astype(dt)


# --------------------------------------------------------------------------------------------
# LIF: neurons are split into contiguous blocks, one parallel iteration per block. Inside a
# block the loop runs time outer and neurons inner, so every read and write at step t touches
# consecutive memory (and vectorises). The constants arrive cast to the array's dtype, so float32
# arithmetic and the threshold comparison are bit-identical to the NumPy reference.
# Outputs are allocated by NumPy (which asks the OS for huge pages for big arrays) and filled here.
# --------------------------------------------------------------------------------------------

_BLOCK = 1024


@njit(parallel=True, **_JIT)
def _lif_forward(x, o, u, vth, tau, width, center, half, one, zero, smooth):
    """The state of step t-1 is read back from u[t-1], o[t-1] (still in cache for a block), so
    the loop needs no carried arrays; the spike is a select, which vectorises."""
    T, M = x.shape
    nblocks = (M + _BLOCK - 1) // _BLOCK
    for blk in prange(nblocks):
        lo = blk * _BLOCK
        hi = min(lo + _BLOCK, M)
        for t in range(T):
            for m in range(lo, hi):
                if t == 0:
                    um = x[0, m]
                else:
                    um = tau * u[t - 1, m] * (one - o[t - 1, m]) + x[t, m]
                u[t, m] = um
                if smooth:
                    o[t, m] = min(max((um - center) / width + half, zero), one)
                else:
                    o[t, m] = one if um > vth else zero


def _typed(dtype, *values):
    return tuple(dtype.type(v) for v in values)


def _lif_constants(dt, vth, tau, aa, center):
    """vth, tau, window width 2 aa, window centre, 1/2, 1, 0 in the array's dtype."""
    return _typed(dt, vth, tau, 2.0 * aa, center, 0.5, 1.0, 0.0)


def lif_forward(x, vth, tau, aa, center, smooth):
    o = np.empty_like(x)
    u = np.empty_like(x)
    _lif_forward(x, o, u, *_lif_constants(x.dtype, vth, tau, aa, center), smooth)
    return o, u


@njit(**_JIT)
def _lif_step(x_t, u_prev, o_prev, o, u, vth, tau, one, zero):
    for m in range(x_t.shape[0]):
        um = tau * u_prev[m] * (one - o_prev[m]) + x_t[m]
        u[m] = um
        o[m] = one if um > vth else zero


def lif_step(x_t, u_prev, o_prev, vth, tau):
    o = np.empty_like(x_t)
    u = np.empty_like(x_t)
    _lif_step(x_t, u_prev.astype(x_t.dtype, copy=False), o_prev.astype(x_t.dtype, copy=False),
              o, u, *_typed(x_t.dtype, vth, tau, 1.0, 0.0))
    return o, u


@njit(**_JIT)
def _lif_grad_step(go, go_scale, u, o, gu_next, gy, tau, center, inv_width, aa, zero, one,
                   detach_reset):
    """One step of the LIF gradient recurrence (numpy_ref.lif_backward) on 1-D slices of
    neurons, for the spikes' gradient go_scale * go (go_scale 1 leaves go exactly as it is);
    gu_next (the gradient from step t + 1) becomes this step's gy."""
    for i in range(go.shape[0]):
        g = go[i] * go_scale
        if not detach_reset:
            g = g - tau * u[i] * gu_next[i]
        sg = inv_width if abs(u[i] - center) < aa else zero
        gu = g * sg + tau * (one - o[i]) * gu_next[i]
        gy[i] = gu
        gu_next[i] = gu


@njit(parallel=True, **_JIT)
def _lif_backward(go, u, o, gx, tau, inv_width, aa, center, one, zero, detach_reset):
    T, M = go.shape
    nblocks = (M + _BLOCK - 1) // _BLOCK
    for blk in prange(nblocks):
        lo = blk * _BLOCK
        hi = min(lo + _BLOCK, M)
        gu_next = np.zeros(hi - lo, dtype=go.dtype)
        for t in range(T - 1, -1, -1):
            _lif_grad_step(go[t, lo:hi], one, u[t, lo:hi], o[t, lo:hi], gu_next, gx[t, lo:hi],
                           tau, center, inv_width, aa, zero, one, detach_reset)


def lif_backward(go, u, o, tau, aa, center, detach_reset):
    gx = np.empty_like(go)
    dt = go.dtype.type
    inv_width = dt(1.0) / dt(2.0 * aa)
    _lif_backward(go, u, o, gx, dt(tau), inv_width, dt(aa), dt(center), dt(1.0), dt(0.0),
                  detach_reset)
    return gx


# --------------------------------------------------------------------------------------------
# tdBN followed by LIF, fused (see numpy_ref): x (T, N, C, S) is read as (T, R, S) with
# R = N * C rows, row r of channel r % C. Rows are taken in blocks of about _BLOCK neurons, one
# parallel iteration per block; a block's membrane state lives in small local buffers, so
# neither xhat, y nor u is ever written to a full-size array. Backward recomputes them from x
# with the forward's arithmetic (bit-identical values), walks time backwards, and gathers the
# per-channel sums of tdBN's backward in float64 partial sums, one row per block.
# --------------------------------------------------------------------------------------------


# The inner loops run over 1-D slices: with them Numba/LLVM vectorises (about 7x faster than
# indexing the 3-D arrays inside the loop, measured on the final layer's shape).


@njit(**_JIT)
def _neuron_block(item, nchunks, J):
    """Parallel item -> (sample n, neurons [j0, j1)) for blocks of _BLOCK neurons."""
    n = item // nchunks
    j0 = (item % nchunks) * _BLOCK
    return n, j0, min(j0 + _BLOCK, J)


@njit(parallel=True, **_JIT)
def _bn_lif_forward(x, mean, invstd, gain, beta, o, vth, tau, width, center, half, one, zero,
                    smooth):
    """x, o (T, N, J); mean, invstd, gain, beta per neuron (J,). One parallel item per sample
    and block of _BLOCK neurons; the membrane state of the block is carried in local vectors."""
    T, N, J = x.shape
    nchunks = (J + _BLOCK - 1) // _BLOCK
    for item in prange(N * nchunks):
        n, j0, j1 = _neuron_block(item, nchunks, J)
        # two state buffers used in turn: a step must not read and write one array (the
        # vectoriser would fall back to scalar code)
        u = np.zeros((2, j1 - j0), dtype=x.dtype)
        silent = np.zeros(j1 - j0, dtype=x.dtype)
        for t in range(T):
            o_prev = silent if t == 0 else o[t - 1, n, j0:j1]
            bn_lif_step(x[t, n, j0:j1], mean[j0:j1], invstd[j0:j1], gain[j0:j1], beta[j0:j1],
                        u[t % 2], o_prev, u[(t + 1) % 2], o[t, n, j0:j1], vth, tau, width,
                        center, half, one, zero, smooth)


@njit(**_JIT)
def _accumulate_bn_sums(gy, x, mean, invstd, acc_gy, acc_gy_xhat):
    for i in range(gy.shape[0]):
        acc_gy[i] += gy[i]
        acc_gy_xhat[i] += gy[i] * ((x[i] - mean[i]) * invstd[i])


@njit(parallel=True, **_JIT)
def _bn_lif_backward_spikes(go, go_scale, x, S, mean, invstd, gain, beta, gy, sums, vth, tau,
                            width, center, half, inv_width, aa, one, zero, smooth, detach_reset):
    """gy = dL/dy through the LIF, for x, gy (T, N, J) and the spikes' gradient at step t
    go_scale[t] * go[t] (go (T, N, J), go_scale ones), or go_scale[t] * go[0] (go (1, N, J):
    the gradient of the spikes' weighted sum over time); per-neuron constants (J,).
    sums[item, 0, c] and sums[item, 1, c] collect sum(gy) and sum(gy * xhat) of channel
    c = j // S over the item's neurons (float64)."""
    T, N, J = x.shape
    shared = go.shape[0] == 1
    nchunks = (J + _BLOCK - 1) // _BLOCK
    for item in prange(N * nchunks):
        n, j0, j1 = _neuron_block(item, nchunks, J)
        nb = j1 - j0
        u = np.zeros((T + 1, nb), dtype=x.dtype)    # row 0: the zero state before t = 0
        o = np.zeros((T + 1, nb), dtype=x.dtype)
        m, iv = mean[j0:j1], invstd[j0:j1]
        for t in range(T):
            bn_lif_step(x[t, n, j0:j1], m, iv, gain[j0:j1], beta[j0:j1], u[t], o[t], u[t + 1],
                        o[t + 1], vth, tau, width, center, half, one, zero, smooth)
        gu_next = np.zeros(nb, dtype=x.dtype)
        acc_gy = np.zeros(nb)
        acc_gy_xhat = np.zeros(nb)
        for t in range(T - 1, -1, -1):
            gy_t = gy[t, n, j0:j1]
            go_t = go[0, n, j0:j1] if shared else go[t, n, j0:j1]
            _lif_grad_step(go_t, go_scale[t], u[t + 1], o[t + 1], gu_next, gy_t, tau, center,
                           inv_width, aa, zero, one, detach_reset)
            _accumulate_bn_sums(gy_t, x[t, n, j0:j1], m, iv, acc_gy, acc_gy_xhat)
        for i in range(nb):
            c = (j0 + i) // S
            sums[item, 0, c] += acc_gy[i]
            sums[item, 1, c] += acc_gy_xhat[i]


@njit(**_JIT)
def _bn_grad_row(gy, x, mean, invstd, k, sum_gy, sum_gy_xhat, n, batch_stats):
    if batch_stats:
        for j in range(gy.shape[0]):
            xh = (x[j] - mean[j]) * invstd[j]
            gy[j] = k[j] * (n * gy[j] - sum_gy[j] - xh * sum_gy_xhat[j])
    else:
        for j in range(gy.shape[0]):
            gy[j] = gy[j] * k[j]


@njit(parallel=True, **_JIT)
def _bn_grad_from_input_into(gy, x, mean, invstd, k, sum_gy, sum_gy_xhat, n, batch_stats):
    """In place, per neuron j (constants of its channel): gy <- k (n gy - sum(gy) - xhat
    sum(gy xhat)) with k = coef / n (batch statistics), or gy <- k gy with k = coef (constant
    statistics); xhat is recomputed from x."""
    T, N, J = gy.shape
    for tn in prange(T * N):
        t = tn // N
        b = tn % N
        _bn_grad_row(gy[t, b], x[t, b], mean, invstd, k, sum_gy, sum_gy_xhat, n, batch_stats)


def _neuron_view(a):
    """(T, N, C, S) -> contiguous (T, N, C*S)."""
    return np.ascontiguousarray(a).reshape(*a.shape[:2], -1)


def _per_neuron(values, S, dtype):
    """Per-channel values (C,) -> per-neuron (C*S,), each repeated over the channel's S."""
    return np.repeat(np.asarray(values).astype(dtype), S)


def _bn_lif_run(x, mean, invstd, gain, beta, vth, tau, aa, center, smooth):
    dt, S = x.dtype, x.shape[3]
    x3 = _neuron_view(x)
    o = np.empty_like(x3)
    _bn_lif_forward(x3, _per_neuron(mean, S, dt), _per_neuron(invstd, S, dt),
                    _per_neuron(gain, S, dt), _per_neuron(beta, S, dt), o,
                    *_lif_constants(dt, vth, tau, aa, center), smooth)
    return o.reshape(x.shape)


def tdbn_lif_forward_train(x, gamma, beta, scale, eps, vth, tau, aa, center, smooth):
    T, N, C = x.shape[:3]
    mean, var, invstd = _batch_statistics(np.ascontiguousarray(x).reshape(T * N, C, -1), eps)
    o = _bn_lif_run(x, mean, invstd, scale * gamma, beta, vth, tau, aa, center, smooth)
    return o, mean, var, invstd


@njit(parallel=True, **_JIT)
def _bn_lif_forward_summed(x, mean, invstd, gain, beta, coef, out, vth, tau, width, center, half,
                           one, zero, smooth):
    """out (N, J) = sum_t coef[t] o_t for the spikes o of x (T, N, J) (_bn_lif_forward's
    arithmetic); the spikes live in two local rows per block, never in a (T, N, J) array."""
    T, N, J = x.shape
    nchunks = (J + _BLOCK - 1) // _BLOCK
    for item in prange(N * nchunks):
        n, j0, j1 = _neuron_block(item, nchunks, J)
        u = np.zeros((2, j1 - j0), dtype=x.dtype)
        o = np.zeros((2, j1 - j0), dtype=x.dtype)
        acc = out[n, j0:j1]
        acc[:] = zero
        for t in range(T):
            bn_lif_step(x[t, n, j0:j1], mean[j0:j1], invstd[j0:j1], gain[j0:j1], beta[j0:j1],
                        u[t % 2], o[t % 2], u[(t + 1) % 2], o[(t + 1) % 2], vth, tau, width,
                        center, half, one, zero, smooth)
            c = coef[t]
            spikes = o[(t + 1) % 2]
            for i in range(j1 - j0):
                acc[i] += c * spikes[i]


def tdbn_lif_membrane_forward_train(x, gamma, beta, scale, eps, vth, tau, aa, center, smooth,
                                    decay):
    T, N, C, S = x.shape
    dt = x.dtype
    mean, var, invstd = _batch_statistics(np.ascontiguousarray(x).reshape(T * N, C, -1), eps)
    out = np.empty((N, C * S), dtype=dt)
    _bn_lif_forward_summed(_neuron_view(x), _per_neuron(mean, S, dt), _per_neuron(invstd, S, dt),
                           _per_neuron(scale * gamma, S, dt), _per_neuron(beta, S, dt),
                           membrane_coefficients(T, decay, dt), out,
                           *_lif_constants(dt, vth, tau, aa, center), smooth)
    return out.reshape(N, C, S), mean, var, invstd


def tdbn_lif_forward_eval(x, gamma, beta, scale, running_mean, running_var, eps, vth, tau, aa,
                          center, smooth):
    mean, invstd = running_mean.astype(x.dtype), _inverse_std(running_var, eps, x.dtype)
    o = _bn_lif_run(x, mean, invstd, scale * gamma, beta, vth, tau, aa, center, smooth)
    return o, mean, invstd


def linear_tdbn_lif_step_eval(x, wt, b, gamma, beta, scale, running_mean, running_var, eps, vth,
                              tau, u_prev, o_prev):
    """One eval step of a spiking linear block, x (N, F_in), wt (F_in, F_out) -> (o, u)
    (N, F_out): the event-driven rows of ``linear_step`` (BLAS where x is dense), with the
    constants of ``tdbn_forward_eval``."""
    dt = x.dtype
    return linear_step.step_rows(
        x, wt.astype(dt, copy=False), scatter.bias_init(b, wt.shape[1], dt),
        running_mean.astype(dt), _inverse_std(running_var, eps, dt), (scale * gamma).astype(dt),
        beta.astype(dt), u_prev.astype(dt, copy=False), o_prev.astype(dt, copy=False),
        *_typed(dt, vth, tau, 1.0, 0.0))


def conv_transpose2d_tdbn_lif_forward_eval(x, w, b, stride, padding, output_padding, gamma, beta,
                                           scale, running_mean, running_var, eps, vth, tau, aa,
                                           center, smooth):
    """One pass (``scatter_block``) where the input is sparse and there is a sample per thread;
    else the two kernels. The same values either way."""
    return _eval_block(x, w, b, stride, padding, output_padding, gamma, beta, scale,
                       running_mean, running_var, eps, vth, tau, aa, center, smooth, None)


def conv_transpose2d_tdbn_lif_membrane_eval(x, w, b, stride, padding, output_padding, gamma,
                                            beta, scale, running_mean, running_var, eps, vth,
                                            tau, aa, center, smooth, decay):
    """The block summed over time in its one pass (``scatter_block``), where it runs in one
    pass; else the two kernels, then ``membrane_forward``."""
    coef = membrane_coefficients(x.shape[0], decay, x.dtype)
    return _eval_block(x, w, b, stride, padding, output_padding, gamma, beta, scale,
                       running_mean, running_var, eps, vth, tau, aa, center, smooth, coef)


def _eval_block(x, w, b, stride, padding, output_padding, gamma, beta, scale, running_mean,
                running_var, eps, vth, tau, aa, center, smooth, coef):
    """The eval block's spikes (coef None) or their sum over time with coef (T,). One pass
    where the input is sparse (``_scatter_wins``), of the weights' dtype, with a
    sample per thread; else the transposed convolution and tdBN -> LIF as two kernels."""
    sparse = _scatter_wins(x, w.shape[1])
    if sparse and x.dtype == w.dtype and x.shape[1] >= numba.get_num_threads():
        dt = x.dtype
        arguments = (x, w, b, stride, padding, output_padding, running_mean.astype(dt),
                     _inverse_std(running_var, eps, dt), (scale * gamma).astype(dt),
                     beta.astype(dt), _lif_constants(dt, vth, tau, aa, center), smooth)
        if coef is None:
            return scatter_block.conv_transpose2d_tdbn_lif_eval(*arguments)
        return scatter_block.conv_transpose2d_tdbn_lif_membrane_eval(*arguments, coef)
    conv = scatter.conv_transpose2d_forward if sparse else _conv_transpose2d_dense
    o = compose_block_eval(conv, tdbn_lif_forward_eval, x, w, b, stride, padding,
                           output_padding, gamma, beta, scale, running_mean, running_var, eps,
                           vth, tau, aa, center, smooth)
    if coef is None:
        return o
    return (coef @ o.reshape(o.shape[0], -1)).reshape(o.shape[1:])


def tdbn_lif_backward(go, x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth,
                      detach_reset, batch_stats):
    dt = x.dtype
    ones = np.ones(x.shape[0], dtype=dt)
    return _tdbn_lif_backward(_neuron_view(go.astype(dt, copy=False)), ones, x, mean, invstd,
                              gamma, beta, scale, vth, tau, aa, center, smooth, detach_reset,
                              batch_stats)


def tdbn_lif_membrane_backward(g, x, mean, invstd, gamma, beta, scale, vth, tau, aa, center,
                               smooth, detach_reset, decay):
    """The spikes' gradient decay^(T-1-t) g is formed step by step inside the BPTT loop, never
    as a (T, N, C, S) array."""
    dt = x.dtype
    coef = membrane_coefficients(x.shape[0], decay, dt)
    g3 = np.ascontiguousarray(g, dtype=dt).reshape(1, x.shape[1], -1)
    return _tdbn_lif_backward(g3, coef, x, mean, invstd, gamma, beta, scale, vth, tau, aa,
                              center, smooth, detach_reset, True)


def _tdbn_lif_backward(go3, go_scale, x, mean, invstd, gamma, beta, scale, vth, tau, aa, center,
                       smooth, detach_reset, batch_stats):
    """go3 (T or 1, N, J) and go_scale (T,): see _bn_lif_backward_spikes."""
    dt = x.dtype
    T, N, C, S = x.shape
    x3 = _neuron_view(x)
    nchunks = (C * S + _BLOCK - 1) // _BLOCK
    sums = np.zeros((N * nchunks, 2, C), dtype=np.float64)
    gx = np.empty_like(x3)
    mean_j, invstd_j = _per_neuron(mean, S, dt), _per_neuron(invstd, S, dt)
    vth_, tau_, width, center_, half, one, zero = _lif_constants(dt, vth, tau, aa, center)
    _bn_lif_backward_spikes(go3, go_scale, x3, S, mean_j, invstd_j,
                            _per_neuron(scale * gamma, S, dt), _per_neuron(beta, S, dt), gx, sums,
                            vth_, tau_, width, center_, half, one / width, dt.type(aa), one, zero,
                            smooth, detach_reset)
    s1, s2 = sums[:, 0].sum(axis=0).astype(dt), sums[:, 1].sum(axis=0).astype(dt)
    coef = (scale * gamma * invstd).astype(dt)
    n = T * N * S
    # the same arithmetic as _bn_input_grad_into: coef / n in float64 when batch statistics
    k = coef.astype(np.float64) / n if batch_stats else coef
    _bn_grad_from_input_into(gx, x3, mean_j, invstd_j, _per_neuron(k, S, k.dtype),
                             _per_neuron(s1, S, dt), _per_neuron(s2, S, dt), n, batch_stats)
    return gx.reshape(x.shape), (scale * s2).astype(dt), s1

# --------------------------------------------------------------------------------------------
# PSP filter and membrane output
# --------------------------------------------------------------------------------------------


@njit(parallel=True, **_JIT)
def psp_forward(x, tau_s):
    T, M = x.shape
    y = np.empty_like(x)
    for m in prange(M):
        syn = 0.0
        for t in range(T):
            syn = syn + (x[t, m] - syn) / tau_s
            y[t, m] = syn
    return y


@njit(parallel=True, **_JIT)
def psp_backward(gy, tau_s):
    T, M = gy.shape
    gx = np.empty_like(gy)
    keep = 1.0 - 1.0 / tau_s
    for m in prange(M):
        gs = 0.0
        for t in range(T - 1, -1, -1):
            gs = gy[t, m] + keep * gs
            gx[t, m] = gs / tau_s
    return gx


def membrane_forward(x, decay):
    coef = membrane_coefficients(x.shape[0], decay, x.dtype)
    return coef @ x


def membrane_backward(gy, T, decay):
    coef = membrane_coefficients(T, decay, gy.dtype)
    return np.outer(coef, gy)


# --------------------------------------------------------------------------------------------
# Spikes as bytes: one parallel pass that writes x != 0 as uint8 and notes, per fixed chunk,
# whether any value was neither 0 nor 1 (both branch-free, so the loop vectorises).
# --------------------------------------------------------------------------------------------

_PACK_CHUNKS = 64


@njit(parallel=True, **_JIT)
def _pack_binary(flat, out):
    """out[i] = flat[i] != 0; returns True when every value of flat is 0 or 1."""
    n = flat.size
    step = (n + _PACK_CHUNKS - 1) // _PACK_CHUNKS
    other = np.zeros(_PACK_CHUNKS, dtype=np.int64)
    for k in prange(_PACK_CHUNKS):
        count = 0
        for i in range(k * step, min(n, (k + 1) * step)):
            v = flat[i]
            out[i] = v != 0
            count += (v != 0) & (v != 1)
        other[k] = count
    return other.sum() == 0


def pack_spikes(x):
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(x.shape, dtype=np.uint8)
    return out if _pack_binary(flat, out.reshape(-1)) else None


# --------------------------------------------------------------------------------------------
# Adam / AdamW update: one pass over each parameter instead of a dozen NumPy temporaries.
# --------------------------------------------------------------------------------------------


@njit(parallel=True, **_JIT)
def _adam_update(p, g, m, v, decay, l2, beta1, beta2, step_size, bias2_sqrt, eps):
    one = p.dtype.type(1.0)
    for i in prange(p.size):
        gi = g[i] + l2 * p[i]
        pi = p[i] * decay
        mi = beta1 * m[i] + (one - beta1) * gi
        vi = beta2 * v[i] + (one - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = pi - step_size * mi / (np.sqrt(vi) / bias2_sqrt + eps)


def adam_update(p, g, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    for a in (p, exp_avg, exp_avg_sq):
        if not a.flags.c_contiguous:
            raise ValueError("adam_update updates in place and needs C-contiguous arrays")
    dt = p.dtype.type
    decay = dt(1 - lr * weight_decay) if decoupled else dt(1)
    l2 = dt(0) if decoupled else dt(weight_decay)
    _adam_update(p.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1),
                 exp_avg.reshape(-1), exp_avg_sq.reshape(-1), decay, l2, dt(beta1), dt(beta2),
                 dt(lr / (1 - beta1 ** step)), dt(np.sqrt(1 - beta2 ** step)), dt(eps))
