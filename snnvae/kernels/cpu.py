"""Numba CPU kernels: the same names and signatures as ``numpy_ref``, compiled and parallel.

Loops that NumPy cannot vectorise well (the LIF and PSP recurrences over time, the
im2col/col2im gathers of convolutions, per-channel reductions of tdBN) are ``@njit`` with
``cache=True`` so that the compiled code is reused across processes. Dense contractions are
left to BLAS through ``numpy.matmul``: a hand-written loop cannot beat it.

Parallelism: ``prange`` splits neurons (LIF, PSP), images (im2col, col2im) or channels (tdBN)
over the cores; each iteration writes only its own slice, so no two threads touch the same
output element.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .numpy_ref import conv_out_size, conv_transpose_out_size, membrane_coefficients

_JIT = dict(cache=True, nogil=True)

# --------------------------------------------------------------------------------------------
# Linear: BLAS already is the fast kernel.
# --------------------------------------------------------------------------------------------


def linear_forward(x, w, b):
    y = x @ w.T
    if b is not None:
        y += b
    return y


def linear_backward(gy, x, w, has_bias):
    return gy @ w, gy.T @ x, (gy.sum(axis=0) if has_bias else None)


# --------------------------------------------------------------------------------------------
# Convolutions as im2col + GEMM.  cols[b, (c, p, q), (i, j)] = x[b, c, i*s - pad + p, j*s - pad + q]
# The same index map, read backwards (col2im, a scatter-add), is the input gradient of a
# convolution and the forward pass of a transposed convolution.
# --------------------------------------------------------------------------------------------


@njit(parallel=True, **_JIT)
def im2col(x, kh, kw, stride, pad, Ho, Wo):
    """x (B, C, H, W) -> cols (B, C*kh*kw, Ho*Wo); zero where the window leaves the image."""
    B, C, H, W = x.shape
    cols = np.zeros((B, C * kh * kw, Ho * Wo), dtype=x.dtype)
    for b in prange(B):
        for c in range(C):
            for p in range(kh):
                for q in range(kw):
                    row = (c * kh + p) * kw + q
                    for i in range(Ho):
                        hi = i * stride - pad + p
                        if hi < 0 or hi >= H:
                            continue
                        for j in range(Wo):
                            wj = j * stride - pad + q
                            if 0 <= wj < W:
                                cols[b, row, i * Wo + j] = x[b, c, hi, wj]
    return cols


@njit(parallel=True, **_JIT)
def col2im(cols, C, H, W, kh, kw, stride, pad, Ho, Wo):
    """Adjoint of ``im2col``: cols (B, C*kh*kw, Ho*Wo) -> x (B, C, H, W), summing overlaps."""
    B = cols.shape[0]
    x = np.zeros((B, C, H, W), dtype=cols.dtype)
    for b in prange(B):
        for c in range(C):
            for p in range(kh):
                for q in range(kw):
                    row = (c * kh + p) * kw + q
                    for i in range(Ho):
                        hi = i * stride - pad + p
                        if hi < 0 or hi >= H:
                            continue
                        for j in range(Wo):
                            wj = j * stride - pad + q
                            if 0 <= wj < W:
                                x[b, c, hi, wj] += cols[b, row, i * Wo + j]
    return x


def _weight_grad(a, cols):
    """sum_b a[b] @ cols[b]^T for a (B, P, L), cols (B, K, L) -> (P, K)."""
    return np.tensordot(a, cols, axes=([0, 2], [0, 2]))


def conv2d_forward(x, w, b, stride, padding):
    B, C_in, H, W = x.shape
    C_out, _, kh, kw = w.shape
    Ho, Wo = conv_out_size(H, kh, stride, padding), conv_out_size(W, kw, stride, padding)
    cols = im2col(x, kh, kw, stride, padding, Ho, Wo)
    y = np.matmul(w.reshape(C_out, -1), cols)
    if b is not None:
        y += b[None, :, None]
    return y.reshape(B, C_out, Ho, Wo)


def conv2d_backward(gy, x, w, stride, padding, has_bias):
    B, C_in, H, W = x.shape
    C_out, _, kh, kw = w.shape
    Ho, Wo = gy.shape[2:]
    g = gy.reshape(B, C_out, Ho * Wo)
    cols = im2col(x, kh, kw, stride, padding, Ho, Wo)
    gw = _weight_grad(g, cols).reshape(w.shape)
    gcols = np.matmul(w.reshape(C_out, -1).T, g)
    gx = col2im(gcols, C_in, H, W, kh, kw, stride, padding, Ho, Wo)
    gb = g.sum(axis=(0, 2)) if has_bias else None
    return gx, gw, gb


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding):
    B, C_in, H, W = x.shape
    _, C_out, kh, kw = w.shape
    Ho = conv_transpose_out_size(H, kh, stride, padding, output_padding)
    Wo = conv_transpose_out_size(W, kw, stride, padding, output_padding)
    cols = np.matmul(w.reshape(C_in, -1).T, x.reshape(B, C_in, H * W))
    y = col2im(np.ascontiguousarray(cols), C_out, Ho, Wo, kh, kw, stride, padding, H, W)
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv_transpose2d_backward(gy, x, w, stride, padding, has_bias):
    B, C_in, H, W = x.shape
    _, C_out, kh, kw = w.shape
    gcols = im2col(gy, kh, kw, stride, padding, H, W)
    xf = x.reshape(B, C_in, H * W)
    gx = np.matmul(w.reshape(C_in, -1), gcols).reshape(x.shape)
    gw = _weight_grad(xf, gcols).reshape(w.shape)
    gb = gy.sum(axis=(0, 2, 3)) if has_bias else None
    return gx, gw, gb


# --------------------------------------------------------------------------------------------
# tdBN on (M, C, S): one parallel iteration per channel, two passes for a stable variance.
# --------------------------------------------------------------------------------------------


@njit(parallel=True, **_JIT)
def _channel_mean_var(x):
    M, C, S = x.shape
    mean = np.empty(C, dtype=np.float64)
    var = np.empty(C, dtype=np.float64)
    n = M * S
    for c in prange(C):
        s = 0.0
        for m in range(M):
            for k in range(S):
                s += x[m, c, k]
        mu = s / n
        ss = 0.0
        for m in range(M):
            for k in range(S):
                d = x[m, c, k] - mu
                ss += d * d
        mean[c] = mu
        var[c] = ss / n
    return mean, var


@njit(parallel=True, **_JIT)
def _normalise(x, mean, invstd, gain, beta):
    """xhat = (x - mean) invstd;  y = gain xhat + beta, per channel."""
    M, C, S = x.shape
    y = np.empty_like(x)
    xhat = np.empty_like(x)
    for m in prange(M):
        for c in range(C):
            for k in range(S):
                h = (x[m, c, k] - mean[c]) * invstd[c]
                xhat[m, c, k] = h
                y[m, c, k] = gain[c] * h + beta[c]
    return y, xhat


@njit(parallel=True, **_JIT)
def _channel_sums(gy, xhat):
    """Per channel: sum(gy) and sum(gy * xhat), accumulated in float64."""
    M, C, S = gy.shape
    s1 = np.zeros(C, dtype=np.float64)
    s2 = np.zeros(C, dtype=np.float64)
    for c in prange(C):
        a = 0.0
        b = 0.0
        for m in range(M):
            for k in range(S):
                g = gy[m, c, k]
                a += g
                b += g * xhat[m, c, k]
        s1[c] = a
        s2[c] = b
    return s1, s2


@njit(parallel=True, **_JIT)
def _bn_input_grad(gy, xhat, coef, sum_gy, sum_gy_xhat, n):
    """gx = coef / n * (n gy - sum(gy) - xhat sum(gy xhat)), per channel."""
    M, C, S = gy.shape
    gx = np.empty_like(gy)
    for m in prange(M):
        for c in range(C):
            a = sum_gy[c]
            b = sum_gy_xhat[c]
            k_ = coef[c] / n
            for k in range(S):
                gx[m, c, k] = k_ * (n * gy[m, c, k] - a - xhat[m, c, k] * b)
    return gx


def tdbn_forward_train(x, gamma, beta, scale, eps):
    mean64, var64 = _channel_mean_var(x)
    dt = x.dtype
    mean, var = mean64.astype(dt), var64.astype(dt)
    invstd = (1.0 / np.sqrt(var64 + eps)).astype(dt)
    y, xhat = _normalise(x, mean, invstd, (scale * gamma).astype(dt), beta.astype(dt))
    return y, xhat, invstd, mean, var


def tdbn_forward_eval(x, gamma, beta, scale, running_mean, running_var, eps):
    dt = x.dtype
    invstd = (1.0 / np.sqrt(running_var.astype(np.float64) + eps)).astype(dt)
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
# LIF: each neuron m walks t = 0..T-1 (forward) or T-1..0 (BPTT); neurons run in parallel in
# contiguous blocks so that at each t a thread reads neighbouring memory.
# --------------------------------------------------------------------------------------------

_BLOCK = 256


@njit(parallel=True, **_JIT)
def lif_forward(x, vth, tau, aa, center, smooth):
    T, M = x.shape
    u = np.empty_like(x)
    o = np.empty_like(x)
    nblocks = (M + _BLOCK - 1) // _BLOCK
    for blk in prange(nblocks):
        lo = blk * _BLOCK
        hi = min(lo + _BLOCK, M)
        for m in range(lo, hi):
            u_prev = 0.0
            o_prev = 0.0
            for t in range(T):
                um = tau * u_prev * (1.0 - o_prev) + x[t, m]
                if smooth:
                    om = (um - center) / (2.0 * aa) + 0.5
                    om = min(max(om, 0.0), 1.0)
                else:
                    om = 1.0 if um > vth else 0.0
                u[t, m] = um
                o[t, m] = om
                u_prev = u[t, m]   # read back: keeps float32 rounding identical to NumPy
                o_prev = om
    return o, u


@njit(**_JIT)
def lif_step(x_t, u_prev, o_prev, vth, tau):
    M = x_t.shape[0]
    u = np.empty_like(x_t)
    o = np.empty_like(x_t)
    for m in range(M):
        um = tau * u_prev[m] * (1.0 - o_prev[m]) + x_t[m]
        u[m] = um
        o[m] = 1.0 if um > vth else 0.0
    return o, u


@njit(parallel=True, **_JIT)
def lif_backward(go, u, o, tau, aa, center, detach_reset):
    T, M = go.shape
    gx = np.empty_like(go)
    inv_width = 1.0 / (2.0 * aa)
    nblocks = (M + _BLOCK - 1) // _BLOCK
    for blk in prange(nblocks):
        lo = blk * _BLOCK
        hi = min(lo + _BLOCK, M)
        for m in range(lo, hi):
            gu_next = 0.0
            for t in range(T - 1, -1, -1):
                g = go[t, m]
                if not detach_reset:
                    g = g - tau * u[t, m] * gu_next
                sg = inv_width if abs(u[t, m] - center) < aa else 0.0
                gu = g * sg + tau * (1.0 - o[t, m]) * gu_next
                gx[t, m] = gu
                gu_next = gu
    return gx


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
