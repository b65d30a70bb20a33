"""CUDA kernels of the linear, 2-D convolution and 2-D transposed-convolution layers.

The same names and signatures as ``numpy_ref``; arrays may be NumPy arrays (the results come
back to the host) or device arrays (the results stay on the device, nothing is copied).

Linear, rows r = (t, n):
    y[r, o] = sum_i x[r, i] w[o, i] + b[o]          x (R, F_in), w (F_out, F_in), y (R, F_out)
    gx = gy w,  gw = gy^T x,  gb[o] = sum_r gy[r, o]
Three calls of the tiled GEMM (``gemm.py``), the transposes read by index arithmetic.

Convolution, x (B, C_in, H, W), w (C_out, C_in, kh, kw), y (B, C_out, Ho, Wo):
    y[b, o, i, j] = bias[o] + sum_{c, p, q} w[o, c, p, q] x[b, c, i s - pad + p, j s - pad + q]
with x read as 0 outside the image, Ho = (H + 2 pad - kh) // s + 1. Naming the patch matrix
    X[(c, p, q), (b, i, j)] = x[b, c, i s - pad + p, j s - pad + q]      (C_in kh kw, B Ho Wo)
and Y[o, (b, i, j)] = y[b, o, i, j], the three products of a convolution layer are
    forward          Y  = W X             M = C_out,       N = B Ho Wo,     K = C_in kh kw
    weight gradient  gW = gY X^T          M = C_out,       N = C_in kh kw,  K = B Ho Wo
    input gradient   gX = W^T gY, then gx[b, c, h, w] = sum of the gX entries that X read from
                     x[b, c, h, w]:
        gx[b, c, h, w] = sum_{o, p, q} w[o, c, p, q] gy[b, o, (h + pad - p) / s, (w + pad - q) / s]
                     over the (o, p, q) where both divisions are exact and land inside gy;
                                          M = C_in,        N = B H W,       K = C_out kh kw.
They run as *implicit GEMMs*: the tiled kernel of ``gemm.py`` with index maps that find each
element of X or of the gathered gY in the images themselves, so no patch matrix (kh kw times
the size of x) is ever written. The input gradient is a gather (each thread owns one gx value
and sums what reaches it), so no two threads ever add into the same element.

Transposed convolution, x (B, C_in, H, W), w (C_in, C_out, kh, kw), y (B, C_out, Ho, Wo) with
Ho = (H - 1) s - 2 pad + kh + output_padding:
    y[b, o, i s - pad + p, j s - pad + q] += x[b, c, i, j] w[c, o, p, q]     (+ bias[o])
This is exactly the input gradient of a convolution with weight w (read in the convolution
layout (C_out', C_in', kh, kw) = (C_in, C_out, kh, kw)) from images of size Ho x Wo to images of
size H x W. So, with that convolution's geometry:
    convT forward          = conv input-gradient kernel (gy := x, gx := y)
    convT input gradient   = conv forward kernel        (x := gy, y := gx, no bias)
    convT weight gradient  = conv weight-gradient kernel with x and gy swapped.
``output_padding`` only makes the transposed output larger: the extra rows and columns get
what reaches them (nothing but the bias when output_padding < stride).

Biases: one small kernel adds them (a grid-stride loop over y); their gradients are the sums
of gy per channel (``reduce.channel_sums``, in float64; a linear layer's gy (R, F) is read as
(R, F, 1)).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ..numpy_ref import conv_out_size, conv_transpose_out_size
from . import gemm, launch
from .reduce import channel_sums

# --------------------------------------------------------------------------------------------
# Index maps of the convolution products. ``params`` is the geometry of one convolution,
#     (C_in, H, W, C_out, Ho, Wo, kh, kw, stride, pad):
# input (B, C_in, H, W), weight (C_out, C_in, kh, kw), output (B, C_out, Ho, Wo). A transposed
# convolution passes the geometry of the convolution it is the adjoint of.
# Device functions here must not use ``cuda.*``: the simulator swaps the module per call.
# --------------------------------------------------------------------------------------------


@cuda.jit(device=True)
def _split(index, rows, cols):
    """index = (a * rows + r) * cols + c  ->  (a, r, c)."""
    a = index // (rows * cols)
    rest = index - a * rows * cols
    r = rest // cols
    return a, r, rest - r * cols


@cuda.jit(device=True)
def _input_index(params, b, c, i, j, p, q):
    """Where x[b, c, i s - pad + p, j s - pad + q] lives in the input, -1 outside the image."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, stride, pad = params
    h = i * stride - pad + p
    w = j * stride - pad + q
    if h < 0 or h >= H or w < 0 or w >= W:
        return -1
    return ((b * C_in + c) * H + h) * W + w


@cuda.jit(device=True)
def _weight_index(params, o, n):
    """W[o, n] of the weight seen as a (C_out, C_in kh kw) matrix: row-major, n contiguous."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, stride, pad = params
    return o * (C_in * kh * kw) + n


@cuda.jit(device=True)
def _output_index(params, b, o, i, j):
    C_in, H, W, C_out, Ho, Wo, kh, kw, stride, pad = params
    return ((b * C_out + o) * Ho + i) * Wo + j


# forward: Y[o, (b, i, j)] = sum_{(c, p, q)} W[o, (c, p, q)] X[(c, p, q), (b, i, j)]

@cuda.jit(device=True)
def _forward_a(params, z, o, k):
    """A = W (C_out, C_in kh kw): consecutive k are adjacent in w (read along k)."""
    return _weight_index(params, o, k)


@cuda.jit(device=True)
def _forward_b(params, z, k, n):
    """B = X: row k = (c, p, q), column n = (b, i, j). Consecutive n are consecutive output
    columns j, which read input columns j s - pad + q: adjacent for stride 1, every s-th for
    stride s (read along n)."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, stride, pad = params
    c, p, q = _split(k, kh, kw)
    b, i, j = _split(n, Ho, Wo)
    return _input_index(params, b, c, i, j, p, q)


@cuda.jit(device=True)
def _forward_c(params, z, o, n):
    """C = Y, column n = (b, i, j): consecutive n are adjacent in y (within a row)."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, stride, pad = params
    b, i, j = _split(n, Ho, Wo)
    return _output_index(params, b, o, i, j)


# input gradient: gx[b, c, h, w] = sum_{(o, p, q)} w[o, c, p, q] gy[b, o, i, j]

@cuda.jit(device=True)
def _input_grad_a(params, z, c, k):
    """A[c, (o, p, q)] = w[o, c, p, q]: consecutive k are consecutive q, adjacent in w for
    one kernel row (read along k)."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, stride, pad = params
    o, p, q = _split(k, kh, kw)
    return ((o * C_in + c) * kh + p) * kw + q


@cuda.jit(device=True)
def _input_grad_b(params, z, k, n):
    """B[(o, p, q), (b, h, w)] = gy[b, o, i, j] where h = i s - pad + p and w = j s - pad + q
    (the output pixel that read x[b, :, h, w] through kernel tap (p, q)), -1 when there is
    none. Consecutive n are consecutive input columns w; for stride 1 they read adjacent gy
    columns, for stride s one in s finds a tap and the others read nothing (read along n)."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, stride, pad = params
    o, p, q = _split(k, kh, kw)
    b, h, w = _split(n, H, W)
    rows = h + pad - p
    cols = w + pad - q
    if rows < 0 or cols < 0 or rows % stride != 0 or cols % stride != 0:
        return -1
    i = rows // stride
    j = cols // stride
    if i >= Ho or j >= Wo:
        return -1
    return _output_index(params, b, o, i, j)


@cuda.jit(device=True)
def _input_grad_c(params, z, c, n):
    """C = gx, column n = (b, h, w): consecutive n are adjacent in gx (within a row)."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, stride, pad = params
    b, h, w = _split(n, H, W)
    return ((b * C_in + c) * H + h) * W + w


# weight gradient: gW[o, (c, p, q)] = sum_{(b, i, j)} gY[o, (b, i, j)] X[(c, p, q), (b, i, j)]

@cuda.jit(device=True)
def _weight_grad_a(params, z, o, k):
    """A[o, (b, i, j)] = gy[b, o, i, j]: consecutive k are adjacent in gy (read along k)."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, stride, pad = params
    b, i, j = _split(k, Ho, Wo)
    return _output_index(params, b, o, i, j)


@cuda.jit(device=True)
def _weight_grad_b(params, z, k, n):
    """B = X^T: B[(b, i, j), (c, p, q)] = x[b, c, i s - pad + p, j s - pad + q]. Here the
    contiguous direction is k (consecutive j read input columns s apart), while consecutive n
    jump between kernel taps and channels, so the tile is read along k."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, stride, pad = params
    b, i, j = _split(k, Ho, Wo)
    c, p, q = _split(n, kh, kw)
    return _input_index(params, b, c, i, j, p, q)


@cuda.jit(device=True)
def _weight_grad_c(params, z, o, n):
    """C = gW (C_out, C_in kh kw), the layout of w: consecutive n are adjacent."""
    return _weight_index(params, o, n)


def _forward_kernel(dtype):
    return gemm.tiled_product_kernel(np.dtype(dtype), _forward_a, True, _forward_b, True,
                                     _forward_c)


def _input_grad_kernel(dtype):
    return gemm.tiled_product_kernel(np.dtype(dtype), _input_grad_a, True, _input_grad_b, True,
                                     _input_grad_c)


def _weight_grad_kernel(dtype):
    return gemm.tiled_product_kernel(np.dtype(dtype), _weight_grad_a, True, _weight_grad_b,
                                     False, _weight_grad_c)


def _geometry(x_shape, w_shape, y_shape, stride, padding):
    """``params`` of the convolution from images x_shape to y_shape with weight w_shape."""
    _, C_in, H, W = x_shape
    _, _, Ho, Wo = y_shape
    C_out, _, kh, kw = w_shape
    return (C_in, H, W, C_out, Ho, Wo, kh, kw, int(stride), int(padding))


def _conv_forward_into(y, x, w, geometry):
    """y (B, C_out, Ho, Wo) = the convolution of x with w (no bias), all on the device."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, _, _ = geometry
    gemm.launch_tiled(_forward_kernel(y.dtype), y, w, x, C_out, x.shape[0] * Ho * Wo,
                      C_in * kh * kw, geometry)
    return y


def _conv_input_grad_into(gx, gy, w, geometry):
    """gx (B, C_in, H, W) = the adjoint of the convolution applied to gy (B, C_out, Ho, Wo)."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, _, _ = geometry
    gemm.launch_tiled(_input_grad_kernel(gx.dtype), gx, w, gy, C_in, gx.shape[0] * H * W,
                      C_out * kh * kw, geometry)
    return gx


def _conv_weight_grad_into(gw, gy, x, geometry):
    """gw (C_out, C_in, kh, kw) = sum over the batch and positions of gy times the patches."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, _, _ = geometry
    gemm.launch_tiled(_weight_grad_kernel(gw.dtype), gw, gy, x, C_out, C_in * kh * kw,
                      x.shape[0] * Ho * Wo, geometry)
    return gw


# --------------------------------------------------------------------------------------------
# Biases
# --------------------------------------------------------------------------------------------


@cuda.jit
def _add_bias_kernel(y, bias, channels, positions):
    """y (flat view of (B, C, S)) += bias[c]. Grid-stride loop over the elements of y in memory
    order: consecutive threads own adjacent elements (coalesced reads and writes); the few
    bias values they need are the same for S neighbours and come from the cache."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for index in range(start, y.shape[0], step):
        y[index] += bias[(index // positions) % channels]


def _with_bias(y, bias):
    """y (B, C, ...) += bias[c] in place on the device, if there is a bias; (R, F) counts as
    C = F, S = 1. Returns y."""
    channels = y.shape[1]
    positions = y.size // max(1, y.shape[0] * channels)
    if bias is not None and y.size:
        _add_bias_kernel[launch.grid_1d(y.size)](launch.flat(y), bias, channels, positions)
    return y


def _bias_grad(gy, has_bias):
    """dL/dbias = the sum of gy (B, C, ...) over every axis but the channels (C,), summed in
    float64 by ``reduce.channel_sums`` (one block per channel); None without a bias."""
    if not has_bias:
        return None
    B, C = gy.shape[0], gy.shape[1]
    return channel_sums(gy.reshape(B, C, gy.size // max(1, B * C)))


# --------------------------------------------------------------------------------------------
# The layers
# --------------------------------------------------------------------------------------------


def linear_forward(x, w, b):
    """x (R, F_in), w (F_out, F_in), b (F_out,) or None -> y (R, F_out) = x w^T + b."""
    host, x, w, b = launch.receive(x, w, b)
    y = gemm.gemm_into(launch.empty((x.shape[0], w.shape[0]), x.dtype), x, w, trans_b=True)
    return launch.like_input(host, _with_bias(y, b))


def linear_transposed_forward(x, wt, b):
    """x (R, F_in), wt = w^T (F_in, F_out), b (F_out,) or None -> y (R, F_out) = x wt + b, on
    the device (device arrays in, device arrays out)."""
    y = gemm.gemm_into(launch.empty((x.shape[0], wt.shape[1]), x.dtype), x, wt)
    return _with_bias(y, b)


def linear_backward(gy, x, w, has_bias):
    """Gradients of ``linear_forward``: gx = gy w, gw = gy^T x, gb = sum_r gy (or None)."""
    host, gy, x, w = launch.receive(gy, x, w)
    gx = gemm.gemm_into(launch.empty(x.shape, gy.dtype), gy, w)
    gw = gemm.gemm_into(launch.empty(w.shape, gy.dtype), gy, x, trans_a=True)
    return launch.like_input(host, gx, gw, _bias_grad(gy, has_bias))


def linear_delta_into(y, x_new, x_old, wt):
    """y (R, F_out) += (x_new - x_old) wt in place, returns y; wt (F_in, F_out) is the weight
    transposed. Two accumulating GEMMs (y += x_new wt, then y -= x_old wt): on the GPU the
    dense product is cheaper than finding the entries that changed."""
    host, yd, x_new, x_old, wt = launch.receive(y, x_new, x_old, wt)
    gemm.gemm_into(yd, x_new, wt, beta=1.0)
    gemm.gemm_into(yd, x_old, wt, alpha=-1.0, beta=1.0)
    if host:
        y[...] = yd.copy_to_host()
    return y


def conv2d_forward(x, w, b, stride, padding):
    """x (B, C_in, H, W), w (C_out, C_in, kh, kw), b (C_out,) or None -> (B, C_out, Ho, Wo)."""
    host, x, w, b = launch.receive(x, w, b)
    B, _, H, W = x.shape
    C_out, _, kh, kw = w.shape
    y = launch.empty((B, C_out, conv_out_size(H, kh, stride, padding),
                      conv_out_size(W, kw, stride, padding)), x.dtype)
    _conv_forward_into(y, x, w, _geometry(x.shape, w.shape, y.shape, stride, padding))
    return launch.like_input(host, _with_bias(y, b))


def conv2d_backward(gy, x, w, stride, padding, has_bias):
    """Gradients of ``conv2d_forward`` for gy (B, C_out, Ho, Wo): (gx, gw, gb)."""
    host, gy, x, w = launch.receive(gy, x, w)
    geometry = _geometry(x.shape, w.shape, gy.shape, stride, padding)
    gx = _conv_input_grad_into(launch.empty(x.shape, gy.dtype), gy, w, geometry)
    gw = _conv_weight_grad_into(launch.empty(w.shape, gy.dtype), gy, x, geometry)
    return launch.like_input(host, gx, gw, _bias_grad(gy, has_bias))


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding):
    """x (B, C_in, H, W), w (C_in, C_out, kh, kw) -> (B, C_out, Ho, Wo)."""
    host, x, w, b = launch.receive(x, w, b)
    B, _, H, W = x.shape
    _, C_out, kh, kw = w.shape
    y = launch.empty((B, C_out, conv_transpose_out_size(H, kh, stride, padding, output_padding),
                      conv_transpose_out_size(W, kw, stride, padding, output_padding)), x.dtype)
    # The convolution whose adjoint this is maps y-sized images to x-sized ones.
    _conv_input_grad_into(y, x, w, _geometry(y.shape, w.shape, x.shape, stride, padding))
    return launch.like_input(host, _with_bias(y, b))


def conv_transpose2d_backward(gy, x, w, stride, padding, has_bias):
    """Gradients of ``conv_transpose2d_forward`` for gy (B, C_out, Ho, Wo): (gx, gw, gb)."""
    host, gy, x, w = launch.receive(gy, x, w)
    geometry = _geometry(gy.shape, w.shape, x.shape, stride, padding)
    gx = _conv_forward_into(launch.empty(x.shape, gy.dtype), gy, w, geometry)
    gw = _conv_weight_grad_into(launch.empty(w.shape, gy.dtype), x, gy, geometry)
    return launch.like_input(host, gx, gw, _bias_grad(gy, has_bias))
