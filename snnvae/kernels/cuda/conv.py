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

Biases: one small kernel adds them (a grid-stride loop over y), two reduce the gradients
(sum over batch and space per channel).
"""
from __future__ import annotations

import functools

import numpy as np
from numba import cuda, from_dtype

from ..numpy_ref import conv_out_size, conv_transpose_out_size
from . import gemm, launch

if launch.THREADS_PER_BLOCK & (launch.THREADS_PER_BLOCK - 1):
    raise ImportError("the block reduction of conv.py needs THREADS_PER_BLOCK a power of 2")

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


def _conv_input_grad_into(gx, gy, w, geometry):
    """gx (B, C_in, H, W) = the adjoint of the convolution applied to gy (B, C_out, Ho, Wo)."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, _, _ = geometry
    gemm.launch_tiled(_input_grad_kernel(gx.dtype), gx, w, gy, C_in, gx.shape[0] * H * W,
                      C_out * kh * kw, geometry)


def _conv_weight_grad_into(gw, gy, x, geometry):
    """gw (C_out, C_in, kh, kw) = sum over the batch and positions of gy times the patches."""
    C_in, H, W, C_out, Ho, Wo, kh, kw, _, _ = geometry
    gemm.launch_tiled(_weight_grad_kernel(gw.dtype), gw, gy, x, C_out, C_in * kh * kw,
                      x.shape[0] * Ho * Wo, geometry)


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


def _add_bias(y, bias):
    """y (B, C, ...) += bias[c] in place on the device; (R, F) counts as C = F, S = 1."""
    channels = y.shape[1]
    positions = y.size // max(1, y.shape[0] * channels)
    if y.size:
        _add_bias_kernel[launch.grid_1d(y.size)](gemm.flat(y), bias, channels, positions)


@functools.lru_cache(maxsize=None)
def _channel_sum_kernel(dtype):
    element = from_dtype(np.dtype(dtype))
    THREADS = launch.THREADS_PER_BLOCK

    @cuda.jit
    def kernel(g, total):
        """total[c] = sum over b and s of g[b, c, s], g (B, C, S). One block per channel
        (blocks take channels in a grid-stride loop): thread t sums items t, t + THREADS, ...
        of the channel's B * S values, item (b, s), so consecutive threads read adjacent s of
        one row g[b, c, :] (coalesced). The THREADS partial sums meet in shared memory and are
        added pairwise in log2(THREADS) steps (a tree: half the threads add the upper half to
        the lower half, then a quarter, ...), with a barrier between steps."""
        partial = cuda.shared.array(THREADS, element)
        t = cuda.threadIdx.x
        batch, channels, positions = g.shape
        for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
            acc = element(0)
            for item in range(t, batch * positions, THREADS):
                b = item // positions
                acc += g[b, c, item - b * positions]
            partial[t] = acc
            cuda.syncthreads()
            half = THREADS // 2
            while half > 0:
                if t < half:
                    partial[t] += partial[t + half]
                cuda.syncthreads()
                half //= 2
            if t == 0:
                total[c] = partial[0]
            # partial[0] must be read before the next channel overwrites the shared array.
            cuda.syncthreads()

    return kernel


@functools.lru_cache(maxsize=None)
def _column_sum_kernel(dtype):
    element = from_dtype(np.dtype(dtype))

    @cuda.jit
    def kernel(g, total):
        """total[f] = sum_r g[r, f], g (R, F): the linear layer's bias gradient. Grid-stride
        loop over the columns, one thread per column walking down the rows: at every row
        consecutive threads read adjacent elements of that row (coalesced), and each sum is
        private to its thread (no shared memory, no atomics)."""
        start, step = cuda.grid(1), cuda.gridsize(1)
        rows, cols = g.shape
        for f in range(start, cols, step):
            acc = element(0)
            for r in range(rows):
                acc += g[r, f]
            total[f] = acc

    return kernel


def _channel_sums(gy):
    """Sum of gy (B, C, ...) over every axis but the channels, on the device -> (C,)."""
    B, C = gy.shape[0], gy.shape[1]
    total = launch.empty((C,), gy.dtype)
    if C:
        g3 = gy.reshape(B, C, gy.size // max(1, B * C))
        blocks = max(1, min(C, launch.MAX_BLOCKS))
        _channel_sum_kernel(gy.dtype)[blocks, launch.THREADS_PER_BLOCK](g3, total)
    return total


def _column_sums(g):
    """Sum of g (R, F) over the rows, on the device -> (F,)."""
    total = launch.empty((g.shape[1],), g.dtype)
    if g.shape[1]:
        _column_sum_kernel(g.dtype)[launch.grid_1d(g.shape[1])](g, total)
    return total


# --------------------------------------------------------------------------------------------
# The layers
# --------------------------------------------------------------------------------------------


def linear_forward(x, w, b):
    """x (R, F_in), w (F_out, F_in), b (F_out,) or None -> y (R, F_out) = x w^T + b."""
    launch.require_gpu()
    host = launch.on_host(x, w, b)
    x, w, b = launch.to_device(x), launch.to_device(w), launch.to_device(b)
    y = launch.empty((x.shape[0], w.shape[0]), x.dtype)
    gemm.gemm_into(y, x, w, trans_b=True)
    if b is not None:
        _add_bias(y, b)
    return launch.like_input(host, y)


def linear_backward(gy, x, w, has_bias):
    """Gradients of ``linear_forward``: gx = gy w, gw = gy^T x, gb = sum_r gy (or None)."""
    launch.require_gpu()
    host = launch.on_host(gy, x, w)
    gy, x, w = launch.to_device(gy), launch.to_device(x), launch.to_device(w)
    gx = gemm.gemm_into(launch.empty(tuple(x.shape), gy.dtype), gy, w)
    gw = gemm.gemm_into(launch.empty(tuple(w.shape), gy.dtype), gy, x, trans_a=True)
    gb = _column_sums(gy) if has_bias else None
    return launch.like_input(host, gx, gw, gb)


def conv2d_forward(x, w, b, stride, padding):
    """x (B, C_in, H, W), w (C_out, C_in, kh, kw), b (C_out,) or None -> (B, C_out, Ho, Wo)."""
    launch.require_gpu()
    host = launch.on_host(x, w, b)
    x, w, b = launch.to_device(x), launch.to_device(w), launch.to_device(b)
    B, _, H, W = x.shape
    C_out, _, kh, kw = w.shape
    y_shape = (B, C_out, conv_out_size(H, kh, stride, padding),
               conv_out_size(W, kw, stride, padding))
    y = launch.empty(y_shape, x.dtype)
    _conv_forward_into(y, x, w, _geometry(x.shape, w.shape, y_shape, stride, padding))
    if b is not None:
        _add_bias(y, b)
    return launch.like_input(host, y)


def conv2d_backward(gy, x, w, stride, padding, has_bias):
    """Gradients of ``conv2d_forward`` for gy (B, C_out, Ho, Wo): (gx, gw, gb)."""
    launch.require_gpu()
    host = launch.on_host(gy, x, w)
    gy, x, w = launch.to_device(gy), launch.to_device(x), launch.to_device(w)
    geometry = _geometry(x.shape, w.shape, gy.shape, stride, padding)
    gx = launch.empty(tuple(x.shape), gy.dtype)
    gw = launch.empty(tuple(w.shape), gy.dtype)
    _conv_input_grad_into(gx, gy, w, geometry)
    _conv_weight_grad_into(gw, gy, x, geometry)
    gb = _channel_sums(gy) if has_bias else None
    return launch.like_input(host, gx, gw, gb)


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding):
    """x (B, C_in, H, W), w (C_in, C_out, kh, kw) -> (B, C_out, Ho, Wo)."""
    launch.require_gpu()
    host = launch.on_host(x, w, b)
    x, w, b = launch.to_device(x), launch.to_device(w), launch.to_device(b)
    B, _, H, W = x.shape
    _, C_out, kh, kw = w.shape
    y_shape = (B, C_out, conv_transpose_out_size(H, kh, stride, padding, output_padding),
               conv_transpose_out_size(W, kw, stride, padding, output_padding))
    y = launch.empty(y_shape, x.dtype)
    # The convolution whose adjoint this is maps y-sized images to x-sized ones.
    _conv_input_grad_into(y, x, w, _geometry(y_shape, w.shape, x.shape, stride, padding))
    if b is not None:
        _add_bias(y, b)
    return launch.like_input(host, y)


def conv_transpose2d_backward(gy, x, w, stride, padding, has_bias):
    """Gradients of ``conv_transpose2d_forward`` for gy (B, C_out, Ho, Wo): (gx, gw, gb)."""
    launch.require_gpu()
    host = launch.on_host(gy, x, w)
    gy, x, w = launch.to_device(gy), launch.to_device(x), launch.to_device(w)
    geometry = _geometry(gy.shape, w.shape, x.shape, stride, padding)
    gx = launch.empty(tuple(x.shape), gy.dtype)
    gw = launch.empty(tuple(w.shape), gy.dtype)
    _conv_forward_into(gx, gy, w, geometry)
    _conv_weight_grad_into(gw, x, gy, geometry)
    gb = _channel_sums(gy) if has_bias else None
    return launch.like_input(host, gx, gw, gb)
