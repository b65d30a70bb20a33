"""Stride-1 convolutions with few channels on one side, as shifted passes over padded planes.

The layer this is for: the decoder's last transposed convolution (32 channels -> 1, 3 x 3,
stride 1, on 32 x 32 maps). As a GEMM it has a 1-row (forward) or 1-column (input gradient)
matrix: all of its time goes into writing and reading the patch matrix or the transposed
copies around it, not into arithmetic. Here no patch matrix exists.

The trick: flatten planes with their padding
--------------------------------------------
Pad an (H, W) input by P on every side and store it flat with row length Wp = W + 2P:
xpad_flat[h' Wp + v'] = xpad[h', v']. A stride-1 convolution

    y[b, o, i, j] = bias[o] + sum_{c, p, q} w[o, c, p, q] xpad[b, c, i + p, j + q]

then reads, for output k = i Wp + j, the value xpad_flat[k + (p Wp + q)]: every tap (p, q) is
the same flat plane shifted by p Wp + q. So one tap of one channel is one long loop

    acc[k] += w[o, c, p, q] * xpad_flat[c, k + p Wp + q]        k = 0 .. Ho Wp - 1

that the compiler vectorises, over an accumulator acc (Ho, Wp) that stays in the L1 cache.
The columns j >= Wo of acc mix the end of one row with the start of the next; they are
computed and thrown away (Wp / Wo - 1 extra work: 6 % on 32 x 32 maps with P = 1). With
kw = 3 the three taps of a kernel row are fused into one pass (three multiply-adds per load
and store of acc).

The weight gradient reads the same shifted planes:

    gw[o, c, p, q] = sum_b sum_k gpad[b, o, k] xpad_flat[b, c, k + p Wp + q]

where gpad is dL/dy written into rows of length Wp with zeros in the columns j >= Wo.

Both kinds of layer map onto ``convolve`` (the conv form above) and ``weight_grad``:
- convolution, stride 1, padding P: forward = convolve(x, w, P); input gradient = convolve(gy,
  w flipped in space with in/out swapped, kh - 1 - P); weight gradient = weight_grad.
- transposed convolution, stride 1, padding pad: it is the convolution with weight
  w_conv[o, c, p, q] = w[c, o, kh - 1 - p, kw - 1 - q] and padding kh - 1 - pad.

Only square kernels with 0 <= padding <= k - 1 take this path (``applies``).

Threads: ``prange`` over a fixed number of chunks of images, each with its own scratch planes;
in the forward pass each writes only its own y[b], in the weight gradient its own partial sum,
added in chunk order (the result does not depend on the number of threads).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .numpy_ref import conv_out_size

_JIT = dict(cache=True, nogil=True)
# Images are split into this many fixed chunks, one per prange iteration, each with scratch
# buffers allocated here and passed in (not allocated inside the parallel loop, where Numba may
# hoist an allocation out of the loop and share it between threads); the weight gradient adds
# the chunks' partial sums in order, so it does not depend on the number of threads.
_CHUNKS = 16


def applies(kh, kw, stride, padding):
    """Whether a layer with these settings can take this path."""
    return stride == 1 and kh == kw and 0 <= padding <= kh - 1


def _zeroed_planes(chunks, C, H, W, pad, kw, dtype):
    """Scratch (chunks, C, (H + 2 pad) Wp + kw), all 0: one set of padded flat planes per chunk.
    The + kw holds the shifted reads past the last row. ``_copy_interior`` only ever writes the
    interior, so the padding stays 0 for every image a chunk walks."""
    return np.zeros((chunks, C, (H + 2 * pad) * (W + 2 * pad) + kw), dtype=dtype)


@njit(**_JIT)
def _copy_interior(plane, pad, Wp, out):
    """plane (H, W) -> out[(h + pad) Wp + pad + v] = plane[h, v]; the rest of out untouched."""
    H, W = plane.shape
    for h in range(H):
        row = out[(h + pad) * Wp + pad:(h + pad) * Wp + pad + W]
        src = plane[h]
        for v in range(W):
            row[v] = src[v]


@njit(**_JIT)
def _accumulate_taps(acc, xflat, w_oc, Wp):
    """acc[k] += sum_{p, q} w_oc[p, q] xflat[k + p Wp + q] for k < len(acc)."""
    n = acc.shape[0]
    kh, kw = w_oc.shape
    for p in range(kh):
        base = p * Wp
        if kw == 3:
            w0, w1, w2 = w_oc[p, 0], w_oc[p, 1], w_oc[p, 2]
            s0 = xflat[base:base + n]
            s1 = xflat[base + 1:base + 1 + n]
            s2 = xflat[base + 2:base + 2 + n]
            for k in range(n):
                acc[k] += w0 * s0[k] + w1 * s1[k] + w2 * s2[k]
        else:
            for q in range(kw):
                wv = w_oc[p, q]
                s = xflat[base + q:base + q + n]
                for k in range(n):
                    acc[k] += wv * s[k]


@njit(parallel=True, **_JIT)
def _convolve(x, w, bias, pad, y, xpad, acc):
    """y[b] = the stride-1 convolution of x[b] (see the module docstring); all of y written.
    xpad (``_zeroed_planes``) and acc (chunks, Ho Wp) are per-chunk scratch, allocated by the
    caller: thread t works on the images of chunk t only."""
    B, C_in, H, W = x.shape
    C_out, _, kh, kw = w.shape
    Ho, Wo = y.shape[2], y.shape[3]
    Wp = W + 2 * pad
    chunks = xpad.shape[0]
    for t in prange(chunks):
        pad_t = xpad[t]
        acc_t = acc[t]
        for b in range(t * B // chunks, (t + 1) * B // chunks):
            for c in range(C_in):
                _copy_interior(x[b, c], pad, Wp, pad_t[c])
            for o in range(C_out):
                acc_t[:] = bias[o]
                for c in range(C_in):
                    _accumulate_taps(acc_t, pad_t[c], w[o, c], Wp)
                for i in range(Ho):
                    for j in range(Wo):
                        y[b, o, i, j] = acc_t[i * Wp + j]


@njit(parallel=True, fastmath={"reassoc"}, **_JIT)
def _weight_grad_chunks(gy, x, pad, partial, xpad, g):
    """partial[t] = the weight gradient over the images of chunk t (t < len(partial)); xpad
    (``_zeroed_planes``) and g (chunks, C_out, Ho Wp) are per-chunk scratch, g zeroed here
    once (its columns j >= Wo stay 0).
    ``reassoc`` lets the compiler split each dot product into vector lanes (a fixed order for
    a given build, so runs repeat exactly)."""
    B, C_in, H, W = x.shape
    _, C_out, Ho, Wo = gy.shape
    kh, kw = partial.shape[3], partial.shape[4]
    Wp = W + 2 * pad
    n = Ho * Wp
    chunks = partial.shape[0]
    zero = partial.dtype.type(0)
    for t in prange(chunks):
        gw = partial[t]
        gw[:] = 0
        pad_t = xpad[t]
        g_t = g[t]
        g_t[:] = 0
        for b in range(t * B // chunks, (t + 1) * B // chunks):
            for c in range(C_in):
                _copy_interior(x[b, c], pad, Wp, pad_t[c])
            for o in range(C_out):
                for i in range(Ho):
                    for j in range(Wo):
                        g_t[o, i * Wp + j] = gy[b, o, i, j]
            for o in range(C_out):
                go = g_t[o]
                for c in range(C_in):
                    for p in range(kh):
                        for q in range(kw):
                            s = pad_t[c, p * Wp + q:p * Wp + q + n]
                            total = zero
                            for k in range(n):
                                total += go[k] * s[k]
                            gw[o, c, p, q] += total


def convolve(x, w, b, padding):
    """Stride-1 convolution: x (B, C_in, H, W), w (C_out, C_in, k, k), b (C_out,) or None
    -> (B, C_out, Ho, Wo), the result of ``numpy_ref.conv2d_forward(x, w, b, 1, padding)``."""
    B, _, H, W = x.shape
    C_out, _, kh, kw = w.shape
    dtype = np.result_type(x, w)
    y = np.empty((B, C_out, conv_out_size(H, kh, 1, padding), conv_out_size(W, kw, 1, padding)),
                 dtype=dtype)
    bias = np.zeros(C_out, dtype=dtype) if b is None else np.asarray(b, dtype=dtype)
    chunks = min(B, _CHUNKS)
    xpad = _zeroed_planes(chunks, x.shape[1], H, W, padding, kw, dtype)
    acc = np.empty((chunks, y.shape[2] * (W + 2 * padding)), dtype=dtype)
    _convolve(np.ascontiguousarray(x, dtype=dtype), np.ascontiguousarray(w, dtype=dtype), bias,
              padding, y, xpad, acc)
    return y


def weight_grad(gy, x, kh, kw, padding):
    """dL/dw (C_out, C_in, kh, kw) of a stride-1 convolution of x (B, C_in, H, W) whose output
    gradient is gy (B, C_out, Ho, Wo), in the dtype of x."""
    B, C_in, H, W = x.shape
    partial = np.empty((_CHUNKS, gy.shape[1], C_in, kh, kw), dtype=x.dtype)
    xpad = _zeroed_planes(_CHUNKS, C_in, H, W, padding, kw, x.dtype)
    g = np.empty((_CHUNKS, gy.shape[1], gy.shape[2] * (W + 2 * padding)), dtype=x.dtype)
    _weight_grad_chunks(np.ascontiguousarray(gy, dtype=x.dtype), np.ascontiguousarray(x),
                        padding, partial, xpad, g)
    return partial.sum(axis=0)


def flip_and_swap(w):
    """w (A, B, kh, kw) -> (B, A, kh, kw) with both spatial axes reversed, contiguous."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def conv2d_forward(x, w, b, padding):
    return convolve(x, w, b, padding)


def conv2d_backward(gy, x, w, padding, has_bias):
    kh, kw = w.shape[2:]
    gx = convolve(gy, flip_and_swap(w), None, kh - 1 - padding)
    gw = weight_grad(gy, x, kh, kw, padding)
    gb = gy.sum(axis=(0, 2, 3)) if has_bias else None
    return gx, gw, gb


def conv_transpose2d_forward(x, w, b, padding):
    """Transposed convolution, stride 1: w (C_in, C_out, k, k) -> the convolution with
    w_conv = flip_and_swap(w) and padding k - 1 - padding."""
    return convolve(x, flip_and_swap(w), b, w.shape[2] - 1 - padding)


def conv_transpose2d_backward(gy, x, w, padding, has_bias):
    kh, kw = w.shape[2:]
    gx = convolve(gy, w, None, padding)       # the conv form's input gradient, unflipped back
    gw = flip_and_swap(weight_grad(gy, x, kh, kw, kh - 1 - padding))
    gb = gy.sum(axis=(0, 2, 3)) if has_bias else None
    return gx, gw, gb
